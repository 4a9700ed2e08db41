"""One migration batch, start to finish: the stages chained, the run folder written.

``run_batch`` is what ``handover run`` calls. Configuration is validated before any data
is read (``RunConfig.load``); stages are functions of frames; I/O is only the reading in
``ingest`` and the writing here.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import polars as pl

from migrate import __version__, canonical
from migrate.ingest import Ingested, check_layout, ingest
from migrate.manifest import describe_outputs, run_id
from migrate.outputs import write_json, write_parquet
from migrate.profile import Profile, load_profile
from migrate.progress import NULL_PROGRESS, Progress
from migrate.sources import discover
from migrate.reconcile import FileCount, invariant, quarantine_summary


@dataclass(frozen=True)
class RunConfig:
    """Everything one batch depends on; frozen once validated."""

    input_dir: Path
    profile: Profile
    cutover: date
    out_dir: Path

    @classmethod
    def load(cls, input_dir: Path, mapping: str | Path, cutover: date, out_dir: Path) -> RunConfig:
        """Validate options and configuration (exit 2 on any problem) without reading data."""
        return cls(input_dir=input_dir, profile=load_profile(mapping), cutover=cutover, out_dir=out_dir)

    def identity(self, input_hashes: list[str]) -> str:
        """The deterministic run id of this configuration over these inputs."""
        return run_id([__version__, self.profile.sha256, self.cutover.isoformat(), *sorted(input_hashes)])


@dataclass
class RunResult:
    """What a finished batch reports: the summary (as in reconciliation.json) and its folder."""

    run_dir: Path
    summary: dict[str, Any]
    outputs: list[Path] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return bool(self.summary["invariant"]["holds"])


def build_lineage(ingested: Ingested) -> pl.LazyFrame:
    """One row per source row: where it came from, its patient, and its disposition."""
    parts = []
    for table, frame in ingested.tables.items():
        parts.append(frame.select(
            "source_file", "source_row", pl.lit(table).alias("table"), "patient_key",
            pl.lit("migrated").alias("disposition"),
        ))
    parts.append(ingested.quarantine.lazy().select(
        "source_file", "source_row", "table", pl.lit(None, dtype=pl.String).alias("patient_key"),
        pl.lit("quarantined").alias("disposition"),
    ))
    lineage = pl.concat(parts, how="vertical").with_columns(
        pl.lit(None, dtype=pl.String).alias("fhir_type"), pl.lit(None, dtype=pl.String).alias("fhir_id"))
    return lineage.cast(canonical.LINEAGE_SCHEMA).sort("source_file", "source_row")  # type: ignore[arg-type]


def run_batch(config: RunConfig, progress: Progress = NULL_PROGRESS) -> RunResult:
    """Run one batch into ``config.out_dir``; the summary says whether the invariant held."""
    started = datetime.now(UTC)
    out = config.out_dir
    work = out / ".work"
    files = discover(config.input_dir, config.profile)
    check_layout(files, config.profile)  # exit 2 before anything is written
    out.mkdir(parents=True, exist_ok=True)
    try:
        ingested = ingest(config.input_dir, config.profile, work, progress, files=files,
                          canonical_dir=out / "canonical")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    lineage = build_lineage(ingested).collect()
    inv = invariant(lineage, [FileCount(f.name, f.table, f.rows_read) for f in ingested.files])

    progress.start("write", total=None)
    written: list[Path] = []
    rows: dict[str, int] = {}

    def parquet(frame: pl.DataFrame, rel: str) -> None:
        written.append(write_parquet(frame, out / rel))
        rows[rel] = frame.height

    for table in ingested.tables:
        written.append(out / "canonical" / f"{table}.parquet")
        rows[f"canonical/{table}.parquet"] = ingested.heights[table]
    parquet(ingested.quarantine, "quarantine.parquet")
    parquet(lineage, "lineage.parquet")

    rid = config.identity([f.sha256 for f in ingested.files])
    summary: dict[str, Any] = {
        "run_id": rid,
        "cutover_date": config.cutover.isoformat(),
        "mapping": {"name": config.profile.name, "sha256": config.profile.sha256},
        "invariant": inv,
        "quarantine": quarantine_summary(ingested.quarantine),
        "tables": dict(ingested.heights),
    }
    written.append(write_json(summary, out / "reports" / "reconciliation.json"))
    manifest = {
        "run_id": rid,
        "tool": {"name": "handover", "version": __version__},
        "started": started.isoformat(timespec="seconds"),
        "finished": datetime.now(UTC).isoformat(timespec="seconds"),
        "cutover_date": config.cutover.isoformat(),
        "mapping": {"name": config.profile.name, "sha256": config.profile.sha256},
        "inputs": [
            {"path": f.name, "table": f.table, "bytes": f.bytes, "sha256": f.sha256, "rows": f.rows_read}
            for f in sorted(ingested.files, key=lambda f: f.name)
        ],
        "outputs": describe_outputs(out, written, rows),
        "counts": {"rows_read": inv["rows_read"], "dispositions": inv["dispositions"],
                   "quarantined": ingested.quarantine.height},
        "previous_manifest_sha256": None,
    }
    write_json(manifest, out / "manifest.json")
    progress.finish("write")
    return RunResult(out, summary, written)
