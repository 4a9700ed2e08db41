"""The mapping compiler on literal rows: each feature, each quarantine reason, no PII in messages."""

from __future__ import annotations

from datetime import date, datetime
from pathlib import Path
from typing import Any

import polars as pl

from migrate.mapping import apply_mapping, compile_table, explain_failures
from migrate.profile import parse_profile


def _map(table: str, fields: dict[str, Any], rows: list[dict[str, str | None]],
         defaults: dict[str, Any] | None = None, cutover: date | None = None) -> pl.DataFrame:
    tables: dict[str, Any] = {table: {"files": "x.csv", "fields": fields}}
    if table != "patients":
        tables["patients"] = {"files": "p.csv", "fields": {"source_patient_id": "id"}}
    doc = {"profile": "t", "format_version": 1, "defaults": defaults or {"date_formats": ["%Y-%m-%d"],
                                                                         "datetime_formats": ["%Y-%m-%d %H:%M"]},
           "tables": tables}
    profile = parse_profile(doc, Path("t.yaml"))
    source = pl.DataFrame(rows, schema={k: pl.String for k in rows[0]}).with_columns(
        pl.lit("x.csv").alias("source_file"), pl.int_range(1, pl.len() + 1, dtype=pl.Int64).alias("source_row"))
    compiled = compile_table(profile.tables[table], source.schema, profile, cutover)
    mapped = apply_mapping(source.lazy(), compiled).collect()
    details = explain_failures(source.lazy(), compiled).collect()
    return mapped.join(details, on=["source_file", "source_row"], how="left", maintain_order="left")


def test_dates_in_several_formats_and_quarantine_when_none_match() -> None:
    out = _map("patients", {"source_patient_id": "id", "birth_date": {"column": "dob", "formats": ["%d/%m/%Y", "%Y-%m-%d"]}},
               [{"id": "1", "dob": "11/02/1941"}, {"id": "2", "dob": "1942-03-12"}, {"id": "3", "dob": "31/02/1950"}])
    assert out["birth_date"].to_list()[:2] == [date(1941, 2, 11), date(1942, 3, 12)]
    assert out["__reason"].to_list() == [None, None, "unparseable_date"]
    # birth date is identifying: the message names file, row and field but never the value
    assert out["__message"][2] == ("x.csv row 3: birth_date (column dob) matches none of the formats "
                                   "%d/%m/%Y, %Y-%m-%d")
    assert "1950" not in out["__message"][2] and "1950" in out["__raw"][2]


def test_value_map_and_unmapped_code() -> None:
    out = _map("contacts", {"contact_key": "id", "referral_key": "ref", "modality": {
        "column": "medium", "map": {"F2F": "face_to_face", "TEL": "telephone"}}},
        [{"id": "c1", "ref": "r", "medium": "f2f"}, {"id": "c2", "ref": "r", "medium": "FAX"}])
    assert out["modality"].to_list() == ["face_to_face", None]
    assert out["__reason"].to_list() == [None, "unmapped_code"]
    assert "modality (column medium) has no mapping (value 'FAX')" in out["__message"][1]


def test_enum_without_map_takes_canonical_values_after_case() -> None:
    out = _map("referrals", {"source_referral_id": "id", "patient_key": "p", "status": {"column": "s", "case": "lower"}},
               [{"id": "r1", "p": "1", "s": "Open"}, {"id": "r2", "p": "1", "s": "Pending"}])
    assert out["status"].to_list() == ["open", None]
    assert out["__reason"].to_list() == [None, "unmapped_code"]


def test_booleans_from_y_n_and_invalid_value() -> None:
    out = _map("referrals", {"source_referral_id": "id", "patient_key": "p", "history_of_cancer": "h"},
               [{"id": "1", "p": "1", "h": "Y"}, {"id": "2", "p": "1", "h": "n"}, {"id": "3", "p": "1", "h": ""},
                {"id": "4", "p": "1", "h": "maybe"}],
               defaults={"true_values": ["Y"], "false_values": ["N"], "date_formats": ["%Y-%m-%d"]})
    assert out["history_of_cancer"].to_list() == [True, False, None, None]
    assert out["__reason"].to_list() == [None, None, None, "invalid_value"]


def test_required_blank_is_missing_required() -> None:
    out = _map("referrals", {"source_referral_id": "id", "patient_key": {"column": "p", "required": True}},
               [{"id": "1", "p": " "}, {"id": "2", "p": "P1"}])
    assert out["__reason"].to_list() == ["missing_required", None]
    assert out["__field"].to_list() == ["patient_key", None]
    assert out["__message"][0] == "x.csv row 1: patient_key (column p) is required but blank"


def test_nhs_number_normalised_never_corrected() -> None:
    spec = {"column": "nhs", "remove": " -", "pattern": r"^\d{10}$", "on_invalid": "null"}
    out = _map("patients", {"source_patient_id": "id", "nhs_number": spec, "nhs_number_raw": "nhs"},
               [{"id": "1", "nhs": "943 476 5919"}, {"id": "2", "nhs": "943-476-5919"}, {"id": "3", "nhs": "94347659"}])
    assert out["nhs_number"].to_list() == ["9434765919", "9434765919", None]
    assert out["nhs_number_raw"].to_list() == ["943 476 5919", "943-476-5919", "94347659"]
    assert out["__reason"].to_list() == [None, None, None]


def test_pattern_failure_quarantines_unless_null_allowed() -> None:
    out = _map("referrals", {"source_referral_id": "id", "patient_key": "p", "ubrn": {"column": "u", "pattern": r"^\d{12}$"}},
               [{"id": "1", "p": "1", "u": "123456789012"}, {"id": "2", "p": "1", "u": "12"}])
    assert out["__reason"].to_list() == [None, "invalid_value"]


def test_split_full_name_concat_and_constant() -> None:
    out = _map("patients", {
        "source_patient_id": "id",
        "family_name": {"split": {"column": "name", "sep": ",", "index": 0}, "case": "title"},
        "given_names": {"split": {"column": "name", "sep": ",", "index": 1, "rest": True}},
        "address": {"columns": ["a1", "a2"], "sep": ", "},
        "nhs_number_status": {"constant": "02"},
    }, [{"id": "1", "name": "SMITH, Jo Ann", "a1": "1 High St", "a2": "Oxford"},
        {"id": "2", "name": "JONES", "a1": "", "a2": "Leeds"}])
    assert out["family_name"].to_list() == ["Smith", "Jones"]
    assert out["given_names"].to_list() == ["Jo Ann", None]
    assert out["address"].to_list() == ["1 High St, Oxford", "Leeds"]
    assert out["nhs_number_status"].to_list() == ["02", "02"]


def test_datetime_from_two_columns_and_list_separator() -> None:
    out = _map("contacts", {"contact_key": "id", "referral_key": "r",
                            "contact_datetime": {"columns": ["d", "t"], "formats": ["%d/%m/%Y %H:%M"]}},
               [{"id": "c", "r": "r", "d": "01/09/2022", "t": "10:30"}])
    assert out["contact_datetime"].to_list() == [datetime(2022, 9, 1, 10, 30)]
    flags = _map("referrals", {"source_referral_id": "id", "patient_key": "p", "red_flags": {"column": "f", "separator": "|"}},
                 [{"id": "1", "p": "1", "f": "cauda_equina| night_pain"}, {"id": "2", "p": "1", "f": ""}])
    assert flags["red_flags"].to_list() == [["cauda_equina", "night_pain"], []]


def test_all_problems_of_a_row_are_in_its_message() -> None:
    out = _map("referrals", {"source_referral_id": "id", "patient_key": "p", "received_date": {"column": "d", "required": True},
                             "assigned_priority": {"column": "pr", "map": {"1": "routine"}}},
               [{"id": "1", "p": "1", "d": "", "pr": "9"}])
    assert out["__reason"][0] == "missing_required"
    assert "received_date (column d) is required but blank" in out["__message"][0]
    # Two problems: the row may be misaligned, so no value is quoted.
    assert "assigned_priority (column pr) has no mapping; canonical values" in out["__message"][0]
    assert "(value" not in out["__message"][0]


def test_a_misaligned_row_never_has_its_values_quoted() -> None:
    """A surname and a birth date that slid into code columns stay out of the message; a row
    with one problem still shows the offending code."""
    fields = {"source_patient_id": "id", "family_name": "surname", "birth_date": "dob",
              "sex": {"column": "sex", "map": {"M": "male", "F": "female"}}, "gp_ods_code": {"column": "gp",
                                                                                        "pattern": "^[A-Z][0-9]{5}$"}}
    out = _map("patients", fields, [
        {"id": "1", "surname": "K84001", "dob": "M", "sex": "Zebedee", "gp": "1950-02-01"},
        {"id": "2", "surname": "Ok", "dob": "1950-02-01", "sex": "X", "gp": "K84001"},
    ])
    assert out["__reason"].to_list() == ["unparseable_date", "unmapped_code"]
    assert "Zebedee" not in out["__message"][0] and "1950-02-01" not in out["__message"][0]
    assert "sex (column sex) has no mapping" in out["__message"][0]
    assert "has no mapping (value 'X')" in out["__message"][1]


def test_a_column_feeding_an_identifying_field_is_never_quoted() -> None:
    fields = {"source_patient_id": "id", "family_name": "name", "gp_ods_code": {"column": "name",
                                                                               "pattern": "^[A-Z][0-9]{5}$"}}
    out = _map("patients", fields, [{"id": "1", "name": "Zebedee"}])
    assert out["__reason"][0] == "invalid_value" and "Zebedee" not in out["__message"][0]


def test_keys_default_to_source_ids() -> None:
    out = _map("referrals", {"source_referral_id": "id", "patient_key": "p"}, [{"id": "R1", "p": "P1"}])
    assert out.select("referral_key", "source_referral_id", "patient_key").rows() == [("R1", "R1", "P1")]


# --- implausible values are questioned (issue #12, item 5) ---------------------------------

def test_two_digit_birth_years_are_never_after_the_cut_over() -> None:
    """A %y birth date is placed in the 100 years up to the cut-over: 60 birth years 1962-2021
    written as two digits all come back in the right century (chrono alone put 36 of them in
    the 2050s and 2060s)."""
    years = list(range(1962, 2022))
    rows = [{"id": str(y), "dob": f"15/06/{y % 100:02d}"} for y in years]
    out = _map("patients", {"source_patient_id": "id", "birth_date": {"column": "dob", "formats": ["%d/%m/%y"]}},
               rows, cutover=date(2022, 10, 1))
    assert [d.year for d in out["birth_date"]] == years
    edge = _map("patients", {"source_patient_id": "id", "birth_date": {"column": "dob", "formats": ["%d/%m/%y"]}},
                [{"id": "a", "dob": "30/09/22"}, {"id": "b", "dob": "02/10/22"}, {"id": "c", "dob": "29/02/00"}],
                cutover=date(2022, 10, 1))
    assert edge["birth_date"].to_list() == [date(2022, 9, 30), date(1922, 10, 2), date(2000, 2, 29)]


def test_two_digit_years_of_other_dates_sit_around_the_cut_over() -> None:
    out = _map("referrals", {"source_referral_id": "id", "patient_key": "p",
                             "received_date": {"column": "d", "formats": ["%d%m%y"]},
                             "pifu_expiry_date": {"column": "e", "formats": ["%d%m%y"]}},
               [{"id": "r1", "p": "1", "d": "010155", "e": "010141"}], cutover=date(2022, 10, 1))
    assert out.select("received_date", "pifu_expiry_date").row(0) == (date(1955, 1, 1), date(2041, 1, 1))


def test_full_width_digits_are_not_an_nhs_number() -> None:
    """The canonical nhs_number is ten ASCII digits whatever the profile's pattern says
    (``\\d`` matches full-width digits)."""
    fields = {"source_patient_id": "id", "nhs_number_raw": "nhs",
              "nhs_number": {"column": "nhs", "pattern": r"^\d{10}$", "on_invalid": "null"}}
    out = _map("patients", fields, [{"id": "1", "nhs": "９９９１０００００３"}, {"id": "2", "nhs": "9991000003"}])
    assert out["nhs_number"].to_list() == [None, "9991000003"]
    strict = _map("patients", {"source_patient_id": "id", "nhs_number": "nhs"}, [{"id": "1", "nhs": "９９９１０００００３"}])
    assert strict["__reason"].to_list() == ["invalid_value"]
    assert "９" not in strict["__message"][0]
