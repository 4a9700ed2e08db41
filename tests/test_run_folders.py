"""Every command that reads a run folder, given a missing or corrupt one: exit 3 and one
clear line naming it, never a traceback."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import CliRunner

import cli

CASE = Path(__file__).parent / "cases" / "worked-example"


@pytest.fixture
def good_run(worked_run: Path) -> Path:
    """A sound run folder (the session's worked run: only ever copied here)."""
    return worked_run


def _garbage(path: Path) -> None:
    path.write_bytes(b"\x00not what it should be\xff" * 8)


def _flip_pages(path: Path) -> None:
    """Damage the data pages but keep the footer: the file opens, its rows do not decode."""
    data = bytearray(path.read_bytes())
    for i in range(8, len(data) // 2):
        data[i] ^= 0x5A
    path.write_bytes(bytes(data))


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: len(path.read_bytes()) // 2])


DAMAGES: dict[str, Callable[[Path], None]] = {
    "missing folder": lambda run: shutil.rmtree(run),
    "no manifest": lambda run: (run / "manifest.json").unlink(),
    "manifest not JSON": lambda run: (run / "manifest.json").write_text("{ this is not json"),
    "manifest a list": lambda run: (run / "manifest.json").write_text("[]"),
    "manifest without its keys": lambda run: (run / "manifest.json").write_text("{}"),
    "manifest with wrong types": lambda run: (run / "manifest.json").write_text(json.dumps(
        json.loads((run / "manifest.json").read_text()) | {"inputs": "none", "cutover_date": "soon"})),
    "lineage garbage": lambda run: _garbage(run / "lineage.parquet"),
    "lineage truncated": lambda run: _truncate(run / "lineage.parquet"),
    "patients table missing": lambda run: (run / "patients.parquet").unlink(),
    "canonical table garbage": lambda run: _garbage(run / "canonical" / "patients.parquet"),
    "patients pages damaged": lambda run: _flip_pages(run / "patients.parquet"),
    "exceptions truncated": lambda run: _truncate(run / "exceptions.parquet"),
}
FOLDER_DAMAGES = ("missing folder", "no manifest", "manifest not JSON", "manifest a list",
                  "manifest without its keys", "manifest with wrong types")

COMMANDS: dict[str, Callable[[Path, Path], list[str]]] = {
    "report": lambda bad, good: ["report", str(bad)],
    "report --previous": lambda bad, good: ["report", str(good), "--previous", str(bad)],
    "diff (first)": lambda bad, good: ["diff", str(bad), str(good)],
    "diff (second)": lambda bad, good: ["diff", str(good), str(bad)],
    "fhir": lambda bad, good: ["fhir", str(bad)],
    "verify": lambda bad, good: ["verify", str(bad)],
    "run --previous": lambda bad, good: ["run", "--input", str(CASE / "input"), "--mapping",
                                         str(CASE / "mapping.yaml"), "--cutover", "2022-10-01", "--out",
                                         str(good.parent / "next"), "--previous", str(bad)],
}


# verify hashes tables without reading them (a damaged table is its verification failure,
# test_verify_reports_damaged_tables); a previous run is read for its manifest only.
MANIFEST_ONLY = ("verify", "report --previous", "run --previous")
CASES = [(c, d) for c in COMMANDS for d in DAMAGES if c not in MANIFEST_ONLY or d in FOLDER_DAMAGES]


@pytest.mark.parametrize(("command", "damage"), CASES)
def test_a_missing_or_corrupt_run_folder_exits_3_with_one_line(good_run: Path, tmp_path: Path, command: str,
                                                               damage: str) -> None:
    good = tmp_path / "good"
    shutil.copytree(good_run, good)
    bad = tmp_path / "bad"
    shutil.copytree(good_run, bad)
    DAMAGES[damage](bad)
    result = CliRunner().invoke(cli.main, COMMANDS[command](bad, good))
    assert result.exit_code == 3, (result.exit_code, result.stderr, result.exception)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ") and str(bad) in lines[0], lines[0]
    assert "Traceback" not in result.stderr + result.stdout


def test_verify_reports_damaged_tables(good_run: Path, tmp_path: Path) -> None:
    bad = tmp_path / "bad"
    shutil.copytree(good_run, bad)
    _garbage(bad / "lineage.parquet")
    result = CliRunner().invoke(cli.main, ["verify", str(bad)])
    assert result.exit_code == 1 and "lineage.parquet" in result.stdout
    assert "verification failed" in result.stderr
