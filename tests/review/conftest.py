"""Batches for the review loop: the worked example plus a record that shares P02's NHS number
with another birth date (NHS_NUMBER_CONFLICT P02+P29), and a reviewer filling in the workbook."""

from __future__ import annotations

import csv
import io
import shutil
from collections.abc import Callable, Mapping
from datetime import date
from pathlib import Path
from typing import Any

import openpyxl
import pytest

from migrate.pipeline import RunConfig, RunResult, run_batch

WORKED = Path(__file__).parents[1] / "cases" / "worked-example"
CUTOVER = date(2022, 10, 1)


def extract(folder: Path, edits: Mapping[str, Callable[[str], str]] | None = None) -> Path:
    """The worked example's input plus P29/R29 (P02's NHS number, day and month of birth
    swapped), with ``edits`` (file name -> text transform) applied."""
    shutil.copytree(WORKED / "input", folder)
    with (folder / "patients.csv").open("a", encoding="utf-8") as fh:
        fh.write("P29,9991000011,Bennett,Ben,1942-12-03,male,OX3 2AB,K84001\n")
    with (folder / "referrals.csv").open("a", encoding="utf-8") as fh:
        fh.write("R29,P29,2022-08-01,physio_tier1,routine,backlog,open,,,N,,knee,,N\n")
    for name, edit in (edits or {}).items():
        path = folder / name
        path.write_text(edit(path.read_text(encoding="utf-8")), encoding="utf-8")
    return folder


def run(input_dir: Path, out: Path, decisions: list[Path] | None = None, previous: Path | None = None) -> RunResult:
    config = RunConfig.load(input_dir, WORKED / "mapping.yaml", CUTOVER, out, decisions=decisions or [],
                            previous=previous)
    result = run_batch(config)
    assert result.ok, result.failures()
    return result


def fill(workbook: Path, out: Path, decisions: Mapping[tuple[str, str], Mapping[str, Any]],
         extra: Mapping[str, list[Mapping[str, Any]]] | None = None) -> Path:
    """Type decisions into ``workbook`` as a reviewer would (openpyxl, by the headers they
    see): ``decisions`` maps (subject, flag) to header -> value; ``extra`` adds rows at
    the bottom of a sheet. Saved as ``out``."""
    book = openpyxl.load_workbook(workbook)
    todo = dict(decisions)
    for sheet in book.worksheets[1:]:
        headers = {c.value: c.column for c in sheet[1]}
        for r in range(2, sheet.max_row + 1):
            key = (sheet.cell(r, headers["Subject"]).value, sheet.cell(r, headers["Flag"]).value)
            for header, value in todo.pop(key, {}).items():  # type: ignore[arg-type]
                sheet.cell(r, headers[header]).value = value
        for row in (extra or {}).get(sheet.title, []):
            r = sheet.max_row + 1
            for header, value in row.items():
                sheet.cell(r, headers[header]).value = value
    assert not todo, f"no worklist row for {sorted(todo)}"
    book.save(out)
    return out


def fill_csv(worklist: Path, out: Path, decisions: Mapping[tuple[str, str], Mapping[str, str]]) -> Path:
    """Fill exceptions.csv's reviewer columns (by column name), saved as UTF-8 with a BOM."""
    rows = list(csv.DictReader(io.StringIO(worklist.read_bytes().decode("utf-8-sig"), newline="")))
    for row in rows:
        row.update(decisions.get((row["subject_key"], row["flag_code"]), {}))
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
    out.write_bytes(buffer.getvalue().encode("utf-8-sig"))
    return out


@pytest.fixture(scope="module")
def first_batch(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("review")
    out = base / "run1"
    run(extract(base / "input"), out)
    return out
