"""The run folder cannot lie: refused targets, the lock, a killed run, and whole replacement."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from cli import main
from migrate.errors import ConfigError, InputError
from migrate.reports import verify
from migrate.runfolder import check_target, locked, stage

CASES = Path(__file__).parent / "cases"
WORKED = CASES / "worked-example"
RUN = ["run", "--input", str(WORKED / "input"), "--mapping", str(WORKED / "mapping.yaml"), "--cutover", "2022-10-01",
       "--quiet"]


def _run(out: Path, *extra: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, [*RUN, "--out", str(out), *extra])
    return result.exit_code, result.output


def _files(folder: Path) -> set[str]:
    return {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()}


def test_a_folder_that_is_not_a_run_is_refused_and_left_alone(tmp_path: Path) -> None:
    out = tmp_path / "mine"
    out.mkdir()
    (out / "thesis.docx").write_text("years of work")
    code, text = _run(out)
    assert code == 2 and "not a handover run folder" in text
    assert _files(out) == {"thesis.docx"}


def test_an_unrelated_file_in_a_previous_run_folder_is_refused_not_sealed(tmp_path: Path) -> None:
    out = tmp_path / "run"
    assert _run(out)[0] == 0
    (out / "notes.txt").write_text("mine")
    code, text = _run(out)
    assert code == 2 and "notes.txt" in text and "holds files no run wrote" in text
    assert (out / "notes.txt").read_text() == "mine"


@pytest.mark.parametrize("kind", ["absent", "empty"])
def test_an_absent_or_empty_folder_is_written(tmp_path: Path, kind: str) -> None:
    out = tmp_path / "run"
    if kind == "empty":
        out.mkdir()
    assert _run(out)[0] == 0 and verify(out).ok
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no lock, no leftovers


def test_a_rerun_replaces_the_previous_run_whole(tmp_path: Path) -> None:
    """Nothing of an earlier run survives: not its declared.json, not its fhir/."""
    declared = tmp_path / "declared.yaml"
    declared.write_text("patients: 28\nlists:\n  backlog: 20\n")
    out = tmp_path / "run"
    assert _run(out, "--declared", str(declared))[0] == 0
    assert (out / "config" / "declared.json").is_file() and (out / "fhir").is_dir()
    assert _run(out, "--no-fhir")[0] == 0
    assert not (out / "config" / "declared.json").exists()
    assert not (out / "fhir").exists()
    manifest = json.loads((out / "manifest.json").read_text())
    assert _files(out) == {e["path"] for e in manifest["outputs"]} | {"manifest.json"}
    assert verify(out).ok


def test_a_second_run_into_a_folder_in_use_exits_3(tmp_path: Path) -> None:
    out = tmp_path / "run"
    with locked(out):
        code, text = _run(out)
    assert code == 3 and "run folder in use" in text
    assert not out.exists()
    assert _run(out)[0] == 0  # the lock is gone with its holder


def test_the_lock_is_taken_before_the_folder_is_checked(tmp_path: Path) -> None:
    out = tmp_path / "run"
    with stage(out) as staging:
        (staging.path / "x").write_text("")
        with pytest.raises(Exception, match="run folder in use"):
            with stage(out):
                pass
    assert not out.exists()  # never published: the staging folder is removed


KILLED = """
import os, signal, sys
from datetime import date
from pathlib import Path
import migrate.reports
def killed(*args, **kwargs):  # the run dies right after manifest.json is written
    os.kill(os.getpid(), signal.SIGKILL)
migrate.reports.write_reports = killed
from migrate.pipeline import RunConfig, run_batch
run_batch(RunConfig.load(Path(sys.argv[1]), sys.argv[2], date(2022, 10, 1), Path(sys.argv[3])))
"""


def _killed_run(out: Path) -> None:
    proc = subprocess.run([sys.executable, "-c", KILLED, str(WORKED / "input"), str(WORKED / "mapping.yaml"),
                           str(out)], capture_output=True, check=False)
    assert proc.returncode == -signal.SIGKILL, proc.stderr.decode()


def test_a_killed_first_run_leaves_nothing_verify_accepts(tmp_path: Path) -> None:
    out = tmp_path / "run"
    _killed_run(out)
    assert not out.exists()
    with pytest.raises(InputError, match="run folder not found"):  # nothing there to verify (exit 3)
        verify(out)
    leftovers = [p for p in tmp_path.iterdir() if p.name.startswith(".run.partial-")]
    assert len(leftovers) == 1 and (leftovers[0] / "manifest.json").is_file()  # killed after the manifest
    assert _run(out)[0] == 0 and verify(out).ok
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # the next run swept them


def test_a_killed_rerun_leaves_the_previous_run_intact(tmp_path: Path) -> None:
    out = tmp_path / "run"
    assert _run(out)[0] == 0
    before = {p: (out / p).read_bytes() for p in _files(out)}
    _killed_run(out)
    assert {p: (out / p).read_bytes() for p in _files(out)} == before
    assert verify(out).ok


def test_check_target_refuses_a_file(tmp_path: Path) -> None:
    target = tmp_path / "f"
    target.write_text("")
    with pytest.raises(ConfigError, match="is a file"):
        check_target(target)


def test_previous_cannot_be_the_out_folder(tmp_path: Path) -> None:
    out = tmp_path / "run"
    assert _run(out)[0] == 0
    code, text = _run(out, "--previous", str(out))
    assert code == 2 and "would replace the batch it chains to" in text
