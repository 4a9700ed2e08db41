"""The FHIR writer's inputs split by patient batch, in memory bounded by a budget.

``stage`` splits every input frame of the FHIR stage (canonical tables, cohorts, flags,
sharing states, raised priorities) by writer batch (``batch = (bundle_no - 1) //
bundles_per_batch``) into ``root/<frame>/batch=<n>/*.parquet``, so reading one batch
touches only its own rows instead of rescanning every table once per batch.

Why not one ``sink_parquet(pl.PartitionBy(...))`` per frame (how it was done until
issue #18's fourth session): polars' partitioned sink holds every partition's rows until
its files are closed, so its memory grew with the rows of the frame — ~320 MB per 2.1M
contact rows measured, whatever the number of partitions (benchmarks/fhir.md), which made
staging the run process's peak at 1M and would have been ~8 GB for the 53M contacts of
5M patients. Here each frame is sunk once to a Parquet file (the streaming engine's own
sink) and read back in order, a chunk of ``chunk_rows`` rows at a time, each chunk only when
the last is written (``migrate.staging.pulled``); each chunk's rows are sorted by batch (stably)
and each batch's rows held as a slice of them until the sorted chunks reach ``budget_bytes``
(polars' estimate of a chunk's size in memory: a slice is a view and keeps all of it; one copy
of a chunk however many batches it reaches — at 5M patients a chunk reaches ~1,000); then every held batch is written as
one more file of its folder. What the split holds is a chunk plus the
budget, whatever the rows and the batches. Each chunk's rows are placed by a lookup of
their key (a referral's, or a patient's) in the keys' batch numbers held sorted once, by
the keys' 64-bit hashes (``migrate.staging.HashedKeys``: a binary search per chunk; the
keys' own text, ``SortedKeys``, only if two hashes are equal), not by a join: the streaming
left join that did it until issue #18's fifth session held memory in proportion to the
rows it placed (+360-410 MB per 2.1M contacts; the run process 0.39 → 1.75 GB while staging
at 1M; benchmarks/fhir.md). A batch's files are numbered in the order written,
so reading them in name order gives its rows in the frame's order (as the partitioned
sink did; ``tests/fhir/test_staging.py`` proves the same rows for any budget and chunk).
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from migrate.errors import HandoverError
from migrate.staging import HashedKeys, SortedKeys, batches, pulled, write_part

UNPLACED = -1  # the staging batch of rows that belong to no patient of the plan
CHUNK_ROWS = 250_000  # rows read at a time from a frame being staged
BUDGET_BYTES = 128 << 20  # chunks held (estimated in-memory size) before the held batches are written
CANONICAL = ("patients", "referrals", "contacts", "codes")
_BATCH = "__batch"  # the placing column while a chunk is split (a frame's own columns are kept as they are)


@dataclass(frozen=True)
class Staged:
    """The input frames split by patient batch (``batch = (bundle_no - 1) // bundles_per_batch``).

    Reading one batch then touches only its own rows, instead of scanning every table once
    per batch (the cost that grew faster than the extract).
    """

    root: Path
    schemas: dict[str, pl.Schema]

    def frame(self, name: str, batch: int) -> pl.LazyFrame:
        files = sorted((self.root / name / f"batch={batch}").glob("*.parquet"))
        if not files:
            return pl.LazyFrame(schema=self.schemas[name])
        return pl.scan_parquet(files)


def stage(tables: Mapping[str, pl.LazyFrame], cohorts: pl.LazyFrame, exceptions: pl.LazyFrame,
          sharing: pl.LazyFrame, derived_priority: pl.LazyFrame | None, plan: pl.DataFrame, bundles_per_batch: int,
          root: Path, chunk_rows: int = CHUNK_ROWS, budget_bytes: int = BUDGET_BYTES) -> Staged:
    """Split every input frame by patient batch into ``root`` (module docstring).

    Rows of the canonical tables that belong to no patient of the plan would silently
    vanish from a batch, so they are counted and raised (ingest's integrity checks should
    have quarantined them); a cohort, flag or sharing state of a patient the FHIR output
    does not carry is simply not needed.
    """
    # memory: held: each patient's and each referral's batch, as the keys' 64-bit hashes sorted
    # (``HashedKeys``: 12 bytes a key; 0.23 GB for the 5M patients and 14.3M referrals at 5M,
    # where the keys' text sorted was ~0.9 GB and the referrals collected ~0.9 GB more while
    # it was built): every row is placed by its referral's or patient's batch, a chunk at a time.
    patient_batch = plan.select("patient_key", ((pl.col("bundle_no") - 1) // bundles_per_batch).alias("batch"))
    by_patient = _keys(lambda keys: keys.add(patient_batch["patient_key"], patient_batch["batch"]),
                       lambda: SortedKeys(patient_batch["patient_key"], patient_batch["batch"]), "patient")
    del patient_batch
    referrals = tables["referrals"].select("referral_key", "patient_key")

    def add_referrals(keys: HashedKeys) -> None:
        for chunk in batches(referrals, CHUNK_ROWS):  # memory: a chunk of referral keys at a time
            keys.add(chunk["referral_key"], by_patient.lookup(chunk["patient_key"]))

    def exact_referrals() -> SortedKeys:
        # memory: two key columns per referral (only when two referral keys' hashes are equal)
        rows = referrals.collect(engine="streaming")
        return SortedKeys(rows["referral_key"], by_patient.lookup(rows["patient_key"]))

    by_referral = _keys(add_referrals, exact_referrals, "referral")

    contacts = tables["contacts"]
    contact_parts = [(contacts.filter(pl.col("referral_key").is_not_null()), by(by_referral, "referral_key"))]
    if "patient_key" in contacts.collect_schema().names():
        # a contact without a referral goes with its own patient (after those with one, as ever)
        contact_parts.append((contacts.filter(pl.col("referral_key").is_null()), by(by_patient, "patient_key")))
    frames: dict[str, tuple[pl.LazyFrame, list[tuple[pl.LazyFrame, Placer]]]] = {
        "patients": (tables["patients"], [(tables["patients"], by(by_patient, "patient_key"))]),
        "referrals": (tables["referrals"], [(tables["referrals"], by(by_patient, "patient_key"))]),
        "contacts": (contacts, contact_parts),
        "codes": (tables["codes"], [(tables["codes"], by(by_patient, "patient_key"))]),
        "cohorts": (cohorts, [(cohorts, by(by_referral, "referral_key"))]),
        "exceptions": (exceptions, [(exceptions, by(by_patient, "patient_key"))]),
        "sharing": (sharing, [(sharing, by(by_patient, "patient_key"))]),
    }
    if derived_priority is not None:
        frames["derived_priority"] = (derived_priority, [(derived_priority, by(by_referral, "referral_key"))])
    schemas = {}
    problems = []
    for name, (frame, parts) in frames.items():
        schemas[name] = frame.collect_schema()
        lost = split(parts, root / name, chunk_rows, budget_bytes)
        if lost and name in CANONICAL:
            problems.append(f"{name}: {lost:,} rows belong to no patient of the batch")
    if problems:
        raise HandoverError("rows that belong to no patient cannot be placed in a bundle", problems)
    return Staged(root, schemas)


Placer = Callable[[pl.DataFrame], pl.Series]  # a chunk's rows -> their batch (UNPLACED for none)


Keys = HashedKeys | SortedKeys  # each key's batch, looked up


def _keys(add: Callable[[HashedKeys], None], exact: Callable[[], SortedKeys], what: str) -> Keys:
    """The keys ``add`` gives, held by their hashes; when two hashes are equal (two equal keys,
    or a collision) the keys themselves from ``exact`` (raised if a key occurs twice)."""
    hashed = HashedKeys()
    add(hashed)
    if hashed.sorted():
        return hashed
    del hashed
    return _unique(exact(), what)


def by(keys: Keys, column: str) -> Placer:
    """Place a chunk's rows by ``column`` looked up in ``keys`` (batch values); a row whose
    key is null or unknown gets ``UNPLACED`` (counted, then raised for a canonical table)."""
    def place(chunk: pl.DataFrame) -> pl.Series:
        return keys.lookup(chunk[column]).fill_null(UNPLACED)
    return place


def _unique(keys: SortedKeys, what: str) -> SortedKeys:
    """``keys`` when no key occurs twice (a join would have placed such a row twice, a lookup
    once: neither is right, so it is raised)."""
    if bool(keys.repeats().any()):
        raise HandoverError(f"a {what} key occurs twice in the FHIR stage's inputs: rows cannot be placed by it")
    return keys


def split(parts: Sequence[tuple[pl.LazyFrame, Placer]], folder: Path, chunk_rows: int = CHUNK_ROWS,
          budget_bytes: int = BUDGET_BYTES) -> int:
    """Write the rows of ``parts`` (frames, one after another, each with how its rows are
    placed) under ``folder/batch=<n>/<k>.parquet``, in order, holding at most about
    ``budget_bytes`` of rows (plus one chunk); return how many rows had batch ``UNPLACED``
    (counted, not written)."""
    held: dict[int, list[pl.DataFrame]] = {}
    size, written, lost = 0, 0, 0

    def flush() -> None:
        nonlocal size, written
        while held:  # each batch's rows let go once written
            batch, parts = held.popitem()
            out = folder / f"batch={batch}"
            out.mkdir(parents=True, exist_ok=True)
            write_part(pl.concat(parts), out / f"{written:06d}.parquet")
        size, written = 0, written + 1

    for frame, place in parts:
        for chunk in pulled(frame, chunk_rows, folder):
            batch_of = place(chunk)
            unplaced = batch_of == UNPLACED
            lost += int(unplaced.sum())
            # the chunk's rows grouped by batch (a stable sort: each batch's rows in order), each
            # batch's a slice of them: one copy of the chunk, however many batches it reaches
            placed = chunk.with_columns(batch_of.alias(_BATCH)).filter(~unplaced).sort(_BATCH, maintain_order=True)
            del chunk, batch_of, unplaced
            runs = placed.select(pl.col(_BATCH).rle()).unnest(_BATCH)
            start = 0
            for length, batch in runs.iter_rows():
                held.setdefault(int(batch), []).append(placed.slice(start, length).drop(_BATCH))
                start += length
            # the slices are views into the sorted chunk (and it into the chunk's strings): all of it is held
            size += int(placed.estimated_size())
            if size >= budget_bytes:
                flush()
    flush()
    return lost


def clear(root: Path) -> None:
    """Remove the staged files."""
    shutil.rmtree(root, ignore_errors=True)
