"""The FHIR stage of a batch: a run's frames into ``write_fhir``, and ``handover fhir RUN``.

``emit`` is the one way a run's FHIR output is made, whether by ``handover run`` (frames
still in memory) or by ``reemit_fhir`` (the same frames read back from the run folder),
so both give the same bytes:

- patients: every source patient with identity's verdicts, ``survivor_key`` from the
  run's merge map (identity's merges and the extract's own merge messages alike), so a
  merged record's rows hang off its survivor's Patient;
- referrals, contacts and codes re-pointed to the survivors;
- the sharing state of each survivor, from the rule pack's codelists by the rules
  engine's own feature code;
- raised priorities (``derived_priority``) from the flags that raise one.
"""

from __future__ import annotations

import shutil
from collections.abc import Mapping
from datetime import date
from pathlib import Path
from typing import Any

import polars as pl

from migrate import canonical
from migrate.fhir.bundle import FhirResult, write_fhir
from migrate.fhir.inputs import sharing_from_features
from migrate.fhir.options import FhirOptions, InputFile, SharingCodes
from migrate.identity.merges import CHILD_TABLES, people
from migrate.rules.model import RulePack

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


def options_for(source_system: str, run_id: str, cutover: date, inputs: list[tuple[str, str]], bundle_size: int,
                sharing_policy: Any, pack: RulePack) -> FhirOptions:
    """The FHIR options of a run: its ids, inputs (name, sha256) and policy, and the
    sharing codelists of the pack the run used (never the shipped pack's)."""
    return FhirOptions(source_system=source_system, run_id=run_id, cutover=cutover,
                       inputs=tuple(InputFile(name, sha) for name, sha in sorted(inputs)), bundle_size=bundle_size,
                       sharing_policy=sharing_policy, sharing_codes=SharingCodes.from_pack(pack))


def emit(patients: pl.DataFrame, merges: pl.DataFrame, tables: Mapping[str, pl.LazyFrame], cohorts: pl.DataFrame,
         patient_cohorts: pl.DataFrame, exceptions: pl.DataFrame, pack: RulePack, options: FhirOptions,
         out_dir: Path) -> FhirResult:
    """Write ``out_dir/fhir`` for a run.

    ``patients``: identity's patients (canonical columns, survivors with their
    survivorship values, ``nhs_number_valid``, ``nhs_number_verification``,
    ``at_target_id``); ``merges``: the run's merge map (patient_key -> survivor_key);
    ``tables``: canonical referrals, contacts and codes as read (re-pointed here).
    """
    from migrate.features import patient_features

    view = people(patients, tables, merges)
    survivors = patients.drop("survivor_key", strict=False).join(merges, on="patient_key", how="left").with_columns(
        pl.coalesce("survivor_key", "patient_key").alias("survivor_key"))
    sharing = sharing_from_features(patient_features(view, pack, options.cutover))
    frames = {"patients": survivors.lazy(), **{t: view[t] for t in CHILD_TABLES}}
    return write_fhir(frames, cohorts.lazy(), patient_cohorts.lazy(), exceptions.lazy(), sharing, options, out_dir,
                      derived_priority=derived_priority(exceptions).lazy())


def reemit_fhir(run_dir: Path, bundle_size: int = 500) -> FhirResult:
    """``handover fhir RUN``: write the FHIR output again from a finished run's own tables
    (canonical tables, cohorts, patients, exceptions) and options (manifest), replacing
    ``fhir/``. Returns the FHIR summary; the run's lineage is not rewritten."""
    from migrate.reports.rundata import RunFolder, reading

    run = RunFolder.open(run_dir)
    with reading(run_dir):
        return _reemit(run_dir, run.manifest, bundle_size)


def _reemit(run_dir: Path, manifest: dict[str, Any], bundle_size: int) -> FhirResult:
    from migrate.rules import load_pack

    tables = {t: pl.scan_parquet(run_dir / "canonical" / f"{t}.parquet") for t in canonical.TABLE_ORDER}
    summary = pl.read_parquet(run_dir / "patients.parquet")
    merges = summary.filter(pl.col("survivor_key") != pl.col("patient_key")).select("patient_key", "survivor_key")
    patients = tables["patients"].collect().join(
        summary.select("patient_key", "nhs_number_valid", "nhs_number_verification", "at_target_id"),
        on="patient_key", how="left")
    mappings = manifest["mapping"]
    pack = load_pack(None)
    options = options_for(mappings[0].get("source_system", mappings[0]["name"]), manifest["run_id"],
                          date.fromisoformat(manifest["cutover_date"]),
                          [(i["path"], i["sha256"]) for i in manifest["inputs"]], bundle_size,
                          manifest["options"]["sharing_policy"], pack)
    shutil.rmtree(run_dir / "fhir", ignore_errors=True)
    exceptions = pl.read_parquet(run_dir / "exceptions.parquet")
    result = emit(patients, merges, tables, pl.read_parquet(run_dir / "cohorts.parquet"),
                  pl.read_parquet(run_dir / "patients.parquet").select("patient_key", "patient_cohort"),
                  exceptions, pack, options, run_dir)
    return result
