"""A script (``benchmarks/batch.py``, or any) run with chosen functions wrapped to log memory:
where a stage's peak is, by phase.

    PROBE="migrate.fhir.batches:split,polars:LazyFrame.collect" PROBE_LOG=phases.txt \\
        python benchmarks/phases.py benchmarks/batch.py EXTRACT OUT [batch.py options]

Each call of a wrapped function (``module:function``, or ``module:Class.method``; every
binding of the function in a loaded module is replaced) logs, indented by nesting, its entry
RSS, exit RSS and the peak RSS while it ran (sampled every 10 ms), its seconds, and the end of
its first path argument (which folder a split writes, say). ``PROBE_STOP=name`` (a logged
name, e.g. ``batches.stage``) ends the process once that call returns. Run it from the
checkout to measure (it is put first on the path). Not a test: nothing here asserts anything.
"""

from __future__ import annotations

import functools
import importlib
import os
import runpy
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

LOG = open(os.environ.get("PROBE_LOG", "/dev/stderr"), "a", buffering=1)  # noqa: SIM115 (open for the run)
_running: list[list[int]] = []  # each wrapped call in progress: [its peak RSS MB]


def rss() -> int:
    """This process's resident memory in MB."""
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) // 1024
    return 0


def _sample() -> None:
    while True:
        now = rss()
        for call in list(_running):
            call[0] = max(call[0], now)
        time.sleep(0.01)


def wrap(name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(fn)
    def logged(*args: Any, **kwargs: Any) -> Any:
        call = [rss()]
        enter = call[0]
        where = next((" " + str(a)[-40:] for a in args if isinstance(a, Path)), "")
        _running.append(call)
        started = time.time()
        LOG.write(f"{'  ' * (len(_running) - 1)}> {name}{where} enter={enter}MB\n")
        try:
            return fn(*args, **kwargs)
        finally:
            del _running[next(i for i, c in enumerate(_running) if c is call)]
            LOG.write(f"{'  ' * len(_running)}< {name}{where} enter={enter} exit={rss()} peak={call[0]} "
                      f"(+{call[0] - enter}) {time.time() - started:.1f}s\n")
            if os.environ.get("PROBE_STOP") == name:
                LOG.write(f"stop after {name}\n")
                os._exit(0)
    return logged


def install(spec: str) -> None:
    """Wrap every ``module:function`` or ``module:Class.method`` of ``spec`` (comma-separated)."""
    for item in filter(None, spec.split(",")):
        module_name, attribute = item.split(":")
        module = importlib.import_module(module_name)
        if "." in attribute:
            owner, method = attribute.split(".")
            cls = getattr(module, owner)
            setattr(cls, method, wrap(attribute, getattr(cls, method)))
            continue
        original = getattr(module, attribute)
        wrapped = wrap(f"{module_name.rsplit('.', 1)[-1]}.{attribute}", original)
        for loaded in list(sys.modules.values()):
            names = getattr(loaded, "__dict__", None) or {}
            for key, value in list(names.items()):
                if value is original:
                    names[key] = wrapped


def main() -> None:
    sys.path.insert(0, os.getcwd())
    script, sys.argv = sys.argv[1], sys.argv[1:]
    import migrate.pipeline  # noqa: F401  (the stages' modules loaded, so every binding is wrapped)

    install(os.environ.get("PROBE", ""))
    threading.Thread(target=_sample, daemon=True).start()
    runpy.run_path(script, run_name="__main__")


if __name__ == "__main__":
    main()
