"""Run one measured stage in this process and print its wall time and peak RSS as JSON.

Called by benchmarks/run.py in a fresh subprocess per measurement, so peak RSS belongs
to that stage alone. Not a test: nothing here asserts a time.
"""

from __future__ import annotations

import json
import os
import re
import resource
import sys
import threading
import time
from datetime import date
from pathlib import Path

import polars as pl

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from migrate.progress import Progress  # noqa: E402


class AnonPeak:
    """Samples the process's anonymous resident memory (RssAnon) every 20 ms.

    ru_maxrss also counts file pages: polars memory-maps the CSV files it scans, so a
    1 GB extract shows up as ~1 GB of "RSS" that the kernel can drop at will. RssAnon is
    the memory the process itself needs; both are reported.
    """

    def __init__(self) -> None:
        self.peak_kb = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        pattern = re.compile(r"RssAnon:\s+(\d+)")
        while not self._stop.wait(0.02):
            with open("/proc/self/status") as fh:
                found = pattern.search(fh.read())
            if found:
                self.peak_kb = max(self.peak_kb, int(found.group(1)))

    def __enter__(self) -> "AnonPeak":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def bare_scan(extract: Path) -> dict[str, int]:
    """The floor: polars reading every CSV of the extract, nothing else (as leniently as it
    must to get through planted malformed rows: lossy UTF-8, ragged lines)."""
    return {p.name: pl.scan_csv(p, infer_schema=False, encoding="utf8-lossy", truncate_ragged_lines=True).collect().height
            for p in sorted(extract.glob("*.csv"))}


def _cpu() -> float:
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


class Steps(Progress):
    """A ``Progress`` that closes a step at each note (ingest notes each file read and each
    table applied), so each step gets its own wall time, CPU seconds and peak RSS / RssAnon,
    sampled every 20 ms."""

    def __init__(self) -> None:
        self.steps: list[dict[str, object]] = []
        self._started, self._cpu = time.perf_counter(), _cpu()
        self._rss = self._anon = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        pattern = re.compile(r"^(VmRSS|RssAnon):\s+(\d+)", re.M)
        while not self._stop.wait(0.02):
            with open("/proc/self/status") as fh:
                found = dict(pattern.findall(fh.read()))
            with self._lock:
                self._rss = max(self._rss, int(found.get("VmRSS", 0)))
                self._anon = max(self._anon, int(found.get("RssAnon", 0)))

    def advance(self, task: str, steps: int = 1, note: str = "") -> None:
        self.close(note or task)

    def close(self, name: str) -> None:
        with self._lock:
            now, cpu = time.perf_counter(), _cpu()
            self.steps.append({"step": name, "seconds": round(now - self._started, 1),
                               "cpu_seconds": round(cpu - self._cpu, 1), "peak_rss_mb": round(self._rss / 1024),
                               "peak_anon_mb": round(self._anon / 1024)})
            self._started, self._cpu, self._rss, self._anon = now, cpu, 0, 0

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


def ingest_stage(extract: Path, out: Path) -> dict[str, object]:
    """Read + map + quarantine + write canonical Parquet (the spine's ingest), with each
    step's (file read, table applied) wall, CPU and peaks under "steps"."""
    from migrate.ingest import ingest
    from migrate.outputs import write_parquet
    from migrate.profile import load_profile

    steps = Steps()
    result = ingest(extract, load_profile("generic-csv"), out / ".work", progress=steps,
                    canonical_dir=out / "canonical")
    write_parquet(result.quarantine, out / "quarantine.parquet")
    steps.close("quarantine written")
    steps.stop()
    for s in steps.steps:
        print(f"{s['step'][:40]:<40}{s['seconds']:>8}{s['cpu_seconds']:>8}{s['peak_rss_mb']:>8}{s['peak_anon_mb']:>8}",
              file=sys.stderr)
    return {**result.heights, "quarantined": result.quarantine.height, "steps": steps.steps}


def rules_stage(out: Path) -> dict[str, int]:
    """Cohorts and flags over canonical tables already written by the ingest stage."""
    from migrate.rules import evaluate, load_pack

    tables = {t: pl.scan_parquet(out / "canonical" / f"{t}.parquet") for t in ("patients", "referrals", "contacts",
                                                                               "codes")}
    results = evaluate(tables, load_pack(None), date(2022, 10, 1)).collect()
    return {name: frame.height for name, frame in results.items()}


def synth_stage(extract: Path, patients: int) -> dict[str, int]:
    from migrate.synth import synthesise

    summary = synthesise(extract, patients=patients)
    return {"patients": patients, **{k: v for k, v in summary.asdict().items() if isinstance(v, int)}}


def run_stage(extract: Path, out: Path) -> dict[str, int]:
    """The whole batch as `handover run` does it."""
    from migrate.pipeline import RunConfig, run_batch

    result = run_batch(RunConfig.load(extract, "generic-csv", date(2022, 10, 1), out))
    return {"rows_read": result.summary["invariant"]["rows_read"]}


def main() -> None:
    stage, *args = sys.argv[1:]
    started, cpu_started, load = time.perf_counter(), _cpu(), Path("/proc/loadavg").read_text().split()[0]
    with AnonPeak() as anon:
        detail = _dispatch(stage, args)
    seconds = time.perf_counter() - started
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"stage": stage, "seconds": round(seconds, 2), "cpu_seconds": round(_cpu() - cpu_started, 1),
                      "peak_rss_mb": round(peak_mb), "peak_anon_mb": round(anon.peak_kb / 1024),
                      "load_before": load, "load_after": Path("/proc/loadavg").read_text().split()[0],
                      "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "detail": detail}))


def _dispatch(stage: str, args: list[str]) -> dict[str, object]:
    if stage == "bare":
        detail: dict[str, object] = {**bare_scan(Path(args[0]))}
    elif stage == "ingest":
        detail = ingest_stage(Path(args[0]), Path(args[1]))
    elif stage == "rules":
        detail = {**rules_stage(Path(args[0]))}
    elif stage == "synth":
        detail = {**synth_stage(Path(args[0]), int(args[1]))}
    elif stage == "run":
        detail = {**run_stage(Path(args[0]), Path(args[1]))}
    else:
        raise SystemExit(f"unknown stage {stage}")
    return detail


if __name__ == "__main__":
    main()
