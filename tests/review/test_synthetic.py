"""The review loop on an extract it was not designed with: a synthetic caseload (planted
duplicates, sharing blocks, mislisted referrals), decided wholesale through the CSV worklist."""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path

import polars as pl
import pytest

from migrate.pipeline import RunConfig, run_batch
from migrate.synth import synthesise
from tests.review.conftest import fill_csv

CUTOVER = date(2022, 10, 1)
SAME = {"reviewer": "Dr A Patel", "decision": "same_person", "date": "05/10/2022", "note": "PDS trace: one person",
        "second_reviewer": "Dr B Jones"}
OVERRIDE = {"reviewer": "Dr A Patel", "decision": "override", "date": "05/10/2022",
            "note": "consent recorded at triage call", "second_reviewer": "Dr B Jones"}
MOVE = {"reviewer": "Dr D Okafor", "decision": "move_backlog", "date": "06/10/2022"}


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    base = tmp_path_factory.mktemp("synthetic")
    synthesise(base / "extract", patients=300, seed=5)
    first, second = base / "run1", base / "run2"
    assert run_batch(RunConfig.load(base / "extract", "generic-csv", CUTOVER, first)).ok
    exceptions = pl.read_parquet(first / "exceptions.parquet")
    chosen = {**{(k, "PROBABLE_DUPLICATE"): SAME for k in exceptions.filter(
        pl.col("flag_code") == "PROBABLE_DUPLICATE")["subject_key"]},
        **{(k, "SHARING_BLOCK_ACTIVE_CARE"): OVERRIDE for k in exceptions.filter(
            pl.col("flag_code") == "SHARING_BLOCK_ACTIVE_CARE")["subject_key"]},
        **{(k, "WRONG_TRANSFER_LIST"): MOVE for k in exceptions.filter(
            pl.col("flag_code") == "WRONG_TRANSFER_LIST")["subject_key"]}}
    filled = fill_csv(first / "reports" / "exceptions.csv", base / "decided.csv", chosen)
    result = run_batch(RunConfig.load(base / "extract", "generic-csv", CUTOVER, second, decisions=[filled]))
    assert result.ok, result.failures()  # both invariants and the round trip hold with the decisions applied
    return first, second


def test_every_decision_applies_and_the_batch_changes_accordingly(runs: tuple[Path, Path]) -> None:
    first, second = runs
    decisions = pl.read_parquet(second / "decisions.parquet")
    assert decisions.height > 20 and set(decisions["status"]) == {"applied"}
    pairs = decisions.filter(pl.col("decision") == "same_person")["subject_key"].to_list()
    assert pairs, "the synthetic extract plants a probable duplicate"
    survivors = dict(pl.read_parquet(second / "patients.parquet").select("patient_key", "survivor_key").iter_rows())
    for pair in pairs:
        a, b = pair.split("+")
        assert survivors[a] == survivors[b]

    def count(run: Path, kind: str) -> int:
        return len((run / "fhir" / "ndjson" / f"{kind}.ndjson").read_text().splitlines())

    before = dict(pl.read_parquet(first / "patients.parquet").select(
        "patient_key", pl.col("disposition").cast(pl.String)).iter_rows())
    after = dict(pl.read_parquet(second / "patients.parquet").select(
        "patient_key", pl.col("disposition").cast(pl.String)).iter_rows())
    # One Patient fewer for each pair of records that were both sent; a record with nothing
    # active that joins a patient in care is now sent as that patient's history.
    both_sent = sum(all(before[k] == "migrated" for k in p.split("+")) for p in pairs)
    assert count(second, "Patient") == count(first, "Patient") - both_sent
    assert sorted(after[k] for p in pairs for k in p.split("+")) == sorted(["merged", "migrated"] * len(pairs))
    withheld = pl.read_parquet(second / "lineage.parquet").filter(pl.col("disposition") == "withheld")
    overridden = set(decisions.filter(pl.col("decision") == "override")["patient_key"])
    assert overridden and not overridden & set(withheld["patient_key"])
    assert count(second, "Encounter") > count(first, "Encounter")
    moved = decisions.filter(pl.col("decision") == "move_backlog")["subject_key"].to_list()
    cohorts = dict(pl.read_parquet(second / "cohorts.parquet").select(
        "referral_key", pl.col("cohort").cast(pl.String)).iter_rows())
    assert moved and all(cohorts[k] == "backlog" for k in moved)
    review = json.loads((second / "reports" / "reconciliation.json").read_text())["review"]
    assert review["decided"] == decisions.height and review["outreach"] == 0
    consents = (second / "fhir" / "review" / "Consent.ndjson").read_text().splitlines()
    assert len(consents) == len(overridden)
