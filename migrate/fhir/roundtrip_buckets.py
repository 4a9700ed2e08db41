"""The round trip's inputs in hash buckets of the resource id, so its peak is one bucket.

At a million patients the round trip compares 8.7M (source row, resource) pairs: each
group's expected rows (canonical tables through lineage) joined with the resources read
back holds both sides of the join in memory — several GB for ServiceRequest (2.9M) and
Encounter/Appointment (2.5M). So both sides are split once, on disk, by a hash of
``fhir_id`` (a Grace hash join):

- ``rows[table]``: each canonical table's rows joined with the resources lineage ties
  them to (the join the expected rows start from, made once: canonical rows and lineage
  meet in (file, row) ranges), in ``count`` buckets;
- ``resources[type]``: each type's canonical fields read back (``migrate.fhir.inverse``,
  a decoded batch at a time), in the same buckets (Organization whole: one per practice,
  read by every Patient bucket).

Bucket *b* of a group holds every expected row and every resource of the ids that hash to
*b*, so comparing bucket by bucket compares exactly the pairs the whole join would. What
does not split by id is handled where it is used (``migrate.fhir.roundtrip``): the per
source row aggregation of Flags (every bucket, split by source row instead), the count of distinct source
rows compared (``RowCounter``), the examples (the first few of each bucket, merged).

``count`` aims at ``BUCKET_ROWS`` expected rows per bucket; the hash is polars' (seeded:
the same in every process of one polars version, so the run process and its local workers
bucket alike — the buckets never leave the run). The canonical rows and each type's
resources are staged as separate jobs on the round trip's executor (``Staged.build``).
"""

from __future__ import annotations

import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from migrate.executor import Executor, LocalExecutor
from migrate.fhir.inverse import INVERSES, SCHEMAS, Systems, decode_batches
from migrate.lineage import POSITION, position, position_bounds
from migrate.reports.rundata import RunFolder
from migrate.staging import PART, RangeBuckets, pulled, write_part

BUCKET_ROWS = 500_000  # (source row, resource) pairs per bucket aimed at: ~0.5-1 GB joined
_HASH = "__id_bucket"
_SEED = 1_066  # any fixed seed: the buckets are made and read by one process


def bucket_count(pairs: int, bucket_rows: int | None = None) -> int:
    """Buckets for ``pairs`` lineage rows naming a resource (at least one)."""
    return max(1, -(-pairs // (bucket_rows or BUCKET_ROWS)))


def _bucket_of(count: int) -> pl.Expr:
    return (pl.col("fhir_id").hash(seed=_SEED) % count).cast(pl.UInt32).alias(_HASH)


def _hash_bounds(count: int) -> pl.Series:
    return pl.Series(_HASH, list(range(1, count)), dtype=pl.UInt32)


TABLES = ("patients", "referrals", "contacts", "codes")  # the canonical tables resources are made from
# memory: source rows of one file per (file, row) range where canonical rows meet lineage: the
# run process holds one range's canonical rows joined with their resources (a referral row has
# up to four: ServiceRequest, EpisodeOfCare, Flag, Condition), all canonical columns.
RANGE_ROWS = 250_000
# memory: resources decoded, read back and split at a time, in the run process (Arrow's
# decoded batch and the frames made from it are held together; ServiceRequest's are the widest).
DECODE_ROWS = 50_000
# A bucket is written a part per range or decoded batch that reaches it: parts ~ extract x
# buckets, and every comparison of a bucket opens each part (polars' blocking I/O threads, up
# to its limit of 512; files read per bucket grow with the extract). Beyond this many parts a
# bucket is merged into one file (``RangeBuckets.compact``). At 1M patients (~60 parts a
# bucket) the merge cost 29 CPU s and saved 7 in the comparisons, but unmerged the Consent
# comparison's plan came within ~100 threads of the limit (a test's many small parts passed it:
# polars warns of a possible deadlock); at 5M ~300 parts a bucket.
MAX_PARTS = 16


def _canonical_rows(run: RunFolder, lineage: pl.LazyFrame, count: int,
                    folder: Path) -> tuple[dict[str, RangeBuckets], dict[str, pl.Schema]]:
    """Each canonical table's rows joined with the resources lineage ties them to (the join
    ``expected.Links.rows`` makes: the canonical columns, then ``fhir_type``, ``fhir_id``),
    in ``count`` buckets of the id's hash, and their schemas.

    Made once, so each bucket of each group reads its own rows instead of scanning the
    whole table again (31 buckets x 7 groups at a million patients). Both sides go into
    range buckets of (file, row) first (``migrate.lineage.position``), and each range is
    joined in turn: the peak is one range, whatever the order the table is in. Both are read
    with ``staging.pulled`` (sunk, then read back a chunk at a time): ``collect_batches`` ran
    ahead of the splitting and its batches queued up (the run process's peak at 1M, 2.6 GB)."""
    # memory: one row per source file
    ends = (lineage.filter(pl.col("source_file").is_not_null()).group_by("source_file")
            .agg(pl.col("source_row").max()).collect(engine="streaming"))
    last = {str(f): int(r or 0) for f, r in ends.iter_rows()}
    names = sorted(last)
    bounds = position_bounds(names, last, RANGE_ROWS)
    where = position(names)
    hits: dict[str, RangeBuckets] = {t: RangeBuckets(folder / f"hits-{t}", POSITION, bounds) for t in TABLES}
    links = lineage.filter(pl.col("source_file").is_not_null() & pl.col("table").is_in(TABLES))
    for batch in pulled(links.select("table", "source_file", "source_row", "fhir_type", "fhir_id")
                        .with_columns(where), 1_000_000, folder):
        for (table,), part in batch.group_by("table", maintain_order=True):
            hits[str(table)].add(part.drop("table"))
    out: dict[str, RangeBuckets] = {}
    schemas: dict[str, pl.Schema] = {}
    for table in TABLES:
        found = hits[table]
        canonical = run.canonical(table)
        schema = canonical.collect_schema()
        schema.update({"fhir_type": pl.String(), "fhir_id": pl.String()})
        schemas[table] = schema
        out[table] = RangeBuckets(folder / table, _HASH, _hash_bounds(count))
        if any(found.parts):
            own = RangeBuckets(folder / f"rows-{table}", POSITION, bounds)
            for batch in pulled(canonical.filter(pl.col("source_file").is_in(names)).with_columns(where),
                                RANGE_ROWS, folder):
                own.add(batch)
            for i in range(own.count):
                if own.parts[i] and found.parts[i]:
                    joined = own.read(i).drop(POSITION).join(found.read(i).drop(POSITION),
                                                             on=["source_file", "source_row"])
                    out[table].add(joined.with_columns(_bucket_of(count)))
            own.close()
        found.close()
        out[table].compact(MAX_PARTS)  # a part per range and bucket: merged when many
    return out, schemas


@dataclass(frozen=True)
class StageJob:
    """One part of ``Staged.build`` (picklable): the canonical rows (``lineage`` given) or one
    resource type's NDJSON ``files`` decoded, read back and split."""

    run_dir: Path
    folder: Path
    count: int
    systems: Systems
    lineage: pl.LazyFrame | None = None
    resource_type: str = ""
    files: tuple[Path, ...] = ()


@dataclass
class StageResult:
    rows: dict[str, RangeBuckets]  # table or resource type -> its buckets
    schemas: dict[str, pl.Schema]
    read: int = 0  # resources read back


def stage(job: StageJob) -> StageResult:
    """Do ``job`` (here or in a worker process: every process hashes ids alike, ``_bucket_of``)."""
    if job.lineage is not None:
        rows, schemas = _canonical_rows(RunFolder.open(job.run_dir), job.lineage, job.count, job.folder)
        return StageResult(rows, schemas)
    t, inverse = job.resource_type, INVERSES[job.resource_type]
    schema = inverse(pl.LazyFrame(schema=SCHEMAS[t]), job.systems).collect_schema()
    buckets = RangeBuckets(job.folder / t, _HASH, _hash_bounds(job.count))
    read = 0
    # Each batch decoded, read back and split as it comes: the decoder gives the next batch
    # only when asked, so the peak is a batch (not the type, ~3M ServiceRequests).
    for batch in decode_batches(list(job.files), t, DECODE_ROWS):  # memory: one decoded batch at a time
        buckets.add(inverse(batch.lazy(), job.systems).with_columns(_bucket_of(job.count)).collect())
        read += batch.height
    buckets.compact(MAX_PARTS)  # a part per decoded batch and bucket: merged when many
    return StageResult({t: buckets}, {t: schema}, read)


def _organisations(files: Mapping[str, Sequence[Path]], systems: Systems,
                   folder: Path) -> tuple[pl.LazyFrame, pl.Schema, int]:
    """The Organizations read back (one per GP practice, thousands, not patients), written
    whole: every Patient bucket reads them all. Their scan, schema and count."""
    t = "Organization"
    inverse = INVERSES[t]
    schema = inverse(pl.LazyFrame(schema=SCHEMAS[t]), systems).collect_schema()
    # memory: held whole: one Organization per GP practice
    frames = [inverse(batch.lazy(), systems).collect() for batch in decode_batches(list(files.get(t, [])), t,
                                                                                    DECODE_ROWS)]
    found = pl.concat(frames) if frames else pl.DataFrame(schema=schema)
    path = folder / "Organization.parquet"
    write_part(found, path)
    return pl.scan_parquet(path), schema, found.height


@dataclass
class Staged:
    """The canonical rows with their resources (``_canonical_rows``) and the resources read
    back, in ``count`` buckets of the id."""

    count: int
    rows: dict[str, RangeBuckets]
    resources: dict[str, RangeBuckets]
    schemas: dict[str, pl.Schema]
    organisations: pl.LazyFrame
    read: dict[str, int]  # resources read back, per type

    @classmethod
    def build(cls, run: RunFolder, lineage: pl.LazyFrame, files: Mapping[str, Sequence[Path]], systems: Systems,
              folder: Path, bucket_rows: int | None = None, executor: Executor | None = None) -> Staged:
        """Stage the run's canonical rows and the resources of ``files`` in buckets under ``folder``,
        each a job on ``executor`` (this process by default): the canonical rows, and each type's
        NDJSON decoded and split (the round trip's staging is mostly JSON decoding)."""
        pairs = int(lineage.select(pl.len()).collect(engine="streaming").item())  # memory: a count
        count = bucket_count(pairs, bucket_rows)
        folder.mkdir(parents=True, exist_ok=True)
        # Organization stays here: one per practice, held whole (every Patient bucket reads them all)
        types = [t for t in INVERSES if t != "Organization"]
        # the largest inputs first, so that the last job to start is a short one
        types.sort(key=lambda t: -sum(f.stat().st_size for f in files.get(t, [])))
        jobs = [StageJob(run.path, folder, count, systems, lineage=lineage),
                *(StageJob(run.path, folder, count, systems, resource_type=t, files=tuple(files.get(t, [])))
                  for t in types)]
        # One bucket (a small run): its jobs take less than starting worker processes, so here
        done = (executor if executor is not None and count > 1 else LocalExecutor()).map(stage, jobs)
        rows, schemas = done[0].rows, done[0].schemas
        resources: dict[str, RangeBuckets] = {}
        read: dict[str, int] = {}
        for t in INVERSES:  # in INVERSES' order, whatever order the jobs ran in
            if t == "Organization":
                continue
            staged = done[1 + types.index(t)]
            resources[t], read[t] = staged.rows[t], staged.read
            schemas[t] = staged.schemas[t]
        organisations, schemas["Organization"], read["Organization"] = _organisations(files, systems, folder)
        return cls(count, rows, {t: resources[t] for t in INVERSES if t in resources}, schemas, organisations,
                   {t: read[t] for t in INVERSES})

    def rows_of(self, buckets: Sequence[int]) -> dict[str, pl.LazyFrame]:
        """Every canonical table's rows (with ``fhir_type``, ``fhir_id``) of ``buckets``."""
        return {t: _scan(b, buckets, self.schemas[t]) for t, b in self.rows.items()}

    def resources_of(self, buckets: Sequence[int]) -> dict[str, pl.LazyFrame]:
        """Every type's resources of ``buckets`` (Organization: all of them)."""
        found = {t: _scan(b, buckets, self.schemas[t]) for t, b in self.resources.items()}
        return found | {"Organization": self.organisations}

    def close(self) -> None:
        for buckets in (*self.rows.values(), *self.resources.values()):
            buckets.close()


def _scan(buckets: RangeBuckets, which: Sequence[int], schema: pl.Schema) -> pl.LazyFrame:
    paths = [p for b in which for p in buckets.parts[b]]
    if not paths:
        return pl.LazyFrame(schema=schema)
    return pl.scan_parquet(paths).drop(_HASH, PART, strict=False)


class RowCounter:
    """Distinct (table, source_file, source_row) over the buckets of one group: a source
    row with two resources of the group may have them in two buckets. Rows go into range
    buckets of ``source_row`` (so one row's copies meet) and are counted a bucket at a time."""

    def __init__(self, folder: Path, rows_per_bucket: int = 1_000_000, max_row: int = 0) -> None:
        step = max(rows_per_bucket, 1)
        bounds = pl.Series("source_row", list(range(step, max(max_row, 0) + 1, step)), dtype=pl.Int64)
        self.buckets = RangeBuckets(folder, "source_row", bounds)

    def add(self, rows: pl.DataFrame) -> None:
        self.buckets.add(rows.select("table", "source_file", "source_row").unique())

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for i in range(self.buckets.count):
            if not self.buckets.parts[i]:
                continue
            for table, n in (self.buckets.read(i).unique().group_by("table").len().iter_rows()):
                out[str(table)] = out.get(str(table), 0) + int(n)
        return out

    def close(self) -> None:
        shutil.rmtree(self.buckets.folder, ignore_errors=True)
