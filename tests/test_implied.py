"""``implied_by``: a field takes the value another column implies when its own column is not
sent, on layouts other than HL7's (a delimited PAS extract, a typed Parquet file), and the
profile is checked before any data is read."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

import polars as pl
import pytest

from migrate.errors import ProfileError
from migrate.mapping import apply_mapping, compile_table, explain_failures
from migrate.profile import parse_profile

# A PAS whose outcome column is filled in only when the clinic records one; the record type
# says what happened to a did-not-attend or cancelled slot, and who cancelled when blank.
ATTENDANCE = {
    "column": "outcome", "required": True,
    "map": {"ATT": "attended", "DNA": "did_not_attend", "CPT": "cancelled_by_patient",
            "CHS": "cancelled_by_provider", "BKD": "booked"},
    "refine": {"column": "cancelled_by", "when": ["cancelled_by_provider"], "map": {"P": "cancelled_by_patient"}},
    "implied_by": {"column": "record_type", "map": {"DNA": "DNA", "CANC": "CHS"}},
}


def _profile(table: str, fields: dict[str, Any]) -> Any:
    keys = {"contacts": {"contact_key": "id", "referral_key": "ref"},
            "patients": {"source_patient_id": "id"}, "referrals": {"source_referral_id": "id", "patient_key": "id"}}
    doc = {"profile": "t", "format_version": 1,
           "defaults": {"date_formats": ["%Y-%m-%d"], "datetime_formats": ["%Y-%m-%d %H:%M"],
                        "null_values": ["", "NULL"]},
           "tables": {"patients": {"files": "p.csv", "fields": keys["patients"]},
                      table: {"files": "x.csv", "fields": {**keys[table], **fields}}}}
    return parse_profile(doc, Path("t.yaml"))


def _map(table: str, fields: dict[str, Any], source: pl.DataFrame) -> pl.DataFrame:
    profile = _profile(table, fields)
    source = source.with_columns(pl.lit("x.csv").alias("source_file"),
                                 pl.int_range(1, pl.len() + 1, dtype=pl.Int64).alias("source_row"))
    compiled = compile_table(profile.tables[table], source.schema, profile)
    mapped = apply_mapping(source.lazy(), compiled).collect()
    details = explain_failures(source.lazy(), compiled).collect()
    return mapped.join(details, on=["source_file", "source_row"], how="left", maintain_order="left")


def _rows(*rows: tuple[str, ...], columns: tuple[str, ...]) -> pl.DataFrame:
    return pl.DataFrame([dict(zip(columns, r, strict=True)) for r in rows], schema=dict.fromkeys(columns, pl.String))


def test_a_delimited_extract_whose_record_type_implies_the_outcome() -> None:
    cols = ("id", "ref", "outcome", "record_type", "cancelled_by")
    out = _map("contacts", {"attendance": ATTENDANCE}, _rows(
        ("c1", "r", "", "dna", ""),            # not sent: the record type implies DNA
        ("c2", "r", "", "CANC", "P"),          # implied CHS, then refined by who cancelled
        ("c3", "r", "NULL", "CANC", ""),       # a null marker is "not sent" too
        ("c4", "r", "  ", "DNA", ""),          # so is a value of spaces
        ("c5", "r", "", "APPT", ""),           # a record type that implies nothing
        ("c6", "r", '""', "DNA", ""),          # the explicit null is sent: it clears, never implies
        ("c7", "r", "DNA", "DNA", ""),         # sent and agreeing
        ("c8", "r", "CPT", "CANC", "P"),       # sent: the patient's; implied CHS refined by P: the same
        ("c9", "r", "ATT", "DNA", ""),         # sent and contradicting
        ("c10", "r", "BKD", "CANC", "P"),      # contradicting the refined implied value
        # compared as canonical values, after map and refine: CANC with no one named is the
        # provider's cancellation, which an outcome of the patient's contradicts
        ("c11", "r", "CPT", "CANC", ""),
        columns=cols))
    got = [(str(a) if a else None, r) for a, r in zip(out["attendance"], out["__reason"], strict=True)]
    assert got == [("did_not_attend", None), ("cancelled_by_patient", None), ("cancelled_by_provider", None),
                   ("did_not_attend", None), (None, "missing_required"), (None, "missing_required"),
                   ("did_not_attend", None), ("cancelled_by_patient", None), ("attended", "conflicting_value"),
                   ("booked", "conflicting_value"), ("cancelled_by_patient", "conflicting_value")]
    assert out["__field"][8] == "attendance"
    assert out["__message"][8] == (
        "x.csv row 9: attendance: column outcome sends 'ATT' (attended) but column record_type 'DNA' implies 'DNA' "
        "(did_not_attend); the row is held rather than either believed")
    assert "implies 'CHS' (cancelled_by_patient)" in out["__message"][9]
    assert "implies 'CHS' (cancelled_by_provider)" in out["__message"][10]
    # the implied column is one of the field's source columns: kept in the raw record
    assert '"record_type":"DNA"' in out["__raw"][8]


def test_a_typed_parquet_column_and_a_list_field() -> None:
    """A Parquet date-time column is typed by its dtype; the value implied for it (text) is
    read with the field's formats. A list field takes an implied list."""
    frame = pl.DataFrame({
        "id": ["c1", "c2", "c3"], "ref": ["r"] * 3,
        "at": [None, datetime(2022, 1, 3, 10, 0), datetime(2022, 1, 3, 10, 0)],
        "slot": ["DAYCASE", "DAYCASE", "CLINIC"],
    })
    out = _map("contacts", {"contact_datetime": {
        "column": "at", "implied_by": {"column": "slot", "map": {"DAYCASE": "2022-01-02 08:00"}}}}, frame)
    assert out["contact_datetime"].to_list()[0] == datetime(2022, 1, 2, 8, 0)
    assert out["contact_datetime"].to_list()[2] == datetime(2022, 1, 3, 10, 0)
    assert out["__reason"].to_list() == [None, "conflicting_value", None]
    assert "implies '2022-01-02 08:00' (2022-01-02 08:00:00" in out["__message"][1]
    flags = _map("referrals", {"red_flags": {"column": "rf", "implied_by": {
        "column": "pathway", "map": {"CES": "saddle_anaesthesia;bladder"}}}},
                 _rows(("r1", "", "ces"), ("r2", "night_pain", "CES"), columns=("id", "rf", "pathway")))
    assert flags["red_flags"].to_list()[0] == ["saddle_anaesthesia", "bladder"]
    assert flags["__reason"].to_list() == [None, "conflicting_value"]
    assert "sends 'night_pain' (night_pain) but column pathway 'CES' implies" in flags["__message"][1]


def test_a_contradiction_in_an_identifying_field_quotes_no_value() -> None:
    out = _map("patients", {"family_name": {"column": "fam", "implied_by": {"column": "kind", "map": {
        "ANON": "Unknown"}}}}, _rows(("p1", "Smith", "ANON"), ("p2", "", "ANON"), columns=("id", "fam", "kind")))
    assert out["__reason"].to_list() == ["conflicting_value", None]
    assert out["family_name"][1] == "Unknown"
    assert out["__message"][0] == ("x.csv row 1: family_name: column fam contradicts the value column kind implies; "
                                   "the row is held rather than either believed")


def test_implied_by_is_checked_before_any_data_is_read() -> None:
    with pytest.raises(ProfileError) as err:
        _profile("contacts", {
            "attendance": {"column": "outcome", "map": {"A": "attended"}, "map_only": True,
                           "implied_by": {"column": "kind", "map": {"DNA": "did_not_attend", "X": "A"}}},
            "contact_type": {"column": "t", "implied_by": {"column": "t", "map": {"F": "follow-up"}, "colour": 1}},
            "site": {"constant": "Leeds", "implied_by": {"column": "k", "map": {"A": "B"}}},
            "slot_name": {"column": "s", "implied_by": "kind"},
        })
    problems = [p.removeprefix("t.yaml: tables.contacts.fields.") for p in err.value.problems]
    assert sorted(p.split(": ")[0] for p in problems) == [
        "attendance.implied_by.map.DNA", "contact_type.implied_by.colour", "contact_type.implied_by.column",
        "contact_type.implied_by.map.F", "site.implied_by", "slot_name.implied_by"]
    text = "\n".join(problems)
    assert "'did_not_attend' does not become a canonical value through the field's map" in text  # map_only
    assert "t is the field's own column" in text and "a constant is always sent" in text
    # an implied canonical value, after case, needs no map entry
    spec = _profile("referrals", {"status": {"column": "s", "case": "lower", "implied_by": {
        "column": "k", "map": {"X": " CLOSED "}}}}).tables["referrals"]
    implied = next(f for f in spec.fields if f.name == "status").implied_by
    assert implied is not None and implied.map == (("X", "CLOSED"),) and implied.column == "k"
    assert "k" in spec.source_columns
