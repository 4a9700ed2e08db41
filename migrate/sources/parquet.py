"""Reading Parquet extracts: every row kept, numbered, with its source file."""

from __future__ import annotations

from pathlib import Path

import polars as pl

from migrate.errors import InputError
from migrate.sources.csv import ReadResult, empty_rejected


def read_parquet(path: Path, source_file: str) -> ReadResult:
    """Read one Parquet file lazily; columns keep their types (dates stay dates).

    Parquet has no field-count or encoding failures, so nothing is rejected here; values
    are still checked by the mapping like any other source.
    """
    try:
        frame = pl.scan_parquet(path)
        schema = frame.collect_schema()
        # memory: a count (from the file's metadata)
        rows = int(frame.select(pl.len()).collect().item())
    except (OSError, pl.exceptions.ComputeError) as exc:
        raise InputError(f"cannot read Parquet file {path}: {type(exc).__name__}") from None
    lazy = frame.with_row_index("source_row", offset=1).with_columns(
        pl.col("source_row").cast(pl.Int64), pl.lit(source_file).alias("source_file")
    )
    return ReadResult(lazy, empty_rejected(source_file), rows, tuple(schema.names()))


def read_parquet_header(path: Path) -> tuple[str, ...]:
    """Column names of a Parquet file, without reading its rows."""
    try:
        return tuple(pl.scan_parquet(path).collect_schema().names())
    except (OSError, pl.exceptions.ComputeError) as exc:
        raise InputError(f"cannot read Parquet file {path}: {type(exc).__name__}") from None
