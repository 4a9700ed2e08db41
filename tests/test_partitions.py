"""Partitioned FHIR output: the same bytes whatever the number of partitions and the
executor (in this process, or a real Dask LocalCluster on loopback)."""

from __future__ import annotations

import dataclasses
import json
import re
import zipfile
from datetime import date
from pathlib import Path
from typing import Any

import pytest
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
    # the manifest too, but for its start and finish times (and the digests over them)
    timed = ("started", "finished", "outputs", "digest")
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
    assert _execution(run, 1) == {"executor": "local", "partitions": 1, "processes": 1, "in_this_process": True}
    return run


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
    assert _execution(run, 1) == {"executor": "local", "partitions": min(n, 10), "processes": 1,
                                  "in_this_process": True}


@pytest.mark.parametrize("cores, n", [(2, None), (3, 7), (2, 1)])
def test_local_processes_give_the_same_bytes(one_partition: Path, extract: Path, tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch, cores: int, n: int | None) -> None:
    """The default local run: one partition per core, run by a pool of that many worker
    processes (real ones, spawned); the manifest counts the processes that ran them (a pool
    may hand two jobs to one worker: at most ``cores``, never this process). One partition
    runs in this process, as does a round trip of one bucket (several buckets on a pool:
    tests/fhir/test_roundtrip.py)."""
    monkeypatch.setattr(executor, "cores", lambda: cores)
    run = _run(extract, tmp_path / "run", **({} if n is None else {"partitions": n}))
    _assert_same_outputs(one_partition, run)
    manifest = json.loads((run / "manifest.json").read_text())["execution"]
    execution = _execution(run)
    assert execution["executor"] == "local" and execution["partitions"] == (n or cores)
    pooled = (n or cores) > 1
    assert execution["in_this_process"] is (not pooled)
    assert 1 <= execution["processes"] <= (cores if pooled else 1)
    assert manifest["roundtrip"]["buckets"] == 1 and manifest["roundtrip"]["in_this_process"] is True  # (one bucket)


def test_dask_cluster_gives_the_same_bytes(one_partition: Path, extract: Path, tmp_path: Path) -> None:
    """A real Dask LocalCluster (two worker processes on loopback) given as --scheduler."""
    from distributed import Client, LocalCluster

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                      dashboard_address=None) as cluster, Client(cluster) as client:
        run = _run(extract, tmp_path / "run", executor="dask", scheduler=cluster.scheduler_address, partitions=3)
        # the partitions ran on the workers: each worker process imported the FHIR writer
        imported = client.run(lambda: __import__("sys").modules.get("migrate.fhir.partitions") is not None)
        assert any(imported.values())
    _assert_same_outputs(one_partition, run)


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
