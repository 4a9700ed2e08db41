"""Flag resources: the exceptions a receiving clinician must see in the patient's record.

One Flag (UK Core Flag) per exception whose code is in ``options.flag_codes`` (by default
UNDER_PRIORITISED, UNRECOGNISED_RED_FLAG, SHARING_BLOCK, SHARING_BLOCK_ACTIVE_CARE,
POST_OP_NOT_PRIORITISED, AWAITING_INJECTION, URGENT_WAIT_BREACH). ``code`` carries the flag code (handover's flag
code system) and, as text, the code, severity, rule id, evidence and recommended action,
so the reason travels with the flag. A referral-level flag points at its ServiceRequest
with the core ``flag-detail`` extension (Flag has no element for it). Flags are
administrative signals, so a blocked patient's Flags are sent under either policy.

Lineage: the flagged subject's source row (the referral row, or the patient row).
"""

from __future__ import annotations

import polars as pl

from migrate.fhir.ids import with_ids
from migrate.fhir.inputs import Context, Inputs, Part, emit, lineage
from migrate.fhir.options import ADMIN_FLAG_CODES, FLAG_DETAIL_EXTENSION
from migrate.fhir.template import (
    array,
    concept,
    const,
    obj,
    reference,
    resource,
    safe,
    text,
    when,
)

FLAG_CATEGORY = "http://terminology.hl7.org/CodeSystem/flag-category"


def flags(inputs: Inputs, ctx: Context) -> Part:
    """One Flag per selected exception of the batch's patients."""
    opts = ctx.options
    patient_rows = inputs.patients.select(pl.col("patient_key").alias("subject_key"),
                                          pl.col("source_file").alias("pat_file"),
                                          pl.col("source_row").alias("pat_row"))
    key = pl.concat_str([pl.col("flag_code").cast(pl.String), pl.col("rule_id"), pl.col("subject_type"),
                         pl.col("subject_key")], separator="/")
    frame = (
        inputs.exceptions
        .with_columns(pl.col("flag_code").cast(pl.String), pl.col("severity").cast(pl.String))
        .join(patient_rows, on="subject_key", how="left")
        .with_columns(
            pl.when(pl.col("subject_type") == "referral").then(pl.col("ref_file")).otherwise(pl.col("pat_file"))
            .alias("source_file"),
            pl.when(pl.col("subject_type") == "referral").then(pl.col("ref_row")).otherwise(pl.col("pat_row"))
            .alias("source_row"),
            pl.concat_str([pl.col("flag_code"), pl.lit(" ("), pl.col("severity"), pl.lit(", rule "), pl.col("rule_id"),
                           pl.lit("): "), pl.col("evidence").fill_null("no evidence recorded"),
                           pl.lit(". Action: "), pl.col("action").fill_null("none stated")]).alias("summary"),
        )
    )
    frame = with_ids(frame, ctx.ns, "flag", key, "flag_id").sort("survivor_key", "flag_id")
    is_referral = (pl.col("subject_type") == "referral") & pl.col("request_id").is_not_null()
    category = pl.when(pl.col("flag_code").is_in(list(ADMIN_FLAG_CODES))).then(pl.lit("admin")) \
        .otherwise(pl.lit("clinical"))
    template = resource(
        "Flag", pl.col("flag_id"),
        ("extension", array(when(is_referral, obj(
            ("url", const(FLAG_DETAIL_EXTENSION)),
            ("valueReference", reference("ServiceRequest", pl.col("request_id"))),
        )))),
        ("status", const("active")),
        ("category", array(concept(FLAG_CATEGORY, safe(category, "code")))),
        ("code", concept(opts.handover_codes("flag"), text(pl.col("flag_code"), "code", required=True), None,
                         text(pl.col("summary")))),
        ("subject", reference("Patient", pl.col("patient_id"))),
        ("period", const({"start": opts.cutover.isoformat()})),
    )
    table = pl.when(pl.col("subject_type") == "referral").then(pl.lit("referrals")).otherwise(pl.lit("patients"))
    traced = frame.filter(pl.col("source_file").is_not_null())
    return Part(emit(frame, template, "flag_id"), lineage(traced, table, "Flag", "flag_id"))
