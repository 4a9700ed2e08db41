"""Pass 1 of the delimited reader: where each record starts and ends, how many fields it
has, and whether it can be split at all — decided as Python's ``csv`` module decides, but
vectorised in polars (no Python per line).

A file is scanned as physical lines (``line_no`` 0 is the header). A quote character opens
a quoted field only at the start of a field; inside one, a doubled quote is a literal quote
and line ends are content. A record is *clean* when every field is either unquoted without
quote characters or carriage returns, or quoted and followed directly by the delimiter or
the end of the record — the strict form polars' reader and Python's agree on. Anything
else (``"Bob" Smith``, ``5 ft 11"``, a bare CR outside quotes in an LF file) is a record
the readers split differently: it is reported as not clean and quarantined whole.

Each line is a function from the state it starts in (outside or inside a quoted field) to
the state it ends in. Lines without a quote character keep the state; the others are
evaluated for both starting states with anchored regular expressions (only those lines, in
a second scan). The state before each line then follows from the last line whose end state
does not depend on its start, and the parity of the "toggling" lines since.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from migrate.errors import InputError
from migrate.staging import compact

REPLACEMENT = "\ufffd"
# Separators for the line scan: a byte that does not occur in the file, so each physical
# line is one field. The first is almost always absent; the others are tried if not.
_LINE_SEPARATORS = ("\x1f", "\x1e", "\x1d", "\x1c", "\x01", "\x02", "\x03", "\x04", "\x05", "\x06", "\x07")
_CHUNK = 1 << 24
RANGE_LINES = 1_000_000  # lines of a file indexed at once (``record_ranges``)
_SCAN_LINES = 100_000  # lines read from the file at a time


@dataclass(frozen=True)
class Dialect:
    """A delimited file's single-byte (ASCII) delimiter and quote character."""

    delimiter: str = ","
    quote_char: str | None = '"'


def _hex(ch: str) -> str:
    """``ch`` as a regex escape both Python's ``re`` and Rust's ``regex`` read (``\\x2C``)."""
    if len(ch) != 1 or ord(ch) > 0x7F:
        raise ValueError(f"delimiter and quote character must be single ASCII characters, got {ch!r}")
    return f"\\x{ord(ch):02X}"


@dataclass(frozen=True)
class Grammar:
    """The regular expressions of one dialect, over a line with the delimiter appended (so
    every field, the last included, ends with the delimiter)."""

    dialect: Dialect

    @property
    def _parts(self) -> tuple[str, str, str, str]:
        d, q = _hex(self.dialect.delimiter), _hex(self.dialect.quote_char or '"')
        body = f"(?:[^{q}]|{q}{q})*"
        trail = f"(?:[^{d}{q}][^{d}]*)?"
        return d, q, body, trail

    @property
    def any_field(self) -> str:
        """One field as Python's csv reads it (closed, or a quoted field open at the end)."""
        d, q, body, trail = self._parts
        return f"{q}{body}{q}{trail}{d}|{q}{body}$|{trail}{d}"

    @property
    def _closed(self) -> str:
        d, q, body, trail = self._parts
        return f"(?:{q}{body}{q}{trail}|{trail}){d}"

    @property
    def _clean(self) -> str:
        d, q, body, _ = self._parts
        return f"(?:{q}{body}{q}|[^{d}{q}\\r]*){d}"

    @property
    def _open(self) -> str:
        _, q, body, _ = self._parts
        return f"{q}{body}$"

    @property
    def ends_open(self) -> str:
        """A line (entered outside quotes) whose last field is a quoted field still open."""
        return f"^(?:{self._closed})*{self._open}"

    @property
    def clean_line(self) -> str:
        """A line (entered outside quotes) made only of clean fields (the last may be open)."""
        return f"^(?:{self._clean})*(?:{self._open})?$"

    @property
    def clean_closed_line(self) -> str:
        """A whole record on one line, made only of clean fields (e.g. a header)."""
        return f"^(?:{self._clean})*$"

    @property
    def still_inside(self) -> str:
        """A line (entered inside a quoted field) that does not close it."""
        return f"^{self._parts[2]}$"

    @property
    def closing(self) -> str:
        """The part of a line (entered inside a quoted field) up to the end of that field."""
        d, q, body, trail = self._parts
        return f"^{body}{q}{trail}{d}"

    @property
    def clean_closing(self) -> str:
        """A line entered inside a quoted field that closes it cleanly, then only clean fields."""
        d, q, body, _ = self._parts
        return f"^{body}{q}{d}(?:{self._clean})*(?:{self._open})?$"


def line_scan(path: Path, separator: str) -> pl.LazyFrame:
    """Every physical line of a UTF-8 file, unsplit, with ``line_no`` (0 is the header).

    Line ends are LF (a CR before it is dropped); invalid UTF-8 becomes U+FFFD.
    """
    return (
        pl.scan_csv(
            path, has_header=False, separator=separator, quote_char=None, schema={"line": pl.String},
            infer_schema=False, empty_string_is_null=False, encoding="utf8-lossy", truncate_ragged_lines=False,
        )
        .with_row_index("line_no")
        .with_columns(pl.col("line_no").cast(pl.Int64), pl.col("line").fill_null(""))
    )


def line_separator(path: Path) -> str:
    """A line-scan separator that does not occur in ``path``: the unit separator, unless the
    file holds it (then the first control character it does not hold). A byte scan (memchr,
    several GB/s): polars does not always refuse a line with an extra separator — a last
    line holding one was read as blank — so its absence is checked, not assumed."""
    def holding(candidates: tuple[str, ...]) -> set[str]:
        found: set[str] = set()
        with path.open("rb") as fh:
            while chunk := fh.read(_CHUNK):
                found |= {c for c in candidates if c.encode() in chunk}
        return found

    if not holding(_LINE_SEPARATORS[:1]):
        return _LINE_SEPARATORS[0]
    present = holding(_LINE_SEPARATORS)
    for sep in _LINE_SEPARATORS:
        if sep not in present:
            return sep
    raise InputError(f"{path.name}: holds every control character; cannot be read as delimited text")


def _cheap_stats(lines: pl.LazyFrame, dialect: Dialect) -> pl.LazyFrame:
    """Per data line, what needs no regular expression: blank, bad bytes, and the field count
    and end state of a line without quote characters."""
    line = pl.col("line")
    special = line.str.contains("\r", literal=True)
    if dialect.quote_char:
        special = special | line.str.contains(dialect.quote_char, literal=True)
    fields = (line.str.count_matches(dialect.delimiter, literal=True) + 1).cast(pl.Int32)
    return lines.filter(pl.col("line_no") > 0).select(
        "line_no",
        (line == "").alias("blank"),
        line.str.contains(REPLACEMENT, literal=True).alias("bad_bytes"),
        line.str.contains("\r", literal=True).alias("has_cr"),
        special.alias("special"),
        # A plain line: entered outside, its fields; entered inside a quoted field, all content.
        fields.alias("n_out"), pl.lit(0, dtype=pl.Int32).alias("n_in"),
        pl.lit(False).alias("open_out"), pl.lit(True).alias("open_in"),
        (~line.str.contains("\r", literal=True)).alias("clean_out"), pl.lit(True).alias("clean_in"),
    )


def _special_stats(lines: pl.LazyFrame, dialect: Dialect) -> pl.LazyFrame:
    """The same figures for lines with a quote character or a CR, by the dialect's grammar."""
    if dialect.quote_char is None:  # no quoting: a CR is the only special character
        return lines.select("line_no", (pl.col("line").str.count_matches(dialect.delimiter, literal=True) + 1)
                            .cast(pl.Int32).alias("n_out"), pl.lit(0, dtype=pl.Int32).alias("n_in"),
                            pl.lit(False).alias("open_out"), pl.lit(False).alias("open_in"),
                            pl.lit(False).alias("clean_out"), pl.lit(False).alias("clean_in"))
    g = Grammar(dialect)
    text = pl.concat_str([pl.col("line"), pl.lit(dialect.delimiter)])
    inside = text.str.contains(g.still_inside)
    rest = text.str.replace(g.closing, "")
    return lines.select(
        "line_no",
        text.str.count_matches(g.any_field).cast(pl.Int32).alias("n_out"),
        pl.when(inside).then(0).otherwise(rest.str.count_matches(g.any_field)).cast(pl.Int32).alias("n_in"),
        text.str.contains(g.ends_open).alias("open_out"),
        (inside | rest.str.contains(g.ends_open)).alias("open_in"),
        text.str.contains(g.clean_line).alias("clean_out"),
        (inside | text.str.contains(g.clean_closing)).alias("clean_in"),
    )


def records(path: Path, dialect: Dialect, range_lines: int | None = None) -> tuple[pl.DataFrame, str]:
    """Pass 1, whole: one row per record after the header, in file order, and the line
    separator used (give it to ``record_texts`` and ``without_records``). The concatenation
    of ``record_ranges``: the same records whatever ``range_lines`` (None: one range).

    Columns: rec (1-based), first_line, nlines, nfields, unterminated (a quoted field still
    open at the end of the file), blank, bad_bytes (U+FFFD: bytes invalid in the encoding),
    clean (every field well formed, see the module docstring), has_cr.
    """
    separator = line_separator(path)
    return pl.concat(list(record_ranges(path, dialect, separator, range_lines))), separator


def record_ranges(path: Path, dialect: Dialect, separator: str,
                  range_lines: int | None = RANGE_LINES) -> Iterator[pl.DataFrame]:
    """Pass 1 a range of lines at a time: the record index (``records``' columns, ``rec``
    counting on across ranges) of consecutive ranges of about ``range_lines`` lines (None:
    the whole file at once), at least one frame, possibly empty.

    # memory: a range of lines and their figures (``RANGE_LINES``), not the whole file's: the
    # contacts file has 10.7M lines at 1M patients (an index of ~0.5 GB), 53M at 5M.

    Every range starts at the first line of a record, so it starts outside quotes: the
    state of each line follows from its own range alone. A range whose last record is
    still inside a quoted field at its end (a line end inside quotes, or an unclosed quote)
    hands that record's lines on to the next range; a record longer than a range makes the
    next range twice as long as the lines handed on, so no line is indexed more than a few
    times.
    """
    lines = line_scan(path, separator)
    pending: list[pl.DataFrame] = []
    held = carried = 0
    next_rec = 1
    chunk = min(range_lines, _SCAN_LINES) if range_lines is not None else _SCAN_LINES
    for batch in lines.collect_batches(chunk_size=chunk, maintain_order=True):
        pending.append(batch)
        held += batch.height
        while range_lines is not None and held > (need := max(range_lines, 2 * carried)):
            text = pl.concat(pending, rechunk=False) if len(pending) > 1 else pending[0]
            recs, carry_from = _index(text.head(need), dialect, next_rec, final=False)
            carry = text.slice(need).head(0) if carry_from is None else text.head(need).slice(carry_from)
            pending, carried = [carry, text.slice(need)], carry.height
            held = carried + held - need
            next_rec += recs.height
            if recs.height:
                yield recs
    # memory: the lines left over (or none)
    text = pl.concat(pending, rechunk=False) if len(pending) > 1 else (pending[0] if pending else lines.head(0).collect())
    yield _index(text, dialect, next_rec, final=True)[0]


def _index(lines: pl.DataFrame, dialect: Dialect, first_rec: int, final: bool) -> tuple[pl.DataFrame, int | None]:
    """The records of ``lines`` (consecutive lines, the first of them starting a record),
    numbered from ``first_rec``. Unless ``final``, a last record still inside a quoted field
    at the end of ``lines`` is left out and the position of its first line in ``lines``
    returned (it continues in the lines after them)."""
    # memory: one chunk of lines (``lines``) and its special lines
    stats = _cheap_stats(lines.lazy(), dialect).collect()
    if bool(stats["special"].any()):
        wanted = stats.filter(pl.col("special")).select("line_no")
        special = _special_stats(lines.join(wanted, on="line_no", how="semi", maintain_order="left").lazy(),
                                 dialect).collect()
        cols = ("n_out", "n_in", "open_out", "open_in", "clean_out", "clean_in")
        stats = stats.join(special, on="line_no", how="left", maintain_order="left", suffix="_q").with_columns(
            pl.coalesce(f"{c}_q", c).alias(c) for c in cols).drop(f"{c}_q" for c in cols)
    # The state after each line: set by the last line whose end does not depend on its
    # start (or "outside" at the first line), flipped by each toggling line since.
    fixed = pl.col("open_out") == pl.col("open_in")
    toggles = (pl.col("open_out") & ~pl.col("open_in")).cast(pl.Int64).cum_sum()
    stats = stats.with_columns(
        toggles.alias("_toggles"),
        pl.when(fixed).then(pl.col("open_out").cast(pl.Int64)).alias("_base"),
    ).with_columns(
        pl.when(fixed).then(pl.col("_toggles")).forward_fill().fill_null(0).alias("_toggles_at_base"),
        pl.col("_base").forward_fill().fill_null(0),
    ).with_columns(
        ((pl.col("_base") + pl.col("_toggles") - pl.col("_toggles_at_base")) % 2 == 1).alias("open_after"),
    ).with_columns(pl.col("open_after").shift(1, fill_value=False).alias("open_before"))
    inside = pl.col("open_before")
    per_line = stats.select(
        "line_no", "blank", "bad_bytes", "has_cr", "open_after",
        (~inside).cum_sum().alias("_rec"),
        pl.when(inside).then(pl.col("n_in")).otherwise(pl.col("n_out")).alias("_n"),
        pl.when(inside).then(pl.col("clean_in")).otherwise(pl.col("clean_out")).alias("_clean"),
    )
    recs = (
        per_line.group_by("_rec", maintain_order=True)
        .agg(
            pl.col("line_no").first().alias("first_line"), pl.len().cast(pl.Int64).alias("nlines"),
            pl.col("_n").sum().cast(pl.Int64).alias("nfields"), pl.col("open_after").last().alias("unterminated"),
            (pl.col("blank").first() & (pl.len() == 1)).alias("blank"), pl.col("bad_bytes").any(),
            pl.col("_clean").all().alias("clean"), pl.col("has_cr").any(),
        )
        .drop("_rec")
    )
    carry_from = None
    if not final and recs.height and bool(recs["unterminated"][-1]):
        carry_from = int(recs["first_line"][-1]) - int(lines["line_no"][0])
        recs = recs.head(recs.height - 1)
    return recs.with_columns(pl.int_range(first_rec, first_rec + pl.len(), dtype=pl.Int64).alias("rec")), carry_from


def record_texts(path: Path, separator: str, recs: pl.DataFrame, batch_lines: int | None = None) -> dict[int, str]:
    """The raw text of a few records (for quarantine), by record number; lines joined by LF.

    # memory: the file streams by ``batch_lines`` (default ``_SCAN_LINES``) lines at a time and
    # only the wanted lines are kept, copied out of their batch (``staging.compact``). Before:
    # the lines found kept every batch they came from: 4.9 GB for the contacts file at 5M
    # patients (its 3,001 bad records spread over the file; measured).
    """
    if recs.height == 0:
        return {}
    wanted = recs.select("rec", "first_line", "nlines").with_columns(
        pl.int_ranges("first_line", pl.col("first_line") + pl.col("nlines")).alias("line_no")
    ).explode("line_no").select("rec", pl.col("line_no").cast(pl.Int64))
    numbers = wanted.get_column("line_no").unique().sort()
    found: list[pl.DataFrame] = []
    for batch in line_scan(path, separator).collect_batches(chunk_size=batch_lines or _SCAN_LINES,
                                                             maintain_order=True):
        if batch.height == 0:
            continue
        lo, hi = int(batch["line_no"][0]), int(batch["line_no"][-1])
        first, end = numbers.search_sorted(lo, side="left"), numbers.search_sorted(hi, side="right")
        if end > first:
            # compacted: the kept lines alone would hold their batch's buffers (the whole file)
            found.append(compact(batch.filter(pl.col("line_no").is_in(numbers.slice(first, end - first).implode()))))
    if not found:
        return {}
    lines = (
        pl.concat(found).join(wanted, on="line_no", how="inner")
        .sort("line_no")
        .group_by("rec", maintain_order=True).agg(pl.col("line").str.join("\n"))
    )
    return dict(lines.iter_rows())


def without_records(path: Path, recs: pl.DataFrame, drop: pl.Series, target: Path) -> Path:
    """A copy of ``path`` where each record of ``drop`` is one blank line, so that the fields
    pass (polars' reader) still sees one row per record and never meets a malformed one.

    Copied byte for byte otherwise (CRLF inside quoted fields kept), line by line: only a
    file holding such a record takes this path, and the records dropped are few.
    """
    spans = dict(recs.filter(pl.col("rec").is_in(drop.implode())).select("first_line", "nlines").iter_rows())
    target.parent.mkdir(parents=True, exist_ok=True)
    skip = 0
    with path.open("rb") as src, target.open("wb") as dst:
        for line_no, line in enumerate(src):
            if skip:
                skip -= 1
                continue
            if line_no in spans:
                skip = spans[line_no] - 1
                dst.write(b"\n")
                continue
            dst.write(line)
    return target
