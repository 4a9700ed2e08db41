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
from dataclasses import dataclass, field
from datetime import date

import polars as pl

from migrate import canonical
from migrate.rules import cohorts, features, flags
from migrate.rules.model import Level, RulePack

REQUIRED_TABLES = ("patients", "referrals")
OPTIONAL_TABLES = ("contacts", "codes")


@dataclass(frozen=True, eq=False)
class RuleResults:
    """What the rules stage produces; every frame is lazy and sorted by its keys.

    - ``cohorts``: referral_key, patient_key, cohort, cohort_reason, transfer_list, list_mismatch
    - ``patient_cohorts``: patient_key, patient_cohort
    - ``exceptions``: flag_code, severity, subject_type, subject_key, patient_key, rule_id,
      evidence, action
    - ``referral_features`` / ``patient_features``: every canonical column plus every feature
      and derived column the rules read, one row per referral / patient. They hold the
      canonical identifying columns too: do not write them where evidence goes.

    ``collect()`` is the fast way to compute the outputs (see there).
    """

    cohorts: pl.LazyFrame
    patient_cohorts: pl.LazyFrame
    exceptions: pl.LazyFrame
    referral_features: pl.LazyFrame
    patient_features: pl.LazyFrame
    pack: RulePack = field(repr=False)
    patient_base: pl.LazyFrame = field(repr=False)  # patient features before referral roll-ups

    def collect(self, features: bool = False) -> dict[str, pl.DataFrame]:
        """The outputs as DataFrames: cohorts, patient_cohorts, exceptions (+ the two
        feature frames when ``features``).

        Computes in stages so nothing is computed twice however the optimiser plans it:
        the referral frame (only the columns later steps read, unless ``features``), then
        the patient frame from it, then the outputs from both.
        """
        pack = self.pack
        referrals = self.referral_features
        if not features:
            referrals = referrals.select(_needed(pack, "referral", _REFERRAL_OUTPUT))
        # memory: held: one row per referral and per surviving patient with the features the
        # pack reads (1.5M and 1M rows at 1M patients; the rules stage peaks at ~1.2 GB,
        # benchmarks/README.md): a patient's features aggregate all their referrals, and the
        # cohort and flag plans read both frames.
        # Sorted once here; every later sort by the same key is then free.
        ref = referrals.sort("referral_key").collect()
        patients = _patients(self.patient_base, ref.lazy(), pack)
        if not features:
            patients = patients.select(_needed(pack, "patient", ("patient_key", "patient_cohort")))
        # memory: held with ``ref`` (above): one row per surviving patient of the partition
        pat = patients.sort("patient_key").collect()
        frames: dict[Level, pl.LazyFrame] = {"referral": ref.lazy(), "patient": pat.lazy()}
        names = ["cohorts", "patient_cohorts", "exceptions"]
        plans = [cohorts.cohorts_table(ref.lazy()), cohorts.patient_cohorts_table(pat.lazy()),
                 flags.evaluate_flags(frames, pack)]
        out = dict(zip(names, pl.collect_all(plans), strict=True))
        if features:
            out["referral_features"], out["patient_features"] = ref, pat
        return out


_REFERRAL_OUTPUT = tuple(cohorts.COHORTS_SCHEMA)


def evaluate(tables: Mapping[str, pl.LazyFrame], pack: RulePack, cutover: date,
             sharing_decided: pl.LazyFrame | None = None) -> RuleResults:
    """Cohorts, patient cohorts and exceptions of ``pack`` over canonical ``tables`` at ``cutover``.

    ``tables`` maps canonical table names to LazyFrames with the canonical columns;
    ``patients`` and ``referrals`` are required, ``contacts`` and ``codes`` default to empty.
    Raises ``KeyError`` naming a missing required table. Nothing is computed here.
    ``sharing_decided``: ``migrate.sharing.decide`` of the patients' sharing entries, when
    the caller has it (else the patient features decide it).
    """
    missing = [t for t in REQUIRED_TABLES if t not in tables]
    if missing:
        raise KeyError(f"evaluate needs the canonical tables {', '.join(missing)}")
    frames = {**{t: canonical.empty(t).lazy() for t in OPTIONAL_TABLES}, **dict(tables)}

    referrals = cohorts.apply_derived(features.referral_features(frames, pack, cutover), pack.derived("referral"))
    patient_base = features.patient_features(frames, pack, cutover, sharing_decided)
    patients = _patients(patient_base, referrals, pack)
    return RuleResults(
        cohorts=cohorts.cohorts_table(referrals),
        patient_cohorts=cohorts.patient_cohorts_table(patients),
        exceptions=flags.evaluate_flags({"referral": referrals, "patient": patients}, pack),
        referral_features=referrals.sort("referral_key"),
        patient_features=patients.sort("patient_key"),
        pack=pack,
        patient_base=patient_base,
    )


def _patients(base: pl.LazyFrame, referrals: pl.LazyFrame, pack: RulePack) -> pl.LazyFrame:
    """Patient features with the roll-ups of their referrals and the patient derived rules."""
    return cohorts.apply_derived(cohorts.with_rollups(base, cohorts.patient_rollups(referrals, pack)),
                                 pack.derived("patient"))


def _needed(pack: RulePack, level: Level, always: tuple[str, ...]) -> list[str]:
    """Columns of ``level`` read after it is computed: outputs, roll-ups, flag conditions, evidence."""
    wanted = set(always)
    if level == "referral":
        wanted |= {r.derive for r in pack.derived("referral") if r.derive and r.dtype == pl.Boolean}
    for rule in pack.flag_rules(level):
        wanted |= set(rule.columns) | set(rule.evidence)
    return [c for c in pack.columns[level] if c in wanted]
