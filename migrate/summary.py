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

from typing import Any, NotRequired, TypedDict


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

    bundles: int
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


class InputRecord(TypedDict):
    path: str
    table: str
    bytes: int
    sha256: str
    rows: int


class Counts(TypedDict):
    rows_read: int
    dispositions: dict[str, int]
    quarantined: int


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


class Manifest(TypedDict):
    """``manifest.json`` (docs/architecture.md, "Run directory"). ``outputs`` entries are
    ``{path, bytes, sha256[, rows]}``; ``previous_run`` is present for a delta batch."""

    run_id: str
    tool: dict[str, str]
    started: str
    finished: str
    cutover_date: str
    mapping: list[Profile]
    rules: RulesRecord
    options: RunOptions
    identity_rules: dict[str, str]
    identity_model: dict[str, Any]  # the parameters identity estimated from the extract (identity-model.json)
    inputs: list[InputRecord]
    outputs: list[dict[str, Any]]
    counts: Counts
    stages: Stages
    config: FrozenConfig
    previous_manifest_sha256: str | None
    previous_run: NotRequired[PreviousRun]
    decisions: NotRequired[list[dict[str, Any]]]  # --decisions files: path, sha256, bytes, rows (issue #15)
