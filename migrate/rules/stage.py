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

from migrate import sharing
from migrate.rules.flags import combine_exceptions
from migrate.rules.engine import evaluate
from migrate.rules.model import RulePack


@dataclass(frozen=True)
class Classified:
    """The rules stage's outputs, collected: ``cohorts`` (per referral), ``patient_cohorts``
    (per survivor), ``exceptions`` (rules' and identity's flags) and ``sharing`` (per
    survivor: ``migrate.sharing.state``), which dispositions and FHIR both read."""

    cohorts: pl.DataFrame
    patient_cohorts: pl.DataFrame
    exceptions: pl.DataFrame
    sharing: pl.DataFrame


def sharing_state(people: Mapping[str, pl.LazyFrame], pack: RulePack, cutover: date) -> pl.LazyFrame:
    """Each patient's sharing state by the one sharing rule (``migrate.sharing.state``):
    over ``people["sharing"]`` when given (a run gives every source's entries, on
    survivors), else over the coded entries and patient settings of ``people``. The
    latest entry wins whatever the cut-over (``cutover`` is kept for the callers' sake)."""
    del cutover
    return sharing.state(_entries(people, pack))


def _entries(people: Mapping[str, pl.LazyFrame], pack: RulePack) -> pl.LazyFrame:
    return people["sharing"] if "sharing" in people else sharing.entries(people, pack)


def sharing_from_features(features: pl.LazyFrame) -> pl.LazyFrame:
    """The sharing columns of the rules engine's ``patient_features`` (the deciding entry,
    without the rows of setting entries: see ``migrate.sharing.state``)."""
    return features.select(
        "patient_key", pl.col("sharing_blocked").alias("blocked"), pl.col("latest_sharing_code").alias("latest_code"),
        pl.col("latest_sharing_date").alias("latest_date"), pl.col("latest_sharing_source").alias("latest_source"))


def classify(people: Mapping[str, pl.LazyFrame], pack: RulePack, cutover: date,
             identity_exceptions: pl.DataFrame) -> Classified:
    """Cohorts, exceptions and sharing state of ``pack`` at ``cutover`` over ``people``
    (survivors and their referrals, contacts and codes; a run adds ``sharing``, every
    source's sharing entries on survivors), with identity's flags added."""
    # memory: held: cohorts (one row per referral), patient cohorts and exceptions are few columns
    # (~0.3 GB at 1M patients) and dispositions, the FHIR output and patients.parquet all
    # read them; the evaluation itself peaks at ~1.2 GB at 1M (benchmarks/README.md).
    # The sharing decision, once: the rules' features (sharing_state, latest_sharing_*) and
    # the sharing state dispositions and FHIR read are the same decision.
    found = _entries(people, pack)
    decided = sharing.decide(found).collect().lazy()
    results = evaluate(people, pack, cutover, decided).collect()
    exceptions = combine_exceptions([results["exceptions"].lazy(), identity_exceptions.lazy()]).collect()
    state = sharing.state(found, decided).collect()
    return Classified(results["cohorts"], results["patient_cohorts"], exceptions, state)
