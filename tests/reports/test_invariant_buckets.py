"""Invariant 2 takes its set differences a hash bucket at a time (memory): the rows it finds
must be exactly those of one whole anti join and one whole group_by, for any hashes —
including repeats, values in one bucket only, and empty sides."""

from __future__ import annotations

import polars as pl
from hypothesis import given, settings
from hypothesis import strategies as st

from migrate.reports.invariants import BUCKETS, _anti, _repeated

# Small hash values collide often (repeats), large ones spread over every bucket.
hashes = st.one_of(st.integers(0, 20), st.integers(0, 2**64 - 1))
pairs = st.lists(st.tuples(hashes, hashes), max_size=60)


def frame(rows: list[tuple[int, int]], names: tuple[str, str]) -> pl.DataFrame:
    return pl.DataFrame(rows, schema={names[0]: pl.UInt64, names[1]: pl.UInt64}, orient="row")


def as_sorted(f: pl.DataFrame) -> list[tuple[int, ...]]:
    return sorted(f.iter_rows())


@settings(max_examples=200)
@given(left=pairs, right=pairs)
def test_bucketed_anti_join_finds_exactly_the_rows_one_anti_join_finds(left: list[tuple[int, int]],
                                                                      right: list[tuple[int, int]]) -> None:
    a, b = frame(left, ("p1", "p2")), frame(right, ("p1", "p2"))
    assert as_sorted(_anti(a, b, ["p1", "p2"])) == as_sorted(a.join(b, on=["p1", "p2"], how="anti"))


@settings(max_examples=200)
@given(rows=pairs)
def test_resources_written_twice_are_counted_as_one_group_by_counts_them(rows: list[tuple[int, int]]) -> None:
    resources = frame(rows, ("p1", "p2"))
    whole = resources.group_by("p1", "p2").len().filter(pl.col("len") > 1)
    assert as_sorted(_repeated(resources)) == as_sorted(whole)


def test_the_buckets_split_the_rows_and_lose_none() -> None:
    # one row in every bucket and one beyond: each anti join result keeps all of them
    rows = [(k, 7) for k in range(BUCKETS + 1)]
    a = frame(rows, ("p1", "p2"))
    assert as_sorted(_anti(a, a.head(0), ["p1", "p2"])) == rows
    assert _anti(a, a, ["p1", "p2"]).height == 0
