"""One migration batch, start to finish: the stages chained, nothing else.

``run_batch`` is what ``handover run`` calls. Each stage lives in its own module; this
one only passes frames from one to the next, in this order:

    ingest (read, map, quarantine; canonical/*.parquet)      migrate.ingest
    ─► identity (NHS numbers, merges, duplicates, target)     migrate.identity.stage
    ─► review decisions on identity (same_person merges)      migrate.review.stage
    ─► sharing entries of every source, on survivors          migrate.sharing
    ─► rules (cohorts, flags, sharing state)                  migrate.rules.stage
    ─► review decisions on flags (lists, sharing, priority)   migrate.review.stage
    ─► dispositions (what becomes of every row)               migrate.dispositions
    ─► FHIR output (optional)                                 migrate.fhir.stage
    ─► lineage, patients, tables, invariant 1                 migrate.lineage, .patients, .runfolder, .reconcile
    ─► manifest, round trip (FHIR read back)                   migrate.runfolder, migrate.fhir.roundtrip
    ─► the reports (reconciliation.json, written once)        migrate.reports

Configuration is validated before any data is read (``migrate.config.RunConfig.load``)
and frozen into the run folder's ``config/`` before the extract is opened (``migrate.frozen``).
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import polars as pl

from migrate import quarantine, sharing
from migrate.config import RunConfig
from migrate.dispositions import decide
from migrate.errors import ReconciliationError
from migrate.executor import make_executor
from migrate.fhir.bundle import validation_failure
from migrate.fhir.options import SharingCodes
from migrate.fhir.roundtrip import run_roundtrip
from migrate.fhir.stage import emit, options_for
from migrate.frozen import freeze
from migrate.hazards import default_hazards_path
from migrate.identity import write_model
from migrate.identity.stage import identify
from migrate.ingest import Ingested, check_layout, ingest
from migrate.locations import fetch
from migrate.lineage import build_lineage, write_lineage
from migrate.manifest import with_digest
from migrate.outputs import write_json
from migrate.patients import patient_summary
from migrate.practices import PracticeSettings, read_practice_sharing
from migrate.progress import NULL_PROGRESS, Progress
from migrate.reconcile import FileCount, rows_invariant
from migrate.review.fhir import write_review_fhir
from migrate.review.stage import after_rules, before_rules, decision_rows
from migrate.rules.stage import classify
from migrate.runfolder import RunRecord, build_manifest, stage, target_record, write_tables
from migrate.sources import discover
from migrate.staging import sink
from migrate.target_index import read_target_index
from migrate.summary import ExecutionRecord, FhirStats, FrozenConfig, InputRecord, RunOptions, RunSummary

__all__ = ["RunConfig", "RunResult", "run_batch"]


@dataclass
class RunResult:
    """A finished batch: its folder, its summary (``reconciliation.json``) and files written."""

    run_dir: Path
    summary: RunSummary
    outputs: list[Path] = field(default_factory=list)
    execution: ExecutionRecord | None = None  # how the FHIR partitions ran (manifest ``execution``); None: no FHIR

    def failures(self) -> list[str]:
        """One sentence per failure: each broken invariant (naming it, with its first
        examples), and FHIR resources that failed validation."""
        lines = list(self.summary["invariants"]["failures"])
        fhir = self.summary["fhir"]
        line = None if fhir is None else validation_failure(fhir)
        return lines if line is None else [*lines, line]

    @property
    def ok(self) -> bool:
        """Both invariants hold and every FHIR resource validated."""
        return not self.failures()

    def raise_on_failure(self) -> None:
        """``ReconciliationError`` (exit 1) listing every failure; nothing when the run is sound."""
        failures = self.failures()
        if failures:
            raise ReconciliationError(f"reconciliation failed for run {self.summary['run_id']} "
                                      f"(see {self.run_dir / 'reports' / 'reconciliation.html'})", failures)


def _ingest(config: RunConfig, progress: Progress, work: Path) -> tuple[Ingested, FrozenConfig,
                                                                       PracticeSettings | None]:
    if config.input_url is not None:  # an fsspec URL: its files copied here first, then read as a folder
        config = replace(config, input_dir=fetch(config.input_url, work / "input"))
    files = discover(config.input_dir, config.profiles)
    check_layout(files)  # exit 2 before anything is written
    out = config.out_dir
    out.mkdir(parents=True, exist_ok=True)
    frozen = freeze(out, config.profiles, config.rules, config.identity_path, config.identity_sha256,
                    config.declaration, config.hazards or default_hazards_path(), config.practice_sharing)
    try:
        ingested = ingest(config.input_dir, config.profiles, work, progress, files=files,
                          canonical_dir=out / "canonical", cutover=config.cutover)
    finally:
        shutil.rmtree(work / "staged", ignore_errors=True)
    if config.practice_sharing is None or config.practice_mapping is None:
        return ingested, frozen, None
    # An input like any: its rows are read, quarantined or given a disposition (invariant 1).
    practices = read_practice_sharing(config.practice_sharing, config.practice_mapping)
    return replace(ingested, files=(*ingested.files, practices.file),
                   quarantine=quarantine.table([ingested.quarantine, practices.quarantine])), frozen, practices


def _record(config: RunConfig, rid: str) -> RunRecord:
    pack = config.rules
    options: RunOptions = {
        "sharing_policy": config.sharing_policy, "inactive_patients": config.inactive_patients,
        "target_index": target_record(config.target_index, None if config.target_mapping is None
                                      else config.target_mapping.name),
        "practice_sharing": target_record(config.practice_sharing, None if config.practice_mapping is None
                                          else config.practice_mapping.name), "emit_fhir": config.emit_fhir,
        "bundle_size": config.bundle_size, "fhir_form": config.fhir_form}
    if config.fhir_compression != "none":  # written only for gzip: absent, the NDJSON is plain (as before)
        options["fhir_compression"] = config.fhir_compression
    return RunRecord(
        run_id=rid, cutover=config.cutover.isoformat(), mapping=config.mappings,
        rules={"name": pack.name, "version": pack.version, "sha256": pack.sha256,
               "files": [{"path": p.name, "sha256": h} for p, h in pack.files]},
        options=options, identity_sha256=config.identity_sha256)


def run_batch(config: RunConfig, progress: Progress = NULL_PROGRESS) -> RunResult:
    """Run one batch into ``config.out_dir``; the summary says whether the invariants held
    (``RunResult.raise_on_failure`` turns a failure into exit 1).

    The folder is locked, written as a hidden sibling and renamed into place only when
    complete, replacing a previous run whole (``migrate/runfolder.py``).
    """
    with stage(config.out_dir) as staging:
        result = _run_batch(replace(config, out_dir=staging.path), progress)
        staging.publish()
    return RunResult(config.out_dir, result.summary, [staging.final(p) for p in result.outputs], result.execution)


def _run_batch(config: RunConfig, progress: Progress) -> RunResult:
    started = datetime.now(UTC)
    work = config.out_dir / ".work"  # staged Parquet of the stages below; removed at the end
    try:
        return _run(config, progress, started, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _run(config: RunConfig, progress: Progress, started: datetime, work: Path) -> RunResult:
    from migrate.reports import record_previous, write_reports

    out = config.out_dir
    ingested, frozen, practices = _ingest(config, progress, work)
    tables = ingested.tables
    practice_rows = None if practices is None else practices.frame.lazy()

    progress.start("identity", total=None)
    target = read_target_index(config.target_index, config.target_mapping) if config.target_index else None
    identified = identify(tables, ingested.merges, config.identity_settings,
                          None if target is None else target.frame.lazy(), work)
    progress.finish("identity")

    decisions = decision_rows(config.decisions, config.previous)  # the review loop (migrate.review)
    identified, early = before_rules(decisions, identified, tables, config.identity_settings, config.rules)

    progress.start("rules", total=None)
    # Every source's sharing entries, of every record (merged ones too), on their survivor:
    # staged (up to one row per patient and sharing code; read by rules, dispositions, FHIR and
    # sharing.parquet), each reader scanning it.
    entries = pl.scan_parquet(sink(sharing.survivor_entries(tables, config.rules, identified.merges, practice_rows),
                                   work / "sharing-entries.parquet"))
    rules = classify({**identified.people, "sharing": entries}, config.rules, config.cutover,
                     identified.exceptions, work)  # scans of work/rules/
    review, rules = after_rules(decisions, early, rules, tables, config.rules)
    progress.finish("rules")

    # One row per canonical row (15M at a million patients): a plan sunk to work/ by the review
    # (never collected whole), read by the FHIR output, lineage and patients.parquet as a scan.
    decided, review = review.dispositions(
        lambda state: decide(tables["patients"], identified.people, rules.patient_cohorts,
                             identified.merges, state, SharingCodes.from_pack(config.rules), config.policy,
                             identified.at_target_by_number(), practice_rows, entries),
        rules.sharing, rules.cohorts, tables["referrals"], work)
    rid = config.run_id([f.sha256 for f in ingested.files])
    fhir = None
    if config.emit_fhir:
        progress.start("fhir", total=None)
        options = options_for(config.profiles[0].source_system, rid, config.cutover,
                              [(f.name, f.sha256) for f in ingested.files], config.bundle_size,
                              config.sharing_policy, config.rules)
        options = replace(options, form=config.fhir_form, compression=config.fhir_compression)
        fhir = emit(identified.patients, identified.merges, tables, decided, rules.cohorts,
                    rules.patient_cohorts, rules.exceptions, rules.sharing, config.rules, options, out,
                    decisions=review.decisions,
                    executor=make_executor(config.executor, config.scheduler, config.partitions))
        review = write_review_fhir(review, fhir, options, out)
        progress.finish("fhir")

    progress.start("write", total=None)
    lineage_rows = write_lineage(build_lineage(ingested, decided), None if fhir is None else fhir.lineage,
                                 {f.name: f.rows_read for f in ingested.files}, out / "lineage.parquet", work)
    patients = patient_summary(identified.patients, identified.merges, rules.patient_cohorts, rules.exceptions,
                               decided, work)
    canonical_rows = {f"canonical/{t}.parquet": n for t, n in ingested.heights.items()}
    written = write_tables(out, canonical_rows | {"lineage.parquet": lineage_rows}, {
        "quarantine.parquet": ingested.quarantine, "cohorts.parquet": rules.cohorts,
        "patients.parquet": patients, "exceptions.parquet": rules.exceptions,
        "duplicates.parquet": identified.duplicates, **review.tables(),
        # memory: the sharing entries (up to one per patient and sharing code), marked and sorted
        # a range of patients at a time (``sharing.deciding_by_ranges``), streamed when written.
        "sharing.parquet": sharing.deciding_by_ranges(entries, rules.sharing, work / "sharing-ranges"),
        **({} if target is None else {"target-quarantine.parquet": target.quarantine})}, work)
    written.paths.append(write_model(identified.model, out))  # the weights identity learned from this extract
    invariant = rows_invariant(pl.scan_parquet(out / "lineage.parquet"),
                               [FileCount(f.name, f.table, f.rows_read) for f in ingested.files])
    inputs: list[InputRecord] = [{"path": f.name, "table": f.table, "bytes": f.bytes, "sha256": f.sha256,
                                  "rows": f.rows_read} for f in ingested.files]
    stats: FhirStats | None = None if fhir is None else fhir.asdict()
    manifest: dict[str, Any] = dict(build_manifest(
        out, _record(config, rid), started, datetime.now(UTC), inputs, written.rows, invariant,
        ingested.quarantine.height, {"identity": identified.counts(ingested.merges.height, ingested.superseded.height),
                                     "updates": ingested.update_counts(), "fhir": stats,
                                     "target_index": None if target is None else target.summary()}, frozen,
        identified.model.summary()))
    execution = None if fhir is None or fhir.execution is None else fhir.execution.record()
    if execution is not None:  # where the FHIR partitions ran (not part of the outputs: like the times)
        manifest["execution"] = execution
    if config.decisions:  # the filled-in worklists this batch read (every row is in decisions.parquet)
        manifest["decisions"] = [d.record() for d in config.decisions]
    if config.previous is not None:
        manifest = record_previous(manifest, config.previous, out)
    # Sealed (with the key) by write_reports, once every report is in: the round trip's report
    # is recorded before that, without the key.
    write_json(with_digest(manifest), out / "manifest.json")
    progress.finish("write")
    emitted = fhir is not None
    # Everything from here on reads the run folder: the stages' frames are let go first.
    del ingested, tables, identified, rules, decided, fhir, patients, target
    if emitted:  # the round trip: the FHIR written says what the source said (reports/roundtrip.json)
        # Its buckets on this machine's processes as the local executor's partitions run
        # (--partitions 1: in this process); with Dask, here.
        run_roundtrip(out, progress, make_executor("local", None, config.partitions)
                      if config.executor == "local" else None)

    progress.start("reports", total=None)
    report = write_reports(out, config.previous, invariant=invariant, key=config.seal_key)  # declaration: config/
    progress.finish("reports")
    return RunResult(out, report.summary, written.paths + report.files, execution)
