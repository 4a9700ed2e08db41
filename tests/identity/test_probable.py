"""Probable duplicates: literal near-matches found, different people not; blocking stays far below n²."""

from __future__ import annotations

import random
from datetime import date, timedelta
from typing import Any

import polars as pl
import pytest

from migrate import canonical
from migrate.identity import DUPLICATES_SCHEMA, IdentitySettings, dedupe, resolve_identity
from migrate.identity.blocking import candidate_pairs
from migrate.identity.prepare import prepare, soundex

from .conftest import PERSON, patients, referrals

ORIGINAL: dict[str, Any] = {"key": "P1", "nhs": "9434765919", **PERSON}


def pair(settings: IdentitySettings, **changes: Any) -> pl.DataFrame:
    """dedupe() of the original and a copy without NHS number carrying ``changes``."""
    copy = {**ORIGINAL, "key": "P2", "nhs": None, **changes}
    return dedupe(patients(ORIGINAL, copy), settings)[0]


@pytest.mark.parametrize(("case", "changes", "evidence"), [
    ("birth day and month transposed", {"born": "1941-11-02"}, "birth date day/month swapped"),
    ("hyphenated surname", {"family_name": "Ashby-Clarke"}, "surname part of a hyphenated surname"),
    ("nickname", {"given_names": "Ally", "family_name": "Ashby"}, None),
    ("surname typo", {"family_name": "Asbhy"}, "surname"),
    ("three-letter surname transposed", {"family_name": "Aysh"}, "surname"),
    ("one digit of the birth date", {"born": "1941-02-17"}, "birth date one digit differs"),
    ("moved house", {"postcode": "LS1 4AP", "address": "9 New Road, Leeds", "phone": None}, "postcode differs"),
    ("names reversed", {"family_name": "Alice", "given_names": "Ashby"}, "given and family names reversed"),
])
def test_literal_near_matches_are_probable(settings: IdentitySettings, case: str, changes: dict[str, Any],
                                           evidence: str | None) -> None:
    found = pair(settings, **changes)
    assert found.select("patient_key_a", "patient_key_b", "match_type").rows() == [("P1", "P2", "probable")], case
    assert found.item(0, "score") >= settings.probable_threshold
    if evidence:
        result = resolve_identity(patients(ORIGINAL, {**ORIGINAL, "key": "P2", "nhs": None, **changes}),
                                  referrals(), settings)
        assert evidence in result.exceptions.filter(pl.col("flag_code") == "PROBABLE_DUPLICATE").item(0, "evidence")


def test_nickname_from_the_list(settings: IdentitySettings) -> None:
    william = {**ORIGINAL, "given_names": "William", "sex": "male"}
    found = dedupe(patients(william, {**william, "key": "P2", "nhs": None, "given_names": "Bill"}), settings)[0]
    assert found.get_column("match_type").to_list() == ["probable"]
    result = resolve_identity(patients(william, {**william, "key": "P2", "nhs": None, "given_names": "Bill"}),
                              referrals(), settings)
    assert "given name nickname" in result.exceptions.filter(pl.col("flag_code") == "PROBABLE_DUPLICATE").item(
        0, "evidence")


def test_different_people_sharing_birth_date_and_postcode_are_not_flagged(settings: IdentitySettings) -> None:
    rows = [ORIGINAL,
            {"key": "P2", "family_name": "Bennett", "given_names": "Grace", "born": PERSON["born"], "sex": "female",
             "postcode": PERSON["postcode"], "address": "14 Mill Lane, Oxford", "phone": "01632 960555"},
            {"key": "P3", "family_name": "Khan", "given_names": "Amir", "born": PERSON["born"], "sex": "male",
             "postcode": PERSON["postcode"], "address": "3 High Street, Oxford"}]
    result = resolve_identity(patients(*rows), referrals(), settings)
    assert "PROBABLE_DUPLICATE" not in result.exceptions.get_column("flag_code").to_list()
    assert result.duplicates.filter(pl.col("match_type").is_in(["probable", "possible"])).height == 0


def test_twins_with_their_own_numbers_are_not_flagged(settings: IdentitySettings) -> None:
    twin = {**ORIGINAL, "key": "P2", "nhs": "9912003888", "given_names": "Alison"}
    result = resolve_identity(patients(ORIGINAL, twin), referrals(), settings)
    assert "PROBABLE_DUPLICATE" not in result.exceptions.get_column("flag_code").to_list()


def test_evidence_never_shows_identifying_values(settings: IdentitySettings) -> None:
    copy = {**ORIGINAL, "key": "P2", "nhs": None, "family_name": "Asbhy", "born": "1941-11-02"}
    result = resolve_identity(patients(ORIGINAL, copy), referrals(), settings)
    text = " ".join(result.exceptions.get_column("evidence").to_list()).lower()
    assert "score" in text
    for value in ("ashby", "asbhy", "alice", "1941", "02-11", "11/02", "9434765919", "ox2", "07700", "high street"):
        assert value not in text, value


def test_blocking_keeps_candidate_pairs_far_below_n_squared(settings: IdentitySettings) -> None:
    # 3,000 random people: 30 surnames x 20 given names, 5 years of birth dates, 200 postcodes.
    n = 3_000
    rng = random.Random(1)
    surnames = ["Ashby", "Bennett", "Carter", "Dawson", "Ellis", "Fletcher", "Graham", "Hughes", "Iqbal", "Jones",
                "Khan", "Lloyd", "Morgan", "Nash", "Owen", "Patel", "Quinn", "Reid", "Shaw", "Turner", "Usher",
                "Vaughan", "Walsh", "Young", "Zeal", "Abbott", "Brown", "Clarke", "Davies", "Evans"]
    given = ["Alice", "Ben", "Cara", "David", "Emma", "Frank", "Grace", "Harry", "Isla", "Jack", "Kate", "Liam",
             "Mia", "Noah", "Olive", "Paul", "Rose", "Sam", "Tara", "Umar"]
    rows = pl.DataFrame({
        "patient_key": [f"P{k:05d}" for k in range(n)],
        "family_name": [rng.choice(surnames) for _ in range(n)],
        "given_names": [rng.choice(given) for _ in range(n)],
        "birth_date": [date(1950, 1, 1) + timedelta(days=rng.randrange(1826)) for _ in range(n)],
        "postcode": [f"OX{rng.randrange(20)} {rng.randrange(10)}AB" for _ in range(n)],
    })
    pairs, _ = candidate_pairs(prepare(rows, "patient_key", None), None, settings)
    assert 0 < pairs.height < 0.01 * n * (n - 1) / 2
    assert pairs.filter(pl.col("i") >= pl.col("j")).height == 0


@pytest.mark.parametrize(("name", "code"), [("robert", "r163"), ("rupert", "r163"), ("ashcraft", "a261"),
                                             ("tymczak", "t522"), ("pfister", "p236"), ("lee", "l000")])
def test_soundex(name: str, code: str) -> None:
    assert soundex(name) == code


def test_dedupe_schema_and_order(settings: IdentitySettings) -> None:
    found = pair(settings, born="1941-11-02")
    assert found.schema == DUPLICATES_SCHEMA
    empty = dedupe(pl.DataFrame(schema=canonical.PATIENTS.schema).lazy(), settings)[0]
    assert empty.height == 0 and empty.schema == found.schema
