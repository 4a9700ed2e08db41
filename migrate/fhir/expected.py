"""What each resource should say: the canonical values of every source row lineage ties to it.

For the round trip (``migrate.fhir.roundtrip``). Read from the run folder only: the
canonical tables, ``lineage.parquet`` (which source row became which resource — so rows
that became no resource are never expected to have one, whatever the stages before
decided), ``patients.parquet`` (survivors, identity's verification code),
``cohorts.parquet`` and ``exceptions.parquet`` (the rules' decisions: cohort, sharing
block, flags, raised priorities).

Each ``expect_*`` returns one row per (source row, resource) with ``table``,
``source_file``, ``source_row``, ``fhir_type``, ``fhir_id``, ``patient`` and ``record``
(local ids, for examples), and an ``e_<field>`` column per compared field, as text, in
the canonical vocabulary. A null ``e_<field>`` means "the resource must not carry it";
``skip_<field>`` (when present) marks rows where the field does not apply.

The value tables below are the mapping stated from the canonical side, again on purpose
(see ``migrate.fhir.inverse``): they do not import the forward mapping's.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path

import polars as pl

from migrate.reports.rundata import RunFolder

OPEN_COHORTS = ("backlog", "transition", "pifu", "pifu_expired")
COHORT_TO_STATUS = {**{c: "open" for c in OPEN_COHORTS}, "closed": "closed", "rejected": "rejected"}
COHORT_TO_EPISODE = {"backlog": "waitlist", "transition": "active", "pifu": "onhold", "pifu_expired": "onhold"}
MODALITY_TO_CLASS = {"face_to_face": "face_to_face", "telephone": "virtual", "video": "virtual"}
PRIORITY_ORDER = {"unknown": 0, "routine": 1, "urgent": 2, "two_week_wait": 3}
LINK_SEED = 20221001  # the hash seed parting the links by key (any fixed value)


LINK_ROWS = 1_000_000  # canonical rows (keys) per part of the staged patients' and referrals' links


def _lineage(run: RunFolder) -> pl.LazyFrame:
    return run.scan("lineage.parquet").filter(pl.col("fhir_type").is_not_null()).select(
        "source_file", "source_row", "table", "patient_key", "fhir_type", "fhir_id")


def _canonical_part(run: RunFolder, table: str, key: str, part: tuple[int, int] | None) -> pl.LazyFrame:
    """Canonical ``table``; with ``part`` (index, parts), only the rows whose key hashes to it."""
    rows = run.canonical(table)
    if part is None or part[1] == 1:
        return rows
    index, count = part
    return rows.filter(pl.col(key).hash(LINK_SEED) % count == index)


def _first_id(run: RunFolder, lineage: pl.LazyFrame, table: str, fhir_type: str, key: str, alias: str,
              part: tuple[int, int] | None) -> pl.LazyFrame:
    """Per key of ``table`` (of ``part``), the least id of its rows' ``fhir_type`` resources."""
    rows = _canonical_part(run, table, key, part).select(key, "source_file", "source_row")
    hits = lineage.filter((pl.col("table") == table) & (pl.col("fhir_type") == fhir_type))
    # the part's canonical rows on the right: the side the join builds (a part's, not the lineage's)
    return (hits.select("source_file", "source_row", pl.col("fhir_id").alias(alias))
            .join(rows, on=["source_file", "source_row"]).group_by(key).agg(pl.col(alias).min()))


def _patients(run: RunFolder, lineage: pl.LazyFrame, part: tuple[int, int] | None = None) -> pl.LazyFrame:
    """patient_key, patient (local id), survivor_key, patient_id (its Patient) of ``part``."""
    rows = _canonical_part(run, "patients", "patient_key", part).select(
        "patient_key", pl.col("source_patient_id").alias("patient"))
    # memory: the summary kept to the part's keys first (``keyed``): joined whole, every part
    # built a table of every patient of the extract
    summary = keyed(run.scan("patients.parquet").select("patient_key", "survivor_key"), rows, "patient_key")
    return (rows.join(summary, on="patient_key", how="left")
            .with_columns(pl.col("survivor_key").fill_null(pl.col("patient_key")))
            .join(_first_id(run, lineage, "patients", "Patient", "patient_key", "patient_id", part), on="patient_key",
                  how="left"))


def _referrals(run: RunFolder, lineage: pl.LazyFrame, part: tuple[int, int] | None = None) -> pl.LazyFrame:
    """referral_key, patient_key, referral (local id), request_id, episode_id of ``part``."""
    return (_canonical_part(run, "referrals", "referral_key", part)
            .select("referral_key", "patient_key", pl.col("source_referral_id").alias("referral"))
            .join(_first_id(run, lineage, "referrals", "ServiceRequest", "referral_key", "request_id", part),
                  on="referral_key", how="left")
            .join(_first_id(run, lineage, "referrals", "EpisodeOfCare", "referral_key", "episode_id", part),
                  on="referral_key", how="left"))


@dataclass(frozen=True)
class Links:
    """Resource ids lineage gives each canonical key: the (survivor's) Patient of a
    patient key, the ServiceRequest and EpisodeOfCare of a referral key, local ids; the
    Organization of each patient row; the raised priority of each referral.

    ``joined`` may give, per canonical table, one bucket's canonical rows already joined
    with their resources (``migrate.fhir.roundtrip_buckets``): ``rows`` then gives that
    bucket's rows only. The other frames are whole — a referral's ServiceRequest, a
    patient's Patient and a patient row's Organization may sit in other buckets than the
    rows that reference them — and ``staged`` writes them once as Parquet so each bucket
    reads them instead of recomputing them; each bucket keeps them to its keys (``keyed``)
    before joining."""

    lineage: pl.LazyFrame
    patients: pl.LazyFrame  # patient_key, patient_id (Patient), patient (local id), survivor_key
    referrals: pl.LazyFrame  # referral_key, request_id, episode_id, referral (local id), patient_key
    organisations: pl.LazyFrame  # source_file, source_row (patient rows), gp_organization_id
    raised: pl.LazyFrame  # referral_key, raised (raised_priorities)
    joined: Mapping[str, pl.LazyFrame] | None = None  # table -> its rows with fhir_type, fhir_id
    # run file -> the rows of it a bucket needs (``roundtrip_lookups``); the whole file otherwise
    scans: Mapping[str, pl.LazyFrame] | None = None

    @classmethod
    def of(cls, run: RunFolder) -> Links:
        lineage = _lineage(run)
        organisations = (lineage.filter((pl.col("table") == "patients") & (pl.col("fhir_type") == "Organization"))
                         .select("source_file", "source_row", pl.col("fhir_id").alias("gp_organization_id")))
        return cls(lineage, _patients(run, lineage), _referrals(run, lineage), organisations, raised_priorities(run))

    def staged(self, run: RunFolder, folder: Path) -> Links:
        """These links with every whole frame written once under ``folder`` (streaming) and
        scanned: each bucket of the round trip joins them without recomputing them.

        # memory: the patients' and referrals' links join each canonical row with its
        # lineage and group by key: built whole, the join and the groups held every key of the
        # extract (the referrals' 1.2 GB at 1M; benchmarks/roundtrip.md). Written in parts
        # of about ``LINK_ROWS`` keys each (a hash of the key picks the part; the canonical
        # side, filtered to the part, is the side the join builds), so a part's keys are held,
        # whatever the extract; the lineage is read once per part."""
        folder.mkdir(parents=True, exist_ok=True)

        def written(name: str, frames: list[pl.LazyFrame]) -> pl.LazyFrame:
            paths = []
            for k, frame in enumerate(frames):
                paths.append(folder / f"links-{name}-{k:05d}.parquet")
                frame.sink_parquet(paths[-1], compression="lz4")
            return pl.scan_parquet(paths)

        def parts(table: str) -> list[tuple[int, int]]:
            count = max(1, -(-run.height(f"canonical/{table}.parquet") // LINK_ROWS))
            return [(k, count) for k in range(count)]

        return replace(self,
                       patients=written("patients", [_patients(run, self.lineage, p) for p in parts("patients")]),
                       referrals=written("referrals", [_referrals(run, self.lineage, p) for p in parts("referrals")]),
                       organisations=written("organisations", [self.organisations]),
                       raised=written("raised", [self.raised]))

    def bucket(self, joined: Mapping[str, pl.LazyFrame]) -> Links:
        """These links with one bucket's canonical rows and their resources (per table) as ``rows``."""
        return replace(self, joined=joined)

    def rows(self, run: RunFolder, table: str, fhir_types: tuple[str, ...]) -> pl.LazyFrame:
        """Canonical rows of ``table`` with each resource of ``fhir_types`` lineage ties them to
        (the canonical columns, ``fhir_type``, ``fhir_id``, ``table``)."""
        if self.joined is not None:
            joined = self.joined[table]
        else:
            hits = self.lineage.filter(pl.col("table") == table)
            joined = run.canonical(table).join(hits.drop("patient_key", "table"), on=["source_file", "source_row"])
        return joined.filter(pl.col("fhir_type").is_in(list(fhir_types))).with_columns(pl.lit(table).alias("table"))

    def scan(self, run: RunFolder, name: str) -> pl.LazyFrame:
        """Run file ``name`` as a lookup: a bucket's rows of it (``scans``) or the whole file."""
        if self.scans is not None and name in self.scans:
            return self.scans[name]
        return run.scan(name)

    def patient_of(self, frame: pl.LazyFrame, key: str = "patient_key") -> pl.LazyFrame:
        """``frame`` with ``e_patient_id`` (its patient's Patient) and ``patient`` (local id)."""
        patients = keyed(self.patients.select(pl.col("patient_key").alias(key), pl.col("patient_id").alias(
            "e_patient_id"), "patient"), frame, key)
        return frame.join(patients, on=key, how="left")


def keyed(table: pl.LazyFrame, frame: pl.LazyFrame, on: str | list[str],
          key: str | list[str] | None = None) -> pl.LazyFrame:
    """``table``'s rows whose ``on`` occurs among ``frame``'s ``key`` (``on`` by default).
    The left join that follows finds the same rows: a row of ``table`` with no key in
    ``frame`` matched nothing."""
    # memory: a left join builds on its right side: joined as it is, each of the round trip's
    # buckets held a whole table (every patient, referral, cohort, flag) in every worker, growing
    # with the extract. Kept to the bucket's keys first (a semi join built on those keys,
    # the table streamed past it), the built side is the bucket's, whatever the extract.
    key = on if key is None else key
    left = [on] if isinstance(on, str) else list(on)
    right = [key] if isinstance(key, str) else list(key)
    keys = frame.select([pl.col(k).alias(o) for k, o in zip(right, left, strict=True)]).unique()
    return table.join(keys, on=left, how="semi")


def _text(column: str) -> pl.Expr:
    return pl.col(column).cast(pl.String)


def _date(column: str) -> pl.Expr:
    return pl.col(column).dt.strftime("%Y-%m-%d")


def _head(record: pl.Expr) -> list[pl.Expr]:
    """The columns every expected row starts with (``record``: its local id)."""
    return [pl.col("table"), pl.col("source_file"), pl.col("source_row"), pl.col("fhir_type"), pl.col("fhir_id"),
            pl.col("patient"), record.alias("record")]


def expect_patients(run: RunFolder, links: Links) -> pl.LazyFrame:
    """Patient: every patient row; a merged row only has its local id among the survivor's."""
    verification = links.scan(run, "patients.parquet").select("patient_key", "nhs_number_verification")
    rows = links.rows(run, "patients", ("Patient",))
    rows = (rows.join(keyed(links.patients.select("patient_key", "survivor_key", "patient"), rows, "patient_key"),
                      on="patient_key", how="left")
            .join(keyed(verification, rows, "patient_key"), on="patient_key", how="left")
            .join(keyed(links.organisations, rows, ["source_file", "source_row"]), on=["source_file", "source_row"],
                  how="left"))
    merged = pl.col("patient_key") != pl.col("survivor_key")
    own = [
        pl.col("nhs_number").alias("e_nhs_number"),
        pl.when(pl.col("nhs_number").is_not_null()).then(_text("nhs_number_verification").str.replace(
            r"^(?i)NSTS", "")).alias("e_nhs_number_verification"),
        pl.col("source_patient_id").alias("e_source_patient_id"),
        pl.col("family_name").alias("e_family_name"),
        _given(pl.col("given_names")).alias("e_given_names"),
        _date("birth_date").alias("e_birth_date"),
        _text("sex").alias("e_sex"),
        pl.col("address").alias("e_address"),
        pl.col("postcode").alias("e_postcode"),
        pl.col("phone").alias("e_phone"),
        pl.col("gp_ods_code").alias("e_gp_ods_code"),
        pl.col("gp_organization_id").alias("e_gp_organization_id"),
    ]
    return rows.select(
        *_head(pl.col("source_patient_id")), pl.col("survivor_key"), merged.alias("merged_row"),
        *own, pl.col("source_patient_id").alias("e_merged_local_id"),
    )


def _given(value: pl.Expr) -> pl.Expr:
    """Given names as the resource lists them: split on spaces, blanks dropped."""
    parts = value.str.strip_chars().str.split(" ").list.eval(pl.element().filter(pl.element() != ""))
    return pl.when(parts.list.len() > 0).then(parts.list.join(" "))


def survivor_values(run: RunFolder) -> pl.LazyFrame:
    """survivor_key and, per demographic field, every value of its merged cluster: survivorship
    takes each field from the most recent record that has it, so any of them may be carried."""
    summary = run.scan("patients.parquet").select("patient_key", "survivor_key")
    clusters = summary.filter(pl.col("survivor_key") != pl.col("patient_key")).select("survivor_key").unique()
    # memory: the merged clusters' members first (a semi join built on the clusters), then their
    # canonical rows (a join built on those members): joined the other way round, the join
    # built a table of every patient of the extract
    members = summary.join(clusters, on="survivor_key", how="semi")
    rows = run.canonical("patients").join(members, on="patient_key")
    return rows.group_by("survivor_key").agg(
        pl.col("family_name").alias("c_family_name"), _given(pl.col("given_names")).alias("c_given_names"),
        _date("birth_date").alias("c_birth_date"), _text("sex").alias("c_sex"), pl.col("address").alias("c_address"),
        pl.col("postcode").alias("c_postcode"), pl.col("phone").alias("c_phone"),
        pl.col("gp_ods_code").alias("c_gp_ods_code"))


def raised_priorities(run: RunFolder) -> pl.LazyFrame:
    """referral_key, raised: the priority a rule or an applied review decision raised the
    referral to (the highest), from the exceptions and decisions the run recorded, read with
    the run's own pack (its ``priority:`` outcomes)."""
    from migrate import frozen
    from migrate.fhir.stage import derived_priority

    # memory: held: the decisions (a reviewer's rows) and the raised referrals' rows of the
    # exceptions (derived_priority reads the scan); computed once per round trip and staged.
    decisions = run.scan("decisions.parquet").collect() if run.has("decisions.parquet") else None
    derived = derived_priority(run.scan("exceptions.parquet"), frozen.load_pack(run.path), decisions)
    rank = pl.col("priority").replace_strict(PRIORITY_ORDER, default=-1, return_dtype=pl.Int64)
    return derived.lazy().sort("referral_key", rank, descending=[False, True]).group_by(
        "referral_key", maintain_order=True).agg(pl.col("priority").first().alias("raised"))


def expect_requests(run: RunFolder, links: Links) -> pl.LazyFrame:
    """ServiceRequest: every referral row lineage ties to one."""
    cohorts = links.scan(run, "cohorts.parquet").select("referral_key", _text("cohort").alias("cohort"))
    rows = links.rows(run, "referrals", ("ServiceRequest",))
    rows = links.patient_of(rows.join(keyed(cohorts, rows, "referral_key"), on="referral_key", how="left")
                            .join(keyed(links.raised, rows, "referral_key"), on="referral_key", how="left"))
    assigned = _text("assigned_priority")
    higher = (pl.col("raised").replace_strict(PRIORITY_ORDER, default=-1, return_dtype=pl.Int64)
              > assigned.replace_strict(PRIORITY_ORDER, default=0, return_dtype=pl.Int64)).fill_null(False)
    flags = pl.col("red_flags").list.join(", ")
    cancer = pl.col("history_of_cancer")
    return rows.select(
        *_head(pl.col("source_referral_id")),
        pl.col("source_referral_id").alias("e_source_referral_id"),
        pl.col("ubrn").alias("e_ubrn"),
        _date("received_date").alias("e_received_date"),
        pl.col("service_line").alias("e_service_line"),
        pl.col("referral_source").alias("e_referral_source"),
        assigned.alias("e_assigned_priority"),
        pl.when(higher).then(pl.col("raised")).alias("e_raised_priority"),
        pl.coalesce(pl.col("cohort").replace_strict(COHORT_TO_STATUS, default=None, return_dtype=pl.String),
                    _text("status")).alias("e_status_at_cutover"),
        pl.col("cohort").alias("e_cohort"),
        _text("transfer_list").alias("e_transfer_list"),
        pl.col("reason_text").alias("e_reason_text"),
        pl.col("body_site").alias("e_body_site"),
        pl.when(pl.col("red_flags").list.len() > 0).then(flags).alias("e_red_flags"),
        pl.when(cancer).then(pl.lit("true")).when(~cancer).then(pl.lit("false")).alias("e_history_of_cancer"),
        _date("closed_date").alias("e_closed_date"),
        pl.col("closure_reason").alias("e_closure_reason"),
        pl.col("e_patient_id"),
    )


def expect_episodes(run: RunFolder, links: Links) -> pl.LazyFrame:
    """EpisodeOfCare: every referral row lineage ties to one (open cohorts)."""
    cohorts = links.scan(run, "cohorts.parquet").select("referral_key", _text("cohort").alias("cohort"), "cohort_reason")
    rows = links.rows(run, "referrals", ("EpisodeOfCare",))
    rows = links.patient_of(rows.join(keyed(cohorts, rows, "referral_key"), on="referral_key", how="left")
                            .join(keyed(links.referrals.select("referral_key", "request_id"), rows, "referral_key"),
                                  on="referral_key", how="left"))
    pifu = pl.col("cohort").is_in(["pifu", "pifu_expired"])
    return rows.select(
        *_head(pl.col("source_referral_id")),
        pl.col("cohort").replace_strict(COHORT_TO_EPISODE, default=None, return_dtype=pl.String)
        .alias("e_episode_status"),
        pl.col("cohort").alias("e_cohort"),
        pl.col("cohort_reason").alias("e_cohort_reason"),
        _date("received_date").alias("e_received_date"),
        pl.when(pifu).then(_date("pifu_expiry_date")).alias("e_pifu_expiry_date"),
        pl.col("request_id").alias("e_request_id"),
        pl.col("e_patient_id"),
    )


def expect_contacts(run: RunFolder, links: Links) -> pl.LazyFrame:
    """Encounter (attended) and Appointment (the rest): every contact row lineage ties to one."""
    # The contact's patient is its referral's (as the writer takes it); a contact without a
    # referral keeps its own.
    rows = links.rows(run, "contacts", ("Encounter", "Appointment"))
    rows = rows.join(keyed(links.referrals.select("referral_key", pl.col("patient_key").alias("referral_patient"),
                                                  "request_id", "episode_id"), rows, "referral_key"),
                     on="referral_key", how="left")
    rows = links.patient_of(rows.with_columns(pl.coalesce("referral_patient", "patient_key").alias("patient_key")))
    encounter = pl.col("fhir_type") == "Encounter"
    return rows.select(
        *_head(pl.col("contact_key")),
        pl.col("contact_key").alias("e_contact_key"),
        pl.col("contact_datetime").dt.strftime("%Y-%m-%dT%H:%M:%S").alias("e_contact_datetime"),
        _text("attendance").alias("e_attendance"),
        _text("contact_type").alias("e_contact_type"),
        pl.col("procedure").alias("e_procedure"),
        pl.when(encounter).then(_text("modality").replace_strict(MODALITY_TO_CLASS, default="face_to_face",
                                                                 return_dtype=pl.String)).alias("e_modality_class"),
        pl.col("site").alias("e_site"),
        pl.col("request_id").alias("e_request_id"),
        pl.when(encounter).then(pl.col("episode_id")).alias("e_episode_id"),
        pl.col("e_patient_id"),
    )


def expect_conditions(run: RunFolder, links: Links, cancer_code: str) -> pl.LazyFrame:
    """Condition: each clinical coded entry; and the cancer history of referral rows (its
    code is the configured one, recorded on the earliest such referral of the patient)."""
    codes = links.patient_of(links.rows(run, "codes", ("Condition",)))
    coded = codes.select(
        *_head(pl.lit(None, dtype=pl.String)),
        _text("code_system").alias("e_code_system"),
        pl.col("code").alias("e_code"),
        pl.col("display").alias("e_display"),
        _date("recorded_date").alias("e_recorded_date"),
        pl.col("value").alias("e_value"),
        pl.col("e_patient_id"),
    )
    refs = links.patient_of(links.rows(run, "referrals", ("Condition",)))
    history = refs.select(
        *_head(pl.col("source_referral_id")),
        pl.lit("snomed").alias("e_code_system"),
        pl.lit(cancer_code).alias("e_code"),
        pl.lit(None, dtype=pl.String).alias("skip_display"),
        pl.col("received_date").min().over("fhir_id").dt.strftime("%Y-%m-%d").alias("e_recorded_date"),
        pl.lit(None, dtype=pl.String).alias("skip_value"),
        pl.col("e_patient_id"),
    ).with_columns(pl.lit(None, dtype=pl.String).alias("e_display"), pl.lit(None, dtype=pl.String).alias("e_value"),
                   pl.lit(True).alias("cancer_row"))
    coded = coded.with_columns(pl.lit(None, dtype=pl.String).alias("skip_display"),
                               pl.lit(None, dtype=pl.String).alias("skip_value"), pl.lit(False).alias("cancer_row"))
    return pl.concat([coded, history.select(coded.collect_schema().names())], how="vertical")


def expect_consents(run: RunFolder, links: Links) -> pl.LazyFrame:
    """Consent: the sharing or opt-out entries (codes rows), the patient rows of patient
    settings and of blocks no coded entry explains.

    ``sharing.parquet`` (every sharing entry, with the one that ``decides``) gives each
    patient's deciding entry as ``e_deciding`` (``system:code|date`` for a coded entry,
    ``source:value|date`` for a setting) and its source as ``e_source``; without it (an
    older run) the deciding entry need only be one of the patient's coded entries.
    """
    blocked = (links.scan(run, "exceptions.parquet").filter(pl.col("flag_code") == "SHARING_BLOCK")
               .select("patient_key").unique().with_columns(pl.lit(True).alias("blocked")))
    label = _text("code_system") + ":" + pl.col("code").str.strip_chars()
    entry = label + "|" + _date("recorded_date").fill_null("")
    # memory: the consent rows of one round-trip bucket (its codes rows, then its patient and
    # code rows), collected: each is read by several joins below, and left lazy the plan
    # scanned the bucket's files ~85 times (6x the CPU of collecting, and polars' blocking I/O
    # threads near their limit; benchmarks/roundtrip.md)
    codes = links.rows(run, "codes", ("Consent",)).with_columns(
        label.alias("label"), _date("recorded_date").alias("date"), entry.alias("entry"),
        pl.col("source_file").alias("record_file")).collect().lazy()
    codes = codes.join(keyed(links.patients.select("patient_key", "survivor_key"), codes, "patient_key"),
                       on="patient_key", how="left")
    per_resource = codes.group_by("fhir_id").agg(pl.col("entry").unique().alias("entries"),
                                                  pl.col("date").max().alias("latest"))
    codes = codes.join(per_resource, on="fhir_id", how="left")
    code_rows = links.patient_of(codes, "survivor_key").select(
        *_head(pl.lit(None, dtype=pl.String)), "survivor_key", "label", "entries", "latest", "e_patient_id")
    patients = links.rows(run, "patients", ("Consent",))
    patients = patients.join(keyed(links.patients.select("patient_key", "survivor_key"), patients, "patient_key"),
                             on="patient_key", how="left")
    patient_rows = links.patient_of(patients, "survivor_key").select(
        *_head(pl.col("source_patient_id")), "survivor_key", pl.lit(None, dtype=pl.String).alias("label"),
        pl.lit(None, dtype=pl.List(pl.String)).alias("entries"), pl.lit(None, dtype=pl.String).alias("latest"),
        "e_patient_id")
    # memory: the bucket's consent rows again (collected above, and why), with their Patients
    rows = pl.concat([code_rows, patient_rows], how="vertical").collect().lazy()
    rows = rows.join(keyed(blocked.rename({"patient_key": "survivor_key"}), rows, "survivor_key"),
                     on="survivor_key", how="left").with_columns(
        pl.col("blocked").fill_null(False))
    if not run.has("sharing.parquet"):
        return rows.with_columns(pl.lit(None, dtype=pl.String).alias("e_deciding"),
                                 pl.lit(None, dtype=pl.String).alias("e_source")).drop("survivor_key")
    entries = keyed(links.scan(run, "sharing.parquet"), rows, "patient_key", "survivor_key")
    coded = pl.col("source") == "coded_entry"
    deciding = entries.filter(pl.col("decides")).select(
        pl.col("patient_key").alias("survivor_key"),
        (pl.when(coded).then(pl.col("system")).otherwise(pl.col("source")) + ":" + pl.col("value") + "|"
         + _date("recorded_date").fill_null("")).alias("e_deciding"),
        pl.col("source").alias("e_source"))
    # The opt-out Consent carries every opt-out entry (coded, or a patient's setting as
    # patient_setting:value) and is dated by the latest of them.
    opt_outs = entries.filter(pl.col("kind") == "opt_out")
    latest = opt_outs.group_by(pl.col("patient_key").alias("survivor_key")).agg(
        _date("recorded_date").max().alias("opt_out_latest"))
    settings = keyed(links.scan(run, "sharing.parquet").filter((pl.col("kind") == "opt_out") & ~coded), rows,
                     ["source_file", "source_row"]).select(
        "source_file", "source_row", (pl.col("source") + ":" + pl.col("value")).alias("setting_label"))
    return (rows.join(deciding, on="survivor_key", how="left").join(latest, on="survivor_key", how="left")
            .join(settings, on=["source_file", "source_row"], how="left")
            .with_columns(pl.coalesce("label", "setting_label").alias("label"),
                          pl.coalesce("opt_out_latest", "latest").alias("latest"))
            .drop("survivor_key", "opt_out_latest", "setting_label"))


def expect_flags(run: RunFolder, links: Links, flag_codes: tuple[str, ...]) -> pl.LazyFrame:
    """Flag: per flagged source row (the referral or patient row), the set of flag codes the
    run raised for that subject (among those sent as Flags) and, for a referral, its request."""
    # the whole file, never a bucket's (``Links.scan``): its rows are joined on the subject key
    exceptions = run.scan("exceptions.parquet").filter(pl.col("flag_code").cast(pl.String).is_in(list(flag_codes)))
    parts = []
    for table, subject_type, key, record in (("referrals", "referral", "referral_key", "source_referral_id"),
                                             ("patients", "patient", "patient_key", "source_patient_id")):
        rows = links.rows(run, table, ("Flag",))
        if table == "referrals":
            rows = rows.join(keyed(links.referrals.select("referral_key", "request_id"), rows, "referral_key"),
                             on="referral_key", how="left")
        else:
            rows = rows.with_columns(pl.lit(None, dtype=pl.String).alias("request_id"))
        raised = keyed(exceptions.filter(pl.col("subject_type") == subject_type), rows, "subject_key", key).group_by(
            "subject_key").agg(_text("flag_code").unique().sort().str.join(" ").alias("e_flag_codes"))
        rows = links.patient_of(rows).join(raised.select(pl.col("subject_key").alias(key), "e_flag_codes"), on=key,
                                           how="left")
        parts.append(rows.select(*_head(pl.col(record)), "e_flag_codes",
                                 pl.col("request_id").alias("e_request_id"), "e_patient_id"))
    return pl.concat(parts, how="vertical")
