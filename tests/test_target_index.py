"""The target index in the target's own layout (issue #10, item 7): mapped by a profile's
``target_index`` table with the same validation (exit 2) and quarantine as any extract."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import polars as pl
import pytest

from migrate.errors import ConfigError, ProfileError
from migrate.profile import load_profile
from migrate.target_index import read_target_index, target_mapping

PROFILE = """profile: target
format_version: 1
tables:
  target_index:
    delimiter: ";"
    fields:
      local_id: {column: MRN, required: true}
      nhs_number: {column: NHS No, remove: " ", pattern: '^\\d{10}$', on_invalid: "null"}
      family_name: Surname
      birth_date: {column: DOB, formats: ["%d/%m/%Y"]}
      sex: {column: Gender, map: {"1": male, "2": female}, map_only: true}
"""
ROWS = ("MRN;NHS No;Surname;DOB;Gender\n"
        "T1;943 476 5919;Ashby;11/02/1941;2\n"
        "T2;;Bennett;12/03/1942;1\n"
        "T3;4010232137;Carter;31/02/1943;2\n"   # no 31 February: quarantined, never matched
        "T4;9912003888;Dawson;14/05/1944;X\n"   # unmapped sex code
        ";9434765919;Evans;15/06/1945;1\n")     # required id blank


def _files(tmp_path: Path, rows: str = ROWS, profile: str = PROFILE) -> tuple[Path, Path]:
    (tmp_path / "target.yaml").write_text(profile, encoding="utf-8")
    (tmp_path / "index.csv").write_text(rows, encoding="utf-8")
    return tmp_path / "target.yaml", tmp_path / "index.csv"


def test_a_target_index_in_its_own_layout_is_mapped_and_bad_rows_quarantined(tmp_path: Path) -> None:
    profile_path, index = _files(tmp_path)
    target = read_target_index(index, load_profile(profile_path))
    assert target.frame.select("local_id", "nhs_number", "family_name", "birth_date", "sex").rows() == [
        ("T1", "9434765919", "Ashby", date(1941, 2, 11), "female"), ("T2", None, "Bennett", date(1942, 3, 12), "male")]
    q = target.quarantine
    assert q.select("source_file", "source_row", "table", "reason_code", "field").rows() == [
        ("index.csv", 3, "target_index", "unparseable_date", "birth_date"),
        ("index.csv", 4, "target_index", "unmapped_code", "sex"),
        ("index.csv", 5, "target_index", "missing_required", "local_id")]
    assert "1943" not in q["message"][0]  # a birth date is never quoted in a message
    assert target.summary() == {"file": "index.csv", "mapping": "target", "rows_read": 5, "rows_used": 2,
                                "quarantined": 3, "quarantined_by_reason": {"missing_required": 1,
                                                                            "unmapped_code": 1,
                                                                            "unparseable_date": 1}}


def test_a_column_the_profile_reads_missing_from_the_file_exits_2(tmp_path: Path) -> None:
    profile_path, index = _files(tmp_path, rows="MRN;NHS Number;Surname;DOB;Gender\nT1;9434765919;A;11/02/1941;2\n")
    with pytest.raises(ProfileError) as caught:
        read_target_index(index, load_profile(profile_path))
    assert caught.value.exit_code == 2
    assert caught.value.problems[0].startswith("index.csv (target_index): missing column(s) NHS No;")


def test_options_that_cannot_apply_to_the_target_index_are_profile_errors(tmp_path: Path) -> None:
    broken = PROFILE.replace('    delimiter: ";"\n', '    delimiter: ";"\n    files: index.csv\n    events: [A04]\n'
                                                      '    on_duplicate: latest\n')
    broken = broken.replace("      family_name: Surname\n", "")
    broken = broken.replace("local_id: {column: MRN, required: true}", "family_name: Surname")
    profile_path, _ = _files(tmp_path, profile=broken)
    with pytest.raises(ProfileError) as caught:
        load_profile(profile_path)
    paths = sorted(p.split(": ")[1] for p in caught.value.problems)
    assert paths == ["tables.target_index.events", "tables.target_index.fields",
                     "tables.target_index.files", "tables.target_index.on_duplicate"]
    assert any("map 'local_id'" in p for p in caught.value.problems)


def test_which_profile_reads_the_target_index(tmp_path: Path) -> None:
    profile_path, index = _files(tmp_path)
    extract = load_profile("generic-csv")
    assert target_mapping(None, [extract], index) is None
    assert target_mapping(str(profile_path), [extract], index) == load_profile(profile_path)
    with pytest.raises(ConfigError, match="give the file with --target-index"):
        target_mapping(str(profile_path), [extract], None)
    with pytest.raises(ConfigError, match="has no target_index table"):
        target_mapping("generic-csv", [extract], index)
    both = load_profile(profile_path)
    assert target_mapping(None, [extract, both], index) is both


def test_without_a_target_index_table_the_columns_keep_their_canonical_names(tmp_path: Path) -> None:
    index = tmp_path / "target-index.csv"
    pl.DataFrame({"local_id": ["N1"], "nhs_number": ["9434765919"], "birth_date": ["1941-02-11"]}).write_csv(index)
    target = read_target_index(index)
    assert target.mapping is None and target.frame.rows() == [("N1", "9434765919", "1941-02-11")]
    assert target.quarantine.height == 0 and target.rows_read == 1
