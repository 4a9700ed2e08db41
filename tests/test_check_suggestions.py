"""``handover check`` suggests the fix: the format, map, delimiter, encoding or column that
would work, with the share it would parse — and applying it makes the problem go away."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from click.testing import CliRunner

import cli
from migrate.check import check_extract
from migrate.profile import load_profile

CASE = Path(__file__).parent / "cases" / "second-layout"


def _case(tmp_path: Path, edit: dict[str, str] | None = None) -> tuple[Path, Path]:
    """A copy of the second layout, its profile with each ``edit`` (old text: new text) made."""
    shutil.copytree(CASE / "input", tmp_path / "in")
    text = (CASE / "mapping.yaml").read_text(encoding="utf-8")
    for old, new in (edit or {}).items():
        assert old in text, old
        text = text.replace(old, new)
    profile = tmp_path / "mapping.yaml"
    profile.write_text(text, encoding="utf-8")
    return tmp_path / "in", profile


def _check(input_dir: Path, profile: Path) -> dict[str, Any]:
    return check_extract(input_dir, load_profile(profile)).asdict()


def _problem(report: dict[str, Any], field: str | None, reason: str, source_file: str | None = None) -> dict[str, Any]:
    [found] = [p for p in report["row_problems"] if p["field"] == field and p["reason_code"] == reason
               and source_file in (None, p["source_file"])]
    return found


def test_a_wrong_date_format_gets_the_format_that_parses_and_the_children_point_at_it(tmp_path: Path) -> None:
    wrong = "birth_date: {column: DOB, required: true, formats: ['%Y-%m-%d']}"
    input_dir, profile = _case(tmp_path, {"birth_date: {column: DOB, required: true}": wrong})
    report = _check(input_dir, profile)
    birth = _problem(report, "birth_date", "unparseable_date")
    assert birth["rows"] == 28
    assert birth["suggestion"].startswith("the format %d/%m/%Y parses 28 of these 28 values (100%)")
    assert birth["example_values"] == []  # a birth date identifies a person: no value shown, nor in the suggestion
    assert "/19" not in birth["suggestion"]
    children = [p for p in report["row_problems"] if p["reason_code"] == "parent_quarantined"]
    assert {p["table"] for p in children} == {"referrals", "contacts", "codes"}
    for p in children:
        assert p["suggestion"] == ("their parents were quarantined: fix PATIENT_EXTRACT.txt first "
                                   "(28 rows unparseable_date in birth_date)")
    # the new user applies the suggestion and checks again
    profile.write_text(profile.read_text(encoding="utf-8").replace(wrong, "birth_date: {column: DOB, required: true, "
                                                                       "formats: ['%d/%m/%Y']}"), encoding="utf-8")
    assert _check(input_dir, profile)["row_problems"] == []


def test_unmapped_codes_are_listed_with_counts_and_what_they_may_mean(tmp_path: Path) -> None:
    input_dir, profile = _case(tmp_path, {"status: {column: RefStatus, required: true, case: lower}":
                                          "status: {column: RefStatus, required: true}"})
    referrals = input_dir / "REFERRAL_EXTRACT.txt"
    text = referrals.read_text(encoding="cp1252")
    referrals.write_text(text.replace('"R29";', '"R29";', 1).replace(';"Rejected";', ';"Withdrawn";'),
                         encoding="cp1252")
    problem = _problem(_check(input_dir, profile), "status", "unmapped_code")
    assert problem["unmapped_values"] == [
        {"value": "Open", "rows": 27, "might_mean": "open"},
        {"value": "Closed", "rows": 1, "might_mean": "closed"},
        {"value": "Withdrawn", "rows": 1, "might_mean": None},
    ]
    assert problem["suggestion"].startswith("3 distinct unmapped value(s): 'Open' (27 rows → open)")
    assert "'Withdrawn' (1 rows)" in problem["suggestion"]


def test_true_false_words_the_profile_lacks_are_named(tmp_path: Path) -> None:
    input_dir, profile = _case(tmp_path, {'false_values: ["N"]': 'false_values: ["No"]'})
    report = _check(input_dir, profile)
    problem = _problem(report, "history_of_cancer", "invalid_value")
    assert problem["suggestion"] == "values that are not in true_values/false_values: 'N' (27 rows → add to false_values)"


def test_a_missing_column_names_the_closest_columns(tmp_path: Path) -> None:
    input_dir, profile = _case(tmp_path, {"birth_date: {column: DOB, required: true}":
                                          "birth_date: {column: BirthDate, required: true}",
                                          "given_names: {split: {column: PatientName": "given_names: {split: "
                                                                                       "{column: PatientNames"})
    code = CliRunner().invoke(cli.main, ["check", "--input", str(input_dir), "--mapping", str(profile)])
    assert code.exit_code == 2
    report = _check(input_dir, profile)
    names, birth = report["layout_suggestions"]
    assert names.startswith("PATIENT_EXTRACT.txt: instead of 'PatientNames', the closest columns: "
                            "'PatientName' (96% alike), ")
    assert birth == "PATIENT_EXTRACT.txt: instead of 'BirthDate', the closest columns: 'DOB' (a listed name for birth_date)"
    assert "suggestion:" in code.stderr and "'DOB' (a listed name for birth_date)" in code.stderr
    quiet = CliRunner().invoke(cli.main, ["check", "--input", str(input_dir), "--mapping", str(profile), "--quiet"])
    assert quiet.exit_code == 2  # the suggestions travel with the error, so --quiet still shows them
    assert "suggestion: PATIENT_EXTRACT.txt: instead of 'BirthDate'" in quiet.stderr


def test_a_header_the_profiles_delimiter_cannot_split_gets_the_sniffed_delimiter(tmp_path: Path) -> None:
    input_dir, profile = _case(tmp_path, {'delimiter: ";"': 'delimiter: ","'})
    report = _check(input_dir, profile)
    fixes = report["layout_suggestions"]
    # the header's quoted names do not split on ",": a layout problem of every file, not a crash
    assert any(p.startswith("patients: PATIENT_EXTRACT.txt: the header line cannot be split")
               for p in report["layout_problems"])
    assert any(f.startswith("PATIENT_EXTRACT.txt: sniffed as semicolon-delimited: every one of the first 28 "
                            "records splits into the header's 8 fields (delimiter ';'") for f in fixes)


def test_a_header_matching_nothing_gets_the_sniffed_delimiter(tmp_path: Path) -> None:
    input_dir, profile = _case(tmp_path, {'delimiter: ";"': 'delimiter: "|"'})
    patients = input_dir / "PATIENT_EXTRACT.txt"  # unquoted names: the header reads as one column
    patients.write_bytes(patients.read_bytes().replace(b'"', b""))
    fixes = _check(input_dir, profile)["layout_suggestions"]
    assert ("PATIENT_EXTRACT.txt: its header matches none of the columns the profile's patients table reads"
            in fixes)
    assert any(f.startswith("PATIENT_EXTRACT.txt: sniffed as semicolon-delimited") for f in fixes)


def test_a_file_in_another_encoding_gets_the_encoding_that_reads_it(tmp_path: Path) -> None:
    input_dir, profile = _case(tmp_path, {"encoding: cp1252": "encoding: utf-8"})
    codes = input_dir / "CODED_ENTRIES.txt"
    codes.write_text(codes.read_text(encoding="cp1252").replace("electronic", "\u00e9lectronique"), encoding="cp1252")
    report = _check(input_dir, profile)
    problem = _problem(report, None, "invalid_encoding", "CODED_ENTRIES.txt")
    assert problem["rows"] == 5  # of 6: the rows holding "électronique"
    assert problem["suggestion"] == ("5 bytes are not UTF-8 and no UTF-8 multi-byte characters: Windows-1252: "
                                     "set encoding: cp1252")
    # one row of 28 with a byte that is not UTF-8 is not "most of the file": no file-wide fix proposed
    assert _problem(report, None, "invalid_encoding", "PATIENT_EXTRACT.txt")["suggestion"] is None


def test_a_file_whose_records_do_not_split_gets_the_quoting_that_reads_them(tmp_path: Path) -> None:
    input_dir, profile = _case(tmp_path, {"files: PATIENT_EXTRACT*.txt": "files: PATIENT_EXTRACT*.txt\n    quote_char: null"})
    patients = input_dir / "PATIENT_EXTRACT.txt"
    header, first, rest = patients.read_text(encoding="cp1252").split("\n", 2)
    # a plain header, and the addresses holding the delimiter inside quotes: unquoted, those records do not fit
    # (the first is left alone: polars' reader gives up on a file whose first record is wider than its header)
    patients.write_text("\n".join((header.replace('"', ""), first, rest.replace(", Oxford", "; Oxford"))),
                        encoding="cp1252")
    problem = _problem(_check(input_dir, profile), None, "wrong_field_count")
    assert problem["rows"] == 27
    assert problem["suggestion"].startswith("the file reads as semicolon-delimited: every one of the first 28 records")
    assert problem["suggestion"].endswith("set delimiter: ';', quote_char: '\"'")


def test_the_terminal_shows_each_suggestion(tmp_path: Path) -> None:
    wrong = "birth_date: {column: DOB, required: true, formats: ['%Y-%m-%d']}"
    input_dir, profile = _case(tmp_path, {"birth_date: {column: DOB, required: true}": wrong})
    result = CliRunner().invoke(cli.main, ["check", "--input", str(input_dir), "--mapping", str(profile)])
    assert result.exit_code == 0
    assert "suggestion (PATIENT_EXTRACT.txt, birth_date, unparseable_date): the format %d/%m/%Y" in result.stdout
    report = json.loads(CliRunner().invoke(cli.main, ["check", "--input", str(input_dir), "--mapping", str(profile),
                                                      "--json"]).stdout)
    assert _problem(report, "birth_date", "unparseable_date")["suggestion"]
