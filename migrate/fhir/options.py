"""Options of the FHIR stage and the identifier / code systems it writes.

Everything a FHIR batch depends on besides the data is in ``FhirOptions`` (frozen), so the
same options over the same frames give byte-identical files. Codes marked (verify) come
from secondary sources (docs/domain.md): they are options with defaults, not literals in
the resource builders, so a site can correct them without a release.

Identifier and code systems
    National systems are the NHS ones (docs/domain.md section 7). Local systems name the
    outgoing provider: ``{identifier_base}/Id/{source_system}/patient`` (and ``/referral``,
    ``/contact``), so two extracts from different systems never share a local id space.
    ``identifier_base`` defaults to ``https://fhir.handover.example``: a placeholder under
    the reserved ``.example`` domain (RFC 2606) that a site replaces with its own URL
    before a live load. Codes handover itself defines (cohorts, flag codes) live under
    ``{identifier_base}/CodeSystem/…``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, time
from typing import TYPE_CHECKING, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from migrate import __version__
from migrate.canonical import LOCAL_TIMEZONE
from migrate.errors import ConfigError
from migrate.policies import SHARING_POLICIES, SharingPolicy
from migrate.summary import FHIR_COMPRESSIONS, FHIR_FORMS, FhirCompression, FhirForm

if TYPE_CHECKING:
    from migrate.rules.model import RulePack

Validation = Literal["fast", "full"]

# --- national systems (docs/domain.md section 7) -------------------------------------------
NHS_NUMBER = "https://fhir.nhs.uk/Id/nhs-number"
ODS = "https://fhir.nhs.uk/Id/ods-organization-code"
UBRN = "https://fhir.nhs.uk/Id/UBRN"
SNOMED = "http://snomed.info/sct"
UK_CORE = "https://fhir.hl7.org.uk/StructureDefinition"
VERIFICATION_EXTENSION = f"{UK_CORE}/Extension-UKCore-NHSNumberVerificationStatus"
VERIFICATION_SYSTEM = "https://fhir.hl7.org.uk/CodeSystem/UKCore-NHSNumberVerificationStatusEngland"
PRIORITY_REASON_EXTENSION = f"{UK_CORE}/Extension-UKCore-PriorityReason"
SOURCE_OF_REQUEST_EXTENSION = f"{UK_CORE}/Extension-UKCore-SourceOfServiceRequest"
FLAG_DETAIL_EXTENSION = "http://hl7.org/fhir/StructureDefinition/flag-detail"
CODE_SYSTEMS = {  # canonical code_system -> FHIR system
    "snomed": SNOMED,
    "read2": "http://read.info/readv2",
    "ctv3": "http://read.info/ctv3",
}

VERIFICATION_DISPLAY = {
    "01": "Number present and verified",
    "02": "Number present but not traced",
    "03": "Trace required",
    "04": "Trace attempted - No match or multiple match found",
    "05": "Trace needs to be resolved - (NHS number or patient detail conflict)",
}

# The local priority mapping, stated in the FHIR mapping (docs/domain.md section 5):
# PRIORITY TYPE 1 routine -> routine, 2 urgent -> urgent, 3 two-week wait -> asap.
# ``unknown`` has no FHIR value: the element is left out and a note says so.
PRIORITY_MAP = {"routine": "routine", "urgent": "urgent", "two_week_wait": "asap"}
PRIORITY_RANK = {"unknown": 0, "routine": 1, "urgent": 2, "two_week_wait": 3}

# Cohort -> ServiceRequest.status and EpisodeOfCare.status. An open referral is an active
# request; its episode is waiting (backlog), in care (transition) or on hold while the
# patient may initiate follow-up (PIFU; an expired PIFU is still on hold, awaiting the
# discharge its PIFU_EXPIRED flag asks for).
REQUEST_STATUS = {"backlog": "active", "transition": "active", "pifu": "active", "pifu_expired": "active",
                  "closed": "completed", "rejected": "revoked"}
STATUS_FALLBACK = {"open": "active", "closed": "completed", "rejected": "revoked"}
EPISODE_STATUS = {"backlog": "waitlist", "transition": "active", "pifu": "onhold", "pifu_expired": "onhold"}
OPEN_COHORTS: tuple[str, ...] = tuple(EPISODE_STATUS)

# Exceptions a receiving clinician must see, as Flags (the rest stay in the worklists).
DEFAULT_FLAG_CODES: tuple[str, ...] = (
    "UNDER_PRIORITISED", "UNRECOGNISED_RED_FLAG", "SHARING_BLOCK", "SHARING_BLOCK_ACTIVE_CARE",
    "POST_OP_NOT_PRIORITISED", "AWAITING_INJECTION", "URGENT_WAIT_BREACH",
)
ADMIN_FLAG_CODES: tuple[str, ...] = ("SHARING_BLOCK",)

# Source of referral, SNOMED CT (UK Core value set; docs/domain.md section 7).
DEFAULT_REFERRAL_SOURCES: tuple[tuple[str, str, str], ...] = (
    ("gp", "108161000000109", "referred by GP"),
    ("self", "760081000000107", "physiotherapy self-referral"),
    ("consultant", "312357002", "referred by consultant"),
)


@dataclass(frozen=True)
class SharingCodes:
    """The sharing codelists of the rule pack, as ``system:code`` labels (e.g. ``read2:93C1``).

    Codes rows with a dissent or consent label become the patient's sharing Consent;
    opt-out labels (national data opt-out: not a block) their opt-out Consent; every other
    coded entry is clinical (a Condition, withheld for a blocked patient by default).
    """

    dissent: frozenset[str] = frozenset()
    consent: frozenset[str] = frozenset()
    opt_out: frozenset[str] = frozenset()
    dummy_slot_names: frozenset[str] = frozenset()

    @classmethod
    def from_pack(cls, pack: RulePack) -> SharingCodes:
        """Read the codelists from a rule pack."""
        # Labels and slot names in matching form (migrate.matching), as the rules engine reads them.
        def labels(name: str) -> frozenset[str]:
            return frozenset(pack.keys(name))
        return cls(labels("sharing_dissent_codes"), labels("sharing_consent_codes"), labels("opt_out_codes"),
                   labels("dummy_slot_names"))

    @classmethod
    def default(cls) -> SharingCodes:
        """The codelists of the shipped default rule pack."""
        from migrate.rules import load_pack

        return cls.from_pack(load_pack(None))


@dataclass(frozen=True)
class InputFile:
    """One extract file named in each bundle's Provenance."""

    path: str
    sha256: str


@dataclass(frozen=True)
class FhirOptions:
    """Everything the FHIR output depends on besides the frames.

    ``recorded`` is the Provenance.recorded instant; it defaults to midnight UTC of the
    cut-over date, never the wall clock, so re-running a batch writes identical bytes.
    """

    source_system: str
    run_id: str
    cutover: date
    inputs: tuple[InputFile, ...] = ()
    bundle_size: int = 500
    organisation_ods: str = "RXX"  # placeholder: the migrating organisation's ODS code
    sharing_policy: SharingPolicy = "withhold-clinical"
    identifier_base: str = "https://fhir.handover.example"
    recorded: datetime | None = None
    timezone: str = LOCAL_TIMEZONE  # canonical contact times are local wall-clock times (migrate.canonical)
    appointment_minutes: int = 30  # slot length is not in the extract; Appointment needs an end
    flag_codes: tuple[str, ...] = DEFAULT_FLAG_CODES
    referral_sources: tuple[tuple[str, str, str], ...] = DEFAULT_REFERRAL_SOURCES
    cancer_history_code: tuple[str, str] = ("266987004", "History of malignant neoplasm")  # (verify)
    sharing_codes: SharingCodes | None = None  # None: the default rule pack's codelists
    validation: Validation = "fast"
    # Patients built at once: bounds memory (~50 MB per 1,000 patients beside ~0.5 GB per process:
    # benchmarks/README.md), so a pool of worker processes fits beside the run; not the bundles
    # or NDJSON (only the row groups of fhir/lineage.parquet follow the batches).
    chunk_patients: int = 5_000
    # ``both``: transaction bundles and NDJSON; ``ndjson``: no bundles (``migrate.summary.FhirForm``).
    # Not in the resources' bytes: the NDJSON, lineage and bundle ids are the same either way.
    form: FhirForm = "both"
    # ``none``: ``fhir/ndjson/<Type>.ndjson``; ``gzip``: ``<Type>.ndjson.gz``, one gzip member per
    # writer batch (``migrate.fhir.ndjson``). The same lines either way; bundles never compressed.
    compression: FhirCompression = "none"
    tool: str = f"handover {__version__}"

    def __post_init__(self) -> None:
        problems = []
        if not self.source_system or any(c.isspace() or c == "/" for c in self.source_system):
            problems.append(f"source_system {self.source_system!r} must be non-empty, without spaces or '/'")
        if self.bundle_size < 1:
            problems.append(f"bundle_size must be at least 1, not {self.bundle_size}")
        if self.chunk_patients < 1:
            problems.append(f"chunk_patients must be at least 1, not {self.chunk_patients}")
        if self.sharing_policy not in SHARING_POLICIES:
            problems.append(f"sharing_policy {self.sharing_policy!r} is not one of {', '.join(SHARING_POLICIES)}")
        if self.form not in FHIR_FORMS:
            problems.append(f"form {self.form!r} is not one of {', '.join(FHIR_FORMS)}")
        if self.compression not in FHIR_COMPRESSIONS:
            problems.append(f"compression {self.compression!r} is not one of {', '.join(FHIR_COMPRESSIONS)}")
        if self.validation not in ("fast", "full"):
            problems.append(f"validation {self.validation!r} is not 'fast' or 'full'")
        if not self.organisation_ods.isalnum():
            problems.append(f"organisation_ods {self.organisation_ods!r} is not an ODS code")
        if not self.run_id:
            problems.append("run_id is empty")
        if self.appointment_minutes < 1:
            problems.append("appointment_minutes must be at least 1")
        try:
            ZoneInfo(self.timezone)
        except (ZoneInfoNotFoundError, ValueError):
            problems.append(f"timezone {self.timezone!r} is not an IANA time zone (e.g. Europe/London)")
        if problems:
            raise ConfigError("invalid FHIR options", problems)

    @property
    def writes_bundles(self) -> bool:
        """Whether ``fhir/bundles/`` is written (the form ``both``)."""
        return self.form == "both"

    @property
    def recorded_instant(self) -> str:
        """Provenance.recorded as a FHIR instant (UTC, seconds)."""
        when = self.recorded or datetime.combine(self.cutover, time(), tzinfo=UTC)
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")

    @property
    def codes(self) -> SharingCodes:
        return self.sharing_codes if self.sharing_codes is not None else _default_codes()

    # --- systems ---------------------------------------------------------------------
    def local_system(self, kind: str) -> str:
        """Identifier system of the outgoing provider's own ids: patient, referral, contact."""
        return f"{self.identifier_base}/Id/{self.source_system}/{kind}"

    def local_codes(self, kind: str) -> str:
        """Code system of the outgoing provider's own codes: service-line, contact-type, body-site, local."""
        return f"{self.identifier_base}/CodeSystem/{self.source_system}/{kind}"

    def handover_codes(self, kind: str) -> str:
        """Code system of codes handover defines: cohort, flag."""
        return f"{self.identifier_base}/CodeSystem/{kind}"

    @property
    def sharing_source_url(self) -> str:
        """The Consent extension saying where the deciding sharing entry is: coded_entry,
        patient_setting or practice_setting (``migrate.sharing.SOURCES``)."""
        return f"{self.identifier_base}/StructureDefinition/sharing-source"

    @property
    def policy_uri(self) -> str:
        return f"{self.identifier_base}/policy/sharing-block/{self.sharing_policy}"


_DEFAULT_CODES: list[SharingCodes] = []


def _default_codes() -> SharingCodes:
    if not _DEFAULT_CODES:
        _DEFAULT_CODES.append(SharingCodes.default())
    return _DEFAULT_CODES[0]


def profile(resource_type: str) -> str:
    """The UK Core profile URL of ``resource_type``."""
    return f"{UK_CORE}/UKCore-{resource_type}"
