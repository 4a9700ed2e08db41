"""Blocking: the union of the rules' pairs, each pair with the rules that made it, the cap
that stops a pathological block, and what each rule produced."""

from __future__ import annotations

import dataclasses
import random
from datetime import date
from itertools import combinations

import polars as pl
import pytest
from hypothesis import given, settings as hsettings, strategies as st
from polars.testing import assert_frame_equal

import migrate.identity.blocking as blocking_module
from migrate.identity import IdentitySettings, dedupe, resolve_identity
from migrate.identity.blocking import PART_COLUMNS, RuleCounts, SpilledPairs, block_layout, candidate_pairs
from migrate.identity.model import em_draw, em_sample, rule_shares
from migrate.identity.prepare import prepare

from .conftest import PERSON, patients, referrals


def brute_force(records: pl.DataFrame, rules: tuple[tuple[str, ...], ...], cap: int) -> dict[tuple[int, int], int]:
    """Pair -> rule mask, by comparing every pair (the definition blocking must meet)."""
    rows = records.to_dicts()
    sizes: list[dict[tuple[object, ...], int]] = []
    for rule in rules:
        count: dict[tuple[object, ...], int] = {}
        for side in (0, 1):
            for r in rows:
                key = tuple(r[c] for part in rule for c in PART_COLUMNS[part][side])
                if None not in key:
                    count[(side, *key)] = count.get((side, *key), 0) + 1
        sizes.append(count)
    out: dict[tuple[int, int], int] = {}
    for a, b in combinations(rows, 2):
        for n, rule in enumerate(rules):
            for x, y in ((a, b), (b, a)):
                left = tuple(x[c] for part in rule for c in PART_COLUMNS[part][0])
                right = tuple(y[c] for part in rule for c in PART_COLUMNS[part][1])
                if None in left or left != right or sizes[n][(0, *left)] > cap or sizes[n][(1, *right)] > cap:
                    continue
                pair = (min(a["idx"], b["idx"]), max(a["idx"], b["idx"]))
                out[pair] = out.get(pair, 0) | (1 << n)
    return out


people = st.fixed_dictionaries({
    "family_name": st.sampled_from(["Ashby", "Ashbey", "Bennett", "Khan", "Alice", None]),
    "given_names": st.sampled_from(["Alice", "Alicia", "Ben", "Ashby", "Amir", None]),
    "birth_date": st.sampled_from([date(1941, 2, 11), date(1941, 11, 2), date(1950, 3, 4), None]),
    "postcode": st.sampled_from(["OX2 1AB", "OX2 1AD", "LS1 4AP", None]),
    "address": st.sampled_from(["1 High Street", "1 High St", "9 New Road", None]),
})


@hsettings(max_examples=40, deadline=None)
@given(st.lists(people, min_size=2, max_size=14), st.integers(min_value=2, max_value=6))
def test_candidates_are_exactly_the_pairs_some_rule_joins(settings: IdentitySettings, rows: list[dict[str, object]],
                                                          cap: int) -> None:
    frame = pl.DataFrame([{"patient_key": f"P{k}", **r} for k, r in enumerate(rows)])
    records = prepare(frame, "patient_key", None)
    capped = dataclasses.replace(settings, max_block_size=cap)
    pairs, reports = candidate_pairs(records, None, capped)
    got = {(i, j): m for i, j, m in pairs.iter_rows()}
    assert got == brute_force(records, capped.blocking_rules, cap)
    for n, report in enumerate(reports):
        assert report.pairs == sum(1 for m in got.values() if m & (1 << n))
        assert report.only_this_rule == sum(1 for m in got.values() if m == 1 << n)


def test_a_pathological_block_is_skipped_and_reported(settings: IdentitySettings) -> None:
    # 150 records with a placeholder postcode and the same birth date: over the cap (100)
    # for the rules on birth date or postcode; a real duplicate among them is still found
    # through the names.
    cap = settings.max_block_size
    rng = random.Random(5)

    def word() -> str:
        return "".join(rng.choice("bcdfghjklmnprstvwz") + rng.choice("aeiou") for _ in range(3)).title()

    filler = [{"key": f"F{k:03d}", "family_name": word(), "given_names": word(), "born": "1900-01-01",
               "postcode": "ZZ99 3ZZ", "sex": rng.choice(["male", "female"])} for k in range(cap + 50)]
    pair = [{"key": "A1", **PERSON, "born": "1900-01-01", "postcode": "ZZ99 3ZZ", "address": None, "phone": None},
            {"key": "A2", **PERSON, "born": "1900-01-01", "postcode": "ZZ99 3ZZ", "address": None, "phone": None,
             "family_name": "Asbhy"}]
    frame = patients(*filler, *pair)
    pairs, model = dedupe(frame, settings)
    rules = {r["rule"]: r for r in model.report["blocking"]["rules"]}
    assert rules["birth_date+postcode_district"]["skipped_blocks"] == 1
    assert rules["birth_date+postcode_district"]["skipped_records"] == cap + 52
    assert rules["birth_date+postcode_district"]["pairs"] == 0
    assert model.report["candidate_pairs"] < 2_000  # not the 11,476 of one block of 152
    # Still compared and listed; the model learned that here a birth date or postcode says
    # almost nothing (every record shares them), so the pair is one to review, not certain.
    listed = pairs.filter(pl.col("patient_key_a") == "A1").select("patient_key_b", "match_type").rows()
    assert listed in ([("A2", "possible")], [("A2", "probable")])
    contributions = {c["comparison"]: c["weight"] for c in pairs.row(0, named=True)["contributions"]}
    assert abs(contributions["birth_date"]) < 1 and abs(contributions["postcode"]) < 1


def _only_rule(settings: IdentitySettings, a: dict[str, object], b: dict[str, object]) -> list[str]:
    """The blocking rules that pair ``a`` and ``b`` (canonical patient rows)."""
    records = prepare(patients(a, b).collect(), "patient_key", None)
    pairs, _ = candidate_pairs(records, None, settings)
    mask = pairs.get_column("rules").to_list()
    return ["+".join(r) for n, r in enumerate(settings.blocking_rules) if mask and mask[0] & (1 << n)]


def test_a_new_surname_and_no_postcode_is_still_compared_by_birth_date_and_house_number(
        settings: IdentitySettings) -> None:
    """Married (new surname), nickname, postcode not recorded, the street misspelt: only the
    birth date and the house number are left to block on — and the pair is found."""
    copy = {**PERSON, "key": "P2", "family_name": "Bennett", "given_names": "Ally", "postcode": None, "phone": None,
            "address": "1 Hihg Street, Oxford"}
    assert _only_rule(settings, {"key": "P1", **PERSON}, copy) == ["birth_date+address_number"]
    found = dedupe(patients({"key": "P1", **PERSON}, copy), settings)[0]
    assert found.select("patient_key_a", "patient_key_b").rows() == [("P1", "P2")]


def test_names_the_wrong_way_round_with_a_typo_are_compared(settings: IdentitySettings) -> None:
    """Given and family names swapped, one misspelt, and moved house: the crossed Soundex
    with the birth date pairs them, and names_reversed scores them probable."""
    copy = {**PERSON, "key": "P2", "family_name": "Alice", "given_names": "Ashbey", "postcode": "LS1 4AP",
            "address": "9 New Road, Leeds", "phone": None}
    assert _only_rule(settings, {"key": "P1", **PERSON}, copy) == ["birth_date+crossed_phonetic"]
    found = dedupe(patients({"key": "P1", **PERSON}, copy), settings)[0]
    assert found.select("patient_key_a", "patient_key_b", "match_type").rows() == [("P1", "P2", "probable")]


def _records(rows: list[dict[str, object]], prefix: str = "P") -> pl.DataFrame:
    return prepare(patients(*[{"key": f"{prefix}{k}", **r} for k, r in enumerate(rows)]).collect(), "patient_key",
                   None)


@hsettings(max_examples=40, deadline=None)
@given(st.lists(people, min_size=0, max_size=14), st.integers(min_value=2, max_value=6),
       st.integers(min_value=0, max_value=60))
def test_pairs_drawn_a_span_at_a_time_are_the_whole_frames_pairs(settings: IdentitySettings,
                                                                  rows: list[dict[str, object]], cap: int,
                                                                  chunk: int) -> None:
    """Any chunk size — 0, 1, more than all the pairs — gives the same pairs, masks, order
    and rule reports as blocking the whole frame at once (and as comparing every pair)."""
    records = _records(rows)
    capped = dataclasses.replace(settings, max_block_size=cap)
    whole, whole_reports = candidate_pairs(records, None, capped, chunk=10**9)
    layout = block_layout(records, None, capped)
    spans = layout.spans(chunk)
    assert [lo for lo, _ in spans] == [0, *[hi for _, hi in spans[:-1]]] and spans[-1][1] == records.height
    parts = [layout.pairs(lo, hi) for lo, hi in spans]
    counts = RuleCounts.of(len(layout.names))
    for part in parts:
        counts.add(part)
    assert_frame_equal(pl.concat(parts), whole)
    assert layout.reports(counts) == whole_reports
    assert {(i, j): m for i, j, m in whole.iter_rows()} == brute_force(records, capped.blocking_rules, cap)
    with SpilledPairs(layout, chunk) as spilled:  # generated once, read back span by span, twice
        assert len(spilled.paths) == len(spans) and spilled.counts == counts
        for _ in range(2):
            assert_frame_equal(pl.concat(list(spilled)), whole)


@hsettings(max_examples=30, deadline=None)
@given(st.lists(people, min_size=0, max_size=10), st.lists(people, min_size=0, max_size=10),
       st.integers(min_value=0, max_value=40))
def test_linking_two_frames_a_span_at_a_time_gives_every_pair_a_rule_joins(settings: IdentitySettings,
                                                                            ours: list[dict[str, object]],
                                                                            theirs: list[dict[str, object]],
                                                                            chunk: int) -> None:
    """Between two frames (the target index): the pair (x, y) is there when x's left key
    equals y's right key under some rule, whichever frame is cut into spans."""
    left, right = _records(ours), _records(theirs, "T")
    pairs, _ = candidate_pairs(left, right, settings, chunk=chunk)
    expected: dict[tuple[int, int], int] = {}
    sizes = [{side: {} for side in (0, 1)} for _ in settings.blocking_rules]  # type: ignore[var-annotated]
    for n, rule in enumerate(settings.blocking_rules):
        for side, frame in ((0, left), (1, right)):
            for way in (0, 1):
                for r in frame.to_dicts():
                    key = tuple(r[c] for part in rule for c in PART_COLUMNS[part][way])
                    sizes[n][side][(way, key)] = sizes[n][side].get((way, key), 0) + 1
    for x in left.to_dicts():
        for y in right.to_dicts():
            for n, rule in enumerate(settings.blocking_rules):
                for way in (0, 1):
                    kx = tuple(x[c] for part in rule for c in PART_COLUMNS[part][way])
                    ky = tuple(y[c] for part in rule for c in PART_COLUMNS[part][1 - way])
                    if None in kx or kx != ky:
                        continue
                    if sizes[n][0][(way, kx)] > settings.max_block_size or \
                            sizes[n][1][(1 - way, ky)] > settings.max_block_size:
                        continue
                    expected[(x["idx"], y["idx"])] = expected.get((x["idx"], y["idx"]), 0) | (1 << n)
    assert {(i, j): m for i, j, m in pairs.iter_rows()} == expected
    assert pairs.select("i", "j").rows() == sorted(expected)


@hsettings(max_examples=25, deadline=None)
@given(st.lists(people, min_size=2, max_size=14), st.integers(min_value=1, max_value=40),
       st.integers(min_value=1, max_value=30))
def test_em_pairs_drawn_span_by_span_are_the_whole_frames_draw(settings: IdentitySettings,
                                                               rows: list[dict[str, object]], chunk: int,
                                                               em_pairs: int) -> None:
    """EM's sample drawn a span at a time (each rule's share from the counted pairs, then
    each span's draw) is the sample drawn from all the pairs at once, row for row."""
    records = _records(rows)
    tight = dataclasses.replace(settings, model=dataclasses.replace(settings.model, em_pairs=em_pairs))
    whole, q_whole = em_sample(candidate_pairs(records, None, tight)[0], records, tight)
    layout = block_layout(records, None, tight)
    spans = layout.spans(chunk)
    counts = RuleCounts.of(len(layout.names))
    for lo, hi in spans:
        counts.add(layout.pairs(lo, hi))
    shares = rule_shares(counts.pairs, tight)
    drawn = pl.concat([em_draw(layout.pairs(lo, hi), records, shares, tight) for lo, hi in spans])
    assert shares == q_whole
    assert_frame_equal(drawn, whole)


def test_identity_decides_the_same_whatever_the_span_size(settings: IdentitySettings,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """resolve_identity with one record's pairs per span gives the same duplicates,
    flags, merges and model as with every pair in one span."""
    rng = random.Random(11)
    rows = []
    for k in range(60):
        person = {"key": f"K{k:02d}", **PERSON, "family_name": rng.choice(["Ashby", "Ashbey", "Khan", "Bennett"]),
                  "given_names": rng.choice(["Alice", "Alicia", "Amir", "Ben"]),
                  "born": rng.choice(["1941-02-11", "1941-11-02", "1950-03-04"]),
                  "postcode": rng.choice(["OX2 1AB", "OX2 1AD", None]),
                  "nhs": rng.choice([None, "9434765919", "9434765870"])}
        rows.append(person)
    frame = patients(*rows)
    whole = resolve_identity(frame, referrals(), settings)
    monkeypatch.setattr(blocking_module, "CHUNK_PAIRS", 1)
    spans = block_layout(prepare(frame.collect(), "patient_key", None), None, settings).spans()
    assert len(spans) > 10
    cut = resolve_identity(frame, referrals(), settings)
    for name in ("patients", "merges", "duplicates", "exceptions", "at_target"):
        assert_frame_equal(getattr(cut, name), getattr(whole, name))
    assert cut.model.asdict() == whole.model.asdict()
    assert whole.duplicates.height > 0 and whole.model.report["candidate_pairs"] > 100
