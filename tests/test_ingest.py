"""Ingest on a whole extract: each table-level quarantine reason, cascades, and the invariant."""

from __future__ import annotations

import shutil
from pathlib import Path

import polars as pl
import pytest

from migrate.ingest import ingest
from migrate.profile import load_profile

CASE = Path(__file__).parent / "cases" / "worked-example"


@pytest.fixture
def extract(tmp_path: Path) -> Path:
    target = tmp_path / "input"
    shutil.copytree(CASE / "input", target)
    return target


def _append(path: Path, *lines: str) -> None:
    with path.open("a", encoding="utf-8") as fh:
        fh.writelines(line + "\n" for line in lines)


def _run(extract: Path, tmp_path: Path) -> tuple[dict[str, pl.DataFrame], pl.DataFrame, dict[str, int]]:
    result = ingest(extract, load_profile(CASE / "mapping.yaml"), tmp_path / "work")
    return {t: f.collect() for t, f in result.tables.items()}, result.quarantine, {f.name: f.rows_read for f in result.files}


def _reasons(q: pl.DataFrame) -> set[tuple[str, int, str]]:
    return set(q.select("source_file", "source_row", "reason_code").iter_rows())


def test_clean_worked_example_quarantines_nothing(extract: Path, tmp_path: Path) -> None:
    tables, q, read = _run(extract, tmp_path)
    assert q.height == 0
    assert {t: f.height for t, f in tables.items()} == {"patients": 28, "referrals": 29, "contacts": 16, "codes": 6}
    assert read == {"patients.csv": 28, "referrals.csv": 29, "contacts.csv": 16, "codes.csv": 6}


def test_table_level_reasons_and_cascades(extract: Path, tmp_path: Path) -> None:
    _append(extract / "patients.csv", "P90,9991000003,Bad,Date,1950-02-31,female,OX1 1AA,K84001")  # row 29
    _append(extract / "referrals.csv",
            "R01,P01,2022-07-01,physio_tier1,routine,backlog,open,,,N,,knee,,N",        # 30 duplicate key
            "R90,P99,2022-07-01,physio_tier1,routine,backlog,open,,,N,,knee,,N",        # 31 unknown patient
            "R91,P90,2022-07-01,physio_tier1,routine,backlog,open,,,N,,knee,,N")        # 32 patient quarantined
    _append(extract / "contacts.csv",
            "C90,R99,P01,2022-09-01 10:00,5,initial,",      # 17 unknown referral
            "C91,R91,P90,2022-09-01 10:00,5,initial,",      # 18 referral quarantined
            "C92,R02,P03,2022-09-01 10:00,5,initial,",      # 19 patient differs from the referral's
            "C93,R02,,2022-09-01 10:00,5,initial,")         # 20 patient filled from the referral
    _append(extract / "codes.csv", "P98,read2,93C1,Refused,2021-05-01")  # 7 unknown patient
    tables, q, read = _run(extract, tmp_path)
    assert _reasons(q) == {
        ("patients.csv", 29, "unparseable_date"),
        ("referrals.csv", 30, "duplicate_key"),
        ("referrals.csv", 31, "unknown_patient"),
        ("referrals.csv", 32, "parent_quarantined"),
        ("contacts.csv", 17, "unknown_referral"),
        ("contacts.csv", 18, "parent_quarantined"),
        ("contacts.csv", 19, "patient_mismatch"),
        ("codes.csv", 7, "unknown_patient"),
    }
    dup = q.filter(pl.col("reason_code") == "duplicate_key")["message"][0]
    assert dup == "referrals.csv row 30: referral_key R01 repeats referrals.csv row 1 (the first row is kept)"
    filled = tables["contacts"].filter(pl.col("contact_key") == "C93")
    assert filled["patient_key"].to_list() == ["P02"]
    # nothing lost: per file, rows read = canonical rows + quarantined rows
    for name, n in read.items():
        table = name.removesuffix(".csv")
        kept = tables[table].filter(pl.col("source_file") == name).height
        assert kept + q.filter(pl.col("source_file") == name).height == n


def test_quarantine_messages_never_contain_identifiers(extract: Path, tmp_path: Path) -> None:
    _append(extract / "patients.csv", "P90,9991000003,Zebedee,Quux,1950-02-31,X,OX1 1AA,K84001")
    _, q, _ = _run(extract, tmp_path)
    message = q["message"][0]
    for secret in ("Zebedee", "Quux", "1950-02-31", "9991000003", "OX1 1AA"):
        assert secret not in message
    assert "sex (column sex) has no mapping (value 'X')" in message


def test_a_later_source_updates_rows_latest_wins(extract: Path, tmp_path: Path) -> None:
    """A second profile (a delta extract) applies after the first: its row for a key wins
    and the row it replaces is superseded (disposition merged), not quarantined."""
    (extract / "updates.csv").write_text("id,postcode,dob\nP02,OX9 9ZZ,1942-03-12\nP02,OX9 8YY,1942-03-12\n")
    delta = tmp_path / "delta.yaml"
    delta.write_text(
        "profile: delta\nformat_version: 1\ndefaults: {date_formats: ['%Y-%m-%d']}\n"
        "tables:\n  patients:\n    files: updates.csv\n    on_duplicate: latest\n    fields:\n"
        "      source_patient_id: {column: id, required: true}\n      postcode: postcode\n"
        "      birth_date: {column: dob, required: true}\n")
    profiles = [load_profile(CASE / "mapping.yaml"), load_profile(delta)]
    result = ingest(extract, profiles, tmp_path / "work")
    patients = result.tables["patients"].collect()
    p02 = patients.filter(pl.col("patient_key") == "P02")
    assert p02.select("postcode", "source_file", "source_row").rows() == [("OX9 8YY", "updates.csv", 2)]
    assert patients.height == 28
    assert set(result.superseded.select("source_file", "source_row").iter_rows()) == {
        ("patients.csv", 2), ("updates.csv", 1)}
    assert result.quarantine.height == 0
