"""Cohorts: per referral (from the pack's ``cohort`` rule) and per patient (the most active).

Inputs: the referral features frame (``migrate.rules.features.referral_features``), the patient
features frame and the compiled pack. Outputs (LazyFrames, sorted by key):

- ``cohorts_table``: referral_key, patient_key, cohort, cohort_reason, transfer_list,
  list_mismatch — the ``cohorts.parquet`` contract of docs/architecture.md;
- ``patient_cohorts_table``: patient_key, patient_cohort — every patient, null when the
  patient has no referral.

The definitions of domain.md section 2 live in the pack (``rules/default.yaml``, rule
``cohort``), so a clinical lead can read them; this module only applies derived rules in
pack order and rolls referrals up to patients with one ``group_by``.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

import polars as pl

from migrate import canonical
from migrate.rules.features import Feature

if TYPE_CHECKING:
    from migrate.rules.model import Rule, RulePack

COHORT = pl.Enum(canonical.COHORTS)
TRANSFER_LIST = pl.Enum(canonical.TRANSFER_LIST)

# Per-patient columns rolled up from the patient's referrals (besides any_<column>).
PATIENT_ROLLUPS: dict[str, Feature] = {
    "patient_cohort": Feature(COHORT, "the most active cohort of the patient's referrals "
                                      "(order: the pack's cohort_precedence)"),
    "referral_count": Feature(pl.Int64(), "number of the patient's referrals in the extract"),
    "transfer_lists": Feature(pl.List(pl.String()), "the distinct transfer lists the outgoing provider "
                                                    "put the patient's referrals on"),
    "transfer_list_count": Feature(pl.Int64(), "how many distinct transfer lists the patient is on"),
}

# Referral columns the outputs need, so every pack must derive them: name -> (form, why).
REQUIRED_DERIVED: dict[str, tuple[str, str]] = {
    "cohort": ("cases", "the referral cohort of domain.md section 2, with its reason"),
    "list_mismatch": ("boolean", "whether the provider's transfer_list differs from the cohort"),
}

COHORTS_SCHEMA: dict[str, pl.DataType] = {
    "referral_key": pl.String(), "patient_key": pl.String(), "cohort": COHORT, "cohort_reason": pl.String(),
    "transfer_list": TRANSFER_LIST, "list_mismatch": pl.Boolean(),
}
PATIENT_COHORTS_SCHEMA: dict[str, pl.DataType] = {"patient_key": pl.String(), "patient_cohort": COHORT}


def any_column(name: str) -> str:
    """Patient column that is true when any of the patient's referrals has boolean ``name``."""
    return f"any_{name}"


def apply_derived(frame: pl.LazyFrame, rules: Iterable[Rule]) -> pl.LazyFrame:
    """``frame`` with each derived rule's column(s) added, in pack order.

    One ``with_columns`` per rule, because a rule may read the columns of the rules above it.
    """
    for rule in rules:
        frame = frame.with_columns(rule.expr, *([rule.reason_expr] if rule.reason_expr is not None else []))
    return frame


def patient_rollups(referrals: pl.LazyFrame, pack: RulePack) -> pl.LazyFrame:
    """Per patient_key: PATIENT_ROLLUPS columns and ``any_<col>`` for each boolean referral rule.

    ``referrals`` is the referral frame after ``apply_derived`` (it has ``cohort``).
    """
    # Ranking through an Enum in precedence order makes "most active" a plain integer min.
    ranked = pl.Enum(pack.cohort_precedence)
    booleans = [r.derive for r in pack.derived("referral") if r.derive and r.dtype == pl.Boolean and not r.cases]
    on_list = {name: f"_on_{name}" for name in canonical.TRANSFER_LIST}
    return (
        referrals.group_by("patient_key")
        .agg(
            pl.col("cohort").cast(ranked).to_physical().min().alias("_rank"),
            pl.len().cast(pl.Int64).alias("referral_count"),
            *((pl.col("transfer_list") == name).any().alias(flag) for name, flag in on_list.items()),
            *(pl.col(name).any().alias(any_column(name)) for name in booleans),
        )
        .with_columns(
            pl.col("_rank").cast(pl.Int64).replace_strict(list(range(len(pack.cohort_precedence))),
                                                           list(pack.cohort_precedence), default=None,
                                                           return_dtype=COHORT).alias("patient_cohort"),
            # Listed in canonical order; built from booleans, cheaper than a unique per group.
            pl.concat_list(pl.when(pl.col(flag)).then(pl.lit(name)) for name, flag in on_list.items())
            .list.drop_nulls().alias("transfer_lists"),
            pl.sum_horizontal(pl.col(flag).cast(pl.Int64) for flag in on_list.values()).alias("transfer_list_count"),
        )
        .drop("_rank", *on_list.values())
    )


def with_rollups(patients: pl.LazyFrame, rollups: pl.LazyFrame) -> pl.LazyFrame:
    """Patients joined to their roll-ups; a patient without referrals gets zeros and falses."""
    added = rollups.collect_schema()
    fills = [pl.col(n).fill_null(False) for n, t in added.items() if t == pl.Boolean]
    fills += [pl.col("referral_count", "transfer_list_count").fill_null(0),
              pl.col("transfer_lists").fill_null(pl.lit([], dtype=pl.List(pl.String)))]
    return patients.join(rollups, on="patient_key", how="left").with_columns(fills)


def cohorts_table(referrals: pl.LazyFrame) -> pl.LazyFrame:
    """The ``cohorts.parquet`` frame: one row per referral, sorted by referral_key."""
    return (
        referrals.select(
            "referral_key", "patient_key", pl.col("cohort").cast(COHORT), "cohort_reason",
            pl.col("transfer_list").cast(pl.String).cast(TRANSFER_LIST), "list_mismatch",
        )
        .sort("referral_key")
    )


def patient_cohorts_table(patients: pl.LazyFrame) -> pl.LazyFrame:
    """patient_key and patient_cohort for every patient, sorted by patient_key."""
    return patients.select("patient_key", "patient_cohort").sort("patient_key")
