"""The outreach list: patients in active care whose sharing block stands, to be offered a call.

What the seed service did for its blocked patients in active care: offer a telephone
consultation now. A patient is on the list when ``SHARING_BLOCK_ACTIVE_CARE`` is raised on
them and no applied decision overrode the block (``override`` on either sharing flag): the
block was upheld, or nobody has decided yet. Each row carries what the clinician making the
call needs — name, phone, address, NHS number, GP practice, the open referrals with their
service line and priority, the next booked contact, the dissent on record and the review
state.

This is the one worklist with contact details. It is marked identifiable on every printed
page and in its sheet name, is written only by ``write_reports`` into the run's own
``reports/outreach.xlsx`` and never by the pseudonymised pack (which renders the other
reports only).
"""

from __future__ import annotations

from pathlib import Path

import polars as pl

from migrate.outputs import write_atomic
from migrate.reports import xlsx
from migrate.reports.rundata import RunFolder

FILE = "outreach.xlsx"
FLAG = "SHARING_BLOCK_ACTIVE_CARE"
SHARING_FLAGS = ("SHARING_BLOCK", "SHARING_BLOCK_ACTIVE_CARE")
MARK = "IDENTIFIABLE: contact details for direct care only; never share outside the care team"
OPEN = ("backlog", "transition", "pifu")
COLUMNS = (
    xlsx.Column("nhs_number", "NHS number", 13), xlsx.Column("local_patient_id", "Local patient id", 10),
    xlsx.Column("name", "Name", 20, "wrap"), xlsx.Column("phone", "Phone", 14),
    xlsx.Column("address", "Address", 26, "wrap"), xlsx.Column("postcode", "Postcode", 9),
    xlsx.Column("gp_ods_code", "GP practice", 9), xlsx.Column("patient_cohort", "Cohort", 11),
    xlsx.Column("referrals", "Open referrals (service line, priority)", 30, "wrap"),
    xlsx.Column("next_booked", "Next booked", 11, "date"),
    xlsx.Column("dissent", "Dissent on record", 22, "wrap"),
    xlsx.Column("review", "Review of the block", 22, "wrap"),
    xlsx.Column("reviewer", "Called by", 12), xlsx.Column("date", "Date", 11, "date"),
    xlsx.Column("note", "Outcome", 24, "wrap"),
)


def _to_call(run: RunFolder) -> pl.LazyFrame:
    """The patients on the list (module docstring), one row each with the flag's evidence."""
    exceptions = run.scan("exceptions.parquet")
    active = exceptions.filter(pl.col("flag_code") == FLAG).select("patient_key", "evidence").unique("patient_key")
    overridden = (run.scan("decisions.parquet").filter((pl.col("status") == "applied")
                                                       & (pl.col("effect") == "override_sharing")
                                                       & pl.col("flag_code").is_in(SHARING_FLAGS))
                  .select("patient_key").unique()) if run.has("decisions.parquet") else None
    return active if overridden is None else active.join(overridden, on="patient_key", how="anti")


def outreach_count(run: RunFolder) -> int:
    """How many patients ``outreach`` lists (without building their rows)."""
    # memory: a count
    return int(_to_call(run).select(pl.len()).collect().item())


def outreach(run: RunFolder) -> pl.DataFrame:
    """One row per patient to call (module docstring), most urgent care first (transition,
    then by patient key)."""
    # memory: held: the patients to call (one key and the flag's text each): every other table
    # is cut to them before it is grouped or joined, so the work is sized by the list, not by
    # the extract's referrals and contacts.
    active = _to_call(run).collect()
    keys = active.select("patient_key").lazy()

    def mine(frame: pl.LazyFrame) -> pl.LazyFrame:
        return frame.join(keys, on="patient_key", how="semi")

    review = run.scan("review.parquet").filter(pl.col("flag_code").is_in(SHARING_FLAGS)) if run.has(
        "review.parquet") else None
    state = (mine(review).sort("flag_code").group_by("patient_key").agg(
        pl.when(pl.col("decision").is_not_null()).then(pl.format("{} by {} on {}", "decision", "reviewer",
                                                                 pl.col("decided_on").dt.strftime("%d/%m/%Y")))
        .drop_nulls().str.join("; ").alias("review")) if review is not None else
        pl.LazyFrame(schema={"patient_key": pl.String, "review": pl.String}))
    patients = mine(run.canonical("patients")).select(
        "patient_key", pl.col("source_patient_id").alias("local_patient_id"),
        pl.coalesce("nhs_number", "nhs_number_raw").alias("nhs_number"),
        pl.concat_str([pl.col("given_names"), pl.col("family_name")], separator=" ", ignore_nulls=True).alias("name"),
        "phone", "address", "postcode", "gp_ods_code")
    cohorts = mine(run.scan("patients.parquet")).select("patient_key", pl.col("patient_cohort").cast(pl.String))
    # memory: held: the open referrals of the patients to call
    open_refs = mine(run.scan("cohorts.parquet")).filter(pl.col("cohort").cast(pl.String).is_in(OPEN)).collect(
        engine="streaming")
    referrals = run.canonical("referrals").join(open_refs.lazy().select("referral_key"), on="referral_key",
                                                how="semi")
    refs = (open_refs.lazy()
            .join(referrals.select("referral_key", "source_referral_id", "service_line", "assigned_priority"),
                  on="referral_key", how="left")
            .sort("referral_key")
            .group_by("patient_key").agg(pl.format("{} ({}, {})", pl.coalesce("source_referral_id", "referral_key"),
                                                   pl.col("service_line").fill_null("no service line"),
                                                   pl.col("assigned_priority").cast(pl.String).fill_null("unknown"))
                                         .str.join("; ").alias("referrals")))
    booked = (mine(run.canonical("contacts")).filter((pl.col("attendance").cast(pl.String) == "booked")
                                               & (pl.col("contact_datetime").dt.date() > pl.lit(run.cutover)))
              .group_by("patient_key").agg(pl.col("contact_datetime").min().dt.date().alias("next_booked")))
    frame = (active.lazy().join(patients, on="patient_key", how="left").join(cohorts, on="patient_key", how="left")
             .join(refs, on="patient_key", how="left").join(booked, on="patient_key", how="left")
             .join(state, on="patient_key", how="left")
             .with_columns(pl.col("evidence").alias("dissent"),
                           pl.when(pl.col("review").fill_null("") == "").then(pl.lit("undecided"))
                           .otherwise(pl.col("review")).alias("review"),
                           *(pl.lit(None, dtype=pl.String).alias(c) for c in ("reviewer", "note")),
                           pl.lit(None, dtype=pl.Date).alias("date"),
                           (pl.col("patient_cohort") != "transition").alias("_later"))
             .sort("_later", "patient_key"))
    # memory: the list itself: one row per patient to call (see ``_to_call``), written whole
    return frame.select(*(c.name for c in COLUMNS)).collect(engine="streaming")


def write_outreach(run: RunFolder, folder: Path) -> Path:
    """``folder/outreach.xlsx``: the list, marked identifiable on its sheet and every printed page."""
    frame = outreach(run)
    sheet = xlsx.Sheet("Outreach (identifiable)", frame, COLUMNS)
    page = xlsx.Page(f"Run {run.run_id} · {MARK}", MARK)
    return write_atomic(folder / FILE, lambda tmp: xlsx.write_workbook(tmp, [sheet], page))
