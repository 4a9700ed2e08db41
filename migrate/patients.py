"""``patients.parquet``: each source patient's outcome in one row.

Cohort (a merged patient shows its survivor's), disposition, survivor, identity's
verdicts on the NHS number, the target-index match, and every flag raised for them.
"""

from __future__ import annotations

import polars as pl

from migrate import canonical

PATIENTS_SCHEMA: dict[str, pl.DataType] = {
    "patient_key": pl.String(), "nhs_number": pl.String(), "patient_cohort": pl.Enum(canonical.COHORTS),
    "disposition": pl.Enum(canonical.DISPOSITIONS), "flag_codes": pl.List(pl.String()),
    # beyond the contract's key columns: who a merged patient became, and identity's verdicts
    "survivor_key": pl.String(), "nhs_number_valid": pl.Boolean(), "nhs_number_verification": pl.String(),
    "at_target_id": pl.String(),
}


def patient_summary(identity_patients: pl.DataFrame | pl.LazyFrame, merges: pl.DataFrame,
                    patient_cohorts: pl.DataFrame | pl.LazyFrame, exceptions: pl.DataFrame | pl.LazyFrame,
                    dispositions: pl.DataFrame | pl.LazyFrame) -> pl.DataFrame:
    """One row per source patient (``PATIENTS_SCHEMA``), sorted by ``patient_key``.

    ``identity_patients``: identity's patients (``IdentityResult.patients``; a scan of the
    staged frame in a batch); ``merges``: patient_key -> survivor_key; ``patient_cohorts`` per survivor;
    ``dispositions``: the canonical rows' dispositions (the patients rows are read).
    """
    # memory: one plan run by the streaming engine (the joins stream; the final sort holds the
    # output, one short row per patient, ~0.05 GB at 1M); eager, each join's result was a new
    # whole frame beside the previous one (0.22 GB over the stage at 1M, ~1.1 GB at 5M).
    flags = exceptions.lazy().group_by("patient_key").agg(pl.col("flag_code").unique().sort().alias("flag_codes"))
    disp = dispositions.lazy().filter(pl.col("table") == "patients").select("patient_key", "disposition")
    ident = identity_patients.lazy().select("patient_key", "nhs_number", "nhs_number_valid",
                                            "nhs_number_verification", "at_target_id").join(
        merges.lazy(), on="patient_key", how="left")
    return (
        ident.with_columns(pl.coalesce("survivor_key", "patient_key").alias("survivor_key"))
        .join(patient_cohorts.lazy().rename({"patient_key": "survivor_key"}), on="survivor_key", how="left")
        .join(disp, on="patient_key", how="left")
        .join(flags, on="patient_key", how="left")
        .with_columns(pl.col("flag_codes").fill_null(pl.lit([], dtype=pl.List(pl.String))))
        .select(canonical.typed(PATIENTS_SCHEMA))
        .sort("patient_key")
        # memory: the summary (above): one row per source patient, its small columns; written by the caller
        .collect(engine="streaming")
    )
