"""Each round-trip bucket's own rows of the lookups its expected rows join.

A bucket holds the expected rows and the resources whose id hashes to it
(``migrate.fhir.roundtrip_buckets``). The expected rows are completed from lookups keyed
by patient or referral (``migrate.fhir.expected``: a referral's cohort, raised priority,
ServiceRequest and EpisodeOfCare; a patient's Patient, survivor, verification code, sharing
entries, sharing block; a patient row's Organization), and one bucket's keys are spread
over the whole of every lookup. Kept to the bucket's keys by a semi join in each bucket
(``expected.keyed``), every bucket streamed every lookup whole: buckets x rows of work,
growing with the square of the extract (152 buckets at 5M patients: 8,301 CPU s of round
trip against ~470 at 1M; benchmarks/README.md).

So every lookup is split once, here, into the buckets that need its rows: the keys the
rows of each bucket name (``needs``: the key and the bucket) and the lookup are both
split by a hash of the key, each hash part joined alone (a Grace hash join), and each
lookup row written to every bucket that names its key. The keys a bucket names:

- referral keys: its referral rows' and contact rows' (``REFERRAL``);
- patient keys: its rows' of every table, the patients of the referrals named above (a
  contact's patient is its referral's), and the survivors of all of those (``PATIENT``);
- patient rows, by (file, row): its patient rows' (``ROW``: the Organization of the row).

A bucket's part of a lookup holds every row whose key the bucket names — more rows than
some of its groups join, never fewer — and each bucket still keeps a lookup to its keys
before joining (``expected.keyed``), so each join gives the rows it gave with the whole
lookup. Lookups whose consumers join on other keys are not split: the Flags comparison,
whose jobs span every bucket (``roundtrip._compare``), reads the whole ones.
"""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import polars as pl
import pyarrow.parquet as pq

from migrate.fhir import expected as ex
from migrate.fhir import roundtrip_buckets
from migrate.fhir.roundtrip_buckets import _HASH, TABLES, Staged, _hash_bounds, _scan
from migrate.reports.rundata import RunFolder
from migrate.staging import RangeBuckets, pulled

REFERRAL = ["referral_key"]
PATIENT = ["patient_key"]
ROW = ["source_file", "source_row"]
# memory: lookup rows and needed keys per hash part joined at a time, and per chunk split
KEY_ROWS = 1_000_000
_PART = "__key_part"
# Split from this many buckets: each bucket streaming every whole lookup costs buckets x rows,
# the split rows (written once per bucket naming a key). Measured at 1M patients (31 buckets):
# the split cost 94 CPU s and saved ~100 in the comparisons (even); at 5M (152 buckets) the
# comparisons streaming whole lookups took most of 8,301 CPU s (benchmarks/roundtrip.md).
SPLIT_FROM_BUCKETS = 48
_SEED = 7_321  # any fixed seed: the parts are made and read by one process
# The run files split, by key, with the columns the bucketed comparisons read of them (through
# ``expected.Links.scan``; a column not listed is an error there, never a silent null): a
# bucket's copy of a whole row would be written once per bucket naming its key.
RUN_FILES: dict[str, tuple[list[str], tuple[str, ...] | None]] = {
    "cohorts.parquet": (REFERRAL, ("referral_key", "cohort", "cohort_reason")),
    "patients.parquet": (PATIENT, ("patient_key", "nhs_number_verification")),
    "exceptions.parquet": (PATIENT, ("patient_key", "flag_code")),
    "sharing.parquet": (PATIENT, None),  # every column (expected.expect_consents)
}


def _part_of(on: Sequence[str], parts: int) -> pl.Expr:
    key = pl.col(on[0]) if len(on) == 1 else pl.struct(list(on))
    return (key.hash(seed=_SEED) % parts).cast(pl.UInt32).alias(_PART)


def _rows(frame: pl.LazyFrame) -> int:
    # memory: a count
    return int(frame.select(pl.len()).collect(engine="streaming").item())


def _split_parts(frame: pl.LazyFrame, on: Sequence[str], parts: int, folder: Path) -> RangeBuckets:
    """``frame`` in ``parts`` hash parts of ``on`` (``_PART`` kept in the rows)."""
    out = RangeBuckets(folder, _PART, pl.Series(_PART, range(1, parts), pl.UInt32))
    for chunk in pulled(frame.with_columns(_part_of(on, parts)), KEY_ROWS, folder.parent):
        out.add(chunk)  # memory: a chunk of ``KEY_ROWS`` rows
    return out


@dataclass
class Keys:
    """The distinct (key, bucket) pairs the buckets' rows name, in hash parts of the key: made
    once, read by every lookup of that key (``split``)."""

    on: list[str]
    parts: RangeBuckets

    @classmethod
    def of(cls, needs: pl.LazyFrame, on: Sequence[str], lookups: Sequence[pl.LazyFrame], folder: Path) -> Keys:
        """``needs``' (``on``, ``__id_bucket``) in parts of about ``KEY_ROWS`` rows of the largest of
        ``needs`` and the ``lookups`` to be split by them."""
        on = list(on)
        folder.mkdir(parents=True, exist_ok=True)
        sunk = folder / "needs.parquet"
        # streamed once (the needs are a query over every bucket's rows): counted, then read in chunks
        needs.select(*on, _HASH).drop_nulls(on).sink_parquet(sunk, compression="lz4", row_group_size=KEY_ROWS)
        rows = pq.ParquetFile(sunk).metadata.num_rows
        count = max(1, -(-max(rows, *(_rows(frame) for frame in lookups)) // KEY_ROWS))
        raw = RangeBuckets(folder / "raw", _PART, pl.Series(_PART, range(1, count), pl.UInt32))
        for offset in range(0, rows, KEY_ROWS):
            # memory: one row group of the sunk needs (``KEY_ROWS`` rows)
            raw.add(pl.scan_parquet(sunk).slice(offset, KEY_ROWS).with_columns(_part_of(on, count)).collect())
        sunk.unlink()
        parts = RangeBuckets(folder / "keys", _PART, raw.bounds)
        for p in range(raw.count):
            if raw.parts[p]:
                parts.add(raw.read(p).unique())  # memory: one part's pairs (~``KEY_ROWS``)
        raw.close()
        return cls(on, parts)

    def close(self) -> None:
        self.parts.close()


def split(lookup: pl.LazyFrame, keys: Keys, count: int, folder: Path, on: Sequence[str] | None = None) -> RangeBuckets:
    """``lookup``'s rows in ``count`` buckets: each row in every bucket whose ``keys`` name
    its key (``on``, the keys' own names by default); a row no bucket names in none."""
    on = list(on or keys.on)
    renamed = dict(zip(keys.on, on, strict=True))
    sides = _split_parts(lookup, on, keys.parts.count, folder / "parts")
    out = RangeBuckets(folder / "buckets", _HASH, _hash_bounds(count))
    held: list[pl.DataFrame] = []
    for p in range(sides.count):
        if sides.parts[p] and keys.parts.parts[p]:
            # memory: one hash part of the lookup and of the keys needed (~``KEY_ROWS`` rows each)
            needed = keys.parts.read(p).drop(_PART).rename(renamed)
            held.append(sides.read(p).drop(_PART).join(needed, on=on))
        if held and (sum(f.height for f in held) >= KEY_ROWS or p == sides.count - 1):
            out.add(pl.concat(held))  # memory: the joined rows of a few parts, then written
            held = []
    sides.close()
    out.compact(roundtrip_buckets.MAX_PARTS)  # a bucket's plans scan its lookups many times: one file each when many
    return out


@dataclass
class Lookups:
    """Every split lookup (``LINKS``' frames and ``RUN_FILES``, and the merged clusters'
    values) in the round trip's ``count`` buckets."""

    count: int
    links: dict[str, RangeBuckets]  # Links field -> its buckets
    files: dict[str, RangeBuckets]  # run file -> its buckets
    clusters: RangeBuckets
    schemas: dict[str, pl.Schema]

    @classmethod
    def build(cls, run: RunFolder, links: ex.Links, staged: Staged, clusters: Path, folder: Path) -> Lookups:
        """Split ``links`` (staged), ``RUN_FILES`` and ``clusters`` (``expected.survivor_values``,
        written) into ``staged``'s buckets under ``folder``."""
        count = staged.count

        def rows(tables: Sequence[str], columns: Sequence[str]) -> pl.LazyFrame:
            frames = [_scan_with_hash(staged.rows[t], staged.schemas[t]).select(*columns, _HASH) for t in tables]
            return pl.concat(frames, how="vertical_relaxed")

        schemas: dict[str, pl.Schema] = {}
        split_links: dict[str, RangeBuckets] = {}
        files: dict[str, RangeBuckets] = {}
        run_files = {name: run.scan(name).select(list(columns)) if columns else run.scan(name)
                     for name, (_, columns) in RUN_FILES.items() if run.has(name)}

        def place(name: str, frame: pl.LazyFrame, keys: Keys, on: list[str] | None = None) -> RangeBuckets:
            schemas[name] = frame.collect_schema()
            return split(frame, keys, count, folder / f"split-{name}", on)

        by_referral = [links.referrals, links.raised, *(f for n, f in run_files.items() if RUN_FILES[n][0] == REFERRAL)]
        referrals = Keys.of(rows(["referrals", "contacts"], REFERRAL), REFERRAL, by_referral, folder / "referrals")
        split_links["referrals"] = place("referrals", links.referrals, referrals)
        split_links["raised"] = place("raised", links.raised, referrals)
        # the patients of the bucket's rows and of its referrals (a contact's patient is its referral's),
        # and their survivors: each written once, then scanned
        # memory: as one query, ``own`` read twice (listed, and joined to the survivors), the streaming
        # engine shared the two reads (a common subplan) and held every pair of the extract until the
        # second read came (924 MB at 1M patients, 458 written first; benchmarks/roundtrip.md)
        sunk = folder / "patients-own"
        sunk.mkdir(parents=True, exist_ok=True)
        own = _sunk(pl.concat([rows(TABLES, PATIENT), _scan_with_hash(split_links["referrals"], schemas["referrals"])
                               .select(*PATIENT, _HASH)]), sunk / "own.parquet")
        merged = run.scan("patients.parquet").select("patient_key", "survivor_key").filter(
            pl.col("survivor_key") != pl.col("patient_key"))
        # memory: the merged records' (patient_key, survivor_key) only (the join's built side)
        survivors = _sunk(own.join(merged, on="patient_key").select(pl.col("survivor_key").alias("patient_key"), _HASH),
                          sunk / "survivors.parquet")
        by_patient = [links.patients, *(f for n, f in run_files.items() if RUN_FILES[n][0] == PATIENT)]
        patients = Keys.of(pl.concat([own, survivors]), PATIENT, by_patient, folder / "patients")
        shutil.rmtree(sunk)
        split_links["patients"] = place("patients", links.patients, patients)
        rows_keys = Keys.of(rows(["patients"], ROW), ROW, [links.organisations], folder / "rows")
        split_links["organisations"] = place("organisations", links.organisations, rows_keys)
        for name, frame in run_files.items():
            files[name] = place(name, frame, patients if RUN_FILES[name][0] == PATIENT else referrals)
        clustered = place("clusters", pl.scan_parquet(clusters), patients, ["survivor_key"])
        for keys in (referrals, patients, rows_keys):
            keys.close()
        return cls(count, split_links, files, clustered, schemas)

    def links_of(self, links: ex.Links, bucket: int) -> ex.Links:
        """``links`` with bucket ``bucket``'s rows of every split lookup."""
        def own(name: str) -> pl.LazyFrame:
            return _scan(self.links[name], [bucket], self.schemas[name])

        scans = {name: _scan(b, [bucket], self.schemas[name]) for name, b in self.files.items()}
        return replace(links, patients=own("patients"), referrals=own("referrals"),
                       organisations=own("organisations"), raised=own("raised"), scans=scans)

    def clusters_of(self, bucket: int) -> pl.LazyFrame:
        return _scan(self.clusters, [bucket], self.schemas["clusters"])

    def close(self) -> None:
        for buckets in (*self.links.values(), *self.files.values(), self.clusters):
            buckets.close()


def _sunk(frame: pl.LazyFrame, path: Path) -> pl.LazyFrame:
    """``frame`` written to ``path`` (streaming), and a scan of it."""
    frame.sink_parquet(path, compression="lz4")
    return pl.scan_parquet(path)


def _scan_with_hash(buckets: RangeBuckets, schema: pl.Schema) -> pl.LazyFrame:
    """Every bucket's rows of a split lookup, with the bucket (``__id_bucket``)."""
    paths = [p for parts in buckets.parts for p in parts]
    if not paths:
        return pl.LazyFrame(schema=dict(schema) | {_HASH: pl.UInt32})
    return pl.scan_parquet(paths)

