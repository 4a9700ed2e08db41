"""One migration batch, start to finish: the stages chained, the run folder written.

``run_batch`` is what ``handover run`` calls:

    ingest (read, map, quarantine; canonical/*.parquet) ─► identity (NHS numbers, merges,
        duplicates, target index) ─► rules (cohorts, flags) ─► dispositions ─► lineage
        ─► invariant ─► reports, manifest

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
from migrate.errors import ConfigError, InputError
from migrate.flags import combine_exceptions
from migrate.hazards import hazards_path, load_hazards
from migrate.identity import IdentityResult, IdentitySettings, load_identity_settings, resolve_identity, write_model
from migrate.manifest import sha256_file
from migrate.ingest import Ingested, check_layout, ingest
from migrate.manifest import describe_outputs, run_id
from migrate.outputs import write_json, write_parquet
from migrate.profile import Profile, load_profile
from migrate.progress import NULL_PROGRESS, Progress
from migrate.reconcile import FileCount, invariant, quarantine_summary
from migrate.reports.hazard_log import keep_with_run
from migrate.rules import RulePack, evaluate, load_pack
from migrate.sources import discover
from migrate.target_index import read_target_index, target_mapping
from migrate.vocabulary import vocabulary

PATIENTS_SCHEMA: dict[str, pl.DataType] = {
    "patient_key": pl.String(), "nhs_number": pl.String(), "patient_cohort": pl.Enum(canonical.COHORTS),
    "disposition": pl.Enum(canonical.DISPOSITIONS), "flag_codes": pl.List(pl.String()),
    # beyond the contract's key columns: who a merged patient became, and identity's verdicts
    "survivor_key": pl.String(), "nhs_number_valid": pl.Boolean(), "nhs_number_verification": pl.String(),
    "at_target_id": pl.String(),
}


def _identity_path(pack_path: Path | None) -> Path:
    """A site pack folder may hold its own identity.yaml; otherwise the shipped one."""
    from migrate.identity.settings import default_path

    if pack_path is not None and (pack_path.parent / "identity.yaml").is_file():
        return pack_path.parent / "identity.yaml"
    return default_path()


def merge_map(identity: IdentityResult, source_merges: pl.DataFrame) -> pl.DataFrame:
    """patient_key -> survivor_key for every merged patient: identity's exact duplicates and
    the source's own merges (HL7 A40), followed through chains (A into B into C)."""
    pairs = pl.concat([
        identity.merges.select("patient_key", "survivor_key"),
        source_merges.select(pl.col("prior_patient_key").alias("patient_key"), pl.col("patient_key").alias("survivor_key")),
    ]).unique(subset="patient_key", keep="first", maintain_order=True)
    for _ in range(8):  # chains are short; each pass follows one more link
        followed = pairs.join(pairs.rename({"patient_key": "survivor_key", "survivor_key": "next"}), on="survivor_key",
                              how="left").with_columns(pl.coalesce("next", "survivor_key").alias("survivor_key"))
        followed = followed.drop("next").filter(pl.col("patient_key") != pl.col("survivor_key"))
        if followed.equals(pairs):
            break
        pairs = followed
    return pairs.sort("patient_key")


def repoint(frame: pl.LazyFrame, merges: pl.DataFrame) -> pl.LazyFrame:
    """Rows of merged patients re-pointed to their survivor."""
    if merges.height == 0:
        return frame
    return frame.join(merges.lazy(), on="patient_key", how="left", maintain_order="left").with_columns(
        pl.coalesce("survivor_key", "patient_key").alias("patient_key")).drop("survivor_key")


def _run_files(out: Path) -> list[Path]:
    """Every file of the run folder but the manifest itself (and no hidden work files)."""
    return [p for p in out.rglob("*") if p.is_file() and p.name != "manifest.json"
            and not any(part.startswith(".") for part in p.relative_to(out).parts)]


def set_aside(dispositions: pl.DataFrame, rows: pl.DataFrame, disposition: str) -> pl.DataFrame:
    """``dispositions`` with the migrated rows among ``rows`` (source_file, source_row) changed."""
    if rows.height == 0:
        return dispositions
    marked = rows.select("source_file", "source_row", pl.lit(True).alias("_hit")).unique()
    return dispositions.join(marked, on=["source_file", "source_row"], how="left", maintain_order="left").with_columns(
        pl.when(pl.col("_hit") & (pl.col("disposition") == "migrated")).then(pl.lit(disposition))
        .otherwise(pl.col("disposition")).alias("disposition")).drop("_hit")


# Flags that raise a referral's priority in the FHIR output: the ServiceRequest carries the
# raised priority, the assigned one in a note, and the rule's evidence as the reason.
PRIORITY_RAISED_BY: dict[str, str] = {"UNDER_PRIORITISED": "urgent"}


def derived_priority(exceptions: pl.DataFrame) -> pl.DataFrame:
    """referral_key, priority, reason for each referral a flag raises (``PRIORITY_RAISED_BY``)."""
    raised = exceptions.filter((pl.col("subject_type") == "referral")
                               & pl.col("flag_code").is_in(list(PRIORITY_RAISED_BY)))
    return raised.select(
        pl.col("subject_key").alias("referral_key"),
        pl.col("flag_code").replace_strict(PRIORITY_RAISED_BY, return_dtype=pl.String).alias("priority"),
        pl.format("{} (rule {}): {}", "flag_code", "rule_id", "evidence").alias("reason"),
    ).unique("referral_key", keep="first", maintain_order=True)


def _write_fhir(config: RunConfig, rid: str, ingested: Ingested, identity: IdentityResult,
                people: dict[str, pl.LazyFrame], cohorts: pl.DataFrame, patient_cohorts: pl.DataFrame,
                exceptions: pl.DataFrame, merges: pl.DataFrame) -> Any:
    from migrate.fhir import FhirOptions, sharing_from_codes, write_fhir
    from migrate.fhir import InputFile as FhirInput

    options = FhirOptions(
        source_system=config.profiles[0].source_system, run_id=rid, cutover=config.cutover,
        inputs=tuple(FhirInput(f.name, f.sha256) for f in sorted(ingested.files, key=lambda f: f.name)),
        bundle_size=config.bundle_size, sharing_policy=config.sharing_policy,  # type: ignore[arg-type]
    )
    # Survivors from the whole merge map: identity's merges and the source's own (HL7 A40), as
    # the referrals were re-pointed; otherwise a source-merged record kept a Patient of its own.
    patients = identity.patients.drop("survivor_key").join(merges, on="patient_key", how="left")
    tables = {"patients": patients.lazy(), **{t: people[t] for t in ("referrals", "contacts", "codes")}}
    sharing = sharing_from_codes(people, config.cutover, config.rules_path)
    return write_fhir(tables, cohorts.lazy(), patient_cohorts.lazy(), exceptions.lazy(), sharing, options,
                      config.out_dir, derived_priority=derived_priority(exceptions).lazy())


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
    identity_settings: IdentitySettings
    identity_sha256: str
    sharing_policy: str = "withhold-clinical"
    target_index: Path | None = None
    rules_path: Path | None = None
    emit_fhir: bool = True
    bundle_size: int = 500
    previous: Path | None = None
    declared: Path | None = None
    target_mapping: Profile | None = None  # reads the target index (None: canonical column names)

    @classmethod
    def load(cls, input_dir: Path, mapping: str | Path | Sequence[str | Path], cutover: date, out_dir: Path,
             rules: str | Path | None = None, sharing_policy: str = "withhold-clinical",
             target_index: Path | None = None, emit_fhir: bool = True, bundle_size: int = 500,
             previous: Path | None = None, declared: Path | None = None,
             target_mapping_profile: str | Path | None = None) -> RunConfig:
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
        pack_path = resolve_rules_path(rules)
        pack = load_pack(pack_path)
        identity_path = _identity_path(pack_path)
        settings = load_identity_settings(identity_path)
        target_profile = target_mapping(target_mapping_profile, profiles, target_index)
        load_hazards(hazards_path(pack_path))  # exit 2 on a broken hazard log, before any data is read
        if target_index is not None and not Path(target_index).is_file():
            raise InputError(f"target index not found: {target_index}")
        if bundle_size < 1:
            raise ConfigError(f"bundle size must be at least 1 patient (got {bundle_size})")
        if previous is not None and not (Path(previous) / "manifest.json").is_file():
            raise InputError(f"previous run not found (no manifest.json): {previous}")
        if declared is not None:
            from migrate.reports import load_declared

            load_declared(Path(declared))  # exit 2 on a bad declaration, before any data is read
        return cls(input_dir=input_dir, profiles=profiles, cutover=cutover, out_dir=out_dir, rules=pack,
                   identity_settings=settings, identity_sha256=sha256_file(identity_path),
                   sharing_policy=sharing_policy, target_index=None if target_index is None else Path(target_index),
                   rules_path=pack_path, emit_fhir=emit_fhir, bundle_size=bundle_size,
                   previous=None if previous is None else Path(previous),
                   declared=None if declared is None else Path(declared), target_mapping=target_profile)

    @property
    def mappings(self) -> list[dict[str, str]]:
        """Name, source system and sha256 of each profile, for the manifest and the report."""
        return [{"name": p.name, "sha256": p.sha256, "source_system": p.source_system} for p in self.profiles]

    def identity(self, input_hashes: list[str]) -> str:
        """The deterministic run id of this configuration over these inputs."""
        target = sha256_file(self.target_index) if self.target_index else ""
        own = [self.target_mapping.sha256] if self.target_mapping and self.target_mapping not in self.profiles else []
        return run_id([__version__, *(p.sha256 for p in self.profiles), self.rules.sha256, self.identity_sha256,
                       self.cutover.isoformat(), self.sharing_policy, target, *own, *sorted(input_hashes)])


@dataclass
class RunResult:
    """What a finished batch reports: the summary (as in reconciliation.json) and its folder."""

    run_dir: Path
    summary: dict[str, Any]
    outputs: list[Path] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """Both invariants hold and every FHIR resource validated."""
        fhir_ok = self.summary.get("fhir") is None or not self.summary["fhir"].get("errors")
        reports_ok = self.summary.get("reports", {"holds": True})["holds"]  # includes the round trip
        return bool(self.summary["invariant"]["holds"]) and bool(
            self.summary.get("fhir_invariant", {"holds": True})["holds"]) and fhir_ok and bool(reports_ok)


def build_lineage(ingested: Ingested, dispositions: pl.LazyFrame, fhir: pl.LazyFrame | None = None) -> pl.LazyFrame:
    """One row per source row and FHIR resource it became: where it came from, its patient,
    its disposition, and the resource (null when it became none).

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
    lineage = pl.concat([dispositions, quarantined, superseded, merges], how="vertical")
    if fhir is None:
        lineage = lineage.with_columns(pl.lit(None, dtype=pl.String).alias("fhir_type"),
                                       pl.lit(None, dtype=pl.String).alias("fhir_id"))
    else:
        resources = fhir.select("source_file", "source_row", "fhir_type", "fhir_id")
        lineage = lineage.join(resources, on=["source_file", "source_row"], how="left")
    return lineage.cast(canonical.LINEAGE_SCHEMA).sort(  # type: ignore[arg-type]
        "source_file", "source_row", "fhir_type", "fhir_id", nulls_last=False)


def patient_summary(identity: IdentityResult, merges: pl.DataFrame, patient_cohorts: pl.DataFrame,
                    exceptions: pl.DataFrame, dispositions: pl.DataFrame) -> pl.DataFrame:
    """``patients.parquet``: each source patient's cohort, disposition, survivor, identity
    verdicts and every flag raised for them (a merged patient shows its survivor's cohort)."""
    flags = exceptions.group_by("patient_key").agg(pl.col("flag_code").unique().sort().alias("flag_codes"))
    disp = dispositions.filter(pl.col("table") == "patients").select("patient_key", "disposition")
    ident = identity.patients.select("patient_key", "nhs_number", "nhs_number_valid", "nhs_number_verification",
                                     "at_target_id").join(merges, on="patient_key", how="left")
    return (
        ident.with_columns(pl.coalesce("survivor_key", "patient_key").alias("survivor_key"))
        .join(patient_cohorts.rename({"patient_key": "survivor_key"}), on="survivor_key", how="left")
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

    tables = ingested.tables
    progress.start("identity", total=None)
    target = read_target_index(config.target_index, config.target_mapping) if config.target_index else None
    identity = resolve_identity(tables["patients"], tables["referrals"], config.identity_settings,
                                None if target is None else target.frame.lazy())
    merges = merge_map(identity, ingested.merges)
    progress.finish("identity")

    # Rules see one patient per person: survivors (with survivorship values) holding the
    # referrals, contacts and codes of the records merged into them.
    survivors = identity.patients.join(merges, on="patient_key", how="anti").select(canonical.PATIENTS.schema.keys())
    people = {"patients": survivors.lazy(), **{t: repoint(tables[t], merges) for t in ("referrals", "contacts", "codes")}}
    progress.start("rules", total=None)
    results = evaluate(people, config.rules, config.cutover).collect()
    cohorts, patient_cohorts = results["cohorts"], results["patient_cohorts"]
    exceptions = combine_exceptions([results["exceptions"].lazy(), identity.exceptions.lazy()]).collect()
    progress.finish("rules")

    pack = config.rules
    blocked = exceptions.filter(pl.col("flag_code") == "SHARING_BLOCK").select("patient_key").lazy()
    sharing_codes = pack.keys("sharing_dissent_codes") + pack.keys("sharing_consent_codes")
    at_target = identity.at_target.filter(pl.col("match_method") == "nhs_number").select("patient_key").lazy()
    dispositions = decide({"patients": tables["patients"], **{t: people[t] for t in ("referrals", "contacts", "codes")}},
                          cohorts.lazy(), patient_cohorts.lazy(), blocked, sharing_codes, config.sharing_policy,
                          merged_patients=merges.lazy(), at_target_patients=at_target).collect()
    rid = config.identity([f.sha256 for f in ingested.files])
    fhir = None
    if config.emit_fhir:
        progress.start("fhir", total=None)
        fhir = _write_fhir(config, rid, ingested, identity, people, cohorts, patient_cohorts, exceptions, merges)
        # Rows FHIR leaves out by design (contacts of closed referrals, e-RS dummy slots) are
        # out of scope: they were never part of the care handed over.
        dispositions = set_aside(dispositions, fhir.not_emitted.collect(), "out_of_scope")
        progress.finish("fhir")
    lineage = build_lineage(ingested, dispositions.lazy(), None if fhir is None else fhir.lineage).collect()
    inv = invariant(lineage, [FileCount(f.name, f.table, f.rows_read) for f in ingested.files])
    patients = patient_summary(identity, merges, patient_cohorts, exceptions, dispositions)

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
    parquet(identity.duplicates, "duplicates.parquet")
    if target is not None:
        parquet(target.quarantine, "target-quarantine.parquet")
    written.append(keep_with_run(config.rules_path, out))  # the hazard log the audit pack shows
    written.append(write_model(identity.model, out))  # the weights identity learned from this extract

    summary: dict[str, Any] = {
        "run_id": rid,
        "cutover_date": config.cutover.isoformat(),
        "mapping": config.mappings,
        "rules": {"name": pack.name, "version": pack.version, "sha256": pack.sha256},
        "sharing_policy": config.sharing_policy,
        "invariant": inv,
        "fhir": None if fhir is None else fhir.asdict(),
        "quarantine": quarantine_summary(ingested.quarantine),
        "tables": dict(ingested.heights),
        "identity": identity.counts() | {"merged_by_source": ingested.merges.height,
                                         "superseded_rows": ingested.superseded.height},
        "updates": ingested.update_counts(),
        "cohorts": {
            "referrals": _counts(cohorts, "cohort", canonical.COHORTS),
            "patients": _counts(patients, "patient_cohort", canonical.COHORTS),
        },
        "flags": {
            "by_severity": _counts(exceptions, "severity", canonical.SEVERITIES),
            "by_code": _counts(exceptions, "flag_code", ()),
        },
        "vocabulary": vocabulary(tables, pack),
        "target_index": None if target is None else target.summary(),
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
        "options": {"sharing_policy": config.sharing_policy,
                    "target_index": None if config.target_index is None else {
                        "path": config.target_index.name, "sha256": sha256_file(config.target_index),
                        "mapping": None if config.target_mapping is None else config.target_mapping.name}},
        "identity_rules": {"sha256": config.identity_sha256},
        "identity_model": identity.model.summary(),
        "inputs": [
            {"path": f.name, "table": f.table, "bytes": f.bytes, "sha256": f.sha256, "rows": f.rows_read}
            for f in sorted(ingested.files, key=lambda f: f.name)
        ],
        "outputs": describe_outputs(out, _run_files(out), rows),
        "counts": {"rows_read": inv["rows_read"], "dispositions": inv["dispositions"],
                   "quarantined": ingested.quarantine.height},
        "previous_manifest_sha256": None,
    }
    if config.previous is not None:
        from migrate.reports import record_previous

        manifest = record_previous(manifest, config.previous, out)
    write_json(manifest, out / "manifest.json")
    progress.finish("write")
    if fhir is not None:  # the round trip: the FHIR written says what the source said (reports/roundtrip.json)
        from migrate.fhir.roundtrip import run_roundtrip

        summary["roundtrip"] = run_roundtrip(out, progress)
    from migrate.reports import write_reports

    progress.start("reports", total=None)
    report = write_reports(out, config.previous, config.declared)
    progress.finish("reports")
    # The second invariant (every migrated row became a resource, every resource traces to
    # a row) is computed by the reports from the run folder as written.
    summary["fhir_invariant"] = report.summary.get("fhir_invariant", {"holds": report.holds})
    summary["reports"] = {"holds": report.holds, "files": sorted(f.relative_to(out).as_posix() for f in report.files)}
    return RunResult(out, summary, written)


def reemit_fhir(run_dir: Path, bundle_size: int = 500) -> dict[str, Any]:
    """``handover fhir RUN``: write the FHIR output again from a finished run's own tables
    (canonical tables, cohorts, patients, exceptions) and options (manifest), replacing
    ``fhir/``. Returns the FHIR summary; the run's lineage is not rewritten."""
    import json

    from migrate.fhir import FhirOptions, sharing_from_codes, write_fhir
    from migrate.fhir import InputFile as FhirInput

    manifest_path = run_dir / "manifest.json"
    if not manifest_path.is_file():
        raise InputError(f"not a run folder (no manifest.json): {run_dir}")
    manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    tables = {t: pl.scan_parquet(run_dir / "canonical" / f"{t}.parquet") for t in canonical.TABLE_ORDER}
    summary = pl.read_parquet(run_dir / "patients.parquet")
    merges = summary.filter(pl.col("survivor_key") != pl.col("patient_key")).select("patient_key", "survivor_key")
    patients = tables["patients"].join(
        summary.lazy().select("patient_key", "survivor_key", "nhs_number_valid", "nhs_number_verification",
                              "at_target_id"), on="patient_key", how="left")
    people = {"patients": patients, **{t: repoint(tables[t], merges) for t in ("referrals", "contacts", "codes")}}
    mappings = manifest["mapping"]
    options = FhirOptions(
        source_system=mappings[0].get("source_system", mappings[0]["name"]), run_id=manifest["run_id"],
        cutover=date.fromisoformat(manifest["cutover_date"]),
        inputs=tuple(FhirInput(i["path"], i["sha256"]) for i in manifest["inputs"]), bundle_size=bundle_size,
        sharing_policy=manifest["options"]["sharing_policy"],
    )
    shutil.rmtree(run_dir / "fhir", ignore_errors=True)
    result = write_fhir(people, pl.scan_parquet(run_dir / "cohorts.parquet"),
                        pl.scan_parquet(run_dir / "patients.parquet").select("patient_key", "patient_cohort"),
                        pl.scan_parquet(run_dir / "exceptions.parquet"),
                        sharing_from_codes(people, options.cutover), options, run_dir,
                        derived_priority=derived_priority(pl.read_parquet(run_dir / "exceptions.parquet")).lazy())
    return dict(result.asdict())
