"""Partitioned FHIR output: the same bytes whatever the number of partitions and the
executor (in this process, or a real Dask LocalCluster on loopback)."""

from __future__ import annotations

import dataclasses
import json
import re
import zipfile
from datetime import date
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from click.testing import CliRunner

import migrate.executor as executor
import migrate.fhir.partitions as partitions
import migrate.pipeline as pipeline
from cli import main
from migrate.pipeline import RunConfig, run_batch
from migrate.synth import synthesise

CUTOVER = date(2022, 10, 1)
STAMP = re.compile(rb"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d[+-]\d\d:\d\d|\d\d/\d\d/\d{4} \d\d:\d\d UTC")


@pytest.fixture(scope="module")
def extract(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("extract")
    synthesise(folder, patients=300, seed=17)
    return folder


@pytest.fixture(autouse=True)
def small_batches(monkeypatch: pytest.MonkeyPatch) -> None:
    """Batches of 3 bundles of 10 patients, so 300 patients make a dozen batches to split."""
    real = pipeline.options_for

    def options(*args: Any, **kwargs: Any) -> Any:
        return dataclasses.replace(real(*args, **kwargs), chunk_patients=30)

    monkeypatch.setattr(pipeline, "options_for", options)


def _run(extract: Path, out: Path, **options: Any) -> Path:
    result = run_batch(RunConfig.load(extract, "generic-csv", CUTOVER, out, bundle_size=10, **options))
    assert result.ok, result.failures()
    return out


def _contents(path: Path) -> bytes:
    """A file's bytes (an XLSX: its parts), run timestamps blanked in the reports."""
    if path.suffix == ".xlsx":
        with zipfile.ZipFile(path) as zf:
            data = b"".join(i.filename.encode() + zf.read(i) for i in zf.infolist())
    else:
        data = path.read_bytes()
    return STAMP.sub(b"T", data)


def _assert_same_outputs(a: Path, b: Path) -> None:
    ma, mb = (json.loads((run / "manifest.json").read_text()) for run in (a, b))
    ma.pop("execution"), mb.pop("execution")  # how the batches ran: the one other difference
    assert [o["path"] for o in ma["outputs"]] == [o["path"] for o in mb["outputs"]]
    assert any(o["path"].startswith("fhir/bundles/") for o in ma["outputs"])
    for o in ma["outputs"]:
        assert _contents(a / o["path"]) == _contents(b / o["path"]), o["path"]
    # the manifest too, but for its start and finish times, where the partitions ran (and the digests over them)
    timed = ("started", "finished", "outputs", "digest", "execution")
    assert {k: v for k, v in ma.items() if k not in timed} == {k: v for k, v in mb.items() if k not in timed}
    assert [(o["path"], o["sha256"]) for o in ma["outputs"] if not o["path"].startswith("reports/")] == \
           [(o["path"], o["sha256"]) for o in mb["outputs"] if not o["path"].startswith("reports/")]


def _execution(run: Path, roundtrip_processes: int | None = None) -> dict[str, Any]:
    """The manifest's execution record (how the FHIR batches ran), after checking how many
    processes compared the round trip's buckets (``roundtrip_processes``, when given)."""
    execution = dict(json.loads((run / "manifest.json").read_text())["execution"])
    roundtrip = execution.pop("roundtrip")
    assert roundtrip["jobs"] >= roundtrip["buckets"] >= 1
    if roundtrip_processes is not None:
        assert roundtrip["processes"] == roundtrip_processes
        assert roundtrip["in_this_process"] is (roundtrip_processes == 1)
    return execution


@pytest.fixture(scope="module")
def one_partition(extract: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    with pytest.MonkeyPatch.context() as mp:
        real = pipeline.options_for
        mp.setattr(pipeline, "options_for",
                   lambda *a, **k: dataclasses.replace(real(*a, **k), chunk_patients=30))
        run = _run(extract, tmp_path_factory.mktemp("n1") / "run", partitions=1)
    assert _execution(run, 1)["ran_on"] == {"this process": 1}
    return run


@pytest.fixture(scope="module")
def cluster() -> Iterator[Any]:
    """A real Dask LocalCluster: two worker processes on loopback."""
    from distributed import LocalCluster

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                      dashboard_address="127.0.0.1:0") as local:
        yield local


def test_one_partition_runs_here_and_says_so(one_partition: Path) -> None:
    assert _execution(one_partition) == {"executor": "local", "where": "this process", "partitions": 1,
                                         "writer_batches": 10, "partitions_run": 1, "ran_on": {"this process": 1},
                                         "notes": []}


@pytest.mark.parametrize("n", [2, 3, 50])
def test_local_partitions_give_the_same_bytes(one_partition: Path, extract: Path, tmp_path: Path, n: int,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    ran: list[int] = []
    real = partitions.run_partition

    def counted(job: partitions.Partition) -> partitions.PartitionResult:
        ran.append(len(job.batches))
        return real(job)

    monkeypatch.setattr(partitions, "run_partition", counted)
    monkeypatch.setattr(executor, "cores", lambda: 1)  # in this process, where the count is seen
    run = _run(extract, tmp_path / "run", partitions=n)
    _assert_same_outputs(one_partition, run)
    assert len(ran) == min(n, 10) and sum(ran) == 10  # 300 patients / 10 per bundle / 3 bundles per batch
    execution = _execution(run)
    assert (execution["partitions"], execution["partitions_run"]) == (n, min(n, 10))
    # fewer partitions than asked for is said, with the reason
    assert [bool(re.search(r"50 partitions asked for.* 10 writer batch\(es\).* 10 ran", note))
            for note in execution["notes"]] == ([True] if n > 10 else [])


@pytest.mark.parametrize("cores, n", [(2, None), (3, 7), (2, 1)])
def test_local_processes_give_the_same_bytes(one_partition: Path, extract: Path, tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch, cores: int, n: int | None) -> None:
    """The default local run: one partition per core, run by a pool of that many worker
    processes (real ones, spawned); the manifest names the processes that ran them (a pool
    may hand two jobs to one worker: at most ``cores``, never this process). One partition
    runs in this process, as does a round trip of one bucket (several buckets on a pool:
    tests/fhir/test_roundtrip.py)."""
    monkeypatch.setattr(executor, "cores", lambda: cores)
    run = _run(extract, tmp_path / "run", **({} if n is None else {"partitions": n}))
    _assert_same_outputs(one_partition, run)
    manifest = json.loads((run / "manifest.json").read_text())["execution"]
    execution = _execution(run)
    asked = n or cores
    assert execution["executor"] == "local" and execution["partitions"] == asked
    pooled = asked > 1
    ran = execution["ran_on"]
    assert sum(ran.values()) == execution["partitions_run"] == min(asked, 10)
    if pooled:
        assert execution["where"] == f"a pool of {min(asked, cores)} worker processes on this machine"
        assert ran == {"a local worker process": min(asked, 10)}, ran  # never this process; no pid (determinism)
    else:
        assert execution["where"] == "this process" and ran == {"this process": 1}
    assert manifest["roundtrip"]["buckets"] == 1 and manifest["roundtrip"]["in_this_process"] is True  # (one bucket)


def test_dask_cluster_gives_the_same_bytes(one_partition: Path, extract: Path, tmp_path: Path, cluster: Any) -> None:
    """A real Dask LocalCluster (two worker processes on loopback) given as --scheduler."""
    from distributed import Client

    run = _run(extract, tmp_path / "run", executor="dask", scheduler=cluster.scheduler_address, partitions=3)
    with Client(cluster) as client:
        workers = set(client.scheduler_info()["workers"])
    _assert_same_outputs(one_partition, run)
    execution = _execution(run)
    # the manifest says where each partition ran: on the cluster's worker processes, none here
    assert execution["where"] == f"the Dask scheduler at {cluster.scheduler_address}"
    assert execution["partitions_run"] == 3 and sum(execution["ran_on"].values()) == 3
    assert set(execution["ran_on"]) <= workers, (execution["ran_on"], workers)


def test_dask_runs_a_single_writer_batch_on_the_cluster(extract: Path, tmp_path: Path, cluster: Any,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """One writer batch (every patient in one) is still sent to the cluster, not run here unsaid."""
    real = pipeline.options_for
    monkeypatch.setattr(pipeline, "options_for",
                        lambda *a, **k: dataclasses.replace(real(*a, **k), chunk_patients=100_000))
    here = _run(extract, tmp_path / "here")
    assert _execution(here)["ran_on"] == {"this process": 1}
    there = _run(extract, tmp_path / "there", executor="dask", scheduler=cluster.scheduler_address)
    _assert_same_outputs(here, there)
    execution = _execution(there)
    assert execution["writer_batches"] == 1 and execution["partitions_run"] == 1
    assert [w.startswith("tcp://127.0.0.1:") for w in execution["ran_on"]] == [True]
    assert execution["notes"] and "8 partitions asked for" in execution["notes"][0]


def test_the_run_prints_where_its_partitions_ran(extract: Path, tmp_path: Path, cluster: Any) -> None:
    result = CliRunner().invoke(main, ["run", "--input", str(extract), "--mapping", "generic-csv", "--cutover",
                                       "2022-10-01", "--out", str(tmp_path / "run"), "--bundle-size", "10",
                                       "--executor", "dask", "--scheduler", cluster.scheduler_address,
                                       "--partitions", "20"])
    assert result.exit_code == 0, result.output
    assert f"executor dask on the Dask scheduler at {cluster.scheduler_address}" in result.output
    assert "note: 20 partitions asked for" in result.output


def test_dask_without_a_scheduler_starts_its_own_cluster(one_partition: Path, extract: Path, tmp_path: Path) -> None:
    _assert_same_outputs(one_partition, _run(extract, tmp_path / "run", executor="dask"))


@pytest.mark.parametrize("args, problem", [
    (["--executor", "spark"], "unknown executor 'spark'"),
    (["--scheduler", "tcp://127.0.0.1:8786"], "--scheduler needs --executor dask"),
    (["--partitions", "0"], "--partitions must be at least 1"),
    (["--executor", "dask", "--no-fhir"], "with --no-fhir there is nothing to split"),
    (["--executor", "dask", "--scheduler", "tcp://127.0.0.1:1"], "no Dask scheduler answers at tcp://127.0.0.1:1"),
    (["--executor", "dask", "--scheduler", "nowhere"], "is not an address such as tcp://host:8786"),
])
def test_bad_executor_options_exit_2_before_reading(extract: Path, tmp_path: Path, args: list[str],
                                                    problem: str) -> None:
    out = tmp_path / "run"
    result = CliRunner().invoke(main, ["run", "--input", str(extract), "--mapping", "generic-csv", "--cutover",
                                       "2022-10-01", "--out", str(out), "--quiet", *args])
    assert result.exit_code == 2
    assert problem in result.stderr
    assert not out.exists()  # nothing read, nothing written


def test_every_bad_option_is_reported_at_once(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["run", "--input", str(tmp_path / "missing"), "--mapping", "generic-csv",
                                       "--cutover", "2022-10-01", "--out", str(tmp_path / "run"), "--quiet",
                                       "--executor", "spark", "--scheduler", "tcp://127.0.0.1:8786",
                                       "--partitions", "-1"])
    assert result.exit_code == 2
    for problem in ("unknown executor 'spark'", "--scheduler needs --executor dask", "--partitions must be at least 1",
                    "input folder not found"):
        assert problem in result.stderr


def test_dask_without_dask_installed_is_a_configuration_error(extract: Path, tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "distributed" else real(name, *a))
    out = tmp_path / "run"
    result = CliRunner().invoke(main, ["run", "--input", str(extract), "--mapping", "generic-csv", "--cutover",
                                       "2022-10-01", "--out", str(out), "--quiet", "--executor", "dask"])
    assert result.exit_code == 2
    assert "needs Dask distributed, which is not installed here" in result.stderr
    assert not out.exists()


def test_a_script_without_a_main_guard_runs_once(tmp_path: Path) -> None:
    """Spawned workers do not re-run the caller's script: one calling the API without
    ``if __name__ == "__main__":`` (as a notebook-turned-script does) runs its batch once."""
    import subprocess
    import sys

    script = tmp_path / "unguarded.py"
    script.write_text("import os\nfrom migrate.executor import LocalExecutor\nprint('started', os.getpid())\n"
                      "print('results', LocalExecutor(partitions=3, workers=2).map(abs, [-1, -2, -3]))\n")
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120,
                          cwd=Path(__file__).resolve().parents[1])
    assert done.returncode == 0, done.stderr
    assert done.stdout.count("started") == 1 and "results [1, 2, 3]" in done.stdout
def test_an_fsspec_input_url_gives_the_same_bytes(one_partition: Path, extract: Path, tmp_path: Path) -> None:
    """--input memory://…: the files are copied in through fsspec, then read as a folder."""
    import fsspec

    fs = fsspec.filesystem("memory")
    root = f"/extract-{tmp_path.name}"
    for path in sorted(p for p in extract.rglob("*") if p.is_file()):
        fs.pipe_file(f"{root}/{path.relative_to(extract).as_posix()}", path.read_bytes())
    try:
        run = _run(f"memory://{root}", tmp_path / "run")  # type: ignore[arg-type]
    finally:
        fs.rm(root, recursive=True)
    _assert_same_outputs(one_partition, run)
    assert not (run / ".work").exists()  # the copy went with the work area


def test_file_urls_are_paths(extract: Path, tmp_path: Path) -> None:
    out = tmp_path / "run folder"
    result = CliRunner().invoke(main, ["run", "--input", extract.as_uri(), "--mapping", "generic-csv", "--cutover",
                                       "2022-10-01", "--out", out.as_uri(), "--quiet", "--no-fhir"])
    assert result.exit_code == 0, result.output
    assert (out / "manifest.json").is_file()


@pytest.mark.parametrize("args, code, problem", [
    (["--out", "s3://bucket/run"], 2, "--out: s3://bucket/run is a s3:// URL; the run folder must be a path"),
    (["--input", "nosuch://extract"], 2, "--input: cannot read nosuch:// URLs here"),
    (["--input", "memory://no-such-extract"], 3, "input folder not found: memory://no-such-extract"),
    (["--input", "file://elsewhere/extract"], 2, "names another host (elsewhere)"),
])
def test_unusable_urls_exit_before_reading(extract: Path, tmp_path: Path, args: list[str], code: int,
                                           problem: str) -> None:
    options = {"--input": str(extract), "--out": str(tmp_path / "run")} | dict(zip(args[::2], args[1::2]))
    result = CliRunner().invoke(main, ["run", "--mapping", "generic-csv", "--cutover", "2022-10-01", "--quiet",
                                       *(x for pair in options.items() for x in pair)])
    assert result.exit_code == code, result.output
    assert problem in result.stderr
    assert not (tmp_path / "run").exists()


def test_a_scheduler_without_workers_is_refused_before_reading(extract: Path, tmp_path: Path) -> None:
    from distributed import LocalCluster

    with LocalCluster(n_workers=0, host="127.0.0.1", dashboard_address="127.0.0.1:0") as empty:
        result = CliRunner().invoke(main, ["run", "--input", str(extract), "--mapping", "generic-csv", "--cutover",
                                           "2022-10-01", "--out", str(tmp_path / "run"), "--quiet", "--executor",
                                           "dask", "--scheduler", empty.scheduler_address])
    assert result.exit_code == 2
    assert "no worker is connected to the scheduler" in result.stderr
    assert not (tmp_path / "run").exists() and not list(tmp_path.glob(".handover-probe-*"))


def test_workers_that_cannot_run_the_partitions_are_named(tmp_path: Path, cluster: Any) -> None:
    """On this machine every worker sees the folder; a worker elsewhere without the shared
    filesystem (its answer: the probe is absent) or with another handover is named."""
    from distributed import Client

    from migrate import __version__
    from migrate.executor import check_workers, worker_facts, worker_problems

    assert check_workers(cluster.scheduler_address, tmp_path / "run") == []
    with Client(cluster) as client:
        answers = client.run(worker_facts, str(tmp_path / "absent-probe"))
    assert {a["sees"] for a in answers.values()} == {False}
    answers[next(iter(answers))] = {"sees": True, "handover": "0.0.9"}
    problems = worker_problems(answers, tmp_path, __version__)
    assert len(problems) == len(answers)  # one worker does not see it, the other runs another handover
    assert sum("does not see the run folder's parent" in p for p in problems) == len(answers) - 1
    assert sum("has handover 0.0.9; this run is handover" in p for p in problems) == 1


@given(st.integers(0, 200), st.integers(1, 64))
def test_split_keeps_every_batch_in_order_in_whole_ranges(n_batches: int, asked: int) -> None:
    batches = [(i, 3 * i + 1, 3 * i + 3) for i in range(n_batches)]
    parts = partitions.split(batches, asked)
    assert [b for part in parts for b in part] == batches  # every batch once, in order
    assert len(parts) == max(1, min(asked, n_batches))
    if n_batches:
        assert all(parts) and max(map(len, parts)) - min(map(len, parts)) <= 1  # none empty, as even as can be


@given(st.lists(st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="/\x00"), min_size=1,
                        max_size=12), min_size=1, max_size=4))
def test_a_file_url_is_the_path_it_names(parts: list[str]) -> None:
    from migrate.locations import resolve

    path = Path("/", *parts)
    location, problems = resolve("--out", path.as_uri(), remote=False)
    assert problems == [] and location.path == path and location.url is None
    assert resolve("--out", str(path), remote=False) == (type(location)(str(path), path=path), [])
