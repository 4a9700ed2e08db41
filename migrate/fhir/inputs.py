"""What the resource builders read: one batch of patients, their rows and their ids.

``plan_patients`` orders the patients once (by survivor key, so the plan does not depend
on row order) and numbers their bundles; ``gather`` collects, for the patients of some
bundles, every row the builders need with the survivor's key, the bundle number and the
resource ids already joined on. Merged patients (identity's ``survivor_key``) map to the
survivor: their referrals, contacts and codes hang off the survivor's Patient.

The contract with the stages before (docs/architecture.md): canonical ``patients``,
``referrals``, ``contacts``, ``codes``; ``cohorts`` (referral_key, cohort, cohort_reason);
``exceptions`` (flag_code, severity, subject_type, subject_key, patient_key, rule_id,
evidence, action); ``sharing`` (patient_key, blocked, latest_code, latest_date; optionally
the deciding entry's ``latest_source``, ``latest_system``, ``latest_value``,
``latest_column`` and ``entry_rows``, the rows of the patient's setting entries: see
``migrate.sharing.state``); optional ``derived_priority`` (referral_key, priority, reason).
``check_inputs`` reports every missing column at once before any row is read.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import polars as pl

from migrate.errors import ConfigError, HandoverError
from migrate.fhir.batches import Staged as Staged, stage as stage  # where they lived before (bundle.py, partitions.py)
from migrate.fhir.ids import namespace, with_ids
from migrate.fhir.options import PRIORITY_RANK, FhirOptions, SharingCodes
from migrate.fhir.template import Template
from migrate.matching import code_label
from migrate.sharing import ENTRY_ROW, OPT_OUT_ROW
from migrate.staging import SortedKeys
from migrate.streamexpr import mapped

# Order of resource types inside a patient's part of a bundle (and of NDJSON files).
RESOURCE_ORDER: tuple[str, ...] = ("Organization", "Patient", "Consent", "Condition", "ServiceRequest",
                                   "EpisodeOfCare", "Encounter", "Appointment", "Flag", "Provenance")

REQUIRED: dict[str, tuple[str, ...]] = {
    "patients": ("patient_key", "source_patient_id", "nhs_number", "nhs_number_status", "family_name",
                 "given_names", "birth_date", "sex", "address", "postcode", "gp_ods_code", "phone",
                 "source_file", "source_row"),
    "referrals": ("referral_key", "source_referral_id", "patient_key", "ubrn", "received_date", "service_line",
                  "referral_source", "assigned_priority", "transfer_list", "status", "closed_date", "closure_reason",
                  "pifu_expiry_date", "history_of_cancer", "red_flags", "body_site", "reason_text",
                  "source_file", "source_row"),
    "contacts": ("contact_key", "referral_key", "contact_datetime", "attendance", "contact_type", "modality",
                 "procedure", "site", "slot_name", "source_file", "source_row"),
    "codes": ("patient_key", "code_system", "code", "display", "recorded_date", "value", "source_file",
              "source_row"),
    "cohorts": ("referral_key", "cohort", "cohort_reason"),
    "exceptions": ("flag_code", "severity", "subject_type", "subject_key", "patient_key", "rule_id", "evidence",
                   "action"),
    "sharing": ("patient_key", "blocked", "latest_code", "latest_date"),
    "derived_priority": ("referral_key", "priority", "reason"),
}


@dataclass(frozen=True)
class Context:
    """Options plus what is derived from them once: the id namespace."""

    options: FhirOptions
    ns: uuid.UUID

    @classmethod
    def of(cls, options: FhirOptions) -> Context:
        return cls(options, namespace(options.identifier_base, options.source_system))

    @property
    def codes(self) -> SharingCodes:
        return self.options.codes


@dataclass(frozen=True)
class Inputs:
    """The rows of one batch of patients, eager, each with ``survivor_key``, ``bundle_no``
    and ``patient_id`` (the survivor's Patient id)."""

    patients: pl.DataFrame
    referrals: pl.DataFrame
    contacts: pl.DataFrame
    codes: pl.DataFrame
    exceptions: pl.DataFrame
    sharing: pl.DataFrame  # one row per survivor: survivor_key, blocked, latest_*, entry_rows (SHARING_COLUMNS)


def check_inputs(frames: Mapping[str, pl.LazyFrame | None]) -> None:
    """Every required column of every given frame is present; else one ConfigError listing all."""
    problems = []
    for name, frame in frames.items():
        if frame is None:
            continue
        present = set(frame.collect_schema().names())
        missing = [c for c in REQUIRED[name] if c not in present]
        if missing:
            problems.append(f"{name}: missing column(s) {', '.join(missing)}")
    if problems:
        raise ConfigError("the FHIR stage's inputs lack columns", problems)


def plan_patients(patients: pl.LazyFrame, bundle_size: int) -> pl.DataFrame:
    """patient_key, survivor_key, bundle_no for every patient row.

    Survivors are sorted by key and cut into bundles of ``bundle_size``; a merged row goes
    with its survivor. A survivor that is not itself a patient, or is merged in turn, is a
    broken identity result: raised, never guessed.
    """
    names = patients.collect_schema().names()
    survivor = pl.col("survivor_key").fill_null(pl.col("patient_key")) if "survivor_key" in names \
        else pl.col("patient_key")
    # It is numbered in one sort (a survivor's bundle from its place among the survivors,
    # counted where the sorted survivor key changes) and checked against the survivors' own
    # keys held sorted (``SortedKeys``): the hash set, join and second sort that did it held
    # +0.8 GB over the plan at 5M patients.
    # memory: held: the plan is two key columns per patient (~0.1 GB at 1M): every bundle number
    # comes from the one global order, and each batch and partition reads its slice.
    plan = (patients.select("patient_key", survivor.alias("survivor_key"))
            .collect(engine="streaming").sort("survivor_key", "patient_key"))
    own = SortedKeys(plan.filter(pl.col("patient_key") == pl.col("survivor_key"))["patient_key"])
    broken = plan.filter(~own.contains(plan["survivor_key"]))
    if broken.height:
        raise HandoverError("survivor_key names a patient that is not a survivor",
                            [f"patient_key {k} -> survivor_key {s}" for k, s in broken.head(20).iter_rows()])
    survivor_no = (pl.col("survivor_key") != pl.col("survivor_key").shift(1)).fill_null(True).cum_sum() - 1
    return plan.with_columns((survivor_no.cast(pl.Int64) // bundle_size + 1).alias("bundle_no"))


def gather(tables: Mapping[str, pl.LazyFrame], cohorts: pl.LazyFrame, exceptions: pl.LazyFrame,
           sharing: pl.LazyFrame, derived_priority: pl.LazyFrame | None, plan: pl.DataFrame,
           ctx: Context) -> Inputs:
    """The rows of the patients in ``plan`` (a slice of ``plan_patients``), ids joined on."""
    ns = ctx.ns
    keys = with_ids(plan, ns, "patient", "survivor_key", "patient_id").lazy()
    # The plan's survivor_key (nulls resolved) replaces identity's own column.
    # memory: held: this slice of ``plan`` only (one FHIR batch of patients): its patients', referrals', contacts',
    # codes' and flags' rows below, each joined to the slice's keys
    patients = tables["patients"].drop("survivor_key", "bundle_no", strict=False).join(
        keys, on="patient_key", how="inner").collect(engine="streaming")
    # memory: the slice's referrals (above)
    referrals = (
        tables["referrals"].join(keys, on="patient_key", how="inner")
        .join(cohorts.select("referral_key", pl.col("cohort").cast(pl.String), "cohort_reason"),
              on="referral_key", how="left")
        .join(_priorities(derived_priority), on="referral_key", how="left")
        .collect(engine="streaming")
    )
    referrals = with_ids(referrals, ns, "referral", "referral_key", "request_id")
    referrals = with_ids(referrals, ns, "episode", "referral_key", "episode_id")
    linked = (
        tables["contacts"].filter(pl.col("referral_key").is_not_null()).drop("patient_key", strict=False)
        .join(referrals.lazy().select("referral_key", "survivor_key", "patient_key", "bundle_no", "patient_id",
                                      "request_id", "episode_id", "cohort", pl.col("status").alias("referral_status")),
              on="referral_key", how="inner")
    )
    # A contact the profile allows without a referral belongs to its patient alone: it
    # becomes an Encounter or Appointment without basedOn or episodeOfCare.
    parentless = (
        tables["contacts"].filter(pl.col("referral_key").is_null()).join(keys, on="patient_key", how="inner")
        .with_columns(pl.lit(None, dtype=pl.String).alias(c) for c in ("request_id", "episode_id", "cohort"))
        .with_columns(pl.lit(None, dtype=referrals.schema["status"]).alias("referral_status"))
    )
    if "patient_key" in tables["contacts"].collect_schema().names():
        linked = pl.concat([linked, parentless.select(linked.collect_schema().names())])
    # memory: the slice's contacts and codes (see above)
    contacts = linked.collect(engine="streaming")
    codes = tables["codes"].join(keys, on="patient_key", how="inner").collect(engine="streaming")
    flagged = (
        exceptions.filter(pl.col("flag_code").is_in(list(ctx.options.flag_codes)))
        .join(keys, on="patient_key", how="inner")
        .join(referrals.lazy().select(pl.col("referral_key").alias("subject_key"), "request_id",
                                      pl.col("source_file").alias("ref_file"), pl.col("source_row").alias("ref_row")),
              on="subject_key", how="left")
        .collect(engine="streaming")  # memory: the slice's flags of the emitted codes (above)
    )
    return Inputs(patients, referrals, contacts, codes, flagged, _sharing(sharing, keys))


def _priorities(derived: pl.LazyFrame | None) -> pl.LazyFrame:
    schema = {"referral_key": pl.String, "derived_priority": pl.String, "priority_reason": pl.String}
    if derived is None:
        return pl.LazyFrame(schema=schema)
    # One per referral: the highest priority wins (then the reason, for a stable choice).
    rank = mapped(pl.col("derived_priority"), PRIORITY_RANK, -1, pl.Int64())  # streams, unlike replace_strict
    return (derived.select("referral_key", pl.col("priority").cast(pl.String).alias("derived_priority"),
                           pl.col("reason").cast(pl.String).alias("priority_reason"))
            .sort("referral_key", rank, "priority_reason", descending=[False, True, False], nulls_last=True)
            .unique("referral_key", keep="first", maintain_order=True))


# The sharing frame's optional columns, with what their absence means (coded entries only).
SHARING_OPTIONAL: dict[str, pl.DataType] = {
    "latest_source": pl.String(), "latest_system": pl.String(), "latest_value": pl.String(),
    "latest_column": pl.String(), "entry_rows": pl.List(ENTRY_ROW), "opt_out_rows": pl.List(OPT_OUT_ROW),
    "overridden": pl.Boolean(),  # a reviewer's applied override of the block (``stage.with_overrides``)
}
SHARING_COLUMNS = ("blocked", "latest_code", "latest_date", *SHARING_OPTIONAL)
_ROW_LISTS = ("entry_rows", "opt_out_rows")
_ANY = ("overridden",)  # true for the survivor when true for any of its records


def _sharing(sharing: pl.LazyFrame, keys: pl.LazyFrame) -> pl.DataFrame:
    """One sharing state per survivor: the latest entry over the merged records wins, and
    the rows of every setting entry of the merged records are kept (``entry_rows``).

    Ties and gaps lean towards blocking, as in ``migrate.sharing``: an undated dissent is
    the latest entry, an undated consent the earliest, and a dissent wins a same-day tie.
    """
    names = sharing.collect_schema().names()
    blocked = pl.col("blocked").fill_null(False)
    order = (pl.when(blocked).then(pl.col("latest_date").fill_null(date(9999, 12, 31)))
             .otherwise(pl.col("latest_date").fill_null(date(1, 1, 1))))
    optional = [pl.col(c) if c in names else pl.lit(None, dtype=t).alias(c) for c, t in SHARING_OPTIONAL.items()]
    # memory: one sharing state per survivor of ``keys`` (the batch's slice of the plan)
    return (
        sharing.select("patient_key", blocked.alias("blocked"), pl.col("latest_code").cast(pl.String),
                       pl.col("latest_date").cast(pl.Date), *optional)
        .join(keys.select("patient_key", "survivor_key"), on="patient_key", how="inner")
        .with_columns(order.alias("_order"))
        .group_by("survivor_key")
        .agg(pl.col(*(c for c in SHARING_COLUMNS if c not in (*_ROW_LISTS, *_ANY))).sort_by("_order", "blocked")
             .last(),
             *(pl.col(c).fill_null(False).any() for c in _ANY),
             *(pl.col(c).list.explode(keep_nulls=False, empty_as_null=False).drop_nulls() for c in _ROW_LISTS))
        .sort("survivor_key")
        .collect()  # memory: one row per survivor of the slice
    )


def sharing_from_codes(tables: Mapping[str, pl.LazyFrame], cutover: date,
                       pack_path: Path | None = None) -> pl.LazyFrame:
    """The ``sharing`` frame of the coded entries and patient settings of ``tables``
    (``patients``, ``codes``) with a rule pack's codelists (the default pack unless
    ``pack_path``), by the rules stage's own code (``migrate.rules.stage.sharing_state``,
    what a run uses)."""
    from migrate.rules import load_pack
    from migrate.rules.stage import sharing_state

    return sharing_state(tables, load_pack(pack_path), cutover)


def labelled_codes(codes: pl.DataFrame, sharing_codes: SharingCodes) -> pl.DataFrame:
    """``codes`` with ``label`` (system:code) and ``kind``: dissent, consent, opt_out or clinical."""
    # Classified in matching form (Read codes without padding dots); labelled as written.
    key = code_label(pl.col("code_system"), pl.col("code"))
    label = pl.col("code_system").cast(pl.String) + ":" + pl.col("code").str.strip_chars()
    kind = (pl.when(key.is_in(list(sharing_codes.dissent))).then(pl.lit("dissent"))
            .when(key.is_in(list(sharing_codes.consent))).then(pl.lit("consent"))
            .when(key.is_in(list(sharing_codes.opt_out))).then(pl.lit("opt_out"))
            .otherwise(pl.lit("clinical")))
    return codes.with_columns(label.alias("label"), kind.alias("kind"))


# --- what each builder returns ----------------------------------------------------------------
RESOURCE_COLUMNS = ("bundle_no", "patient_key", "fhir_type", "fhir_id", "json", "shape", "problems", "refs")
LINEAGE_COLUMNS = ("source_file", "source_row", "table", "patient_key", "disposition", "fhir_type", "fhir_id")


@dataclass(frozen=True)
class Part:
    """What one builder made: resources (``RESOURCE_COLUMNS``) and lineage (``LINEAGE_COLUMNS``)."""

    resources: pl.DataFrame
    lineage: pl.DataFrame


def emit(frame: pl.DataFrame, template: Template, id_column: str) -> pl.DataFrame:
    """Render ``template`` over ``frame``: one resource row per frame row.

    Collected with the streaming engine so the JSON is built on every core. The value
    checks give one boolean per row in that pass; the ``problems`` texts are made only for
    the rows where a check fails or the JSON is null (few), by the same template.
    """
    # memory: one resource type's rows of one batch (``frame``), built with their JSON
    built = (
        template.frame(frame.lazy())
        .select(pl.col("bundle_no"), pl.col("survivor_key").alias("patient_key"),
                pl.lit(template.resource_type).alias("fhir_type"), pl.col(id_column).alias("fhir_id"),
                *template.columns())
        .collect(engine="streaming")
    )
    failed = ~built["passed"] | built["json"].is_null()
    problems = pl.repeat(None, built.height, dtype=pl.String, eager=True).alias("problems")
    if failed.any():
        # memory: the failing rows' problem texts only (few)
        texts = template.frame(frame.filter(failed).lazy()).select(template.problems()).collect().to_series()
        problems = problems.scatter(failed.arg_true(), texts)
    return built.with_columns(problems).select(RESOURCE_COLUMNS)


def lineage(frame: pl.DataFrame, table: str | pl.Expr, fhir_type: str, id_column: str,
            disposition: str | pl.Expr = "migrated") -> pl.DataFrame:
    """One lineage row per frame row: its source row to the resource ``id_column`` names."""
    disp = pl.lit(disposition) if isinstance(disposition, str) else disposition
    source = pl.lit(table) if isinstance(table, str) else table
    return frame.select("source_file", "source_row", source.alias("table"), "patient_key",
                        disp.alias("disposition"), pl.lit(fhir_type).alias("fhir_type"),
                        pl.col(id_column).alias("fhir_id"))
