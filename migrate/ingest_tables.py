"""One canonical table's rows, checked and applied over staged Parquet, in bounded memory.

Ingest maps each source file in batches and stages the mapped rows as Parquet parts
(``migrate.staging``); this module takes a table's staged sources to its final rows
without holding the table in memory:

1. ``within_sources``: within a source whose profile says ``on_duplicate: quarantine``,
   repeats of a key are found from the key column alone; only the rows of repeated keys
   are read to name the first row (``integrity.duplicate_keys``).
2. ``apply_table``: the source's own merges re-point patient keys (a join per batch),
   then the rows of each key apply in order (``migrate.updates.apply_rows``):
   - when every key is unique and no row of the table failed mapping, a row's state is the
     row itself: the checks (row by row, against the parents' keys) run batch by batch,
     in file order;
   - otherwise rows go into **range buckets of the key** (``staging.RangeBuckets``): all
     rows of a key land in one bucket and buckets are in key order, so applying bucket by
     bucket and concatenating gives what ``apply_rows`` gives over the whole table — the
     kept rows in key order, then the order rows apply in.

The invariant is ``apply_rows``'s: every staged row ends in exactly one of kept, failed
and superseded (and the rows given as failing come back noted).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import polars as pl

from migrate import canonical, integrity, updates
from migrate.profile import TableSpec
from migrate.staging import (Parts, RangeBuckets, batches, boundaries, collect_compact, compact, hashed_in,
                             repeated_hashes, sample)

BATCH_ROWS = 500_000  # rows checked at once on the unique-key path


@dataclass
class TableApplied:
    """What applying one table gave: ``kept`` (staged parts, in the table's final order),
    ``failed`` (rows with ``__reason``, ``__field``, ``__message``), ``superseded``
    (``updates.SUPERSEDED_SCHEMA``), ``kept_previous`` and ``invalid`` as in
    ``updates.Applied``."""

    kept: Parts
    failed: list[pl.DataFrame] = field(default_factory=list)
    superseded: list[pl.DataFrame] = field(default_factory=list)
    kept_previous: int = 0
    invalid: list[pl.DataFrame] = field(default_factory=list)


def within_sources(table: str, sources: Sequence[tuple[TableSpec, pl.LazyFrame]]) -> tuple[
        pl.LazyFrame, list[pl.DataFrame]]:
    """The rows of every source of ``table`` as one (lazy) frame in source order, and the
    repeats refused within a source whose profile says ``on_duplicate: quarantine``."""
    key = canonical.TABLES[table].key
    failed: list[pl.DataFrame] = []
    frames = []
    for spec, frame in sources:
        if key is not None and spec.on_duplicate == "quarantine":
            # memory: the key's 64-bit hashes, at most ``staging.HASH_ROWS`` sorted at once (a
            # longer column's spilled into parts), not the key column's strings; the rows stay staged.
            repeated, _ = repeated_hashes(frame, key, nulls=False)
            if repeated.len():
                # Only the rows of repeated keys (and of hash collisions, which the exact check
                # below passes) are needed to name each repeat's first row.
                involved = collect_compact(frame.filter(pl.col(key).is_not_null() & hashed_in(key, repeated)))
                split = integrity.duplicate_keys(involved, table)
                if split.failed.height:
                    failed.append(compact(split.failed))
                    frame = frame.join(split.failed.select("source_file", "source_row").lazy(),
                                       on=["source_file", "source_row"], how="anti", maintain_order="left")
        frames.append(frame)
    return (pl.concat(frames, how="vertical") if len(frames) > 1 else frames[0]), failed


def _resolved(frame: pl.LazyFrame, survivors: pl.DataFrame) -> pl.LazyFrame:
    """``integrity.resolve_patients`` as a lazy join (the survivors are few)."""
    if survivors.height == 0:
        return frame
    return frame.join(survivors.lazy(), on="patient_key", how="left", maintain_order="left").with_columns(
        pl.coalesce("survivor_key", "patient_key").alias("patient_key")).drop("survivor_key")


def apply_table(table: str, frame: pl.LazyFrame, check: updates.Check, invalid: pl.DataFrame | None,
                survivors: pl.DataFrame, work: Path) -> TableApplied:
    """Apply the staged rows ``frame`` of ``table`` (module docstring); the kept rows are
    staged under ``work``. ``survivors``: the source's merges (patient_key -> survivor_key)."""
    tdef = canonical.TABLES[table]
    if "patient_key" in tdef.field_names and table != "merges":
        # The source's own merges apply before any check: a row sent under a prior id
        # (before or after its A40) is checked, and kept, as its survivor's.
        frame = _resolved(frame, survivors)
    key = tdef.key
    out = TableApplied(Parts(work / "kept"))
    if key is not None:
        # memory: the key's 64-bit hashes, at most ``staging.HASH_ROWS`` (4M) sorted at once (the
        # 10.7M contact keys at 1M patients go through 64 parts) to decide between one pass and
        # key-range buckets, whose boundaries come from a sample of the keys. The rows stay staged.
        repeated, rows = repeated_hashes(frame, key)
        unique = repeated.len() == 0 or bool(
            frame.filter(hashed_in(key, repeated)).select(pl.col(key).is_unique().all()).collect().item())
        if invalid is not None or not unique:
            _apply_in_buckets(out, table, key, frame, rows, check, invalid, work)
            return out
    for batch in batches(frame, BATCH_ROWS):
        passed, failed = check(batch)
        out.kept.add(passed)
        # compacted: held to the table's end, a batch's few failing rows would hold its strings
        out.failed += [compact(f) for f in failed if f.height]
    if invalid is not None:
        out.invalid.append(invalid)
    return out


def _apply_in_buckets(out: TableApplied, table: str, key: str, frame: pl.LazyFrame, height: int,
                      check: updates.Check, invalid: pl.DataFrame | None, work: Path) -> None:
    """``frame``'s ``height`` rows (and the ``invalid`` ones) applied a key range at a time."""
    every = sample(frame, key, height)
    if invalid is not None:
        every, height = pl.concat([every, invalid[key]]), height + invalid.height
    buckets = RangeBuckets(work / "buckets", key, boundaries(every, height))
    del every
    schema = frame.collect_schema()
    for batch in batches(frame, BATCH_ROWS):
        buckets.add(batch)
    where = None if invalid is None else buckets.bucket_of(invalid[key])
    try:
        for i in range(buckets.count):
            rows = buckets.read(i, schema)
            given = None if invalid is None or where is None else invalid.filter(where == i)
            if rows.height == 0 and (given is None or given.height == 0):
                continue
            applied = updates.apply_rows(table, rows, check, given)
            # Kept rows in the order of the whole table's apply: key, then the order rows apply in
            # (a bucket whose keys were all unique comes back in file order).
            out.kept.add(applied.kept.select(schema.names()).sort(pl.col(key), *updates.order_columns(),
                                                                  nulls_last=False, maintain_order=True))
            out.failed += [compact(f) for f in applied.failed if f.height]
            out.superseded.append(compact(applied.superseded))
            out.kept_previous += applied.kept_previous
            if applied.invalid is not None and applied.invalid.height:
                out.invalid.append(compact(applied.invalid))
            del rows, applied
    finally:
        buckets.close()
