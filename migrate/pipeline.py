"""One migration batch, start to finish: the stages chained, the run folder written.

``run_batch`` is what ``handover run`` calls:

    ingest (read, map, quarantine; canonical/*.parquet) ─► rules (cohorts, flags)
        ─► dispositions ─► lineage ─► invariant ─► reports, manifest

Configuration is validated before any data is read (``RunConfig.load``); stages are
functions of frames; I/O is the reading in ``ingest`` and the writing here.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import polars as pl

from migrate import __version__, canonical
from migrate.dispositions import SHARING_POLICIES, decide
from migrate.errors import ConfigError
from migrate.ingest import Ingested, check_layout, ingest
from migrate.manifest import describe_outputs, run_id
from migrate.outputs import write_json, write_parquet
from migrate.profile import Profile, load_profile
from migrate.progress import NULL_PROGRESS, Progress
from migrate.reconcile import FileCount, invariant, quarantine_summary
from migrate.rules import RulePack, evaluate, load_pack
from migrate.sources import discover

PATIENTS_SCHEMA: dict[str, pl.DataType] = {
    "patient_key": pl.String(), "nhs_number": pl.String(), "patient_cohort": pl.Enum(canonical.COHORTS),
    "disposition": pl.Enum(canonical.DISPOSITIONS), "flag_codes": pl.List(pl.String()),
}


def resolve_rules_path(rules: str | Path | None) -> Path | None:
    """``--rules`` takes a pack file or a folder holding ``default.yaml``."""
    if rules is None:
        return None
    path = Path(rules)
    if path.is_dir():
        path = path / "default.yaml"
    if not path.is_file():
        raise ConfigError(f"rule pack not found: {rules} (give a YAML file or a folder with default.yaml)")
    return path


@dataclass(frozen=True)
class RunConfig:
    """Everything one batch depends on; frozen once validated."""

    input_dir: Path
    profiles: tuple[Profile, ...]
    cutover: date
    out_dir: Path
    rules: RulePack
    sharing_policy: str = "withhold-clinical"

    @classmethod
    def load(cls, input_dir: Path, mapping: str | Path | Sequence[str | Path], cutover: date, out_dir: Path,
             rules: str | Path | None = None, sharing_policy: str = "withhold-clinical") -> RunConfig:
        """Validate options and configuration (exit 2 on any problem) without reading data.

        ``mapping`` is one profile or several (e.g. the CSV extract's and the HL7 feed's),
        in the order their rows apply: for a key found in several, the latest wins.
        """
        if sharing_policy not in SHARING_POLICIES:
            raise ConfigError(f"unknown sharing policy '{sharing_policy}': use one of {', '.join(SHARING_POLICIES)}")
        names = [mapping] if isinstance(mapping, (str, Path)) else list(mapping)
        profiles = tuple(load_profile(m) for m in names)
        if not any("patients" in p.tables for p in profiles):
            raise ConfigError("no mapping profile maps the patients table")
        pack = load_pack(resolve_rules_path(rules))
        return cls(input_dir=input_dir, profiles=profiles, cutover=cutover, out_dir=out_dir, rules=pack,
                   sharing_policy=sharing_policy)

    @property
    def mappings(self) -> list[dict[str, str]]:
        """Name and sha256 of each profile, for the manifest and the report."""
        return [{"name": p.name, "sha256": p.sha256} for p in self.profiles]

    def identity(self, input_hashes: list[str]) -> str:
        """The deterministic run id of this configuration over these inputs."""
        return run_id([__version__, *(p.sha256 for p in self.profiles), self.rules.sha256, self.cutover.isoformat(),
                       self.sharing_policy, *sorted(input_hashes)])


@dataclass
class RunResult:
    """What a finished batch reports: the summary (as in reconciliation.json) and its folder."""

    run_dir: Path
    summary: dict[str, Any]
    outputs: list[Path] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return bool(self.summary["invariant"]["holds"])


def build_lineage(ingested: Ingested, dispositions: pl.LazyFrame) -> pl.LazyFrame:
    """One row per source row: where it came from, its patient, and its disposition.

    Besides the canonical rows (``dispositions``) and quarantine: rows superseded by a later
    row with the same key, and the source's own merge messages, are ``merged``.
    """
    quarantined = ingested.quarantine.lazy().select(
        "source_file", "source_row", "table", pl.lit(None, dtype=pl.String).alias("patient_key"),
        pl.lit("quarantined").alias("disposition"),
    )
    superseded = ingested.superseded.lazy().select(
        "source_file", "source_row", "table", "patient_key", pl.lit("merged").alias("disposition"))
    merges = ingested.merges.lazy().select(
        "source_file", "source_row", pl.lit("merges").alias("table"), "patient_key",
        pl.lit("merged").alias("disposition"))
    lineage = pl.concat([dispositions, quarantined, superseded, merges], how="vertical").with_columns(
        pl.lit(None, dtype=pl.String).alias("fhir_type"), pl.lit(None, dtype=pl.String).alias("fhir_id"))
    return lineage.cast(canonical.LINEAGE_SCHEMA).sort("source_file", "source_row")  # type: ignore[arg-type]


def patient_summary(patients: pl.LazyFrame, patient_cohorts: pl.DataFrame, exceptions: pl.DataFrame,
                    lineage: pl.DataFrame) -> pl.DataFrame:
    """``patients.parquet``: each patient's cohort, disposition and every flag raised for them."""
    flags = exceptions.group_by("patient_key").agg(pl.col("flag_code").unique().sort().alias("flag_codes"))
    disp = lineage.filter(pl.col("table") == "patients").select("patient_key", "disposition")
    return (
        patients.select("patient_key", "nhs_number").collect()
        .join(patient_cohorts, on="patient_key", how="left")
        .join(disp, on="patient_key", how="left")
        .join(flags, on="patient_key", how="left")
        .with_columns(pl.col("flag_codes").fill_null(pl.lit([], dtype=pl.List(pl.String))))
        .select(list(PATIENTS_SCHEMA))
        .cast(PATIENTS_SCHEMA)  # type: ignore[arg-type]
        .sort("patient_key")
    )


def _counts(frame: pl.DataFrame, column: str, order: tuple[str, ...]) -> dict[str, int]:
    found = {str(k): int(n) for k, n in frame.group_by(column).agg(pl.len()).iter_rows()}
    return {k: found.get(k, 0) for k in order} | {k: v for k, v in sorted(found.items()) if k not in order}


def run_batch(config: RunConfig, progress: Progress = NULL_PROGRESS) -> RunResult:
    """Run one batch into ``config.out_dir``; the summary says whether the invariant held."""
    started = datetime.now(UTC)
    out = config.out_dir
    work = out / ".work"
    files = discover(config.input_dir, config.profiles)
    check_layout(files)  # exit 2 before anything is written
    out.mkdir(parents=True, exist_ok=True)
    try:
        ingested = ingest(config.input_dir, config.profiles, work, progress, files=files,
                          canonical_dir=out / "canonical")
    finally:
        shutil.rmtree(work, ignore_errors=True)

    progress.start("rules", total=None)
    results = evaluate(ingested.tables, config.rules, config.cutover).collect()
    cohorts, patient_cohorts, exceptions = results["cohorts"], results["patient_cohorts"], results["exceptions"]
    progress.finish("rules")

    pack = config.rules
    blocked = exceptions.filter(pl.col("flag_code") == "SHARING_BLOCK").select("patient_key").lazy()
    sharing_codes = pack.codelist("sharing_dissent_codes") + pack.codelist("sharing_consent_codes")
    dispositions = decide(ingested.tables, cohorts.lazy(), patient_cohorts.lazy(), blocked, sharing_codes,
                          config.sharing_policy)
    lineage = build_lineage(ingested, dispositions).collect()
    inv = invariant(lineage, [FileCount(f.name, f.table, f.rows_read) for f in ingested.files])
    patients = patient_summary(ingested.tables["patients"], patient_cohorts, exceptions, lineage)

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
    parquet(cohorts, "cohorts.parquet")
    parquet(patients, "patients.parquet")
    parquet(exceptions, "exceptions.parquet")

    rid = config.identity([f.sha256 for f in ingested.files])
    summary: dict[str, Any] = {
        "run_id": rid,
        "cutover_date": config.cutover.isoformat(),
        "mapping": config.mappings,
        "rules": {"name": pack.name, "version": pack.version, "sha256": pack.sha256},
        "sharing_policy": config.sharing_policy,
        "invariant": inv,
        "quarantine": quarantine_summary(ingested.quarantine),
        "tables": dict(ingested.heights),
        "cohorts": {
            "referrals": _counts(cohorts, "cohort", canonical.COHORTS),
            "patients": _counts(patients, "patient_cohort", canonical.COHORTS),
        },
        "flags": {
            "by_severity": _counts(exceptions, "severity", canonical.SEVERITIES),
            "by_code": _counts(exceptions, "flag_code", ()),
        },
    }
    written.append(write_json(summary, out / "reports" / "reconciliation.json"))
    manifest = {
        "run_id": rid,
        "tool": {"name": "handover", "version": __version__},
        "started": started.isoformat(timespec="seconds"),
        "finished": datetime.now(UTC).isoformat(timespec="seconds"),
        "cutover_date": config.cutover.isoformat(),
        "mapping": config.mappings,
        "rules": {"name": pack.name, "version": pack.version, "sha256": pack.sha256,
                  "files": [{"path": p.name, "sha256": h} for p, h in pack.files]},
        "options": {"sharing_policy": config.sharing_policy},
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
