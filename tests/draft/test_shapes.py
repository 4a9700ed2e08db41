"""Date formats decided from the data; shapes of values counted column-wise."""

from __future__ import annotations

import polars as pl
import pytest

from migrate.draft import load_catalogue
from migrate.draft.shapes import column_stats, decide_dates, settle_ties, value_counts

CATALOGUE = load_catalogue()


def _stats(values: list[str]) -> object:
    return column_stats(pl.DataFrame({"c": values}), "c", CATALOGUE)


def _decide(values: list[str]) -> object:
    return decide_dates(value_counts(pl.DataFrame({"c": values}), "c"), CATALOGUE)


def test_a_day_over_12_decides_day_first() -> None:
    d = _decide(["01/02/2020", "25/12/2020", "03/04/2021"])
    assert d is not None and d.format == "%d/%m/%Y" and not d.ties and d.certain
    assert "1 has a day over 12, so not %m/%d/%Y" in d.why


def test_a_month_first_extract_is_read_month_first() -> None:
    d = _decide(["12/25/2020", "01/02/2020", "02/28/2021"])
    assert d is not None and d.format == "%m/%d/%Y" and d.certain


def test_no_value_over_12_is_a_tie_the_draft_states() -> None:
    d = _decide(["01/02/2020", "03/04/2021"])
    assert d is not None and d.format == "%d/%m/%Y" and d.ties == ("%m/%d/%Y",) and not d.certain
    assert "confirm with a date you know" in d.why


def test_other_columns_settle_a_tie() -> None:
    tied = _stats(["01/02/2020", "03/04/2021"])
    decided = _stats(["25/12/2020", "01/02/2020"])
    settled, _ = settle_ties([tied, decided])  # type: ignore[list-item]
    assert settled.dates is not None and settled.dates.format == "%d/%m/%Y" and not settled.dates.ties
    assert "other date columns" in settled.dates.why


def test_two_digit_years_are_flagged_and_not_read_as_year_45() -> None:
    d = _decide(["05/06/45", "25/12/01", "13/01/99"])
    assert d is not None and d.format == "%d/%m/%y" and d.two_digit_year and not d.certain
    assert "2045" in d.why


def test_date_times_and_unparseable_values_are_counted() -> None:
    d = _decide(["2022-09-01 10:00", "2022-09-02 11:30", "2022-13-45 09:00"])
    assert d is not None and d.kind == "datetime" and d.format == "%Y-%m-%d %H:%M"
    assert (d.parsed, d.total) == (2, 3) and "1 match no format" in d.why


@pytest.mark.parametrize(("values", "share", "expected"), [
    (["9991000003", "999 100 0011", "999-100-0038", "1234567890"], "nhs", 0.75),
    (["Y", "n", "Yes", "maybe"], "boolean", 0.75),
    (["OX1 1AB", "ox2 3cd", "nope"], "postcode", 0.6667),
    (["10:00", "9:30", "2359", "25:00"], "time", 0.75),
])
def test_value_shapes(values: list[str], share: str, expected: float) -> None:
    assert _stats(values).share(share) == expected  # type: ignore[attr-defined]


def test_coded_values_are_listed_with_counts_only_when_few() -> None:
    few = _stats(["A", "B", "A", ""])
    assert few.counts == (("A", 2), ("B", 1)) and few.filled == 3 and few.rows == 4  # type: ignore[attr-defined]
    many = _stats([str(i) for i in range(100)])
    assert many.counts == () and many.unique  # type: ignore[attr-defined]
