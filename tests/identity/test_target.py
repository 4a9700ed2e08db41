"""Patients already at the target: by valid NHS number, else by demographics flagged for review."""

from __future__ import annotations

import polars as pl
import pytest

from migrate.errors import InputError
from migrate.identity import IdentitySettings, resolve_identity

from .conftest import PERSON, patients, referrals


def target(*rows: dict[str, str | None]) -> pl.LazyFrame:
    """A target index as read from CSV: every column text."""
    cols = ("local_id", "nhs_number", "family_name", "given_names", "birth_date", "sex", "postcode")
    return pl.DataFrame([{c: r.get(c) for c in cols} for r in rows], schema={c: pl.String for c in cols}).lazy()


INDEX = target(
    {"local_id": "NP01", "nhs_number": "943 476 5919", "family_name": "Ashby", "given_names": "Alice",
     "birth_date": "1941-02-11", "sex": "F", "postcode": "OX2 1AB"},
    {"local_id": "NP02", "nhs_number": None, "family_name": "Bennett", "given_names": "Ben",
     "birth_date": "1942-03-12", "sex": "M", "postcode": "OX3 2AB"},
    {"local_id": "NP03", "nhs_number": "4010232137", "family_name": "Carter", "given_names": "Cara",
     "birth_date": "1943-04-13", "sex": "F", "postcode": "OX4 3AB"},
)


def test_by_number_and_by_demographics(settings: IdentitySettings) -> None:
    rows = patients(
        {"key": "P1", "nhs": "9434765919", **PERSON},
        {"key": "P2", "nhs": None, "family_name": "Bennet", "given_names": "Ben", "born": "1942-03-12", "sex": "male",
         "postcode": "OX3 2AB"},
        # same demographics as NP03 but a different valid number: a different person
        {"key": "P3", "nhs": "9912003888", "family_name": "Carter", "given_names": "Cara", "born": "1943-04-13",
         "sex": "female", "postcode": "OX4 3AB"},
        {"key": "P4", "nhs": None, "family_name": "Dawson", "given_names": "David", "born": "1944-05-14",
         "sex": "male", "postcode": "OX5 4AB"},
    )
    result = resolve_identity(rows, referrals(), settings, INDEX)
    assert result.at_target.select("patient_key", "at_target_id", "match_method").rows() == [
        ("P1", "NP01", "nhs_number"), ("P2", "NP02", "demographics")]
    assert dict(result.patients.select("patient_key", "at_target_id").iter_rows()) == {
        "P1": "NP01", "P2": "NP02", "P3": None, "P4": None}
    flagged = result.exceptions.filter(pl.col("flag_code") == "ALREADY_AT_TARGET")
    by_key = {r["subject_key"]: r for r in flagged.iter_rows(named=True)}
    assert set(by_key) == {"P1", "P2"}
    assert by_key["P1"]["severity"] == "low" and by_key["P1"]["action"] == "update, do not create"
    # a demographic match is not taken on trust: raised for review
    assert by_key["P2"]["severity"] == "medium" and "confirm" in by_key["P2"]["action"]
    assert "NP02" in by_key["P2"]["evidence"] and "Bennet" not in by_key["P2"]["evidence"]


def test_merged_rows_share_their_survivors_target_id(settings: IdentitySettings) -> None:
    rows = patients({"key": "P1", "nhs": "9434765919", **PERSON}, {"key": "P2", "nhs": "9434765919", **PERSON})
    result = resolve_identity(rows, referrals(), settings, INDEX)
    assert dict(result.patients.select("patient_key", "at_target_id").iter_rows()) == {"P1": "NP01", "P2": "NP01"}
    assert result.exceptions.filter(pl.col("flag_code") == "ALREADY_AT_TARGET").get_column(
        "subject_key").to_list() == ["P1"]


def test_target_index_needs_local_id_and_nhs_number(settings: IdentitySettings) -> None:
    with pytest.raises(InputError) as caught:
        resolve_identity(patients({"key": "P1", **PERSON}), referrals(), settings,
                         pl.LazyFrame({"id": ["NP01"], "family_name": ["Ashby"]}))
    assert "local_id" in caught.value.render() and "nhs_number" in caught.value.render()


def test_no_target_index(settings: IdentitySettings) -> None:
    result = resolve_identity(patients({"key": "P1", "nhs": "9434765919", **PERSON}), referrals(), settings)
    assert result.at_target.height == 0 and result.patients.item(0, "at_target_id") is None
