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
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Protocol, TypeVar

if TYPE_CHECKING:
    from migrate.summary import ExecutionRecord

J = TypeVar("J")
R = TypeVar("R")

EXECUTORS = ("local", "dask")
LOCAL_WORKERS = 2  # workers of the LocalCluster started when no scheduler is given (2 cores here)


class Executor(Protocol):
    """Runs jobs; ``partitions`` is how many the work is split into, ``name`` the executor
    (``local``, ``dask``) and ``where`` where its jobs run, in words (for the manifest)."""

    name: ClassVar[str]

    @property
    def partitions(self) -> int: ...

    @property
    def where(self) -> str: ...

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

    name: ClassVar[str] = "local"
    partitions: int = 1
    workers: int = 1

    @property
    def where(self) -> str:
        return "this process" if self.workers <= 1 else f"a pool of {self.workers} worker processes on this machine"

    def map(self, fn: Callable[[J], R], jobs: Sequence[J]) -> list[R]:
        processes = min(self.workers, len(jobs))
        if processes <= 1:
            return [fn(job) for job in jobs]
        with ProcessPoolExecutor(max_workers=processes, mp_context=multiprocessing.get_context("spawn")) as pool:
            # the workers start while the jobs are submitted
            with _main_left_out(), _worker_environment(max(1, cores() // processes)):
                futures = [pool.submit(fn, job) for job in jobs]
            return [f.result() for f in futures]


@contextmanager
def _worker_environment(threads: int) -> Iterator[None]:
    """Start worker processes whose polars uses ``threads`` threads (``POLARS_MAX_THREADS``,
    read once when polars is imported), unless the user set it. Why: by default every
    process's polars starts one thread per core, so two workers on two cores would run four
    threads that wait for each other on two cores (benchmarks/fhir.md)."""
    wanted = {"POLARS_MAX_THREADS": str(threads)}
    added = [name for name in wanted if name not in os.environ]
    os.environ.update({name: wanted[name] for name in added})
    try:
        yield
    finally:
        for name in added:
            del os.environ[name]


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

    name: ClassVar[str] = "dask"
    partitions: int
    scheduler: str | None = None

    @property
    def where(self) -> str:
        if self.scheduler is None:
            return f"a LocalCluster on 127.0.0.1 ({LOCAL_WORKERS} worker processes)"
        return f"the Dask scheduler at {self.scheduler}"

    def map(self, fn: Callable[[J], R], jobs: Sequence[J]) -> list[R]:
        from distributed import Client, LocalCluster

        cluster: Any = None
        if self.scheduler is None:
            cluster = LocalCluster(n_workers=LOCAL_WORKERS, threads_per_worker=1, processes=True,  # type: ignore[no-untyped-call]
                                   host="127.0.0.1", dashboard_address="127.0.0.1:0")  # no fixed port
        try:
            with Client(self.scheduler if cluster is None else cluster) as client:  # type: ignore[no-untyped-call]
                futures = client.map(fn, list(jobs), pure=False)
                results: list[R] = client.gather(futures)
                return results
        finally:
            if cluster is not None:
                cluster.close()


@dataclass
class Execution:
    """How a run's FHIR partitions ran: the manifest's ``execution`` (``record``) and a line
    of the run's output. Never silent: a run that split into fewer partitions than asked
    for, or ran nothing, says so and why in ``notes``.

    ``ran_on`` counts the partitions each process ran: a Dask worker's address, or
    ``this process``. Like the start and finish times it describes the run, not its
    outputs (a worker's address changes from run to run; the outputs do not).
    """

    executor: str
    where: str
    partitions: int  # asked for (or the executor's default)
    batches: int  # the FHIR writer's batches (a partition is a range of them)
    partitions_run: int = 0
    ran_on: dict[str, int] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def record(self) -> ExecutionRecord:
        """JSON-ready, for the manifest."""
        return {"executor": self.executor, "where": self.where, "partitions": self.partitions,
                "writer_batches": self.batches, "partitions_run": self.partitions_run,
                "ran_on": dict(sorted(self.ran_on.items())), "notes": list(self.notes)}



def execution_lines(record: ExecutionRecord) -> list[str]:
    """What a person reads after the run, from the manifest's ``execution`` record."""
    on = ", ".join(f"{where} ×{n}" for where, n in record["ran_on"].items()) or "nothing ran"
    return [f"FHIR output: {record['partitions_run']} partition(s) of {record['writer_batches']} writer batch(es), "
            f"executor {record['executor']} on {record['where']} ({on})", *(f"  note: {n}" for n in record["notes"])]


def ran_on() -> str:
    """Where the calling job runs: its Dask worker's address, ``a local worker process`` in
    the local executor's pool, or ``this process``."""
    # A Dask worker has imported distributed already; a local pool worker has not, and
    # importing it there only to learn that cost seconds of each worker's start (py-spy, 200k).
    distributed = sys.modules.get("distributed")
    if distributed is not None:
        try:
            address: str = distributed.get_worker().address
            return address
        except ValueError:  # not inside a Dask worker
            pass
    if multiprocessing.parent_process() is not None:  # spawned by LocalExecutor's pool
        # Not its pid: which pool worker takes which job is chance, and the manifest of the
        # same batch run twice must be the same bytes (timestamps aside).
        return "a local worker process"
    return "this process"


def check_options(executor: str, scheduler: str | None, partitions: int | None,
                  out_dir: Path | None = None) -> list[str]:
    """Every problem with these options, in words (empty when they can run). With a
    ``scheduler`` and the run folder ``out_dir``: that its workers can run the partitions
    (``check_workers``)."""
    problems = []
    if executor not in EXECUTORS:
        problems.append(f"--executor: unknown executor '{executor}'; use one of {', '.join(EXECUTORS)}")
    if scheduler is not None and executor != "dask":
        problems.append("--scheduler needs --executor dask (the local executor has no scheduler)")
    if scheduler is not None and executor == "dask":
        problems += _reachable(scheduler)
        if not problems and out_dir is not None and importlib.util.find_spec("distributed") is not None:
            problems += check_workers(scheduler, out_dir)
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


def worker_facts(probe: str) -> dict[str, Any]:
    """Run on each worker: whether it sees the file ``probe`` (written beside the run folder
    by the machine that starts the run) and which handover it would run the partitions with."""
    version: str | None = None
    try:
        from migrate import __version__ as version
    except ImportError:
        pass
    return {"sees": os.path.exists(probe), "handover": version}


def worker_problems(facts: dict[str, dict[str, Any]], folder: Path, version: str) -> list[str]:
    """The problems in the workers' ``worker_facts``: none connected, a worker that does not
    see the run folder's filesystem, or runs no handover or another version of it."""
    if not facts:
        return ["--scheduler: no worker is connected to the scheduler; the FHIR partitions would wait for one "
                "(start workers with: dask worker ADDRESS)"]
    problems = []
    for worker, fact in sorted(facts.items()):
        if not fact["sees"]:
            problems.append(f"--scheduler: worker {worker} does not see the run folder's parent {folder}: the "
                            "workers write the FHIR partitions there, so it must be a shared filesystem at the same "
                            "path on every machine")
        if fact["handover"] != version:
            found = "no handover installed" if fact["handover"] is None else f"handover {fact['handover']}"
            problems.append(f"--scheduler: worker {worker} has {found}; this run is handover {version} (install the "
                            "same version on every worker)")
    return problems


def check_workers(scheduler: str, out_dir: Path) -> list[str]:
    """Ask every worker of ``scheduler`` whether it can run this run's partitions: it sees a
    file written now beside the run folder (same shared filesystem, same path) and runs the
    same handover. Before any data is read, so a cluster that cannot help fails in seconds."""
    import tempfile

    from distributed import Client

    from migrate import __version__

    folder = out_dir.resolve().parent
    if not folder.is_dir():
        return []  # the run folder's own check says so
    handle, probe = tempfile.mkstemp(prefix=".handover-probe-", dir=folder)
    try:
        with Client(scheduler, timeout=10) as client:  # type: ignore[no-untyped-call]
            facts: dict[str, dict[str, Any]] = client.run(worker_facts, probe)
    except OSError as exc:
        return [f"--scheduler: cannot ask the workers at {scheduler} ({exc})"]
    finally:
        os.close(handle)
        os.unlink(probe)
    return worker_problems(facts, folder, __version__)


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
