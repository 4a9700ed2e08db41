"""Survey an input folder for the drafter: each file's encoding, dialect and column shapes,
and which columns are keys that other files' columns reference.

Files are read by the project's own readers (``migrate.sources``), so the draft sees the
records a run will see: a record that does not split into the header's fields is counted,
not guessed at. Only the folder's top level is read, as ``files:`` globs are relative to
``--input``; HL7 v2 files are recognised and left to the shipped ``hl7v2`` profile.
"""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import polars as pl

from migrate.draft.catalogue import Catalogue
from migrate.draft.shapes import ColumnStats, column_stats
from migrate.draft.sniff import DialectGuess, EncodingGuess, detect_encoding, sniff_dialect
from migrate.errors import InputError
from migrate.sources.csv import CsvOptions, read_csv

PARQUET = (".parquet", ".pq")
KEY_SHARE = 0.99  # a column is key-like when this share of rows has a value and values repeat no more
REFERENCE_SHARE = 0.9  # a column references a key when this share of its values are among the key's


@dataclass(frozen=True)
class Reference:
    """Column ``column`` of one file holds values of key ``key`` of file ``target``."""

    column: str
    target: str
    key: str
    share: float


@dataclass
class FileSurvey:
    """One extract file as the drafter sees it."""

    name: str
    path: Path
    kind: str  # delimited, parquet or hl7v2
    encoding: EncodingGuess | None
    dialect: DialectGuess | None
    rows: int
    rejected: int  # records the reader could not split (wrong field count, bad bytes)
    columns: tuple[str, ...]
    stats: dict[str, ColumnStats] = field(default_factory=dict)
    keys: tuple[str, ...] = ()
    references: list[Reference] = field(default_factory=list)
    frame: pl.DataFrame | None = None


def _is_hl7(path: Path) -> bool:
    with path.open("rb") as fh:
        head = fh.read(16).lstrip(b"\x0b\xef\xbb\xbf\r\n ")
    return head.startswith((b"MSH|", b"FHS|", b"BHS|"))


def _survey_file(path: Path, catalogue: Catalogue, work: Path) -> FileSurvey:
    name = path.name
    if _is_hl7(path):
        return FileSurvey(name, path, "hl7v2", None, None, 0, 0, ())
    if path.suffix.lower() in PARQUET:
        frame = pl.read_parquet(path)
        frame = frame.select(pl.all().cast(pl.String))
        encoding = dialect = None
        kind, rejected = "parquet", 0
    else:
        encoding = detect_encoding(path)
        dialect = sniff_dialect(path, encoding.encoding)
        opts = CsvOptions(encoding.encoding.replace("-sig", ""), dialect.delimiter, dialect.quote_char, "replace")
        read = read_csv(path, name, opts, work / name)
        frame = read.frame.drop("source_file", "source_row").collect()
        kind, rejected = "delimited", read.rejected.height
    survey = FileSurvey(name, path, kind, encoding, dialect, frame.height + rejected, rejected, tuple(frame.columns),
                        frame=frame)
    survey.stats = {c: column_stats(frame, c, catalogue) for c in frame.columns}
    survey.keys = tuple(c for c, s in survey.stats.items() if _key_like(s))
    return survey


def _key_like(s: ColumnStats) -> bool:
    return (s.rows > 1 and s.dates is None and s.filled >= KEY_SHARE * s.rows
            and s.distinct >= KEY_SHARE * s.filled and s.share("nhs") < 0.5)


def _link(files: list[FileSurvey]) -> None:
    """Find, for every column of every file, the keys of other files it references."""
    for source in files:
        if source.frame is None:
            continue
        for column, stats in source.stats.items():
            if stats.filled == 0 or stats.dates is not None or stats.share("nhs") >= 0.5:
                continue
            values = source.frame.select(pl.col(column).str.strip_chars().alias("v")).filter(
                pl.col("v").is_not_null() & (pl.col("v") != ""))
            for target in files:
                if target is source or target.frame is None:
                    continue
                for key in target.keys:
                    known = target.frame.select(pl.col(key).str.strip_chars().alias("v")).unique()
                    hits = values.join(known, on="v", how="semi").height
                    if hits >= REFERENCE_SHARE * values.height:
                        source.references.append(Reference(column, target.name, key, round(hits / values.height, 4)))


def survey_folder(input_dir: Path, catalogue: Catalogue) -> tuple[list[FileSurvey], list[str]]:
    """Every file at the top level of ``input_dir`` surveyed, in name order, and the names
    of what was not read (sub-folders, hidden files). Exit 3 when the folder is missing or
    holds no file."""
    if not input_dir.is_dir():
        raise InputError(f"input folder not found: {input_dir}")
    entries = sorted(input_dir.iterdir(), key=lambda p: p.name)
    skipped = [p.name + ("/" if p.is_dir() else "") for p in entries if p.is_dir() or p.name.startswith(".")]
    paths = [p for p in entries if p.is_file() and not p.name.startswith(".") and p.stat().st_size > 0]
    if not paths:
        raise InputError(f"no extract files in {input_dir}")
    work = Path(tempfile.mkdtemp(prefix="handover-draft-"))
    try:
        files = [_survey_file(p, catalogue, work) for p in paths]
    finally:
        shutil.rmtree(work, ignore_errors=True)
    _link(files)
    return files, skipped
