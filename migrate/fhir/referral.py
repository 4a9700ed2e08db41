"""ServiceRequest (every referral) and EpisodeOfCare (every open referral).

ServiceRequest (UK Core ServiceRequest)
    identifier: the local referral id, and the e-RS UBRN when present; status from the
    cohort (open cohorts → active, closed → completed, rejected/out of scope → revoked;
    the referral's own status when it has no cohort); intent order; category SNOMED
    3457005 patient referral, then the cohort at the cut-over (handover's cohort code
    system) and the outgoing provider's transfer list (``transfer-list`` code system), so
    a receiving system and the round trip (``migrate.fhir.roundtrip``) read both as codes;
    code: the service line (outgoing provider's code system);
    priority: routine → routine, urgent → urgent, two_week_wait → asap (NHS Data
    Dictionary PRIORITY TYPE 1/2/3; unknown → no priority, and a note says so). When a
    rule raised the priority (``derived_priority``), priority is the raised one, the
    list's own priority is kept in a note and ``Extension-UKCore-PriorityReason`` on
    ``_priority`` says why. Source of referral: ``Extension-UKCore-SourceOfServiceRequest``
    with the SNOMED codes of the options (GP, self, consultant). reasonCode: the reason
    text; bodySite; notes for red flags, cancer history, closure and the cohort.

EpisodeOfCare (UK Core EpisodeOfCare), for referrals in an open cohort
    backlog → waitlist, transition → active, pifu → onhold with period.end = the PIFU
    expiry, pifu_expired → onhold (its PIFU_EXPIRED flag asks for the discharge);
    type: the cohort (handover's cohort code system) with its reason as text;
    referralRequest → the ServiceRequest; managingOrganization: the migrating organisation.
"""

from __future__ import annotations

import polars as pl

from migrate.fhir.inputs import Context, Inputs, Part, emit, lineage
from migrate.fhir.options import (
    EPISODE_STATUS,
    ODS,
    OPEN_COHORTS,
    PRIORITY_MAP,
    PRIORITY_RANK,
    PRIORITY_REASON_EXTENSION,
    REQUEST_STATUS,
    SNOMED,
    SOURCE_OF_REQUEST_EXTENSION,
    STATUS_FALLBACK,
    UBRN,
)
from migrate.fhir.template import (
    Check,
    annotation_list,
    array,
    concept,
    const,
    date,
    mapped,
    obj,
    reference,
    resource,
    safe,
    text,
    when,
    with_checks,
)

REFERRAL_CATEGORY = [{"coding": [{"system": SNOMED, "code": "3457005", "display": "Patient referral"}]}]


def _notes(opts_cutover: str) -> list[pl.Expr]:
    """Free-text notes of a referral, each null when it has nothing to say."""
    assigned = pl.col("assigned_priority").cast(pl.String)
    raised = pl.col("raised")
    flags = pl.col("red_flags").list.join(", ")
    cancer = pl.col("history_of_cancer")
    return [
        pl.when(raised).then(pl.concat_str([
            pl.lit("Priority on the outgoing provider's list: "), assigned, pl.lit("; raised to "),
            pl.col("derived_priority"), pl.lit(" by a handover rule: "), pl.col("reason_or_default")])),
        pl.when(~raised & (pl.col("final_priority") == "unknown")).then(
            pl.lit("Priority on the outgoing provider's list: unknown (no FHIR priority given)")),
        pl.when(pl.col("red_flags").list.len() > 0).then(pl.lit("Red-flag indicators recorded: ") + flags),
        pl.concat_str([pl.lit("Personal history of cancer: "),
                       pl.when(cancer).then(pl.lit("yes")).when(~cancer).then(pl.lit("no"))
                       .otherwise(pl.lit("not recorded"))]),
        pl.when(pl.col("closed_date").is_not_null() | pl.col("closure_reason").is_not_null()).then(pl.concat_str([
            pl.lit("Closed"), pl.lit(" ") + pl.col("closed_date").dt.strftime("%Y-%m-%d"),
            pl.lit(": ") + pl.col("closure_reason")], ignore_nulls=True)),
        pl.when(pl.col("cohort").is_not_null()).then(pl.concat_str([
            pl.lit(f"Cohort at the cut-over ({opts_cutover}): "), pl.col("cohort"),
            pl.lit(" (") + pl.col("cohort_reason") + pl.lit(")")], ignore_nulls=True)),
    ]


def requests(inputs: Inputs, ctx: Context) -> Part:
    """One ServiceRequest per referral row."""
    opts = ctx.options
    sources = {value: code for value, code, _ in opts.referral_sources}
    source_text = {value: label for value, _, label in opts.referral_sources}
    assigned = pl.col("assigned_priority").cast(pl.String)
    derived = pl.col("derived_priority")
    frame = inputs.referrals.with_columns(
        pl.coalesce(pl.col("cohort").replace_strict(REQUEST_STATUS, default=None, return_dtype=pl.String),
                    pl.col("status").cast(pl.String).replace_strict(STATUS_FALLBACK, default=None,
                                                                    return_dtype=pl.String)).alias("request_status"),
        (derived.is_not_null()
         & (derived.replace_strict(PRIORITY_RANK, default=-1, return_dtype=pl.Int64)
            > assigned.replace_strict(PRIORITY_RANK, default=0, return_dtype=pl.Int64))).fill_null(False)
        .alias("raised"),
        pl.coalesce(derived, assigned).alias("final_priority"),
        pl.col("priority_reason").fill_null("rule-raised priority").alias("reason_or_default"),
        pl.coalesce(pl.col("referral_source").replace_strict(source_text, default=None, return_dtype=pl.String),
                    pl.col("referral_source")).alias("source_text"),
    ).with_columns(
        pl.concat_list(_notes(opts.cutover.isoformat())).list.drop_nulls().alias("notes"),
    )
    known_derived = Check("", derived.is_null() | derived.is_in(list(PRIORITY_MAP)),
                          f"derived priority not one of {', '.join(PRIORITY_MAP)}")
    source = pl.col("referral_source")
    priority_reason = obj(("extension", array(obj(
        ("url", const(PRIORITY_REASON_EXTENSION)),
        ("valueCodeableConcept", obj(("text", text(pl.col("reason_or_default"))))),
    ))))
    template = resource(
        "ServiceRequest", pl.col("request_id"),
        ("extension", array(when(source.is_not_null(), obj(
            ("url", const(SOURCE_OF_REQUEST_EXTENSION)),
            ("valueCodeableConcept", obj(
                ("coding", array(when(source.is_in(list(sources)), obj(
                    ("system", const(SNOMED)), ("code", mapped(source, sources, strict=False)))))),
                ("text", text(pl.col("source_text"))),
            )),
        )))),
        ("identifier", array(
            obj(("system", const(opts.local_system("referral"))),
                ("value", text(pl.col("source_referral_id"), required=True))),
            when(pl.col("ubrn").is_not_null(), obj(("system", const(UBRN)), ("value", text(pl.col("ubrn"))))),
        )),
        ("status", safe(pl.col("request_status"), "code")),
        ("intent", const("order")),
        ("category", array(
            const(REFERRAL_CATEGORY[0]),
            when(pl.col("cohort").is_not_null(), concept(opts.handover_codes("cohort"), safe(pl.col("cohort"), "code"))),
            when(pl.col("transfer_list").is_not_null(), concept(
                opts.handover_codes("transfer-list"), safe(pl.col("transfer_list").cast(pl.String), "code"))),
        )),
        ("priority", with_checks(mapped(pl.col("final_priority"), PRIORITY_MAP, strict=False), known_derived)),
        ("_priority", when(pl.col("raised"), priority_reason)),
        ("code", when(pl.col("service_line").is_not_null(), concept(
            opts.local_codes("service-line"), text(pl.col("service_line"), "code"), None,
            text(pl.col("service_line"))))),
        ("subject", reference("Patient", pl.col("patient_id"))),
        ("authoredOn", date(pl.col("received_date"))),
        ("reasonCode", array(when(pl.col("reason_text").is_not_null(), obj(("text", text(pl.col("reason_text"))))))),
        ("bodySite", array(when(pl.col("body_site").is_not_null(), concept(
            opts.local_codes("body-site"), text(pl.col("body_site"), "code"), None, text(pl.col("body_site")))))),
        ("note", annotation_list(pl.col("notes"))),
    )
    resources = emit(frame, template, "request_id")
    return Part(resources, lineage(frame, "referrals", "ServiceRequest", "request_id"))


def episodes(inputs: Inputs, ctx: Context) -> Part:
    """One EpisodeOfCare per referral in an open cohort (backlog, transition, pifu, pifu_expired)."""
    opts = ctx.options
    frame = inputs.referrals.filter(pl.col("cohort").is_in(list(OPEN_COHORTS)))
    pifu = pl.col("cohort").is_in(["pifu", "pifu_expired"])
    start, end = pl.col("received_date"), pl.col("pifu_expiry_date")
    ordered = Check("", ~pifu | start.is_null() | end.is_null() | (end >= start),
                    "period.end (PIFU expiry) is before period.start (referral received)")
    template = resource(
        "EpisodeOfCare", pl.col("episode_id"),
        ("status", mapped(pl.col("cohort"), EPISODE_STATUS, required=True)),
        ("type", array(concept(opts.handover_codes("cohort"), safe(pl.col("cohort"), "code"), None,
                               text(pl.col("cohort_reason"))))),
        ("patient", reference("Patient", pl.col("patient_id"))),
        ("managingOrganization", const({"identifier": {"system": ODS, "value": opts.organisation_ods}})),
        ("period", with_checks(obj(("start", date(start)), ("end", when(pifu, date(end)))), ordered)),
        ("referralRequest", array(reference("ServiceRequest", pl.col("request_id")))),
    )
    resources = emit(frame, template, "episode_id")
    return Part(resources, lineage(frame, "referrals", "EpisodeOfCare", "episode_id"))
