"""A table sunk from staged parts has the same bytes however its parts were chunked in memory.

Polars writes a Parquet row group per in-memory chunk unless told a size, a collected frame's
chunks follow thread timing, and the streaming sink that reads the parts back splits its pages
where their row groups end: two 200k runs of the same extract wrote ``lineage.parquet`` with
the same rows and different bytes. ``staging.write_part`` fixes the parts' row groups.
"""

from __future__ import annotations

import hashlib
import random
import uuid
from pathlib import Path

import polars as pl
import pyarrow.parquet as pq

from migrate.outputs import ROW_GROUP_ROWS
from migrate.staging import Parts, RangeBuckets, sink, sink_parts

ROWS = 700_000  # more than two row groups of the sunk table
PART_ROWS = 250_000


def _lineage_like(seed: int) -> pl.DataFrame:
    """Source rows with resource ids as the FHIR writer makes them (UUIDs), a quarter null
    (rows that became no resource)."""
    rng = random.Random(seed)
    ids = [str(uuid.UUID(int=rng.getrandbits(128))) for _ in range(ROWS)]
    return pl.DataFrame({"source_row": range(ROWS),
                         "fhir_id": [None if rng.random() < 0.25 else i for i in ids]})


def _chunked(frame: pl.DataFrame, rng: random.Random) -> pl.DataFrame:
    """``frame``'s rows in three in-memory chunks cut at random: what a parallel collect gives."""
    cuts = sorted(rng.sample(range(1, frame.height), 2))
    bounds = [0, *cuts, frame.height]
    return pl.concat([frame.slice(a, b - a) for a, b in zip(bounds, bounds[1:])], rechunk=False)


def _sunk_bytes(frame: pl.DataFrame, tmp: Path, chunking: int) -> bytes:
    rng = random.Random(chunking)
    parts = Parts(tmp / f"parts-{chunking}")
    try:
        for offset in range(0, frame.height, PART_ROWS):
            parts.add(_chunked(frame.slice(offset, PART_ROWS), rng))
        out = sink(parts.scan(), tmp / f"table-{chunking}.parquet")
    finally:
        parts.close()
    return out.read_bytes()


def test_a_table_sunk_from_parts_has_the_same_bytes_whatever_their_chunks(tmp_path: Path) -> None:
    frame = _lineage_like(20221001)
    digests = {hashlib.sha256(_sunk_bytes(frame, tmp_path, chunking)).hexdigest() for chunking in range(4)}
    assert len(digests) == 1
    assert pl.read_parquet(tmp_path / "table-0.parquet").equals(frame)


def test_staged_parts_have_fixed_row_groups(tmp_path: Path) -> None:
    frame = _lineage_like(7).head(ROW_GROUP_ROWS + 1000)
    parts = Parts(tmp_path / "parts")
    buckets = RangeBuckets(tmp_path / "buckets", "source_row", pl.Series("source_row", [], dtype=pl.Int64))
    try:
        chunked = _chunked(frame, random.Random(1))
        assert chunked.n_chunks() == 3
        parts.add(chunked)
        buckets.add(chunked)
        for path in (parts.paths[0], buckets.parts[0][0]):
            meta = pq.ParquetFile(path).metadata
            assert [meta.row_group(i).num_rows for i in range(meta.num_row_groups)] == [ROW_GROUP_ROWS, 1000]
    finally:
        parts.close()
        buckets.close()


def test_a_plan_written_in_parts_has_the_bytes_of_its_rows(tmp_path: Path) -> None:
    """``sink_parts`` (how the run folder's cohorts, flags and sharing entries are written):
    a plan whose batches follow its inputs' chunks (here a join and a sort over randomly
    chunked frames) gives one file, the same bytes each time, holding the plan's rows."""
    frame = _lineage_like(11)
    digests, rows = set(), set()
    for chunking in range(3):
        rng = random.Random(chunking)
        left = _chunked(frame, rng).lazy()
        right = _chunked(frame.select("source_row", (pl.col("source_row") % 7).alias("week")), rng).lazy()
        plan = left.join(right, on="source_row", how="left").sort("week", "source_row")
        path = tmp_path / f"plan-{chunking}.parquet"
        rows.add(sink_parts(plan, path, tmp_path / f"work-{chunking}"))
        digests.add(hashlib.sha256(path.read_bytes()).hexdigest())
        assert not (tmp_path / f"work-{chunking}").exists()  # the batches are removed
    assert len(digests) == 1 and rows == {ROWS}
    expected = frame.with_columns((pl.col("source_row") % 7).alias("week")).sort("week", "source_row")
    assert pl.read_parquet(tmp_path / "plan-0.parquet").equals(expected)
