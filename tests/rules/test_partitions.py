"""The rules evaluated a partition of survivors at a time (``rules.stage.classify``) give
what one evaluation of every survivor gives: the same cohorts, patient cohorts,
exceptions and sharing state, row for row and in order, whatever the partition count and
whatever the patient keys (made up by hypothesis: shared prefixes, unicode, keys with no
patient row, patients with no referral)."""

from __future__ import annotations

from datetime import date, timedelta
from pathlib import Path
from types import ModuleType
from typing import Any

import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import migrate.rules.stage as rules_stage
from migrate.rules.flags import EXCEPTIONS_SCHEMA
from migrate.rules.stage import Classified, classify

T = date(2022, 10, 1)
_keys = st.text(alphabet="Pp0aé-", min_size=1, max_size=4)
_referral = st.tuples(
    st.integers(0, 7),  # which patient key (past the drawn keys: a referral of nobody)
    st.sampled_from(["open", "closed", "rejected"]),
    st.integers(-400, 60),  # received, days from T
    st.sampled_from([None, "pifu", "waiting_list"]),
    st.lists(st.sampled_from(["cauda_equina", "weight_loss", "made-up flag"]), max_size=2),
)
_contact = st.tuples(st.integers(0, 11), st.integers(-90, 40), st.sampled_from(["attended", "booked", "dna"]))
_code = st.tuples(st.integers(0, 7), st.sampled_from([("snomed", "416409005"), ("snomed", "425691002"),
                                                      ("read2", "93C1"), ("snomed", "881561000000100"),
                                                      ("snomed", "1234")]), st.integers(-300, 0))  # dissent, consent, opt-out, other


def _tables(rc: ModuleType, keys: list[str], referrals: list[tuple[Any, ...]], contacts: list[tuple[Any, ...]],
            codes: list[tuple[Any, ...]], lonely: int) -> dict[str, pl.LazyFrame]:
    def key(i: int) -> str:
        return keys[i] if i < len(keys) else f"nobody-{i}"

    refs = [rc.referral(f"R{n}", key(p), status=s, received_date=T + timedelta(days=d), transfer_list=lst,
                        red_flags=flags, closed_date=T - timedelta(days=5) if s == "closed" else None)
            for n, (p, s, d, lst, flags) in enumerate(referrals)]
    visits = [rc.contact(f"R{r % max(1, len(refs))}", (datetime_at(d)), a,
                         patient=refs[r % len(refs)]["patient_key"] if refs else "nobody")
              for r, d, a in contacts]
    coded = [rc.code(key(p), system, value, T + timedelta(days=d)) for p, (system, value), d in codes]
    patients = [{"patient_key": k, "source_patient_id": k, "birth_date": date(1950 + i % 60, 1 + i % 12, 1),
                 "sex": "female"} for i, k in enumerate(keys[:len(keys) - lonely] if lonely else keys)]
    return rc.tables(refs, visits, coded, patients)


def datetime_at(days: int) -> str:
    return (T + timedelta(days=days)).isoformat() + " 10:00"


def _same(a: Classified, b: Classified) -> None:
    for name in ("cohorts", "patient_cohorts", "exceptions", "sharing"):
        x, y = getattr(a, name).collect(), getattr(b, name).collect()
        if name == "sharing":  # the state has no row order (its readers join it): compared sorted
            x, y = x.sort("patient_key"), y.sort("patient_key")
        assert x.schema == y.schema, name
        assert x.equals(y), name


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(keys=st.lists(_keys, min_size=1, max_size=8, unique=True), referrals=st.lists(_referral, max_size=12),
       contacts=st.lists(_contact, max_size=12), codes=st.lists(_code, max_size=6), lonely=st.integers(0, 2),
       partitions=st.integers(2, 9), range_rows=st.integers(1, 6))
def test_rules_a_partition_at_a_time_are_the_whole_evaluation(rc: ModuleType, tmp_path_factory: pytest.TempPathFactory,
                                                               keys: list[str],
                                                               referrals: list[tuple[Any, ...]],
                                                               contacts: list[tuple[Any, ...]],
                                                               codes: list[tuple[Any, ...]], lonely: int,
                                                               partitions: int, range_rows: int) -> None:
    """... and the partitions' results merged a few keys at a time (``RANGE_ROWS``) are the
    results merged at once."""
    people = _tables(rc, keys, referrals, contacts, codes, min(lonely, len(keys) - 1))
    none = pl.DataFrame(schema=EXCEPTIONS_SCHEMA)
    work = tmp_path_factory.mktemp("rules")
    whole = classify(people, rc.default_pack(), T, none, work / "one", partitions=1)
    default = rules_stage.RANGE_ROWS
    rules_stage.RANGE_ROWS = range_rows
    try:
        _same(classify(people, rc.default_pack(), T, none, work / "many", partitions=partitions), whole)
    finally:
        rules_stage.RANGE_ROWS = default


def test_a_run_in_many_rule_partitions_writes_the_same_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A synthetic batch with survivors split into partitions of 97: cohorts, exceptions,
    patients, sharing and lineage byte for byte the files of one partition."""
    from migrate.pipeline import RunConfig, run_batch
    from migrate.synth import synthesise

    synthesise(tmp_path / "in", patients=800, seed=5)

    def run(out: Path) -> dict[str, bytes]:
        result = run_batch(RunConfig.load(tmp_path / "in", "generic-csv", T, out, emit_fhir=False))
        assert result.ok
        return {f: (out / f).read_bytes() for f in ("cohorts.parquet", "exceptions.parquet", "patients.parquet",
                                                     "sharing.parquet", "lineage.parquet")}

    whole = run(tmp_path / "one")
    calls: list[int] = []
    real = rules_stage.stage_partitions

    def counted(people: Any, n: int, folder: Path) -> Any:
        calls.append(n)
        return real(people, n, folder)

    monkeypatch.setattr(rules_stage, "PARTITION_PATIENTS", 97)
    monkeypatch.setattr(rules_stage, "stage_partitions", counted)
    assert run(tmp_path / "many") == whole
    assert calls and calls[0] > 3  # the rules did run in several partitions


def test_each_contact_is_staged_with_its_referral(tmp_path: Path) -> None:
    """``stage_partitions`` puts a contact in its referral's partition (found by the referral
    keys held sorted); a referral key that two patients in two partitions share takes its
    contacts to both, and a contact of no referral goes nowhere."""
    keys = [f"P{i}" for i in range(40)]
    part_of = dict(pl.DataFrame({"patient_key": keys}).select(
        "patient_key", rules_stage.partition_of("patient_key", 4).alias("p")).iter_rows())
    a, b = next((x, y) for x in keys for y in keys if part_of[x] != part_of[y])
    referrals = pl.LazyFrame({"referral_key": [f"R{i}" for i in range(40)] + ["SHARED", "SHARED"],
                              "patient_key": keys + [a, b]})
    contacts = pl.LazyFrame({"contact_key": [f"C{i}" for i in range(42)],
                             "referral_key": [f"R{i}" for i in range(40)] + ["SHARED", "NOBODY"]})
    people = {"patients": pl.LazyFrame({"patient_key": keys}), "referrals": referrals, "contacts": contacts}
    parts = rules_stage.stage_partitions(people, 4, tmp_path)
    for i, part in enumerate(parts):
        mine = set(part["referrals"].collect()["referral_key"])
        got = part["contacts"].collect()
        assert set(got["referral_key"]) == mine - {"SHARED"} | ({"SHARED"} if part_of[a] == i or part_of[b] == i else set())
    staged = pl.concat([p["contacts"].collect() for p in parts])
    assert staged.filter(pl.col("referral_key") == "SHARED").height == 2  # in both partitions
    assert "NOBODY" not in staged["referral_key"].to_list()
    assert staged.filter(pl.col("referral_key").str.starts_with("R")).height == 40  # each once


def test_contacts_are_staged_by_the_keys_text_if_two_referral_hashes_were_equal(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Were two distinct referral keys' 64-bit hashes equal, each contact still goes to its own
    referral's partition (the keys' text decides), as without hashes."""
    from migrate.staging import HashedKeys

    keys = [f"P{i}" for i in range(30)]
    people = {"patients": pl.LazyFrame({"patient_key": keys}),
              "referrals": pl.LazyFrame({"referral_key": [f"R{i}" for i in range(30)], "patient_key": keys}),
              "contacts": pl.LazyFrame({"contact_key": [f"C{i}" for i in range(31)],
                                        "referral_key": [f"R{i}" for i in range(30)] + ["NOBODY"]})}

    def contacts(folder: Path) -> list[list[str]]:
        return [sorted(p["contacts"].collect()["contact_key"]) for p in rules_stage.stage_partitions(people, 3, folder)]

    hashed = contacts(tmp_path / "hashed")
    monkeypatch.setattr(HashedKeys, "sorted", lambda self: False)
    assert contacts(tmp_path / "text") == hashed
    assert sorted(sum(hashed, [])) == sorted(f"C{i}" for i in range(30))


_flag = st.tuples(st.sampled_from(["URGENT", "BLOCK", "NO_CONTACT"]), st.sampled_from(["high", "medium", "low"]),
                  st.sampled_from([None, "patient", "referral"]), st.one_of(st.none(), _keys),
                  st.sampled_from(["r1", "r2"]), st.text(alphabet="ab ", max_size=3))


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(parts=st.lists(st.lists(_flag, max_size=15), min_size=1, max_size=4), range_rows=st.integers(1, 6))
def test_flags_combined_a_range_of_subjects_at_a_time_are_combined_at_once(
        tmp_path_factory: pytest.TempPathFactory, parts: list[list[tuple[Any, ...]]], range_rows: int) -> None:
    """The partitions' flags and identity's, deduplicated (the most severe, then the first
    given) and ordered by subject a range of subject keys at a time, of each subject type in
    turn: the rows and order of ``combine_exceptions`` over all of them."""
    frames = [pl.LazyFrame([(c, s, t, k, k, r, e, "act") for c, s, t, k, r, e in rows],
                           schema=EXCEPTIONS_SCHEMA, orient="row") for rows in parts]
    whole = rules_stage.combine_exceptions(frames).collect()
    default = rules_stage.RANGE_ROWS
    rules_stage.RANGE_ROWS = range_rows
    try:
        ranged = rules_stage._exceptions(frames, tmp_path_factory.mktemp("flags")).collect()
    finally:
        rules_stage.RANGE_ROWS = default
    assert ranged.schema == whole.schema
    assert ranged.to_dicts() == whole.to_dicts()
