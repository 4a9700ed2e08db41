"""``handover check``: a dry run of a mapping profile against an extract.

Lists every problem at once — files missing columns, values that do not parse, codes with
no mapping, broken references — with counts and examples, and writes nothing. Examples
quote values only for fields that are not patient-identifying; for the others they give
row numbers.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl

from migrate import canonical
from migrate.ingest import ingest
from migrate.mapping import missing_columns
from migrate.profile import Profile
from migrate.sources import discover, read_columns

_VALUE = r"\(value '(.*?)'\)"


@dataclass(frozen=True)
class CheckReport:
    """Problems found in an extract: layout problems (exit 2) and row problems (counted)."""

    layout: tuple[str, ...]
    rows_read: int
    problems: tuple[dict[str, Any], ...]

    @property
    def fits(self) -> bool:
        """True when every file has the columns the profile reads."""
        return not self.layout

    def asdict(self) -> dict[str, Any]:
        return {"layout_problems": list(self.layout), "rows_read": self.rows_read, "row_problems": list(self.problems)}


def _summarise(quarantine: pl.DataFrame) -> list[dict[str, Any]]:
    grouped = (
        quarantine.with_columns(pl.col("message").str.extract(_VALUE, 1).alias("value"))
        .sort("source_file", "source_row")
        .group_by("source_file", "table", "field", "reason_code", maintain_order=True)
        .agg(
            pl.len().alias("rows"),
            pl.col("source_row").head(3).alias("example_rows"),
            pl.col("value").drop_nulls().unique(maintain_order=True).head(3).alias("example_values"),
            pl.col("message").first().alias("first_message"),
        )
        .sort("source_file", "field", "reason_code", nulls_last=True)
    )
    return grouped.to_dicts()


def check_extract(input_dir: Path, profiles: Profile | Sequence[Profile]) -> CheckReport:
    """Check ``input_dir`` against one or more profiles without writing a run."""
    files = discover(input_dir, profiles)
    layout: list[str] = []
    unfit: set[str] = set()
    for f in files:
        present = read_columns(f)
        absent = missing_columns(f.spec(), present) if present else []
        if absent:
            unfit.add(f.table)
            layout.append(f"{f.name} ({f.table}): missing column(s) {', '.join(absent)}")
    work = Path(tempfile.mkdtemp(prefix="handover-check-"))
    try:
        tables = [t for t in canonical.TABLES if t not in unfit]
        ingested = ingest(input_dir, profiles, work, only_tables=tables, files=files)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    rows = sum(f.rows_read for f in ingested.files)
    return CheckReport(tuple(layout), rows, tuple(_summarise(ingested.quarantine)))
