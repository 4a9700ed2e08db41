"""Elementwise stand-ins for in-memory fallbacks of the streaming engine (migrate/streamexpr.py,
migrate/sources/csv.py ``blanks_before``): the same values as the expressions they replace,
and no in-memory fallback node in a streamed plan."""

from __future__ import annotations

import re

import polars as pl
from hypothesis import given, settings as hsettings, strategies as st

from migrate.fhir.options import PRIORITY_RANK
from migrate.sharing import _SOURCE_RANK, SCOPE_OF_KIND
from migrate.sources.csv import blanks_before
from migrate.streamexpr import mapped

FALLBACK = 'fillcolor="0.0 0.3 1.0"'  # the streaming engine's "in-memory engine fallback" node
CASES = [(SCOPE_OF_KIND, None, pl.String()), (_SOURCE_RANK, 0, pl.Int64()), (PRIORITY_RANK, -1, pl.Int64()),
         (PRIORITY_RANK, 0, pl.Int64()), ({"a": "x", "b": None}, "d", pl.String()), ({}, 3, pl.Int64())]


def _fallbacks(lf: pl.LazyFrame) -> int:
    return len(re.findall(FALLBACK, lf.show_graph(engine="streaming", plan_stage="physical", raw_output=True) or ""))


def _values(keys: list[str]) -> st.SearchStrategy[list[str | None]]:
    return st.lists(st.one_of(st.none(), st.sampled_from(keys or ["k"]), st.text(max_size=4)), max_size=60)


@hsettings(max_examples=60, deadline=None)
@given(st.data())
def test_mapped_is_replace_strict(data: st.DataObject) -> None:
    for mapping, default, dtype in CASES:
        values = data.draw(_values(list(mapping)))
        frame = pl.LazyFrame({"v": pl.Series("v", values, dtype=pl.String)})
        want = frame.select(pl.col("v").replace_strict(mapping or {"\0": default}, default=default,
                                                       return_dtype=dtype)).collect()
        got = frame.select(mapped(pl.col("v"), mapping, default, dtype).alias("v"))
        assert got.collect(engine="streaming").equals(want)
        assert got.collect().equals(want)


def test_mapped_streams() -> None:
    frame = pl.LazyFrame({"v": ["routine", None, "urgent"], "w": [1, 2, 3]})
    assert _fallbacks(frame.with_columns(pl.col("v").replace_strict(PRIORITY_RANK, default=-1))) == 1
    assert _fallbacks(frame.with_columns(mapped(pl.col("v"), PRIORITY_RANK, -1, pl.Int64()))) == 0


@hsettings(max_examples=80, deadline=None)
@given(st.lists(st.integers(0, 500), unique=True, max_size=40), st.lists(st.integers(0, 600), max_size=80))
def test_blanks_before_is_search_sorted(blank: list[int], recs: list[int]) -> None:
    blanks = pl.Series("rec", sorted(blank), dtype=pl.Int64)
    frame = pl.LazyFrame({"__rec": pl.Series(recs, dtype=pl.Int64)})
    want = frame.select(pl.col("__rec") - pl.lit(blanks).search_sorted(pl.col("__rec")).cast(pl.Int64)).collect()
    got = frame.select(pl.col("__rec") - blanks_before(blanks, pl.col("__rec")))
    assert got.collect(engine="streaming").equals(want)
    assert got.collect().equals(want)
    assert _fallbacks(got) == 0
