"""Where a batch's partitions run: in this process (``local``) or on a Dask cluster (``dask``).

    handover run … [--executor local|dask] [--scheduler ADDRESS] [--partitions N]

An executor maps a picklable function over picklable jobs and returns the results in
job order. ``LocalExecutor`` runs them on this machine (the default; no Dask needed): in
this process when it has one worker, otherwise in a pool of ``workers`` processes
(standard library ``concurrent.futures``; ``--partitions N`` runs N partitions on
min(N, cores) processes, and the default is one partition per core). ``DaskExecutor`` submits them to a Dask distributed scheduler — the one at
``--scheduler`` (``tcp://host:8786``: workers on other machines, reading and writing the
run folder through a shared filesystem), or, without one, a ``LocalCluster`` it starts on
this machine's loopback and stops afterwards. Dask is an optional extra
(``pip install 'handover[dask]'``); asking for it without it installed is a
configuration error (exit 2), as is ``--scheduler`` without ``--executor dask``, both
before any data is read (``check_options``).

The partitions are the FHIR writer's (``migrate.fhir.partitions``): the outputs are the
same bytes whatever the executor and the number of partitions.
"""

from __future__ import annotations

import importlib.util
import multiprocessing
import os
import re
import socket
import sys
import types
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

J = TypeVar("J")
R = TypeVar("R")

EXECUTORS = ("local", "dask")
LOCAL_WORKERS = 2  # workers of the LocalCluster started when no scheduler is given (2 cores here)


class Executor(Protocol):
    """Runs jobs; ``partitions`` is how many the work is split into."""

    @property
    def partitions(self) -> int: ...

    def map(self, fn: Callable[[J], R], jobs: Sequence[J]) -> list[R]: ...


def cores() -> int:
    """The cores this process may run on (its CPU affinity, not the machine's count)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


@dataclass(frozen=True)
class LocalExecutor:
    """Jobs on this machine: in this process, in order, with one worker; otherwise on a
    pool of ``workers`` processes (at most one per job), results in job order.

    Why processes and ``spawn``: the jobs are CPU-bound Python and polars (threads would
    share one interpreter lock), and a forked child of a process running polars' thread
    pool can deadlock. Each worker holds one job's batch at a time, so memory is about
    ``workers`` batches beside this process (``benchmarks/README.md``). A worker that dies
    fails the run (``BrokenProcessPool``): never a silent retry in this process."""

    partitions: int = 1
    workers: int = 1

    def map(self, fn: Callable[[J], R], jobs: Sequence[J]) -> list[R]:
        processes = min(self.workers, len(jobs))
        if processes <= 1:
            return [fn(job) for job in jobs]
        with ProcessPoolExecutor(max_workers=processes, mp_context=multiprocessing.get_context("spawn")) as pool:
            with _main_left_out():  # the workers start while the jobs are submitted
                futures = [pool.submit(fn, job) for job in jobs]
            return [f.result() for f in futures]


@contextmanager
def _main_left_out() -> Iterator[None]:
    """Start worker processes without the caller's main module.

    A spawned worker re-imports the parent's ``__main__`` (a script's file) before it runs
    anything: a script calling ``run_batch`` without ``if __name__ == "__main__":`` would
    start a second batch in every worker. The jobs need only handover's own functions
    (importable by name), so the workers are started while ``__main__`` is a blank module."""
    main = sys.modules["__main__"]
    sys.modules["__main__"] = types.ModuleType("__main__")
    try:
        yield
    finally:
        sys.modules["__main__"] = main


@dataclass(frozen=True)
class DaskExecutor:
    """Jobs on a Dask distributed cluster: ``scheduler`` (an address), or a LocalCluster on loopback."""

    partitions: int
    scheduler: str | None = None

    def map(self, fn: Callable[[J], R], jobs: Sequence[J]) -> list[R]:
        from distributed import Client, LocalCluster

        cluster: Any = None
        if self.scheduler is None:
            cluster = LocalCluster(n_workers=LOCAL_WORKERS, threads_per_worker=1, processes=True,  # type: ignore[no-untyped-call]
                                   host="127.0.0.1", dashboard_address=None)
        try:
            with Client(self.scheduler if cluster is None else cluster) as client:  # type: ignore[no-untyped-call]
                futures = client.map(fn, list(jobs), pure=False)
                results: list[R] = client.gather(futures)
                return results
        finally:
            if cluster is not None:
                cluster.close()


def check_options(executor: str, scheduler: str | None, partitions: int | None) -> list[str]:
    """Every problem with these options, in words (empty when they can run)."""
    problems = []
    if executor not in EXECUTORS:
        problems.append(f"--executor: unknown executor '{executor}'; use one of {', '.join(EXECUTORS)}")
    if scheduler is not None and executor != "dask":
        problems.append("--scheduler needs --executor dask (the local executor has no scheduler)")
    if scheduler is not None and executor == "dask":
        problems += _reachable(scheduler)
    if partitions is not None and partitions < 1:
        problems.append(f"--partitions must be at least 1, not {partitions}")
    if executor == "dask" and importlib.util.find_spec("distributed") is None:
        problems.append("--executor dask needs Dask distributed, which is not installed here: install handover's "
                        "dask extra (or the distributed package)")
    return problems


def _reachable(address: str) -> list[str]:
    """A problem unless something listens at the scheduler's ``tcp://host:port``: a typo in
    the address fails here, before any data is read, not after ingest and identity."""
    found = re.fullmatch(r"(?:tcp://)?\[?([^\]]+?)\]?:(\d+)", address.strip())
    if found is None:
        return [f"--scheduler: '{address}' is not an address such as tcp://host:8786"]
    try:
        socket.create_connection((found.group(1), int(found.group(2))), timeout=5).close()
    except OSError as exc:
        return [f"--scheduler: no Dask scheduler answers at {address} ({exc.strerror or type(exc).__name__})"]
    return []


def make_executor(executor: str, scheduler: str | None, partitions: int | None,
                  local_cores: int | None = None) -> Executor:
    """The executor of checked options. Locally ``partitions`` defaults to one per core
    (``local_cores``, this process's cores by default) and runs on min(partitions, cores)
    processes — one partition runs in this process; with Dask it defaults to twice the
    LocalCluster's workers (or 8 on a given scheduler)."""
    if executor == "dask":
        default = 8 if scheduler is not None else 2 * LOCAL_WORKERS
        return DaskExecutor(partitions or default, scheduler)
    available = local_cores or cores()
    n = partitions or available
    return LocalExecutor(n, min(n, available))
