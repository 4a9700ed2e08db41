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
    # Two problems (a date and a code): the row may be misaligned, so no value is quoted at all.
    assert "sex (column sex) has no mapping" in message and "(value" not in message


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


@pytest.mark.parametrize("content", [b"", b"\xef\xbb\xbf"], ids=["0-byte", "BOM-only"])
def test_an_empty_parent_file_makes_its_children_orphans(extract: Path, tmp_path: Path, content: bytes) -> None:
    """An empty patients file never switches the reference checks off: every referral,
    contact and code is quarantined, none migrated for a patient that does not exist."""
    (extract / "patients.csv").write_bytes(content)
    tables, q, read = _run(extract, tmp_path)
    assert read == {"patients.csv": 0, "referrals.csv": 29, "contacts.csv": 16, "codes.csv": 6}
    assert {t: f.height for t, f in tables.items()} == {"patients": 0, "referrals": 0, "contacts": 0, "codes": 0}
    by_file = dict(q.group_by("source_file").agg(pl.len()).iter_rows())
    assert by_file == {"referrals.csv": 29, "contacts.csv": 16, "codes.csv": 6}
    assert set(q.filter(pl.col("source_file") != "contacts.csv")["reason_code"]) == {"unknown_patient"}


def test_a_cr_only_child_file_loses_no_record(extract: Path, tmp_path: Path) -> None:
    """Old Mac exports end lines in a bare CR: every record is still read."""
    contacts = extract / "contacts.csv"
    contacts.write_bytes(contacts.read_bytes().replace(b"\n", b"\r"))
    tables, q, read = _run(extract, tmp_path)
    assert read["contacts.csv"] == 16 and tables["contacts"].height == 16 and q.height == 0


def test_a_stray_quote_quarantines_one_row_and_the_batch_goes_on(extract: Path, tmp_path: Path) -> None:
    _append(extract / "patients.csv", 'P90,9991000003,"Bob" Smith,Quux,1950-02-01,male,OX1 1AA,K84001',
            'P91,9991000003,Ok,Quux,5 ft 11",male,OX1 1AA,K84001')
    tables, q, read = _run(extract, tmp_path)
    assert read["patients.csv"] == 30 and tables["patients"].height == 28
    assert _reasons(q) == {("patients.csv", 29, "malformed_record"), ("patients.csv", 30, "malformed_record")}
    assert all("Bob" not in m and "Quux" not in m for m in q["message"])
    assert q["raw"].to_list()[0].startswith("P90,")


def test_a_repeated_header_column_the_profile_reads_is_a_layout_error(extract: Path, tmp_path: Path) -> None:
    from migrate.errors import ProfileError

    codes = extract / "codes.csv"
    codes.write_text(codes.read_text().replace("display,recorded_date", "code,recorded_date", 1))
    with pytest.raises(ProfileError) as caught:
        _run(extract, tmp_path)
    assert "column code appears 2 times in the header" in caught.value.render()


def test_check_quotes_no_value_of_a_misaligned_or_broken_row(extract: Path) -> None:
    """``handover check`` examples come only from rows with one problem in a non-identifying
    field: a row with a stray field, or one whose columns slid (surname in the sex column,
    birth date in the practice column), shows row numbers, never values."""
    from migrate.check import check_extract

    _append(extract / "patients.csv",
            "P90,9991000003,Zebedee,Quux,1950-02-01,male,OX1 1AA,K84001,extra",   # 29: wrong field count
            "P91,9991000003,Quux,1950-02-02,Zebedee,OX1 1AA,K84001,",             # 30: columns slid
            "P92,9991000003,Ok,Fine,1950-02-03,X,OX1 1AA,K84001")                 # 31: one bad code
    report = check_extract(extract, load_profile(CASE / "mapping.yaml"))
    examples = [v for p in report.problems for v in p["example_values"]]
    assert examples == ["X"]
    text = str(report.asdict())
    for secret in ("Zebedee", "Quux", "1950-02-0"):
        assert secret not in text


def test_a_row_failing_a_check_keeps_its_record_beside_rows_failing_the_mapping(extract: Path,
                                                                                 tmp_path: Path) -> None:
    """Quarantine shows every rejected row's source record, whichever check rejected it: a
    contacts file with a date that does not parse (mapping), a repeated key (within the
    file) and an unknown referral (reference check) — the last two once lost their record
    when the table also had mapping failures (applied in key-range buckets)."""
    _append(extract / "contacts.csv",
            "C90,R01,P01,not a date,5,initial,",            # 17 unparseable date
            "C02a,R02,P02,2022-09-01 10:00,5,initial,",     # 18 duplicate key
            "C91,R99,P01,2022-09-01 10:00,5,initial,")      # 19 unknown referral
    _, q, _ = _run(extract, tmp_path)
    rows = {r: (reason, raw) for r, reason, raw in q.filter(pl.col("source_file") == "contacts.csv")
            .select("source_row", "reason_code", "raw").iter_rows()}
    assert {r: reason for r, (reason, _) in rows.items()} == {
        17: "unparseable_date", 18: "duplicate_key", 19: "unknown_referral"}
    for row, contact in ((17, "C90"), (18, "C02a"), (19, "C91")):
        assert rows[row][1] is not None and f'"{contact}"' in rows[row][1]
