"""The round trip: the FHIR a run wrote says what the source said, field by field, 100 %.

``check_roundtrip(run_dir)`` reads ``fhir/ndjson`` back into canonical fields
(``migrate.fhir.inverse``, its own code), and compares every carried field of every
resource with what the canonical tables, and through ``lineage.parquet`` each source row,
say it should be (``migrate.fhir.expected``). Nothing is sampled: every (source row,
resource) pair lineage records is compared on every field that applies to it. It writes
``reports/roundtrip.json``:

    {"fields_compared": N, "mismatches": M, "holds": M == 0,
     "records": {table: source rows compared}, "resources_read": {type: n},
     "fields": [{"field", "resource", "element", "compared", "mismatches", "examples"}],
     "not_carried": [{"field", "reason"}]}

Examples name the patient and record by local id (``patient_ids``: ``source_patient_id``;
``record_ids``: ``source_referral_id`` or ``contact_key``) with file and row; expected and
found values are shown only for fields that are neither patient-identifying (names, birth
date, NHS number, address, phone, free text) nor ids.

A field of a merge survivor's Patient (names, birth date, sex, address, postcode, phone,
practice) matches when it equals the value of any record of the merged cluster: identity
takes each such field from the most recent record that has one (survivorship).
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl

from migrate.executor import Executor, LocalExecutor
from migrate.fhir import expected as ex
from migrate.fhir.inverse import Systems, ndjson_files
from migrate.fhir.roundtrip_buckets import RowCounter, Staged, bucket_count
from migrate.fhir import roundtrip_lookups
from migrate.fhir.roundtrip_lookups import Lookups
from migrate.outputs import write_text
from migrate.progress import NULL_PROGRESS, Progress
from migrate.reports.rundata import RunFolder
from migrate.staging import write_part

ROUNDTRIP = "reports/roundtrip.json"
EXAMPLES = 5

# Canonical fields that no resource carries, and why (docs/reports.md lists them too).
NOT_CARRIED: tuple[tuple[str, str], ...] = (
    ("patients.nhs_number_raw", "the number as written; the checked 10-digit number is carried, and "
                                "an invalid one is sent as written with verification 03 (trace required)"),
    ("patients.nhs_number_status", "carried as the NHS number verification code identity derives from it "
                                   "(compared as patients.nhs_number_verification)"),
    ("patients.patient_key", "handover's internal key; the resource id is derived from it (UUIDv5)"),
    ("referrals.status", "carried as the status at the cut-over (from the cohort) plus the closure "
                         "date and reason; a referral closed after the cut-over is active in FHIR"),
    ("referrals.pifu_expiry_date", "carried only for PIFU cohorts (EpisodeOfCare.period.end); other "
                                   "referrals have no PIFU window to hand over"),
    ("referrals.post_op_date", "used by the rules; its consequence travels as a POST_OP_NOT_PRIORITISED Flag"),
    ("referrals.awaiting_injection", "used by the rules; its consequence travels as an AWAITING_INJECTION Flag"),
    ("contacts.modality", "Encounter.class carries face-to-face (AMB) or virtual (VR): telephone and video "
                          "are both virtual; an Appointment has no element for it"),
    ("contacts.slot_name", "how e-RS dummy slots are recognised; dummy slots become no resource"),
    ("codes (sharing entries)", "the sharing Consent carries the decision and its deciding entry (code and "
                                "date) with its source; earlier dissent/consent entries, of any source, are "
                                "summarised by it (sharing.parquet lists them all)"),
    ("codes.display (opt-out)", "the opt-out Consent carries each opt-out code, not its display text"),
)


@dataclass(frozen=True)
class Field:
    """One compared field: report name, FHIR element, column (``e_``/``f_`` prefixed in the
    frames), whether values are patient-identifying, where it applies, survivorship."""

    name: str
    element: str
    column: str
    pii: bool = False
    applies: pl.Expr | None = None
    tolerant: bool = False


def _fields(prefix: str, element_of: dict[str, str], pii: tuple[str, ...] = (),
            tolerant: tuple[str, ...] = (), applies: pl.Expr | None = None) -> list[Field]:
    return [Field(f"{prefix}.{col}", el, col, col in pii, applies, col in tolerant) for col, el in element_of.items()]


_OWN = ~pl.col("merged_row")
PATIENT_FIELDS = _fields("patients", {
    "nhs_number": "identifier[nhs-number].value",
    "nhs_number_verification": "identifier[nhs-number].extension[NHSNumberVerificationStatus]",
    "source_patient_id": "identifier[local patient].value",
    "family_name": "name[0].family", "given_names": "name[0].given", "birth_date": "birthDate",
    "sex": "gender", "address": "address[0].text", "postcode": "address[0].postalCode",
    "phone": "telecom[phone].value", "gp_ods_code": "generalPractitioner[0].identifier.value",
    "gp_practice": "generalPractitioner[0] → Organization.identifier[ods]",
    "gp_organization_id": "generalPractitioner[0].reference",
}, pii=("nhs_number", "source_patient_id", "family_name", "given_names", "birth_date", "address", "postcode",
        "phone"),
    tolerant=("family_name", "given_names", "birth_date", "sex", "address", "postcode", "phone", "gp_ods_code",
              "gp_practice"), applies=_OWN) + [
    Field("patients.source_patient_id (merged record)", "identifier[local patient] (any)", "merged_local_id",
          pii=True, applies=pl.col("merged_row")),
]
REQUEST_FIELDS = _fields("referrals", {
    "source_referral_id": "identifier[local referral].value", "ubrn": "identifier[UBRN].value",
    "received_date": "authoredOn", "service_line": "code.coding[service-line].code",
    "referral_source": "extension[SourceOfServiceRequest]", "assigned_priority": "priority, or note when raised",
    "raised_priority": "priority with _priority.extension[PriorityReason]",
    "status_at_cutover": "status", "cohort": "category[cohort]", "transfer_list": "category[transfer-list]",
    "reason_text": "reasonCode[0].text", "body_site": "bodySite[0].coding[body-site].code",
    "red_flags": "note (Red-flag indicators recorded)", "history_of_cancer": "note (Personal history of cancer)",
    "closed_date": "note (Closed …)", "closure_reason": "note (Closed …: reason)", "patient_id": "subject",
}, pii=("source_referral_id", "ubrn", "reason_text"))
EPISODE_FIELDS = _fields("referrals (episode)", {
    "episode_status": "status", "cohort": "type[0].coding[cohort].code", "cohort_reason": "type[0].text",
    "received_date": "period.start", "pifu_expiry_date": "period.end", "request_id": "referralRequest[0]",
    "patient_id": "patient",
})
CONTACT_FIELDS = _fields("contacts", {
    "contact_key": "identifier[local contact].value",
    "contact_datetime": "Encounter.period.start / Appointment.start (local time)",
    "attendance": "Encounter.status / Appointment.status + cancelationReason",
    "contact_type": "Encounter.type[contact-type] / Appointment.description",
    "procedure": "Encounter.type[text] / Appointment.description (…)", "modality_class": "Encounter.class",
    "site": "Encounter.location / Appointment.participant[site]", "request_id": "basedOn[0]",
    "episode_id": "Encounter.episodeOfCare[0]", "patient_id": "subject / participant[patient]",
}, pii=("contact_key",))
_CODED = ~pl.col("cancer_row")
CONDITION_FIELDS = [
    *_fields("codes", {"code_system": "code.coding[0].system", "code": "code.coding[0].code"}, applies=_CODED),
    *_fields("codes", {"display": "code.coding[0].display", "recorded_date": "recordedDate", "value": "note[0].text",
                       "patient_id": "subject"}, applies=_CODED),
    *_fields("referrals.history_of_cancer (Condition)", {
        "code": "code.coding[0].code", "recorded_date": "recordedDate (earliest such referral)",
        "patient_id": "subject"}, applies=pl.col("cancer_row")),
]
CONSENT_FIELDS = _fields("codes (consent)", {
    "decision": "provision.type (deny when SHARING_BLOCK)", "entry": "provision.code + dateTime",
    "source": "extension[sharing-source] (coded_entry, patient_setting, practice_setting)",
    "patient_id": "patient"})
FLAG_FIELDS = _fields("flags", {"flag_codes": "code (every Flag of the subject row)",
                                "request_id": "extension[flag-detail] → ServiceRequest", "patient_id": "subject"})


@dataclass
class Group:
    """Expected rows of one or two resource types, the fields compared, and a hook that
    derives the ``f_`` (and extra ``e_``) columns after the join."""

    types: tuple[str, ...]
    expect: Callable[[RunFolder, ex.Links], pl.LazyFrame]
    fields: list[Field]
    derive: Callable[[pl.LazyFrame], pl.LazyFrame] | None = None
    per_row: bool = False  # flags: aggregate the (row, resource) pairs per source row first


def _patient_found(frame: pl.LazyFrame) -> pl.LazyFrame:
    merged = pl.when(pl.col("f_local_ids").list.contains(pl.col("e_merged_local_id"))).then(
        pl.col("e_merged_local_id"))
    return frame.with_columns(merged.alias("f_merged_local_id"), pl.col("e_gp_ods_code").alias("e_gp_practice"),
                              pl.col("c_gp_ods_code").alias("c_gp_practice"))


def _consent_found(frame: pl.LazyFrame) -> pl.LazyFrame:
    """Sharing Consent: the decision, the deciding entry (``e_deciding`` from the run's
    sharing entries; for an older run without them, one of the patient's coded entries)
    and its source; opt-out Consent: its code and latest date."""
    opt_out = pl.col("f_consent_kind") == "opt_out"
    deciding = pl.col("f_labels").list.first() + "|" + pl.col("f_recorded_date").fill_null("")
    sharing_ok = (pl.when(pl.col("e_deciding").is_not_null()).then(deciding.eq_missing(pl.col("e_deciding")))
                  .when(pl.col("entries").is_null()).then(pl.col("f_labels").list.len().fill_null(0) == 0)
                  .otherwise(pl.col("entries").list.contains(deciding).fill_null(False)))
    opt_ok = (pl.col("f_labels").list.contains(pl.col("label")).fill_null(False)
              & pl.col("f_recorded_date").eq_missing(pl.col("latest")))
    return frame.with_columns(
        pl.when(opt_out).then(pl.lit("deny")).when(pl.col("blocked")).then(pl.lit("deny"))
        .otherwise(pl.lit("permit")).alias("e_decision"),
        pl.col("f_decision").alias("f_decision"),
        pl.lit("carried").alias("e_entry"),
        pl.when(pl.when(opt_out).then(opt_ok).otherwise(sharing_ok)).then(pl.lit("carried"))
        .otherwise(pl.lit("not carried")).alias("f_entry"),
        pl.when(opt_out).then(None).otherwise(pl.col("e_source")).alias("e_source"),
    )


def _groups(systems: Systems) -> list[Group]:
    return [
        Group(("Patient",), ex.expect_patients, PATIENT_FIELDS, _patient_found),
        Group(("ServiceRequest",), ex.expect_requests, REQUEST_FIELDS),
        Group(("EpisodeOfCare",), ex.expect_episodes, EPISODE_FIELDS),
        Group(("Encounter", "Appointment"), ex.expect_contacts, CONTACT_FIELDS),
        Group(("Condition",), lambda run, links: ex.expect_conditions(run, links, systems.cancer_code),
              CONDITION_FIELDS),
        Group(("Consent",), ex.expect_consents, CONSENT_FIELDS, _consent_found),
        Group(("Flag",), lambda run, links: ex.expect_flags(run, links, systems.options.flag_codes), FLAG_FIELDS,
              per_row=True),
    ]


def _found(resources: dict[str, pl.LazyFrame], types: tuple[str, ...]) -> pl.LazyFrame:
    frames = [resources[t] for t in types]
    found = pl.concat(frames, how="diagonal_relaxed") if len(frames) > 1 else frames[0]
    names = [c for c in found.collect_schema().names() if c not in ("fhir_type",)]
    return found.select([pl.col(c).alias(c if c == "fhir_id" else f"f_{c}") for c in names]).with_columns(
        pl.lit(True).alias("present"))


def _with_practice(found: pl.LazyFrame, resources: dict[str, pl.LazyFrame]) -> pl.LazyFrame:
    """Patients with the ODS code of the Organization their generalPractitioner references."""
    orgs = resources["Organization"].select(pl.col("fhir_id").alias("f_gp_organization_id"),
                                            pl.col("ods_code").alias("f_gp_practice"))
    return found.join(orgs.unique("f_gp_organization_id"), on="f_gp_organization_id", how="left")


def _flags_per_row(frame: pl.LazyFrame) -> pl.LazyFrame:
    keys = ["table", "source_file", "source_row"]
    return frame.group_by(keys).agg(
        pl.col("fhir_type", "fhir_id", "patient", "record", "e_flag_codes", "e_request_id", "e_patient_id").first(),
        pl.col("present").all(),
        pl.col("f_flag_code").drop_nulls().unique().sort().str.join(" ").alias("f_flag_codes"),
        pl.when(pl.col("f_request_id").drop_nulls().n_unique() <= 1).then(pl.col("f_request_id").drop_nulls()
                                                                           .first())
        .otherwise(pl.lit("several")).alias("f_request_id"),
        pl.when(pl.col("f_patient_id").n_unique() == 1).then(pl.col("f_patient_id").first())
        .otherwise(pl.lit("several")).alias("f_patient_id"),
    ).with_columns(pl.when(pl.col("e_flag_codes") == "").then(None).otherwise(pl.col("e_flag_codes"))
                   .alias("e_flag_codes"))


def _evaluate(joined: pl.LazyFrame, group: Group) -> tuple[pl.LazyFrame, pl.LazyFrame]:
    """(one-row counts, mismatching rows) for ``joined``."""
    present = pl.col("present").fill_null(False)
    counts: list[pl.Expr] = [pl.len().alias("rows"), (~present).sum().alias("missing")]
    flags: list[pl.Expr] = []
    schema = joined.collect_schema().names()
    for i, f in enumerate(group.fields):
        e, g = pl.col(f"e_{f.column}"), pl.col(f"f_{f.column}")
        applies = present & (f.applies if f.applies is not None else pl.lit(True))
        same = e.eq_missing(g)
        if f.tolerant and f"c_{f.column}" in schema:
            same = same | pl.col(f"c_{f.column}").list.contains(g).fill_null(False)
        counts += [applies.sum().alias(f"n{i}"), (applies & ~same).sum().alias(f"m{i}")]
        flags.append((applies & ~same).fill_null(False).alias(f"x{i}"))
    bad = joined.with_columns(flags).filter(pl.any_horizontal([pl.col(f"x{i}") for i in range(len(flags))])
                                            | ~present.fill_null(False))
    return joined.select(counts), bad


def check_roundtrip(run_dir: Path, write: bool = True, bucket_rows: int | None = None,
                    executor: Executor | None = None) -> dict[str, Any]:
    """Compare the run's FHIR NDJSON with its canonical tables through lineage; write
    ``reports/roundtrip.json`` (when ``write``) and return it. ``holds`` is False on any
    mismatch or on a resource lineage names that the NDJSON lacks. ``bucket_rows``: pairs
    per bucket (``roundtrip_buckets.BUCKET_ROWS`` by default) and ``executor``: where the
    buckets are compared (this process by default) — the result is the same whatever they are."""
    return _check(run_dir, write, bucket_rows, executor or LocalExecutor())[0]


def _check(run_dir: Path, write: bool, bucket_rows: int | None,
           executor: Executor) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """``check_roundtrip``'s result and how it ran (None without FHIR output)."""
    run = RunFolder.open(run_dir)
    systems = Systems.for_run(run.manifest)
    files = ndjson_files(run_dir / "fhir" / "ndjson")
    if not files:
        result: dict[str, Any] = {"fields_compared": 0, "mismatches": 0, "holds": None,
                                  "status": "not applicable: no FHIR output", "fields": [],
                                  "not_carried": _not_carried()}
        if write:
            _write(run_dir, result)
        return result, None
    # Both sides of every join are split by a hash of the resource id and staged as Parquet
    # (roundtrip_buckets): 8.7M pairs at a million patients would need several GB held at once.
    with tempfile.TemporaryDirectory(prefix="handover-roundtrip-") as tmp:
        links = ex.Links.of(run)
        staged = Staged.build(run, links.lineage, files, systems, Path(tmp) / "buckets", bucket_rows, executor)
        try:
            result, ran = _compare(run, systems, links.staged(run, Path(tmp) / "links"), staged, Path(tmp), executor,
                                   bucket_rows)
        finally:
            staged.close()
    if write:
        _write(run_dir, result)
    return result, ran


def _joined(run: RunFolder, group: Group, links: ex.Links, resources: dict[str, pl.LazyFrame],
            clusters: pl.LazyFrame) -> tuple[pl.LazyFrame, pl.LazyFrame]:
    """(expected rows, expected rows joined with what was found) of one group."""
    found = _found(resources, group.types)
    if group.types == ("Patient",):
        found = _with_practice(found, resources)
    expected = group.expect(run, links)
    joined = expected.join(found, on="fhir_id", how="left")
    if group.types == ("Patient",):
        joined = joined.join(clusters, on="survivor_key", how="left")
    if group.derive is not None:
        joined = group.derive(joined)
    if group.per_row:
        joined = _flags_per_row(joined)
    return expected, joined


def _rows_part(rows: dict[str, pl.LazyFrame], part: tuple[int, int] | None) -> dict[str, pl.LazyFrame]:
    """``rows`` of the source rows of ``part`` (index, parts): ``source_row`` modulo parts, so
    every resource of one source row (its Flags hash to different id buckets) is in one part."""
    if part is None or part[1] == 1:
        return rows
    index, parts = part
    return {t: frame.filter(pl.col("source_row") % parts == index) for t, frame in rows.items()}


@dataclass(frozen=True)
class BucketJob:
    """One group's comparison over some buckets (picklable: paths and scans of staged Parquet)."""

    run_dir: Path
    group: int  # index in _groups
    buckets: tuple[int, ...]
    links: ex.Links
    staged: Staged
    clusters: Path
    rows: Path  # where the distinct source rows compared are written (counted after all buckets)
    part: tuple[int, int] | None = None  # (index, parts) of the source rows compared (Flags: _rows_part)
    lookups: Lookups | None = None  # the lookups split by bucket (a one-bucket job's), else the whole ones


@dataclass
class BucketResult:
    totals: dict[str, int]
    bad: pl.DataFrame  # the rows that can be examples (_first_bad): a few per field
    process: str = ""


def compare_bucket(job: BucketJob) -> BucketResult:
    """Compare ``job``'s buckets of one group (runs here or in a worker process)."""
    from migrate.executor import ran_on

    run = RunFolder.open(job.run_dir)
    group = _groups(Systems.for_run(run.manifest))[job.group]
    resources = job.staged.resources_of(job.buckets)
    tables = _rows_part(job.staged.rows_of(job.buckets), job.part)
    if job.part is not None:  # all buckets' resources: only those of this part's rows are joined
        ids = pl.concat([tables[t].filter(pl.col("fhir_type").is_in(list(group.types))).select("fhir_id")
                         for t in tables]).unique()
        resources = resources | {t: resources[t].join(ids, on="fhir_id", how="semi") for t in group.types}
    links, clusters = job.links, pl.scan_parquet(job.clusters)
    if job.lookups is not None and job.part is None and len(job.buckets) == 1:
        links, clusters = job.lookups.links_of(links, job.buckets[0]), job.lookups.clusters_of(job.buckets[0])
    expected, joined = _joined(run, group, links.bucket(tables), resources, clusters)
    counts_q, bad_q = _evaluate(joined, group)
    rows_q = expected.select("table", "source_file", "source_row").unique()
    counts, bad, rows = pl.collect_all([counts_q, bad_q, rows_q], engine="streaming")
    totals = {name: int(value or 0) for name, value in counts.row(0, named=True).items()}
    write_part(rows, job.rows)
    return BucketResult(totals, _first_bad(bad, group), ran_on())


def _compare(run: RunFolder, systems: Systems, links: ex.Links, staged: Staged, tmp: Path,
             executor: Executor, bucket_rows: int | None = None) -> tuple[dict[str, Any], dict[str, Any]]:
    """Every group's expected rows against the resources read back, bucket by bucket (on
    ``executor``'s processes): the result's fields (sums over the buckets; examples the
    first of all buckets' first) and how it ran (buckets, processes)."""
    clusters = tmp / "clusters.parquet"
    ex.survivor_values(run).sink_parquet(clusters, compression="lz4")
    # Few buckets stream the whole lookups faster than they are split (roundtrip_lookups)
    split = staged.count >= roundtrip_lookups.SPLIT_FROM_BUCKETS
    lookups = Lookups.build(run, links, staged, clusters, tmp / "lookups") if split and staged.count > 1 else None
    try:
        return _compare_jobs(run, systems, links, staged, tmp, executor, clusters, lookups, bucket_rows)
    finally:
        if lookups is not None:
            lookups.close()


def _compare_jobs(run: RunFolder, systems: Systems, links: ex.Links, staged: Staged, tmp: Path, executor: Executor,
                  clusters: Path, lookups: Lookups | None,
                  bucket_rows: int | None) -> tuple[dict[str, Any], dict[str, Any]]:
    # memory: one number (the largest source row of the lineage)
    max_row = int(links.lineage.select(pl.col("source_row").max()).collect(engine="streaming").item() or 0)
    groups = _groups(systems)
    jobs = []
    for g, group in enumerate(groups):
        if group.per_row:
            # Flags are aggregated per source row, whose Flags hash to different buckets: every
            # bucket, split instead by source row (a part per BUCKET_ROWS Flags read back).
            # memory: all Flags in one job held the whole extract's (~1.6M at 5M patients).
            parts = bucket_count(sum(staged.read.get(t, 0) for t in group.types), bucket_rows)
            every = tuple(range(staged.count))
            jobs += [BucketJob(run.path, g, every, links, staged, clusters, tmp / f"rows-{g}-{p:05d}.parquet",
                               (p, parts)) for p in range(parts)]
            continue
        jobs += [BucketJob(run.path, g, (b,), links, staged, clusters, tmp / f"rows-{g}-{b:05d}.parquet",
                           lookups=lookups) for b in range(staged.count)]
    # One bucket (under ~500,000 links, ~60,000 patients): its seven comparisons take less
    # than starting worker processes (~2 s each), so they run here.
    used = executor if staged.count > 1 else LocalExecutor()
    results = used.map(compare_bucket, jobs)
    fields_out: list[dict[str, Any]] = []
    records: dict[str, int] = {}
    for g, group in enumerate(groups):
        mine = [r for j, r in zip(jobs, results, strict=True) if j.group == g]
        paths = [j.rows for j in jobs if j.group == g]
        totals: dict[str, int] = {}
        for r in mine:
            for name, value in r.totals.items():
                totals[name] = totals.get(name, 0) + value
        counter = RowCounter(tmp / "rows", max_row=max_row)
        try:
            for path in paths:
                # memory: one job's compared rows at a time (a bucket's, or one part of the Flags'
                # source rows: a few narrow columns), counted, then dropped
                counter.add(pl.read_parquet(path))
                path.unlink()
            counted = counter.counts()
        finally:
            counter.close()
        bad = pl.concat([r.bad for r in mine], how="diagonal_relaxed") if mine else pl.DataFrame()
        fields_out.append(_missing_entry(group, totals, bad))
        for i, f in enumerate(group.fields):
            fields_out.append(_field_entry(f, group, totals[f"n{i}"], totals[f"m{i}"],
                                           bad.filter(pl.col(f"x{i}")) if bad.height else bad))
        for table, n in counted.items():
            records[table] = max(records.get(table, 0), n)
    compared = sum(f["compared"] for f in fields_out)
    mismatches = sum(f["mismatches"] for f in fields_out)
    result = {
        "fields_compared": compared,
        "mismatches": mismatches,
        "holds": mismatches == 0,
        "records": dict(sorted(records.items())),
        "resources_read": dict(sorted(staged.read.items())),
        "fields": fields_out,
        "not_carried": _not_carried(),
        "mismatched_fields": [f["field"] for f in fields_out if f["mismatches"]],
    }
    ran = {r.process for r in results}
    # A local pool's workers all name themselves "a local worker process" (no pid, so that a
    # rerun's manifest is the same bytes): their count is the pool's, not the names'.
    pooled = isinstance(used, LocalExecutor) and "a local worker process" in ran
    processes = min(used.workers, len(jobs)) if isinstance(used, LocalExecutor) and pooled else len(ran)
    return result, {"buckets": staged.count, "jobs": len(jobs), "processes": processes,
                    "in_this_process": ran <= {"this process"}}


def _first_bad(bad: pl.DataFrame, group: Group) -> pl.DataFrame:
    """The rows of ``bad`` that can be examples: the first ``EXAMPLES`` (in ``_examples``'
    order) missing, and of each field's mismatches — so the examples of all buckets are the
    examples of the whole, whatever the number of mismatches."""
    if bad.height == 0:
        return bad
    keep = [~pl.col("present").fill_null(False)] + [pl.col(f"x{i}") for i in range(len(group.fields))]
    order = _order(bad)
    return pl.concat([bad.filter(k).sort(order, nulls_last=True).head(EXAMPLES) for k in keep]).unique(
        subset=order, keep="first", maintain_order=True)


def _order(bad: pl.DataFrame) -> list[str]:
    return [c for c in ("source_file", "source_row", "fhir_type", "fhir_id") if c in bad.columns]


def _missing_entry(group: Group, row: dict[str, int], bad: pl.DataFrame) -> dict[str, Any]:
    name = " / ".join(group.types)
    examples = bad.filter(~pl.col("present").fill_null(False)) if bad.height else bad
    return {"field": f"{name} (resource present)", "resource": name, "element": "id named by lineage",
            "compared": int(row["rows"]), "mismatches": int(row["missing"]),
            "examples": _examples(examples, None)}


def _field_entry(f: Field, group: Group, compared: int, mismatches: int, bad: pl.DataFrame) -> dict[str, Any]:
    return {"field": f.name, "resource": " / ".join(group.types), "element": f.element, "compared": compared,
            "mismatches": mismatches, "examples": _examples(bad, None if f.pii else f.column)}


def _examples(bad: pl.DataFrame, column: str | None) -> list[dict[str, Any]]:
    if bad.height == 0:
        return []
    # A full order (the streaming join gives rows in no fixed order): same run, same examples.
    rows = bad.sort(_order(bad), nulls_last=True).head(EXAMPLES)
    out = []
    for r in rows.iter_rows(named=True):
        # Local ids sit under *_ids keys, the convention the pseudonymised pack tokenises.
        item: dict[str, Any] = {"patient_ids": [r.get("patient")], "record_ids": [r.get("record")],
                                "file": r["source_file"], "row": r["source_row"], "resource": r.get("fhir_type")}
        if column is not None:
            item["expected"] = _plain(r.get(f"e_{column}"))
            item["found"] = _plain(r.get(f"f_{column}"))
        out.append(item)
    return out


def _plain(value: Any) -> Any:
    return value if value is None or isinstance(value, (str, int, float, bool)) else str(value)


def _not_carried() -> list[dict[str, str]]:
    return [{"field": name, "reason": reason} for name, reason in NOT_CARRIED]


def _write(run_dir: Path, result: dict[str, Any]) -> Path:
    # Key order kept (totals first, then per field): json.dumps without sort_keys.
    return write_text(json.dumps(result, indent=2, ensure_ascii=False, default=str) + "\n", run_dir / ROUNDTRIP)


def run_roundtrip(run_dir: Path, progress: Progress = NULL_PROGRESS,
                  executor: Executor | None = None) -> dict[str, Any]:
    """The round trip as ``handover run`` does it: compare (its buckets on ``executor``),
    write and seal ``reports/roundtrip.json`` (so ``verify`` covers it), and record how it
    ran in the manifest's ``execution``; returns the headline."""
    from migrate.reports.chain import seal_outputs
    from migrate.reports.rundata import MANIFEST, read_json

    progress.start("roundtrip", total=None)
    result, ran = _check(run_dir, True, None, executor or LocalExecutor())
    execution = read_json(run_dir / MANIFEST).get("execution")
    updates = None if ran is None or execution is None else {"execution": dict(execution) | {"roundtrip": ran}}
    seal_outputs(run_dir, [run_dir / ROUNDTRIP], updates=updates)
    if ran is not None:
        progress.advance("roundtrip", 1, f"{ran['jobs']} comparisons of {ran['buckets']} buckets on "
                                         f"{ran['processes']} processes")
    progress.finish("roundtrip")
    return summary(result)


def summary(result: dict[str, Any]) -> dict[str, Any]:
    """The round trip's headline for the run summary (reconciliation.json, --json)."""
    return {"fields_compared": result["fields_compared"], "mismatches": result["mismatches"],
            "holds": result["holds"], "mismatched_fields": result.get("mismatched_fields", [])}
