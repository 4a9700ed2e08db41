"""Ingest: extract files → canonical tables + quarantine, every source row accounted for.

For each canonical table in parent-before-child order: read its files, apply the compiled
mapping, then the table-level checks (duplicate keys, references to patients and
referrals). Rows failing any step go to quarantine with a reason code and a message naming
file, row and field; the batch goes on.

Invariant kept: for every file, rows_read == rows in canonical tables + rows quarantined.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from migrate import canonical, integrity
from migrate.errors import ProfileError
from migrate.mapping import BOOKKEEPING, apply_mapping, compile_table, explain_failures, missing_columns
from migrate.manifest import sha256_file
from migrate.profile import Profile
from migrate.progress import NULL_PROGRESS, Progress
from migrate.sources import InputFile, discover, read_columns, read_file


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

    tables: dict[str, pl.DataFrame]
    quarantine: pl.DataFrame
    files: tuple[FileStats, ...]


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
               on_file: Callable[[InputFile, int], None]) -> tuple[pl.DataFrame, list[pl.DataFrame], list[FileStats]]:
    spec = profile.tables[table]
    mapped: list[pl.DataFrame] = []
    quarantined: list[pl.DataFrame] = []
    stats: list[FileStats] = []
    for f in files:
        result = read_file(f, spec, work_dir)
        stats.append(FileStats(f.name, table, f.path.stat().st_size, sha256_file(f.path), result.rows_read))
        quarantined.append(_rejected_rows(result.rejected, table))
        if result.columns:
            compiled = compile_table(spec, result.frame.collect_schema(), profile)
            frame = apply_mapping(result.frame, compiled).collect(engine="streaming")
            failing = frame.filter(pl.col("__reason").is_not_null()).select("source_row")
            details = explain_failures(result.frame.join(failing.lazy(), on="source_row", how="semi"), compiled)
            mapped.append(frame.join(details.collect(), on=["source_file", "source_row"], how="left",
                                     maintain_order="left"))
        on_file(f, result.rows_read)
    schema = {**canonical.TABLES[table].schema, **{c: pl.String() for c in BOOKKEEPING}}
    frame = pl.concat(mapped, how="vertical") if mapped else pl.DataFrame(schema=schema)
    return frame, quarantined, stats


def ingest(input_dir: Path, profile: Profile, work_dir: Path, progress: Progress = NULL_PROGRESS,
           only_tables: list[str] | None = None, files: list[InputFile] | None = None) -> Ingested:
    """Read, map and check every table of the extract in ``input_dir``.

    ``only_tables`` (used by ``handover check``) skips the layout check and maps just
    those tables; references to a skipped parent table are then not checked. ``files``,
    when given, were already discovered and their layout checked.
    """
    if files is None:
        files = discover(input_dir, profile)
        if only_tables is None:
            check_layout(files, profile)
    if only_tables is not None:
        files = [f for f in files if f.table in only_tables]
    progress.start("ingest", total=len(files))
    tables: dict[str, pl.DataFrame] = {}
    bad_keys: dict[str, pl.Series] = {}
    quarantine: list[pl.DataFrame] = []
    all_stats: list[FileStats] = []
    for table in canonical.TABLE_ORDER:
        if table not in profile.tables or (only_tables is not None and table not in only_tables):
            continue
        frame, rejected, stats = _map_table(
            table, [f for f in files if f.table == table], profile, work_dir,
            lambda f, n: progress.advance("ingest", 1, f"{f.name}: {n:,} rows"))
        quarantine += rejected
        all_stats += stats
        failed = frame.filter(pl.col("__reason").is_not_null())
        good = frame.filter(pl.col("__reason").is_null())
        steps: list[integrity.Split] = []
        split = integrity.duplicate_keys(good, table)
        steps.append(split)
        good = split.passed
        tdef = canonical.TABLES[table]
        for column, parent, parent_key in tdef.parents:
            if parent not in tables:
                continue
            split = integrity.parent_references(good, column, parent, tables[parent][parent_key], bad_keys[parent])
            steps.append(split)
            good = split.passed
            if table == "contacts" and parent == "referrals":
                split = integrity.contact_patients(good, tables["referrals"])
                steps.append(split)
                good = split.passed
        failed = pl.concat([failed, *(s.failed for s in steps)], how="vertical")
        quarantine.append(_quarantine_rows(failed, table))
        if tdef.key is not None:
            bad_keys[table] = failed[tdef.key].drop_nulls().unique()
        tables[table] = good.select(tdef.schema.keys()).sort("source_file", "source_row")
    progress.finish("ingest")
    for table in canonical.TABLE_ORDER:
        tables.setdefault(table, canonical.empty(table))
    q = pl.concat(quarantine, how="vertical") if quarantine else pl.DataFrame(schema=canonical.QUARANTINE_SCHEMA)
    q = q.cast(canonical.QUARANTINE_SCHEMA).sort("source_file", "source_row")  # type: ignore[arg-type]
    return Ingested(tables, q, tuple(all_stats))
