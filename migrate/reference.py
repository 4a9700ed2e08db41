"""Reference files: inputs given on the command line, read in their own layout by a profile table.

The new provider's patients (``--target-index``, table ``target_index``) and GP practices'
sharing settings (``--practice-sharing``, table ``practice_sharing``) are not part of the
extract, but each comes in its owner's own layout, so each is mapped like an extract file:
by a table of a mapping profile, with the same validation (a column the table reads that
the file lacks exits 2 before any row is read) and the same quarantine (a row whose values
fail is set aside with a reason code and a message naming file, row and field).

``read_reference(path, profile, table)`` returns the mapped rows that passed (every
canonical column of the table, ``source_file`` and ``source_row``), the quarantined ones
(``canonical.QUARANTINE_SCHEMA``, ``table`` = the table's name) and the rows read, so a
caller can show that every row is one or the other.
"""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from migrate import canonical, quarantine
from migrate.errors import ConfigError, ProfileError
from migrate.mapping import apply_mapping, compile_table, explain_failures, missing_columns
from migrate.profile import Profile
from migrate.sources import InputFile, read_columns, read_file


WHAT = {canonical.TARGET_TABLE: "target index", canonical.PRACTICE_TABLE: "practice sharing file"}


@dataclass(frozen=True)
class ReferenceRead:
    """One reference file as read: usable rows, quarantined rows, rows read."""

    file: str
    frame: pl.DataFrame  # canonical columns of the table + source_file, source_row
    quarantine: pl.DataFrame
    rows_read: int


def reference_profile(table: str, profiles: Sequence[Profile], given: Path | None) -> Profile | None:
    """The first of ``profiles`` with a ``table`` table, or None; ConfigError (exit 2) when
    a file was ``given`` for a table that needs its profile and none maps it."""
    found = next((p for p in profiles if table in p.tables), None)
    if found is None and given is not None and table != canonical.TARGET_TABLE:
        option = canonical.REFERENCE_TABLES[table]
        raise ConfigError(f"{option} {given.name}: no mapping profile has a {table} table to read it with",
                          [f"add tables: {table}: {{fields: …}} to a --mapping profile (docs/mapping-profiles.md)"])
    return found


def read_reference(path: Path, profile: Profile, table: str) -> ReferenceRead:
    """Read and map the reference file at ``path`` with ``profile``'s ``table`` table."""
    spec = profile.tables[table]
    source = InputFile(path, path.name, profile, (table,))
    present = read_columns(source) or ()
    absent = missing_columns(spec, present) if present else list(spec.source_columns)
    if absent:
        raise ProfileError(f"the {WHAT[table]} does not fit mapping profile {profile.name}",
                           [f"{path.name} ({table}): missing column(s) {', '.join(absent)}; "
                            f"columns present: {', '.join(present) or 'none'}"])
    with tempfile.TemporaryDirectory(prefix=f"handover-{table}-") as work:
        result = read_file(source, Path(work))
        compiled = compile_table(spec, result.frame.collect_schema(), profile)
        # memory: whole: one reference file (the practice sharing list or target index: one row per practice or target
        # patient), mapped as ingest maps a batch
        mapped = apply_mapping(result.frame, compiled).collect()
        ok = mapped["__reason"].is_null()
        failing = mapped.filter(~ok)
        details = explain_failures(result.frame.join(failing.select("source_row").lazy(), on="source_row",
                                                     how="semi"), compiled).collect()
        rejected = quarantine.from_reader(result.rejected, table)
    mapped_out = quarantine.from_mapping(failing.join(details, on=["source_file", "source_row"], how="left"), table)
    frame = mapped.filter(ok).select(*canonical.TABLES[table].field_names, "source_file", "source_row")
    return ReferenceRead(path.name, frame, quarantine.table([rejected, mapped_out]), result.rows_read)
