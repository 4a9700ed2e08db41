"""The rules stage: canonical tables in, cohorts and exceptions out (all LazyFrames).

``evaluate(tables, pack, cutover)`` chains the pieces:

    referrals ─► features ─► derived rules (incl. cohort) ──────────────► cohorts
       │ contacts (one group_by)                   │ roll-up per patient
    patients ─► features ◄─ codes (sharing) ◄──────┘─► derived rules ──► patient_cohorts
                                    every flag rule over both frames ──► exceptions

Nothing is computed until collected. The outputs share their sub-plans, so collect them
together (``RuleResults.collect`` or ``pl.collect_all``) to compute the features once.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date

import polars as pl

from migrate import canonical, cohorts, features, flags
from migrate.rules.model import RulePack

REQUIRED_TABLES = ("patients", "referrals")
OPTIONAL_TABLES = ("contacts", "codes")


@dataclass(frozen=True)
class RuleResults:
    """What the rules stage produces; every frame is lazy and sorted by its keys.

    - ``cohorts``: referral_key, patient_key, cohort, cohort_reason, transfer_list, list_mismatch
    - ``patient_cohorts``: patient_key, patient_cohort
    - ``exceptions``: flag_code, severity, subject_type, subject_key, patient_key, rule_id,
      evidence, action
    - ``referral_features`` / ``patient_features``: every canonical column plus every feature
      and derived column the rules read, one row per referral / patient. They hold the
      canonical identifying columns too: do not write them where evidence goes.
    """

    cohorts: pl.LazyFrame
    patient_cohorts: pl.LazyFrame
    exceptions: pl.LazyFrame
    referral_features: pl.LazyFrame
    patient_features: pl.LazyFrame

    def collect(self) -> dict[str, pl.DataFrame]:
        """All five frames, computed in one pass (shared sub-plans computed once)."""
        names = ("cohorts", "patient_cohorts", "exceptions", "referral_features", "patient_features")
        frames = pl.collect_all([getattr(self, n) for n in names])
        return dict(zip(names, frames, strict=True))


def evaluate(tables: Mapping[str, pl.LazyFrame], pack: RulePack, cutover: date) -> RuleResults:
    """Cohorts, patient cohorts and exceptions of ``pack`` over canonical ``tables`` at ``cutover``.

    ``tables`` maps canonical table names to LazyFrames with the canonical columns;
    ``patients`` and ``referrals`` are required, ``contacts`` and ``codes`` default to empty.
    Raises ``KeyError`` naming a missing required table.
    """
    missing = [t for t in REQUIRED_TABLES if t not in tables]
    if missing:
        raise KeyError(f"evaluate needs the canonical tables {', '.join(missing)}")
    frames = {**{t: canonical.empty(t).lazy() for t in OPTIONAL_TABLES}, **dict(tables)}

    referrals = cohorts.apply_derived(features.referral_features(frames, pack, cutover), pack.derived("referral"))
    patients = cohorts.with_rollups(features.patient_features(frames, pack, cutover),
                                    cohorts.patient_rollups(referrals, pack))
    patients = cohorts.apply_derived(patients, pack.derived("patient"))
    exceptions = flags.evaluate_flags({"referral": referrals, "patient": patients}, pack)
    return RuleResults(
        cohorts=cohorts.cohorts_table(referrals),
        patient_cohorts=cohorts.patient_cohorts_table(patients),
        exceptions=exceptions,
        referral_features=referrals.sort("referral_key"),
        patient_features=patients.sort("patient_key"),
    )
