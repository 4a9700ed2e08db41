"""Invariant 2: the FHIR output and the source rows trace to each other through lineage.

Invariant 1 (rows read = Σ dispositions, per file) is ``migrate.reconcile.rows_invariant``.
Invariant 2 closes the loop from the other end:

- every source row whose disposition is ``migrated`` or ``already_at_target`` (an update
  of the receiving record) has at least one FHIR resource in lineage (``fhir_type`` and
  ``fhir_id`` set);
- every resource in ``fhir/ndjson/<Type>.ndjson`` (or ``.ndjson.gz``: polars decompresses
  it as it streams) is named by at least one lineage row,
  except the types that are not made from one record (``UNTRACED_TYPES``: Organization,
  shared reference data, and the Provenance of each bundle, the audit trail itself), which
  are counted apart;
- every resource lineage names exists in the NDJSON output.

Links are read from the run's ``lineage.parquet`` (the pipeline merges the FHIR writer's
links into it, one row per resource a source row became), or from the writer's own
``fhir/lineage.parquet`` when ``lineage.parquet`` names no resource at all.

A run without ``fhir/ndjson/*.ndjson`` has no FHIR output to check: the invariant is then
"not applicable", never "holds". Rows and resources are joined as pairs of 64-bit hashes
with polars (no Python loop); the failures named in the report are looked up again by
those hashes, with their real file, row, type and id.
"""

from __future__ import annotations

import math
import tempfile
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import polars as pl

from migrate.errors import InputError
from migrate.reconcile import failure_lines
from migrate.reports.rundata import RunFolder
from migrate.staging import batches, write_part
from migrate.summary import RowsInvariant, Verdict

NOT_APPLICABLE = "not applicable: no FHIR output"
UNTRACED_TYPES = ("Organization", "Provenance")  # reference data and the audit trail: no single source row
CARRIED = ("migrated", "already_at_target")  # dispositions that must become a resource
EXAMPLES = 20  # how many failing rows or resources the report names
BUCKETS = 8  # hash buckets the set differences are taken in, at the least
# Hash rows a bucket of each set holds, aimed at (from lineage's rows); also the rows read at
# once. A bucket's four sets of 16-byte pairs and its joins: ~0.3 GB whatever the extract.
SPILL_ROWS = 4_000_000
# memory: threads of invariant 2: NDJSON files (and lineage) read at once, each holding a batch of
# ``SPILL_ROWS`` lines' heads and hashes (~0.2 GB), then buckets compared at once (~0.3 GB each):
# two, for the two cores of the machines measured (polars reads a file, gzip or not, on about one).
READERS = 2
_RESOURCE_SCHEMA = {"resourceType": pl.String, "id": pl.String}
# A resource line's head split at its quotes: the fields a line written by the FHIR writer
# starts with (None: the type, then the id, each non-empty, followed by a closing quote).
_HEAD_FIELDS = ("{", "resourceType", ":", None, ",", "id", ":", None, None)


def _heads(path: Path) -> pl.LazyFrame:
    """(fhir_type, fhir_id) of every resource line of one NDJSON file, null where a line does
    not start as the FHIR writer writes it.

    Resources are written ``{"resourceType":…,"id":…`` first, so each line's head is read
    by polars' CSV reader splitting at quote characters and keeping the first nine fields:
    no JSON parse of the rest of the line (at a million patients 13 GB), and no copy of it.
    """
    # ``{"resourceType":"T","id":"I"`` is fields {, resourceType, :, T, ",", id, :, I, then more.
    parts = pl.scan_csv(path, has_header=False, separator='"', quote_char=None, infer_schema=False,
                        schema={f"f{i}": pl.String for i in range(len(_HEAD_FIELDS))},
                        truncate_ragged_lines=True, missing_columns="insert", extra_columns="ignore")
    f = [pl.col(f"f{i}") for i in range(len(_HEAD_FIELDS))]
    head = pl.all_horizontal([f[i] == text for i, text in enumerate(_HEAD_FIELDS) if text is not None]
                             + [f[3] != "", f[7] != "", f[8].is_not_null()]).fill_null(False)
    return parts.filter(f[0].is_not_null() | f[1].is_not_null()).select(
        pl.when(head).then(f[3]).alias("fhir_type"), pl.when(head).then(f[7]).alias("fhir_id"))


def _parsed(path: Path) -> pl.LazyFrame:
    """(fhir_type, fhir_id) of one NDJSON file by a JSON parse of every line: for a file with
    any line of another shape than the writer's."""
    return pl.scan_ndjson(path, schema=_RESOURCE_SCHEMA).select(pl.col("resourceType").alias("fhir_type"),
                                                                pl.col("id").alias("fhir_id"))


@contextmanager
def _reading(path: Path) -> Iterator[None]:
    """Reading one NDJSON file: polars' and the decompressor's errors named as the file's."""
    try:
        yield
    except pl.exceptions.PolarsError as exc:
        raise InputError(f"{path}: not readable as NDJSON ({exc.__class__.__name__})") from None
    except OSError as exc:  # a damaged .ndjson.gz (polars decompresses it as it reads): named, never short
        from migrate.fhir.ndjson import unreadable

        raise unreadable(path, exc) from None


class _Spill:
    """Sets of hash rows spilled to files by bucket (a 64-bit hash column's value modulo
    ``buckets``), to be read back one bucket at a time: every copy of a value lands in the
    same bucket, so a set difference, a ``unique`` or a count of repeats taken bucket by bucket
    is the whole one. Files go in ``folder`` (a temporary directory the caller removes)."""

    def __init__(self, folder: Path, buckets: int) -> None:
        self.folder, self.buckets = folder, buckets
        self.paths: dict[tuple[str, int], list[Path]] = {}
        self.parts = 0
        self._lock = threading.Lock()  # sets are added from several threads (``_spill_resources``)

    def add(self, name: str, frame: pl.DataFrame, by: str) -> None:
        """Append ``frame``'s rows to set ``name``, each in the bucket of its ``by`` hash."""
        with self._lock:
            self.parts += 1
            part_no = self.parts
        split = frame.with_columns((pl.col(by) % self.buckets).cast(pl.Int64).alias("__bucket")).partition_by(
            "__bucket", as_dict=True)
        for key, part in split.items():
            bucket = int(key[0])
            path = self.folder / f"{name}-{bucket:05d}-{part_no:06d}.parquet"
            write_part(part.drop("__bucket"), path)
            with self._lock:
                self.paths.setdefault((name, bucket), []).append(path)

    def drop(self, name: str) -> None:
        """Forget (and delete) every row of set ``name``."""
        with self._lock:
            dropped = [self.paths.pop(k) for k in [k for k in self.paths if k[0] == name]]
        for path in (p for paths in dropped for p in paths):
            path.unlink()

    def bucket(self, names: list[str], bucket: int, schema: pl.Schema) -> pl.DataFrame:
        """The rows of sets ``names`` in ``bucket`` (``schema`` when there are none)."""
        paths = sorted(p for name in names for p in self.paths.get((name, bucket), []))
        # memory: one bucket of the named sets (~``SPILL_ROWS`` rows each)
        return pl.read_parquet(paths) if paths else pl.DataFrame(schema=schema)


class _Unread(Exception):
    """A line head the FHIR writer would not have written: the file is read by a JSON parse."""


def _head_batches(path: Path, keep: list[pl.Expr]) -> Iterator[pl.DataFrame]:
    """``keep`` over one NDJSON file's line heads, ``SPILL_ROWS`` lines at a time; raises
    ``_Unread`` at the first batch with a line whose head is not the writer's."""
    unread = (pl.col("fhir_type").is_null() | pl.col("fhir_id").is_null()).alias("__unread")
    for batch in batches(_heads(path).select(*keep, unread), SPILL_ROWS):
        if batch.get_column("__unread").any():
            raise _Unread
        yield batch.drop("__unread")


def _spill_file(spill: _Spill, name: str, parts: Iterator[pl.DataFrame]) -> dict[str, int]:
    """Spill ``parts`` (fhir_type, exempt, p1, p2) to set ``name``; resources per type."""
    counts: dict[str, int] = {}
    for keys in parts:
        for kind, n in keys.group_by("fhir_type").len().iter_rows():
            counts[str(kind)] = counts.get(str(kind), 0) + int(n)
        spill.add(name, keys.drop("fhir_type"), "p1")
    return counts


def _spill_resources(run: RunFolder, spill: _Spill, pool: ThreadPoolExecutor) -> tuple[dict[str, int], list[str]]:
    """Resources per type, and the sets spilled: each resource's (type, id) as two hashes, with ``exempt``, spilled
    to sets ``resources-<n>`` (one per NDJSON file), each file a task on ``pool``, the largest first.

    The hashes are taken as each file streams by, ``SPILL_ROWS`` lines at a time: a
    resource's id is never held as text, nor a whole file's resources (at a million patients
    ~17M resources, ~10M in the largest file). A file with a line of another shape than the
    writer's is read again whole by a JSON parse (what it spilled so far is dropped)."""
    keep = [pl.col("fhir_type").cast(pl.String), pl.col("fhir_type").is_in(UNTRACED_TYPES).alias("exempt"),
            *_pair_keys()]

    def one(n: int, path: Path) -> dict[str, int]:
        name = f"resources-{n}"
        with _reading(path):
            try:
                return _spill_file(spill, name, _head_batches(path, keep))
            except _Unread:
                spill.drop(name)
                return _spill_file(spill, name, batches(_parsed(path).select(*keep), SPILL_ROWS))

    paths = run.fhir_ndjson()
    largest = sorted(range(len(paths)), key=lambda n: -paths[n].stat().st_size)
    tasks = {n: pool.submit(one, n, paths[n]) for n in largest}
    counts: dict[str, int] = {}
    for n in range(len(paths)):  # merged in file order, whichever ended first
        for kind, k in tasks[n].result().items():
            counts[kind] = counts.get(kind, 0) + k
    return dict(sorted(counts.items())), [f"resources-{n}" for n in range(len(paths))]


_NAMES = pl.Schema({"fhir_type": pl.String(), "fhir_id": pl.String()})


def _first(names: pl.DataFrame) -> pl.DataFrame:
    """The first ``EXAMPLES`` distinct (fhir_type, fhir_id) of ``names``, in order."""
    return names.unique().sort("fhir_type", "fhir_id").head(EXAMPLES)


def _first_named(path: Path, wanted: list[pl.DataFrame]) -> list[pl.DataFrame]:
    """For each frame of hash pairs (p1, p2) in ``wanted``, the first ``EXAMPLES`` (fhir_type,
    fhir_id) (``_first``) of the resources of one NDJSON file with those hashes.

    The file streams by ``SPILL_ROWS`` lines at a time as ``_spill_resources`` reads it (line
    heads, or a JSON parse when a head is not the writer's), each batch's matches merged
    into the examples so far."""
    keep = [pl.col("fhir_type").cast(pl.String), pl.col("fhir_id").cast(pl.String), *_pair_keys()]
    pairs = [hashes.select("p1", "p2") for hashes in wanted]

    def scan(parts: Iterator[pl.DataFrame]) -> list[pl.DataFrame]:
        # memory: one batch of ``SPILL_ROWS`` lines' (type, id, hashes), and ``EXAMPLES`` names per
        # frame of ``wanted``: the whole file's ids (~10M at 1M patients) were held before
        found = [pl.DataFrame(schema=_NAMES) for _ in pairs]
        for batch in parts:
            found = [_first(pl.concat([names, batch.join(hashes, on=["p1", "p2"], how="semi")
                                       .select("fhir_type", "fhir_id")]))
                     for names, hashes in zip(found, pairs)]
        return found

    with _reading(path):
        try:
            return scan(_head_batches(path, keep))
        except _Unread:
            return scan(batches(_parsed(path).select(*keep), SPILL_ROWS))


_ROWS = pl.Schema({"r1": pl.UInt64(), "r2": pl.UInt64()})
_PAIRS = pl.Schema({"p1": pl.UInt64(), "p2": pl.UInt64()})
_RESOURCES = pl.Schema({"exempt": pl.Boolean(), "p1": pl.UInt64(), "p2": pl.UInt64()})


_KEY = "__pair"


def _keyed(frame: pl.DataFrame, first: str, second: str) -> pl.DataFrame:
    """``frame`` with its two 64-bit hashes also as one 128-bit key (``first`` high, ``second``
    low: the same pair, the same key): one-column hash joins, uniques and group-bys, measured at
    1M patients about twice as fast as on the two columns."""
    return frame.with_columns((pl.col(first).cast(pl.UInt128) * (1 << 64) + pl.col(second).cast(pl.UInt128))
                              .alias(_KEY))


def _differences(spill: _Spill, resources: list[str], pool: ThreadPoolExecutor
                 ) -> tuple[int, int, pl.DataFrame, pl.DataFrame, pl.DataFrame, pl.DataFrame]:
    """Invariant 2's counts and failures from the spilled sets ``carried`` and ``linked``
    (r1, r2), ``named`` (p1, p2) and ``resources`` (the sets of each NDJSON file: exempt, p1,
    p2), a bucket at a time: (carried rows, resources not traced by design, carried rows no
    link names, resources no link names, named resources not written, resources written more
    than once with their count ``len``). Each set difference is taken before its ``unique``
    (the same rows: a copy of a row is kept or dropped with it), so only the few failures are
    made unique."""
    def bucket(k: int) -> tuple[int, int, dict[str, pl.DataFrame]]:
        carried = _keyed(spill.bucket(["carried"], k, _ROWS), "r1", "r2")
        n_carried = carried.get_column(_KEY).n_unique()
        found: dict[str, pl.DataFrame] = {}
        # memory: held: the failures only (hash pairs), none when the invariant holds
        found["without"] = carried.join(_keyed(spill.bucket(["linked"], k, _ROWS), "r1", "r2").select(_KEY),
                                        on=_KEY, how="anti").unique(_KEY).select("r1", "r2")
        del carried
        named = _keyed(spill.bucket(["named"], k, _PAIRS), "p1", "p2")
        written = _keyed(spill.bucket(resources, k, _RESOURCES), "p1", "p2")
        exempt = int(written.get_column("exempt").sum())
        found["untraced"] = (written.filter(~pl.col("exempt")).join(named.select(_KEY), on=_KEY, how="anti")
                             .unique(_KEY).select("p1", "p2"))
        found["dangling"] = named.join(written.select(_KEY), on=_KEY, how="anti").unique(_KEY).select("p1", "p2")
        # A resource written twice (two partitions, say, both writing one patient) would load as
        # one and leave the counts a resource apart from what was migrated: named, never silent.
        found["repeated"] = (written.group_by(_KEY).agg(pl.col("p1").first(), pl.col("p2").first(), pl.len())
                             .filter(pl.col("len") > 1).drop(_KEY))
        return n_carried, exempt, found

    # memory: ``READERS`` buckets at once (each ~``SPILL_ROWS`` rows of each set), in bucket order
    done = list(pool.map(bucket, range(spill.buckets)))
    without, untraced, dangling, repeated = (pl.concat([found[p] for _, _, found in done])
                                             for p in ("without", "untraced", "dangling", "repeated"))
    return sum(d[0] for d in done), sum(d[1] for d in done), without, untraced, dangling, repeated


def _pair_keys() -> list[pl.Expr]:
    """A resource's (type, id) as two 64-bit hashes: joins on 16 bytes, not two strings."""
    pair = pl.struct(pl.col("fhir_type").cast(pl.String), pl.col("fhir_id").cast(pl.String))
    return [pair.hash(seed=1).alias("p1"), pair.hash(seed=2).alias("p2")]


def _row_keys() -> list[pl.Expr]:
    """A source row's (file, row) as two 64-bit hashes."""
    row = pl.struct(pl.col("source_file").cast(pl.String), pl.col("source_row").cast(pl.Int64))
    return [row.hash(seed=1).alias("r1"), row.hash(seed=2).alias("r2")]


def _links(frame: pl.LazyFrame) -> pl.LazyFrame:
    """(source_file, source_row, fhir_type, fhir_id) of every row naming a resource."""
    links = frame.select("source_file", "source_row", "fhir_type", "fhir_id")
    # A source row that became several resources may be recorded as lists: one row per resource.
    schema = links.collect_schema()
    lists = [c for c in ("fhir_type", "fhir_id") if isinstance(schema[c], pl.List)]
    return (links.explode(lists) if lists else links).filter(pl.col("fhir_id").is_not_null())


def fhir_output(run: RunFolder) -> tuple[dict[str, Any], dict[str, Any]]:
    """(resources per FHIR type, invariant 2) for ``run``.

    The first is ``{"present", "resources": {type: n}, "total"}``; the second
    ``{"applicable", "holds", "status", counts..., "examples"}`` with ``holds`` null when
    the run has no FHIR output. Rows and resources are compared as pairs of 64-bit hashes
    (a false match needs two independent 64-bit collisions), spilled to hash-bucket files
    and compared a bucket at a time (``SPILL_ROWS``), so the memory does not grow with the
    extract; the examples are then looked up by those hashes with their real names.
    """
    if not run.fhir_ndjson():
        return ({"present": False, "resources": {}, "total": 0},
                {"applicable": False, "holds": None, "status": NOT_APPLICABLE})
    lineage = run.scan("lineage.parquet")
    sources = [_links(lineage)]
    # The pipeline merges the FHIR writer's links into lineage.parquet; read the writer's own
    # fhir/lineage.parquet only when lineage.parquet names no resource at all.
    # memory: one row (``limit(1)``)
    if run.has("fhir/lineage.parquet") and sources[0].limit(1).collect().height == 0:
        sources = [_links(run.scan("fhir/lineage.parquet"))]
    links = pl.concat([f.select(*_row_keys(), *_pair_keys()) for f in sources])
    carried = lineage.filter(pl.col("disposition").cast(pl.String).is_in(CARRIED)).select(*_row_keys())
    # memory: bounded. Four sets of 16-byte pairs (at 1M patients ~13M carried rows, ~13M linked
    # rows, ~17M resources named, ~17M resources) are spilled to hash-bucket files as they
    # stream (lineage once, each NDJSON file once) and the set differences, uniques and repeat
    # counts are taken a bucket at a time, ~SPILL_ROWS rows of each set: whole, they took
    # ~1 GB at 1M patients and grew with the extract.
    buckets = max(BUCKETS, math.ceil(run.height("lineage.parquet") / SPILL_ROWS))
    with tempfile.TemporaryDirectory(prefix="handover-invariant-") as folder, \
            ThreadPoolExecutor(max_workers=READERS) as pool:
        spill = _Spill(Path(folder), buckets)

        def spill_lineage() -> None:
            for batch in batches(carried, SPILL_ROWS):
                spill.add("carried", batch, "r1")
            for batch in batches(links, SPILL_ROWS):
                spill.add("linked", batch.select("r1", "r2"), "r1")
                spill.add("named", batch.select("p1", "p2"), "p1")

        lineage_spilled = pool.submit(spill_lineage)  # beside the NDJSON files: lineage is read once either way
        counts, files = _spill_resources(run, spill, pool)
        lineage_spilled.result()
        n_carried, exempt, without, untraced, dangling, repeated = _differences(spill, files, pool)
    copies = int(repeated.get_column("len").sum()) - repeated.height
    total = sum(counts.values())
    totals = {"present": True, "resources": counts, "total": total}

    problems = [(without.height, "migrated or already-at-target rows without a FHIR resource"),
                (untraced.height, "FHIR resources that trace to no source row"),
                (dangling.height, "resources named in lineage but missing from the NDJSON output"),
                (copies, "extra copies of resources written more than once")]
    holds = all(n == 0 for n, _ in problems)
    status = "holds: every migrated row has a FHIR resource and every resource traces to a source row" if holds \
        else "fails: " + "; ".join(f"{n:,} {what}" for n, what in problems if n)
    invariant = {
        "applicable": True,
        "holds": holds,
        "status": status,
        "migrated_rows": n_carried,
        "migrated_rows_without_resource": without.height,
        "resources": total,
        "resources_without_source": untraced.height,
        "resources_not_traced_by_design": exempt,  # UNTRACED_TYPES
        "lineage_resources_missing": dangling.height,
        "resources_written_more_than_once": repeated.height,
        "examples": _examples(run, lineage, sources, without, untraced, dangling, repeated),
    }
    return totals, invariant


def _examples(run: RunFolder, lineage: pl.LazyFrame, sources: list[pl.LazyFrame], without: pl.DataFrame,
              untraced: pl.DataFrame, dangling: pl.DataFrame,
              repeated: pl.DataFrame) -> dict[str, list[dict[str, Any]]]:
    """The first EXAMPLES failures of each kind, by name (read again only when there are some)."""
    rows: list[dict[str, Any]] = []
    if without.height:
        # memory: ``EXAMPLES`` rows
        found = (lineage.select("source_file", "source_row", *_row_keys()).join(without.lazy(), on=["r1", "r2"],
                                                                               how="semi")
                 .select("source_file", "source_row").unique().sort("source_file", "source_row").head(EXAMPLES)
                 .collect(engine="streaming"))
        rows = [{"file": f, "row": int(r)} for f, r in found.iter_rows()]
    orphans: list[dict[str, Any]] = []
    twice: list[dict[str, Any]] = []
    if untraced.height or repeated.height:
        # memory: ``EXAMPLES`` names per file and kind (``_first_named`` streams each file)
        per_file = [_first_named(path, [untraced, repeated]) for path in run.fhir_ndjson()]

        def by_name(kind: int) -> list[dict[str, Any]]:
            names = _first(pl.concat([firsts[kind] for firsts in per_file]))
            return [{"type": t, "id": i} for t, i in names.iter_rows()]

        orphans, twice = by_name(0), by_name(1)
    missing: list[dict[str, Any]] = []
    if dangling.height:
        # memory: ``EXAMPLES`` rows
        found_links = (pl.concat([f.select(pl.col("fhir_type").cast(pl.String), pl.col("fhir_id").cast(pl.String),
                                           *_pair_keys()) for f in sources])
                       .join(dangling.lazy(), on=["p1", "p2"], how="semi").select("fhir_type", "fhir_id").unique()
                       .sort("fhir_type", "fhir_id").head(EXAMPLES).collect(engine="streaming"))
        missing = [{"type": t, "id": i} for t, i in found_links.iter_rows()]
    return {"rows_without_resource": rows, "resources_without_source": orphans,
            "lineage_resources_missing": missing, "resources_written_more_than_once": twice}


def failure_line(fhir: dict[str, Any]) -> str | None:
    """Invariant 2's failure as one sentence naming it, with its first examples; None when
    it holds or does not apply."""
    if not fhir.get("applicable") or fhir.get("holds"):
        return None
    examples = fhir.get("examples", {})
    shown = [f"{e['file']} row {e['row']} has no resource" for e in examples.get("rows_without_resource", [])[:3]]
    shown += [f"{e['type']} {e['id']} traces to no row" for e in examples.get("resources_without_source", [])[:3]]
    shown += [f"{e['type']} {e['id']} is missing" for e in examples.get("lineage_resources_missing", [])[:3]]
    shown += [f"{e['type']} {e['id']} is written more than once"
              for e in examples.get("resources_written_more_than_once", [])[:3]]
    return ("Invariant 2 (FHIR traceability) " + str(fhir["status"])
            + (f"; first examples: {', '.join(shown)}" if shown else ""))


def verdict(invariant: RowsInvariant, fhir: dict[str, Any]) -> Verdict:
    """Both invariants in one place: whether all hold, and a sentence per failure naming
    the invariant and its first examples (the HTML banner, the CLI's error)."""
    failures = failure_lines(invariant)
    line = failure_line(fhir)
    if line is not None:
        failures.append(line)
    return {"holds": not failures, "failures": failures}
