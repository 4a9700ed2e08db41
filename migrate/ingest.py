"""Ingest: extract files → canonical tables + quarantine, every source row accounted for.

For each canonical table in parent-before-child order: read its files, apply the compiled
mapping, then the table-level checks (duplicate keys, references to patients and
referrals). Rows failing any step go to quarantine with a reason code and a message naming
file, row and field; the batch goes on.

Invariant kept: for every file, rows_read == rows in canonical tables + rows quarantined.
"""

from __future__ import annotations

import csv as pycsv
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from migrate import canonical, integrity
from migrate.errors import ProfileError
from migrate.mapping import CompiledTable, apply_mapping, compile_table, explain_failures, missing_columns
from migrate.manifest import sha256_file
from migrate.outputs import write_parquet
from migrate.profile import Profile, TableSpec
from migrate.progress import NULL_PROGRESS, Progress
from migrate.sources import InputFile, discover, read_columns, read_file


# A table's key defaults to its source id when the profile does not map it.
_KEY_SOURCES = {"patient_key": "source_patient_id", "referral_key": "source_referral_id"}


@dataclass(frozen=True)
class FileStats:
    """What was read from one input file."""

    name: str
    table: str
    bytes: int
    sha256: str
    rows_read: int


@dataclass(frozen=True)
class Ingested:
    """Canonical tables, quarantine and per-file statistics of one extract."""

    tables: dict[str, pl.LazyFrame]
    quarantine: pl.DataFrame
    files: tuple[FileStats, ...]
    heights: dict[str, int]


def check_layout(files: list[InputFile], profile: Profile) -> None:
    """Every column the profile reads is present in every file; else exit 2 listing all."""
    problems = []
    for f in files:
        spec = profile.tables[f.table]
        present = read_columns(f, spec)
        if not present:
            continue  # an empty file: zero rows, nothing to map
        absent = missing_columns(spec, present)
        if absent:
            problems.append(f"{f.name} ({f.table}): missing column(s) {', '.join(absent)}; "
                            f"columns present: {', '.join(present)}")
    if problems:
        raise ProfileError(f"the extract does not fit mapping profile {profile.name}", problems)


def _quarantine_rows(frame: pl.DataFrame, table: str) -> pl.DataFrame:
    return frame.select(
        "source_file", "source_row", pl.lit(table).alias("table"), pl.col("__reason").alias("reason_code"),
        pl.col("__field").alias("field"), pl.col("__message").alias("message"), pl.col("__raw").alias("raw"),
    )


def _rejected_rows(rejected: pl.DataFrame, table: str) -> pl.DataFrame:
    return rejected.select(
        "source_file", "source_row", pl.lit(table).alias("table"), "reason_code",
        pl.lit(None, dtype=pl.String).alias("field"), "message", "raw",
    )


def _map_table(table: str, files: list[InputFile], profile: Profile, work_dir: Path,
               on_file: Callable[[InputFile, int], None],
               ) -> tuple[pl.DataFrame, list[pl.DataFrame], list[FileStats], pl.Series, _Sources]:
    """Read and map every file of one table.

    Returns the rows that mapped (in file order), the quarantine rows, per-file stats and
    the keys of quarantined rows (so children of a quarantined row say so).
    """
    key = canonical.TABLES[table].key
    failed_keys: list[pl.Series] = []
    sources = _Sources()
    spec = profile.tables[table]
    mapped: list[pl.DataFrame] = []
    quarantined: list[pl.DataFrame] = []
    stats: list[FileStats] = []
    for f in files:
        result = read_file(f, spec, work_dir)
        stats.append(FileStats(f.name, table, f.path.stat().st_size, sha256_file(f.path), result.rows_read))
        quarantined.append(_rejected_rows(result.rejected, table))
        if key is not None:
            failed_keys.append(_keys_of_rejected(result.rejected, spec, key, result.columns))
        if result.columns:
            compiled = compile_table(spec, result.frame.collect_schema(), profile)
            sources.add(f.name, result.frame, compiled)
            frame = apply_mapping(result.frame, compiled).collect(engine="streaming")
            failing = frame.filter(pl.col("__reason").is_not_null())
            if failing.height:
                details = explain_failures(
                    result.frame.join(failing.select("source_row").lazy(), on="source_row", how="semi"), compiled
                ).collect()
                failing = failing.join(details, on=["source_file", "source_row"], how="left", maintain_order="left")
                quarantined.append(_quarantine_rows(failing, table))
                if key is not None:
                    failed_keys.append(failing[key])
                frame = frame.filter(pl.col("__reason").is_null())
            mapped.append(frame)
        on_file(f, result.rows_read)
    frame = pl.concat(mapped, how="vertical", rechunk=False) if mapped else pl.DataFrame(
        schema={**canonical.TABLES[table].schema, "__reason": pl.String(), "__field": pl.String()})
    keys = pl.concat([pl.Series(key or "key", [], dtype=pl.String), *failed_keys]).drop_nulls()
    return frame, quarantined, stats, keys, sources


class _Sources:
    """The source scans of one table, to fetch raw records of rows that fail a later check."""

    def __init__(self) -> None:
        self._files: dict[str, tuple[pl.LazyFrame, CompiledTable]] = {}

    def add(self, name: str, frame: pl.LazyFrame, compiled: CompiledTable) -> None:
        self._files[name] = (frame, compiled)

    def with_raw(self, failed: pl.DataFrame) -> pl.DataFrame:
        """``failed`` with ``__raw`` (the source record as JSON) joined on file and row."""
        raws = []
        for name, (frame, compiled) in self._files.items():
            rows = failed.filter(pl.col("source_file") == name).select("source_row")
            if rows.height:
                raws.append(explain_failures(frame.join(rows.lazy(), on="source_row", how="semi"), compiled)
                            .select("source_file", "source_row", "__raw").collect())
        raw = pl.concat(raws) if raws else pl.DataFrame(schema={"source_file": pl.String, "source_row": pl.Int64,
                                                                "__raw": pl.String})
        return failed.join(raw, on=["source_file", "source_row"], how="left", maintain_order="left")


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
        parsed = next(pycsv.reader([raw.replace("\n", " ")], delimiter=spec.delimiter,
                                   quotechar=spec.quote_char or '"'), [])
        if len(parsed) > index and parsed[index].strip():
            values.append(parsed[index].strip())
    return pl.Series(key, values, dtype=pl.String)


def ingest(input_dir: Path, profile: Profile, work_dir: Path, progress: Progress = NULL_PROGRESS,
           only_tables: list[str] | None = None, files: list[InputFile] | None = None,
           canonical_dir: Path | None = None) -> Ingested:
    """Read, map and check every table of the extract in ``input_dir``.

    ``only_tables`` (used by ``handover check``) skips the layout check and maps just
    those tables; references to a skipped parent table are then not checked. ``files``,
    when given, were already discovered and their layout checked. With ``canonical_dir``
    each table is written there as ``<table>.parquet`` as soon as it is final and returned
    as a scan of that file, so only one table is held in memory at a time.
    """
    if files is None:
        files = discover(input_dir, profile)
        if only_tables is None:
            check_layout(files, profile)
    if only_tables is not None:
        files = [f for f in files if f.table in only_tables]
    progress.start("ingest", total=len(files))
    tables: dict[str, pl.LazyFrame] = {}
    heights: dict[str, int] = {}
    good_keys: dict[str, pl.Series] = {}
    bad_keys: dict[str, pl.Series] = {}
    owners: pl.DataFrame | None = None
    quarantine: list[pl.DataFrame] = []
    all_stats: list[FileStats] = []
    for table in canonical.TABLE_ORDER:
        if table not in profile.tables or (only_tables is not None and table not in only_tables):
            continue
        good, rejected, stats, failed_keys, sources = _map_table(
            table, [f for f in files if f.table == table], profile, work_dir,
            lambda f, n: progress.advance("ingest", 1, f"{f.name}: {n:,} rows"))
        quarantine += rejected
        all_stats += stats
        tdef = canonical.TABLES[table]
        failed: list[pl.DataFrame] = []
        split = integrity.duplicate_keys(good, table)
        good = split.passed
        failed.append(split.failed)
        for column, parent, _ in tdef.parents:
            if parent not in good_keys:
                continue
            split = integrity.parent_references(good, column, parent, good_keys[parent], bad_keys[parent])
            good = split.passed
            failed.append(split.failed)
            if table == "contacts" and parent == "referrals" and owners is not None:
                split = integrity.contact_patients(good, owners)
                good = split.passed
                failed.append(split.failed)
        checked = pl.concat([f for f in failed if f.height], how="diagonal_relaxed") if any(
            f.height for f in failed) else None
        if checked is not None:
            quarantine.append(_quarantine_rows(sources.with_raw(checked), table))
        if tdef.key is not None:
            good_keys[table] = good[tdef.key]
            bad_keys[table] = pl.concat([failed_keys, *([checked[tdef.key]] if checked is not None else [])]).unique()
        if table == "referrals":
            owners = good.select("referral_key", "patient_key")
        final = good.select(tdef.schema.keys())
        heights[table] = final.height
        if canonical_dir is not None:
            path = write_parquet(final, canonical_dir / f"{table}.parquet")
            tables[table] = pl.scan_parquet(path)
        else:
            tables[table] = final.lazy()
        del good, final
    progress.finish("ingest")
    for table in canonical.TABLE_ORDER:
        if table not in tables:
            heights[table] = 0
            empty = canonical.empty(table)
            if canonical_dir is not None:
                tables[table] = pl.scan_parquet(write_parquet(empty, canonical_dir / f"{table}.parquet"))
            else:
                tables[table] = empty.lazy()
    q = pl.concat(quarantine, how="vertical") if quarantine else pl.DataFrame(schema=canonical.QUARANTINE_SCHEMA)
    q = q.cast(canonical.QUARANTINE_SCHEMA).sort("source_file", "source_row")  # type: ignore[arg-type]
    return Ingested(tables, q, tuple(all_stats), heights)
