"""`make bench`: measure the stages on synthetic extracts of several sizes.

Each measurement runs in its own subprocess (benchmarks/stage.py) so peak RSS is the
stage's own. Extracts are generated once into .bench/ and reused. Results are printed as a
table and written to .bench/results.json; copy the numbers into benchmarks/README.md with
the machine and date.

    python benchmarks/run.py                 # 20k, 200k and 1M patients
    python benchmarks/run.py --sizes 20000   # just one size
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

HERE = Path(__file__).resolve().parent
WORK = HERE.parent / ".bench"


def measure(*args: str) -> dict[str, object]:
    out = subprocess.run([sys.executable, str(HERE / "stage.py"), *args], check=True, capture_output=True, text=True)
    result: dict[str, object] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="20000,200000,1000000", help="comma-separated patient counts")
    parser.add_argument("--keep", action="store_true", help="keep the run folders")
    args = parser.parse_args()
    WORK.mkdir(exist_ok=True)
    machine = {"cores": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()}
    results = []
    for n in (int(s) for s in args.sizes.split(",")):
        extract = WORK / f"extract-{n}"
        if not (extract / "truth" / "summary.json").exists():
            shutil.rmtree(extract, ignore_errors=True)
            synth = measure("synth", str(extract), str(n))
            print(f"synth {n:>9,} patients: {synth['seconds']:>7.1f} s  {synth['peak_rss_mb']:>6} MB", flush=True)
        size_mb = sum(p.stat().st_size for p in extract.glob("*.csv")) / 1e6
        bare = measure("bare", str(extract))
        out = WORK / f"run-{n}"
        shutil.rmtree(out, ignore_errors=True)
        ingest = measure("ingest", str(extract), str(out))
        rules = measure("rules", str(out))
        if not args.keep:
            shutil.rmtree(out, ignore_errors=True)
        ratio = float(ingest["seconds"]) / max(float(bare["seconds"]), 1e-9)  # type: ignore[arg-type]
        row = {"patients": n, "csv_mb": round(size_mb), "bare_scan_s": bare["seconds"], "bare_rss_mb": bare["peak_rss_mb"],
               "ingest_s": ingest["seconds"], "ingest_rss_mb": ingest["peak_rss_mb"], "ingest_anon_mb": ingest["peak_anon_mb"], "ratio": round(ratio, 2),
               "rules_s": rules["seconds"], "rules_rss_mb": rules["peak_rss_mb"], "rules_anon_mb": rules["peak_anon_mb"], "rows": ingest["detail"],
               "rule_outputs": rules["detail"]}
        results.append(row)
        print(f"ingest {n:>9,} patients ({size_mb:,.0f} MB CSV): {ingest['seconds']:>7.1f} s, "
              f"peak RSS {ingest['peak_rss_mb']} MB (anon {ingest['peak_anon_mb']} MB); bare scan {bare['seconds']} s → ratio {ratio:.2f}×; "
              f"rules {rules['seconds']} s, peak RSS {rules['peak_rss_mb']} MB (anon {rules['peak_anon_mb']} MB)",
              flush=True)
    record = {"date": datetime.now(UTC).date().isoformat(), "machine": machine, "results": results}
    (WORK / "results.json").write_text(json.dumps(record, indent=2))
    print(json.dumps(record, indent=2))


if __name__ == "__main__":
    main()
