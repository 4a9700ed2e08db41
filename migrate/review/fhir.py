"""The FHIR a review decision adds: a Provenance per decision that changed resources, and a
Consent (permit) per sharing override, carrying the basis the note states.

They go in one more transaction bundle after the batch's own (``fhir/bundles/bundle-N.json``,
so ``handover load`` sends them last, after the resources they point at; none with
``--fhir-form ndjson``, which writes no bundle) and in
``fhir/review/<Type>.ndjson``. They are the audit trail of the review, not a source row's
record, so they stay out of ``fhir/ndjson`` (whose every resource traces to a source row,
invariant 2, and is read back by the round trip).

Each Provenance names the decision (identifier ``{base}/Id/review-decision``, the flag and
the decision as its activity), the reviewer (author) and second reviewer (verifier), the
date (``occurredDateTime``; ``recorded`` is the run's instant, so a re-run writes the same
bytes), the note as its reason, and the decisions file by its sha256; ``target`` lists
every resource the decision changed (``changed`` rows through the FHIR writer's lineage).
Ids are UUIDv5 of the decision id. ``resources`` on each decision row lists the same
targets (``decisions.parquet``).
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import polars as pl

from migrate.fhir.bundle import FhirResult, bundle_name
from migrate.fhir.care import CONSENT_CATEGORY, CONSENT_SCOPE, V3_ACT
from migrate.fhir.ids import fhir_id, namespace
from migrate.fhir.options import ODS, FhirOptions, profile
from migrate.review.effects import applied
from migrate.reports.rundata import RunFolder
from migrate.review.stage import CHANGED_SCHEMA, Review

PARTICIPANT = "http://terminology.hl7.org/CodeSystem/provenance-participant-type"
# The resource types an effect changes (an override: every resource of the rows it released).
CHANGES = {"merge": ("Patient",), "raise_priority": ("ServiceRequest",), "move": ("ServiceRequest", "EpisodeOfCare")}
FOLDER = "review"


def _targets(review: Review, lineage: pl.LazyFrame) -> pl.DataFrame:
    """decision_id, resources (sorted ``Type/id``): what each applied decision changed."""
    # memory: the FHIR links (one per resource and source row: ~15M at a million patients) are joined
    # with the few changed rows as a plan: only the changed rows' links are collected.
    links = review.changed.lazy().join(lineage.select("source_file", "source_row", "fhir_type", "fhir_id").filter(
        pl.col("fhir_id").is_not_null()), on=["source_file", "source_row"]).collect()
    effect = applied(review.decisions).select("decision_id", "effect")
    kept = pl.col("effect").replace_strict({e: list(t) for e, t in CHANGES.items()}, default=None,
                                           return_dtype=pl.List(pl.String))
    found = (links.join(effect, on="decision_id")
             .filter(kept.is_null() | kept.list.contains(pl.col("fhir_type")))
             .select("decision_id", pl.format("{}/{}", "fhir_type", "fhir_id").alias("resource")))
    return found.unique().group_by("decision_id").agg(pl.col("resource").sort().alias("resources"))


def _patient_ids(lineage: pl.LazyFrame, keys: list[str]) -> dict[str, str]:
    # memory: the Patient links of ``keys`` (the patients the decisions name)
    rows = lineage.filter((pl.col("fhir_type") == "Patient") & pl.col("patient_key").is_in(keys)).select(
        "patient_key", "fhir_id").unique().sort("patient_key", "fhir_id").collect()
    return {k: v for k, v in rows.group_by("patient_key", maintain_order=True).first().iter_rows()}


def _consent(row: dict[str, Any], patient_id: str, cid: str, opts: FhirOptions) -> dict[str, Any]:
    return {
        "resourceType": "Consent", "id": cid, "meta": {"profile": [profile("Consent")]},
        "status": "active", "scope": CONSENT_SCOPE, "category": CONSENT_CATEGORY,
        "patient": {"reference": f"Patient/{patient_id}"},
        "dateTime": row["decided_on"].isoformat(),
        "performer": [{"display": row["reviewer"]}],
        "organization": [{"identifier": {"system": ODS, "value": opts.organisation_ods}}],
        # The basis of the override (e.g. "consent recorded on 03/10/2022"), as the reviewer wrote it.
        "sourceAttachment": {"contentType": "text/plain", "title": row["note"]},
        "policyRule": {"coding": [{"system": V3_ACT, "code": "OPTIN"}]},
        "provision": {"type": "permit"},
    }


def _provenance(row: dict[str, Any], targets: list[str], pid: str, opts: FhirOptions) -> dict[str, Any]:
    agents = [{"type": {"coding": [{"system": PARTICIPANT, "code": "author", "display": "Author"}]},
               "who": {"display": row["reviewer"]},
               "onBehalfOf": {"identifier": {"system": ODS, "value": opts.organisation_ods}}}]
    if row["second_reviewer"]:
        agents.append({"type": {"coding": [{"system": PARTICIPANT, "code": "verifier", "display": "Verifier"}]},
                       "who": {"display": row["second_reviewer"]}})
    where = f"{row['source_file']} {row['source_sheet'] + ' ' if row['source_sheet'] else ''}row {row['source_row']}"
    return {
        "resourceType": "Provenance", "id": pid, "meta": {"profile": [profile("Provenance")]},
        "target": [{"reference": t} for t in targets],
        "occurredDateTime": row["decided_on"].isoformat(),
        "recorded": opts.recorded_instant,
        "reason": [{"text": row["note"]}] if row["note"] else [],
        "activity": {"text": f"review decision {row['decision']} on {row['flag_code']} ({row['subject_key']})"},
        "agent": agents,
        "entity": [
            {"role": "source", "what": {"identifier": {"system": f"{opts.identifier_base}/Id/review-decision",
                                                       "value": row["decision_id"]}, "display": where}},
            {"role": "source", "what": {"identifier": {"system": f"{opts.identifier_base}/Id/file-sha256",
                                                       "value": row["source_sha256"]},
                                        "display": row["source_file"]}},
        ],
    }


def review_resources(review: Review, lineage: pl.LazyFrame, opts: FhirOptions) -> tuple[list[dict[str, Any]],
                                                                                       pl.DataFrame]:
    """(the resources, Consents first then Provenances, by decision id; decision_id ->
    resources it changed, the Consent included)."""
    ns = namespace(opts.identifier_base, opts.source_system)
    targets = {d: r for d, r in _targets(review, lineage).iter_rows()}
    rows = applied(review.decisions).sort("decision_id").to_dicts()
    overrides = [r for r in rows if r["effect"] == "override_sharing"]
    patients = _patient_ids(lineage, [r["patient_key"] for r in overrides])
    consents, provenances, listed = [], [], []
    for row in rows:
        changed = list(targets.get(row["decision_id"], []))
        if row["effect"] == "override_sharing" and row["patient_key"] in patients:
            cid = fhir_id(ns, "review-consent", row["decision_id"])
            consents.append(_consent(row, patients[row["patient_key"]], cid, opts))
            changed = sorted([*changed, f"Consent/{cid}"])
        if changed:
            provenances.append(_provenance(row, changed, fhir_id(ns, "review-provenance", row["decision_id"]), opts))
        listed.append({"decision_id": row["decision_id"], "resources": changed})
    frame = pl.DataFrame(listed, schema={"decision_id": pl.String, "resources": pl.List(pl.String)})
    return consents + provenances, frame


def write_review_fhir(review: Review, fhir: FhirResult, opts: FhirOptions, out_dir: Path) -> Review:
    """Write the review's resources (module docstring) and record on each decision row the
    resources it changed; the review unchanged when no decision changed any."""
    resources, listed = review_resources(review, fhir.lineage, opts)
    decisions = review.decisions.drop("resources", strict=False).join(listed, on="decision_id", how="left",
                                                                      maintain_order="left")
    review = replace(review, decisions=decisions)
    if not resources:
        return review
    folder = out_dir / "fhir" / FOLDER
    folder.mkdir(parents=True, exist_ok=True)
    for kind in ("Consent", "Provenance"):
        lines = [json.dumps(r, separators=(",", ":"), ensure_ascii=False) for r in resources if r["resourceType"] == kind]
        if lines:
            (folder / f"{kind}.ndjson").write_text("\n".join(lines) + "\n", encoding="utf-8")
    if not opts.writes_bundles:
        return review
    entries = [{"fullUrl": f"urn:uuid:{r['id']}", "resource": r,
                "request": {"method": "PUT", "url": f"{r['resourceType']}/{r['id']}"}} for r in resources]
    number = fhir.bundles + 1
    bundle = {"resourceType": "Bundle", "id": fhir_id(namespace(opts.identifier_base, opts.source_system), "bundle",
                                                      f"{opts.run_id}/{number:05d}"),
              "meta": {"profile": [profile("Bundle")]}, "type": "transaction", "entry": entries}
    (out_dir / "fhir" / "bundles" / bundle_name(number)).write_text(
        json.dumps(bundle, separators=(",", ":"), ensure_ascii=False) + "\n", encoding="utf-8")
    return review


def rewrite_review_fhir(run: RunFolder, decisions: pl.DataFrame, fhir: FhirResult, opts: FhirOptions) -> FhirResult:
    """``handover fhir RUN``: the review's resources again, from the run's own folder (the
    rows each decision changed are those whose lineage reason names its id)."""
    ids = applied(decisions).get_column("decision_id").to_list()
    # memory: only the rows whose reason names an applied decision are collected (lineage: one row per
    # source row and resource).
    lineage = run.scan("lineage.parquet").select("source_file", "source_row", "reason").filter(
        pl.col("reason").str.contains_any([f"({d})" for d in ids]).fill_null(False)).collect() if ids else \
        pl.DataFrame(schema={"source_file": pl.String, "source_row": pl.Int64, "reason": pl.String})
    changed = pl.concat([lineage.filter(pl.col("reason").str.contains(f"({d})", literal=True)).select(
        pl.lit(d).alias("decision_id"), "source_file", "source_row") for d in ids] or [
        pl.DataFrame(schema=CHANGED_SCHEMA)]).cast(CHANGED_SCHEMA)  # type: ignore[arg-type]
    review = Review(decisions, pl.DataFrame(), True, changed)
    write_review_fhir(review, fhir, opts, run.path)
    files = sorted(p for p in (run.path / "fhir").rglob("*") if p.is_file())
    return replace(fhir, files=files)
