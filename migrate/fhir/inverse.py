"""FHIR → canonical fields: the inverse of the FHIR mapping, written on its own.

Reads FHIR R4 resources as Bulk Data NDJSON (this run's ``fhir/ndjson`` or a target's
export) and returns, per resource, the canonical fields it carries: a Patient gives back
the NHS number, its verification code, the local id, names, birth date, sex, address,
postcode, phone and GP practice; a ServiceRequest the referral's local id, UBRN, received
date, service line, source, assigned and raised priority, status at the cut-over, cohort,
transfer list, reason, body site, red flags, cancer history and closure; and so on for
EpisodeOfCare, Encounter, Appointment, Condition, Consent, Flag and Organization.

Why it is separate code: the round trip (``migrate.fhir.roundtrip``) must be able to
catch a mistake in the forward mapping. So nothing here calls or imports the builders or
their value tables (``PRIORITY_MAP``, ``REQUEST_STATUS``, ``GENDERS``…): the inverse
value tables below are stated again, from the FHIR side, on purpose — a second reading of
the mapping, as an independent oracle is. What both sides share is configuration, not
mapping: the identifier base and source system that name the local systems, the time
zone of contact times and the configured referral-source and cancer-history codes
(``Systems``: the writer's own ``FhirOptions`` for the run's source system).

Every output column is text (dates as ``YYYY-MM-DD``, contact times as local wall-clock
``YYYY-MM-DDTHH:MM:SS``) so the comparison is exact and null-safe. Each frame has
``fhir_type`` and ``fhir_id`` first. Parsing takes an explicit schema (only the elements
read here) and never holds a whole file: ``scan_resources`` (polars, lazily; used by
``read_back``) and ``decode_batches`` (Arrow's JSON reader, a batch at a time, the same
frames; used by the round trip).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

import polars as pl
import pyarrow as pa
import pyarrow.json as pa_json

from migrate.fhir.ndjson import ndjson_paths, stem, unreadable
from migrate.fhir.options import FhirOptions

# --- FHIR-side tables: what a FHIR value says in canonical terms ------------------------------
NHS_NUMBER_SYSTEM = "https://fhir.nhs.uk/Id/nhs-number"
ODS_SYSTEM = "https://fhir.nhs.uk/Id/ods-organization-code"
UBRN_SYSTEM = "https://fhir.nhs.uk/Id/UBRN"
VERIFICATION_URL = "https://fhir.hl7.org.uk/StructureDefinition/Extension-UKCore-NHSNumberVerificationStatus"
SOURCE_URL = "https://fhir.hl7.org.uk/StructureDefinition/Extension-UKCore-SourceOfServiceRequest"
PRIORITY_REASON_URL = "https://fhir.hl7.org.uk/StructureDefinition/Extension-UKCore-PriorityReason"
FLAG_DETAIL_URL = "http://hl7.org/fhir/StructureDefinition/flag-detail"
SYSTEM_TO_CODE_SYSTEM = {"http://snomed.info/sct": "snomed", "http://read.info/readv2": "read2",
                         "http://read.info/ctv3": "ctv3"}
PRIORITY_TO_CANONICAL = {"routine": "routine", "urgent": "urgent", "asap": "two_week_wait"}
# ServiceRequest.status says where the referral stood at the cut-over.
REQUEST_STATUS_TO_CANONICAL = {"active": "open", "completed": "closed", "revoked": "rejected"}
APPOINTMENT_TO_ATTENDANCE = {"booked": "booked", "noshow": "did_not_attend"}
CANCELLATION_TO_ATTENDANCE = {"pat": "cancelled_by_patient", "prov": "cancelled_by_provider"}
CLASS_TO_MODALITY = {"AMB": "face_to_face", "VR": "virtual"}
CANCER_NOTE = {"yes": "true", "no": "false", "not recorded": None}

# --- schemas: only the elements read back ------------------------------------------------------
_S = pl.String
_CODING = pl.List(pl.Struct({"system": _S, "code": _S, "display": _S}))
_CONCEPT = pl.Struct({"coding": _CODING, "text": _S})
_REF = pl.Struct({"reference": _S, "display": _S, "identifier": pl.Struct({"system": _S, "value": _S})})
_IDENTIFIERS = pl.List(pl.Struct({"system": _S, "value": _S, "extension": pl.List(
    pl.Struct({"url": _S, "valueCodeableConcept": _CONCEPT}))}))
_NOTES = pl.List(pl.Struct({"text": _S}))

SCHEMAS: dict[str, dict[str, pl.DataType]] = {
    "Patient": {"id": _S(), "identifier": _IDENTIFIERS,
                "name": pl.List(pl.Struct({"use": _S, "family": _S, "given": pl.List(_S)})),
                "telecom": pl.List(pl.Struct({"system": _S, "value": _S})), "gender": _S(), "birthDate": _S(),
                "address": pl.List(pl.Struct({"text": _S, "postalCode": _S})),
                "generalPractitioner": pl.List(_REF)},
    "Organization": {"id": _S(), "identifier": _IDENTIFIERS},
    "ServiceRequest": {"id": _S(), "extension": pl.List(pl.Struct({"url": _S, "valueCodeableConcept": _CONCEPT})),
                       "identifier": _IDENTIFIERS, "status": _S(), "category": pl.List(_CONCEPT), "priority": _S(),
                       "_priority": pl.Struct({"extension": pl.List(
                           pl.Struct({"url": _S, "valueCodeableConcept": _CONCEPT}))}),
                       "code": _CONCEPT, "subject": _REF, "authoredOn": _S(), "reasonCode": pl.List(_CONCEPT),
                       "bodySite": pl.List(_CONCEPT), "note": _NOTES},
    "EpisodeOfCare": {"id": _S(), "status": _S(), "type": pl.List(_CONCEPT), "patient": _REF,
                      "period": pl.Struct({"start": _S, "end": _S}), "referralRequest": pl.List(_REF)},
    "Encounter": {"id": _S(), "identifier": _IDENTIFIERS, "status": _S(),
                  "class": pl.Struct({"system": _S, "code": _S}), "type": pl.List(_CONCEPT), "subject": _REF,
                  "episodeOfCare": pl.List(_REF), "basedOn": pl.List(_REF), "period": pl.Struct({"start": _S}),
                  "location": pl.List(pl.Struct({"location": _REF}))},
    "Appointment": {"id": _S(), "identifier": _IDENTIFIERS, "status": _S(), "cancelationReason": _CONCEPT,
                    "description": _S(), "start": _S(), "end": _S(), "basedOn": pl.List(_REF),
                    "participant": pl.List(pl.Struct({"actor": _REF, "status": _S}))},
    "Condition": {"id": _S(), "code": _CONCEPT, "subject": _REF, "recordedDate": _S(), "note": _NOTES},
    "Consent": {"id": _S(), "patient": _REF, "dateTime": _S(), "extension": pl.List(pl.Struct({"url": _S,
                                                                                              "valueCode": _S})),
                "provision": pl.Struct({"type": _S, "purpose": _CODING, "code": pl.List(_CONCEPT)})},
    "Flag": {"id": _S(), "extension": pl.List(pl.Struct({"url": _S, "valueReference": _REF})), "code": _CONCEPT,
             "subject": _REF},
}
READ_TYPES: tuple[str, ...] = tuple(SCHEMAS)


@dataclass(frozen=True)
class Systems:
    """The configuration both directions share — where local ids and codes live, the contact
    time zone, the configured codes — read from the same ``FhirOptions`` the writer uses
    (configuration, not mapping: one definition of each system URL)."""

    options: FhirOptions

    def local_id(self, kind: str) -> str:
        return self.options.local_system(kind)

    def local_codes(self, kind: str) -> str:
        return self.options.local_codes(kind)

    def handover_codes(self, kind: str) -> str:
        return self.options.handover_codes(kind)

    @property
    def timezone(self) -> str:
        return self.options.timezone

    @property
    def sharing_source_url(self) -> str:
        """The Consent extension naming where the deciding sharing entry is (a URL of this
        handover's, stated once in the FhirOptions both directions share)."""
        return self.options.sharing_source_url

    @property
    def referral_sources(self) -> tuple[tuple[str, str, str], ...]:
        return self.options.referral_sources

    @property
    def cancer_code(self) -> str:
        return self.options.cancer_history_code[0]

    @classmethod
    def for_source(cls, source_system: str) -> Systems:
        """The FHIR defaults for one source system."""
        return cls(FhirOptions(source_system=source_system, run_id="inverse", cutover=date(2000, 1, 1)))

    @classmethod
    def for_run(cls, manifest: Mapping[str, Any]) -> Systems:
        """The systems of a run: its first profile's source system and the FHIR defaults."""
        mappings = manifest.get("mapping") or [{}]
        first = mappings[0] if isinstance(mappings, list) else mappings
        return cls.for_source(str(first.get("source_system") or first.get("name") or "unknown"))


# --- reading -------------------------------------------------------------------------------
def scan_resources(files: Sequence[Path], resource_type: str) -> pl.LazyFrame:
    """The resources of ``files`` (NDJSON of one type), only the elements read back."""
    schema = SCHEMAS[resource_type]
    if not files:
        return pl.LazyFrame(schema=schema)
    # Each line read as one text value (a raw control character such as \x01 cannot occur
    # in JSON text, so it is a safe separator), then decoded with the schema: measured about
    # 20x faster than polars' NDJSON reader given the same schema (benchmarks/roundtrip.md).
    lines = [pl.scan_csv(f, has_header=False, new_columns=["json"], schema={"json": pl.String()},
                         separator="\x01", quote_char=None) for f in files]
    return (pl.concat(lines, how="vertical").filter(pl.col("json").str.strip_chars() != "")
            .select(pl.col("json").str.json_decode(pl.Struct(schema)).struct.unnest()))


BATCH_ROWS = 200_000  # resources per batch decode_batches gives (~0.2-0.4 GB decoded at most)
# memory: NDJSON bytes Arrow's streaming reader parses at a time. Its peak grows with the
# block (it parses several ahead), not with the file: 600k ServiceRequests of the 1M run
# (gzip) read at 32 MB blocks peaked at 1,547 MB, at 16 MB 832, 8 MB 546, 4 MB 356, for the
# same CPU (10.9 s at 32 MB, 8.2 s at 4 MB; benchmarks/roundtrip.md). A resource longer than
# a block is read on by ``scan_resources`` (the fallback below), never lost.
_BLOCK_BYTES = 4 << 20


def _arrow_type(dtype: Any) -> pa.DataType:
    """The Arrow type of a polars schema element (text, lists and structs of them), for Arrow's JSON
    reader (``Any``: polars types a nested element as a class or an instance)."""
    if isinstance(dtype, pl.List):
        return pa.list_(_arrow_type(dtype.inner))
    if isinstance(dtype, pl.Struct):
        return pa.struct([pa.field(f.name, _arrow_type(f.dtype)) for f in dtype.fields])
    if dtype == pl.String:
        return pa.string()
    raise TypeError(f"no Arrow type for {dtype}")


def decode_batches(files: Sequence[Path], resource_type: str, rows: int = BATCH_ROWS) -> Iterator[pl.DataFrame]:
    """The resources of ``files`` as ``scan_resources`` gives them (same rows, order and
    columns), about ``rows`` at a time.

    Decoded by Arrow's JSON reader with the same explicit schema (unexpected fields ignored,
    as ``str.json_decode`` does): measured at 200,000 patients ~1.5x less CPU for the same
    frames (``benchmarks/roundtrip.md``). A file Arrow cannot read to the end — a value of
    another JSON type than the schema's, a line that is not an object — is read on from
    the first resource Arrow did not give by ``scan_resources``, so any difference between
    the two readers can only be in which one reports the error. A ``.ndjson.gz`` is
    decompressed as it is read; one that is damaged (truncated, a bad CRC) is an InputError
    naming it (``migrate.fhir.ndjson.unreadable``), never a short read."""
    schema = SCHEMAS[resource_type]
    options = pa_json.ParseOptions(explicit_schema=pa.schema([pa.field(n, _arrow_type(d)) for n, d in schema.items()]),
                                   unexpected_field_behavior="ignore")
    pending: list[pl.DataFrame] = []
    held = 0
    for path in files:
        given = 0
        try:
            with pa_json.open_json(path, read_options=pa_json.ReadOptions(block_size=_BLOCK_BYTES),
                                   parse_options=options) as reader:
                for block in reader:
                    frame = pl.from_arrow(pa.Table.from_batches([block]))
                    assert isinstance(frame, pl.DataFrame)
                    given += frame.height
                    pending.append(frame)
                    held += frame.height
                    if held >= rows:
                        yield pl.concat(pending)
                        pending, held = [], 0
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            rest = scan_resources([path], resource_type).slice(given)
            try:
                for frame in rest.collect_batches(chunk_size=rows, maintain_order=True):
                    pending.append(frame)
                    held += frame.height
                    if held >= rows:
                        yield pl.concat(pending)
                        pending, held = [], 0
            except OSError as exc:  # the decompressor's: a damaged .gz (polars reads it too)
                raise unreadable(path, exc) from None
        except OSError as exc:  # Arrow's decompressor: a truncated or corrupted .gz
            raise unreadable(path, exc) from None
    if pending:
        yield pl.concat(pending)


def ndjson_files(folder: Path) -> dict[str, list[Path]]:
    """``<Type>.ndjson`` (or ``<Type>.<n>.ndjson``, ``<Type>-<n>.ndjson``, as Bulk Data
    servers name several files of one type; each also as ``.ndjson.gz``) under ``folder``,
    by resource type."""
    found: dict[str, list[Path]] = {}
    for path in ndjson_paths(folder):
        resource_type = stem(path).split(".")[0].split("-")[0]
        found.setdefault(resource_type, []).append(path)
    return found


# --- small expressions --------------------------------------------------------------------
def _where(column: str, condition: pl.Expr, field: str) -> pl.Expr:
    """``field`` of the first element of list ``column`` meeting ``condition`` (on pl.element())."""
    return pl.col(column).list.eval(pl.element().filter(condition).struct.field(field)).list.first()


def _system_is(system: str) -> pl.Expr:
    return pl.element().struct.field("system") == system


def _url_is(url: str) -> pl.Expr:
    return pl.element().struct.field("url") == url


def _first(column: str, *path: str) -> pl.Expr:
    """``column[0].path…`` for a list column."""
    expr = pl.col(column).list.first()
    for p in path:
        expr = expr.struct.field(p)
    return expr


def _ref_id(expr: pl.Expr, resource_type: str) -> pl.Expr:
    """The id of a literal reference ``Type/id`` (null for another type)."""
    ref = expr.struct.field("reference")
    return pl.when(ref.str.starts_with(f"{resource_type}/")).then(ref.str.slice(len(resource_type) + 1))


def _coding_code(concept: pl.Expr, system: str | None = None) -> pl.Expr:
    coding = concept.struct.field("coding")
    if system is None:
        return coding.list.first().struct.field("code")
    return coding.list.eval(pl.element().filter(_system_is(system)).struct.field("code")).list.first()


def _note(prefix: str) -> pl.Expr:
    """The rest of the first note starting with ``prefix`` (null when none)."""
    texts = pl.col("note").list.eval(pl.element().struct.field("text"))
    hit = texts.list.eval(pl.element().filter(pl.element().str.starts_with(prefix))).list.first()
    return hit.str.slice(len(prefix))


def _code_system(system: pl.Expr, systems: Systems) -> pl.Expr:
    return (system.replace_strict(SYSTEM_TO_CODE_SYSTEM, default=None, return_dtype=pl.String)
            .fill_null(pl.when(system == systems.local_codes("local")).then(pl.lit("local"))))


def _local_time(value: pl.Expr, timezone: str) -> pl.Expr:
    """A FHIR dateTime/instant with offset as local wall-clock text in ``timezone``."""
    parsed = value.str.replace(r"Z$", "+00:00").str.to_datetime("%Y-%m-%dT%H:%M:%S%:z", time_unit="us",
                                                                  time_zone="UTC", strict=False)
    return parsed.dt.convert_time_zone(timezone).dt.replace_time_zone(None).dt.strftime("%Y-%m-%dT%H:%M:%S")


# --- one function per resource type ---------------------------------------------------------
def patients(frame: pl.LazyFrame, systems: Systems) -> pl.LazyFrame:
    nhs = pl.element().struct.field("system") == NHS_NUMBER_SYSTEM
    verification = (pl.col("identifier").list.eval(pl.element().filter(nhs).struct.field("extension")).list.first()
                    .list.eval(pl.element().filter(_url_is(VERIFICATION_URL)).struct.field("valueCodeableConcept"))
                    .list.first())
    local = _system_is(systems.local_id("patient"))
    official = pl.col("name").list.first()
    return frame.select(
        pl.lit("Patient").alias("fhir_type"), pl.col("id").alias("fhir_id"),
        _where("identifier", nhs, "value").alias("nhs_number"),
        _coding_code(verification).alias("nhs_number_verification"),
        _where("identifier", local, "value").alias("source_patient_id"),
        pl.col("identifier").list.eval(pl.element().filter(local).struct.field("value")).alias("local_ids"),
        official.struct.field("family").alias("family_name"),
        official.struct.field("given").list.join(" ").alias("given_names"),
        pl.col("birthDate").alias("birth_date"),
        pl.col("gender").alias("sex"),
        _first("address", "text").alias("address"),
        _first("address", "postalCode").alias("postcode"),
        _where("telecom", _system_is("phone"), "value").alias("phone"),
        _first("generalPractitioner", "identifier", "value").alias("gp_ods_code"),
        _ref_id(pl.col("generalPractitioner").list.first(), "Organization").alias("gp_organization_id"),
    )


def organizations(frame: pl.LazyFrame, systems: Systems) -> pl.LazyFrame:
    del systems
    return frame.select(pl.lit("Organization").alias("fhir_type"), pl.col("id").alias("fhir_id"),
                        _where("identifier", _system_is(ODS_SYSTEM), "value").alias("ods_code"))


def service_requests(frame: pl.LazyFrame, systems: Systems) -> pl.LazyFrame:
    by_code = {code: value for value, code, _ in systems.referral_sources}
    source = (pl.col("extension").list.eval(pl.element().filter(_url_is(SOURCE_URL))
                                            .struct.field("valueCodeableConcept")).list.first())
    source_code = _coding_code(source)
    raised = (pl.col("_priority").struct.field("extension").list.eval(
        pl.element().filter(_url_is(PRIORITY_REASON_URL)).struct.field("url")).list.len() > 0).fill_null(False)
    priority = pl.col("priority").replace_strict(PRIORITY_TO_CANONICAL, default=None, return_dtype=pl.String)
    # "Priority on the outgoing provider's list: <assigned>; raised to …" or "…: unknown (no FHIR priority given)"
    listed = _note("Priority on the outgoing provider's list: ").str.extract(r"^([a-z_]+)", 1)
    closed = _note("Closed").str.extract_groups(r"^(?: (\d{4}-\d{2}-\d{2}))?(?:: (.*))?$")
    category = pl.col("category")
    return frame.select(
        pl.lit("ServiceRequest").alias("fhir_type"), pl.col("id").alias("fhir_id"),
        _where("identifier", _system_is(systems.local_id("referral")), "value").alias("source_referral_id"),
        _where("identifier", _system_is(UBRN_SYSTEM), "value").alias("ubrn"),
        pl.col("authoredOn").alias("received_date"),
        _coding_code(pl.col("code"), systems.local_codes("service-line")).alias("service_line"),
        pl.coalesce(source_code.replace_strict(by_code, default=None, return_dtype=pl.String),
                    source.struct.field("text")).alias("referral_source"),
        pl.when(raised).then(listed).otherwise(pl.coalesce(priority, listed)).alias("assigned_priority"),
        pl.when(raised).then(priority).alias("raised_priority"),
        pl.col("status").replace_strict(REQUEST_STATUS_TO_CANONICAL, default=None, return_dtype=pl.String)
        .alias("status_at_cutover"),
        _cat(category, systems.handover_codes("cohort")).alias("cohort"),
        _cat(category, systems.handover_codes("transfer-list")).alias("transfer_list"),
        _first("reasonCode", "text").alias("reason_text"),
        _coding_code(pl.col("bodySite").list.first(), systems.local_codes("body-site")).alias("body_site"),
        _note("Red-flag indicators recorded: ").alias("red_flags"),
        _note("Personal history of cancer: ").replace_strict(CANCER_NOTE, default=None, return_dtype=pl.String)
        .alias("history_of_cancer"),
        closed.struct.field("1").alias("closed_date"),
        closed.struct.field("2").alias("closure_reason"),
        _ref_id(pl.col("subject"), "Patient").alias("patient_id"),
    )


def _cat(category: pl.Expr, system: str) -> pl.Expr:
    codes = category.list.eval(pl.element().struct.field("coding").list.first())
    return codes.list.eval(pl.element().filter(_system_is(system)).struct.field("code")).list.first()


def episodes(frame: pl.LazyFrame, systems: Systems) -> pl.LazyFrame:
    kind = pl.col("type").list.first()
    return frame.select(
        pl.lit("EpisodeOfCare").alias("fhir_type"), pl.col("id").alias("fhir_id"),
        pl.col("status").alias("episode_status"),
        _coding_code(kind, systems.handover_codes("cohort")).alias("cohort"),
        kind.struct.field("text").alias("cohort_reason"),
        pl.col("period").struct.field("start").alias("received_date"),
        pl.col("period").struct.field("end").alias("pifu_expiry_date"),
        _ref_id(pl.col("referralRequest").list.first(), "ServiceRequest").alias("request_id"),
        _ref_id(pl.col("patient"), "Patient").alias("patient_id"),
    )


def encounters(frame: pl.LazyFrame, systems: Systems) -> pl.LazyFrame:
    contact_type = pl.col("type").list.eval(pl.element().struct.field("coding").list.first()).list.eval(
        pl.element().filter(_system_is(systems.local_codes("contact-type"))).struct.field("code")).list.first()
    procedure = pl.col("type").list.eval(pl.element().filter(pl.element().struct.field("coding").is_null())
                                         .struct.field("text")).list.first()
    return frame.select(
        pl.lit("Encounter").alias("fhir_type"), pl.col("id").alias("fhir_id"),
        _where("identifier", _system_is(systems.local_id("contact")), "value").alias("contact_key"),
        _local_time(pl.col("period").struct.field("start"), systems.timezone).alias("contact_datetime"),
        pl.when(pl.col("status") == "finished").then(pl.lit("attended")).alias("attendance"),
        contact_type.alias("contact_type"),
        procedure.alias("procedure"),
        pl.col("class").struct.field("code").replace_strict(CLASS_TO_MODALITY, default=None, return_dtype=pl.String)
        .alias("modality_class"),
        _first("location", "location", "display").alias("site"),
        _ref_id(pl.col("basedOn").list.first(), "ServiceRequest").alias("request_id"),
        _ref_id(pl.col("episodeOfCare").list.first(), "EpisodeOfCare").alias("episode_id"),
        _ref_id(pl.col("subject"), "Patient").alias("patient_id"),
    )


def appointments(frame: pl.LazyFrame, systems: Systems) -> pl.LazyFrame:
    reason = _coding_code(pl.col("cancelationReason"))
    # description: "<contact_type>" or "<contact_type> (<procedure>)"
    parts = pl.col("description").str.extract_groups(r"^([a-z_]+)(?: \((.*)\))?$")
    patient = pl.col("participant").list.eval(pl.element().struct.field("actor").struct.field("reference")).list.eval(
        pl.element().filter(pl.element().str.starts_with("Patient/"))).list.first()
    actor = pl.element().struct.field("actor")
    site = pl.col("participant").list.eval(pl.element().filter(actor.struct.field("reference").is_null())
                                           .struct.field("actor").struct.field("display")).list.first()
    return frame.select(
        pl.lit("Appointment").alias("fhir_type"), pl.col("id").alias("fhir_id"),
        _where("identifier", _system_is(systems.local_id("contact")), "value").alias("contact_key"),
        _local_time(pl.col("start"), systems.timezone).alias("contact_datetime"),
        pl.when(pl.col("status") == "cancelled")
        .then(reason.replace_strict(CANCELLATION_TO_ATTENDANCE, default=None, return_dtype=pl.String))
        .otherwise(pl.col("status").replace_strict(APPOINTMENT_TO_ATTENDANCE, default=None, return_dtype=pl.String))
        .alias("attendance"),
        parts.struct.field("1").alias("contact_type"),
        parts.struct.field("2").alias("procedure"),
        pl.lit(None, dtype=pl.String).alias("modality_class"),
        site.alias("site"),
        _ref_id(pl.col("basedOn").list.first(), "ServiceRequest").alias("request_id"),
        pl.lit(None, dtype=pl.String).alias("episode_id"),
        patient.str.slice(len("Patient/")).alias("patient_id"),
    )


def conditions(frame: pl.LazyFrame, systems: Systems) -> pl.LazyFrame:
    coding = pl.col("code").struct.field("coding").list.first()
    return frame.select(
        pl.lit("Condition").alias("fhir_type"), pl.col("id").alias("fhir_id"),
        _code_system(coding.struct.field("system"), systems).alias("code_system"),
        coding.struct.field("code").alias("code"),
        coding.struct.field("display").alias("display"),
        pl.col("recordedDate").alias("recorded_date"),
        _first("note", "text").alias("value"),
        _ref_id(pl.col("subject"), "Patient").alias("patient_id"),
    )


def consents(frame: pl.LazyFrame, systems: Systems) -> pl.LazyFrame:
    provision = pl.col("provision")
    codings = provision.struct.field("code").list.eval(pl.element().struct.field("coding").list.first())
    # A setting's value is in the outgoing provider's own code system for settings of a
    # patient or of a practice; read back as source:value, beside coded entries' system:code.
    settings = {systems.local_codes("sharing-setting"): "patient_setting",
                systems.local_codes("practice-sharing"): "practice_setting"}
    system = pl.element().struct.field("system")
    labels = codings.list.eval(pl.concat_str([
        pl.coalesce(_code_system(system, systems),
                    system.replace_strict(settings, default=None, return_dtype=pl.String)), pl.lit(":"),
        pl.element().struct.field("code")])).list.sort()
    source = pl.col("extension").list.eval(pl.element().filter(_url_is(systems.sharing_source_url))
                                           .struct.field("valueCode")).list.first()
    opt_out = provision.struct.field("purpose").list.len().fill_null(0) > 0
    return frame.select(
        pl.lit("Consent").alias("fhir_type"), pl.col("id").alias("fhir_id"),
        pl.when(opt_out).then(pl.lit("opt_out")).otherwise(pl.lit("sharing")).alias("consent_kind"),
        provision.struct.field("type").alias("decision"),
        pl.col("dateTime").alias("recorded_date"),
        labels.alias("labels"),
        source.alias("source"),
        _ref_id(pl.col("patient"), "Patient").alias("patient_id"),
    )


def flags(frame: pl.LazyFrame, systems: Systems) -> pl.LazyFrame:
    detail = pl.col("extension").list.eval(pl.element().filter(_url_is(FLAG_DETAIL_URL))
                                           .struct.field("valueReference")).list.first()
    return frame.select(
        pl.lit("Flag").alias("fhir_type"), pl.col("id").alias("fhir_id"),
        _coding_code(pl.col("code"), systems.handover_codes("flag")).alias("flag_code"),
        _ref_id(detail, "ServiceRequest").alias("request_id"),
        _ref_id(pl.col("subject"), "Patient").alias("patient_id"),
    )


INVERSES = {"Patient": patients, "Organization": organizations, "ServiceRequest": service_requests,
            "EpisodeOfCare": episodes, "Encounter": encounters, "Appointment": appointments,
            "Condition": conditions, "Consent": consents, "Flag": flags}


def read_back(files: Mapping[str, Sequence[Path]], systems: Systems) -> dict[str, pl.LazyFrame]:
    """Canonical fields of every resource in ``files`` (type → NDJSON files), per type.

    Types this module does not read (Provenance, types another system added) are left
    out: they carry no canonical field.
    """
    return {t: INVERSES[t](scan_resources(list(files.get(t, [])), t), systems) for t in READ_TYPES}


def fields_of(resource_type: str) -> list[str]:
    """The field columns ``read_back`` gives for ``resource_type`` (fhir_type, fhir_id aside)."""
    empty = INVERSES[resource_type](pl.LazyFrame(schema=SCHEMAS[resource_type]), Systems.for_source("x"))
    return [c for c in empty.collect_schema().names() if c not in ("fhir_type", "fhir_id")]
