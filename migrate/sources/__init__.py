"""Readers: extract files in, LazyFrames of source rows out.

Every row a reader yields carries ``source_file`` (its path relative to the input folder)
and ``source_row`` (1-based data row). Records that cannot even be split into fields come
back separately as ``rejected`` rows, so nothing read is lost.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from migrate.errors import ConfigError, InputError
from migrate.profile import Profile, TableSpec
from migrate.sources.csv import CsvOptions, ReadResult, read_csv, read_header
from migrate.sources.parquet import read_parquet, read_parquet_header

__all__ = ["InputFile", "ReadResult", "discover", "read_columns", "read_file"]

PARQUET_SUFFIXES = {".parquet", ".pq"}


@dataclass(frozen=True)
class InputFile:
    """One extract file and the canonical table it feeds."""

    path: Path
    name: str  # relative to the input folder, with forward slashes
    table: str

    @property
    def is_parquet(self) -> bool:
        return self.path.suffix.lower() in PARQUET_SUFFIXES


def discover(input_dir: Path, profile: Profile) -> list[InputFile]:
    """The files each table's globs match, in a stable order.

    Exit 3 when the folder is missing or a table's globs match nothing; exit 2 when one
    file would feed two tables (a profile whose globs overlap).
    """
    if not input_dir.is_dir():
        raise InputError(f"input folder not found: {input_dir}")
    found: list[InputFile] = []
    owner: dict[Path, str] = {}
    missing: list[str] = []
    overlaps: list[str] = []
    for table, spec in profile.tables.items():
        paths = sorted({p for pattern in spec.files for p in input_dir.glob(pattern) if p.is_file()})
        if not paths:
            missing.append(f"{table}: no file in {input_dir} matches {', '.join(spec.files)}")
        for p in paths:
            if p in owner:
                overlaps.append(f"{p.name} matches the files of both {owner[p]} and {table}")
                continue
            owner[p] = table
            found.append(InputFile(p, p.relative_to(input_dir).as_posix(), table))
    if overlaps:
        raise ConfigError(f"mapping profile {profile.path.name}: file patterns overlap", overlaps)
    if missing:
        raise InputError("input files not found", missing)
    return found


def csv_options(spec: TableSpec) -> CsvOptions:
    """The reader options a table's profile declares."""
    return CsvOptions(spec.encoding, spec.delimiter, spec.quote_char, spec.on_encoding_error)


def read_columns(f: InputFile, spec: TableSpec) -> tuple[str, ...]:
    """The column names of a file, without reading its rows."""
    if f.is_parquet:
        return read_parquet_header(f.path)
    return read_header(f.path, csv_options(spec))


def read_file(f: InputFile, spec: TableSpec, work_dir: Path) -> ReadResult:
    """Read one extract file as its table's profile says."""
    if f.is_parquet:
        return read_parquet(f.path, f.name)
    return read_csv(f.path, f.name, csv_options(spec), work_dir)
