"""The FHIR stage of a batch: a run's frames into ``write_fhir``, and ``handover fhir RUN``.

``emit`` is the one way a run's FHIR output is made, whether by ``handover run`` (frames
still in memory) or by ``reemit_fhir`` (the same frames read back from the run folder),
so both give the same bytes:

- patients: every source patient with identity's verdicts, ``survivor_key`` from the
  run's merge map (identity's merges and the extract's own merge messages alike), so a
  merged record's rows hang off its survivor's Patient;
- referrals, contacts and codes re-pointed to the survivors;
- of those, only the rows whose disposition is carried (``dispositions.carried``): the
  dispositions are decided once, before and independently of this stage;
- the sharing state of each survivor (the rules stage's, ``rules.stage.sharing_state``,
  over every source's entries: ``migrate.sharing``);
- raised priorities (``derived_priority``) from the flags that raise one;
- reviewers' applied overrides of sharing blocks (``with_overrides``): the withheld
  clinical rows are carried by their dispositions, the cancer history by ``overridden``.
"""

from __future__ import annotations

import shutil
from collections.abc import Mapping
from dataclasses import replace
from datetime import date
from pathlib import Path
from typing import Any

import polars as pl

from migrate import canonical, frozen
from migrate.fhir.bundle import FhirResult, write_fhir
from migrate.fhir.carried import carried_patients, carried_rows
from migrate.errors import InputError
from migrate.executor import Executor
from migrate.policies import SharingPolicy, sharing_policy
from migrate.fhir.options import FhirOptions, InputFile, SharingCodes
from migrate.identity.merges import CHILD_TABLES, people, repoint
from migrate.reports.rundata import MANIFEST, RunFolder, read_json
from migrate.rules.model import RulePack
from migrate.summary import (FHIR_COMPRESSIONS, FHIR_FORMS, FhirCompression, FhirForm, recorded_fhir_compression,
                             recorded_fhir_form)

DEFAULT_BUNDLE_SIZE = 500  # patients per bundle when a run recorded none
Frame = pl.DataFrame | pl.LazyFrame  # a stage's frame in memory, or a scan of it staged as Parquet

def derived_priority(exceptions: Frame, pack: RulePack, decisions: pl.DataFrame | None = None) -> pl.DataFrame:
    """referral_key, priority, reason for each referral raised by a flag rule with a
    ``priority:`` outcome (the pack's rules, never a list in code) or by an applied review
    decision (``decisions``: ``decisions.parquet`` rows; upgrade_urgent): the ServiceRequest
    carries the raised priority, the assigned one in a note, the rule's evidence or the
    decision as the reason. Several raising one referral: the FHIR stage keeps the highest.
    ``exceptions``: the rules stage's frame, or a scan of it."""
    from migrate.review.effects import raised_priorities

    raises = pack.raised_priorities()
    # memory: held: only the raised referrals' rows (a few per cent of the flags); the
    # exceptions themselves are read as a scan when given as one.
    raised = exceptions.lazy().filter((pl.col("subject_type") == "referral") & pl.col("rule_id").is_in(list(raises)))
    # memory: the raised referrals' rows alone (above)
    by_rules = raised.select(
        pl.col("subject_key").alias("referral_key"),
        pl.col("rule_id").replace_strict(raises, return_dtype=pl.String).alias("priority"),
        pl.format("{} (rule {}): {}", "flag_code", "rule_id", "evidence").alias("reason"),
    ).collect()
    return by_rules if decisions is None or decisions.height == 0 else pl.concat([by_rules,
                                                                                   raised_priorities(decisions)])


def options_for(source_system: str, run_id: str, cutover: date, inputs: list[tuple[str, str]], bundle_size: int,
                sharing_policy: SharingPolicy, pack: RulePack) -> FhirOptions:
    """The FHIR options of a run: its ids, inputs (name, sha256) and policy, and the
    sharing codelists of the pack the run used (never the shipped pack's)."""
    return FhirOptions(source_system=source_system, run_id=run_id, cutover=cutover,
                       inputs=tuple(InputFile(name, sha) for name, sha in sorted(inputs)), bundle_size=bundle_size,
                       sharing_policy=sharing_policy, sharing_codes=SharingCodes.from_pack(pack))


def with_overrides(sharing: pl.LazyFrame, decisions: pl.DataFrame | None) -> pl.LazyFrame:
    """``sharing`` with ``overridden``: a reviewer's applied ``override`` lifted the patient's
    block (the same decisions that let ``dispositions`` carry the withheld rows)."""
    from migrate.review.effects import overridden_keys

    keys = [] if decisions is None else overridden_keys(decisions)
    return sharing.with_columns(pl.col("patient_key").is_in(keys).alias("overridden"))


def emit(patients: Frame, merges: Frame, tables: Mapping[str, pl.LazyFrame], decided: pl.LazyFrame,
         cohorts: Frame, patient_cohorts: Frame, exceptions: Frame, sharing: Frame,
         pack: RulePack, options: FhirOptions, out_dir: Path, decisions: pl.DataFrame | None = None,
         executor: Executor | None = None) -> FhirResult:
    """Write ``out_dir/fhir`` for a run.

    ``patients``: identity's patients (canonical columns, survivors with their
    survivorship values, ``nhs_number_valid``, ``nhs_number_verification``,
    ``at_target_id``); ``merges``: the run's merge map (patient_key -> survivor_key);
    ``tables``: canonical referrals, contacts and codes as read (re-pointed here);
    ``decided``: every canonical row's disposition (``dispositions.decide``); ``sharing``:
    the survivors' sharing state; ``pack``: the run's rule pack (its ``priority:`` outcomes);
    ``decisions``: the review decisions (``decisions.parquet``; those applied raise priorities).
    ``executor``: where the writer's partitions run (``migrate.executor``; same bytes either way).
    Each frame may be given in memory or as a scan (``Frame``): the stage reads them lazily.
    """
    # memory: lazy over the frames the run holds anyway, or over their staged scans — no copy
    # of the patient table is held while the FHIR stage runs (its inputs are staged by batch
    # from these queries). The merge map (one row per merged record) is held.
    merges = merges.lazy().collect()
    survivors = patients.lazy().drop("survivor_key", strict=False).join(
        merges.lazy(), on="patient_key", how="left").with_columns(
        pl.coalesce("survivor_key", "patient_key").alias("survivor_key"))
    # The rows ``dispositions.carried`` gives, by a bitmap of their carried source rows, which
    # filters each chunk as staging reads it (migrate.fhir.carried): the patients (a merged
    # record by its survivor's row) and the child rows (millions).
    frames = {"patients": carried_patients(survivors, merges, decided)} | carried_rows(
        {t: repoint(tables[t], merges) for t in CHILD_TABLES}, decided)
    return write_fhir(frames, cohorts.lazy(), patient_cohorts.lazy(), exceptions.lazy(),
                      with_overrides(sharing.lazy(), decisions), options, out_dir,
                      derived_priority=derived_priority(exceptions, pack, decisions).lazy(), executor=executor)


def reemit_fhir(run_dir: Path, bundle_size: int | None = None, key: bytes | None = None,
                form: FhirForm | None = None, compression: FhirCompression | None = None) -> FhirResult:
    """``handover fhir RUN``: write ``fhir/`` again from a finished run's own folder.

    Everything comes from the run folder, never from the shipped defaults: the canonical
    tables, cohorts, exceptions and merges (``patients.parquet``), the dispositions
    (``lineage.parquet``: the rows to send), the rule pack and identity settings the run
    used (``config/``; survivorship and sharing state are re-derived with them, the
    practice sharing file too), and its
    options (manifest; ``bundle_size``, ``form`` and ``compression`` default to the run's:
    ``form`` ``both`` writes the bundles of a run made with ``--fhir-form ndjson``;
    ``compression`` ``none`` writes plain NDJSON for a run made with ``gzip``). The manifest is
    updated to the files written (unchanged when they are byte-identical, as they are
    with the run's own bundle size), its digest recomputed, so ``handover verify`` passes
    afterwards; a sealed run is re-emitted only with its ``key`` (ConfigError before
    anything is written).
    """
    from migrate.reports.chain import check_sealable
    from migrate.reports.rundata import reading

    run = RunFolder.open(run_dir)
    check_sealable(run_dir, key)
    with reading(run_dir):
        size = bundle_size or int(run.manifest["options"].get("bundle_size") or DEFAULT_BUNDLE_SIZE)
        form = form or recorded_fhir_form(run.manifest["options"])
        if form is None:
            raise InputError(f"{run.path}: the manifest's fhir_form is not one of {', '.join(FHIR_FORMS)}")
        compression = compression or recorded_fhir_compression(run.manifest["options"])
        if compression is None:
            raise InputError(f"{run.path}: the manifest's fhir_compression is not one of "
                             f"{', '.join(FHIR_COMPRESSIONS)}")
        result = _reemit(run, size, form, compression)
        _reseal(run, result, size, key)
    return result


def _reemit(run: RunFolder, bundle_size: int, form: FhirForm, compression: FhirCompression) -> FhirResult:
    from migrate.identity import resolve_identity
    from migrate.rules.stage import sharing_state
    from migrate.sharing import survivor_entries

    manifest = run.manifest
    pack = frozen.load_pack(run.path)
    tables = {t: run.canonical(t) for t in canonical.TABLE_ORDER}
    # memory: whole: ``handover fhir RUN`` re-emits from a finished run folder, outside the batch: the patient summary
    # (one row per source patient), reviewers' decisions and the sharing state (one row per patient with an entry) are
    # held as ``emit`` and ``decided_survivors`` take them
    recorded = run.scan("patients.parquet").collect()
    # Identity's survivorship (which record's demographics a survivor carries) is not in the
    # folder: re-derived from the canonical rows with the run's own identity settings.
    identity = resolve_identity(tables["patients"], tables["referrals"], frozen.load_identity(run.path))
    patients = identity.patients.drop("at_target_id").join(
        recorded.select("patient_key", "at_target_id"), on="patient_key", how="left")
    merges = recorded.filter(pl.col("survivor_key") != pl.col("patient_key")).select("patient_key", "survivor_key")
    # memory: the decisions: reviewers' rows (few)
    decisions = run.scan("decisions.parquet").collect() if run.has("decisions.parquet") else None
    if decisions is not None:  # reviewers' same_person merges: the survivor's fields as the run had them
        from migrate.review.stage import decided_survivors

        patients = decided_survivors(patients, recorded, tables, decisions, frozen.load_identity(run.path))
    # Lineage has a row per resource: the same row's disposition repeats, which neither the
    # patients' semi join nor the child rows' bitmap minds (no whole-lineage unique).
    decided = run.scan("lineage.parquet").select("source_file", "source_row", "table", "patient_key",
                                                 pl.col("disposition").cast(pl.String))
    # Every source's sharing entries, re-derived as the run did: the frozen practice file too.
    practices = frozen.load_practice_sharing(run.path, manifest)
    entries = survivor_entries(tables, pack, merges, None if practices is None else practices.frame.lazy())
    # memory: whole (above): one sharing state per patient with an entry
    sharing = sharing_state({**people(patients, tables, merges), "sharing": entries}, pack, run.cutover).collect()
    policy = sharing_policy(manifest["options"].get("sharing_policy"))
    if policy is None:
        raise InputError(f"{run.path}: the manifest's sharing policy is not one handover knows")
    mapping = manifest["mapping"][0]
    options = options_for(str(mapping.get("source_system", mapping["name"])), run.run_id, run.cutover,
                          [(i["path"], i["sha256"]) for i in manifest["inputs"]], bundle_size, policy, pack)
    options = replace(options, form=form, compression=compression)
    shutil.rmtree(run.path / "fhir", ignore_errors=True)
    result = emit(patients, merges, tables, decided, run.scan("cohorts.parquet"),
                  recorded.select("patient_key", "patient_cohort"), run.scan("exceptions.parquet"),
                  sharing.lazy(), pack, options, run.path, decisions)
    if decisions is not None:  # the review's Consent and Provenance (migrate.review.fhir)
        from migrate.review.fhir import rewrite_review_fhir

        result = rewrite_review_fhir(run, decisions, result, options)
    return result


def _reseal(run: RunFolder, result: FhirResult, bundle_size: int, key: bytes | None) -> None:
    """Record the re-emitted ``fhir/`` files, statistics, bundle size, form and compression in
    the manifest (written only when something changed)."""
    from migrate.reports.chain import seal_outputs

    manifest = read_json(run.path / MANIFEST)
    stages = dict(manifest.get("stages") or {}) | {"fhir": result.asdict()}
    options = dict(manifest["options"]) | {"bundle_size": bundle_size, "fhir_form": result.form}
    options.pop("fhir_compression", None)  # written only for gzip, as the run writes it
    if result.compression != "none":
        options["fhir_compression"] = result.compression
    seal_outputs(run.path, result.files, key, {"stages": stages, "options": options}, replacing="fhir/")
