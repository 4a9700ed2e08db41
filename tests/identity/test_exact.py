"""Exact duplicates: one valid NHS number on several source ids; survivorship; conflicts not merged."""

from __future__ import annotations

import dataclasses

import polars as pl

from migrate.identity import IdentitySettings, resolve_identity

from .conftest import PERSON, patients, referrals

NUMBER = "9434765919"


def flags(result: object) -> set[tuple[str, str]]:
    return set(result.exceptions.select("subject_key", "flag_code").iter_rows())  # type: ignore[attr-defined]


def test_same_number_same_person_merges_into_the_earliest_record(settings: IdentitySettings) -> None:
    result = resolve_identity(
        patients({"key": "P2", "nhs": NUMBER, **PERSON}, {"key": "P1", "nhs": NUMBER, **PERSON},
                 {"key": "P3", "nhs": "9912003888", **PERSON, "given_names": "Bella"}),
        referrals(("P1", "2022-01-01"), ("P2", "2022-05-01")), settings)
    # P2 is the first row of the extract: the earliest record keeps its key.
    assert result.merges.rows() == [("P1", "P2")]
    assert result.duplicates.filter(pl.col("match_type") == "exact_nhs_number").select(
        "patient_key_a", "patient_key_b", "score").rows() == [("P1", "P2", 1.0)]
    row = result.exceptions.filter(pl.col("flag_code") == "DUPLICATE_NHS_NUMBER").row(0, named=True)
    assert (row["subject_key"], row["patient_key"], row["severity"]) == ("P1+P2", "P2", "high")
    assert "survivor P2 (earliest record)" in row["evidence"] and "birth date agrees" in row["evidence"]
    assert dict(result.patients.select("patient_key", "survivor_key").iter_rows()) == {"P1": "P2", "P2": "P2",
                                                                                       "P3": "P3"}


def test_a_verified_number_beats_an_earlier_record(settings: IdentitySettings) -> None:
    result = resolve_identity(
        patients({"key": "P1", "nhs": NUMBER, **PERSON, "nhs_number_status": "02"},
                 {"key": "P2", "nhs": NUMBER, **PERSON, "nhs_number_status": "NSTS01"}),
        referrals(), settings)
    assert result.merges.rows() == [("P1", "P2")]
    assert "survivor P2 (verified NHS number)" in result.exceptions.item(0, "evidence")


def test_survivorship_order_comes_from_settings(settings: IdentitySettings) -> None:
    latest = dataclasses.replace(settings, survivor_order=("latest_referral",))
    rows = patients({"key": "P1", "nhs": NUMBER, **PERSON}, {"key": "P2", "nhs": NUMBER, **PERSON})
    refs = referrals(("P1", "2022-06-01"), ("P2", "2021-01-01"))
    assert resolve_identity(rows, refs, latest).merges.rows() == [("P2", "P1")]
    assert resolve_identity(rows, refs, settings).merges.rows() == [("P2", "P1")]
    assert resolve_identity(rows, refs, dataclasses.replace(settings, survivor_order=("latest_record",))
                            ).merges.rows() == [("P1", "P2")]


def test_survivor_carries_the_most_recent_non_blank_demographics(settings: IdentitySettings) -> None:
    result = resolve_identity(
        patients({"key": "P1", "nhs": NUMBER, **PERSON, "phone": None, "postcode": "OX2 1AB"},
                 {"key": "P2", "nhs": NUMBER, **PERSON, "phone": "07700 900999", "postcode": "OX9 9ZZ",
                  "address": None}),
        referrals(("P1", "2020-01-01"), ("P2", "2022-09-01")), settings)
    survivor = result.patients.filter(pl.col("patient_key") == "P1").row(0, named=True)
    merged = result.patients.filter(pl.col("patient_key") == "P2").row(0, named=True)
    # P2's referral is the most recent: its phone and postcode win; its blank address does not.
    assert (survivor["phone"], survivor["postcode"], survivor["address"]) == ("07700 900999", "OX9 9ZZ",
                                                                              PERSON["address"])
    assert merged["address"] is None  # a merged row keeps its own values (lineage)
    assert survivor["nhs_number"] == NUMBER


def test_conflicting_birth_date_or_sex_is_not_merged(settings: IdentitySettings) -> None:
    result = resolve_identity(
        patients({"key": "P1", "nhs": NUMBER, **PERSON},
                 {"key": "P2", "nhs": NUMBER, **PERSON, "born": "1951-02-11"},
                 {"key": "P3", "nhs": "9912003888", **PERSON, "given_names": "Carl", "sex": "female"},
                 {"key": "P4", "nhs": "9912003888", **PERSON, "given_names": "Carl", "sex": "male"}),
        referrals(), settings)
    assert result.merges.height == 0
    # P1 and P3 share surname, birth date and address but not the given name: twins, never paired.
    assert flags(result) == {("P1+P2", "NHS_NUMBER_CONFLICT"), ("P3+P4", "NHS_NUMBER_CONFLICT")}
    assert set(result.duplicates.select("patient_key_a", "patient_key_b", "match_type").iter_rows()) == {
        ("P1", "P2", "conflict"), ("P3", "P4", "conflict")}
    assert result.counts()["twins_not_paired"] >= 1
    conflict = result.exceptions.filter(pl.col("subject_key") == "P1+P2").row(0, named=True)
    assert conflict["severity"] == "high" and "not merged" in conflict["action"]
    assert "birth date differs" in conflict["evidence"] and "sex agrees" in conflict["evidence"]
    assert result.patients.filter(pl.col("survivor_key") != pl.col("patient_key")).height == 0


def test_unknown_sex_or_blank_birth_date_does_not_conflict(settings: IdentitySettings) -> None:
    result = resolve_identity(
        patients({"key": "P1", "nhs": NUMBER, **PERSON}, {"key": "P2", "nhs": NUMBER, **PERSON, "sex": "unknown"},
                 {"key": "P3", "nhs": NUMBER, **PERSON, "born": None}),
        referrals(), settings)
    assert sorted(result.merges.rows()) == [("P2", "P1"), ("P3", "P1")]
    assert flags(result) == {("P1+P2", "DUPLICATE_NHS_NUMBER"), ("P1+P3", "DUPLICATE_NHS_NUMBER")}


def test_two_agree_one_conflicts(settings: IdentitySettings) -> None:
    result = resolve_identity(
        patients({"key": "P1", "nhs": NUMBER, **PERSON}, {"key": "P2", "nhs": NUMBER, **PERSON},
                 {"key": "P3", "nhs": NUMBER, **PERSON, "born": "1961-02-11"}),
        referrals(), settings)
    assert result.merges.rows() == [("P2", "P1")]
    assert flags(result) == {("P1+P2", "DUPLICATE_NHS_NUMBER"), ("P1+P3", "NHS_NUMBER_CONFLICT")}


def test_invalid_numbers_are_never_merged(settings: IdentitySettings) -> None:
    result = resolve_identity(
        patients({"key": "P1", "nhs": "9434765918", **PERSON}, {"key": "P2", "nhs": "9434765918", **PERSON}),
        referrals(), settings)
    assert result.merges.height == 0
    assert ("P1", "NHS_NUMBER_INVALID") in flags(result) and ("P2", "NHS_NUMBER_INVALID") in flags(result)
    # identical demographics without a valid number: a probable duplicate, for review
    assert ("P1+P2", "PROBABLE_DUPLICATE") in flags(result)
