"""The run summary: one typed model of what a run did, rendered everywhere.

``reports/reconciliation.json`` holds a ``RunSummary``; the terminal summary
(``reports.terminal``), ``--json`` and the HTML page render that same object. It is
computed once per command from the run folder (``reports.reconciliation.build``) and
written once, by ``write_reports``: the pipeline records what only it knows (identity's
headline numbers, the FHIR writer's statistics) in the manifest's ``stages``, never in a
second copy of the summary.

The parts whose shape belongs to one report module (control totals, declared vs found,
waits, delta) are typed as plain JSON objects here and documented in docs/reports.md.
"""

from __future__ import annotations

from datetime import date
from pathlib import PurePosixPath
from typing import Annotated, Any, Literal, NotRequired

from pydantic import AfterValidator, ConfigDict, Field, with_config
# pydantic reads these types to check manifest.json (``migrate.manifest.ManifestSchema``):
# before Python 3.12 it needs typing_extensions' TypedDict, which is typing's for mypy.
from typing_extensions import TypedDict


# The forms of the FHIR output (``--fhir-form``): ``both`` writes the transaction bundles
# (what ``handover load`` sends) and the NDJSON; ``ndjson`` the NDJSON alone (half the disk).
# No bundles-only form: the round trip and invariant 2 read the NDJSON, the proof that
# nothing was lost.
FhirForm = Literal["both", "ndjson"]
FHIR_FORMS: tuple[FhirForm, ...] = ("both", "ndjson")


def recorded_fhir_form(options: Any) -> FhirForm | None:
    """The FHIR form a manifest's ``options`` record: ``both`` when they name none (a run
    made before ``--fhir-form`` wrote both); None when the value is not a form."""
    value = options.get("fhir_form", "both") if isinstance(options, dict) else "both"
    return next((f for f in FHIR_FORMS if f == value), None)


# The compression of the FHIR NDJSON (``--fhir-compression``): ``none`` writes
# ``fhir/ndjson/<Type>.ndjson``; ``gzip`` writes ``<Type>.ndjson.gz`` (the FHIR Bulk Data
# convention; ~10x smaller, what lets a 5M-patient run with FHIR fit a 60 GB disk). Bundles
# are never compressed (``handover load`` sends them as they are).
FhirCompression = Literal["none", "gzip"]
FHIR_COMPRESSIONS: tuple[FhirCompression, ...] = ("none", "gzip")


def recorded_fhir_compression(options: Any) -> FhirCompression | None:
    """The NDJSON compression a manifest's ``options`` record: ``none`` when they name none
    (a run made before ``--fhir-compression``, or with ``none``: the key is written only for
    ``gzip``); None when the value is not one."""
    value = options.get("fhir_compression", "none") if isinstance(options, dict) else "none"
    return next((c for c in FHIR_COMPRESSIONS if c == value), None)


class FileInvariant(TypedDict):
    """Invariant 1 for one input file (or for a file lineage names that nobody read)."""

    file: str
    table: str | None
    rows_read: int
    dispositions: dict[str, int]  # distinct source rows per disposition
    total: int  # Σ dispositions
    rows_with_several_dispositions: int
    rows_without_disposition: int  # rows 1..rows_read that lineage does not name
    rows_not_read: int  # rows lineage names that the reader never read (outside 1..rows_read)
    rows_with_unknown_disposition: int  # lineage rows whose disposition is not one of DISPOSITIONS
    holds: bool


class RowExample(TypedDict, total=False):
    file: str
    row: int | None
    dispositions: list[str]


# The first failing rows of each kind (``reconcile.EXAMPLES`` at most), by file then row:
# rows_without_disposition, rows_with_several_dispositions, rows_not_read,
# rows_with_unknown_disposition.
RowsExamples = dict[str, list[RowExample]]


class RowsInvariant(TypedDict):
    """Invariant 1: for every input file, rows read = Σ rows per disposition, each row once."""

    holds: bool
    files: list[FileInvariant]
    rows_read: int
    dispositions: dict[str, int]
    examples: RowsExamples


class Verdict(TypedDict):
    """Both invariants together: whether all hold, and one sentence per failure."""

    holds: bool
    failures: list[str]


class Profile(TypedDict):
    name: str
    sha256: str
    source_system: str


class PackRef(TypedDict):
    name: str
    version: str
    sha256: str


class QuarantineCount(TypedDict):
    file: str
    table: str
    reason_code: str
    rows: int


class Cohorts(TypedDict):
    referrals: dict[str, int]
    patients: dict[str, int]


class Flags(TypedDict):
    by_severity: dict[str, int]
    by_code: dict[str, int]


class FhirStats(TypedDict):
    """What the FHIR writer reports (``FhirResult.asdict``)."""

    bundles: int  # written: 0 with the form ``ndjson`` (none asked for)
    form: NotRequired[FhirForm]  # absent in a manifest written before --fhir-form: ``both``
    compression: NotRequired[FhirCompression]  # only ``gzip`` is written; absent means ``none``
    resources: dict[str, int]
    resources_total: int
    sharing_policy: str
    errors: int
    error_patients: int
    model_validated: int
    files: list[str]
    error_examples: list[dict[str, Any]]


class Stages(TypedDict):
    """Facts only the pipeline knows, recorded in the manifest for every later reader:
    identity's headline numbers, the updates ingest applied (superseded rows, rejected
    updates, re-deliveries), the FHIR writer's statistics and the target index as read."""

    identity: dict[str, int]
    updates: dict[str, Any]
    fhir: FhirStats | None
    target_index: dict[str, Any] | None


class RunSummary(TypedDict):
    """Everything ``reconciliation.json`` holds (docs/reports.md lists each key)."""

    report_format_version: int
    run_id: str
    cutover_date: str
    mapping: list[Profile]
    rules: PackRef
    sharing_policy: str
    run: dict[str, Any]
    inputs: list[dict[str, Any]]
    outputs: list[dict[str, Any]]
    invariant: RowsInvariant
    invariant_fhir: dict[str, Any]
    invariants: Verdict
    quarantine: list[QuarantineCount]
    tables: dict[str, int]
    cohorts: Cohorts
    flags: Flags
    identity: dict[str, int]
    updates: dict[str, Any]
    fhir: FhirStats | None
    target_index: dict[str, Any] | None
    vocabulary: dict[str, list[dict[str, Any]]]
    sharing: dict[str, Any] | None  # migrate.sharing.summary of sharing.parquet (null: a run without it)
    control_totals: dict[str, Any]
    declared_vs_found: dict[str, Any]
    waits: dict[str, Any]
    delta: dict[str, Any]
    report_files: list[str]
    roundtrip: NotRequired[dict[str, Any]]  # reports/roundtrip.json's headline, when the run has one
    hazard_log: NotRequired[dict[str, Any]]  # the run's hazard log with its figures (set last: it reads them)
    target: NotRequired[dict[str, Any]]  # reports/target.json (handover reconcile-target), when present
    review: NotRequired[dict[str, Any]]  # review progress: raised, decided, outstanding (migrate.review.progress)


# --- manifest.json: the one definition its writer (``runfolder.build_manifest``) is typed
# by and ``handover verify`` checks it against (``migrate.manifest.ManifestSchema`` is a
# pydantic TypeAdapter of ``SealedManifest``). The Annotated constraints are pydantic's;
# mypy sees the plain types. Extra keys are allowed (and covered by the digest).


def _iso_date(value: str) -> str:
    date.fromisoformat(value)  # ValueError: not a date
    return value


def _inside(value: str) -> str:
    """A path inside the run folder: relative, forward slashes, no ``..``."""
    p = PurePosixPath(value)
    if not value or p.is_absolute() or ".." in p.parts or "\\" in value or value != p.as_posix():
        raise ValueError("must be a relative path inside the run folder")
    return value


SHA256 = Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]
COUNT = Annotated[int, Field(ge=0)]
ISO_DATE = Annotated[str, Field(pattern=r"^\d{4}-\d{2}-\d{2}$"), AfterValidator(_iso_date)]
RUN_PATH = Annotated[str, AfterValidator(_inside)]


class Tool(TypedDict):
    name: Literal["handover"]
    version: str


class FileRecord(TypedDict):
    path: str
    sha256: str


class RulesRecord(TypedDict):
    name: str
    version: str
    sha256: str
    files: list[FileRecord]


class TargetIndexRecord(TypedDict):
    path: str
    sha256: str
    mapping: str | None  # the profile whose target_index table read it; None: canonical column names


class RunOptions(TypedDict):
    sharing_policy: str
    inactive_patients: str
    target_index: TargetIndexRecord | None
    practice_sharing: TargetIndexRecord | None  # the --practice-sharing file and the profile that read it
    emit_fhir: bool
    bundle_size: int
    # --fhir-form; absent in a manifest written before the option: ``both`` (what it wrote).
    fhir_form: NotRequired[FhirForm]
    # --fhir-compression: written only when ``gzip`` (absent: ``none``, what every older run wrote).
    fhir_compression: NotRequired[FhirCompression]


class InputRecord(TypedDict):
    path: str
    table: str
    bytes: COUNT
    sha256: SHA256
    rows: COUNT


class OutputRecord(TypedDict):
    path: RUN_PATH
    bytes: COUNT
    sha256: SHA256
    rows: NotRequired[COUNT]  # tables only


class DecisionRecord(TypedDict):
    """A --decisions file a batch read (issue #15)."""

    path: str
    sha256: SHA256
    bytes: COUNT
    rows: COUNT


class Counts(TypedDict):
    rows_read: COUNT
    dispositions: dict[str, COUNT]
    quarantined: COUNT


class FrozenFile(TypedDict):
    path: str
    sha256: str


class FrozenMapping(FrozenFile):
    name: str


class FrozenConfig(TypedDict):
    """The manifest's ``config`` block: every file of ``config/`` with its sha256
    (``migrate.frozen``)."""

    mappings: list[FrozenMapping]
    rules: FrozenFile
    identity: FrozenFile
    declared: FrozenFile | None
    hazards: FrozenFile
    practice_sharing: FrozenFile | None  # the --practice-sharing file, byte for byte (config/practice-sharing/<name>)


class PreviousRun(TypedDict):
    path: str
    run_id: str | None


class Digest(TypedDict):
    algorithm: Literal["sha256"]
    manifest: SHA256
    batch: SHA256


class Seal(TypedDict):
    algorithm: Literal["HMAC-SHA256"]
    mac: SHA256


class RoundtripExecution(TypedDict):
    """How the round trip's comparisons ran (``migrate.fhir.roundtrip``): hash buckets of
    the resource id, the jobs they made, the processes that ran them."""

    buckets: int
    jobs: int
    processes: int
    in_this_process: bool


class ExecutionRecord(TypedDict):
    """How the FHIR partitions ran (``migrate.executor.Execution``): it describes the run,
    not its outputs (like the times, it differs between executors)."""

    executor: str
    where: str
    partitions: int  # asked for (or the executor's default)
    writer_batches: int
    partitions_run: int
    ran_on: dict[str, int]  # a Dask worker's address, or "this process" -> partitions it ran
    notes: list[str]  # why fewer partitions ran than were asked for, or none
    roundtrip: NotRequired[RoundtripExecution]  # set after the round trip ran (handover run)


class Manifest(TypedDict):
    """``manifest.json`` as a batch builds it (docs/architecture.md, "Run directory");
    ``previous_*`` are set for a batch that chains to another (``--previous``)."""

    run_id: str
    tool: Tool
    started: str
    finished: str
    cutover_date: ISO_DATE
    mapping: list[Profile]
    rules: RulesRecord
    options: RunOptions
    identity_rules: dict[str, str]
    identity_model: dict[str, Any]  # the parameters identity estimated from the extract (identity-model.json)
    inputs: list[InputRecord]
    outputs: list[OutputRecord]
    counts: Counts
    stages: Stages
    config: FrozenConfig
    previous_manifest_sha256: SHA256 | None
    previous_batch_digest: NotRequired[SHA256]
    previous_run: NotRequired[PreviousRun]
    decisions: NotRequired[list[DecisionRecord]]
    execution: NotRequired[ExecutionRecord]  # with FHIR: where its partitions ran


@with_config(ConfigDict(strict=True, extra="allow"))
class SealedManifest(Manifest):
    """``manifest.json`` as written: the manifest with its content digest, and its seal when
    the batch was run with ``--key-file`` (``migrate.manifest.with_digest``)."""

    digest: Digest
    seal: NotRequired[Seal]
