"""The whole batch (`handover run`), measured per stage: wall time and peak memory.

    python benchmarks/batch.py EXTRACT OUT [--executor local|dask] [--partitions N]
        [--no-fhir | --fhir-form both|ndjson] [--fhir-compression none|gzip] [--json FILE] [--keep]

Runs ``migrate.pipeline.run_batch`` in this process with a ``Progress`` that notes when
each stage starts and finishes; a thread samples the process's resident memory (VmRSS)
and anonymous memory (RssAnon) every 20 ms, so each stage gets its own peak, and the sum
of this process's and its descendants' (the local executor's worker processes) at one
instant. CPU time is user + system of this process and its ended children. Time spent
between two stages (the dispositions, say) is reported as "after <stage>". With the Dask
executor the workers are separate processes: their peaks are sampled from /proc too
(every process whose parent chain leads here). The run folder's bytes (whole, and
``fhir/bundles``, ``fhir/ndjson``) are recorded before it is removed: ``--fhir-form
ndjson`` writes no bundles (about half the FHIR disk), ``--fhir-compression gzip`` the NDJSON
as ``.ndjson.gz`` (about a tenth). Not a test: nothing here asserts a time.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import shutil
import sys
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from migrate.progress import Progress  # noqa: E402

_FIELDS = re.compile(r"^(VmRSS|RssAnon):\s+(\d+)", re.M)


def _memory(pid: int) -> tuple[int, int]:
    """(VmRSS, RssAnon) of ``pid`` in kB; (0, 0) when it is gone."""
    try:
        with open(f"/proc/{pid}/status") as fh:
            found = dict(_FIELDS.findall(fh.read()))
    except OSError:
        return 0, 0
    return int(found.get("VmRSS", 0)), int(found.get("RssAnon", 0))


def _children(root: int) -> list[int]:
    """Every descendant process of ``root`` (Dask's scheduler and workers, for one)."""
    parents: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as fh:
                    parents[int(entry)] = int(fh.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
    out, todo = [], [root]
    while todo:
        p = todo.pop()
        kids = [c for c, parent in parents.items() if parent == p]
        out += kids
        todo += kids
    return out


def _cpu() -> float:
    """CPU seconds (user + system) of this process and of its children that have ended."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


@dataclass
class Stage:
    name: str
    started: float
    seconds: float = 0.0
    cpu_started: float = field(default_factory=_cpu)
    cpu_seconds: float = 0.0
    peak_rss_kb: int = 0
    peak_anon_kb: int = 0
    peak_total_kb: int = 0  # this process and every descendant, summed at one instant
    children_peak_rss_kb: dict[int, int] = field(default_factory=dict)


class Measured(Progress):
    """A ``Progress`` that records each stage's wall time and the peaks sampled during it."""

    def __init__(self) -> None:
        self.stages: list[Stage] = []
        self.current = Stage("start", time.perf_counter())
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.children_total_peak_kb: dict[int, int] = {}
        self.thread = threading.Thread(target=self._sample, daemon=True)
        self.thread.start()

    def _switch(self, name: str) -> None:
        with self.lock:
            now = time.perf_counter()
            self.current.seconds = now - self.current.started
            self.current.cpu_seconds = _cpu() - self.current.cpu_started
            if self.current.seconds > 0.05 or self.current.peak_rss_kb:
                self.stages.append(self.current)
                done = self.current  # a long run that dies later still leaves its finished stages
                print(f"stage {done.name}: {done.seconds:.1f} s, CPU {done.cpu_seconds:.1f} s, peak RSS "
                      f"{done.peak_rss_kb // 1024} MB (with children {done.peak_total_kb // 1024} MB), load {_load()}",
                      file=sys.stderr, flush=True)
            self.current = Stage(name, now)

    def start(self, task: str, total: int | None = None) -> None:
        if task != self.current.name:
            self._switch(task)

    def finish(self, task: str) -> None:
        if task == self.current.name:
            self._switch(f"after {task}")

    def _sample(self) -> None:
        me = os.getpid()
        tick = 0
        kids: list[int] = []
        while not self.stop.wait(0.02):
            rss, anon = _memory(me)
            if tick % 25 == 0:  # the process tree every half second (reading /proc costs CPU)
                kids = _children(me)
            tick += 1
            with self.lock:
                s = self.current
                s.peak_rss_kb, s.peak_anon_kb = max(s.peak_rss_kb, rss), max(s.peak_anon_kb, anon)
                total = rss
                for k in kids:
                    k_rss = _memory(k)[0]
                    total += k_rss
                    s.children_peak_rss_kb[k] = max(s.children_peak_rss_kb.get(k, 0), k_rss)
                    self.children_total_peak_kb[k] = max(self.children_total_peak_kb.get(k, 0), k_rss)
                s.peak_total_kb = max(s.peak_total_kb, total)

    def close(self) -> list[Stage]:
        self._switch("end")
        self.stop.set()
        self.thread.join()
        return self.stages


def _bytes(folder: Path) -> int:
    """Bytes of the files under ``folder`` (0 when it does not exist)."""
    return sum(f.stat().st_size for f in folder.rglob("*") if f.is_file()) if folder.is_dir() else 0


def _load() -> str:
    return Path("/proc/loadavg").read_text().split()[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("extract", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--executor", default="local")
    parser.add_argument("--partitions", type=int, default=None)
    parser.add_argument("--scheduler", default=None)
    parser.add_argument("--no-fhir", action="store_true")
    parser.add_argument("--fhir-form", choices=("both", "ndjson"), default=None,
                        help="handover run --fhir-form (default: the run's default, both)")
    parser.add_argument("--fhir-compression", choices=("none", "gzip"), default=None,
                        help="handover run --fhir-compression (default: the run's default, none)")
    parser.add_argument("--json", type=Path, default=None, help="append the result as one JSON line here")
    parser.add_argument("--keep", action="store_true", help="keep the run folder (1M patients with FHIR: ~20 GB)")
    args = parser.parse_args()

    from migrate.pipeline import RunConfig, run_batch

    options: dict[str, object] = {"emit_fhir": not args.no_fhir}
    for name in ("executor", "partitions", "scheduler", "fhir_form", "fhir_compression"):
        value = getattr(args, name)
        if value is not None and name in RunConfig.load.__code__.co_varnames:
            options[name] = value
        elif value is not None:
            print(f"warning: this handover's run has no {name} option: ignored", file=sys.stderr)
    config = RunConfig.load(args.extract, "generic-csv", date(2022, 10, 1), args.out, **options)  # type: ignore[arg-type]
    load_before = _load()
    progress = Measured()
    started, cpu_started = time.perf_counter(), _cpu()
    result = run_batch(config, progress)
    seconds, cpu = time.perf_counter() - started, _cpu() - cpu_started
    stages = progress.close()
    record = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"), "extract": str(args.extract),
        "executor": args.executor, "partitions": args.partitions, "fhir": not args.no_fhir,
        "fhir_form": options.get("fhir_form", "both") if not args.no_fhir else None,
        "fhir_compression": options.get("fhir_compression", "none") if not args.no_fhir else None,
        "disk_mb": {name or "run": round(_bytes(args.out / name) / 2**20, 1)
                    for name in ("", "fhir/bundles", "fhir/ndjson")},
        "seconds": round(seconds, 1), "cpu_seconds": round(cpu, 1), "ok": result.ok, "load_before": load_before,
        "load_after": _load(), "cores": len(os.sched_getaffinity(0)),
        "memory_gb": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30),
        "execution": json.loads((args.out / "manifest.json").read_text()).get("execution"),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
        "peak_total_rss_mb": round(max((s.peak_total_kb for s in stages), default=0) / 1024),
        "children_peak_rss_mb": sorted((round(v / 1024) for v in progress.children_total_peak_kb.values()),
                                       reverse=True),
        "stages": [{"stage": s.name, "seconds": round(s.seconds, 1), "cpu_seconds": round(s.cpu_seconds, 1),
                    "peak_rss_mb": round(s.peak_rss_kb / 1024), "peak_total_rss_mb": round(s.peak_total_kb / 1024),
                    "peak_anon_mb": round(s.peak_anon_kb / 1024),
                    "children_peak_rss_mb": round(max(s.children_peak_rss_kb.values(), default=0) / 1024)}
                   for s in stages],
    }
    print(f"{'stage':<22}{'seconds':>9}{'CPU s':>9}{'peak RSS MB':>13}{'+children MB':>14}{'anon MB':>9}"
          f"{'child MB':>10}")
    for s in record["stages"]:  # type: ignore[attr-defined]
        print(f"{s['stage']:<22}{s['seconds']:>9}{s['cpu_seconds']:>9}{s['peak_rss_mb']:>13}"
              f"{s['peak_total_rss_mb']:>14}{s['peak_anon_mb']:>9}{s['children_peak_rss_mb']:>10}")
    print(f"total {seconds:.1f} s, CPU {cpu:.1f} s, peak RSS {record['peak_rss_mb']} MB "
          f"(with children {record['peak_total_rss_mb']} MB), ok={result.ok}, "
          f"load {load_before} -> {record['load_after']}, execution {record['execution']}, "
          f"disk MB {record['disk_mb']}")
    if args.json is not None:
        with args.json.open("a") as fh:
            fh.write(json.dumps(record) + "\n")
    if not args.keep:
        shutil.rmtree(args.out, ignore_errors=True)


if __name__ == "__main__":
    main()
