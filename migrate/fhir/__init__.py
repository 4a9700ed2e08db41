"""FHIR R4 (UK Core) output of a migration batch: transaction Bundles and Bulk Data NDJSON.

    from migrate.fhir import FhirOptions, write_fhir, sharing_from_features
    result = write_fhir(tables, cohorts, patient_cohorts, exceptions, sharing, options, run_dir)
    result.counts, result.lineage, result.errors

Modules, in the order data flows: ``options`` (FhirOptions, systems, mappings stated once),
``ids`` (UUIDv5 ids), ``inputs`` (batches of patients and their rows; ``batches`` stages
them by batch in bounded memory), ``template`` (FHIR JSON as polars expressions), the
resource families ``patient`` (Patient, Organization),
``referral`` (ServiceRequest, EpisodeOfCare), ``care`` (Encounter, Appointment,
Condition, Consent), ``flags`` (Flag) and ``provenance``, ``validate`` (value checks, R4B
models per shape, references), ``resources`` (``build_resources``: all of it, no files)
and ``bundle`` (``write_fhir``: bundles, NDJSON, lineage, streamed by patient batch).
``stage`` feeds a run's frames to ``write_fhir`` (``emit``) and re-emits a finished run
(``reemit_fhir``, for ``handover fhir RUN``).
Models are ``fhir.resources.R4B`` (the closest to R4 it ships), never its R5 default.
"""

from __future__ import annotations

from migrate.fhir.bundle import FhirResult, write_fhir
from migrate.fhir.ids import fhir_id, fhir_ids, namespace
from migrate.fhir.inputs import sharing_from_codes
from migrate.rules.stage import sharing_from_features
from migrate.fhir.options import FhirOptions, InputFile, SharingCodes
from migrate.fhir.resources import Built, build_resources
from migrate.fhir.validate import model_problem

__all__ = [
    "Built",
    "FhirOptions",
    "FhirResult",
    "InputFile",
    "SharingCodes",
    "build_resources",
    "fhir_id",
    "fhir_ids",
    "model_problem",
    "namespace",
    "sharing_from_codes",
    "sharing_from_features",
    "write_fhir",
]
