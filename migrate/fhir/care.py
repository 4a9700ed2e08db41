"""Care records: Encounter, Appointment, Condition and Consent.

Every contact given becomes an Encounter when attended (status finished) or an
Appointment otherwise: booked → booked, did not attend → noshow, cancelled → cancelled
with its reason. The contacts of a closed or rejected referral are the patient's history
and are sent too; only a referral in an open cohort has an EpisodeOfCare for its
Encounters to name, and a contact the profile allows without a referral (the patient's
own) has neither basedOn nor episodeOfCare. Which rows are sent at all (not e-RS dummy
slots, not a patient with nothing active, not withheld by the sharing policy) is decided
once, by ``migrate.dispositions``, before this stage. Appointment needs an end with its
start (FHIR app-2) and the extract has no slot length: the end is start +
``appointment_minutes`` (option). Contact times are local wall-clock times, written with
their UTC offset.

Coded entries (the ``codes`` table) are read with the rule pack's sharing codelists:
dissent and consent entries make one sharing Consent per patient (``provision.type``
deny when the latest entry is a dissent, permit when a later consent lifted it);
national data opt-outs make one opt-out Consent (deny for research and planning only:
the opt-out does not apply to direct care); every other entry is a Condition (code,
recordedDate). A personal history of cancer recorded on a referral is one Condition per
patient (SNOMED 266987004 by default, an option: verify locally).

Sharing-block policy ``withhold-clinical``: a blocked patient's contacts and clinical
coded entries are withheld by their disposition and never reach this stage; the
cancer-history Condition, made from a referral that is sent, is left out here — unless a
reviewer's applied ``override`` lifted the block (``overridden``), as it lifts the
withholding of the contacts and coded entries.
"""

from __future__ import annotations

import polars as pl

from migrate.fhir.ids import with_ids
from migrate.fhir.inputs import (
    Context,
    Inputs,
    Part,
    emit,
    labelled_codes,
    lineage,
)
from migrate.fhir.options import CODE_SYSTEMS, OPEN_COHORTS, SNOMED
from migrate.fhir.template import (
    Check,
    Node,
    Template,
    array,
    concept,
    const,
    date,
    datetime_local,
    escaped,
    mapped,
    obj,
    raw,
    reference,
    resource,
    safe,
    text,
    when,
    with_checks,
)

V3_ACT = "http://terminology.hl7.org/CodeSystem/v3-ActCode"
ENCOUNTER_CLASS = {"face_to_face": "AMB", "telephone": "VR", "video": "VR"}
CLASS_DISPLAY = {"AMB": "ambulatory", "VR": "virtual"}
APPOINTMENT_STATUS = {"booked": "booked", "did_not_attend": "noshow", "cancelled_by_patient": "cancelled",
                      "cancelled_by_provider": "cancelled"}
CANCELLATION = {"cancelled_by_patient": "pat", "cancelled_by_provider": "prov"}
CANCELLATION_DISPLAY = {"pat": "Patient", "prov": "Provider"}
CONSENT_SCOPE = {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/consentscope",
                             "code": "patient-privacy", "display": "Privacy Consent"}]}
CONSENT_CATEGORY = [{"coding": [{"system": "http://loinc.org", "code": "59284-0", "display": "Patient Consent"}]}]
OPT_OUT_PURPOSES = [{"system": "http://terminology.hl7.org/CodeSystem/v3-ActReason", "code": "HRESCH",
                     "display": "healthcare research"},
                    {"system": "http://terminology.hl7.org/CodeSystem/v3-ActReason", "code": "HOPERAT",
                     "display": "healthcare operations"}]


def _blocked(frame: pl.DataFrame, inputs: Inputs, ctx: Context) -> pl.DataFrame:
    """``frame`` with ``withhold``: the patient is blocked, no reviewer overrode the block, and
    the policy withholds clinical data."""
    withhold = ctx.options.sharing_policy == "withhold-clinical"
    return frame.join(inputs.sharing.select("survivor_key", "blocked", "overridden"), on="survivor_key",
                      how="left").with_columns(
        (pl.col("blocked").fill_null(False) & ~pl.col("overridden").fill_null(False) & withhold).alias("withhold"))


def contacts(inputs: Inputs, ctx: Context) -> Part:
    """An Encounter (attended) or Appointment (otherwise) per contact."""
    kept = with_ids(inputs.contacts.with_columns(pl.col("cohort").is_in(list(OPEN_COHORTS)).fill_null(False)
                                                 .alias("open")), ctx.ns, "contact", "contact_key", "contact_id")
    attended = kept.filter(pl.col("attendance") == "attended")
    others = kept.filter(pl.col("attendance") != "attended")
    encounters = emit(attended, _encounter(ctx), "contact_id")
    appointments = emit(others, _appointment(ctx), "contact_id")
    return Part(
        pl.concat([encounters, appointments]),
        pl.concat([lineage(attended, "contacts", "Encounter", "contact_id"),
                   lineage(others, "contacts", "Appointment", "contact_id")]),
    )


def _linked(resource_type: str, id_column: str) -> Node:
    """A reference to the contact's referral's resource; absent for a contact without one."""
    return when(pl.col(id_column).is_not_null(), reference(resource_type, pl.col(id_column)))


def _encounter(ctx: Context) -> Template:
    opts = ctx.options
    klass = pl.col("modality").cast(pl.String).replace_strict(ENCOUNTER_CLASS, default="AMB", return_dtype=pl.String)
    return resource(
        "Encounter", pl.col("contact_id"),
        ("identifier", array(obj(("system", const(opts.local_system("contact"))),
                                 ("value", text(pl.col("contact_key"), required=True))))),
        ("status", const("finished")),
        ("class", obj(("system", const(V3_ACT)), ("code", safe(klass, "code")),
                      ("display", mapped(klass, CLASS_DISPLAY, kind="string", required=True)))),
        ("type", array(
            when(pl.col("contact_type").is_not_null(), concept(
                opts.local_codes("contact-type"), safe(pl.col("contact_type").cast(pl.String), "code"), None,
                safe(pl.col("contact_type").cast(pl.String), "string"))),
            when(pl.col("procedure").is_not_null(), obj(("text", text(pl.col("procedure"))))),
        )),
        ("subject", reference("Patient", pl.col("patient_id"))),
        ("episodeOfCare", array(when(pl.col("open") & pl.col("episode_id").is_not_null(),
                                     reference("EpisodeOfCare", pl.col("episode_id"))))),
        ("basedOn", array(_linked("ServiceRequest", "request_id"))),
        ("period", obj(("start", datetime_local(pl.col("contact_datetime"), opts.timezone)))),
        ("location", array(when(pl.col("site").is_not_null(), obj(
            ("location", obj(("display", text(pl.col("site"))))))))),
    )


def _appointment(ctx: Context) -> Template:
    opts = ctx.options
    attendance = pl.col("attendance").cast(pl.String)
    reason = attendance.replace_strict(CANCELLATION, default=None, return_dtype=pl.String)
    end = pl.col("contact_datetime") + pl.duration(minutes=opts.appointment_minutes)
    what = pl.concat_str([pl.col("contact_type").cast(pl.String), pl.lit(" (") + pl.col("procedure") + pl.lit(")")],
                         ignore_nulls=True)
    return resource(
        "Appointment", pl.col("contact_id"),
        ("identifier", array(obj(("system", const(opts.local_system("contact"))),
                                 ("value", text(pl.col("contact_key"), required=True))))),
        ("status", mapped(attendance, APPOINTMENT_STATUS, required=True)),
        ("cancelationReason", when(reason.is_not_null(), concept(
            "http://terminology.hl7.org/CodeSystem/appointment-cancellation-reason", safe(reason, "code"),
            mapped(reason, CANCELLATION_DISPLAY, kind="string")))),
        ("description", text(pl.when(what != "").then(what))),
        ("start", datetime_local(pl.col("contact_datetime"), opts.timezone, "instant")),
        ("end", datetime_local(end, opts.timezone, "instant")),
        ("basedOn", array(_linked("ServiceRequest", "request_id"))),
        ("participant", array(
            obj(("actor", reference("Patient", pl.col("patient_id"))),
                ("status", safe(pl.when(attendance == "cancelled_by_patient").then(pl.lit("declined"))
                                .otherwise(pl.lit("accepted")), "code"))),
            when(pl.col("site").is_not_null(), obj(("actor", obj(("display", text(pl.col("site"))))),
                                                   ("status", const("accepted")))),
        )),
    )


def conditions(inputs: Inputs, ctx: Context) -> Part:
    """Conditions: each clinical coded entry, and one cancer history per patient."""
    opts = ctx.options
    entries = labelled_codes(inputs.codes, opts.codes).filter(pl.col("kind") == "clinical")
    # Identical entries of one source patient are one Condition (both rows in lineage).
    key = pl.concat_str([pl.col(c).cast(pl.String).fill_null("") for c in
                         ("patient_key", "code_system", "code", "recorded_date", "value")], separator="|")
    entries = with_ids(entries, ctx.ns, "coded-entry", key, "condition_id")
    unique = entries.sort("condition_id", "source_file", "source_row").unique("condition_id", keep="first",
                                                                               maintain_order=True)
    system = pl.col("code_system").cast(pl.String).replace_strict(
        CODE_SYSTEMS, default=opts.local_codes("local"), return_dtype=pl.String)
    coded = resource(
        "Condition", pl.col("condition_id"),
        ("code", obj(
            ("coding", array(obj(("system", safe(system, "uri")), ("code", text(pl.col("code"), "code")),
                                 ("display", text(pl.col("display")))))),
        )),
        ("subject", reference("Patient", pl.col("patient_id"))),
        ("recordedDate", date(pl.col("recorded_date"))),
        ("note", array(when(pl.col("value").is_not_null(), obj(("text", text(pl.col("value"))))))),
    )
    # Personal history of cancer, from the referral form's field.
    referrals = _blocked(inputs.referrals, inputs, ctx)
    cancer_rows = referrals.filter(pl.col("history_of_cancer").fill_null(False))
    cancer_rows = with_ids(cancer_rows.filter(~pl.col("withhold")), ctx.ns, "cancer-history", "survivor_key",
                           "condition_id")
    cancer = (cancer_rows.group_by("survivor_key", maintain_order=True)
              .agg(pl.col("bundle_no", "patient_id", "condition_id").first(), pl.col("received_date").min())
              .sort("survivor_key"))
    code, display = opts.cancer_history_code
    history = resource(
        "Condition", pl.col("condition_id"),
        ("clinicalStatus", const({"coding": [{
            "system": "http://terminology.hl7.org/CodeSystem/condition-clinical", "code": "active"}]})),
        ("verificationStatus", const({"coding": [{
            "system": "http://terminology.hl7.org/CodeSystem/condition-ver-status", "code": "unconfirmed"}]})),
        ("code", const({"coding": [{"system": SNOMED, "code": code, "display": display}],
                        "text": "Personal history of cancer"})),
        ("subject", reference("Patient", pl.col("patient_id"))),
        ("recordedDate", date(pl.col("received_date"))),
        ("note", const([{"text": "Recorded on the outgoing provider's referral form as a personal history of "
                                 f"cancer. SNOMED CT {code} comes from a secondary source: verify locally."}])),
    )
    return Part(
        pl.concat([emit(unique, coded, "condition_id"), emit(cancer, history, "condition_id")]),
        pl.concat([lineage(entries, "codes", "Condition", "condition_id"),
                   lineage(cancer_rows, "referrals", "Condition", "condition_id")]),
    )


def _deciding_code(ctx: Context) -> list[pl.Expr]:
    """``source``, ``code_system_url``, ``code_value`` and ``display`` of the deciding entry:
    a coded entry's system and code (its display from the codes row); a setting's value in
    the outgoing provider's ``sharing-setting`` (patient) or ``practice-sharing`` code
    system, displayed with the column it came from."""
    source = pl.col("latest_source").fill_null("coded_entry")
    parts = pl.col("latest_code").str.split_exact(":", 1).struct
    coded_system = pl.coalesce(pl.col("latest_system"), parts.field("field_0"))
    setting_system = pl.when(source == "practice_setting").then(pl.lit(ctx.options.local_codes("practice-sharing"))) \
        .otherwise(pl.lit(ctx.options.local_codes("sharing-setting")))
    coded = source == "coded_entry"
    return [
        source.alias("source"),
        pl.when(coded).then(coded_system.replace_strict(CODE_SYSTEMS, default=ctx.options.local_codes("local"),
                                                        return_dtype=pl.String))
        .otherwise(setting_system).alias("code_system_url"),
        pl.when(coded).then(pl.coalesce(pl.col("latest_value"), parts.field("field_1")))
        .otherwise(pl.col("latest_value")).alias("code_value"),
        pl.when(coded).then(pl.col("display")).otherwise(pl.col("latest_column")).alias("display"),
    ]


def _setting_item(ctx: Context) -> pl.Expr:
    """A patient's opt-out setting as a CodeableConcept JSON item: its value in the outgoing
    provider's ``sharing-setting`` code system, displayed with its column."""
    return pl.concat_str([
        pl.lit(f'{{"coding":[{{"system":"{ctx.options.local_codes("sharing-setting")}","code":'),
        escaped(pl.col("value").str.strip_chars()),
        pl.when(pl.col("column").is_not_null()).then(pl.lit(',"display":') + escaped(pl.col("column"))),
        pl.lit("}]}")], ignore_nulls=True)


def _code_item(ctx: Context) -> pl.Expr:
    """A coded entry as a ready-made CodeableConcept JSON item."""
    system = pl.col("code_system").cast(pl.String).replace_strict(
        CODE_SYSTEMS, default=ctx.options.local_codes("local"), return_dtype=pl.String)
    return pl.concat_str([
        pl.lit('{"coding":[{"system":"'), system, pl.lit('","code":'), escaped(pl.col("code").str.strip_chars()),
        pl.when(pl.col("display").is_not_null()).then(pl.lit(',"display":') + escaped(pl.col("display"))),
        pl.lit("}]}")], ignore_nulls=True)


def consents(inputs: Inputs, ctx: Context) -> Part:
    """The sharing Consent (dissent or consent entries, or a block) and the opt-out Consent.

    One sharing Consent per patient with a sharing entry — a coded entry, a patient
    setting or a practice setting (``migrate.sharing``) — or a block: ``provision.type``
    deny when blocked, its code and ``dateTime`` the deciding entry, and the
    ``sharing-source`` extension where that entry is (coded_entry, patient_setting,
    practice_setting). Lineage: every entry's row (codes rows, patient rows, practice rows),
    and the patient's own row when no coded or patient-setting row makes it.
    """
    codes = labelled_codes(inputs.codes, ctx.options.codes)
    coded_rows = codes.filter(pl.col("kind").is_in(["dissent", "consent"]))
    survivors = inputs.patients.filter(pl.col("patient_key") == pl.col("survivor_key"))
    ids = survivors.select("survivor_key", "bundle_no", "patient_id")
    setting_rows = (inputs.sharing.select("survivor_key", "entry_rows").explode("entry_rows")
                    .filter(pl.col("entry_rows").is_not_null()).unnest("entry_rows")
                    .join(ids, on="survivor_key").with_columns(pl.col("survivor_key").alias("patient_key")))
    has_rows = pl.concat([coded_rows.select("survivor_key"), setting_rows.select("survivor_key")])
    wanted = pl.concat([has_rows, inputs.sharing.filter(pl.col("blocked")).select("survivor_key")]).unique()
    own_rows = (coded_rows.select("survivor_key")
                .vstack(setting_rows.filter(pl.col("table") == "patients").select("survivor_key")))
    # the patient row stands for a block no coded or patient-setting row explains (e.g. a practice's)
    patient_rows = survivors.join(wanted, on="survivor_key", how="semi").join(own_rows, on="survivor_key", how="anti")
    coded_rows = with_ids(coded_rows, ctx.ns, "sharing-consent", "survivor_key", "consent_id")
    setting_rows = with_ids(setting_rows, ctx.ns, "sharing-consent", "survivor_key", "consent_id")
    patient_rows = with_ids(patient_rows, ctx.ns, "sharing-consent", "survivor_key", "consent_id")
    displays = (coded_rows.sort("source_file", "source_row")
                .group_by("survivor_key", "label", maintain_order=True).agg(pl.col("display").drop_nulls().first()))
    decided = (
        with_ids(ids.join(wanted, on="survivor_key", how="semi"), ctx.ns, "sharing-consent", "survivor_key",
                 "consent_id")
        .sort("survivor_key")
        .join(inputs.sharing, on="survivor_key", how="left")
        .with_columns(pl.col("blocked").fill_null(False))
        .join(displays.rename({"label": "latest_code"}), on=["survivor_key", "latest_code"], how="left")
        .with_columns(_deciding_code(ctx))
    )
    deny = pl.col("blocked")
    sharing = resource(
        "Consent", pl.col("consent_id"),
        ("extension", array(obj(("url", const(ctx.options.sharing_source_url)),
                                ("valueCode", safe(pl.col("source"), "code"))))),
        ("status", const("active")),
        ("scope", const(CONSENT_SCOPE)),
        ("category", const(CONSENT_CATEGORY)),
        ("patient", reference("Patient", pl.col("patient_id"))),
        ("dateTime", date(pl.col("latest_date"))),
        ("policyRule", obj(("coding", array(obj(("system", const(V3_ACT)), (
            "code", safe(pl.when(deny).then(pl.lit("OPTOUT")).otherwise(pl.lit("OPTIN")), "code"))))))),
        ("provision", obj(
            ("type", safe(pl.when(deny).then(pl.lit("deny")).otherwise(pl.lit("permit")), "code")),
            ("code", array(when(pl.col("code_value").is_not_null(), obj(("coding", array(obj(
                ("system", safe(pl.col("code_system_url"), "uri")), ("code", text(pl.col("code_value"), "code")),
                ("display", text(pl.col("display")))))))))),
        )),
    )
    coded_opt_outs = codes.filter(pl.col("kind") == "opt_out").with_columns(_code_item(ctx).alias("item"),
                                                                            pl.lit("codes").alias("table"))
    setting_opt_outs = (inputs.sharing.select("survivor_key", "opt_out_rows").explode("opt_out_rows")
                        .filter(pl.col("opt_out_rows").is_not_null()).unnest("opt_out_rows")
                        .join(ids, on="survivor_key").with_columns(
                            pl.col("survivor_key").alias("patient_key"), pl.col("value").alias("code"),
                            _setting_item(ctx).alias("item")))
    columns = ["survivor_key", "bundle_no", "patient_id", "patient_key", "table", "source_file", "source_row",
               "recorded_date", "code", "item"]
    opt_rows = with_ids(pl.concat([coded_opt_outs.select(columns), setting_opt_outs.select(columns)]), ctx.ns,
                        "opt-out-consent", "survivor_key", "consent_id")
    opt_outs = (
        opt_rows
        .group_by("survivor_key", maintain_order=True)
        .agg(pl.col("bundle_no", "patient_id", "consent_id").first(), pl.col("recorded_date").max(),
             pl.col("item").unique().sort().alias("items"),
             pl.col("code").str.strip_chars().str.contains(r"^[^\s]+( [^\s]+)*$").all().alias("codes_ok"))
        .sort("survivor_key")
    )
    opt_out = resource(
        "Consent", pl.col("consent_id"),
        ("status", const("active")),
        ("scope", const(CONSENT_SCOPE)),
        ("category", const(CONSENT_CATEGORY)),
        ("patient", reference("Patient", pl.col("patient_id"))),
        ("dateTime", date(pl.col("recorded_date"))),
        ("policyRule", const({"coding": [{"system": V3_ACT, "code": "OPTOUT"}],
                              "text": "national data opt-out: uses beyond individual care only"})),
        ("provision", obj(("type", const("deny")), ("purpose", const(OPT_OUT_PURPOSES)),
                          ("code", with_checks(
                              raw(pl.concat_str([pl.lit("["), pl.col("items").list.join(","), pl.lit("]")]),
                                  pl.col("items").list.len() > 0),
                              Check("", pl.col("codes_ok"), "not a valid FHIR code"))))),
    )
    return Part(
        pl.concat([emit(decided, sharing, "consent_id"), emit(opt_outs, opt_out, "consent_id")]),
        pl.concat([lineage(coded_rows, "codes", "Consent", "consent_id"),
                   lineage(setting_rows, pl.col("table"), "Consent", "consent_id"),
                   lineage(patient_rows, "patients", "Consent", "consent_id"),
                   lineage(opt_rows, pl.col("table"), "Consent", "consent_id")]),
    )
