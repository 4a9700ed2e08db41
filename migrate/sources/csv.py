"""Reading delimited text extracts into LazyFrames, one record per row, nothing lost.

polars' CSV reader is fast but forgiving: a record with too few fields is padded, one with
too many is cut, a blank line becomes a row of empty strings, an unclosed quote at the end
of a file is an error. A migration needs each of those seen and quarantined, so a file is
read in two vectorised passes:

1. *structure*: the file as physical lines (no quoting), joined into records by quote
   parity, giving each record its number, its field count and whether it is blank;
2. *fields*: polars' CSV reader over the same file, whose rows align one-to-one with the
   records of pass 1 (checked; a file where they do not align is read by the exact but
   slow Python ``csv`` reader instead).

Records with the wrong field count, bytes invalid in the declared encoding or an
unterminated quote become quarantine rows with their raw text; blank lines are not rows.
Files in a single-byte Windows encoding are first transcoded to UTF-8 in the run's work
folder.
"""

from __future__ import annotations

import csv as pycsv
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from migrate.errors import InputError

# A separator that never occurs in text, so pass 1 sees each physical line as one field.
_LINE_SEP = "\x1f"
_REPLACEMENT = "\ufffd"
_TRANSCODE_CHUNK = 1 << 24


@dataclass(frozen=True)
class CsvOptions:
    """How a delimited file is encoded and quoted."""

    encoding: str = "utf-8"  # utf-8 (BOM tolerated), cp1252 or latin-1
    delimiter: str = ","
    quote_char: str | None = '"'
    on_encoding_error: str = "quarantine"  # or "replace": keep U+FFFD in the value


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


def transcode_to_utf8(path: Path, encoding: str, work_dir: Path) -> Path:
    """Copy a single-byte-encoded file as UTF-8 into ``work_dir`` (streamed in chunks)."""
    work_dir.mkdir(parents=True, exist_ok=True)
    target = work_dir / (path.name + ".utf8")
    with path.open("r", encoding=encoding, errors="replace", newline="") as src, target.open(
        "w", encoding="utf-8", newline=""
    ) as dst:
        while chunk := src.read(_TRANSCODE_CHUNK):
            dst.write(chunk)
    return target


def read_header(path: Path, opts: CsvOptions) -> tuple[str, ...]:
    """The column names of a delimited file in any declared encoding (spaces and BOM removed)."""
    with path.open("r", encoding=opts.encoding, errors="replace", newline="") as fh:
        head = fh.read(1 << 16)
    head = head.lstrip("\ufeff")
    quoting = {"quotechar": opts.quote_char} if opts.quote_char else {"quoting": pycsv.QUOTE_NONE}
    first = next(pycsv.reader(head.splitlines(keepends=True), delimiter=opts.delimiter, **quoting), [])
    return tuple(name.strip() for name in first)


def _line_scan(path: Path) -> pl.LazyFrame:
    """The data lines of a file (the header line is line 0 and left out), unsplit."""
    return (
        pl.scan_csv(
            path, has_header=False, separator=_LINE_SEP, quote_char=None, new_columns=["line"],
            infer_schema=False, empty_string_is_null=False, encoding="utf8-lossy", truncate_ragged_lines=True,
        )
        .with_row_index("line_no")
        .filter(pl.col("line_no") > 0)
        .with_columns(pl.col("line").fill_null(""))
    )


def _line_stats(path: Path, opts: CsvOptions) -> pl.DataFrame:
    """Per physical line: quote parity and separators outside quotes, counted both as if the
    line starts outside a quoted field and as if it starts inside one (streamed, no text kept).

    The regular expressions run only over lines that contain a quote character, in a second
    scan: polars evaluates both branches of a ``when``, and most lines have no quotes.
    """
    line = pl.col("line")
    if opts.quote_char:
        quotes = line.str.count_matches(opts.quote_char, literal=True)
        # Quotes that all come in adjacent pairs ("" empty fields, as polars and many
        # exporters write them) can hide no separator: only other quoted lines need a regex.
        pair = opts.quote_char * 2
        hides = line.str.replace_all(pair, "", literal=True).str.contains(opts.quote_char, literal=True)
    else:
        quotes, hides = pl.lit(0, dtype=pl.UInt32), pl.lit(False)
    stats = _line_scan(path).select(
        "line_no",
        quotes.alias("quotes"),
        hides.alias("hides"),
        line.str.count_matches(opts.delimiter, literal=True).cast(pl.Int32).alias("outside"),
        pl.lit(0, dtype=pl.Int32).alias("inside"),
        (line == "").alias("blank"),
        line.str.contains(_REPLACEMENT, literal=True).alias("bad_bytes"),
    ).collect(engine="streaming")
    if opts.quote_char is None or not bool(stats["hides"].any()):
        return stats.with_columns((pl.col("quotes") % 2 == 1).alias("odd")).drop("quotes", "hides")
    q = re.escape(opts.quote_char)
    # An escaped quote ("") splits a quoted field into adjacent quoted segments, so removing
    # every "..." segment removes exactly the quoted text, separators included.
    quoted = f"{q}[^{q}]*{q}"
    open_tail = f"{q}[^{q}]*$"  # a quote still open at the end of the line
    rest_of_field = f"^[^{q}]*{q}"  # up to the first quote, for a line that starts inside a field

    def outside_count(text: pl.Expr) -> pl.Expr:
        return text.str.replace_all(quoted, "").str.replace(open_tail, "").str.count_matches(
            opts.delimiter, literal=True).cast(pl.Int32)

    quoted_lines = stats.filter(pl.col("hides")).select("line_no")
    counts = (
        _line_scan(path).join(quoted_lines.lazy(), on="line_no", how="semi")
        .select(
            "line_no",
            outside_count(line).alias("q_outside"),
            pl.when(line.str.contains(rest_of_field))
            .then(outside_count(line.str.replace(rest_of_field, ""))).otherwise(0).cast(pl.Int32).alias("q_inside"),
        )
        .collect(engine="streaming")
    )
    return (
        stats.join(counts, on="line_no", how="left", maintain_order="left")
        .with_columns(
            (pl.col("quotes") % 2 == 1).alias("odd"),
            pl.coalesce("q_outside", "outside").alias("outside"),
            pl.coalesce("q_inside", "inside").alias("inside"),
        )
        .drop("quotes", "hides", "q_outside", "q_inside")
    )


def _records(path: Path, opts: CsvOptions) -> pl.DataFrame:
    """Pass 1: one row per record after the header.

    Columns: rec (1-based), first_line, nlines, nfields, unterminated, blank, bad_bytes.
    Records are physical lines joined while a quoted field is open (quote parity).
    """
    stats = _line_stats(path, opts)
    open_after = (pl.col("odd").cast(pl.Int64).cum_sum() % 2) == 1
    stats = stats.with_columns(open_after.alias("open_after"))
    stats = stats.with_columns(pl.col("open_after").shift(1, fill_value=False).alias("open_before"))
    count = pl.when(pl.col("open_before")).then(pl.col("inside")).otherwise(pl.col("outside"))
    if not stats["open_before"].any():
        recs = stats.select(
            pl.col("line_no").cast(pl.Int64).alias("first_line"), pl.lit(1, dtype=pl.Int64).alias("nlines"),
            (count + 1).alias("nfields"), pl.col("open_after").alias("unterminated"), "blank", "bad_bytes",
        )
    else:
        recs = (
            stats.with_columns((~pl.col("open_before")).cum_sum().alias("rec"), count.alias("count"))
            .group_by("rec", maintain_order=True)
            .agg(
                pl.col("line_no").first().cast(pl.Int64).alias("first_line"), pl.len().cast(pl.Int64).alias("nlines"),
                (pl.col("count").sum() + 1).alias("nfields"), pl.col("open_after").last().alias("unterminated"),
                (pl.col("blank").first() & (pl.len() == 1)).alias("blank"), pl.col("bad_bytes").any(),
            )
            .drop("rec")
        )
    return recs.with_columns(pl.int_range(1, pl.len() + 1, dtype=pl.Int64).alias("rec"))


def _record_texts(path: Path, recs: pl.DataFrame) -> dict[int, str]:
    """The raw text of a few records (for quarantine), by record number."""
    if recs.height == 0:
        return {}
    spans = [(rec, first + i) for rec, first, n in recs.select("rec", "first_line", "nlines").iter_rows()
             for i in range(n)]
    wanted = pl.DataFrame({"rec": [s[0] for s in spans], "line_no": [s[1] for s in spans]},
                          schema={"rec": pl.Int64, "line_no": pl.Int64})
    lines = (
        _line_scan(path).with_columns(pl.col("line_no").cast(pl.Int64))
        .join(wanted.lazy(), on="line_no", how="inner")
        .sort("line_no")
        .group_by("rec", maintain_order=True).agg(pl.col("line").str.join("\n"))
        .collect()
    )
    return dict(lines.iter_rows())


def _prefix_copy(path: Path, physical_lines: int, work_dir: Path) -> Path:
    """Copy the first ``physical_lines`` lines of ``path`` (to cut off an unterminated tail)."""
    work_dir.mkdir(parents=True, exist_ok=True)
    target = work_dir / (path.name + ".head")
    remaining = physical_lines
    with path.open("rb") as src, target.open("wb") as dst:
        while remaining > 0 and (chunk := src.read(_TRANSCODE_CHUNK)):
            n = chunk.count(b"\n")
            if n < remaining:
                dst.write(chunk)
                remaining -= n
                continue
            cut = -1
            for _ in range(remaining):
                cut = chunk.index(b"\n", cut + 1)
            dst.write(chunk[: cut + 1])
            remaining = 0
    return target


def read_csv(path: Path, source_file: str, opts: CsvOptions, work_dir: Path) -> ReadResult:
    """Read one delimited file; see the module docstring for what is checked.

    ``source_file`` is the name rows carry (the path relative to the input folder).
    Invariant: rows_read == frame rows + rejected rows, and blank lines are not rows.
    """
    if not path.is_file():
        raise InputError(f"input file not found: {path}")
    header = read_header(path, opts)
    text_path = path if opts.encoding == "utf-8" or not header else transcode_to_utf8(path, opts.encoding, work_dir)
    if not header:
        empty = pl.LazyFrame(schema={"source_file": pl.String, "source_row": pl.Int64})
        return ReadResult(empty, _rejected([], source_file), 0, ())
    recs = _records(text_path, opts)
    if recs.filter(~pl.col("blank")).height == 0:
        schema = {**{c: pl.String() for c in header}, "source_row": pl.Int64(), "source_file": pl.String()}
        return ReadResult(pl.LazyFrame(schema=schema), empty_rejected(source_file), 0, header)
    nonblank = ~pl.col("blank")
    check_bytes = opts.on_encoding_error == "quarantine" and opts.encoding == "utf-8"
    recs = recs.with_columns(
        pl.when(nonblank).then(nonblank.cast(pl.Int64).cum_sum()).alias("source_row"),
        pl.when(~nonblank).then(None)
        .when(pl.col("unterminated")).then(pl.lit("wrong_field_count"))
        .when(pl.col("nfields") != len(header)).then(pl.lit("wrong_field_count"))
        .when(pl.lit(check_bytes) & pl.col("bad_bytes")).then(pl.lit("invalid_encoding"))
        .alias("reason_code"),
    )
    rows_read = int(recs["source_row"].fill_null(0).max() or 0)  # type: ignore[arg-type]
    bad = recs.filter(pl.col("reason_code").is_not_null())
    texts = _record_texts(text_path, bad)
    rejected = _rejected(
        [
            (row, reason, _structure_message(source_file, row, reason, nf, len(header), unterminated), texts.get(rec, ""))
            for rec, row, reason, nf, unterminated in bad.select(
                "rec", "source_row", "reason_code", "nfields", "unterminated").iter_rows()
        ],
        source_file,
    )
    read_path = text_path
    tail_open = bool(recs.height and recs["unterminated"][-1])
    if tail_open:
        # polars cannot read past an unclosed quote at the end: read up to the record before it.
        read_path = _prefix_copy(text_path, int(recs["first_line"][-1]), work_dir)
    expected_height = recs.height - (1 if tail_open else 0)
    frame = _fields(read_path, header, opts)
    if _count(read_path, header, opts) != expected_height:
        return _read_exact(text_path, source_file, opts, header)
    # Records to drop (blank, or rejected above) are few: filter them out and renumber by
    # the blank lines before each record, rather than joining millions of row numbers.
    dropped = recs.filter(pl.col("reason_code").is_not_null() | ~nonblank)["rec"]
    blanks = recs.filter(~nonblank)["rec"]
    lazy = frame
    if dropped.len():
        lazy = lazy.filter(~pl.col("__rec").is_in(dropped.implode()))
    if blanks.len():
        lazy = lazy.with_columns(pl.col("__rec") - pl.lit(blanks).search_sorted(pl.col("__rec")).cast(pl.Int64))
    lazy = lazy.rename({"__rec": "source_row"})
    lazy = lazy.with_columns(pl.lit(source_file).alias("source_file"))
    return ReadResult(lazy, rejected, rows_read, header)


def _structure_message(source_file: str, row: int, reason: str, nfields: int, expected: int, unterminated: bool) -> str:
    where = f"{source_file} row {row}"
    if reason == "invalid_encoding":
        return f"{where}: bytes that are not valid UTF-8 (declare the file's encoding in the profile, e.g. cp1252)"
    if unterminated:
        return f"{where}: unterminated quoted field at the end of the file (truncated record)"
    return f"{where}: {nfields} fields where the header has {expected}"


def _fields(path: Path, header: tuple[str, ...], opts: CsvOptions) -> pl.LazyFrame:
    """Pass 2: polars' reader over the records, every value a string, with ``__rec``."""
    return pl.scan_csv(
        path, has_header=False, skip_rows=1, new_columns=list(header), separator=opts.delimiter,
        quote_char=opts.quote_char, infer_schema=False, empty_string_is_null=False,
        truncate_ragged_lines=True, encoding="utf8-lossy", row_index_name="__rec", row_index_offset=1,
    ).with_columns(pl.col("__rec").cast(pl.Int64))


def _count(path: Path, header: tuple[str, ...], opts: CsvOptions) -> int:
    """Rows polars' reader sees (its fast counting path: no row index, no columns)."""
    return int(pl.scan_csv(
        path, has_header=False, skip_rows=1, new_columns=list(header), separator=opts.delimiter,
        quote_char=opts.quote_char, infer_schema=False, truncate_ragged_lines=True, encoding="utf8-lossy",
    ).select(pl.len()).collect().item())


def _exact_records(path: Path, opts: CsvOptions) -> Iterator[list[str]]:
    with path.open("r", encoding="utf-8", errors="replace", newline="") as fh:
        first = fh.read(1)
        if first != "\ufeff":
            fh.seek(0)
        kwargs = {"quotechar": opts.quote_char, "quoting": pycsv.QUOTE_MINIMAL} if opts.quote_char else {
            "quoting": pycsv.QUOTE_NONE}
        yield from pycsv.reader(fh, delimiter=opts.delimiter, strict=False, **kwargs)


def _read_exact(path: Path, source_file: str, opts: CsvOptions, header: tuple[str, ...]) -> ReadResult:
    """The slow, exact reader for a file whose quoting confuses the fast path."""
    columns: dict[str, list[str]] = {c: [] for c in header}
    rows: list[int] = []
    bad: list[tuple[int, str, str, str]] = []
    row = 0
    records = _exact_records(path, opts)
    next(records, None)
    for fields in records:
        if not fields:
            continue
        row += 1
        text = opts.delimiter.join(fields)
        if len(fields) != len(header):
            bad.append((row, "wrong_field_count",
                        _structure_message(source_file, row, "wrong_field_count", len(fields), len(header), False), text))
        elif opts.on_encoding_error == "quarantine" and opts.encoding == "utf-8" and _REPLACEMENT in text:
            bad.append((row, "invalid_encoding",
                        _structure_message(source_file, row, "invalid_encoding", 0, 0, False), text))
        else:
            rows.append(row)
            for c, v in zip(header, fields):
                columns[c].append(v)
    frame = pl.DataFrame({**columns, "source_row": rows},
                         schema={**{c: pl.String for c in header}, "source_row": pl.Int64})
    lazy = frame.lazy().with_columns(pl.lit(source_file).alias("source_file"))
    return ReadResult(lazy, _rejected(bad, source_file), row, header)

