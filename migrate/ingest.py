"""Ingest: extract files → canonical tables + quarantine, every source row accounted for.

1. Each file is read once (``sources``) and mapped by its profile (``mapping``): a
   delimited or Parquet file feeds one table; an HL7 v2 file's messages are routed to the
   tables that take their events. Rows that cannot be read or mapped are quarantined.
2. Per canonical table, parents before children (patients, the source's own merges,
   referrals, contacts, codes): within a source whose profile says ``on_duplicate:
   quarantine`` a repeated key is quarantined (``duplicate_key``); the source's merges
   (HL7 A40), applied in message order, re-point every row sent under a prior patient id
   to its survivor; then the rows of each key apply in order (``migrate.updates``: profile
   rank, MSH-7, file, row), each state checked (required fields, references to patients
   and referrals, a contact's patient against its referral's) — a row that fails is
   quarantined and the state before it stands; rows replaced by a later row of their key
   get disposition ``merged``. The checks see the resolved state: the world the FHIR
   output describes.

Invariant kept: for every file, rows_read == canonical rows + superseded rows + merge rows
+ quarantined rows.
"""

from __future__ import annotations

import csv as pycsv
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING, Any

import polars as pl

from migrate import canonical, integrity, quarantine, updates
from migrate.errors import ProfileError
from migrate.manifest import sha256_file
from migrate.mapping import CompiledTable, apply_mapping, compile_table, explain_failures, missing_columns
from migrate.outputs import write_parquet
from migrate.profile import Profile, TableSpec
from migrate.progress import NULL_PROGRESS, Progress
from migrate.ingest_tables import apply_table, within_sources
from migrate.sources import InputFile, discover, read_columns, read_file
from migrate.staging import Parts, SortedKeys, collect_compact, compact, sink

if TYPE_CHECKING:
    from migrate.sources.hl7 import Hl7Read

# A table's key defaults to its source id when the profile does not map it.
_KEY_SOURCES = {"patient_key": "source_patient_id", "referral_key": "source_referral_id"}
# Parents first; merges need the patients they join.
_INGEST_ORDER = ("patients", "merges", "referrals", "contacts", "codes")
_ORDER = updates.ORDER  # position of a row among all sources of a table: the order rows apply in
_BATCH_ROWS = 500_000
# The tables some table's rows reference (their kept keys are held for the checks).
_REFERENCED = frozenset(parent for t in canonical.TABLES.values() for _, parent, _ in t.parents)


_SUPERSEDED = updates.SUPERSEDED_SCHEMA


@dataclass(frozen=True)
class FileStats:
    """What was read from one input file."""

    name: str
    table: str  # the table it feeds, or "patients+referrals+…" for an HL7 file
    bytes: int
    sha256: str
    rows_read: int


@dataclass(frozen=True)
class Ingested:
    """Canonical tables, quarantine and per-file statistics of one extract.

    ``superseded`` lists rows replaced by a later row with the same key (disposition
    ``merged``); ``merges`` the source's own patient merges (HL7 A40), whose rows are
    also ``merged``.
    """

    tables: dict[str, pl.LazyFrame]
    quarantine: pl.DataFrame
    files: tuple[FileStats, ...]
    heights: dict[str, int]
    superseded: pl.DataFrame = field(default_factory=lambda: pl.DataFrame(schema=_SUPERSEDED))
    merges: pl.DataFrame = field(default_factory=lambda: canonical.empty("merges"))
    # per table: updates rejected whose key kept the state of an earlier row
    kept_previous: dict[str, int] = field(default_factory=dict)
    repeated_deliveries: int = 0  # HL7 messages delivered again (same sender, control id and text)

    def update_counts(self) -> dict[str, Any]:
        """For the run summary: rows superseded by a later row of their key, and updates
        rejected while their key kept an earlier state, per table."""
        per_table = self.superseded.group_by("table").len()
        superseded = {str(t): int(n) for t, n in per_table.iter_rows()}
        return {
            "superseded": {t: superseded.get(t, 0) for t in canonical.TABLE_ORDER},
            "rejected_previous_kept": {t: self.kept_previous.get(t, 0) for t in canonical.TABLE_ORDER},
            "repeated_deliveries": self.repeated_deliveries,
        }



def check_layout(files: list[InputFile], profiles: Profile | Sequence[Profile] | None = None) -> None:
    """Every column a profile reads is present in every delimited/Parquet file; else exit 2."""
    problems = []
    for f in files:
        present = read_columns(f)
        if not present:
            continue  # HL7 (addressed by path) or an empty file: nothing to check
        absent = missing_columns(f.spec(), present)
        if absent:
            # The header is not quoted: a file without one would put a patient's record here.
            problems.append(f"{f.name} ({f.table}): missing column(s) {', '.join(absent)}; its first line has "
                            f"{len(present)} field(s) (is it the header the profile describes?)")
        problems += repeated_columns(f, present)
    if problems:
        names = ", ".join(sorted({f.profile.name for f in files}))
        raise ProfileError(f"the extract does not fit mapping profile {names}", problems)


def repeated_columns(f: InputFile, present: tuple[str, ...]) -> list[str]:
    """A column the profile reads that the header names more than once: which one is meant?"""
    return [f"{f.name} ({f.table}): column {c} appears {present.count(c)} times in the header"
            for c in f.spec().source_columns if present.count(c) > 1]


class _Sources:
    """The source scans of each table, to fetch raw records of rows that fail a later check."""

    def __init__(self) -> None:
        self._files: dict[tuple[str, str], tuple[pl.LazyFrame, CompiledTable]] = {}

    def add(self, table: str, name: str, frame: pl.LazyFrame, compiled: CompiledTable) -> None:
        self._files[(table, name)] = (frame, compiled)

    def with_raw(self, table: str, failed: pl.DataFrame) -> pl.DataFrame:
        """``failed`` with ``__raw`` (the source record as JSON) joined on file and row."""
        raws = []
        for (t, name), (frame, compiled) in self._files.items():
            rows = failed.filter(pl.col("source_file") == name).select("source_row") if t == table else None
            if rows is not None and rows.height:
                # a batch at a time, compacted: the few records found would otherwise hold every
                # batch of the source they came from
                raws.append(collect_compact(explain_failures(frame.join(rows.lazy(), on="source_row", how="semi"),
                                                             compiled).select("source_file", "source_row", "__raw")))
        raw = pl.concat(raws) if raws else pl.DataFrame(schema={"source_file": pl.String, "source_row": pl.Int64,
                                                                "__raw": pl.String})
        # A row that failed a check after being applied beside rows that failed mapping carries
        # their (empty) __raw column: replaced, so its quarantine row shows its record too.
        return failed.drop("__raw", strict=False).join(raw, on=["source_file", "source_row"], how="left",
                                                       maintain_order="left")


@dataclass
class _Mapped:
    """Everything read and mapped, before the table-level checks."""

    frames: dict[str, list[tuple[TableSpec, pl.LazyFrame]]] = field(default_factory=dict)
    quarantine: list[pl.DataFrame] = field(default_factory=list)
    failed_keys: dict[str, list[pl.Series]] = field(default_factory=dict)
    invalid: dict[str, list[pl.DataFrame]] = field(default_factory=dict)  # rows that failed mapping, per table
    superseded: list[pl.DataFrame] = field(default_factory=list)  # rows replaced (disposition merged)
    repeated_deliveries: int = 0
    stats: list[FileStats] = field(default_factory=list)
    sources: _Sources = field(default_factory=_Sources)
    cutover: date | None = None  # the reference for two-digit years (mapping.py)
    stage_dir: Path = Path(".")  # where mapped rows are staged (the run's work folder)


def _map_frame(mapped: _Mapped, table: str, spec: TableSpec, profile: Profile, source: pl.LazyFrame, name: str,
               order: pl.Expr) -> None:
    """Map one source frame into ``table``; failing rows to quarantine, good rows kept."""
    compiled = compile_table(spec, source.collect_schema(), profile, mapped.cutover)
    mapped.sources.add(table, name, source, compiled)
    source = source.with_columns(order.alias(_ORDER))
    # Mapped in batches: the expressions hold several copies of every string column while
    # they run, so a whole 10M-row file at once needs several GB; a batch needs little.
    # Good rows are staged as Parquet parts (``migrate.staging``): a 10M-row table is never
    # held whole; the table-level checks read it back a batch or a key range at a time.
    n = len(mapped.frames.get(table, []))
    good = Parts(mapped.stage_dir / f"{table}-{n:03d}")
    bad: list[pl.DataFrame] = []
    for batch in source.collect_batches(chunk_size=_BATCH_ROWS, maintain_order=True):
        # memory: one batch of ``_BATCH_ROWS`` rows
        out = apply_mapping(batch.lazy(), compiled).collect()
        ok = out["__reason"].is_null()
        good.add(out if bool(ok.all()) else out.filter(ok))
        if not bool(ok.all()):
            # Messages and raw records of the failing rows, from the batch in hand: reading
            # the source again for them was a second parse of the whole file.
            failed = out.filter(~ok)
            # memory: the batch's failing rows only
            details = explain_failures(batch.lazy().join(failed.select("source_row").lazy(), on="source_row",
                                                         how="semi"), compiled).collect()
            # memory: compacted (``staging.compact``): the failing rows alone would hold the whole
            # batch's strings until the table is applied, every batch's (the whole file at 5M).
            bad.append(compact(failed.join(details, on=["source_file", "source_row"], how="left",
                                           maintain_order="left")))
        del out, batch
    empty = apply_mapping(source.head(0), compiled).collect()
    if not good.paths:
        good.add(empty)
    frame = good.scan()
    failing = pl.concat(bad, how="vertical", rechunk=False) if bad else empty
    del bad
    if failing.height:
        key = canonical.TABLES[table].key
        if key is not None:
            mapped.failed_keys.setdefault(table, []).append(failing[key])
            # kept until its table is applied: a rejected update names the state that stands
            mapped.invalid.setdefault(table, []).append(failing)
        else:
            mapped.quarantine.append(quarantine.from_mapping(failing, table))
    mapped.frames.setdefault(table, []).append((spec, frame))


def _read_delimited(mapped: _Mapped, f: InputFile, rank: int, work_dir: Path) -> int:
    result = read_file(f, work_dir)
    mapped.quarantine.append(quarantine.from_reader(result.rejected, f.table))
    key = canonical.TABLES[f.table].key
    if key is not None:
        mapped.failed_keys.setdefault(f.table, []).append(
            _keys_of_rejected(result.rejected, f.spec(), key, result.columns))
    frame = result.frame
    if not result.columns:
        # An empty file still feeds its table (with no rows): its children's references are
        # checked against it, so they are quarantined as orphans, never waved through.
        frame = pl.LazyFrame(schema={**{c: pl.String() for c in f.spec().source_columns},
                                     "source_row": pl.Int64(), "source_file": pl.String()})
    order = pl.struct(pl.lit(rank).alias("rank"), pl.lit(None, dtype=pl.Datetime("us")).alias("at"))
    _map_frame(mapped, f.table, f.spec(), f.profile, frame, f.name, order)
    return result.rows_read


def _read_hl7(mapped: _Mapped, f: InputFile, work_dir: Path) -> Hl7Read:
    """Read one HL7 file: its invalid messages quarantined, its valid ones to route later
    (a control id is compared across every HL7 file before any message applies)."""
    from migrate.sources.hl7 import read_hl7

    paths = sorted({c for t in f.tables for c in f.spec(t).source_columns})
    result = read_hl7(f.path, f.name, paths, work_dir)
    mapped.quarantine.append(quarantine.from_reader(result.rejected, f.label))
    return result


def _deliveries(mapped: _Mapped, reads: dict[str, tuple[InputFile, Hl7Read]]) -> pl.DataFrame:
    """Re-delivered messages (``merged``, in ``mapped.superseded``) and messages reusing a
    control id (quarantined): the rows of both, not to be routed."""
    from migrate.sources.hl7_delivery import HEADER_COLUMNS, repeated_deliveries

    # memory: held: the header columns of every HL7 message (one row per message of the feeds):
    # a re-delivery is found by comparing each message with every other.
    headers = pl.concat([r.messages.select(HEADER_COLUMNS).collect() for _, r in reads.values()])
    again, conflicting = repeated_deliveries(headers)
    labels = pl.DataFrame({"source_file": list(reads), "table": [f.label for f, _ in reads.values()]})
    mapped.superseded.append(again.join(labels, on="source_file", how="left").select(
        "source_file", "source_row", "table", pl.lit(None, dtype=pl.String).alias("patient_key")))
    mapped.repeated_deliveries += again.height
    sender = pl.concat_str([pl.col("sending_app").fill_null(""), pl.col("sending_facility").fill_null("")],
                           separator="/")
    mapped.quarantine.append(conflicting.join(labels, on="source_file", how="left").select(
        "source_file", "source_row", "table", pl.lit("duplicate_control_id").alias("reason_code"),
        pl.lit(None, dtype=pl.String).alias("field"),
        pl.format("{} message {}: control id {} from {} was already used by {} message {} for a different message "
                  "(that one applies; this one is held for review)", "source_file", "source_row", "control_id",
                  sender, "first_file", "first_row").alias("message"),
        pl.struct(pl.col("sending_app").alias("MSH-3"), pl.col("sending_facility").alias("MSH-4"),
                  pl.concat_str(["message_type", "event"], separator="^").alias("MSH-9"),
                  pl.col("control_id").alias("MSH-10")).struct.json_encode().alias("raw")))
    return pl.concat([again.select("source_file", "source_row"), conflicting.select("source_file", "source_row")])


def _route_hl7(mapped: _Mapped, f: InputFile, rank: int, messages: pl.LazyFrame) -> None:
    """Map each valid message of ``f`` into the tables that take its event."""
    routed: list[str] = []
    for table in f.tables:
        spec = f.spec(table)
        routed += spec.events
        subset = messages.filter(pl.col("event").is_in(list(spec.events)))
        order = pl.struct(pl.lit(rank).alias("rank"), pl.col("sent_at").alias("at"))
        _map_frame(mapped, table, spec, f.profile, subset, f.name, order)
    unhandled = quarantine.unhandled_events(messages, routed, f.label, f.profile.name)
    mapped.quarantine.append(unhandled)


def _keys_of_rejected(rejected: pl.DataFrame, spec: TableSpec, key: str, header: tuple[str, ...]) -> pl.Series:
    """The key of each record that could not be split, read from its raw text where the
    key's column can still be found (a record with a stray field is usually intact there)."""
    fields = {f.name: f for f in spec.fields}
    source = fields.get(key) or fields.get(_KEY_SOURCES.get(key, ""))
    if rejected.height == 0 or source is None or source.column not in header:
        return pl.Series(key, [], dtype=pl.String)
    index = header.index(source.column)
    values = []
    for raw in rejected["raw"].to_list():
        try:
            parsed = next(pycsv.reader([raw.replace("\r", " ").replace("\n", " ")], delimiter=spec.delimiter,
                                       quotechar=spec.quote_char or '"'), [])
        except pycsv.Error:  # not even leniently splittable: its key is unknown
            continue
        if len(parsed) > index and parsed[index].strip():
            values.append(parsed[index].strip())
    return pl.Series(key, values, dtype=pl.String)


@dataclass
class _Parents:
    """What the checks of a child table read: the kept keys of each parent table (a
    referral's with its patient), the keys of parents that were quarantined, the source's
    merges."""

    good: dict[str, SortedKeys] = field(default_factory=dict)  # referrals': each with its patient_key
    bad: dict[str, pl.Series] = field(default_factory=dict)
    survivors: pl.DataFrame = field(default_factory=lambda: pl.DataFrame(schema=integrity.SURVIVORS_SCHEMA))


def _checks(table: str, parents: _Parents) -> updates.Check:
    """The checks each state of a ``table`` row must pass (``updates.apply_rows``)."""
    tdef = canonical.TABLES[table]

    def check(frame: pl.DataFrame) -> tuple[pl.DataFrame, list[pl.DataFrame]]:
        failed: list[pl.DataFrame] = []
        for step in (integrity.deferred_required, integrity.patient_links):
            split = step(frame, table)
            frame = split.passed
            failed.append(split.failed)
        for column, parent, _ in tdef.parents:
            if parent not in parents.good:
                continue
            split = integrity.parent_references(frame, column, parent, parents.good[parent], parents.bad[parent])
            frame = split.passed
            failed.append(split.failed)
            if table == "contacts" and parent == "referrals":
                split = integrity.contact_patients(frame, parents.good[parent])
                frame = split.passed
                failed.append(split.failed)
        return frame, failed

    return check


def ingest(input_dir: Path, profiles: Profile | Sequence[Profile], work_dir: Path,
           progress: Progress = NULL_PROGRESS, only_tables: list[str] | None = None,
           files: list[InputFile] | None = None, canonical_dir: Path | None = None,
           cutover: date | None = None) -> Ingested:
    """Read, map and check every table of the extract in ``input_dir``.

    ``profiles``: one mapping profile, or several (e.g. a CSV extract and an HL7 feed), in
    the order their rows apply. ``only_tables`` (used by ``handover check``) skips the
    layout check and maps just those tables; references to a skipped parent table are then
    not checked. ``files``, when given, were already discovered and their layout checked.
    With ``canonical_dir`` each table is written there as ``<table>.parquet`` as soon as it
    is final and returned as a scan of that file, so only one table is in memory at a time.
    ``cutover`` places two-digit years (``mapping.py``; today when not given).
    """
    profile_list = [profiles] if isinstance(profiles, Profile) else list(profiles)
    if files is None:
        files = discover(input_dir, profile_list)
        if only_tables is None:
            check_layout(files)
    if only_tables is not None:
        files = [f for f in files if set(f.tables) & set(only_tables)]
    progress.start("ingest", total=len(files))
    mapped = _Mapped(cutover=cutover, stage_dir=work_dir / "staged")
    ranks = {p.name: i for i, p in enumerate(profile_list)}

    def count(f: InputFile, rows: int) -> None:
        mapped.stats.append(FileStats(f.name, f.label, f.path.stat().st_size, sha256_file(f.path), rows))
        progress.advance("ingest", 1, f"{f.name}: {rows:,} rows")

    def read(f: InputFile) -> None:
        count(f, _read_delimited(mapped, f, ranks.get(f.profile.name, 0), work_dir))

    # HL7 files feed several tables: read them first, then compare control ids across them,
    # then route their messages. A delimited or Parquet file is read when its table's turn
    # comes, so only one large table is in memory at a time.
    reads = {f.name: (f, _read_hl7(mapped, f, work_dir)) for f in files if f.kind == "hl7v2"}
    for f, r in reads.values():
        count(f, r.rows_read)
    if reads:
        held = _deliveries(mapped, reads).lazy()
        for f, r in reads.values():
            messages = r.messages.join(held.filter(pl.col("source_file") == f.name).select("source_row"),
                                       on="source_row", how="anti")
            _route_hl7(mapped, f, ranks.get(f.profile.name, 0), messages)

    tables: dict[str, pl.LazyFrame] = {}
    heights: dict[str, int] = {}
    parents = _Parents()
    superseded = mapped.superseded
    kept_previous: dict[str, int] = {}
    merges = canonical.empty("merges")
    for table in _INGEST_ORDER:
        for f in files:
            if f.kind != "hl7v2" and f.table == table:
                read(f)
        sources = mapped.frames.pop(table, None)
        if not sources:
            for rows in mapped.invalid.pop(table, []):
                mapped.quarantine.append(quarantine.from_mapping(rows, table))
            continue
        tdef = canonical.TABLES[table]
        frame, failed = within_sources(table, sources)
        rejected = mapped.invalid.pop(table, [])
        applied = apply_table(table, frame, _checks(table, parents),
                              pl.concat(rejected, how="diagonal_relaxed") if rejected else None, parents.survivors,
                              mapped.stage_dir / f"{table}-applied")
        for rows in applied.invalid:
            mapped.quarantine.append(quarantine.from_mapping(rows, table))
        failed += applied.failed
        superseded += applied.superseded
        kept_previous[table] = applied.kept_previous
        kept = applied.kept.scan().select(tdef.schema.keys())
        if table == "merges":  # memory: few rows (one message in fifty of a busy feed)
            resolved = integrity.source_merges(applied.kept.scan().collect(), updates.order_columns())
            merges, parents.survivors = resolved.accepted.select(tdef.schema.keys()), resolved.survivors
            failed.append(resolved.failed)
            kept = merges.lazy()
        checked = [f for f in failed if f.height]
        if checked:
            mapped.quarantine.append(quarantine.from_mapping(mapped.sources.with_raw(
                table, pl.concat(checked, how="diagonal_relaxed")), table))
        if table != "merges":
            heights[table] = applied.kept.rows
            if canonical_dir is not None:  # written from the staged parts, a batch at a time
                tables[table] = pl.scan_parquet(sink(kept, canonical_dir / f"{table}.parquet"))
            else:
                # memory: held: no run folder to stage into (tests, the API on small extracts).
                tables[table] = kept.collect().lazy()
        # What the checks of the child tables read: the kept keys (and each referral's patient),
        # of the tables some table references (not the contacts' 10.7M keys at 1M patients).
        if tdef.key is not None and table in _REFERENCED:
            # memory: held: the kept keys of a referenced table, sorted (1M patient keys and 2.86M
            # referral keys with their patient at 1M patients, ~0.13 GB): every later batch of a
            # child table is looked up in them (binary search, no hash table per batch).
            frame = (merges.lazy() if table == "merges" else tables[table])
            if table == "referrals":
                owners = frame.select("referral_key", "patient_key").collect()
                parents.good[table] = SortedKeys(owners["referral_key"], owners["patient_key"])
                del owners
            else:
                # memory: held: the sorted kept keys (above)
                parents.good[table] = SortedKeys(frame.select(tdef.key).collect()[tdef.key])
            bad = [*mapped.failed_keys.get(table, []), *(c[tdef.key] for c in checked)]
            parents.bad[table] = pl.concat([pl.Series(tdef.key, [], dtype=pl.String), *bad]).drop_nulls().unique()
        applied.kept.close()
        progress.advance("ingest", 0, f"{table}: {heights.get(table, merges.height):,} rows kept")
    progress.finish("ingest")
    for table in canonical.TABLE_ORDER:
        if table not in tables:
            heights[table] = 0
            empty = canonical.empty(table)
            if canonical_dir is not None:
                tables[table] = pl.scan_parquet(write_parquet(empty, canonical_dir / f"{table}.parquet"))
            else:
                tables[table] = empty.lazy()
    q = quarantine.table(mapped.quarantine)
    replaced_rows = pl.concat([pl.DataFrame(schema=_SUPERSEDED), *superseded], how="vertical")
    return Ingested(tables, q, tuple(mapped.stats), heights, replaced_rows, merges, kept_previous,
                    mapped.repeated_deliveries)
