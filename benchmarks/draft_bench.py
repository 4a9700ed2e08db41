"""Benchmark `handover profile draft` (and `check` with the drafted profile) on synthetic
extracts: wall and CPU time, peak RSS. Each measurement in its own subprocess.

    flock /tmp/handover-bench.lock .venv/bin/python benchmarks/draft_bench.py 20000 200000
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

CHILD = """
import json, resource, sys, time
from pathlib import Path
start, cpu = time.perf_counter(), time.process_time()
if sys.argv[1] == "draft":
    from migrate.draft import draft_profile
    text = draft_profile(Path(sys.argv[2])).text
    Path(sys.argv[3]).write_text(text, encoding="utf-8")
else:
    from migrate.check import check_extract
    from migrate.profile import load_profile
    check_extract(Path(sys.argv[2]), load_profile(sys.argv[3]))
print(json.dumps({"wall_s": round(time.perf_counter() - start, 1), "cpu_s": round(time.process_time() - cpu, 1),
                  "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024}))
"""


def measure(step: str, extract: Path, profile: Path) -> dict[str, float]:
    out = subprocess.run([sys.executable, "-c", CHILD, step, str(extract), str(profile)], check=True,
                         capture_output=True, text=True)
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


def main(sizes: list[int]) -> None:
    root = Path(tempfile.mkdtemp(prefix="handover-draft-bench-"))
    for n in sizes:
        extract = root / f"p{n}"
        subprocess.run([sys.executable, "-m", "cli", "synth", "--out", str(extract), "--patients", str(n),
                        "--quiet"], check=True)
        size = sum(p.stat().st_size for p in extract.glob("*.csv")) // 2**20
        profile = root / f"p{n}.yaml"
        draft = measure("draft", extract, profile)
        check = measure("check", extract, profile)
        print(json.dumps({"patients": n, "csv_mb": size, "draft": draft, "check": check}), flush=True)


if __name__ == "__main__":
    main([int(a) for a in sys.argv[1:]] or [20_000])
