"""Benchmarks of the FHIR round trip and of loading into the local FHIR server.

    .venv/bin/python benchmarks/roundtrip_bench.py roundtrip --patients 200000
    .venv/bin/python benchmarks/roundtrip_bench.py roundtrip --patients 1000000
    .venv/bin/python benchmarks/roundtrip_bench.py load --patients 2000

``roundtrip``: synthesise an extract and run the whole batch once (cached in
``--work/<N>/``), then time ``check_roundtrip`` alone in a fresh child process (wall,
CPU, peak RSS, fields compared, resources read, NDJSON bytes). Results go in
``benchmarks/roundtrip.md``.

``load``: a smaller run loaded into the test FHIR server (``tests/fhir_server``, Medplum's
FHIR router in memory, started on 127.0.0.1) by ``handover load`` at several
concurrencies, each into an empty server; beside it, the server's own ceiling: the same
bundles fed to the same router in-process by Node (``benchmarks/fhir_server_ceiling.cjs``:
no HTTP, no client), in resources/s.

Heavy: run under ``flock /tmp/handover-bench.lock`` on a shared machine.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import time
from datetime import date
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
SERVER = ROOT / "tests" / "fhir_server"
CUTOVER = date(2022, 10, 1)


def load_avg() -> float:
    return round(os.getloadavg()[0], 2)


def prepare(patients: int, work: Path, bundle_size: int = 500) -> Path:
    """A finished run of ``patients`` synthetic patients (reused when present)."""
    run = work / "run"
    if (run / "reports" / "reconciliation.json").is_file():
        return run
    from migrate.pipeline import RunConfig, run_batch
    from migrate.synth import synthesise

    shutil.rmtree(work, ignore_errors=True)
    t = time.perf_counter()
    synthesise(work / "extract", patients=patients)
    print(f"synth {patients:,}: {time.perf_counter() - t:.1f} s", flush=True)
    t = time.perf_counter()
    result = run_batch(RunConfig.load(work / "extract", "generic-csv", CUTOVER, run, bundle_size=bundle_size))
    print(f"run: {time.perf_counter() - t:.1f} s, ok={result.ok}", flush=True)
    shutil.rmtree(work / "extract", ignore_errors=True)  # the run folder is what is measured
    return run


def child_roundtrip(run: str) -> None:
    """In a fresh process: time the round trip (no write), print JSON."""
    from migrate.fhir.roundtrip import check_roundtrip

    t, c = time.perf_counter(), time.process_time()
    result = check_roundtrip(Path(run), write=False)
    wall, cpu = time.perf_counter() - t, time.process_time() - c
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"wall_s": round(wall, 1), "cpu_s": round(cpu, 1), "peak_rss_mb": round(peak),
                      "fields_compared": result["fields_compared"], "mismatches": result["mismatches"],
                      "resources_read": sum(result["resources_read"].values())}))


def roundtrip(patients: int, work: Path) -> dict[str, Any]:
    run = prepare(patients, work / str(patients))
    ndjson = sum(p.stat().st_size for p in (run / "fhir" / "ndjson").glob("*.ndjson"))
    before = load_avg()
    out = subprocess.run([sys.executable, __file__, "_child", str(run)], check=True, capture_output=True, text=True)
    measured = json.loads(out.stdout.strip().splitlines()[-1])
    return {"patients": patients, "ndjson_mb": round(ndjson / 1e6), **measured, "load_before": before,
            "load_after": load_avg(), "date": time.strftime("%Y-%m-%d")}


def start_server() -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen(["node", str(SERVER / "server.cjs"), "--port", "0"], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    port = json.loads(proc.stdout.readline())["port"]
    return proc, f"http://127.0.0.1:{port}/fhir"


def load(patients: int, work: Path, concurrencies: list[int]) -> dict[str, Any]:
    from migrate.load import STATE, LoadOptions, load_run

    run = prepare(patients, work / f"load-{patients}", bundle_size=100)
    resources = sum(len(p.read_text().splitlines()) for p in (run / "fhir" / "ndjson").glob("*.ndjson"))
    rows = []
    for n in concurrencies:
        proc, base = start_server()
        try:
            (run / STATE).unlink(missing_ok=True)
            result = load_run(run, LoadOptions(fhir_base=base, concurrency=n))
            rows.append({"concurrency": n, "seconds": result.seconds, "resources": result.resources_sent,
                         "resources_per_s": round(result.resources_sent / result.seconds), "ok": result.ok})
            print(rows[-1], flush=True)
        finally:
            proc.terminate()
            proc.wait()
    ceiling = subprocess.run(["node", str(ROOT / "benchmarks" / "fhir_server_ceiling.cjs"),
                              str(run / "fhir" / "bundles")], check=True, capture_output=True, text=True)
    direct = json.loads(ceiling.stdout.strip().splitlines()[-1])
    return {"patients": patients, "resources": resources, "bundles": len(list((run / "fhir" / "bundles").glob("*"))),
            "handover_load": rows, "server_fed_directly": direct, "load_avg": load_avg(),
            "date": time.strftime("%Y-%m-%d")}


def main() -> None:
    if len(sys.argv) > 2 and sys.argv[1] == "_child":
        child_roundtrip(sys.argv[2])
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("what", choices=["roundtrip", "load"])
    parser.add_argument("--patients", type=int, default=200_000)
    parser.add_argument("--work", type=Path, default=ROOT / "bench-out" / "roundtrip")
    parser.add_argument("--concurrency", default="1,2,4")
    args = parser.parse_args()
    if args.what == "roundtrip":
        print(json.dumps(roundtrip(args.patients, args.work), indent=2))
    else:
        print(json.dumps(load(args.patients, args.work, [int(c) for c in args.concurrency.split(",")]), indent=2))


if __name__ == "__main__":
    main()
