"""Comparison building blocks checked against a plain reference implementation."""

from __future__ import annotations

from datetime import date

import polars as pl
from hypothesis import given, settings as hsettings, strategies as st
from rapidfuzz.distance import DamerauLevenshtein

from migrate.identity.compare import _date_edits

DATES = st.one_of(st.none(), st.dates(min_value=date(1900, 1, 1), max_value=date(2030, 12, 31)))


@hsettings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(DATES, DATES), min_size=1, max_size=30))
def test_birth_date_edits_are_the_damerau_levenshtein_distance_of_the_digits(
        pairs: list[tuple[date | None, date | None]]) -> None:
    """0 equal, 1 one digit changed or two adjacent digits swapped (of YYYYMMDD), 2 more,
    null when either is missing — what the one_digit level reads."""
    a = pl.Series([p[0] for p in pairs], dtype=pl.Date)
    b = pl.Series([p[1] for p in pairs], dtype=pl.Date)
    expected = [None if x is None or y is None else min(2, DamerauLevenshtein.distance(
        x.strftime("%Y%m%d"), y.strftime("%Y%m%d"))) for x, y in pairs]
    assert _date_edits(a, b).to_list() == expected


def test_birth_date_edits_near_misses() -> None:
    a = pl.Series([date(1941, 2, 11)] * 4, dtype=pl.Date)
    b = pl.Series([date(1941, 2, 17), date(1914, 2, 11), date(1941, 11, 2), date(1941, 2, 11)], dtype=pl.Date)
    assert _date_edits(a, b).to_list() == [1, 1, 2, 0]
