"""Reconciliation: prove every source row ended with exactly one disposition.

Works on the lineage frame (one row per source row) and the per-file read counts. The
result is plain data for ``reports/reconciliation.json`` and the terminal summary.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import polars as pl

from migrate.canonical import DISPOSITIONS


@dataclass(frozen=True)
class FileCount:
    """Rows read from one file (from the reader, before any stage)."""

    name: str
    table: str
    rows_read: int


def invariant(lineage: pl.DataFrame, files: Iterable[FileCount]) -> dict[str, Any]:
    """Per file: rows read, rows per disposition, their sum, and whether they agree.

    A file also fails when any of its source rows has more than one disposition. Lineage
    may hold several rows for one source row (one per FHIR resource it became); a source
    row counts once.
    """
    lineage = lineage.select("source_file", "source_row", "disposition").unique()
    counts = (
        lineage.group_by("source_file", "disposition").agg(pl.len().alias("n"))
        .with_columns(pl.col("disposition").cast(pl.String))
    )
    per_file: dict[str, dict[str, int]] = {}
    for name, disposition, n in counts.iter_rows():
        per_file.setdefault(name, {})[disposition] = int(n)
    repeated = (
        lineage.group_by("source_file", "source_row").agg(pl.len().alias("n")).filter(pl.col("n") > 1)
        .group_by("source_file").agg(pl.len().alias("rows"))
    )
    repeats = {name: int(n) for name, n in repeated.iter_rows()}
    rows: list[dict[str, Any]] = []
    known = set()
    for f in sorted(files, key=lambda f: f.name):
        known.add(f.name)
        dispositions = {d: per_file.get(f.name, {}).get(d, 0) for d in DISPOSITIONS}
        total = sum(dispositions.values())
        rows.append({
            "file": f.name, "table": f.table, "rows_read": f.rows_read, "dispositions": dispositions,
            "total": total, "rows_with_several_dispositions": repeats.get(f.name, 0),
            "holds": total == f.rows_read and repeats.get(f.name, 0) == 0,
        })
    for name in sorted(set(per_file) - known):  # lineage rows from a file nobody read
        dispositions = {d: per_file[name].get(d, 0) for d in DISPOSITIONS}
        rows.append({"file": name, "table": None, "rows_read": 0, "dispositions": dispositions,
                     "total": sum(dispositions.values()), "rows_with_several_dispositions": repeats.get(name, 0),
                     "holds": False})
    totals = {d: sum(r["dispositions"][d] for r in rows) for d in DISPOSITIONS}
    return {
        "holds": all(r["holds"] for r in rows),
        "files": rows,
        "rows_read": sum(r["rows_read"] for r in rows),
        "dispositions": totals,
    }


def quarantine_summary(quarantine: pl.DataFrame) -> list[dict[str, Any]]:
    """Quarantined rows per file, table and reason code, in a stable order."""
    grouped = quarantine.group_by("source_file", "table", "reason_code").agg(pl.len().alias("rows"))
    return [
        {"file": f, "table": t, "reason_code": r, "rows": int(n)}
        for f, t, r, n in grouped.sort("source_file", "table", "reason_code").iter_rows()
    ]
