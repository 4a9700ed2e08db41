"""``lineage.parquet``: every source row, its disposition, and the FHIR resources it became.

One row per (source row, resource); a row that became no resource has one row with the
FHIR columns null. Rows come from four places: the canonical rows with the disposition
and reason ``dispositions.decide`` gave them, quarantine (``quarantined``, the reason
code), rows a later row with the same key superseded, and the extract's own merge
messages (both ``merged``). ``reason`` says why a row is not simply migrated.
"""

from __future__ import annotations

import polars as pl

from migrate import canonical
from migrate.ingest import Ingested


def build_lineage(ingested: Ingested, dispositions: pl.LazyFrame, fhir: pl.LazyFrame | None = None) -> pl.LazyFrame:
    """Lineage of a batch, sorted by file, row and resource.

    ``dispositions``: source_file, source_row, table, patient_key, disposition, reason of
    every canonical row; ``fhir``: the FHIR writer's links (source_file, source_row, fhir_type,
    fhir_id), or None when no FHIR was written. Invariant: each source row of the batch
    appears with exactly one disposition (checked by ``reconcile.rows_invariant``).
    """
    quarantined = ingested.quarantine.lazy().select(
        "source_file", "source_row", "table", pl.lit(None, dtype=pl.String).alias("patient_key"),
        pl.lit("quarantined").alias("disposition"), pl.format("quarantined: {}", "reason_code").alias("reason"),
    )
    superseded = ingested.superseded.lazy().select(
        "source_file", "source_row", "table", "patient_key", pl.lit("merged").alias("disposition"),
        pl.lit("superseded by a later row with the same key").alias("reason"))
    merges = ingested.merges.lazy().select(
        "source_file", "source_row", pl.lit("merges").alias("table"), "patient_key",
        pl.lit("merged").alias("disposition"),
        pl.format("merge message: {} merged into {}", "prior_patient_key", "patient_key").alias("reason"))
    columns = ("source_file", "source_row", "table", "patient_key", "disposition", "reason")
    lineage = pl.concat([dispositions.select(columns), quarantined.select(columns), superseded.select(columns),
                         merges.select(columns)], how="vertical")
    if fhir is None:
        lineage = lineage.with_columns(pl.lit(None, dtype=pl.String).alias("fhir_type"),
                                       pl.lit(None, dtype=pl.String).alias("fhir_id"))
    else:
        resources = fhir.select("source_file", "source_row", "fhir_type", "fhir_id")
        lineage = lineage.join(resources, on=["source_file", "source_row"], how="left")
    return lineage.select(canonical.typed(canonical.LINEAGE_SCHEMA)).sort(
        "source_file", "source_row", "fhir_type", "fhir_id", nulls_last=False)
