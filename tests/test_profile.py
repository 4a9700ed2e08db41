"""Mapping profiles: shipped ones load; a broken one lists every problem at once (exit 2)."""

from __future__ import annotations

from pathlib import Path

import pytest

from migrate.errors import ConfigError, ProfileError
from migrate.profile import load_profile, parse_profile
from migrate.yamltext import read_yaml

GOOD = {
    "profile": "t", "format_version": 1,
    "tables": {"patients": {"files": "p.csv", "fields": {"source_patient_id": "id", "birth_date": "dob"}}},
}


def test_shipped_generic_csv_loads_by_name() -> None:
    profile = load_profile("generic-csv")
    assert profile.name == "generic-csv"
    # the extract's tables, and the practice sharing file's (--practice-sharing; no files of its own)
    assert set(profile.tables) == {"patients", "referrals", "contacts", "codes", "practice_sharing"}
    assert profile.tables["practice_sharing"].files == ()
    assert len(profile.sha256) == 64


def test_unknown_profile_name_is_a_config_error() -> None:
    with pytest.raises(ConfigError) as exc:
        load_profile("no-such-profile")
    assert exc.value.exit_code == 2 and "generic-csv" in str(exc.value)


def test_every_problem_is_listed_with_its_path(tmp_path: Path) -> None:
    doc = {
        "profile": "broken", "format_version": 1, "colour": "blue",
        "tables": {
            "patients": {"files": "p.csv", "fields": {
                "source_patient_id": "id",
                "shoe_size": "shoe",                                     # unknown field
                "birth_date": {"column": "dob", "formats": ["%d/%m/%"]},  # bad format string
                "sex": {"column": "sex", "map": {"M": "man"}},           # not a sex value
                "family_name": {"column": "name", "required": "often"},  # wrong type
            }},
            "appointments": {"files": "a.csv", "fields": {}},           # unknown table
        },
    }
    with pytest.raises(ProfileError) as exc:
        parse_profile(doc, tmp_path / "broken.yaml")
    problems = "\n".join(exc.value.problems)
    assert exc.value.exit_code == 2
    assert "broken.yaml: colour: unknown key" in problems
    assert "tables.patients.fields.shoe_size: 'shoe_size' is not a field" in problems
    assert "tables.patients.fields.birth_date.formats[0]: '%d/%m/%' is not a valid date format" in problems
    assert "tables.patients.fields.sex.map.M: 'man' is not a sex value" in problems
    assert "tables.patients.fields.family_name.required: expected true or false" in problems
    assert "tables.appointments: unknown table" in problems
    assert len(exc.value.problems) == 6


def test_a_table_must_map_its_keys(tmp_path: Path) -> None:
    doc = {"profile": "x", "format_version": 1,
           "tables": {"patients": {"files": "p.csv", "fields": {"source_patient_id": "id"}},
                      "referrals": {"files": "r.csv", "fields": {"source_referral_id": "id"}}}}
    with pytest.raises(ProfileError) as exc:
        parse_profile(doc, tmp_path / "x.yaml")
    assert any("map 'patient_key'" in p for p in exc.value.problems)


def test_wrong_format_version(tmp_path: Path) -> None:
    with pytest.raises(ProfileError) as exc:
        parse_profile({**GOOD, "format_version": 7}, tmp_path / "x.yaml")
    assert any("format_version" in p for p in exc.value.problems)


def test_codes_stay_text_in_yaml() -> None:
    doc = read_yaml(b"map: {01: a, on: b, no: c, 1.10: d}\nflag: true\n")
    assert doc["map"] == {"01": "a", "on": "b", "no": "c", "1.10": "d"}
    assert doc["flag"] is True


def test_invalid_yaml_is_a_profile_error(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("tables: [unclosed\n")
    with pytest.raises(ProfileError):
        load_profile(bad)


# --- checked by the engine that runs them (issue #12, item 6) -----------------------------

def _problems(tmp_path: Path, table: dict[str, object], field: dict[str, object] | None = None) -> str:
    fields: dict[str, object] = {"source_patient_id": "id", "birth_date": "dob"}
    if field:
        fields["nhs_number"] = field
    doc = {"profile": "t", "format_version": 1, "defaults": {"date_formats": ["%Y-%m-%d"]},
           "tables": {"patients": {"files": "p.csv", "fields": fields, **table}}}
    with pytest.raises(ProfileError) as caught:
        parse_profile(doc, tmp_path / "t.yaml")
    assert caught.value.exit_code == 2
    return "\n".join(caught.value.problems)


@pytest.mark.parametrize(("pattern", "why"), [
    (r"^(?=9)\d{10}$", "look-around"),
    (r"^(\d)\1{9}$", "backreferences"),
    (r"^\d{,10}$", "repetition"),
])
def test_a_regex_python_accepts_but_polars_cannot_run_is_refused(tmp_path: Path, pattern: str, why: str) -> None:
    import re

    re.compile(pattern)  # Python's re takes it...
    problems = _problems(tmp_path, {}, {"column": "nhs", "pattern": pattern})
    assert "tables.patients.fields.nhs_number.pattern: not a regular expression polars can run" in problems
    assert why in problems


@pytest.mark.parametrize(("table", "says"), [
    ({"delimiter": "§"}, "tables.patients.delimiter: expected one single-byte (ASCII) character, got '§' (several"),
    ({"delimiter": ";;"}, "tables.patients.delimiter: expected one single-byte"),
    ({"quote_char": "«"}, "tables.patients.quote_char: expected one single-byte"),
    ({"delimiter": "\n"}, "tables.patients.delimiter: a line end"),
    ({"delimiter": "'", "quote_char": "'"}, "tables.patients.quote_char: must differ from the delimiter"),
])
def test_delimiters_and_quotes_are_single_byte(tmp_path: Path, table: dict[str, object], says: str) -> None:
    assert says in _problems(tmp_path, table)


@pytest.mark.parametrize(("files", "says"), [
    ("/etc/passwd", "an absolute path"),
    ("C:\\extract\\p.csv", "an absolute path"),
    ("../secrets/*.csv", "'..' climbs out of --input"),
    ("in/../../p.csv", "'..' climbs out of --input"),
])
def test_file_patterns_stay_inside_the_input_folder(tmp_path: Path, files: str, says: str) -> None:
    assert f"tables.patients.files[0]: {says}" in _problems(tmp_path, {"files": [files]})


def test_a_layout_error_never_quotes_the_file(tmp_path: Path) -> None:
    """A file without a header puts a patient's record on its first line: the message counts
    its fields, never shows them."""
    from migrate.ingest import check_layout
    from migrate.sources import discover

    (tmp_path / "p.csv").write_text("P1,9991000003,Zebedee,1950-02-01\n")
    profile = parse_profile(GOOD | {"defaults": {"date_formats": ["%Y-%m-%d"]}}, tmp_path / "t.yaml")
    with pytest.raises(ProfileError) as caught:
        check_layout(discover(tmp_path, profile))
    text = caught.value.render()
    assert "missing column(s) id, dob" in text and "4 field(s)" in text
    for secret in ("P1", "9991000003", "Zebedee", "1950"):
        assert secret not in text


@pytest.mark.parametrize("system", ["Acme PAS", "acme/pas", ""])
def test_a_source_system_fhir_ids_cannot_carry_is_refused_before_any_data(tmp_path: Path, system: str) -> None:
    """FHIR identifier systems and ids are namespaced by source_system: one with a space or a
    '/' would fail the FHIR stage after ingest, identity and rules had run."""
    good = {**GOOD, "defaults": {"date_formats": ["%Y-%m-%d"]}}
    with pytest.raises(ProfileError) as exc:
        parse_profile({**good, "source_system": system}, tmp_path / "x.yaml")
    assert [p for p in exc.value.problems if "source_system:" in p] == exc.value.problems
    assert parse_profile({**good, "source_system": "acme-pas"}, tmp_path / "x.yaml").source_system == "acme-pas"
