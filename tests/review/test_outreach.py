"""The outreach list: patients in active care whose sharing block is upheld or undecided, with
contact details, marked identifiable, and never in the pseudonymised pack."""

from __future__ import annotations

import json
import zipfile
from datetime import datetime
from pathlib import Path

import openpyxl
import polars as pl

from migrate.reports import write_reports
from migrate.reports.pseudonymise import pseudonymise
from tests.review.conftest import extract, fill, run
from tests.review.test_decisions import OVERRIDE

DAY = datetime(2022, 10, 3)


def _rows(run_dir: Path) -> list[dict[str, object]]:
    sheet = openpyxl.load_workbook(run_dir / "reports" / "outreach.xlsx").worksheets[0]
    headers = [c.value for c in sheet[1]]
    return [dict(zip(headers, r, strict=True)) for r in sheet.iter_rows(min_row=2, values_only=True)]


def test_undecided_and_upheld_blocks_in_active_care_are_listed_with_contact_details(first_batch: Path,
                                                                                      tmp_path: Path) -> None:
    rows = _rows(first_batch)
    assert [r["Local patient id"] for r in rows] == ["P21"]  # the one blocked patient in active care
    patients = pl.read_parquet(first_batch / "canonical" / "patients.parquet").filter(pl.col("patient_key") == "P21")
    [row] = rows
    assert row["NHS number"] == patients["nhs_number"].item()
    assert row["Postcode"] == patients["postcode"].item() and row["Name"] == "Vera Usher"
    assert row["Review of the block"] == "undecided"
    assert "R21 (physio_tier1, routine)" == row["Open referrals (service line, priority)"]
    assert "93C1" in str(row["Dissent on record"])
    book = zipfile.ZipFile(first_batch / "reports" / "outreach.xlsx")
    assert "IDENTIFIABLE" in book.read("xl/worksheets/sheet1.xml").decode()  # on every printed page
    assert openpyxl.load_workbook(first_batch / "reports" / "outreach.xlsx").sheetnames == ["Outreach (identifiable)"]
    summary = json.loads((first_batch / "reports" / "reconciliation.json").read_text())
    assert summary["review"]["outreach"] == 1
    # Upheld: still listed, with the decision.
    upheld = fill(first_batch / "reports" / "exceptions.xlsx", tmp_path / "u.xlsx",
                  {("P21", "SHARING_BLOCK_ACTIVE_CARE"): {"Reviewer": "Dr A Patel", "Decision": "uphold", "Date": DAY}})
    kept = tmp_path / "kept"
    run(extract(tmp_path / "in1"), kept, [upheld])
    assert [r["Review of the block"] for r in _rows(kept)] == ["uphold by Dr A Patel on 03/10/2022"]
    # Overridden: the record is shared, the patient leaves the list.
    over = fill(first_batch / "reports" / "exceptions.xlsx", tmp_path / "o.xlsx",
                {("P21", "SHARING_BLOCK_ACTIVE_CARE"): OVERRIDE})
    shared = tmp_path / "shared"
    run(extract(tmp_path / "in2"), shared, [over])
    assert _rows(shared) == []


def test_the_pseudonymised_pack_never_holds_the_outreach_list(first_batch: Path, tmp_path: Path) -> None:
    key = b"k" * 32
    files = pseudonymise(first_batch, key, tmp_path / "pack")
    names = {p.name for p in files} | {p.name for p in (tmp_path / "pack").rglob("*")}
    assert "outreach.xlsx" not in names
    for path in (tmp_path / "pack").rglob("*"):
        if path.is_file() and path.suffix in (".json", ".html", ".csv"):
            assert "Usher" not in path.read_text(encoding="utf-8-sig"), path.name
    # A re-render of the run's own reports writes it again, the same bytes.
    before = (first_batch / "reports" / "outreach.xlsx").read_bytes()
    assert any(p.name == "outreach.xlsx" for p in write_reports(first_batch).files)
    assert (first_batch / "reports" / "outreach.xlsx").read_bytes() == before
