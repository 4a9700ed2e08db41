"""The FHIR writer's batches as partitions: run in this process or on a Dask cluster.

The writer already builds patients in **batches** — ``bundles_per_batch`` bundles each, in
survivor-key order — from inputs staged once by batch (``inputs.stage``). A partition is a
contiguous range of those batches: partition *p* of *N* takes batches
``[p·B/N, (p+1)·B/N)``. Each writes its bundles straight into ``fhir.partial/bundles/``
(their numbers are global, from the one plan) and its NDJSON and lineage under
``fhir.partial/.parts/<p>/``; ``combine`` then appends the parts in partition order.

Why ranges of the survivor-key order and not a hash of the survivor key: a bundle holds
consecutive patients of that order (the golden bundles fix it), so a partition must hold
whole bundles; ranges of the order are a stable function of the key that keeps every byte.
The outputs are the same whatever N (``tests/test_partitions.py``):

- bundles: numbered by the global plan; a bundle is built whole inside one batch;
- ``ndjson/<Type>.ndjson``: each batch's lines in patient order, batches in order —
  appending partitions in order gives the lines of the whole run in the same order (a
  ``.ndjson.gz`` holds a gzip member per batch, so appending gives the same bytes too);
- ``lineage.parquet``: one row group per batch (as ``write_fhir`` writes it in one process);
  ``combine`` copies each partition's row groups in order;
- statistics: counts add up; ``model_validated`` is the number of distinct (type, shape)
  verdicts plus the resources of suspect shapes validated one by one, which is the same
  sum in one process.

Everything a partition needs is in its ``Partition`` (picklable: paths, small frames and
the options), and everything it writes is under the run folder, so a Dask worker on
another machine needs only the run folder on a shared filesystem.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import polars as pl
import pyarrow.parquet as pq

from migrate.executor import ran_on
from migrate.fhir.inputs import Context, Staged, gather
from migrate.fhir.ndjson import ndjson_paths
from migrate.fhir.resources import LINEAGE_OUT_SCHEMA, build_batch
from migrate.fhir.validate import ShapeCache


@dataclass(frozen=True)
class Partition:
    """One partition's work: its batches (number, first bundle, last bundle) and inputs."""

    index: int
    batches: tuple[tuple[int, int, int], ...]
    staged: Staged
    plan: pl.DataFrame  # the plan's rows of its bundles
    orgs: pl.DataFrame  # Organizations whose first bundle is in its range
    known_orgs: pl.Series
    ctx: Context
    verdicts: dict[tuple[str, str], str | None]  # the Organizations' shape verdicts (prepare)
    with_priority: bool
    root: Path  # fhir.partial/

    @property
    def folder(self) -> Path:
        return self.root / ".parts" / f"{self.index:05d}"


@dataclass
class PartitionResult:
    """What a partition wrote and found."""

    index: int
    counts: dict[str, int] = field(default_factory=dict)
    bundles: list[str] = field(default_factory=list)
    errors: pl.DataFrame | None = None
    verdicts: set[tuple[str, str]] = field(default_factory=set)
    individually: int = 0
    ran_on: str = "this process"  # a Dask worker's address (migrate.executor.ran_on)


def split(batches: Sequence[tuple[int, int, int]], partitions: int) -> list[tuple[tuple[int, int, int], ...]]:
    """``batches`` in ``partitions`` contiguous runs as even as can be (none empty)."""
    n = max(1, min(partitions, len(batches)))
    cuts = [len(batches) * i // n for i in range(n + 1)]
    return [tuple(batches[cuts[i]:cuts[i + 1]]) for i in range(n)]


def run_partition(job: Partition) -> PartitionResult:
    """Build, validate and write ``job``'s batches (module docstring). Runs on a worker."""
    from migrate.fhir.bundle import _write_batch, _Writers

    shapes = ShapeCache(dict(job.verdicts))
    writers = _Writers(job.folder, bundles=job.root / "bundles", compression=job.ctx.options.compression)
    result = PartitionResult(job.index, ran_on=ran_on())
    errors = []
    try:
        for batch, first, last in job.batches:
            plan = job.plan.filter(pl.col("bundle_no").is_between(first, last))
            frames = {t: job.staged.frame(t, batch) for t in ("patients", "referrals", "contacts", "codes")}
            inputs = gather(frames, job.staged.frame("cohorts", batch), job.staged.frame("exceptions", batch),
                            job.staged.frame("sharing", batch),
                            job.staged.frame("derived_priority", batch) if job.with_priority else None, plan,
                            job.ctx)
            built = build_batch(inputs, job.orgs.filter(pl.col("bundle_no").is_between(first, last)), job.known_orgs,
                                job.ctx, shapes)
            _write_batch(built, job.ctx, writers, result.bundles)
            errors.append(built.errors)
            del inputs, built
    finally:
        writers.close({"lineage": LINEAGE_OUT_SCHEMA})
    result.counts = dict(writers.counts)
    result.errors = pl.concat(errors) if errors else None
    result.verdicts = set(shapes.verdicts)
    result.individually = shapes.individually
    return result


def append(part: Path, whole: Path) -> None:
    """Append the file ``part`` to ``whole`` and remove it. The first part becomes the whole
    (renamed: no byte copied), the next ones are copied by the kernel (``copy_file_range``:
    no pass through this process's memory) — the NDJSON of a 1M run is ~10 GB."""
    if not whole.exists():
        whole.parent.mkdir(parents=True, exist_ok=True)
        os.replace(part, whole)
        return
    with part.open("rb") as src, whole.open("r+b") as dst:
        size, offset = os.fstat(src.fileno()).st_size, os.fstat(dst.fileno()).st_size
        done = 0
        try:
            while done < size:
                n = os.copy_file_range(src.fileno(), dst.fileno(), size - done, done, offset + done)
                if n == 0:
                    break
                done += n
        except (AttributeError, OSError):  # not Linux, or a filesystem pair the kernel cannot copy between
            pass
        if done < size:
            src.seek(done)
            dst.seek(offset + done)
            shutil.copyfileobj(src, dst, length=16 << 20)
    part.unlink()


def combine(results: Sequence[PartitionResult], jobs: Sequence[Partition], root: Path) -> tuple[
        dict[str, int], list[str], list[pl.DataFrame], int]:
    """Append the partitions' NDJSON and lineage into ``root`` in partition order; return
    (resources per type, bundle names, errors, resources model-validated)."""
    from migrate.fhir.bundle import _Writers

    counts: dict[str, int] = {}
    names: list[str] = []
    errors: list[pl.DataFrame] = []
    verdicts: set[tuple[str, str]] = set()
    individually = 0
    writers = _Writers(root)
    try:
        for result, job in sorted(zip(results, jobs, strict=True), key=lambda rj: rj[0].index):
            for resource_type, n in result.counts.items():
                counts[resource_type] = counts.get(resource_type, 0) + n
            names += result.bundles
            if result.errors is not None:
                errors.append(result.errors)
            verdicts |= result.verdicts
            individually += result.individually
            for part in ndjson_paths(job.folder / "ndjson"):  # gzip members append as they are
                append(part, root / "ndjson" / part.name)
            lineage = pq.ParquetFile(job.folder / "lineage.parquet")
            for group in range(lineage.num_row_groups):  # one row group per batch, as in one process
                writers.table("lineage", pl.from_arrow(lineage.read_row_group(group)), LINEAGE_OUT_SCHEMA)  # type: ignore[arg-type]
            shutil.rmtree(job.folder)
    finally:
        writers.close({"lineage": LINEAGE_OUT_SCHEMA})
    shutil.rmtree(root / ".parts", ignore_errors=True)
    return counts, names, errors, len(verdicts) + individually
