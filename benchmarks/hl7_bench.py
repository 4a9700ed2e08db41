"""The HL7 v2 reader's and the whole HL7 intake's speed and memory on synthetic feeds,
beside bare hl7apy.

Not a test: nothing asserts a number. For each size a feed is generated once into
.bench/hl7-<n>/ (``migrate.synth.hl7.synthesise_hl7``; delete the folder after the
synthesiser changes) and read by ``read_hl7`` in a fresh subprocess with the ~30 paths a
typical profile maps, so peak RSS is the reader's own; then ``ingest`` runs the whole
intake with the shipped hl7v2 profile (read, control ids, mapping, each key's messages in
MSH-7 order with merges resolved and every state checked, canonical tables written), also
in its own subprocess; the same run times hl7apy's ``parse_message`` on the first
``--sample`` messages of the feed.
Results go to .bench/hl7-results.json; benchmarks/hl7.md records them with machine and date.

    .venv/bin/python benchmarks/hl7_bench.py                      # 100k and 1M messages
    .venv/bin/python benchmarks/hl7_bench.py --sizes 10000 --sample 200
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

HERE = Path(__file__).resolve().parent
WORK = HERE.parent / ".bench"
# What mappings/hl7v2.yaml maps, and a few more a site might.
PATHS = [
    "PID-3[type=NH].1", "PID-3[type=MR].1", "PID-5.1", "PID-5.2", "PID-7", "PID-8", "PID-11.1", "PID-11.2",
    "PID-11.3", "PID-11.5", "PID-13.1", "PD1-3.3", "PID-32", "MRG-1[type=MR].1", "RF1-1.1", "RF1-2.1", "RF1-3.1",
    "RF1-6.1", "RF1-7", "RF1-8", "RF1-10.1", "RF1-10.2", "RF1-11.1", "SCH-2.1", "SCH-7.1", "SCH-7.2", "SCH-11.4",
    "SCH-25.1", "SCH-26.1", "AIL-3.1", "AIG-3.1",
]


def _child(*args: str) -> dict[str, object]:
    out = subprocess.run([sys.executable, __file__, *args], check=True, capture_output=True, text=True)
    result: dict[str, object] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def _load() -> float:
    return round(os.getloadavg()[0], 2)


def run_synth(out: str, n: str) -> dict[str, object]:
    from migrate.synth.hl7 import synthesise_hl7

    started = time.perf_counter()
    summary = synthesise_hl7(Path(out), int(n))
    return {"seconds": round(time.perf_counter() - started, 2), "planted": summary["planted"],
            "mb": round((Path(out) / "feed.hl7").stat().st_size / 1e6)}


def run_read(feed: str, workers: str) -> dict[str, object]:
    sys.path.insert(0, str(HERE))
    import polars as pl
    from stage import AnonPeak  # type: ignore[import-not-found]

    from migrate.sources.hl7 import read_hl7

    load_before = _load()
    cpu0, wall0 = time.process_time(), time.perf_counter()
    with AnonPeak() as anon:
        result = read_hl7(Path(feed), "feed.hl7", PATHS, Path(feed).parent / "work", workers=int(workers))
        valid = result.messages.select(pl.len()).collect().item()
    wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    return {"messages": result.rows_read, "valid": valid, "rejected": result.rejected.height,
            "seconds": round(wall, 2), "cpu_seconds": round(cpu, 2),
            "per_second": round(result.rows_read / wall), "per_cpu_second": round(result.rows_read / cpu),
            "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
            "peak_anon_mb": round(anon.peak_kb / 1024), "load_before": load_before, "load_after": _load()}


def run_ingest(feed: str) -> dict[str, object]:
    """The whole HL7 intake: read and judge, compare control ids, route and map, apply each
    key's messages in MSH-7 order with the source's merges resolved and every state checked,
    write the canonical tables (``migrate.ingest.ingest`` with the shipped hl7v2 profile)."""
    sys.path.insert(0, str(HERE))
    from stage import AnonPeak  # type: ignore[import-not-found]

    from migrate.ingest import ingest
    from migrate.profile import load_profile

    folder = Path(feed).parent
    load_before = _load()
    cpu0, wall0 = time.process_time(), time.perf_counter()
    with AnonPeak() as anon:
        result = ingest(folder, load_profile("hl7v2"), folder / "ingest-work", canonical_dir=folder / "canonical")
    wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    rows = sum(f.rows_read for f in result.files)
    updates = result.update_counts()
    return {"messages": rows, "seconds": round(wall, 2), "cpu_seconds": round(cpu, 2),
            "per_second": round(rows / wall), "per_cpu_second": round(rows / cpu),
            "canonical_rows": result.heights, "quarantined": result.quarantine.height,
            "superseded": int(sum(updates["superseded"].values())),
            "rejected_previous_kept": int(sum(updates["rejected_previous_kept"].values())),
            "repeated_deliveries": updates["repeated_deliveries"], "merges": result.merges.height,
            "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
            "peak_anon_mb": round(anon.peak_kb / 1024), "load_before": load_before, "load_after": _load()}


def run_hl7apy(feed: str, sample: str) -> dict[str, object]:
    from hl7apy.parser import parse_message

    from migrate.sources.hl7_validate import split_messages

    with open(feed, "rb") as fh:
        head = fh.read(4 << 20).decode("utf-8", "replace")
    texts = ["\r".join(m) for m in split_messages(head)[: int(sample)]]
    load_before = _load()
    cpu0, wall0 = time.process_time(), time.perf_counter()
    failed = 0
    for text in texts:
        try:
            parse_message(text)
        except Exception:  # noqa: BLE001 - the planted malformed messages
            failed += 1
    wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    return {"messages": len(texts), "raised": failed, "seconds": round(wall, 2), "cpu_seconds": round(cpu, 2),
            "per_second": round(len(texts) / wall), "per_cpu_second": round(len(texts) / cpu),
            "load_before": load_before, "load_after": _load()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="100000,1000000", help="comma-separated message counts")
    parser.add_argument("--sample", default="2000", help="messages parsed by bare hl7apy")
    parser.add_argument("--workers", default="2", help="read_hl7 workers")
    args = parser.parse_args()
    WORK.mkdir(exist_ok=True)
    machine = {"cores": os.cpu_count(), "memory_gb": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
                                                            / 2**30), "python": platform.python_version(),
               "platform": platform.platform()}
    results = []
    for n in (int(s) for s in args.sizes.split(",")):
        folder = WORK / f"hl7-{n}"
        feed = folder / "feed.hl7"
        synth = None
        if not feed.exists():
            synth = _child("synth", str(folder), str(n))
            print(f"synth {n:>9,} messages: {synth['seconds']} s, {synth['mb']} MB", flush=True)
        read = _child("read", str(feed), args.workers)
        bare = _child("hl7apy", str(feed), args.sample)
        print(f"read_hl7 {n:>9,}: {read['per_second']:>7,} msg/s ({read['seconds']} s wall, "
              f"{read['cpu_seconds']} s CPU, {read['per_cpu_second']:,} msg per CPU s), "
              f"peak RSS {read['peak_rss_mb']} MB, anon {read['peak_anon_mb']} MB, "
              f"load {read['load_before']}->{read['load_after']}; hl7apy parse_message "
              f"{bare['per_second']:,} msg/s ({bare['per_cpu_second']:,} per CPU s)", flush=True)
        whole = _child("ingest", str(feed))
        print(f"ingest   {n:>9,}: {whole['per_second']:>7,} msg/s ({whole['seconds']} s wall, "
              f"{whole['cpu_seconds']} s CPU, {whole['per_cpu_second']:,} msg per CPU s), "
              f"peak RSS {whole['peak_rss_mb']} MB, anon {whole['peak_anon_mb']} MB, "
              f"load {whole['load_before']}->{whole['load_after']}", flush=True)
        results.append({"messages": n, "synth": synth, "read_hl7": read, "hl7apy": bare, "ingest": whole})
    record = {"date": datetime.now(UTC).date().isoformat(), "machine": machine, "paths": len(PATHS),
              "results": results}
    (WORK / "hl7-results.json").write_text(json.dumps(record, indent=2))
    print(json.dumps(record, indent=2))


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] in ("synth", "read", "hl7apy", "ingest"):
        stage = {"synth": run_synth, "read": run_read, "hl7apy": run_hl7apy, "ingest": run_ingest}[sys.argv[1]]
        print(json.dumps(stage(*sys.argv[2:])))
    else:
        main()
