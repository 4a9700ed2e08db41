"""Building the resources of a batch of patients, validated, in bundle order (no files).

``build_resources`` is the pure entry point: frames in, ``Built`` out (every resource's
JSON text with its bundle number, lineage, errors). Every row given is sent: which rows
are (their dispositions) is decided before this stage, by ``migrate.dispositions``.
``migrate.fhir.bundle.write_fhir`` runs the same steps patient batch by patient batch and
writes the files.

Order inside a bundle (and of each NDJSON file): Organizations first (by ODS code), then
patient by patient (by survivor key) Patient, Consent, Condition, ServiceRequest,
EpisodeOfCare, Encounter, Appointment, Flag (each by id), and the bundle's Provenance last.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import polars as pl

from migrate import canonical
from migrate.fhir import care, flags, patient, referral
from migrate.fhir.inputs import (
    LINEAGE_COLUMNS,
    RESOURCE_ORDER,
    Context,
    Inputs,
    Part,
    check_inputs,
    gather,
    plan_patients,
)
from migrate.fhir.options import FhirOptions
from migrate.fhir.provenance import provenances
from migrate.fhir.validate import ERROR_SCHEMA, ShapeCache, validate

BUILDERS: tuple[Callable[[Inputs, Context], Part], ...] = (
    patient.patients, care.consents, care.conditions, referral.requests, referral.episodes, care.contacts,
    flags.flags,
)
OUTPUT_COLUMNS = ("bundle_no", "patient_key", "fhir_type", "fhir_id", "json")
_RANK = {t: i for i, t in enumerate(RESOURCE_ORDER)}
# The FHIR writer's lineage (fhir/lineage.parquet): source row -> resource.
LINEAGE_OUT_SCHEMA: dict[str, pl.DataType] = {c: canonical.LINEAGE_SCHEMA[c] for c in LINEAGE_COLUMNS}


@dataclass(frozen=True)
class Built:
    """Validated resources and the accounting of every source row they came from.

    - ``resources``: bundle_no, patient_key (survivor; null for Organization/Provenance),
      fhir_type, fhir_id, json — in bundle order;
    - ``lineage``: source_file, source_row, table, patient_key, disposition (migrated or
      merged), fhir_type, fhir_id — one row per (source row, resource);
    - ``errors``: failing resources and every source row held back with them (ERROR_SCHEMA).
    """

    resources: pl.DataFrame
    lineage: pl.DataFrame
    errors: pl.DataFrame

    def counts(self) -> dict[str, int]:
        """Resources per type."""
        grouped = self.resources.group_by("fhir_type").len().sort("fhir_type")
        return {t: int(n) for t, n in grouped.iter_rows()}


def _concat(frames: list[pl.DataFrame | None], schema: Mapping[str, pl.DataType]) -> pl.DataFrame:
    present = [f.select(list(schema)).cast(dict(schema))  # type: ignore[arg-type]
               for f in frames if f is not None and f.height]
    return pl.concat(present) if present else pl.DataFrame(schema=dict(schema))


def organisations(tables: Mapping[str, pl.LazyFrame], plan: pl.DataFrame, ctx: Context,
                  shapes: ShapeCache) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Every GP practice's Organization (validated) with the bundle that first needs it, and errors."""
    # memory: held: two columns per surviving patient (~0.05 GB at 1M), reduced to one Organization
    # per practice.
    practices = (tables["patients"].select("patient_key", "gp_ods_code")
                 .join(plan.lazy().filter(pl.col("patient_key") == pl.col("survivor_key")), on="patient_key")
                 .select("gp_ods_code", "bundle_no").collect())
    orgs = patient.organisations(practices, ctx)
    checked = validate(orgs, pl.DataFrame(schema=LINEAGE_OUT_SCHEMA), [], shapes,
                       ctx.options.validation == "full")
    return checked.resources.select(OUTPUT_COLUMNS), checked.errors


def organisation_refs(orgs: pl.DataFrame) -> pl.Series:
    """``Organization/id`` of each resource row of ``orgs``."""
    return orgs.select(pl.col("fhir_type") + "/" + pl.col("fhir_id")).to_series()


def build_batch(inputs: Inputs, organisations_: pl.DataFrame, known_organisations: pl.Series, ctx: Context,
                shapes: ShapeCache) -> Built:
    """Resources of one batch of patients, validated, with their bundles' Organizations
    (``organisations_``: the valid ones whose first bundle is in this batch) and Provenances.
    ``known_organisations`` (``Organization/id`` of every valid Organization of the run)
    are what references may resolve to besides the batch's own resources."""
    parts = [build(inputs, ctx) for build in BUILDERS]
    resources = pl.concat([p.resources for p in parts if p.resources.height]) if any(
        p.resources.height for p in parts) else parts[0].resources
    lineage = _concat([p.lineage for p in parts], LINEAGE_OUT_SCHEMA)
    checked = validate(resources, lineage, [known_organisations], shapes, ctx.options.validation == "full")
    kept = pl.concat([organisations_.select(OUTPUT_COLUMNS), checked.resources.select(OUTPUT_COLUMNS)])
    kept = kept.with_columns(
        pl.col("fhir_type").replace_strict(_RANK, return_dtype=pl.Int8).alias("_rank")
    ).sort("bundle_no", pl.col("patient_key").is_not_null(), "patient_key", "_rank", "fhir_id").drop("_rank")
    targets = kept.group_by("bundle_no", maintain_order=True).agg(
        (pl.col("fhir_type") + "/" + pl.col("fhir_id")).alias("targets"))
    provenance = validate(provenances(targets, ctx), pl.DataFrame(schema=LINEAGE_OUT_SCHEMA), [], shapes,
                          ctx.options.validation == "full")
    resources_out = pl.concat([kept, provenance.resources.select(OUTPUT_COLUMNS)]).sort(
        "bundle_no", maintain_order=True)
    return Built(
        resources_out,
        checked.lineage.sort("source_file", "source_row", "fhir_type", "fhir_id"),
        _concat([checked.errors, provenance.errors], ERROR_SCHEMA),
    )


@dataclass(frozen=True)
class Prepared:
    """What both ``build_resources`` and ``write_fhir`` start from: checked inputs, the
    patient plan (bundle numbers) and the Organizations."""

    ctx: Context
    shapes: ShapeCache
    plan: pl.DataFrame
    orgs: Any
    org_errors: Any


def prepare(tables: Mapping[str, pl.LazyFrame], cohorts: pl.LazyFrame, exceptions: pl.LazyFrame,
            sharing: pl.LazyFrame, options: FhirOptions, derived_priority: pl.LazyFrame | None) -> Prepared:
    """Check the inputs, plan patients into bundles and build the Organizations."""
    check_inputs({**{t: tables.get(t) for t in ("patients", "referrals", "contacts", "codes")},
                  "cohorts": cohorts, "exceptions": exceptions, "sharing": sharing,
                  "derived_priority": derived_priority})
    ctx = Context.of(options)
    shapes = ShapeCache()
    plan = plan_patients(tables["patients"], options.bundle_size)
    orgs, org_errors = organisations(tables, plan, ctx, shapes)
    return Prepared(ctx, shapes, plan, orgs, org_errors)


def build_resources(tables: Mapping[str, pl.LazyFrame], cohorts: pl.LazyFrame, patient_cohorts: pl.LazyFrame,
                    exceptions: pl.LazyFrame, sharing: pl.LazyFrame, options: FhirOptions,
                    derived_priority: pl.LazyFrame | None = None) -> Built:
    """All resources of the extract in memory, validated and in bundle order (no files).

    Inputs as for ``write_fhir``. ``patient_cohorts`` is accepted for the stage's contract
    but not needed: each referral carries its own cohort. For tests and small batches;
    ``write_fhir`` streams large ones.
    """
    del patient_cohorts
    p = prepare(tables, cohorts, exceptions, sharing, options, derived_priority)
    ctx, shapes, plan, orgs, org_errors = p.ctx, p.shapes, p.plan, p.orgs, p.org_errors
    inputs = gather(tables, cohorts, exceptions, sharing, derived_priority, plan, ctx)
    built = build_batch(inputs, orgs, organisation_refs(orgs), ctx, shapes)
    if org_errors.height:
        built = Built(built.resources, built.lineage, pl.concat([org_errors, built.errors]))
    return built


__all__ = [
    "BUILDERS",
    "LINEAGE_COLUMNS",
    "Built",
    "build_batch",
    "build_resources",
    "organisations",
]
