"""Invariant 2 spills its hash sets to bucket files as they stream and takes its set
differences, uniques and repeat counts a bucket at a time (memory): what it finds must be
exactly what whole anti joins and a whole group_by find, for any hashes — repeats, values in
one bucket only, empty sets — however the rows arrive in batches and whatever the number of
buckets."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import polars as pl
from hypothesis import given, settings
from hypothesis import strategies as st

from migrate.reports.invariants import _differences, _Spill

# Small hash values collide often (repeats), large ones spread over every bucket.
hashes = st.one_of(st.integers(0, 20), st.integers(0, 2**64 - 1))
pairs = st.lists(st.tuples(hashes, hashes), max_size=60)
flagged = st.lists(st.tuples(st.booleans(), hashes, hashes), max_size=60)


def frame(rows: list[tuple[int, int]], names: tuple[str, str]) -> pl.DataFrame:
    return pl.DataFrame(rows, schema={names[0]: pl.UInt64, names[1]: pl.UInt64}, orient="row")


def as_sorted(f: pl.DataFrame) -> list[tuple[int, ...]]:
    return sorted(f.iter_rows())


def spilled(spill: _Spill, name: str, f: pl.DataFrame, by: str, batch: int) -> None:
    for start in range(0, max(f.height, 1), batch):
        spill.add(name, f.slice(start, batch), by)


@settings(max_examples=150, deadline=None)
@given(carried=pairs, linked=pairs, named=pairs, written=st.lists(flagged, max_size=3),
       buckets=st.integers(1, 9), batch=st.integers(1, 25))
def test_the_bucketed_comparison_finds_exactly_what_whole_joins_find(
        tmp_path_factory: object, carried: list[tuple[int, int]], linked: list[tuple[int, int]],
        named: list[tuple[int, int]], written: list[list[tuple[bool, int, int]]], buckets: int, batch: int) -> None:
    folder = Path(tmp_path_factory.mktemp("spill"))  # type: ignore[attr-defined]
    spill = _Spill(folder, buckets)
    c, lk, n = frame(carried, ("r1", "r2")), frame(linked, ("r1", "r2")), frame(named, ("p1", "p2"))
    files = [pl.DataFrame(rows, schema={"exempt": pl.Boolean, "p1": pl.UInt64, "p2": pl.UInt64}, orient="row")
             for rows in written]
    spilled(spill, "carried", c, "r1", batch)
    spilled(spill, "linked", lk, "r1", batch)
    spilled(spill, "named", n, "p1", batch)
    for i, f in enumerate(files):
        spilled(spill, f"resources-{i}", f, "p1", batch)
    with ThreadPoolExecutor(max_workers=2) as pool:  # buckets on two threads, as fhir_output takes them
        n_carried, exempt, without, untraced, dangling, repeated = _differences(
            spill, [f"resources-{i}" for i in range(len(files))], pool)

    resources = pl.concat(files) if files else pl.DataFrame(schema={"exempt": pl.Boolean, "p1": pl.UInt64,
                                                                     "p2": pl.UInt64})
    assert n_carried == c.unique().height
    assert exempt == int(resources.get_column("exempt").sum())
    assert as_sorted(without) == as_sorted(c.unique().join(lk, on=["r1", "r2"], how="anti"))
    assert as_sorted(untraced) == as_sorted(resources.filter(~pl.col("exempt")).join(n, on=["p1", "p2"], how="anti")
                                            .select("p1", "p2").unique())
    assert as_sorted(dangling) == as_sorted(n.unique().join(resources, on=["p1", "p2"], how="anti"))
    assert as_sorted(repeated) == as_sorted(resources.group_by("p1", "p2").len().filter(pl.col("len") > 1))


def test_a_dropped_set_leaves_no_rows_and_no_files(tmp_path: Path) -> None:
    # a file read again by a JSON parse drops what its line heads spilled
    spill = _Spill(tmp_path, 4)
    spill.add("resources-0", pl.DataFrame({"exempt": [False, True], "p1": [1, 2], "p2": [3, 4]},
                                          schema={"exempt": pl.Boolean, "p1": pl.UInt64, "p2": pl.UInt64}), "p1")
    assert list(tmp_path.iterdir())
    spill.drop("resources-0")
    assert not list(tmp_path.iterdir())
    assert all(spill.bucket(["resources-0"], k, pl.Schema({"p1": pl.UInt64()})).height == 0 for k in range(4))
