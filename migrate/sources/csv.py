"""Reading delimited text extracts into LazyFrames, one record per row, nothing lost.

polars' CSV reader is fast but forgiving: a record with too few fields is padded, one with
too many is cut, a blank line becomes a row of empty strings, a quote inside an unquoted
field or an unclosed quote at the end of a file shifts or stops it. A migration needs each
of those seen and quarantined, so a file is read in two vectorised passes:

1. *structure* (``records.py``): the file as physical lines, joined into records the way
   Python's ``csv`` module joins them, giving each record its number, field count, and
   whether it is *clean* (every field strictly quoted or unquoted);
2. *fields*: polars' CSV reader over the same file, whose rows align one-to-one with the
   records of pass 1. Records polars would split differently (not clean, or an unclosed
   quote at the end) are first replaced by blank lines in a work copy; the alignment is
   checked, and an error (exit 3) names the file if it ever fails.

Records with the wrong field count (``wrong_field_count``), that cannot be split
(``malformed_record``: a stray quote, a bare CR in an LF file) or with bytes undefined in
the declared encoding (``invalid_encoding``) become quarantine rows with their raw text;
blank lines are not rows.

Line ends: LF and CRLF are read as they are; a file whose lines end in a bare CR (old Mac
exports, some PAS tools) is recognised from its first MiB and read with every CR, LF or
CRLF as a line end. Files in a single-byte Windows encoding, and CR files, are first
transcoded to UTF-8 with LF line ends in the run's work folder.

An empty file (no bytes, a BOM, or only blank lines) has no header and no rows. A file
with content but a blank or unreadable first line is an input error (exit 3) naming it:
its records cannot be told apart from its header.
"""

from __future__ import annotations

import csv as pycsv
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl

from migrate.errors import InputError
from migrate.sources import records as record_index
from migrate.staging import compact
from migrate.sources.records import Dialect, Grammar, line_separator, record_ranges, record_texts, without_records

_TRANSCODE_CHUNK = 1 << 24
_SNIFF_BYTES = 1 << 20
_COUNT_ROWS = 1_000_000  # rows counted at a time (``_count``)
_BLANK_BYTES = b" \t\r\n\xef\xbb\xbf"


@dataclass(frozen=True)
class CsvOptions:
    """How a delimited file is encoded and quoted."""

    encoding: str = "utf-8"  # utf-8 (BOM tolerated), cp1252 or latin-1
    delimiter: str = ","
    quote_char: str | None = '"'
    on_encoding_error: str = "quarantine"  # or "replace": keep U+FFFD in the value

    @property
    def dialect(self) -> Dialect:
        return Dialect(self.delimiter, self.quote_char)


@dataclass(frozen=True)
class ReadResult:
    """One file read: its good records as strings, and the records it could not split."""

    frame: pl.LazyFrame  # source columns (String) + source_file + source_row
    rejected: pl.DataFrame  # source_file, source_row, reason_code, message, raw
    rows_read: int
    columns: tuple[str, ...]


def empty_rejected(source_file: str) -> pl.DataFrame:
    """A rejected-records frame with no rows."""
    return _rejected([], source_file)


def _rejected(rows: list[tuple[int, str, str, str]], source_file: str) -> pl.DataFrame:
    return pl.DataFrame(
        {
            "source_file": [source_file] * len(rows),
            "source_row": [r[0] for r in rows],
            "reason_code": [r[1] for r in rows],
            "message": [r[2] for r in rows],
            "raw": [r[3] for r in rows],
        },
        schema={"source_file": pl.String, "source_row": pl.Int64, "reason_code": pl.String,
                "message": pl.String, "raw": pl.String},
    )


def cr_line_ends(path: Path) -> bool:
    """Whether the file's lines end in a bare CR: more bare CRs than LFs in its first MiB."""
    with path.open("rb") as fh:
        head = fh.read(_SNIFF_BYTES)
    if head.endswith(b"\r"):  # a CRLF cut in two by the sample
        head = head[:-1]
    crlf = head.count(b"\r\n")
    return head.count(b"\r") - crlf > head.count(b"\n")


def transcode_to_utf8(path: Path, encoding: str, work_dir: Path, universal_newlines: bool = False) -> Path:
    """Copy a file as UTF-8 into ``work_dir`` (streamed in chunks); bytes undefined in
    ``encoding`` become U+FFFD (quarantined as ``invalid_encoding`` unless the profile says
    ``replace``). With ``universal_newlines`` every CR, LF and CRLF becomes LF."""
    work_dir.mkdir(parents=True, exist_ok=True)
    target = work_dir / (path.name + ".utf8")
    newline = None if universal_newlines else ""
    with path.open("r", encoding=encoding, errors="replace", newline=newline) as src, target.open(
        "w", encoding="utf-8", newline=""
    ) as dst:
        while chunk := src.read(_TRANSCODE_CHUNK):
            dst.write(chunk)
    return target


def _first_line(path: Path, opts: CsvOptions) -> tuple[str, bool]:
    """The header line as text (BOM and line end removed), and whether anything but blank
    lines follows it."""
    terminator = b"\r" if cr_line_ends(path) else b"\n"
    with path.open("rb") as fh:
        data = b""
        while terminator not in data and (chunk := fh.read(1 << 16)):
            data += chunk
        line, _, rest = data.partition(terminator)
        more = bool(rest.strip(_BLANK_BYTES)) or bool(fh.read(_SNIFF_BYTES).strip(_BLANK_BYTES))
    if not line.strip(_BLANK_BYTES):
        line = b""
    text = line.decode(opts.encoding, errors="replace").lstrip("\ufeff")
    return text.removesuffix("\r"), more


def read_header(path: Path, opts: CsvOptions) -> tuple[str, ...]:
    """The column names of a delimited file in any declared encoding (spaces and BOM removed).

    ``()`` for an empty file. InputError (exit 3) naming the file when it has content but
    its first line is blank or cannot be split into names (a stray quote, a bare CR).
    """
    try:
        text, more = _first_line(path, opts)
    except OSError as exc:
        raise InputError(f"{path}: cannot be read ({exc.strerror or type(exc).__name__})") from None
    if not text:
        if more:
            raise InputError(f"{path.name}: the first line is blank; the header (column names) must be the first "
                             "line of the file")
        return ()
    if opts.quote_char and not re.match(Grammar(opts.dialect).clean_closed_line, text + opts.delimiter) or (
            not opts.quote_char and "\r" in text):
        raise InputError(f"{path.name}: the header line cannot be split into column names (a quote character "
                         "inside a name, an unclosed quote or a bare carriage return)")
    quoting = {"quotechar": opts.quote_char} if opts.quote_char else {"quoting": pycsv.QUOTE_NONE}
    first = next(pycsv.reader([text], delimiter=opts.delimiter, **quoting), [])
    return tuple(name.strip() for name in first)


def read_csv(path: Path, source_file: str, opts: CsvOptions, work_dir: Path) -> ReadResult:
    """Read one delimited file; see the module docstring for what is checked.

    ``source_file`` is the name rows carry (the path relative to the input folder).
    Invariant: rows_read == frame rows + rejected rows, and blank lines are not rows.
    """
    if not path.is_file():
        raise InputError(f"input file not found: {path}")
    header = read_header(path, opts)
    if not header:
        empty = pl.LazyFrame(schema={"source_file": pl.String, "source_row": pl.Int64})
        return ReadResult(empty, _rejected([], source_file), 0, ())
    universal = cr_line_ends(path)
    text_path = path
    if opts.encoding != "utf-8" or universal:
        text_path = transcode_to_utf8(path, opts.encoding, work_dir, universal_newlines=universal)
    separator = line_separator(text_path)
    index = _RecordIndex.of(record_ranges(text_path, opts.dialect, separator, record_index.RANGE_LINES), len(header), opts)
    if index.rows_read == 0:
        schema = {**{c: pl.String() for c in dict.fromkeys(header)}, "source_row": pl.Int64(),
                  "source_file": pl.String()}
        return ReadResult(pl.LazyFrame(schema=schema), empty_rejected(source_file), 0, header)
    recs, rows_read = index.notable, index.rows_read
    nonblank = ~pl.col("blank")
    bad = recs.filter(pl.col("reason_code").is_not_null())
    texts = record_texts(text_path, separator, bad)
    rejected = _rejected(
        [
            (row, reason, _structure_message(source_file, row, reason, nf, len(header), unterminated, cr),
             texts.get(rec, ""))
            for rec, row, reason, nf, unterminated, cr in bad.select(
                "rec", "source_row", "reason_code", "nfields", "unterminated", "has_cr").iter_rows()
        ],
        source_file,
    )
    # Records polars would split differently are blanked in a work copy, so its rows stay
    # one per record; the rare file that needs it is copied, the others read in place.
    unsplittable = bad.filter(pl.col("reason_code").is_in(["malformed_record"]) | pl.col("unterminated"))["rec"]
    read_path = text_path
    if unsplittable.len():
        read_path = without_records(text_path, recs, unsplittable, work_dir / (path.name + ".clean"))
    if _count(read_path, header, opts) != index.records:
        raise InputError(f"{source_file}: the records of this file could not be aligned with their fields "
                         "(a reader defect: please report it with the file's structure, not its content)")
    # Records to drop (blank, or rejected above) are few: filter them out and renumber by
    # the blank lines before each record, rather than joining millions of row numbers.
    frame = _fields(read_path, header, opts)
    dropped = recs.filter(pl.col("reason_code").is_not_null() | ~nonblank)["rec"]
    blanks = recs.filter(~nonblank)["rec"]
    lazy = frame
    if dropped.len():
        lazy = lazy.filter(~pl.col("__rec").is_in(dropped.implode()))
    if blanks.len():
        lazy = lazy.with_columns(pl.col("__rec") - blanks_before(blanks, pl.col("__rec")))
    lazy = lazy.rename({"__rec": "source_row"})
    lazy = lazy.with_columns(pl.lit(source_file).alias("source_file"))
    return ReadResult(lazy, rejected, rows_read, header)


def blanks_before(blanks: pl.Series, rec: pl.Expr) -> pl.Expr:
    """How many of ``blanks`` (record numbers, sorted) are below each ``rec`` (Int64):
    ``pl.lit(blanks).search_sorted(rec)``, but per batch. Why: polars 2.1's streaming engine
    runs ``search_sorted`` as an in-memory fallback, so a file with a blank line was held
    whole while it was read (benchmarks/fallbacks.py); NumPy's ``searchsorted`` over each
    batch gives the same numbers and streams (elementwise)."""
    sorted_blanks = blanks.cast(pl.Int64).to_numpy()
    return rec.map_batches(lambda s: pl.Series(s.name, np.searchsorted(sorted_blanks, s.to_numpy(), side="left"),
                                               dtype=pl.Int64),
                           return_dtype=pl.Int64, is_elementwise=True)


@dataclass(frozen=True)
class _RecordIndex:
    """What the fields pass needs from pass 1: the number of records, of rows (records
    not blank), and the notable records — blank, or with a ``reason_code`` to quarantine —
    with their ``source_row`` (nulls for blank lines).

    # memory: the notable records only (sized by the file's faults); the index is built a
    # range of lines at a time (``records.record_ranges``), never whole.
    """

    records: int
    rows_read: int
    notable: pl.DataFrame

    @classmethod
    def of(cls, ranges: Iterator[pl.DataFrame], fields: int, opts: CsvOptions) -> _RecordIndex:
        nonblank = ~pl.col("blank")
        records = rows = 0
        notable = []
        for recs in ranges:
            recs = recs.with_columns(
                pl.when(nonblank).then(nonblank.cast(pl.Int64).cum_sum() + rows).alias("source_row"),
                pl.when(~nonblank).then(None)
                .when(pl.col("unterminated")).then(pl.lit("wrong_field_count"))
                .when(~pl.col("clean")).then(pl.lit("malformed_record"))
                .when(pl.col("nfields") != fields).then(pl.lit("wrong_field_count"))
                .when(pl.lit(opts.on_encoding_error == "quarantine") & pl.col("bad_bytes"))
                .then(pl.lit("invalid_encoding"))
                .alias("reason_code"),
            )
            records += recs.height
            rows += int(recs.select(nonblank.sum()).item())
            notable.append(compact(recs.filter(pl.col("reason_code").is_not_null() | pl.col("blank"))))
        return cls(records, rows, pl.concat(notable))


def _structure_message(source_file: str, row: int, reason: str, nfields: int, expected: int, unterminated: bool,
                       has_cr: bool) -> str:
    where = f"{source_file} row {row}"
    if reason == "invalid_encoding":
        return (f"{where}: bytes that are not valid in the file's declared encoding (declare the right encoding in "
                "the profile, e.g. cp1252, or on_encoding_error: replace to keep them as U+FFFD)")
    if unterminated:
        return f"{where}: unterminated quoted field at the end of the file (truncated record)"
    if reason == "malformed_record":
        why = ("a bare carriage return (CR) outside a quoted field" if has_cr else
               "a quote character inside an unquoted field, or text after a closing quote")
        return f"{where}: the record cannot be split into fields ({why}); the raw record is kept"
    return f"{where}: {nfields} fields where the header has {expected}"


def _scan(path: Path, header: tuple[str, ...], opts: CsvOptions, row_index: bool) -> pl.LazyFrame:
    """polars' reader over the records, every value a string, columns by position (a header
    may repeat or omit names; the first of each name is kept)."""
    return pl.scan_csv(
        path, has_header=False, skip_rows=1, schema={f"__c{i}": pl.String for i in range(len(header))},
        separator=opts.delimiter, quote_char=opts.quote_char, infer_schema=False, empty_string_is_null=False,
        truncate_ragged_lines=True, extra_columns="ignore", missing_columns="insert", encoding="utf8-lossy",
        raise_if_empty=False, row_index_name="__rec" if row_index else None, row_index_offset=1,
    )


def _fields(path: Path, header: tuple[str, ...], opts: CsvOptions) -> pl.LazyFrame:
    """Pass 2: polars' reader over the records, every value a string, with ``__rec``."""
    first: dict[str, int] = {}
    for i, name in enumerate(header):
        first.setdefault(name, i)
    return _scan(path, header, opts, row_index=True).select(
        pl.col("__rec").cast(pl.Int64), *(pl.col(f"__c{i}").alias(name) for name, i in first.items()))


def _count(path: Path, header: tuple[str, ...], opts: CsvOptions) -> int:
    """Rows polars' reader sees, one cheap column of each row streamed and counted.

    # memory: a batch of rows at a time. Not ``select(pl.len())``: polars' fast counting
    # path maps the whole file, whose pages then count in the process's RSS (4.4 GB for the
    # contacts file at 5M patients, the peak of the 5M ingest; measured).
    """
    first = _scan(path, header, opts, row_index=False).select(pl.first().is_null())
    return sum(batch.height for batch in first.collect_batches(chunk_size=_COUNT_ROWS, maintain_order=False))
