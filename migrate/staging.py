"""Staged Parquet: tables larger than memory, written in range parts and handled a part at a time.

Why: at a million patients the contacts table (10.7M rows) and lineage (18M rows) each
need several GB in memory, and twice that to sort. A step that needs every row of one key
together (each contact key's updates, applied in order) or one global order (lineage by
file and row) writes its rows into **range buckets** of that order instead — every row of
bucket *i* sorts before every row of bucket *i + 1* — and then handles one bucket at a
time. The peak is one bucket; concatenating the buckets' results in bucket order is the
same as handling the whole table at once (the invariant the tests hold it to).

``RangeBuckets``: boundaries (the sorted values where a new bucket starts) and a folder;
``add`` splits a frame's rows by the value of ``column``; ``read`` gives one bucket's rows
in the order they were added. ``boundaries`` picks the boundaries from a sample of values.
``sink`` writes parts (files, in order) as one Parquet file without holding them.
"""

from __future__ import annotations

import functools
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pyarrow.parquet as pq

# ROW_GROUP_ROWS: rows per row group of a table written by ``sink`` or ``outputs.write_parquet``,
# and of a staged part (``write_part``)
from migrate.outputs import ROW_GROUP_ROWS, write_atomic

BUCKET_ROWS = 1_000_000  # rows per bucket aimed at: ~0.2-0.5 GB of canonical rows in memory at once
SAMPLE_PER_BUCKET = 1_000  # values sampled per bucket to place the boundaries
PART = "__bucket"
HASH_ROWS = 4_000_000  # hashes sorted in memory at once (``repeated_hashes``): 32 MB
HASH_PARTS = 64  # files a larger column's hashes are split into (a power of two)


def boundaries(values: pl.Series, rows: int, bucket_rows: int | None = None) -> pl.Series:
    """Sorted distinct values at which buckets start (the first bucket takes everything
    below the first boundary, nulls included), so ``rows`` rows make buckets of about
    ``bucket_rows``. ``values``: the sort column of all rows, or a sample of it."""
    distinct = values.drop_nulls().unique().sort()
    buckets = max(1, -(-rows // (bucket_rows or BUCKET_ROWS)))
    if buckets == 1 or distinct.len() < 2:
        return distinct.clear()
    step = distinct.len() / buckets
    picks = sorted({int(step * i) for i in range(1, buckets)})
    return distinct.gather([p for p in picks if 0 < p < distinct.len()])


def sample(frame: pl.LazyFrame, column: str, rows: int, bucket_rows: int | None = None) -> pl.Series:
    """Every n-th value of ``column`` (in order), about ``SAMPLE_PER_BUCKET`` per bucket of
    ``rows`` rows: enough to place ``boundaries`` without holding (or sorting) the column.
    The boundaries only decide how rows are split; the result of a bucketed step is the
    same whatever they are."""
    buckets = max(1, -(-rows // (bucket_rows or BUCKET_ROWS)))
    every = max(1, rows // (buckets * SAMPLE_PER_BUCKET))
    # memory: about ``SAMPLE_PER_BUCKET`` values per bucket
    return frame.select(pl.col(column).gather_every(every)).collect(engine="streaming").to_series()


def key_ranges(frame: pl.LazyFrame, column: str, rows_per_range: int) -> list[tuple[Any, Any]]:
    """``[low, high)`` ranges of ``column``'s values (None: an open end) holding about
    ``rows_per_range`` of ``frame``'s rows each, in order, from a sample (``boundaries``)."""
    # memory: the row count and a sample of the values (about ``SAMPLE_PER_BUCKET`` per range)
    rows = int(frame.select(pl.len()).collect(engine="streaming").item())
    bounds = boundaries(sample(frame, column, rows, rows_per_range), rows, rows_per_range).to_list()
    return list(zip([None, *bounds], [*bounds, None], strict=True))


def in_range(column: str, low: Any, high: Any) -> pl.Expr:
    """``low <= column < high`` (an open end where None); a null value is in the first range."""
    value = pl.col(column)
    below = value.is_null() | (value < high) if high is not None else pl.lit(True)
    return below if low is None else (value >= low) & below


def sorted_by_ranges(plan: Callable[[Callable[[str], pl.Expr]], pl.LazyFrame], keys: pl.LazyFrame, column: str,
                     by: Sequence[str], folder: Path, rows_per_range: int,
                     schema: Mapping[str, pl.DataType]) -> pl.LazyFrame:
    """A plan's rows sorted by ``by`` (nulls first, stable: rows of equal keys in the plan's
    order; ``by[0]`` is ``column``), a range of
    ``column``'s values at a time: ``plan(inside)`` gives the rows of one range, ``inside(c)``
    being the filter on a column ``c`` of its inputs holding that range's values (the ranges
    from ``keys``' values of ``column``: ``key_ranges``); each range's rows are sorted alone
    and written as a part under ``folder``, and the parts, in range order, are the whole
    sorted. Returns a scan of the parts (``folder`` is kept for it: put it in a run's work).

    # memory: one range's rows (about ``rows_per_range``) and what its plan builds for them,
    # where one sort held every row (and each join its whole build side).
    """
    parts = Parts(folder)
    for low, high in key_ranges(keys, column, rows_per_range):
        part = plan(functools.partial(in_range, low=low, high=high))
        # memory: one range's rows, sorted (above)
        parts.add(part.sort(*by, nulls_last=False, maintain_order=True).collect(engine="streaming"))
    return parts.scan(dict(schema))


def repeated_hashes(frame: pl.LazyFrame, column: str, nulls: bool = True) -> tuple[pl.Series, int]:
    """The 64-bit hashes of ``column`` that occur more than once (every repeated value's
    hash is among them; a collision adds a value that is not repeated), sorted, and the
    number of rows hashed (nulls left out unless ``nulls``; null hashes as one value).

    # memory: ``HASH_ROWS`` hashes at a time: up to that many rows are sorted in memory; a
    # larger column's hashes are written into ``HASH_PARTS`` files by their top bits (every
    # copy of a value lands in one) and each file sorted alone. Before: 8 bytes a row and a
    # sorted copy, ~0.17 GB for the 10.7M contact keys at 1M patients, ~0.85 GB at 5M.
    """
    values = pl.col(column)
    scan = frame if nulls else frame.filter(values.is_not_null())
    held: list[np.ndarray] = []
    rows = 0
    with tempfile.TemporaryDirectory(prefix="handover-hashes-") as folder:
        parts: list[Path] = []
        for batch in scan.select(values.hash()).collect_batches(chunk_size=max(1, HASH_ROWS // 4), maintain_order=False):
            held.append(batch.to_series().to_numpy())
            rows += len(held[-1])
            if sum(len(h) for h in held) > HASH_ROWS:
                parts = parts or [Path(folder) / f"{i:03d}" for i in range(HASH_PARTS)]
                _spill(np.concatenate(held), parts)
                held = []
        if parts:
            _spill(np.concatenate(held) if held else np.empty(0, dtype=np.uint64), parts)
            repeated = np.concatenate([_repeats(np.fromfile(p, dtype=np.uint64)) for p in parts])
        else:
            repeated = _repeats(np.concatenate(held) if held else np.empty(0, dtype=np.uint64))
    return pl.Series(column, repeated, dtype=pl.UInt64), rows


def _repeats(hashes: np.ndarray) -> np.ndarray:
    """The values occurring more than once in ``hashes``, sorted."""
    hashes = np.sort(hashes)
    return np.unique(hashes[1:][hashes[1:] == hashes[:-1]])


def _spill(hashes: np.ndarray, parts: list[Path]) -> None:
    """Append ``hashes`` to the files of their top bits (part *i* holds values below those
    of part *i + 1*)."""
    hashes = np.sort(hashes)
    shift = np.uint64(64 - (len(parts) - 1).bit_length())
    cuts = np.searchsorted(hashes, np.arange(1, len(parts), dtype=np.uint64) << shift)
    for path, piece in zip(parts, np.split(hashes, cuts), strict=True):
        with path.open("ab") as fh:
            piece.tofile(fh)


def hashed_in(column: str, hashes: pl.Series) -> pl.Expr:
    """True where ``column``'s 64-bit hash is one of ``hashes`` (``repeated_hashes``)."""
    return pl.col(column).hash().is_in(hashes.implode())


def _repeats_sorted(values: pl.Series) -> pl.Series:
    """For each of sorted ``values`` but the first, whether it equals the one before it."""
    n = values.len()
    return values.slice(1) == values.slice(0, max(n - 1, 0)) if n > 1 else pl.Series([], dtype=pl.Boolean)


class SortedKeys:
    """A table's kept keys held sorted, with optional ``values`` aligned to them (a
    referral's patient), looked up by binary search: exact, and no hash table of the
    keys is built per lookup (``is_in`` and a join built one for every batch of a child
    table: millions of keys hashed again each time).

    # memory: the key strings (and values), 16 bytes each for keys up to 12 bytes; no copy.
    """

    def __init__(self, keys: pl.Series, values: pl.Series | None = None) -> None:
        if keys.null_count():  # a null is no key: left out (with its value)
            present = keys.is_not_null()
            keys, values = keys.filter(present), None if values is None else values.filter(present)
        order = keys.arg_sort()
        self.keys = keys.gather(order)
        self.values = None if values is None else values.gather(order)

    def repeats(self) -> pl.Series:
        """For each key but the first, whether it equals the key before it (equal keys are
        neighbours once sorted): true where a key occurs again."""
        return _repeats_sorted(self.keys)

    def positions(self, refs: pl.Series) -> pl.Series:
        """The position of each of ``refs`` among the keys; null where it is not one (or null)."""
        n = self.keys.len()
        if n == 0:
            return pl.Series(refs.name, [None] * refs.len(), dtype=pl.UInt32)
        at = self.keys.search_sorted(refs.fill_null(self.keys[0]), side="left").clip(0, n - 1)
        found = refs.is_not_null() & (self.keys.gather(at) == refs.fill_null(self.keys[0]))
        return at.set(~found.fill_null(False), None) if not bool(found.all()) else at

    def contains(self, refs: pl.Series) -> pl.Series:
        """Whether each of ``refs`` is one of the keys (False for a null)."""
        return self.positions(refs).is_not_null()

    def lookup(self, refs: pl.Series) -> pl.Series:
        """The value of each of ``refs``' key; null where it is not a key."""
        assert self.values is not None
        at = self.positions(refs)
        return self.values.gather(at).alias(self.values.name)


class HashedKeys:
    """Distinct keys held as their 64-bit hashes (polars' ``hash``), sorted, with integer
    ``values`` aligned: ``SortedKeys.lookup`` in 12 bytes a key instead of the key's text
    (16 bytes and the string's own bytes, and a sorted copy while built) — the FHIR staging's
    batch of each of 14.3M referrals and 5M patients at 5M patients (``migrate.fhir.batches``),
    the rules' partition of each referral (``migrate.rules.stage.stage_partitions``).

    Built from parts (``add``: one chunk of keys at a time, nulls left out), then ``sorted``.
    Exact for the keys given once ``sorted`` has found no two hashes equal (two equal keys, or
    two keys whose hashes collide, make it say False — the caller falls back to the keys
    themselves, ``SortedKeys``, which tells the two apart). A reference that is none of the
    keys is found only if its hash equals one of theirs (about one in 2^64 / keys per
    reference: 1 in 10^12 for 14.3M keys).

    # memory: 8 bytes a key and 4 a value, held; twice that while ``sorted`` orders them.
    """

    def __init__(self) -> None:
        self.hashes = pl.Series("hash", [], dtype=pl.UInt64)
        self.values = pl.Series("value", [], dtype=pl.Int32)
        self._parts: list[tuple[pl.Series, pl.Series]] = []

    def add(self, keys: pl.Series, values: pl.Series) -> None:
        """Hold the hashes of ``keys`` (not null) and their ``values`` (null: -1)."""
        present = keys.is_not_null()
        self._parts.append((keys.filter(present).hash().rechunk(),
                            values.filter(present).fill_null(-1).cast(pl.Int32).rechunk()))

    def sorted(self) -> bool:
        """Order what was added by hash; False when two hashes are equal."""
        hashes = pl.concat([h for h, _ in self._parts]) if self._parts else self.hashes
        values = pl.concat([v for _, v in self._parts]) if self._parts else self.values
        self._parts = []
        order = hashes.arg_sort()
        self.hashes, self.values = hashes.gather(order), values.gather(order)
        del hashes, values, order
        return not bool(_repeats_sorted(self.hashes).any())

    def lookup(self, refs: pl.Series) -> pl.Series:
        """The value of each of ``refs``' key; null where it is not a key (or null, or its
        value was null)."""
        n = self.hashes.len()
        if n == 0:
            return pl.Series(self.values.name, [None] * refs.len(), dtype=pl.Int32)
        wanted = refs.hash()
        at = self.hashes.search_sorted(wanted, side="left").clip(0, n - 1)
        found = (refs.is_not_null() & (self.hashes.gather(at) == wanted)).fill_null(False)
        values = self.values.gather(at.set(~found, None) if not bool(found.all()) else at)
        unknown = (values == -1).fill_null(False)  # a key whose value was null
        return values.set(unknown, None) if bool(unknown.any()) else values


class RangeBuckets:
    """Rows written into range buckets of ``column`` under ``folder`` (module docstring)."""

    def __init__(self, folder: Path, column: str, bounds: pl.Series) -> None:
        self.folder = folder
        self.column = column
        self.bounds = bounds
        self.parts: list[list[Path]] = [[] for _ in range(bounds.len() + 1)]
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)

    @property
    def count(self) -> int:
        return len(self.parts)

    def bucket_of(self, values: pl.Series) -> pl.Series:
        """The bucket of each value (nulls in the first: they sort first)."""
        if self.bounds.len() == 0:
            return pl.Series(PART, [0] * values.len(), dtype=pl.UInt32)
        found = self.bounds.search_sorted(values.fill_null(self.bounds[0]), side="right").cast(pl.UInt32)
        return pl.select(pl.when(values.is_null()).then(0).otherwise(found).cast(pl.UInt32).alias(PART)).to_series()

    def add(self, frame: pl.DataFrame) -> None:
        """Append ``frame``'s rows to their buckets (their order within a bucket kept)."""
        if frame.height == 0:
            return
        marked = frame.with_columns(self.bucket_of(frame[self.column]))
        for (bucket,), rows in marked.group_by(PART, maintain_order=True):
            i = int(bucket)
            path = self.folder / f"{i:05d}-{len(self.parts[i]):06d}.parquet"
            write_part(rows.drop(PART), path)
            self.parts[i].append(path)

    def read(self, bucket: int, schema: pl.Schema | None = None) -> pl.DataFrame:
        """Every row of ``bucket``, in the order added (empty with ``schema`` when none)."""
        if not self.parts[bucket]:
            return pl.DataFrame(schema=schema)
        # memory: one bucket (about ``BUCKET_ROWS`` rows)
        return pl.read_parquet(self.parts[bucket])

    def compact(self, over: int = 1) -> None:
        """Each bucket's parts (one per ``add`` that reached it) as one file, rows in order.

        A scan of many buckets, or a plan scanning one bucket many times, then opens one file
        per bucket: polars opens a scan's files on its blocking I/O threads, several at a time
        per scan, and the round trip's comparisons of a bucket of many parts (its Consent plan
        scans the bucket ~250 times) ran ~500 such threads, polars' limit
        (POLARS_MAX_BLOCKING_THREAD_COUNT). More ``add`` after this append new parts again.
        Only buckets of more than ``over`` parts are merged."""
        for i, parts in enumerate(self.parts):
            if len(parts) > max(over, 1):
                path = self.folder / f"{i:05d}-merged.parquet"
                # memory: streamed, a row group at a time (a native streaming sink)
                pl.scan_parquet(parts).sink_parquet(path, compression="lz4", row_group_size=ROW_GROUP_ROWS,
                                                    maintain_order=True)
                for part in parts:
                    part.unlink()
                self.parts[i] = [path]

    def close(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)


class Parts:
    """Frames written in order as numbered Parquet parts of one table, to be ``sink``-ed."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.paths: list[Path] = []
        self.rows = 0
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)

    def add(self, frame: pl.DataFrame) -> None:
        if frame.height == 0 and self.paths:
            return
        path = self.folder / f"{len(self.paths):06d}.parquet"
        write_part(frame, path)
        self.paths.append(path)
        self.rows += frame.height

    def scan(self, schema: pl.Schema | dict[str, pl.DataType] | None = None) -> pl.LazyFrame:
        if not self.paths:
            return pl.LazyFrame(schema=schema)
        return pl.scan_parquet(self.paths)

    def close(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)


def write_part(frame: pl.DataFrame, path: Path) -> Path:
    """Write ``frame`` as a staged part (Parquet, lz4): row groups of ``ROW_GROUP_ROWS`` rows.

    Without a fixed size polars writes a row group per in-memory chunk, and how a collected
    frame is chunked follows thread timing; a streaming ``sink`` reading the parts back
    splits its pages where their row groups end, so a table sunk from parts had the same
    rows but not the same bytes from run to run (``lineage.parquet`` of two 200k runs:
    ``tests/test_staging_bytes.py``)."""
    frame.write_parquet(path, compression="lz4", row_group_size=ROW_GROUP_ROWS)
    return path


def sink(frame: pl.LazyFrame, path: Path) -> Path:
    """Write ``frame`` to ``path`` (Parquet, zstd, atomically) with the streaming engine:
    parts are read and written a batch at a time, in order. Row groups have a fixed number
    of rows, so the bytes depend on the rows alone — not on how they were split into parts
    (buckets, batches, partitions) nor on the number of threads."""
    return write_atomic(path, lambda tmp: frame.sink_parquet(tmp, compression="zstd", maintain_order=True,
                                                              row_group_size=ROW_GROUP_ROWS))


def sink_parts(frame: pl.LazyFrame, path: Path, folder: Path, rows: int = ROW_GROUP_ROWS) -> int:
    """``sink`` for any plan: its rows read ``rows`` at a time (``pulled``), each batch written
    as a part with fixed row groups (``Parts``), the parts sunk to ``path``; the rows written.

    A plan with joins or sorts hands the sink batches whose boundaries follow thread timing,
    and the sink splits its pages where they end: the same rows, other bytes. Parts with
    fixed row groups give the bytes of the rows alone (``tests/test_staging_bytes.py``).
    ``folder`` (removed afterwards) holds the batches meanwhile.

    # memory: one batch of ``rows`` rows (and the sinks' own buffers), whatever the table's size.
    """
    parts = Parts(folder)
    try:
        for batch in pulled(frame, rows, folder):
            parts.add(batch)
        sink(parts.scan(), path)
        return parts.rows
    finally:
        parts.close()


def batches(frame: pl.LazyFrame, rows: int) -> Iterator[pl.DataFrame]:
    """``frame`` in order, ``rows`` at a time (at least one, possibly empty, frame).

    # memory: the streaming engine runs ahead of a slow reader and its batches queue up
    # (``pulled``); where each batch takes long to handle and the query is long, use ``pulled``."""
    any_batch = False
    for batch in frame.collect_batches(chunk_size=rows, maintain_order=True):
        any_batch = True
        yield batch
    if not any_batch:
        # memory: no rows
        yield frame.head(0).collect()


def pulled(frame: pl.LazyFrame, chunk_rows: int, folder: Path) -> Iterator[pl.DataFrame]:
    """``frame``'s rows in order, ``chunk_rows`` at a time (at least one, possibly empty,
    frame), each chunk read only when asked; ``folder`` holds the sunk file meanwhile.

    # memory: ``collect_batches`` does not wait for its reader: while each chunk is placed and
    # written the streaming engine runs ahead and its batches queue up — measured on the 10.7M
    # contacts of 1M patients, iterating with 0.2 s of work per chunk held +748 MB against
    # +358 MB without, more the longer the table; the whole split of those contacts (bitmap
    # filter, lookups, files) +922 MB before, +615 MB pulled (benchmarks/fhir.md). So the query is first
    # sunk to one Parquet file (a native streaming sink: bounded) with row groups of
    # ``chunk_rows``, then read back a slice at a time (a slice reads its row groups alone);
    # the file is removed once read.
    """
    folder.mkdir(parents=True, exist_ok=True)
    handle, name = tempfile.mkstemp(suffix=".parquet", prefix=".pulled-", dir=folder)
    os.close(handle)
    source = Path(name)
    try:
        frame.sink_parquet(source, compression="lz4", row_group_size=chunk_rows, maintain_order=True)
        rows = pq.ParquetFile(source).metadata.num_rows
        # memory: one chunk of ``chunk_rows`` rows at a time, read back from the sunk file
        if rows == 0:
            yield pl.read_parquet(source)
        for offset in range(0, rows, chunk_rows):
            yield pl.scan_parquet(source).slice(offset, chunk_rows).collect()
    finally:
        source.unlink(missing_ok=True)


def compact(frame: pl.DataFrame) -> pl.DataFrame:
    """``frame`` with its values in buffers of its own, for a few rows kept from a large frame.

    # memory: polars' strings are views into their batch's shared buffers, and a filter,
    # slice, gather or join copies the views, not the bytes: a few quarantined rows kept from
    # each 500,000-row batch held every batch's buffers — the whole file (4.9 GB of the
    # contacts' raw lines at 5M patients; measured). Copied through Arrow's plain string
    # layout, which holds only the bytes of the rows kept; the dtypes are restored.
    """
    if frame.width == 0:
        return frame
    table = frame.to_arrow(compat_level=pl.CompatLevel.oldest())
    copied = pl.from_arrow(table, schema_overrides=frame.schema)
    assert isinstance(copied, pl.DataFrame)
    return copied.cast(frame.schema)


def compact_series(values: pl.Series) -> pl.Series:
    """``compact`` for one column."""
    return compact(values.to_frame()).to_series()


def collect_compact(frame: pl.LazyFrame, rows: int = 500_000) -> pl.DataFrame:
    """A query selecting a few rows of a large scan, collected a batch at a time, each batch
    ``compact``-ed: collected at once, the rows kept would hold every batch of the scan they
    came from (views into its buffers) until the end."""
    schema = frame.collect_schema()
    kept = [compact(batch) for batch in frame.collect_batches(chunk_size=rows, maintain_order=True) if batch.height]
    return pl.concat(kept, how="vertical") if kept else pl.DataFrame(schema=schema)


def concat(frames: Sequence[pl.DataFrame]) -> pl.DataFrame | None:
    """The non-empty ``frames`` as one (diagonal: columns may differ), or None."""
    present = [f for f in frames if f.height]
    return pl.concat(present, how="diagonal_relaxed") if present else None
