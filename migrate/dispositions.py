"""Dispositions: what becomes of each canonical row, decided once, before any output.

Every source row ends with exactly one disposition. Ingest decides ``quarantined`` (and
``merged`` for rows a later row with the same key replaced); this stage decides the rest,
from identity, the rules stage's cohorts and sharing state, and the run's policies —
never from output options: a run with ``--no-fhir`` gives the same dispositions as one
with FHIR, and the FHIR output then carries exactly the rows whose disposition says they
are handed over (``CARRIED``). A disposition says what happened:

1. ``merged`` — a patient row that is a duplicate merged into a survivor (its referrals,
   contacts and codes are re-pointed to the survivor and share the survivor's fate);
2. ``out_of_scope`` — every row of a patient with nothing active at the cut-over (the
   survivor's patient cohort is closed, rejected or pifu_expired): no resource at all.
   ``Policy.inactive_patients = "include"`` hands them over too (default ``exclude``);
   and an e-RS dummy slot (a contact whose slot name is in the pack's
   ``dummy_slot_names``), which is not a real appointment;
3. ``already_at_target`` — a patient row the new provider already holds (by NHS number):
   the FHIR output updates that record;
4. ``withheld`` — under the ``withhold-clinical`` sharing policy, the contacts and clinical
   coded entries of a patient whose latest sharing entry is a dissent (the sharing and
   opt-out entries stay: they become the Consents that explain the block);
5. ``migrated`` — everything else. For a patient in active care that includes their
   history: closed and rejected referrals, past contacts, coded history — the receiving
   clinicians need it, and it becomes FHIR (a completed or revoked ServiceRequest, its
   Encounters and Appointments, Conditions).

A patient with no referral in the batch (e.g. every referral quarantined) has no cohort:
migrated, failing safe — the clinician sees the patient and the quarantine explains why.

Rows of the practice sharing file (``--practice-sharing``) are decided by
``migrate.practices.dispositions``: migrated when the setting is a sharing entry of a
patient handed over, else out of scope.

Pure: frames in, one frame out (``DISPOSITIONS_SCHEMA``: source_file, source_row, table,
patient_key, disposition, reason).
"""

from __future__ import annotations

from collections.abc import Mapping

import polars as pl

from migrate.canonical import typed

from migrate.fhir.inputs import labelled_codes
from migrate.fhir.options import SharingCodes
from migrate.matching import in_codelist
from migrate.policies import Policy

INACTIVE_COHORTS = ("closed", "rejected", "pifu_expired")
CARRIED = ("migrated", "already_at_target")  # the dispositions that become FHIR resources
WITHHELD = "sharing block: clinical record withheld (policy withhold-clinical)"
DUMMY_SLOT = "e-RS dummy slot: not a real appointment"

DISPOSITIONS_SCHEMA: dict[str, pl.DataType] = {
    "source_file": pl.String(), "source_row": pl.Int64(), "table": pl.String(), "patient_key": pl.String(),
    "disposition": pl.String(), "reason": pl.String(),
}


def _pick(choices: list[tuple[pl.Expr, str, pl.Expr]]) -> tuple[pl.Expr, pl.Expr]:
    """(disposition, reason): the first choice whose condition holds, else migrated (no reason)."""
    disposition: pl.Expr = pl.lit("migrated")
    reason: pl.Expr = pl.lit(None, dtype=pl.String)
    for cond, name, why in reversed(choices):
        disposition = pl.when(cond).then(pl.lit(name)).otherwise(disposition)
        reason = pl.when(cond).then(why).otherwise(reason)
    return disposition.alias("disposition"), reason.alias("reason")


def _flag(keys: pl.LazyFrame, name: str) -> pl.LazyFrame:
    return keys.select("patient_key").unique().with_columns(pl.lit(True).alias(name))


def decide(patients: pl.LazyFrame, people: Mapping[str, pl.LazyFrame], patient_cohorts: pl.LazyFrame,
           merges: pl.DataFrame, sharing: pl.LazyFrame, codes: SharingCodes, policy: Policy = Policy(),
           at_target: pl.LazyFrame | None = None, practices: pl.LazyFrame | None = None,
           sharing_entries: pl.LazyFrame | None = None) -> pl.LazyFrame:
    """One row per canonical row (and practice sharing row) with its disposition and why
    (module docstring).

    ``patients``: every canonical patients row (merged ones too); ``people``: the
    survivors' ``referrals``, ``contacts`` and ``codes`` (re-pointed: ``patient_key`` is
    the survivor's); ``patient_cohorts`` per survivor; ``merges``: patient_key ->
    survivor_key; ``sharing``: patient_key, blocked per survivor; ``codes``: the pack's
    sharing, opt-out and dummy-slot codelists; ``at_target``: patient_key of survivors the
    target holds by NHS number; ``practices``: the usable rows of the practice sharing
    file, and ``sharing_entries`` every sharing entry on survivors
    (``migrate.sharing.ENTRY_SCHEMA``), whose practice entries decide those rows.
    """
    withhold = policy.sharing == "withhold-clinical"
    exclude = policy.inactive_patients == "exclude"
    cohort = pl.col("patient_cohort").cast(pl.String)
    survivors = (patient_cohorts.select(pl.col("patient_key").cast(pl.String), cohort.alias("_cohort"))
                 .join(_flag(sharing.filter(pl.col("blocked").fill_null(False)), "_blocked"), on="patient_key",
                       how="full", coalesce=True)
                 .join(_flag(at_target if at_target is not None else pl.LazyFrame(schema={"patient_key": pl.String}),
                             "_at_target"), on="patient_key", how="full", coalesce=True)
                 .with_columns(pl.col("_blocked", "_at_target").fill_null(False),
                               (pl.col("_cohort").is_in(INACTIVE_COHORTS).fill_null(False) & exclude)
                               .alias("_inactive")))
    inactive_why = pl.format("nothing active at the cut-over (patient cohort {})", "_cohort")

    def mark(frame: pl.LazyFrame, key: str = "patient_key") -> pl.LazyFrame:
        marked = frame.join(survivors.rename({"patient_key": key}), on=key, how="left", maintain_order="left")
        return marked.with_columns(pl.col("_blocked", "_at_target", "_inactive").fill_null(False))

    rows = pl.col("source_file"), pl.col("source_row")
    merged = merges.lazy().select("patient_key", "survivor_key")
    patient_rows = mark(patients.select(*rows, "patient_key").join(merged, on="patient_key", how="left",
                                                                   maintain_order="left")
                        .with_columns(pl.coalesce("survivor_key", "patient_key").alias("_survivor")), "_survivor")
    parts = [patient_rows.select(*rows, pl.lit("patients").alias("table"), "patient_key", *_pick([
        (pl.col("survivor_key").is_not_null(), "merged", pl.format("merged into {}", "survivor_key")),
        (pl.col("_inactive"), "out_of_scope", inactive_why),
        (pl.col("_at_target"), "already_at_target", pl.lit("held at the target (NHS number): updated, not created")),
    ]))]
    parts.append(mark(people["referrals"]).select(*rows, pl.lit("referrals").alias("table"), "patient_key", *_pick([
        (pl.col("_inactive"), "out_of_scope", inactive_why),
    ])))
    dummy = in_codelist(pl.col("slot_name"), codes.dummy_slot_names).fill_null(False)
    parts.append(mark(people["contacts"]).select(*rows, pl.lit("contacts").alias("table"), "patient_key", *_pick([
        (pl.col("_inactive"), "out_of_scope", inactive_why),
        (dummy, "out_of_scope", pl.lit(DUMMY_SLOT)),
        (pl.col("_blocked") & withhold, "withheld", pl.lit(WITHHELD)),
    ])))
    # memory: streamed: the coded entries are labelled a batch at a time as the plan runs (the
    # labels are row by row); collected whole, they were 1.2M rows at 1M patients (~0.1 GB),
    # held until the dispositions were sunk.
    def label(batch: pl.DataFrame) -> pl.DataFrame:
        return labelled_codes(batch, codes)

    empty = people["codes"].head(0).collect()
    coded = people["codes"].map_batches(label, schema=label(empty).schema, streamable=True)
    parts.append(mark(coded).select(*rows, pl.lit("codes").alias("table"), "patient_key", *_pick([
        (pl.col("_inactive"), "out_of_scope", inactive_why),
        (pl.col("_blocked") & withhold & (pl.col("kind") == "clinical"), "withheld", pl.lit(WITHHELD)),
    ])))
    if practices is not None:
        from migrate import practices as practice_settings
        from migrate.sharing import empty_entries

        inactive = survivors.filter(pl.col("_inactive")).select("patient_key")
        parts.append(practice_settings.dispositions(
            practices, sharing_entries if sharing_entries is not None else empty_entries(), inactive))
    return pl.concat(parts, how="vertical").select(typed(DISPOSITIONS_SCHEMA))


def carried(patients: pl.LazyFrame, children: Mapping[str, pl.LazyFrame],
            decided: pl.LazyFrame) -> dict[str, pl.LazyFrame]:
    """The rows to hand over: ``patients`` (with ``survivor_key``) whose survivor is carried,
    merged records included so their rows trace to the survivor's resources; and the
    ``children`` rows (referrals, contacts, codes) whose own disposition is carried."""
    keep = decided.filter(pl.col("disposition").is_in(CARRIED))
    survivors = keep.filter(pl.col("table") == "patients").select(pl.col("patient_key").alias("_survivor")).unique()
    out = {"patients": patients.with_columns(pl.coalesce("survivor_key", "patient_key").alias("_survivor"))
           .join(survivors, on="_survivor", how="semi").drop("_survivor")}
    for table, frame in children.items():
        rows = keep.filter(pl.col("table") == table).select("source_file", "source_row")
        out[table] = frame.join(rows, on=["source_file", "source_row"], how="semi")
    return out
