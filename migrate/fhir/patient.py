"""Patient and Organization (the GP practice) resources.

Patient (UK Core Patient): the NHS number identifier only when a 10-digit number is present
(at most one), carrying ``Extension-UKCore-NHSNumberVerificationStatus``; the outgoing
provider's local id as a second identifier, plus the local ids of records merged into this
one; name, gender, birthDate, telecom, address with postcode; generalPractitioner → the
practice's Organization.

Verification status: the identity stage's ``nhs_number_verification`` (01..05) when the
patients frame has it. Otherwise computed here: a number that passes Modulus 11 and the
range check (``nhs_number_valid`` from identity when present) takes the extract's
``nhs_number_status`` when that says 01 or 02 (``NSTS01`` / ``NSTS02`` too), else 02;
a present but invalid number gets 03 (trace required) and is still sent, never
"corrected", so the receiving system traces it (docs/domain.md section 6).

Organization (UK Core Organization): one per ODS code, identified by the ODS system; it
goes in the first bundle whose patients need it and later bundles reference it.
"""

from __future__ import annotations

import polars as pl

from migrate.fhir.ids import with_ids
from migrate.fhir.inputs import Context, Inputs, Part, emit, lineage
from migrate.fhir.options import (
    NHS_NUMBER,
    ODS,
    VERIFICATION_DISPLAY,
    VERIFICATION_EXTENSION,
    VERIFICATION_SYSTEM,
)
from migrate.fhir.template import (
    Check,
    array,
    concept,
    const,
    date,
    escaped,
    mapped,
    obj,
    reference,
    resource,
    spread,
    string_list,
    text,
    when,
    with_checks,
)
from migrate.identity.nhs_number import modulus11

GENDERS = {"male": "male", "female": "female", "other": "other", "unknown": "unknown"}
# NHS number prefixes that can be valid (docs/domain.md section 6; 900-999 is the test range).
VALID_PREFIXES = ((400, 499), (600, 799), (900, 999))


def nhs_number_valid(number: pl.Expr) -> pl.Expr:
    """Modulus 11 and range check of a 10-digit NHS number (false when not 10 digits); used
    only when identity's own verdict (``nhs_number_valid``) is not among the inputs."""
    ten, agrees, in_range = modulus11(number, VALID_PREFIXES)
    return ten & agrees & in_range


def verification_status(columns: list[str]) -> pl.Expr:
    """The verification code of each patient's NHS number (null when there is none)."""
    number = pl.col("nhs_number")
    if "nhs_number_verification" in columns:
        code = pl.col("nhs_number_verification").cast(pl.String).str.strip_chars().str.replace(r"^(?i)NSTS", "")
        return pl.when(number.is_not_null()).then(code)
    valid = pl.col("nhs_number_valid").fill_null(False) if "nhs_number_valid" in columns \
        else nhs_number_valid(number)
    said = pl.col("nhs_number_status").cast(pl.String).str.strip_chars().str.replace(r"^(?i)NSTS", "")
    traced = pl.when(said.is_in(["01", "02"])).then(said).otherwise(pl.lit("02"))
    return pl.when(number.is_null()).then(None).when(valid).then(traced).otherwise(pl.lit("03"))


def patients(inputs: Inputs, ctx: Context) -> Part:
    """One Patient per survivor; lineage for every patient row (merged rows → the survivor)."""
    opts = ctx.options
    rows = inputs.patients
    merged_ids = (
        rows.filter(pl.col("patient_key") != pl.col("survivor_key"))
        .sort("source_patient_id")
        .group_by("survivor_key", maintain_order=True)
        .agg(
            pl.concat_str([pl.lit('{"system":' + f'"{opts.local_system("patient")}","value":'),
                           escaped(pl.col("source_patient_id")), pl.lit("}")]).alias("merged_identifiers"),
            pl.col("source_patient_id").str.contains(r"^[ \r\n\t\S]+$").all().alias("merged_ok"),
        )
    )
    survivors = (
        rows.filter(pl.col("patient_key") == pl.col("survivor_key"))
        .join(merged_ids, on="survivor_key", how="left")
        .with_columns(
            verification_status(rows.columns).alias("verification"),
            pl.col("given_names").str.strip_chars().str.split(" ")
            .list.eval(pl.element().filter(pl.element() != "")).alias("given"),
        )
    )
    survivors = with_ids(survivors, ctx.ns, "organization", "gp_ods_code", "organization_id")
    ver = pl.col("verification")
    nhs = obj(
        ("extension", array(obj(
            ("url", const(VERIFICATION_EXTENSION)),
            ("valueCodeableConcept", concept(VERIFICATION_SYSTEM, mapped(ver, {k: k for k in VERIFICATION_DISPLAY}),
                                             mapped(ver, VERIFICATION_DISPLAY, kind="string", strict=False))),
        ))),
        ("system", const(NHS_NUMBER)),
        ("value", text(pl.col("nhs_number"))),
    )
    merged = with_checks(spread(pl.col("merged_identifiers")),
                         Check("", pl.col("merged_ok").fill_null(True), "not a valid FHIR string"))
    gp = pl.col("gp_ods_code")
    template = resource(
        "Patient", pl.col("patient_id"),
        ("identifier", array(
            when(pl.col("nhs_number").is_not_null(), nhs),
            obj(("system", const(opts.local_system("patient"))), ("value", text(pl.col("source_patient_id"),
                                                                                required=True))),
            merged,
        )),
        ("name", array(when(pl.col("family_name").is_not_null() | (pl.col("given").list.len() > 0), obj(
            ("use", const("official")), ("family", text(pl.col("family_name"))),
            ("given", string_list(pl.col("given"))))))),
        ("telecom", array(when(pl.col("phone").is_not_null(), obj(
            ("system", const("phone")), ("value", text(pl.col("phone"))), ("use", const("home")))))),
        ("gender", mapped(pl.col("sex"), GENDERS)),
        ("birthDate", date(pl.col("birth_date"))),
        ("address", array(when(pl.col("address").is_not_null() | pl.col("postcode").is_not_null(), obj(
            ("use", const("home")), ("text", text(pl.col("address"))), ("postalCode", text(pl.col("postcode"))))))),
        ("generalPractitioner", array(when(gp.is_not_null(), reference(
            "Organization", pl.col("organization_id"),
            ("identifier", obj(("system", const(ODS)), ("value", text(gp)))))))),
    )
    resources = emit(survivors, template, "patient_id")
    disposition = pl.when(pl.col("patient_key") == pl.col("survivor_key")).then(pl.lit("migrated")) \
        .otherwise(pl.lit("merged"))
    with_gp = survivors.filter(gp.is_not_null())
    lines = pl.concat([
        lineage(rows, "patients", "Patient", "patient_id", disposition),
        lineage(with_gp, "patients", "Organization", "organization_id"),
    ])
    return Part(resources, lines)



def organisations(practices: pl.DataFrame, ctx: Context) -> pl.DataFrame:
    """One Organization per ODS code of ``practices`` (gp_ods_code, bundle_no per survivor),
    in the bundle of its first patient; resource rows sorted by ODS code."""
    orgs = (
        practices.filter(pl.col("gp_ods_code").is_not_null())
        .group_by("gp_ods_code").agg(pl.col("bundle_no").min())
        .sort("gp_ods_code")
        .with_columns(pl.lit(None, dtype=pl.String).alias("survivor_key"))
    )
    orgs = with_ids(orgs, ctx.ns, "organization", "gp_ods_code", "organization_id")
    template = resource(
        "Organization", pl.col("organization_id"),
        ("identifier", array(obj(("system", const(ODS)), ("value", text(pl.col("gp_ods_code"), required=True))))),
    )
    return emit(orgs, template, "organization_id")
