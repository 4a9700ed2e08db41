"""``patients.parquet``: each source patient's outcome in one row.

Cohort (a merged patient shows its survivor's), disposition, survivor, identity's
verdicts on the NHS number, the target-index match, and every flag raised for them.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import polars as pl

from migrate import canonical
from migrate.staging import sink, sorted_by_ranges

PATIENTS_SCHEMA: dict[str, pl.DataType] = {
    "patient_key": pl.String(), "nhs_number": pl.String(), "patient_cohort": pl.Enum(canonical.COHORTS),
    "disposition": pl.Enum(canonical.DISPOSITIONS), "flag_codes": pl.List(pl.String()),
    # beyond the contract's key columns: who a merged patient became, and identity's verdicts
    "survivor_key": pl.String(), "nhs_number_valid": pl.Boolean(), "nhs_number_verification": pl.String(),
    "at_target_id": pl.String(),
}


BUCKET_PATIENTS = 1_000_000  # patients summarised (joined and sorted) at a time


def patient_summary(identity_patients: pl.DataFrame | pl.LazyFrame, merges: pl.DataFrame,
                    patient_cohorts: pl.DataFrame | pl.LazyFrame, exceptions: pl.DataFrame | pl.LazyFrame,
                    dispositions: pl.DataFrame | pl.LazyFrame, work: Path,
                    bucket_patients: int = BUCKET_PATIENTS) -> pl.LazyFrame:
    """One row per source patient (``PATIENTS_SCHEMA``), sorted by ``patient_key``: a scan of
    parts staged under ``work`` (removed with it), written by the caller.

    ``identity_patients``: identity's patients (``IdentityResult.patients``; a scan of the
    staged frame in a batch); ``merges``: patient_key -> survivor_key; ``patient_cohorts`` per survivor;
    ``dispositions``: the canonical rows' dispositions (the patients rows are read).

    The patients are summarised a range of keys at a time (``bucket_patients`` each:
    ``migrate.staging.sorted_by_ranges``); each range's rows are joined and sorted alone, and
    the ranges written in key order, so the rows are those of one sort of the whole
    (``tests/test_patient_summary.py``).
    """
    # memory: one range of patients at a time (``staging.sorted_by_ranges``): its rows of the
    # four inputs joined and sorted (~0.2 GB for a million patients). In one plan the joins'
    # build sides (a cohort, a disposition and the flags per patient) and the sort held every
    # patient: +1.3 GB at 5M.
    ident = identity_patients.lazy().select("patient_key", "nhs_number", "nhs_number_valid",
                                            "nhs_number_verification", "at_target_id")
    # The patients' own dispositions, staged once (the dispositions have a row per canonical row).
    disp = pl.scan_parquet(sink(dispositions.lazy().filter(pl.col("table") == "patients")
                                .select("patient_key", "disposition"), work / "patient-dispositions.parquet"))
    # A merged patient takes its survivor's cohort, which may lie in another range: the cohorts
    # of every merge's survivor (few) go with each range.
    survivors = merges.get_column("survivor_key").unique().implode()

    def summary(inside: Callable[[str], pl.Expr]) -> pl.LazyFrame:
        key = inside("patient_key")
        return _summary(ident.filter(key), merges.lazy(),
                        patient_cohorts.lazy().filter(key | pl.col("patient_key").is_in(survivors)),
                        disp.filter(key), exceptions.lazy().filter(key))

    return sorted_by_ranges(summary, ident, "patient_key", ["patient_key"], work / "patient-summary",
                            bucket_patients, PATIENTS_SCHEMA)


def _summary(ident: pl.LazyFrame, merges: pl.LazyFrame, patient_cohorts: pl.LazyFrame, disp: pl.LazyFrame,
             exceptions: pl.LazyFrame) -> pl.LazyFrame:
    """The summary rows of ``ident``'s patients (unsorted)."""
    flags = exceptions.group_by("patient_key").agg(pl.col("flag_code").unique().sort().alias("flag_codes"))
    return (
        ident.join(merges, on="patient_key", how="left")
        .with_columns(pl.coalesce("survivor_key", "patient_key").alias("survivor_key"))
        .join(patient_cohorts.rename({"patient_key": "survivor_key"}), on="survivor_key", how="left")
        .join(disp, on="patient_key", how="left")
        .join(flags, on="patient_key", how="left")
        .with_columns(pl.col("flag_codes").fill_null(pl.lit([], dtype=pl.List(pl.String))))
        .select(canonical.typed(PATIENTS_SCHEMA))
    )
