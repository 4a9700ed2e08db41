"""The worked example's decisions file (tests/cases/worked-example/decisions.csv, the CSV
worklist as reviewers filled it in) and its expected effects (expected/decision*.csv)."""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path

import openpyxl
import polars as pl
import pytest

from migrate.pipeline import RunConfig, run_batch

CASE = Path(__file__).parents[1] / "cases" / "worked-example"


@pytest.fixture(scope="module")
def decided(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("worked") / "run"
    result = run_batch(RunConfig.load(CASE / "input", CASE / "mapping.yaml", date(2022, 10, 1), out,
                                      decisions=[CASE / "decisions.csv"]))
    assert result.ok, result.failures()
    return out


def test_every_decision_row_ends_as_expected(decided: Path) -> None:
    got = pl.read_parquet(decided / "decisions.parquet").select(
        "subject_key", "flag_code", "decision", "status", "reason_code").sort("subject_key", "flag_code")
    expected = pl.read_csv(CASE / "expected" / "decisions.csv", schema=dict(got.schema)).sort(
        "subject_key", "flag_code")
    assert got.equals(expected)


def test_the_expected_effects_hold(decided: Path) -> None:
    effects = pl.read_csv(CASE / "expected" / "decision_effects.csv", schema_overrides={"subject": pl.String,
                                                                                       "value": pl.String})
    cohorts = dict(pl.read_parquet(decided / "cohorts.parquet").select(
        "referral_key", pl.col("cohort").cast(pl.String)).iter_rows())
    requests = {r["identifier"][0]["value"]: r["priority"] for r in (json.loads(line) for line in (
        decided / "fhir" / "ndjson" / "ServiceRequest.ndjson").read_text().splitlines())}
    contacts = pl.read_parquet(decided / "canonical" / "contacts.parquet").select("contact_key", "source_file",
                                                                                 "source_row")
    lineage = pl.read_parquet(decided / "lineage.parquet").join(contacts, on=["source_file", "source_row"])
    disposition = dict(lineage.select("contact_key", pl.col("disposition").cast(pl.String)).unique().iter_rows())
    survivors = dict(pl.read_parquet(decided / "patients.parquet").select("patient_key", "survivor_key").iter_rows())
    consents = [json.loads(line) for line in (decided / "fhir" / "review" / "Consent.ndjson").read_text().splitlines()]
    outreach = openpyxl.load_workbook(decided / "reports" / "outreach.xlsx").worksheets[0]
    found = {
        "cohort": cohorts.get, "priority": requests.get, "contact": disposition.get, "survivor": survivors.get,
        "review_consent": lambda _: consents[0]["provision"]["type"] if len(consents) == 1 else None,
        "outreach": lambda _: None if outreach.max_row == 1 else "rows",
    }
    for kind, subject, value, why in effects.iter_rows():
        assert found[kind](subject) == value, (kind, subject, why)
