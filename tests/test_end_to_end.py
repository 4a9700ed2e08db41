"""Synthesise a small extract, run the batch, and hold it to the generator's ground truth."""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path

import polars as pl
import pytest

from migrate.pipeline import RunConfig, run_batch
from migrate.synth import synthesise


@pytest.fixture(scope="module")
def batch(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("e2e")
    synthesise(root / "extract", patients=2000, seed=7)
    run_batch(RunConfig.load(root / "extract", "generic-csv", date(2022, 10, 1), root / "run",
                             target_index=root / "extract" / "target-index.csv"))
    return root / "extract", root / "run"


def test_invariant_holds_for_every_file(batch: tuple[Path, Path]) -> None:
    _, run = batch
    report = json.loads((run / "reports" / "reconciliation.json").read_text())
    assert report["invariant"]["holds"] is True
    assert {f["file"] for f in report["invariant"]["files"]} == {"patients.csv", "referrals.csv", "contacts.csv",
                                                                  "codes.csv"}
    for f in report["invariant"]["files"]:
        assert f["rows_read"] == f["total"] > 0


def test_every_planted_malformed_row_is_quarantined_with_its_reason_and_nothing_else(batch: tuple[Path, Path]) -> None:
    extract, run = batch
    truth = pl.read_csv(extract / "truth" / "quarantine.csv", infer_schema=False).select(
        "source_file", pl.col("source_row").cast(pl.Int64), "reason_code")
    got = pl.read_parquet(run / "quarantine.parquet").select("source_file", "source_row", "reason_code")
    assert truth.height > 0
    assert set(got.iter_rows()) == set(truth.iter_rows())


def test_quarantine_messages_name_file_row_and_field_but_no_identifiers(batch: tuple[Path, Path]) -> None:
    extract, run = batch
    q = pl.read_parquet(run / "quarantine.parquet")
    assert q.filter(~pl.col("message").str.contains(r"^\S+\.csv row \d+: ")).height == 0
    patients = pl.read_csv(extract / "patients.csv", infer_schema=False, truncate_ragged_lines=True,
                           encoding="utf8-lossy")
    secrets = set()
    for column in ("nhs_number", "family_name", "birth_date", "postcode", "phone"):
        secrets |= {v for v in patients[column].drop_nulls().to_list() if len(v) >= 5}
    text = "\n".join(q["message"].to_list())
    assert not [s for s in secrets if s in text]


def test_canonical_rows_plus_quarantine_equal_rows_read(batch: tuple[Path, Path]) -> None:
    _, run = batch
    manifest = json.loads((run / "manifest.json").read_text())
    q = pl.read_parquet(run / "quarantine.parquet")
    for entry in manifest["inputs"]:
        table = entry["table"]
        kept = pl.read_parquet(run / "canonical" / f"{table}.parquet").height
        assert kept + q.filter(pl.col("source_file") == entry["path"]).height == entry["rows"]


IDENTITY_FLAGS = {"NHS_NUMBER_INVALID", "NHS_NUMBER_MISSING", "DUPLICATE_NHS_NUMBER", "NHS_NUMBER_CONFLICT",
                  "PROBABLE_DUPLICATE", "ALREADY_AT_TARGET"}


def test_every_referral_lands_in_its_planted_cohort(batch: tuple[Path, Path]) -> None:
    extract, run = batch
    truth = pl.read_csv(extract / "truth" / "cohorts.csv", infer_schema=False)
    got = pl.read_parquet(run / "cohorts.parquet").select(
        pl.col("referral_key").alias("referral_id"), pl.col("cohort").cast(pl.String))
    assert set(got.iter_rows()) == set(truth.iter_rows())


def test_every_planted_flag_is_raised_and_no_other(batch: tuple[Path, Path]) -> None:
    extract, run = batch
    truth = pl.read_csv(extract / "truth" / "flags.csv", infer_schema=False)
    got = pl.read_parquet(run / "exceptions.parquet").select("subject_type", "subject_key", "flag_code")
    assert truth.filter(pl.col("flag_code").is_in(IDENTITY_FLAGS)).height > 10
    assert set(got.iter_rows()) == set(truth.iter_rows())


def test_planted_duplicates_found_and_only_exact_ones_merged(batch: tuple[Path, Path]) -> None:
    extract, run = batch
    truth = pl.read_csv(extract / "truth" / "duplicates.csv", infer_schema=False)
    found = pl.read_parquet(run / "duplicates.parquet")
    pairs = set(found.select("patient_key_a", "patient_key_b", "match_type").iter_rows())
    for a, b, kind in truth.iter_rows():
        assert (min(a, b), max(a, b), kind) in pairs
    merged = pl.read_parquet(run / "patients.parquet").filter(pl.col("disposition") == "merged")
    exact = truth.filter(pl.col("match_type") == "exact_nhs_number")
    assert merged.height == exact.height
