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
5M patients. Here each frame is read once, in order, a chunk of ``chunk_rows`` rows at a
time (the streaming engine); each chunk's rows are split by batch and held until the rows
held reach ``budget_bytes`` (polars' estimate of their size in memory); then every held
batch is written as one more file of its folder. What the split holds is a chunk plus the
budget, whatever the rows and the batches — but the streaming left join that places each
row (``batched``) still grows with the rows (measured at 1M: the run process 0.39 → 1.75 GB
while staging; benchmarks/fhir.md): not yet bounded. A batch's files are numbered in the order written,
so reading them in name order gives its rows in the frame's order (as the partitioned
sink did; ``tests/fhir/test_staging.py`` proves the same rows for any budget and chunk).
"""

from __future__ import annotations

import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from migrate.errors import HandoverError
from migrate.staging import batches

UNPLACED = -1  # the staging batch of rows that belong to no patient of the plan
CHUNK_ROWS = 250_000  # rows read at a time from a frame being staged
BUDGET_BYTES = 128 << 20  # rows held (estimated in-memory size) before the held batches are written
CANONICAL = ("patients", "referrals", "contacts", "codes")


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
    by_patient = plan.select("patient_key", ((pl.col("bundle_no") - 1) // bundles_per_batch).alias("batch"))
    # memory: held: two key columns per referral (~0.1 GB at 1M): every contact and cohort is
    # placed by its referral's batch.
    by_referral = (tables["referrals"].select("referral_key", "patient_key")
                   .join(by_patient.lazy(), on="patient_key").select("referral_key", "batch")
                   .collect(engine="streaming"))

    # memory: not bounded yet: the streaming left join below holds memory in proportion to the
    # frame's rows (+360-410 MB for 2.1M contacts, measured); ``split`` after it does not.
    def batched(frame: pl.LazyFrame, keys: pl.DataFrame, on: str) -> pl.LazyFrame:
        # A row of no batch gets batch -1 (counted, then raised): one pass over each input,
        # which for a run is a query over its dispositions (``dispositions.carried``), not a file.
        return (frame.join(keys.lazy(), on=on, how="left", maintain_order="left")
                .with_columns(pl.col("batch").fill_null(UNPLACED)))

    contacts = tables["contacts"]
    by_their_referral = batched(contacts.filter(pl.col("referral_key").is_not_null()), by_referral, "referral_key")
    if "patient_key" in contacts.collect_schema().names():
        # a contact without a referral goes with its own patient
        parentless = batched(contacts.filter(pl.col("referral_key").is_null()), by_patient, "patient_key")
        by_their_referral = pl.concat([by_their_referral, parentless])
    frames: dict[str, tuple[pl.LazyFrame, pl.LazyFrame]] = {
        "patients": (tables["patients"], batched(tables["patients"], by_patient, "patient_key")),
        "referrals": (tables["referrals"], batched(tables["referrals"], by_patient, "patient_key")),
        "contacts": (contacts, by_their_referral),
        "codes": (tables["codes"], batched(tables["codes"], by_patient, "patient_key")),
        "cohorts": (cohorts, batched(cohorts, by_referral, "referral_key")),
        "exceptions": (exceptions, batched(exceptions, by_patient, "patient_key")),
        "sharing": (sharing, batched(sharing, by_patient, "patient_key")),
    }
    if derived_priority is not None:
        frames["derived_priority"] = (derived_priority, batched(derived_priority, by_referral, "referral_key"))
    schemas = {}
    problems = []
    for name, (frame, placed) in frames.items():
        schemas[name] = frame.collect_schema()
        lost = split(placed, root / name, chunk_rows, budget_bytes)
        if lost and name in CANONICAL:
            problems.append(f"{name}: {lost:,} rows belong to no patient of the batch")
    if problems:
        raise HandoverError("rows that belong to no patient cannot be placed in a bundle", problems)
    return Staged(root, schemas)


def split(placed: pl.LazyFrame, folder: Path, chunk_rows: int = CHUNK_ROWS, budget_bytes: int = BUDGET_BYTES) -> int:
    """Write the rows of ``placed`` (a frame with column ``batch``) under
    ``folder/batch=<n>/<k>.parquet`` without ``batch``, in order, holding at most about
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
            pl.concat(parts).write_parquet(out / f"{written:06d}.parquet", compression="lz4")
        size, written = 0, written + 1

    for chunk in batches(placed, chunk_rows):
        unplaced = chunk["batch"] == UNPLACED
        lost += int(unplaced.sum())
        for (batch,), part in chunk.filter(~unplaced).partition_by("batch", as_dict=True, include_key=False).items():
            held.setdefault(int(batch), []).append(part)
            size += int(part.estimated_size())
        if size >= budget_bytes:
            flush()
    flush()
    return lost


def clear(root: Path) -> None:
    """Remove the staged files."""
    shutil.rmtree(root, ignore_errors=True)
