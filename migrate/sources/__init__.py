"""Readers: extract files in, LazyFrames of source rows out.

Every row a reader yields carries ``source_file`` (its path relative to the input folder)
and ``source_row`` (1-based data row, or message index for HL7). Records that cannot even
be split into fields come back separately as ``rejected`` rows, so nothing read is lost.

A delimited or Parquet file feeds one canonical table; an HL7 v2 file feeds every table
whose events its messages carry, so it is read once and its messages routed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from migrate.canonical import REFERENCE_TABLES
from migrate.errors import ConfigError, InputError
from migrate.profile import Profile, TableSpec
from migrate.sources.csv import CsvOptions, ReadResult, read_csv, read_header
from migrate.sources.parquet import read_parquet, read_parquet_header

__all__ = ["InputFile", "ReadResult", "csv_options", "discover", "read_columns", "read_file"]

PARQUET_SUFFIXES = {".parquet", ".pq"}


@dataclass(frozen=True)
class InputFile:
    """One extract file, the profile that reads it and the canonical table(s) it feeds."""

    path: Path
    name: str  # relative to the input folder, with forward slashes
    profile: Profile
    tables: tuple[str, ...]

    @property
    def table(self) -> str:
        """The table a delimited or Parquet file feeds (the first, for an HL7 file)."""
        return self.tables[0]

    @property
    def label(self) -> str:
        """The tables it feeds, for reports (e.g. ``patients`` or ``patients+referrals``)."""
        return "+".join(self.tables)

    @property
    def kind(self) -> str:
        """hl7v2, parquet or delimited."""
        fmt = self.profile.tables[self.table].format
        if fmt != "auto":
            return fmt
        return "parquet" if self.path.suffix.lower() in PARQUET_SUFFIXES else "delimited"

    @property
    def is_parquet(self) -> bool:
        return self.kind == "parquet"

    def spec(self, table: str | None = None) -> TableSpec:
        """The profile's spec for ``table`` (default: the file's first table)."""
        return self.profile.tables[table or self.table]


def discover(input_dir: Path, profiles: Profile | Sequence[Profile]) -> list[InputFile]:
    """The files each profile's table globs match, in a stable order (profile, then name).

    Exit 3 when the folder is missing or a table's globs match nothing; exit 2 when one
    file would feed two tables that are not both HL7, or two profiles.
    """
    if not input_dir.is_dir():
        raise InputError(f"input folder not found: {input_dir}")
    profiles = [profiles] if isinstance(profiles, Profile) else list(profiles)
    found: list[InputFile] = []
    owner: dict[Path, str] = {}
    missing: list[str] = []
    overlaps: list[str] = []
    for profile in profiles:
        matched: dict[Path, list[str]] = {}
        for table, spec in profile.tables.items():
            if table in REFERENCE_TABLES:
                continue  # a file given on the command line (--target-index, …), not part of the extract
            paths = sorted({p for pattern in spec.files for p in input_dir.glob(pattern) if p.is_file()})
            if not paths:
                missing.append(f"{profile.name}: {table}: no file in {input_dir} matches {', '.join(spec.files)}")
            for p in paths:
                matched.setdefault(p, []).append(table)
        for p in sorted(matched):
            tables = matched[p]
            if p in owner:
                overlaps.append(f"{p.name} matches files of both {owner[p]} and {profile.name}")
                continue
            if len(tables) > 1 and any(profile.tables[t].format != "hl7v2" for t in tables):
                overlaps.append(f"{p.name} matches the files of {', '.join(tables)} in {profile.name}")
                continue
            owner[p] = profile.name
            found.append(InputFile(p, p.relative_to(input_dir).as_posix(), profile, tuple(tables)))
    if overlaps:
        raise ConfigError("mapping profile file patterns overlap", overlaps)
    if missing:
        raise InputError("input files not found", missing)
    return found


def csv_options(spec: TableSpec) -> CsvOptions:
    """The reader options a table's profile declares."""
    return CsvOptions(spec.encoding, spec.delimiter, spec.quote_char, spec.on_encoding_error)


def read_columns(f: InputFile) -> tuple[str, ...] | None:
    """The column names of a delimited or Parquet file, without reading its rows (None for
    HL7, whose fields are addressed by path, not by header)."""
    if f.kind == "hl7v2":
        return None
    if f.is_parquet:
        return read_parquet_header(f.path)
    return read_header(f.path, csv_options(f.spec()))


def read_file(f: InputFile, work_dir: Path) -> ReadResult:
    """Read one delimited or Parquet extract file as its table's profile says."""
    if f.is_parquet:
        return read_parquet(f.path, f.name)
    return read_csv(f.path, f.name, csv_options(f.spec()), work_dir)
