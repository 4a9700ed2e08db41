"""Errors are honest: I/O errors exit 3 naming the path, messages print literally, a chart
label is text, and FHIR validation failures stay in the run folder (issue #12, item 7)."""

from __future__ import annotations

import errno
import shutil
from pathlib import Path

import polars as pl
import pytest
from click.testing import CliRunner

import cli

CASE = Path(__file__).parent / "cases" / "worked-example"
MAPPING = str(CASE / "mapping.yaml")


def invoke(*args: str) -> tuple[int, str, str, BaseException | None]:
    result = CliRunner().invoke(cli.main, list(args))
    exc = None if isinstance(result.exception, SystemExit) else result.exception
    return result.exit_code, result.stdout, result.stderr, exc


def _run(input_dir: Path, out: Path, *extra: str) -> tuple[int, str, str, BaseException | None]:
    return invoke("run", "--input", str(input_dir), "--mapping", MAPPING, "--cutover", "2022-10-01",
                  "--out", str(out), "--quiet", *extra)


def test_a_path_with_markup_in_it_is_printed_as_it_is(tmp_path: Path) -> None:
    missing = tmp_path / "in[/]put [bold]x"
    code, _, err, exc = _run(missing, tmp_path / "run")
    assert exc is None and code == 3
    assert f"input folder not found: {missing}" in " ".join(err.split())


def test_profile_problems_keep_their_brackets(tmp_path: Path) -> None:
    profile = tmp_path / "p.yaml"
    profile.write_text("profile: p\nformat_version: 1\ntables:\n  patients:\n    files: p.csv\n    fields:\n"
                       "      source_patient_id: id\n      birth_date: {column: dob, formats: ['%d/%m/%']}\n")
    code, _, err, exc = invoke("run", "--input", str(CASE / "input"), "--mapping", str(profile), "--cutover",
                               "2022-10-01", "--out", str(tmp_path / "run"))
    assert exc is None and code == 2
    assert "tables.patients.fields.birth_date.formats[0]: '%d/%m/%' is not a valid date format" in err


def test_an_out_folder_that_cannot_be_made_exits_3_naming_it(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    code, _, err, exc = _run(CASE / "input", blocker / "run")
    assert exc is None and code == 3
    assert str(blocker) in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1


@pytest.mark.parametrize(("where", "error"), [
    ("migrate.outputs.write_parquet", OSError(errno.ENOSPC, "No space left on device", "/full/disk/x.parquet")),
    ("migrate.ingest.sha256_file", PermissionError(errno.EACCES, "Permission denied", "/input/patients.csv")),
], ids=["disk full", "unreadable input"])
def test_an_io_error_anywhere_is_exit_3_with_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, where: str,
                                                      error: OSError) -> None:
    module, name = where.rsplit(".", 1)

    def fail(*args: object, **kwargs: object) -> object:
        raise error

    monkeypatch.setattr(f"{module}.{name}", fail)
    if module == "migrate.outputs":  # imported by name into the writers
        monkeypatch.setattr("migrate.ingest.write_parquet", fail)
        monkeypatch.setattr("migrate.ingest.sink", fail)  # canonical tables are written from staged parts
    code, _, err, exc = _run(CASE / "input", tmp_path / "run")
    assert exc is None and code == 3
    assert err.strip() == f"error: {error.filename}: {error.strerror}"
    assert not (tmp_path / "run").exists()  # nothing half-written is left where the run was going


def test_a_dollar_in_a_service_line_is_text_in_the_chart(tmp_path: Path) -> None:
    extract = tmp_path / "in"
    shutil.copytree(CASE / "input", extract)
    referrals = extract / "referrals.csv"
    referrals.write_text(referrals.read_text().replace("physio_tier1", "physio $tier_1$ [/]"))
    code, _, err, exc = _run(extract, tmp_path / "run")
    assert exc is None and code == 0, err
    page = (tmp_path / "run" / "reports" / "reconciliation.html").read_text()
    assert "physio $tier_1$ [/]" in page


def test_fhir_validation_failures_are_in_the_run_folder(tmp_path: Path) -> None:
    code, _, _, exc = _run(CASE / "input", tmp_path / "run")
    assert exc is None and code == 0
    errors = pl.read_parquet(tmp_path / "run" / "fhir" / "errors.parquet")
    assert errors.height == 0 and "problem" in errors.columns
