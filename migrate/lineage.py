"""``lineage.parquet``: every source row, its disposition, and the FHIR resources it became.

One row per (source row, resource); a row that became no resource has one row with the
FHIR columns null. Rows come from four places: the canonical rows with the disposition
and reason ``dispositions.decide`` gave them, quarantine (``quarantined``, the reason
code), rows a later row with the same key superseded, and the extract's own merge
messages (both ``merged``). ``reason`` says why a row is not simply migrated.

``build_lineage`` gives those rows (a plan; nothing is read); ``write_lineage`` joins them
with the FHIR writer's links and writes the file sorted by file, row and resource without
holding it: at a million patients lineage has 18M rows (3-4 GB to sort in memory), so rows
and links go into range buckets of (file, row) (``migrate.staging``) and each bucket is
joined, sorted and written in turn — bucket order is file and row order.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import polars as pl

from migrate import canonical
from migrate.ingest import Ingested
from migrate.staging import Parts, RangeBuckets, batches, sink

LINEAGE_COLUMNS = ("source_file", "source_row", "table", "patient_key", "disposition", "reason")
_ORDER = ("source_file", "source_row", "fhir_type", "fhir_id")
POSITION = "__position"  # the column position() gives
_ROW_BITS = 40  # source rows per file the position holds (as reconcile's packing)
BUCKET_ROWS = 500_000  # lineage rows bucketed, and sorted (a bucket), at a time: ~75 MB of rows


def build_lineage(ingested: Ingested, dispositions: pl.LazyFrame) -> pl.LazyFrame:
    """Every source row of a batch with its one disposition and reason (``LINEAGE_COLUMNS``),
    unsorted, without the FHIR columns.

    ``dispositions``: source_file, source_row, table, patient_key, disposition, reason of
    every canonical row. Invariant: each source row of the batch appears with exactly one
    disposition (checked by ``reconcile.rows_invariant``).
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
    return pl.concat([f.select(pl.col(c).cast(canonical.LINEAGE_SCHEMA[c]) for c in LINEAGE_COLUMNS)
                      for f in (dispositions, quarantined, superseded, merges)], how="vertical")


def position(names: Sequence[str]) -> pl.Expr:
    """(file, row) as one integer in lineage order (column ``POSITION``): ``names`` (sorted
    file names) in their order, a null file or one not in ``names`` first."""
    # memory: the file's index as its category in an Enum of ``names`` (unknown or null: -1),
    # not ``replace_strict``: in a streaming query that mapping held the whole column (sinking
    # the 1M run's 15M lineage links with it peaked at 2.4 GB, with the Enum 0.7 GB;
    # benchmarks/roundtrip.md); the values are the same.
    index = pl.col("source_file").cast(pl.Enum(list(names)), strict=False).to_physical().cast(pl.Int64).fill_null(-1)
    return (index * (1 << _ROW_BITS) + pl.col("source_row").fill_null(0)).alias(POSITION)


def position_bounds(names: Sequence[str], rows: Mapping[str, int], step: int) -> pl.Series:
    """Range-bucket boundaries of ``position(names)``: a new bucket every ``step`` rows of each
    file (``rows``: its last row), and at each file's start."""
    cuts = [(i << _ROW_BITS) + start for i, name in enumerate(names)
            for start in range(0 if i else 1, rows.get(name, 0) + 1, step)][1:]
    return pl.Series(POSITION, cuts, dtype=pl.Int64)


def write_lineage(rows: pl.LazyFrame, fhir: pl.LazyFrame | None, files: dict[str, int], path: Path,
                  work: Path) -> int:
    """Write ``path``: ``rows`` (``build_lineage``) joined with the FHIR writer's links
    (source_file, source_row, fhir_type, fhir_id; None when no FHIR was written), sorted by
    file, row and resource; returns its row count. ``files``: rows read per input file
    (where the buckets split)."""
    # memory: the distinct source file names (a few)
    names = sorted(set(files) | set(rows.select(pl.col("source_file").unique()).collect(engine="streaming")
                                    .to_series().drop_nulls().to_list()))
    bounds = position_bounds(names, files, BUCKET_ROWS)
    where = position(names)
    links = RangeBuckets(work / "lineage-fhir", POSITION, bounds)
    own = RangeBuckets(work / "lineage-rows", POSITION, bounds)
    parts = Parts(work / "lineage-parts")
    try:
        # memory: one batch (``BUCKET_ROWS``) at a time, its position computed on it. (When the
        # position was a ``replace_strict``, which does not stream, computing it in the plan made
        # the engine hold every row: 1.8 GB at 1M patients; ``position`` is an Enum cast now.)
        for batch in batches(rows, BUCKET_ROWS):
            own.add(batch.with_columns(where))
        if fhir is not None:
            for batch in batches(fhir.select("source_file", "source_row", "fhir_type", "fhir_id"), BUCKET_ROWS):
                links.add(batch.with_columns(where))
        for i in range(own.count):
            if not own.parts[i]:
                continue  # links without rows would be dropped by the left join anyway
            part = own.read(i).lazy().drop(POSITION, strict=False)
            if fhir is None:
                part = part.with_columns(pl.lit(None, dtype=pl.String).alias("fhir_type"),
                                         pl.lit(None, dtype=pl.String).alias("fhir_id"))
            else:
                resources = links.read(i).lazy().select("source_file", "source_row", "fhir_type", "fhir_id") \
                    if links.parts[i] else pl.LazyFrame(schema={"source_file": pl.String, "source_row": pl.Int64,
                                                                "fhir_type": pl.String, "fhir_id": pl.String})
                part = part.join(resources, on=["source_file", "source_row"], how="left")
            # memory: one bucket of lineage rows (``BUCKET_ROWS``) with its FHIR links, sorted
            parts.add(part.select(canonical.typed(canonical.LINEAGE_SCHEMA)).sort(*_ORDER, nulls_last=False)
                      .collect())
        if not parts.paths:
            parts.add(pl.DataFrame(schema=canonical.LINEAGE_SCHEMA))
        sink(parts.scan(), path)
        return parts.rows
    finally:
        for staged in (own, links, parts):
            staged.close()
