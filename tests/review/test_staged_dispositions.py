"""The dispositions with the review's decisions, staged on disk (issue #18): decided once
without an applied decision; with some, ``changed`` is exactly the rows a decision
changed, the annotation names it on those rows alone, and the FHIR Provenance targets
those rows' resources."""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path

import polars as pl
from hypothesis import given, settings
from hypothesis import strategies as st

from migrate.dispositions import DISPOSITIONS_SCHEMA
from migrate.review import effects
from migrate.review.stage import Review
from migrate.review.validate import DECISIONS_SCHEMA
from migrate.staging import sink
from tests.review.test_synthetic import runs  # noqa: F401  (the module-scoped fixture: two synthetic batches)

ROWS = ("source_file", "source_row")


def _decision(i: int, effect: str, subject: str, patient: str) -> dict[str, object]:
    return {"decision_id": f"d{i:03d}", "status": "applied", "effect": effect, "decision": effect,
            "subject_key": subject, "patient_key": patient, "subject_type": "patient", "reviewer": "Dr A",
            "second_reviewer": None, "decided_on": date(2022, 10, 5), "flag_code": "F", "effect_to": None}


def _decisions(rows: list[dict[str, object]]) -> pl.DataFrame:
    frame = pl.DataFrame(rows, schema={k: v for k, v in DECISIONS_SCHEMA.items() if k in (rows[0] if rows else {})})
    return pl.concat([pl.DataFrame(schema=DECISIONS_SCHEMA), frame], how="diagonal_relaxed")


def _dispositions(patients: list[tuple[str, list[str]]]) -> pl.DataFrame:
    """One contacts row per disposition given, patient by patient, numbered in order."""
    rows = [(f"contacts-{i % 2}.csv", i, "contacts", key, d, "why" if d != "migrated" else None)
            for i, (key, d) in enumerate(((k, d) for k, ds in patients for d in ds), start=1)]
    return pl.DataFrame(rows, schema=DISPOSITIONS_SCHEMA, orient="row")


NO_REFERRALS = pl.LazyFrame(schema={"referral_key": pl.String, "source_file": pl.String, "source_row": pl.Int64})
NO_MOVES = pl.DataFrame(schema={"referral_key": pl.String, "decision_id": pl.String})
NO_COHORTS = pl.DataFrame(schema={"referral_key": pl.String, "patient_key": pl.String, "cohort": pl.String})


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.lists(st.sampled_from(["withheld", "migrated", "out_of_scope"]), max_size=5),
                          st.booleans()), min_size=1, max_size=8))
def test_changed_is_exactly_the_rows_whose_disposition_an_override_changed(
        tmp_path_factory: object, patients: list[tuple[list[str], bool]]) -> None:
    work: Path = tmp_path_factory.mktemp("staged")  # type: ignore[attr-defined]
    keys = [(f"P{i}", ds) for i, (ds, _) in enumerate(patients)]
    overridden = [f"P{i}" for i, (_, chosen) in enumerate(patients) if chosen]
    before = _dispositions(keys)
    # The override releases its patient's withheld rows (another patient's never change).
    after = before.with_columns(pl.when(pl.col("patient_key").is_in(overridden) & (pl.col("disposition") == "withheld"))
                                .then(pl.lit("migrated")).otherwise(pl.col("disposition")).alias("disposition"))
    decisions = _decisions([_decision(i, "override_sharing", k, k) for i, k in enumerate(overridden)]) \
        if overridden else pl.DataFrame(schema=DECISIONS_SCHEMA)
    scans = [pl.scan_parquet(sink(f.lazy(), work / f"{n}.parquet")) for n, f in (("before", before), ("after", after))]
    changed = effects.changed_rows(decisions, scans[0], scans[1], NO_REFERRALS, NO_MOVES)
    differs = before.join(after, on=list(ROWS), suffix="_after").filter(
        pl.col("disposition") != pl.col("disposition_after"))
    expected = differs.join(decisions.select("decision_id", "patient_key"), on="patient_key").select(
        "decision_id", *ROWS).sort("decision_id", *ROWS)
    assert changed.to_dicts() == expected.to_dicts()
    annotated = effects.annotate(scans[1], decisions, changed).collect()
    # The same rows in the same order; the reason names a decision on exactly the changed rows.
    assert annotated.drop("reason").equals(after.drop("reason"))
    named = annotated.with_columns(pl.col("reason").fill_null("").str.contains("decision ").alias("named"))
    assert set(named.filter("named").select(ROWS).iter_rows()) == set(changed.select(ROWS).iter_rows())
    for row in named.join(changed, on=list(ROWS)).iter_rows(named=True):
        assert f"({row['decision_id']})" in row["reason"]


def _review(decisions: pl.DataFrame) -> Review:
    return Review(decisions, pl.DataFrame(), decisions.height > 0)


def test_without_an_applied_decision_the_dispositions_are_decided_once_and_staged(tmp_path: Path) -> None:
    rows = _dispositions([("P1", ["withheld", "migrated"]), ("P2", ["out_of_scope"])])
    calls: list[pl.LazyFrame] = []

    def decide(state: pl.LazyFrame) -> pl.LazyFrame:
        calls.append(state)
        return rows.lazy()

    rejected = _decisions([_decision(1, "override_sharing", "P1", "P1")]).with_columns(pl.lit("rejected").alias(
        "status"))
    sharing = pl.LazyFrame({"patient_key": ["P1"], "blocked": [True]})
    for decisions in (pl.DataFrame(schema=DECISIONS_SCHEMA), rejected):
        calls.clear()
        decided, review = _review(decisions).dispositions(decide, sharing, NO_COHORTS, NO_REFERRALS, tmp_path)
        assert len(calls) == 1  # one evaluation: no "before" to compare with
        assert sorted(p.name for p in tmp_path.iterdir()) == ["dispositions.parquet"]
        assert decided.collect().equals(rows) and review.changed.height == 0


def test_an_override_stages_both_sides_and_annotates_only_what_it_released(tmp_path: Path) -> None:
    rows = _dispositions([("P1", ["withheld", "migrated", "withheld"]), ("P2", ["withheld"])])

    def decide(state: pl.LazyFrame) -> pl.LazyFrame:  # withheld while the patient's block stands
        free = state.filter(~pl.col("blocked")).select("patient_key").collect()["patient_key"].implode()
        return rows.lazy().with_columns(pl.when(pl.col("patient_key").is_in(free)).then(pl.lit("migrated"))
                                        .otherwise(pl.col("disposition")).alias("disposition"))

    decisions = _decisions([_decision(7, "override_sharing", "P1", "P1")])
    sharing = pl.LazyFrame({"patient_key": ["P1", "P2"], "blocked": [True, True]})
    decided, review = _review(decisions).dispositions(decide, sharing, NO_COHORTS, NO_REFERRALS, tmp_path)
    got = decided.collect()
    assert review.changed.select(ROWS).rows() == [("contacts-1.csv", 1), ("contacts-1.csv", 3)]
    assert got["disposition"].to_list() == ["migrated", "migrated", "migrated", "withheld"]
    assert [r is not None and "(d007)" in r for r in got["reason"]] == [True, False, True, False]
    assert (tmp_path / "dispositions.parquet").is_file() and (tmp_path / "dispositions-before.parquet").is_file()


def test_provenance_targets_the_resources_of_the_rows_whose_reason_names_the_decision(
        runs: tuple[Path, Path]) -> None:  # noqa: F811
    first, second = runs
    lineage = pl.read_parquet(second / "lineage.parquet")
    decisions = pl.read_parquet(second / "decisions.parquet").filter(pl.col("decision") == "override")
    provenance = {p["id"]: p for p in map(json.loads, (second / "fhir" / "review" / "Provenance.ndjson").read_text()
                                          .splitlines())}
    targets = {t["reference"] for p in provenance.values() for t in p["target"]}
    named = set()
    for d in decisions["decision_id"].to_list():
        rows = lineage.filter(pl.col("reason").str.contains(f"({d})", literal=True) & pl.col("fhir_id").is_not_null())
        assert rows.height, f"override {d} changed no row"
        named |= {f"{t}/{i}" for t, i in rows.select("fhir_type", "fhir_id").iter_rows()}
    assert named and named <= targets
    # Every clinical row of theirs that changed was withheld in the batch without the decisions,
    # and its reason names the override (patients of a same_person pair left out: a merge changes more).
    paired = pl.read_parquet(second / "decisions.parquet").filter(pl.col("decision") == "same_person")[
        "subject_key"].str.split("+").explode().to_list()
    was = pl.read_parquet(first / "lineage.parquet").select(*ROWS, pl.col("disposition").alias("was")).unique()
    overridden = [k for k in decisions["patient_key"].to_list() if k not in paired]
    theirs = lineage.filter(pl.col("patient_key").is_in(overridden) & pl.col("table").cast(pl.String).is_in(
        ["contacts", "codes"])).select(*ROWS, "disposition", "reason").unique()
    moved = theirs.join(was, on=list(ROWS)).filter(pl.col("was").cast(pl.String) != pl.col("disposition").cast(
        pl.String))
    assert moved.height and set(moved["was"].cast(pl.String)) == {"withheld"}
    assert moved["reason"].str.contains("decision override").all()
