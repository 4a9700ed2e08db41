"""The model learned from the extract: same data same weights, small extracts keep the
starting values, term frequencies, the prior from the data, explanations that add up."""

from __future__ import annotations

import json
import math
import random
from datetime import date, timedelta
from typing import Any

import polars as pl
from hypothesis import HealthCheck, given, settings as hsettings, strategies as st

from migrate import canonical
from migrate.identity import IdentitySettings, dedupe, resolve_identity, write_model

from .conftest import PERSON, patients, referrals

SURNAMES = ["Smith", "Jones", "Taylor", "Brown", "Williams", "Wilson", "Johnson", "Davies", "Robinson", "Wright",
            "Thompson", "Evans", "Walker", "White", "Roberts", "Green", "Hall", "Wood", "Jackson", "Clarke"]
GIVEN = ["Oliver", "Amelia", "George", "Isla", "Harry", "Ava", "Noah", "Mia", "Jack", "Ivy", "Leo", "Lily", "Oscar",
         "Freya", "Charlie", "Grace", "Arthur", "Ella", "Henry", "Sophie"]


def population(n: int, duplicates: int, seed: int) -> pl.DataFrame:
    """``n`` people (names from small pools, so names repeat as in life) and ``duplicates``
    extra records of some of them with one surname letter changed; keys P00000.."""
    rng = random.Random(seed)
    rows: list[dict[str, Any]] = []
    for k in range(n):
        rows.append({"patient_key": f"P{k:05d}", "family_name": rng.choice(SURNAMES), "given_names": rng.choice(GIVEN),
                     "birth_date": date(1930, 1, 1) + timedelta(days=rng.randrange(25_000)),
                     "sex": rng.choice(["male", "female"]), "postcode": f"OX{rng.randrange(30)} {rng.randrange(9)}AB",
                     "address": f"{rng.randrange(1, 200)} {rng.choice(['High', 'Mill', 'Church'])} Street"})
    for d in range(duplicates):
        copy = dict(rows[rng.randrange(n)])
        name = copy["family_name"]
        copy["family_name"] = name[:-1] + ("x" if name[-1] != "x" else "y")
        copy["patient_key"] = f"P{n + d:05d}"
        rows.append(copy)
    frame = pl.DataFrame(rows)
    return frame.with_columns(pl.lit(None, dtype=pl.String).alias("nhs_number"),
                              pl.col("patient_key").alias("source_patient_id"))


def test_same_extract_same_weights_whatever_the_row_order(settings: IdentitySettings) -> None:
    frame = population(600, 30, seed=3)
    first = dedupe(frame.lazy(), settings)
    for seed in (1, 2):
        shuffled = frame.sample(fraction=1.0, shuffle=True, seed=seed)
        again = dedupe(shuffled.lazy(), settings)
        assert again[1].asdict() == first[1].asdict()
        assert again[0].equals(first[0])


@hsettings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.permutations(list(range(40))))
def test_row_order_never_changes_the_model_or_the_pairs(settings: IdentitySettings, order: list[int]) -> None:
    frame = population(36, 4, seed=11)
    base = dedupe(frame.lazy(), settings)
    again = dedupe(frame[order].lazy(), settings)
    assert again[1].asdict() == base[1].asdict() and again[0].equals(base[0])


def test_learned_parameters_are_written_byte_identical(settings: IdentitySettings, tmp_path: Any) -> None:
    frame = population(300, 15, seed=5)
    a = write_model(dedupe(frame.lazy(), settings)[1], tmp_path / "a")
    b = write_model(dedupe(frame.lazy(), settings)[1], tmp_path / "b")
    assert a.read_bytes() == b.read_bytes()
    model = json.loads(a.read_text())
    assert model["records"] == 315 and set(model["comparisons"]) == {c.name for c in settings.comparisons}
    for c in model["comparisons"].values():
        assert abs(sum(lv["m"] for lv in c["levels"]) - 1) < 1e-4 and abs(sum(lv["u"] for lv in c["levels"]) - 1) < 1e-4
    assert [r["rule"] for r in model["blocking"]["rules"]] == ["+".join(r) for r in settings.blocking_rules]


def test_a_tiny_extract_keeps_the_starting_values(settings: IdentitySettings) -> None:
    _, model = dedupe(patients({"key": "P1", **PERSON}, {"key": "P2", **PERSON, "family_name": "Asbhy"}), settings)
    for c in settings.comparisons:
        learned = model.comparison(c.name)
        for lv, m, u in zip(c.levels, learned.m, learned.u):
            assert abs(m - lv.m) < 0.05 and abs(u - lv.u) <= 0.002 + 0.01 * lv.u, (c.name, lv.label)


def test_a_large_extract_learns_its_own_u(settings: IdentitySettings) -> None:
    """Twenty surnames: two random records share one about 1 time in 20, not the 1 in 300
    the pack starts from; the learned u says so, and agreeing on a surname weighs less."""
    frame = population(2_000, 0, seed=7)
    _, model = dedupe(frame.lazy(), settings)
    u_exact = model.comparison("family_name").u[0]
    assert 0.03 < u_exact < 0.08
    start = settings.comparison("family_name")
    assert start is not None and model.comparison("family_name").weights()[0] < math.log2(
        start.levels[0].m / start.levels[0].u) - 2


def test_term_frequencies_weigh_a_rare_surname_more(settings: IdentitySettings) -> None:
    frame = population(1_500, 0, seed=9)
    rare = {"family_name": "Quarrington", "given_names": "Nell", "birth_date": date(1950, 5, 5), "sex": "female",
            "postcode": "ZZ9 9ZZ", "address": "1 Far Lane", "nhs_number": None}
    common = {**rare, "family_name": "Smith", "given_names": "Ivy", "birth_date": date(1951, 6, 6)}
    extra = pl.DataFrame([{**rare, "patient_key": "R1"}, {**rare, "patient_key": "R2"},
                          {**common, "patient_key": "C1"}, {**common, "patient_key": "C2"}], schema=frame.schema)
    pairs, _ = dedupe(pl.concat([frame, extra.with_columns(pl.col("patient_key").alias("source_patient_id"))
                                 .select(frame.columns)]).lazy(), settings)

    def surname_weight(a: str, b: str) -> float:
        row = pairs.filter((pl.col("patient_key_a") == a) & (pl.col("patient_key_b") == b)).row(0, named=True)
        return next(c["weight"] for c in row["contributions"] if c["comparison"] == "family_name")

    assert surname_weight("R1", "R2") > surname_weight("C1", "C2") + 3


def test_prior_follows_the_duplicates_in_the_extract(settings: IdentitySettings) -> None:
    few = dedupe(population(1_500, 15, seed=2).lazy(), settings)[1]
    many = dedupe(population(1_500, 300, seed=2).lazy(), settings)[1]
    assert many.duplicates_per_record > 4 * few.duplicates_per_record
    assert 0.1 < many.duplicates_per_record < 0.3  # 300 planted among 1,800 records: 0.17


def test_contributions_add_up_to_the_match_weight_and_score(settings: IdentitySettings) -> None:
    pairs, model = dedupe(population(800, 40, seed=4).lazy(), settings)
    assert pairs.height > 20
    for row in pairs.iter_rows(named=True):
        parts = {c["comparison"]: c["weight"] for c in row["contributions"]}
        assert set(parts) == {"prior", "nhs_number", *(c.name for c in settings.comparisons)}
        assert abs(sum(parts.values()) - row["match_weight"]) < 1e-3
        assert abs(row["score"] - 1 / (1 + 2 ** -row["match_weight"])) < 1e-4
        assert row["evidence"].startswith(f"score {round(row['score'], 2)}")
        assert parts["prior"] == round(model.prior_weight, 4)


def test_the_reviewer_reads_the_weights_in_the_flag(settings: IdentitySettings) -> None:
    copy = {**PERSON, "key": "P2", "family_name": "Asbhy"}
    result = resolve_identity(patients({"key": "P1", **PERSON}, copy), referrals(), settings)
    flag = result.exceptions.filter(pl.col("flag_code") == "PROBABLE_DUPLICATE").item(0, "evidence")
    pair = result.duplicates.row(0, named=True)
    assert flag == pair["evidence"]
    assert "match weight" in flag and "surname similar (jaro-winkler >= 0.92) +" in flag and "birth date equal +" in flag


NAMES = ["Alice", "Carl", "Grace", "Tom", "Priya", "Owen", "Zara", "Ben"]


@hsettings(max_examples=20, deadline=None)
@given(st.sampled_from(NAMES), st.sampled_from(NAMES), st.sampled_from(["male", "female", None]),
       st.sampled_from(["male", "female", None]))
def test_twins_are_never_paired(settings: IdentitySettings, first: str, second: str, sex_a: str | None,
                                sex_b: str | None) -> None:
    """Same surname, birth date and address; another given name, or another sex: twins,
    never paired (no NHS numbers to tell them apart)."""
    other_name = first != second
    other_sex = sex_a is not None and sex_b is not None and sex_a != sex_b
    a = {"key": "P1", **PERSON, "given_names": first, "sex": sex_a}
    b = {"key": "P2", **PERSON, "given_names": second, "sex": sex_b, "phone": None}
    result = resolve_identity(patients(a, b), referrals(), settings)
    if other_name or other_sex:
        assert result.duplicates.height == 0 and result.exceptions.filter(
            pl.col("flag_code") == "PROBABLE_DUPLICATE").height == 0
        assert result.counts()["twins_not_paired"] == 1
    else:
        assert result.duplicates.get_column("match_type").to_list() == ["probable"]


def test_twins_are_kept_apart_from_a_target_record_too(settings: IdentitySettings) -> None:
    target = pl.DataFrame([{"local_id": "NP1", "nhs_number": None, "family_name": "Ashby", "given_names": "Carl",
                            "birth_date": PERSON["born"], "sex": "male", "postcode": PERSON["postcode"]}],
                          schema={c: pl.String for c in ("local_id", "nhs_number", "family_name", "given_names",
                                                         "birth_date", "sex", "postcode")}).lazy()
    result = resolve_identity(patients({"key": "P1", **PERSON, "address": None}), referrals(), settings, target)
    assert result.at_target.height == 0


def test_em_on_a_sample_of_the_pairs_learns_the_same_model(settings: IdentitySettings) -> None:
    """Above model.em_pairs candidate pairs, EM trains on a key-hash sample: the same pairs
    whatever the row order, and estimates close to those from every pair. (1,200 pairs: ~75
    per blocking rule.)"""
    import dataclasses

    frame = population(3_000, 150, seed=8)
    full_pairs, full = dedupe(frame.lazy(), settings)
    small = dataclasses.replace(settings, model=dataclasses.replace(settings.model, em_pairs=1_200))
    pairs, sampled = dedupe(frame.lazy(), small)
    again = dedupe(frame.sample(fraction=1.0, shuffle=True, seed=3).lazy(), small)
    assert again[1].asdict() == sampled.asdict() and again[0].equals(pairs)
    assert full.report["em_pairs"] == full.report["candidate_pairs"] > 2_000
    assert 0 < sampled.report["em_pairs"] <= 1_200
    assert abs(sampled.duplicates_per_record - full.duplicates_per_record) < 0.25 * full.duplicates_per_record
    for name in ("family_name", "given_names", "birth_date"):
        a, b = full.comparison(name).m, sampled.comparison(name).m
        assert max(abs(x - y) for x, y in zip(a, b)) < 0.1, name
    probable = {r[:2] for r in full_pairs.filter(pl.col("match_type") == "probable").iter_rows()}
    assert len(probable ^ {r[:2] for r in pairs.filter(pl.col("match_type") == "probable").iter_rows()}) <= 3


def test_empty_extract(settings: IdentitySettings) -> None:
    pairs, model = dedupe(pl.DataFrame(schema=canonical.PATIENTS.schema).lazy(), settings)
    assert pairs.height == 0 and model.records == 0
    assert model.duplicates_per_record == settings.model.duplicates_per_record
