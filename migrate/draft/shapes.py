"""Value shapes of a source column: what the values look like, computed column-wise.

``column_stats`` summarises one column of strings with polars expressions (no per-row
Python): blanks, distinct values, every distinct value with its count where there are few
(coded columns), and the share of values shaped like a date, a time, an NHS number
(Modulus 11), a true/false word, a number, a postcode, an ODS code, a phone number or a
list. ``decide_dates`` picks the date or date-time format that parses the most values
and says when the data cannot decide (day and month both 12 or less, two-digit years).

The drafter reads these to propose fields; ``handover check`` reads ``format_shares`` to
say which format would parse the values a profile's format does not. Values stay in
memory: what is shown to a person is decided by the caller (coded fields only).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from itertools import product

import polars as pl

from migrate.draft.catalogue import Catalogue
from migrate.identity.nhs_number import modulus11

MAX_CODES = 60  # a column with more distinct values than this is not treated as coded
SAMPLE_VALUES = 20_000  # distinct values a format is judged on (evenly spread, deterministic)
PROBE_VALUES = 200
PLAUSIBLE_YEARS = (1850, 2150)  # a date outside these years did not really parse (45 read as the year 45)
_TIME = r"^([01]?\d|2[0-3])[:.]?[0-5]\d(:[0-5]\d)?$"
_POSTCODE = r"^[A-Za-z]{1,2}\d[A-Za-z\d]? ?\d[A-Za-z]{2}$"
_ODS = r"^[A-Za-z]\d{5}$"
_PHONE = r"^(\+44|0)[\d ]{9,13}$"
_NUMBER = r"^-?\d+(\.\d+)?$"
# worth trying date formats on: three parts with a separator, or 6 to 8 digits (20221001)
_DATELIKE = r"^\d{1,4}[-/. ][0-9A-Za-z]{1,9}[-/. ]\d{2,4}|^\d{6,8}([ T]|$)"


@dataclass(frozen=True)
class FormatShare:
    """How many of a column's values one format parses."""

    format: str
    parsed: int
    total: int

    @property
    def share(self) -> float:
        return self.parsed / self.total if self.total else 0.0


@dataclass(frozen=True)
class DateDecision:
    """The format chosen for a date or date-time column, and why."""

    format: str
    kind: str  # date or datetime
    parsed: int
    total: int
    ties: tuple[str, ...]  # formats parsing exactly as many values, reading some differently
    two_digit_year: bool
    why: str

    @property
    def share(self) -> float:
        return self.parsed / self.total if self.total else 0.0

    @property
    def certain(self) -> bool:
        return not self.ties and not self.two_digit_year and self.parsed == self.total


@dataclass(frozen=True)
class ColumnStats:
    """The shape of one source column (module docstring). Shares are of non-blank values."""

    name: str
    rows: int
    filled: int
    distinct: int
    counts: tuple[tuple[str, int], ...]  # every distinct value and its rows, when distinct <= MAX_CODES
    dates: DateDecision | None
    shares: dict[str, float] = field(default_factory=dict)  # time, nhs, boolean, number, postcode, ods, phone, upper, lower, comma
    separators: dict[str, float] = field(default_factory=dict)  # list separator -> share of values holding it

    @property
    def unique(self) -> bool:
        """Every row has a value and no value repeats: a key."""
        return self.rows > 0 and self.filled == self.rows and self.distinct == self.rows

    def share(self, name: str) -> float:
        return self.shares.get(name, 0.0)


def _plausible(parsed: pl.Expr) -> pl.Expr:
    year = parsed.dt.year()
    return parsed.is_not_null() & year.is_between(*PLAUSIBLE_YEARS)


def _parse(values: pl.Expr, fmt: str, kind: str) -> pl.Expr:
    if kind == "date":
        return values.str.to_date(fmt, strict=False)
    return values.str.to_datetime(fmt, strict=False, time_unit="us")


def format_shares(counts: pl.DataFrame, formats: tuple[str, ...], kind: str) -> list[FormatShare]:
    """For ``counts`` (columns ``value``, ``count``: distinct non-blank values), the rows each
    of ``formats`` parses to a plausible date (``kind`` date or datetime), best first; ties
    keep the listed order. Vectorised: one parse per format over the distinct values."""
    total = int(counts["count"].sum()) if counts.height else 0
    if not total or not formats:
        return []
    v = pl.col("value")
    parsed = counts.select(
        [(pl.when(_plausible(_parse(v, f, kind))).then(pl.col("count")).otherwise(0)).sum().alias(str(i))
         for i, f in enumerate(formats)])
    shares = [FormatShare(f, int(parsed[str(i)][0]), total) for i, f in enumerate(formats)]
    return sorted(shares, key=lambda s: -s.parsed)


def candidate_formats(catalogue: Catalogue, kind: str) -> tuple[str, ...]:
    """The formats tried for a ``kind`` field: dates, or date-times (a date, a join and a time)."""
    if kind == "date":
        return catalogue.date_formats
    return tuple(f"{d}{j}{t}" for d, j, t in product(catalogue.date_formats, catalogue.datetime_joins,
                                                     catalogue.time_formats))


def _spread(counts: pl.DataFrame) -> pl.DataFrame:
    """At most SAMPLE_VALUES distinct values, evenly spread over their sorted order."""
    if counts.height <= SAMPLE_VALUES:
        return counts
    ordered = counts.sort("value")
    step = ordered.height / SAMPLE_VALUES
    return ordered[[int(i * step) for i in range(SAMPLE_VALUES)]]


def _swapped(fmt: str) -> str:
    return fmt.replace("%d", "\0").replace("%m", "%d").replace("\0", "%m")


def decide_dates(counts: pl.DataFrame, catalogue: Catalogue, kind: str | None = None) -> DateDecision | None:
    """The date (or date-time) format that parses the most of ``counts``' values, or None
    when no format parses half of them. ``kind`` None tries both and prefers date-times
    when they parse as many values (a time of day is information)."""
    sample = _spread(counts)
    probe = sample.head(PROBE_VALUES)  # most frequent values: formats parsing none of them are not tried on all
    best: DateDecision | None = None
    for k in ((kind,) if kind else ("datetime", "date")):
        tried = tuple(s.format for s in format_shares(probe, candidate_formats(catalogue, k), k) if s.parsed)
        shares = format_shares(sample, tried, k)
        if not shares or shares[0].share < 0.5:
            continue
        top = shares[0]
        ties = tuple(s.format for s in shares[1:] if s.parsed == top.parsed and s.format == _swapped(top.format))
        if best is None or top.parsed > best.parsed:
            best = _decision(top, k, ties, shares)
    return best


def _decision(top: FormatShare, kind: str, ties: tuple[str, ...], shares: list[FormatShare]) -> DateDecision:
    two_digit = "%y" in top.format
    parts = [f"{top.parsed:,} of {top.total:,} values parse as {top.format}"]
    swapped = next((s for s in shares if s.format == _swapped(top.format) and s.format != top.format), None)
    if ties:
        parts.append(f"no value has a day over 12, so {' and '.join((top.format, *ties))} read every value alike "
                     f"up to day and month: {top.format} assumed (UK); confirm with a date you know")
    elif swapped is not None and swapped.parsed < top.parsed:
        over = top.parsed - swapped.parsed
        parts.append(f"{over:,} {'has' if over == 1 else 'have'} a day over 12, so not {swapped.format}")
    if two_digit:
        parts.append("two-digit years: %y reads 00-68 as 2000-2068 and 69-99 as 1969-1999 (a birth year 45 "
                     "becomes 2045); ask for four-digit years, or check every date after the run")
    if top.parsed < top.total:
        parts.append(f"{top.total - top.parsed:,} match no format and will be quarantined (unparseable_date)")
    return DateDecision(top.format, kind, top.parsed, top.total, ties, two_digit, "; ".join(parts))


def settle_ties(stats: list[ColumnStats]) -> list[ColumnStats]:
    """One extract keeps one day-month order: a column whose values cannot decide between
    dd/mm and mm/dd takes the order other columns' values decided (a value over 12), and
    says so. Columns nothing decides keep their ties."""
    decided = {s.dates.format for s in stats if s.dates is not None and not s.dates.ties}
    settled = []
    for s in stats:
        d = s.dates
        if d is not None and d.ties:
            pick = d.format if d.format in decided else next((t for t in d.ties if t in decided), None)
            if pick is not None:
                why = (f"{d.parsed:,} of {d.total:,} values parse as {pick}; none has a day over 12, but other "
                       f"date columns of the extract decide {pick}")
                d = replace(d, format=pick, ties=(), why=why + d.why[d.why.find("; two-digit"):]
                            if "; two-digit" in d.why else why)
                s = replace(s, dates=d)
        settled.append(s)
    return settled


def value_counts(frame: pl.DataFrame, column: str) -> pl.DataFrame:
    """Distinct non-blank values of ``column`` (trimmed) with their rows: ``value``, ``count``,
    most frequent first, then by value (deterministic)."""
    v = pl.col(column).str.strip_chars()
    return (frame.lazy().select(v.alias("value")).filter(pl.col("value").is_not_null() & (pl.col("value") != ""))
            .group_by("value").agg(pl.len().cast(pl.Int64).alias("count"))
            .sort(["count", "value"], descending=[True, False]).collect())


def column_stats(frame: pl.DataFrame, column: str, catalogue: Catalogue) -> ColumnStats:
    """The shape of ``frame[column]`` (strings), see the module docstring."""
    counts = value_counts(frame, column)
    filled = int(counts["count"].sum()) if counts.height else 0
    distinct = counts.height
    shares: dict[str, float] = {}
    separators: dict[str, float] = {}
    if filled:
        v, n = pl.col("value"), pl.col("count")
        digits = v.str.replace_all(r"[\s-]", "")
        ten, agrees, _ = modulus11(digits, ((0, 999),))
        words = [w.upper() for w in (*catalogue.true_words, *catalogue.false_words)]
        tests = {
            "time": v.str.contains(_TIME), "nhs": ten & agrees, "boolean": v.str.to_uppercase().is_in(words),
            "number": v.str.contains(_NUMBER), "postcode": v.str.contains(_POSTCODE), "ods": v.str.contains(_ODS),
            "phone": v.str.contains(_PHONE), "comma": v.str.contains(","), "datelike": v.str.contains(_DATELIKE),
            "upper": v.str.contains(r"\p{Lu}") & ~v.str.contains(r"\p{Ll}"), "lower": v.str.contains(r"\p{Ll}"),
        }
        tests.update({f"sep:{s}": v.str.contains(s, literal=True) for s in catalogue.list_separators})
        row = counts.select([(pl.when(t).then(n).otherwise(0)).sum().alias(k) for k, t in tests.items()]).row(0)
        for key, hits in zip(tests, row, strict=True):
            share = round(int(hits) / filled, 4)
            if key.startswith("sep:"):
                separators[key[4:]] = share
            else:
                shares[key] = share
    dates = decide_dates(counts, catalogue) if filled and shares["datelike"] >= 0.5 else None
    listed = tuple((str(a), int(b)) for a, b in counts.iter_rows()) if distinct <= MAX_CODES else ()
    return ColumnStats(column, frame.height, filled, distinct, listed, dates, shares, separators)
