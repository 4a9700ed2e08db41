"""The canonical model: the tables every stage reads and writes.

One module, imported by every stage, so a column's name, type and allowed values are
defined once. Column names and enum values are a contract (docs/architecture.md):
users' scripts and audit panels read them from the run directory.

Every canonical row also carries ``source_file`` (path relative to the input folder) and
``source_row`` (1-based data row in that file, or message index for HL7) so it can be
traced back to exactly one source record.

Date-times (``contacts.contact_datetime``) are wall-clock times in ``LOCAL_TIMEZONE``
(Europe/London), without a zone attached, as the outgoing provider's clinics keep them: a
source value with a UTC offset (``%z`` in a profile's format, e.g. HL7
``202406181400+0000``) is converted to that local time on the way in. The FHIR writer adds
the offset back (``migrate.fhir.template.datetime_local``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import polars as pl

# --- enumerations (the listed values, in the listed order) --------------------------------
SEX = ("male", "female", "other", "unknown")
PRIORITY = ("routine", "urgent", "two_week_wait", "unknown")
TRANSFER_LIST = ("backlog", "transition", "pifu")
REFERRAL_STATUS = ("open", "closed", "rejected")
ATTENDANCE = ("attended", "did_not_attend", "cancelled_by_patient", "cancelled_by_provider", "booked")
CONTACT_TYPE = ("initial", "follow_up", "procedure")
MODALITY = ("face_to_face", "telephone", "video")
CODE_SYSTEM = ("snomed", "read2", "ctv3", "local")
# A sharing setting (a patient's "Sharing Out" column, a practice's setting), as the profile
# reads it (docs/mapping-profiles.md, "Sharing settings"): the kind its value means by the
# profile's value lists (dissent | consent | opt_out | unrecognised), the value and the
# column as the extract wrote them, and the date the setting was made. One struct, so an
# update sets or clears it as one field.
SHARING_KINDS = ("dissent", "consent", "opt_out", "unrecognised")
SHARING_SETTING = pl.Struct({"kind": pl.String(), "value": pl.String(), "date": pl.Date(), "column": pl.String()})

COHORTS = ("backlog", "transition", "pifu", "pifu_expired", "closed", "rejected")
DISPOSITIONS = ("migrated", "merged", "already_at_target", "withheld", "out_of_scope", "quarantined")
SEVERITIES = ("critical", "high", "medium", "low")

SOURCE_COLUMNS: dict[str, pl.DataType] = {"source_file": pl.String(), "source_row": pl.Int64()}
LOCAL_TIMEZONE = "Europe/London"  # the zone of every canonical date-time (module docstring)


@dataclass(frozen=True)
class Field:
    """One canonical column: its polars type and whether values are patient-identifying.

    ``pii`` fields never have their values quoted in messages or logs.
    """

    name: str
    dtype: pl.DataType
    pii: bool = False
    pattern: str | None = None  # every value must match (the mapping quarantines others)

    @property
    def enum_values(self) -> tuple[str, ...] | None:
        if isinstance(self.dtype, pl.Enum):
            return tuple(self.dtype.categories.to_list())
        return None

    @property
    def kind(self) -> str:
        """The parsing family of the field: string, date, datetime, boolean, list, enum or
        sharing (a sharing setting, ``SHARING_SETTING``)."""
        if isinstance(self.dtype, pl.Enum):
            return "enum"
        if isinstance(self.dtype, pl.Datetime):
            return "datetime"
        if isinstance(self.dtype, pl.List):
            return "list"
        if isinstance(self.dtype, pl.Struct):
            return "sharing"
        return {pl.Date(): "date", pl.Boolean(): "boolean", pl.Int64(): "integer"}.get(self.dtype, "string")


@dataclass(frozen=True)
class Table:
    """A canonical table: its fields in order, its primary key and its parent references."""

    name: str
    fields: tuple[Field, ...]
    key: str | None
    # canonical column -> (parent table, parent key column)
    parents: tuple[tuple[str, str, str], ...] = ()

    @property
    def schema(self) -> dict[str, pl.DataType]:
        """Full polars schema of the table as written, source columns included."""
        return {**{f.name: f.dtype for f in self.fields}, **SOURCE_COLUMNS}

    def field(self, name: str) -> Field:
        for f in self.fields:
            if f.name == name:
                return f
        raise KeyError(name)

    @property
    def field_names(self) -> tuple[str, ...]:
        return tuple(f.name for f in self.fields)


S, D = pl.String(), pl.Date()

PATIENTS = Table(
    "patients",
    (
        Field("patient_key", S),
        Field("source_patient_id", S),
        Field("nhs_number", S, pii=True, pattern=r"^[0-9]{10}$"),  # ASCII digits: never full-width ones
        Field("nhs_number_raw", S, pii=True),
        Field("nhs_number_status", S),
        Field("family_name", S, pii=True),
        Field("given_names", S, pii=True),
        Field("birth_date", D, pii=True),
        Field("sex", pl.Enum(SEX)),
        Field("address", S, pii=True),
        Field("postcode", S, pii=True),
        Field("gp_ods_code", S),
        Field("phone", S, pii=True),
        Field("sharing_out", SHARING_SETTING),
    ),
    key="patient_key",
)

REFERRALS = Table(
    "referrals",
    (
        Field("referral_key", S),
        Field("source_referral_id", S),
        Field("patient_key", S),
        Field("ubrn", S),
        Field("received_date", D),
        Field("service_line", S),
        Field("referral_source", S),
        Field("assigned_priority", pl.Enum(PRIORITY)),
        Field("transfer_list", pl.Enum(TRANSFER_LIST)),
        Field("status", pl.Enum(REFERRAL_STATUS)),
        Field("closed_date", D),
        Field("closure_reason", S),
        Field("pifu_expiry_date", D),
        Field("history_of_cancer", pl.Boolean()),
        Field("red_flags", pl.List(pl.String())),
        Field("body_site", S),
        Field("post_op_date", D),
        Field("awaiting_injection", pl.Boolean()),
        Field("reason_text", S, pii=True),
    ),
    key="referral_key",
    parents=(("patient_key", "patients", "patient_key"),),
)

CONTACTS = Table(
    "contacts",
    (
        Field("contact_key", S),
        Field("referral_key", S),
        Field("patient_key", S),
        Field("contact_datetime", pl.Datetime("us")),
        Field("attendance", pl.Enum(ATTENDANCE)),
        Field("contact_type", pl.Enum(CONTACT_TYPE)),
        Field("modality", pl.Enum(MODALITY)),
        Field("procedure", S),
        Field("site", S),
        Field("slot_name", S),
    ),
    key="contact_key",
    parents=(("referral_key", "referrals", "referral_key"), ("patient_key", "patients", "patient_key")),
)

CODES = Table(
    "codes",
    (
        Field("patient_key", S),
        Field("code_system", pl.Enum(CODE_SYSTEM)),
        Field("code", S),
        Field("display", S),
        Field("recorded_date", D),
        Field("value", S),
    ),
    key=None,
    parents=(("patient_key", "patients", "patient_key"),),
)

# Patient merges announced by the source (HL7 ADT^A40): the prior record folds into the
# surviving one. Not an output table: the identity stage applies them with its own merges.
MERGES = Table(
    "merges",
    (
        Field("patient_key", S),
        Field("prior_patient_key", S),
    ),
    key=None,
    parents=(("patient_key", "patients", "patient_key"), ("prior_patient_key", "patients", "patient_key")),
)

# The new provider's existing patients (``--target-index``), as a profile's ``target_index``
# table maps them: not part of the extract and not an output table; identity matches the
# extract's patients against it (migrate/target_index.py). Repeated ids are allowed.
TARGET_INDEX = Table(
    "target_index",
    (
        Field("local_id", S),
        Field("nhs_number", S, pii=True),
        Field("family_name", S, pii=True),
        Field("given_names", S, pii=True),
        Field("birth_date", D, pii=True),
        Field("sex", pl.Enum(SEX)),
        Field("postcode", S, pii=True),
    ),
    key=None,
)
TARGET_TABLE = TARGET_INDEX.name

# GP practices' sharing settings (``--practice-sharing``), as a profile's ``practice_sharing``
# table maps them: a reference input, not part of the extract; every patient registered
# (``gp_ods_code``) at a practice whose setting is a dissent gets a sharing entry from it
# (migrate/sharing.py). One row per practice.
PRACTICE_SHARING = Table(
    "practice_sharing",
    (
        Field("ods_code", S),
        Field("sharing_out", SHARING_SETTING),
    ),
    key="ods_code",
)
PRACTICE_TABLE = PRACTICE_SHARING.name
# Tables read from a file given on the command line rather than from the extract.
REFERENCE_TABLES: dict[str, str] = {TARGET_TABLE: "--target-index", PRACTICE_TABLE: "--practice-sharing"}

TABLES: dict[str, Table] = {t.name: t for t in (PATIENTS, REFERRALS, CONTACTS, CODES, MERGES, TARGET_INDEX,
                                                 PRACTICE_SHARING)}
# Order in which tables are mapped: parents before children.
TABLE_ORDER: tuple[str, ...] = ("patients", "referrals", "contacts", "codes")

# The quarantine table's schema and reason codes: ``migrate.quarantine``.

LINEAGE_SCHEMA: dict[str, pl.DataType] = {
    "source_file": pl.String(),
    "source_row": pl.Int64(),
    "table": pl.String(),
    "patient_key": pl.String(),
    "disposition": pl.Enum(DISPOSITIONS),
    "fhir_type": pl.String(),
    "fhir_id": pl.String(),
    "reason": pl.String(),  # why the row has its disposition; null for migrated
}


def typed(schema: Mapping[str, pl.DataType]) -> list[pl.Expr]:
    """Select expressions giving a frame exactly ``schema``: its columns, in order, cast."""
    return [pl.col(name).cast(dtype) for name, dtype in schema.items()]


def empty(table: str) -> pl.DataFrame:
    """An empty frame with the full schema of canonical ``table``."""
    return pl.DataFrame(schema=TABLES[table].schema)
