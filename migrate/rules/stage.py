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


PARTITION_PATIENTS = 500_000  # survivors whose rules are evaluated at a time (``classify``)
_SEED = 20221001  # the partitions' hash seed: which partition a patient lands in changes nothing


def partition_of(column: str, partitions: int) -> pl.Expr:
    """The partition (0 .. ``partitions`` - 1) of each row by a stable hash of ``column``
    (a survivor's key; a null key in partition 0)."""
    return (pl.col(column).hash(seed=_SEED) % partitions).fill_null(0)


def partition(people: Mapping[str, pl.LazyFrame], part: int, partitions: int) -> dict[str, pl.LazyFrame]:
    """``people`` filtered to the survivors of partition ``part``: their patients, referrals,
    coded and sharing entries by ``patient_key``, and the contacts of those referrals (the
    features read contacts only through their referral)."""
    mine = {name: frame.filter(partition_of("patient_key", partitions) == part)
            for name, frame in people.items() if name != "contacts"}
    if "contacts" in people:
        mine["contacts"] = people["contacts"].join(mine["referrals"].select("referral_key"), on="referral_key",
                                                   how="semi")
    return mine


def partitions_for(people: Mapping[str, pl.LazyFrame]) -> int:
    """Enough partitions for ``PARTITION_PATIENTS`` survivors each."""
    survivors = int(people["patients"].select(pl.len()).collect(engine="streaming").item())
    return max(1, -(-survivors // PARTITION_PATIENTS))


def classify(people: Mapping[str, pl.LazyFrame], pack: RulePack, cutover: date,
             identity_exceptions: pl.DataFrame, partitions: int | None = None) -> Classified:
    """Cohorts, exceptions and sharing state of ``pack`` at ``cutover`` over ``people``
    (survivors and their referrals, contacts and codes; a run adds ``sharing``, every
    source's sharing entries on survivors), with identity's flags added.

    The rules are evaluated a partition of survivors at a time (``partitions``; default
    ``partitions_for``): nothing in a pack looks across patients, so each partition's
    rows are what the whole evaluation gives for them, and the partitions' results sorted
    by their keys are the whole results (exceptions: ``combine_exceptions`` keeps each
    subject's rows in the order given, and a subject is in one partition).
    """
    # memory: held: cohorts (one row per referral), patient cohorts and exceptions are few columns
    # (~0.3 GB at 1M patients) and dispositions, the FHIR output and patients.parquet all
    # read them. The evaluation (a patient's features aggregate all their referrals; the
    # cohort and flag plans read both frames) runs a partition of ``PARTITION_PATIENTS``
    # survivors at a time, so its frames are bounded by the partition, not the extract.
    # The sharing decision, once: the rules' features (sharing_state, latest_sharing_*) and
    # the sharing state dispositions and FHIR read are the same decision.
    found = _entries(people, pack)
    decided = sharing.decide(found).collect()
    n = partitions or partitions_for(people)
    parts: dict[str, list[pl.DataFrame]] = {"cohorts": [], "patient_cohorts": [], "exceptions": []}
    for part in range(n):
        mine = partition(people, part, n) if n > 1 else dict(people)
        mine_decided = decided.lazy().filter(partition_of("patient_key", n) == part) if n > 1 else decided.lazy()
        results = evaluate(mine, pack, cutover, mine_decided).collect()
        for name, frames in parts.items():
            frames.append(results[name])
        del results
    cohorts = pl.concat(parts.pop("cohorts")).sort("referral_key") if n > 1 else parts["cohorts"][0]
    patient_cohorts = (pl.concat(parts.pop("patient_cohorts")).sort("patient_key") if n > 1
                       else parts["patient_cohorts"][0])
    exceptions = combine_exceptions([*(f.lazy() for f in parts.pop("exceptions")), identity_exceptions.lazy()]).collect()
    state = sharing.state(found, decided.lazy()).collect()
    return Classified(cohorts, patient_cohorts, exceptions, state)
