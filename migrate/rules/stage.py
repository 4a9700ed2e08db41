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

from migrate.flags import combine_exceptions
from migrate.rules.engine import evaluate
from migrate.rules.model import RulePack


@dataclass(frozen=True)
class Classified:
    """The rules stage's outputs, collected: ``cohorts`` (per referral), ``patient_cohorts``
    (per survivor) and ``exceptions`` (rules' and identity's flags)."""

    cohorts: pl.DataFrame
    patient_cohorts: pl.DataFrame
    exceptions: pl.DataFrame


def classify(people: Mapping[str, pl.LazyFrame], pack: RulePack, cutover: date,
             identity_exceptions: pl.DataFrame) -> Classified:
    """Cohorts and exceptions of ``pack`` at ``cutover`` over ``people`` (survivors and
    their referrals, contacts and codes), with identity's flags added."""
    results = evaluate(people, pack, cutover).collect()
    exceptions = combine_exceptions([results["exceptions"].lazy(), identity_exceptions.lazy()]).collect()
    return Classified(results["cohorts"], results["patient_cohorts"], exceptions)
