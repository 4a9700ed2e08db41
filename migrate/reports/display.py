"""Identifiers and dates as people read them, for the human-facing reports only.

NHS numbers are shown 3-3-4 (``999 810 2758``), as NHS guidance displays them so they can
be read aloud and copied without error; dates as dd/mm/yyyy. Machine outputs (the CSV,
JSON and Parquet files) keep the raw values: ten digits, ISO dates. Only a value that is
exactly ten ASCII digits is grouped, so a number given in another shape (kept "as given"
to trace it) and a pseudonymised token pass through unchanged.
"""

from __future__ import annotations

import re
from datetime import date, datetime

import polars as pl

_NHS = r"^([0-9]{3})([0-9]{3})([0-9]{4})$"
_NHS_IN_TEXT = re.compile(r"(?<![0-9])([0-9]{3})([0-9]{3})([0-9]{4})(?![0-9])")
# An ISO date standing alone (not part of a longer number or a timestamp's date).
_ISO_DATE = r"(^|[^0-9-])([0-9]{4})-([0-9]{2})-([0-9]{2})([^0-9T-]|$)"


def nhs_number_expr(column: str) -> pl.Expr:
    """Column ``column`` with every ten-digit value grouped 3-3-4; other values unchanged."""
    return pl.col(column).cast(pl.String).str.replace(_NHS, "${1} ${2} ${3}").alias(column)


def dates_in_text_expr(column: str) -> pl.Expr:
    """Column ``column`` with ISO dates (2022-10-01) in its text written dd/mm/yyyy (01/10/2022)."""
    # Applied twice: two dates separated by one character share that character in the pattern.
    text = pl.col(column).cast(pl.String)
    for _ in range(2):
        text = text.str.replace_all(_ISO_DATE, "${1}${4}/${3}/${2}${5}")
    return text.alias(column)


def nhs_number(value: object) -> str:
    """A ten-digit NHS number as 3-3-4; anything else as its text (empty for None)."""
    text = "" if value is None else str(value)
    return re.sub(_NHS, r"\1 \2 \3", text)


def nhs_numbers_in_text(value: object) -> str:
    """Every free-standing ten-digit number in ``value``'s text grouped 3-3-4."""
    return _NHS_IN_TEXT.sub(r"\1 \2 \3", "" if value is None else str(value))


def day_first(value: date | str | None) -> str:
    """A date (or ISO date text) as dd/mm/yyyy; empty for None."""
    if value is None:
        return ""
    parsed = value if isinstance(value, date) else date.fromisoformat(str(value)[:10])
    return f"{parsed.day:02d}/{parsed.month:02d}/{parsed.year:04d}"


def timestamp(value: str | None) -> str:
    """An ISO timestamp as 'dd/mm/yyyy HH:MM' with its zone (UTC when +00:00); empty for None."""
    if not value:
        return ""
    moment = datetime.fromisoformat(value)
    offset = moment.utcoffset()
    zone = "" if offset is None else (" UTC" if not offset else moment.strftime(" UTC%z"))
    return f"{day_first(moment.date())} {moment:%H:%M}{zone}"
