"""The rules stage of a batch: cohorts and flags over one patient per person.

    classify(people, pack, cutover, identity_exceptions) -> Classified

The rule pack's cohorts and flags are evaluated over the survivors and their re-pointed
rows (``identity.merges.people``); identity's own flags (NHS number, duplicates, at
target) join the exceptions, one row per subject and flag code.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date

import polars as pl

from migrate.rules.features import patient_features
from migrate.rules.flags import combine_exceptions
from migrate.rules.engine import evaluate
from migrate.rules.model import RulePack


@dataclass(frozen=True)
class Classified:
    """The rules stage's outputs, collected: ``cohorts`` (per referral), ``patient_cohorts``
    (per survivor), ``exceptions`` (rules' and identity's flags) and ``sharing`` (per
    survivor: blocked, latest_code, latest_date), which dispositions and FHIR both read."""

    cohorts: pl.DataFrame
    patient_cohorts: pl.DataFrame
    exceptions: pl.DataFrame
    sharing: pl.DataFrame


def sharing_state(people: Mapping[str, pl.LazyFrame], pack: RulePack, cutover: date) -> pl.LazyFrame:
    """Each patient's sharing state from the pack's codelists, by the rules engine's own
    feature code: patient_key, blocked (latest entry a dissent), latest_code, latest_date."""
    return sharing_from_features(patient_features(people, pack, cutover))


def sharing_from_features(features: pl.LazyFrame) -> pl.LazyFrame:
    """The sharing columns of the rules engine's ``patient_features``."""
    return features.select(
        "patient_key", pl.col("sharing_blocked").alias("blocked"), pl.col("latest_sharing_code").alias("latest_code"),
        pl.col("latest_sharing_date").alias("latest_date"))


def classify(people: Mapping[str, pl.LazyFrame], pack: RulePack, cutover: date,
             identity_exceptions: pl.DataFrame) -> Classified:
    """Cohorts, exceptions and sharing state of ``pack`` at ``cutover`` over ``people``
    (survivors and their referrals, contacts and codes), with identity's flags added."""
    results = evaluate(people, pack, cutover).collect()
    exceptions = combine_exceptions([results["exceptions"].lazy(), identity_exceptions.lazy()]).collect()
    sharing = sharing_state(people, pack, cutover).collect()
    return Classified(results["cohorts"], results["patient_cohorts"], exceptions, sharing)
