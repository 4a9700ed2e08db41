"""GP practices' sharing settings (``--practice-sharing FILE``): read, checked and accounted for.

A practice that does not share records out at all blocks every patient registered there
(``migrate.sharing.practice_entries``). The file comes in its owner's layout, so it is read
by a ``practice_sharing`` table of one of the ``--mapping`` profiles (``migrate.reference``):
``ods_code`` and ``sharing_out`` (a sharing setting: the values meaning dissent and consent,
and the column holding the date it was set; docs/mapping-profiles.md).

The file is an input like any extract file, so every row ends with one disposition and the
run's invariant counts it (``reconcile.invariant``, table ``practice_sharing``):

- ``quarantined``: a row that could not be read or mapped (a blank ODS code, a date that
  matches no format, …), or that repeats an ODS code (``duplicate_key``: a practice has one
  setting; the first row is kept);
- ``migrated``: a practice setting that is a sharing entry of at least one patient in active
  care (it is then part of that patient's sharing Consent);
- ``out_of_scope``: a practice that shares out (its setting makes no entry: it never lifts a
  patient's own dissent), or none of whose patients is handed over in active care.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import polars as pl

from migrate import canonical, integrity, quarantine
from migrate.ingest import FileStats
from migrate.manifest import sha256_file
from migrate.profile import Profile
from migrate.reference import read_reference

TABLE = canonical.PRACTICE_TABLE
NOT_USED = ("practice setting blocks no patient handed over (the practice shares out, or none of its "
            "registered patients is in active care)")


@dataclass(frozen=True)
class PracticeSettings:
    """The practice file as read: its usable rows (``ods_code``, ``sharing_out``,
    ``source_file``, ``source_row``), its quarantined rows and its statistics."""

    file: FileStats
    frame: pl.DataFrame
    quarantine: pl.DataFrame


def read_practice_sharing(path: Path, profile: Profile) -> PracticeSettings:
    """Read ``path`` with ``profile``'s ``practice_sharing`` table (module docstring)."""
    read = read_reference(path, profile, TABLE)
    split = integrity.duplicate_keys(read.frame, TABLE)
    parts = [read.quarantine]
    if split.failed.height:  # (no repeats: no marking columns either)
        parts.append(quarantine.from_mapping(split.failed.with_columns(
            pl.struct("ods_code", "sharing_out").struct.json_encode().alias("__raw")), TABLE))
    rejected = quarantine.table(parts)
    stats = FileStats(read.file, TABLE, path.stat().st_size, sha256_file(path), read.rows_read)
    return PracticeSettings(stats, split.passed, rejected)


def dispositions(practices: pl.LazyFrame, entries: pl.LazyFrame, inactive: pl.LazyFrame) -> pl.LazyFrame:
    """One row per usable practice row: ``migrated`` when an entry it made belongs to a
    patient not in ``inactive`` (survivors not handed over: nothing active), else
    ``out_of_scope`` with why (module docstring). Columns as ``migrate.dispositions.decide``'s."""
    used = (entries.filter(pl.col("source") == "practice_setting")
            .join(inactive.select("patient_key"), on="patient_key", how="anti")
            .select("source_file", "source_row").unique().with_columns(pl.lit(True).alias("_used")))
    in_use = pl.col("_used").fill_null(False)
    return practices.select("source_file", "source_row").join(
        used, on=["source_file", "source_row"], how="left", maintain_order="left").select(
        "source_file", "source_row", pl.lit(TABLE).alias("table"), pl.lit(None, dtype=pl.String).alias("patient_key"),
        pl.when(in_use).then(pl.lit("migrated")).otherwise(pl.lit("out_of_scope")).alias("disposition"),
        pl.when(in_use).then(pl.lit(None, dtype=pl.String)).otherwise(pl.lit(NOT_USED)).alias("reason"))
