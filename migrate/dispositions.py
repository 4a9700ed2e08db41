"""Dispositions: what became of each canonical row, decided from cohorts and flags.

Every source row ends with exactly one disposition. Ingest decides ``quarantined``; this
stage decides the rest for the rows that were mapped, in this order of precedence:

1. ``merged`` — a patient row that is a duplicate merged into a survivor (identity; its
   referrals, contacts and codes are re-pointed to the survivor and migrate with it);
2. ``already_at_target`` — a patient row the new provider already holds (identity; the
   FHIR output updates that record, and the patient's referrals still migrate);
3. ``out_of_scope`` — a referral whose cohort is closed, rejected or pifu_expired, the
   contacts of such a referral, and a patient (with their coded entries) whose patient
   cohort is one of those: nothing active to hand over;
4. ``withheld`` — under the ``withhold-clinical`` sharing policy, the contacts and coded
   history of a patient with an active sharing block (the sharing codes themselves stay:
   they become the Consent that explains the block);
5. ``migrated`` — everything else.

Pure: frames in, one frame out (source_file, source_row, table, patient_key, disposition).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Literal

import polars as pl

from migrate.rules.model import RulePack

INACTIVE_COHORTS = ("closed", "rejected", "pifu_expired")
SharingPolicy = Literal["withhold-clinical", "include"]
SHARING_POLICIES: tuple[SharingPolicy, ...] = ("withhold-clinical", "include")


def _pick(choices: list[tuple[pl.Expr, str]]) -> pl.Expr:
    """The first disposition whose condition holds, else migrated."""
    expr: pl.Expr = pl.lit("migrated")
    for cond, name in reversed(choices):
        expr = pl.when(cond).then(pl.lit(name)).otherwise(expr)
    return expr


def decide(
    tables: Mapping[str, pl.LazyFrame],
    cohorts: pl.LazyFrame,
    patient_cohorts: pl.LazyFrame,
    blocked_patients: pl.LazyFrame,
    sharing_codes: Iterable[str],
    policy: str = "withhold-clinical",
    merged_patients: pl.LazyFrame | None = None,
    at_target_patients: pl.LazyFrame | None = None,
) -> pl.LazyFrame:
    """One row per canonical row with its disposition (see the module docstring).

    ``blocked_patients``, ``merged_patients`` and ``at_target_patients`` each have a
    ``patient_key`` column; ``sharing_codes`` are the dissent and consent codes as
    ``system:code`` labels in matching form (``migrate.matching.code_label``).
    """
    withhold = policy == "withhold-clinical"
    empty = pl.LazyFrame(schema={"patient_key": pl.String})
    patient_sets = {
        "merged": merged_patients if merged_patients is not None else empty,
        "at_target": at_target_patients if at_target_patients is not None else empty,
        "blocked": blocked_patients,
        "inactive": patient_cohorts.filter(pl.col("patient_cohort").cast(pl.String).is_in(INACTIVE_COHORTS)),
    }

    def mark(frame: pl.LazyFrame) -> pl.LazyFrame:
        for name, keys in patient_sets.items():
            frame = frame.join(keys.select("patient_key").unique().with_columns(pl.lit(True).alias(f"_{name}")),
                               on="patient_key", how="left", maintain_order="left")
        return frame.with_columns(pl.col(f"_{n}").fill_null(False) for n in patient_sets)

    inactive_refs = cohorts.filter(pl.col("cohort").cast(pl.String).is_in(INACTIVE_COHORTS)).select(
        "referral_key", pl.lit(True).alias("_ref_inactive"))
    parts = [mark(tables["patients"]).select(
        "source_file", "source_row", pl.lit("patients").alias("table"), "patient_key",
        _pick([(pl.col("_merged"), "merged"), (pl.col("_at_target"), "already_at_target"),
               (pl.col("_inactive"), "out_of_scope")]).alias("disposition"))]
    refs = mark(tables["referrals"]).join(inactive_refs, on="referral_key", how="left", maintain_order="left")
    parts.append(refs.select(
        "source_file", "source_row", pl.lit("referrals").alias("table"), "patient_key",
        _pick([(pl.col("_ref_inactive").fill_null(False), "out_of_scope")]).alias("disposition")))
    contacts = mark(tables["contacts"]).join(inactive_refs, on="referral_key", how="left", maintain_order="left")
    parts.append(contacts.select(
        "source_file", "source_row", pl.lit("contacts").alias("table"), "patient_key",
        _pick([(pl.col("_ref_inactive").fill_null(False), "out_of_scope"),
               (pl.col("_blocked") & pl.lit(withhold), "withheld")]).alias("disposition")))
    codes = mark(tables["codes"])
    is_sharing = code_label(pl.col("code_system"), pl.col("code")).is_in(list(sharing_codes))
    parts.append(codes.select(
        "source_file", "source_row", pl.lit("codes").alias("table"), "patient_key",
        _pick([(pl.col("_inactive"), "out_of_scope"),
               (pl.col("_blocked") & ~is_sharing & pl.lit(withhold), "withheld")]).alias("disposition")))
    return pl.concat(parts, how="vertical")


def decide_batch(patients: pl.LazyFrame, people: Mapping[str, pl.LazyFrame], cohorts: pl.DataFrame,
                 patient_cohorts: pl.DataFrame, exceptions: pl.DataFrame, pack: RulePack, policy: str,
                 merges: pl.DataFrame, at_target: pl.LazyFrame) -> pl.DataFrame:
    """``decide`` for a batch: every canonical patients row (``patients``, merged ones too),
    the survivors' referrals, contacts and codes (``people``), the rules stage's cohorts and
    exceptions, the run's merge map and the patients held at the target by NHS number."""
    blocked = exceptions.filter(pl.col("flag_code") == "SHARING_BLOCK").select("patient_key").lazy()
    sharing_codes = pack.codelist("sharing_dissent_codes") + pack.codelist("sharing_consent_codes")
    tables = {"patients": patients, **{t: people[t] for t in ("referrals", "contacts", "codes")}}
    return decide(tables, cohorts.lazy(), patient_cohorts.lazy(), blocked, sharing_codes, policy,
                  merged_patients=merges.lazy(), at_target_patients=at_target).collect()


def set_aside(dispositions: pl.DataFrame, rows: pl.DataFrame, disposition: str) -> pl.DataFrame:
    """``dispositions`` with the migrated rows among ``rows`` (source_file, source_row) changed."""
    if rows.height == 0:
        return dispositions
    marked = rows.select("source_file", "source_row", pl.lit(True).alias("_hit")).unique()
    return dispositions.join(marked, on=["source_file", "source_row"], how="left", maintain_order="left").with_columns(
        pl.when(pl.col("_hit") & (pl.col("disposition") == "migrated")).then(pl.lit(disposition))
        .otherwise(pl.col("disposition")).alias("disposition")).drop("_hit")


def not_emitted_out_of_scope(dispositions: pl.DataFrame, not_emitted: pl.DataFrame) -> pl.DataFrame:
    """Rows FHIR leaves out by design (contacts of closed referrals, e-RS dummy slots) are
    out of scope: they were never part of the care handed over."""
    return set_aside(dispositions, not_emitted, "out_of_scope")
