"""The reports stage alone on a finished run folder: wall time, CPU time and peak RSS, per part.

    python benchmarks/reports_alone.py RUN_DIR [--split-by service_line] [--json FILE]

Calls ``migrate.reports.write_reports(RUN_DIR)`` as the pipeline does (without the
invariant the pipeline hands it: invariant 1 is recomputed here) and, with ``--split-by``,
the per-service-line worklists too. A thread samples the process's resident memory (VmRSS)
every 20 ms; each part named in ``PARTS`` (the reconciliation's figures, the worklist's
build, the XLSX, the CSV, the splits, the outreach list) is wrapped so it gets its own
peak: the highest RSS seen while it ran, and the RSS when it started. Parts nest (the XLSX
runs inside ``render``): a part's peak includes what its caller holds.

Rewrites RUN_DIR's ``reports/`` and ``manifest.json`` (atomic renames): run it on a
hard-linked copy (``cp -al RUN COPY``) of a folder that must not change. Not a test.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import re
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from migrate.reports import reconciliation, split, worklist  # noqa: E402

_RSS = re.compile(r"^VmRSS:\s+(\d+)", re.M)

# (module, attribute, label): the parts of write_reports measured on their own.
PARTS: tuple[tuple[Any, str, str], ...] = (
    (reconciliation, "run_counts", "invariant 1 and counts"),
    (reconciliation, "fhir_output", "invariant 2 (FHIR)"),
    (reconciliation, "vocabulary", "vocabulary"),
    (reconciliation, "control_totals", "control totals"),
    (reconciliation, "declared_vs_found", "declared vs found"),
    (reconciliation, "waits", "waits"),
    (reconciliation, "_delta", "delta"),
    (reconciliation, "fidelity_sections", "fidelity sections"),
    (reconciliation, "review_progress", "review progress"),
    (reconciliation, "build_worklist", "worklist build (in memory)"),
    (reconciliation, "stage_worklist", "worklist build (staged to Parquet)"),
    (reconciliation, "render", "render (json, html, worklists, splits)"),
    (worklist, "write_xlsx", "exceptions.xlsx"),
    (worklist, "write_csv", "exceptions.csv"),
    (reconciliation, "write_split", "split worklists"),
    (reconciliation, "write_outreach", "outreach.xlsx"),
    (reconciliation, "seal_outputs", "seal"),
)


def _rss_kb() -> int:
    with open(f"/proc/{os.getpid()}/status") as fh:
        found = _RSS.search(fh.read())
    return int(found.group(1)) if found else 0


class Sampler:
    """Peak RSS overall and per active part, sampled every 20 ms."""

    def __init__(self) -> None:
        self.peak = 0
        self.active: dict[str, int] = {}
        self.parts: dict[str, dict[str, float]] = {}
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.stop.wait(0.02):
            self.sample()

    def sample(self) -> int:
        rss = _rss_kb()
        with self.lock:
            self.peak = max(self.peak, rss)
            for name in self.active:
                self.active[name] = max(self.active[name], rss)
        return rss

    def wrap(self, name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(fn)
        def wrapped(*args: Any, **kwargs: Any) -> Any:
            start_rss = self.sample()
            with self.lock:
                self.active[name] = start_rss
            t0, c0 = time.perf_counter(), time.process_time()
            try:
                return fn(*args, **kwargs)
            finally:
                end_rss = self.sample()
                with self.lock:
                    peak = self.active.pop(name)
                    seen = self.parts.setdefault(name, {"calls": 0, "seconds": 0.0, "cpu_seconds": 0.0,
                                                        "start_mb": start_rss / 1024, "peak_mb": 0.0})
                    seen["calls"] += 1
                    seen["seconds"] += time.perf_counter() - t0
                    seen["cpu_seconds"] += time.process_time() - c0
                    seen["peak_mb"] = max(seen["peak_mb"], peak / 1024)
                    seen["end_mb"] = end_rss / 1024
        return wrapped


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("run_dir", type=Path)
    ap.add_argument("--split-by", default=None)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    sampler = Sampler()
    for module, attr, label in PARTS:
        setattr(module, attr, sampler.wrap(label, getattr(module, attr)))
    setattr(split, "write_worklists", worklist.write_worklists)  # split imported it by name: the wrapped writers
    t0, c0 = time.perf_counter(), time.process_time()
    result = reconciliation.write_reports(args.run_dir, split_by=args.split_by)
    seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
    sampler.stop.set()
    sampler.sample()
    out = {"run_dir": str(args.run_dir), "holds": result.holds, "seconds": round(seconds, 1),
           "cpu_seconds": round(cpu, 1), "peak_mb": round(sampler.peak / 1024), "load": os.getloadavg(),
           "flags": result.summary["flags"].get("total") if isinstance(result.summary["flags"], dict) else None,
           "parts": {k: {m: round(v, 1) for m, v in p.items()} for k, p in sampler.parts.items()}}
    print(f"reports alone: {seconds:.1f} s, {cpu:.1f} CPU s, peak {sampler.peak / 1024:,.0f} MB, "
          f"holds={result.holds}, load {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    for name, p in sampler.parts.items():
        print(f"  {name:40s} {p['seconds']:7.1f} s {p['cpu_seconds']:7.1f} CPU s  start {p['start_mb']:6,.0f} MB"
              f"  peak {p['peak_mb']:6,.0f} MB  end {p['end_mb']:6,.0f} MB")
    if args.json:
        args.json.write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()
