"""Writing a batch's run folder: its tables and its manifest (docs/architecture.md).

The canonical tables are written by ingest as each becomes final; ``write_tables``
writes the rest (quarantine, lineage, cohorts, patients, exceptions, duplicates) and
remembers every path and row count for the manifest. ``build_manifest`` records what
went in, what came out, the invariant's counts and what only the pipeline knows
(``stages``: identity's headline numbers, the FHIR writer's statistics) and the frozen
configuration (``config``, see ``migrate.frozen``), so every later command reads those
facts from the folder instead of recomputing them differently.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import polars as pl

from migrate import __version__
from migrate.manifest import describe_outputs, sha256_file
from migrate.outputs import write_parquet
from migrate.summary import FrozenConfig, InputRecord, Manifest, Profile, RowsInvariant, RulesRecord, RunOptions, Stages, TargetIndexRecord


@dataclass
class Written:
    """Files of the run folder written so far, with row counts of the tables."""

    paths: list[Path] = field(default_factory=list)
    rows: dict[str, int] = field(default_factory=dict)

    def table(self, out: Path, rel: str, frame: pl.DataFrame) -> None:
        """Write ``frame`` as ``out/rel`` (Parquet, atomically) and record it."""
        self.paths.append(write_parquet(frame, out / rel))
        self.rows[rel] = frame.height

    def existing(self, out: Path, rel: str, rows: int) -> None:
        """Record a file another stage wrote (the canonical tables, written by ingest)."""
        self.paths.append(out / rel)
        self.rows[rel] = rows


def write_tables(out: Path, canonical_heights: Mapping[str, int], tables: Mapping[str, pl.DataFrame]) -> Written:
    """Record the canonical tables ingest wrote and write ``tables`` ({relative path: frame})."""
    written = Written()
    for table, rows in canonical_heights.items():
        written.existing(out, f"canonical/{table}.parquet", rows)
    for rel, frame in tables.items():
        written.table(out, rel, frame)
    return written


def run_files(out: Path) -> list[Path]:
    """Every file of the run folder but the manifest itself (and no hidden work files)."""
    return [p for p in out.rglob("*") if p.is_file() and p.name != "manifest.json"
            and not any(part.startswith(".") for part in p.relative_to(out).parts)]


@dataclass(frozen=True)
class RunRecord:
    """What the manifest says about the run's configuration (from ``RunConfig``)."""

    run_id: str
    cutover: str
    mapping: list[Profile]
    rules: RulesRecord
    options: RunOptions
    identity_sha256: str


def target_record(path: Path | None, mapping: str | None) -> TargetIndexRecord | None:
    """Name and sha256 of the target index and the profile that read it, or None."""
    return None if path is None else {"path": path.name, "sha256": sha256_file(path), "mapping": mapping}


def build_manifest(out: Path, record: RunRecord, started: datetime, finished: datetime,
                   inputs: Sequence[InputRecord], rows: Mapping[str, int], invariant: RowsInvariant,
                   quarantined: int, stages: Stages, config: FrozenConfig, identity_model: dict[str, Any]) -> Manifest:
    """The manifest of a finished batch (before reports are sealed into it)."""
    return {
        "run_id": record.run_id,
        "tool": {"name": "handover", "version": __version__},
        "started": started.isoformat(timespec="seconds"),
        "finished": finished.isoformat(timespec="seconds"),
        "cutover_date": record.cutover,
        "mapping": record.mapping,
        "rules": record.rules,
        "options": record.options,
        "identity_rules": {"sha256": record.identity_sha256},
        "identity_model": identity_model,
        "inputs": sorted(inputs, key=lambda i: i["path"]),
        "outputs": describe_outputs(out, run_files(out), dict(rows)),
        "counts": {"rows_read": invariant["rows_read"], "dispositions": invariant["dispositions"],
                   "quarantined": quarantined},
        "stages": stages,
        "config": config,
        "previous_manifest_sha256": None,
    }
