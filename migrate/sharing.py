"""Sharing entries from wherever the extract keeps them, and the one rule that decides a block.

A patient's wish about sharing their record reaches an extract in three places
(docs/domain.md section 4):

- **coded entries** (``codes``): dissent, consent and national data opt-out codes, matched
  with the rule pack's codelists (``sharing_dissent_codes``, ``sharing_consent_codes``,
  ``opt_out_codes``) in matching form (``migrate.matching.code_label``);
- **patient settings**: a patient column such as SystmOne's ``Sharing Out: No`` with the
  date it was set, read by the profile's ``sharing_out`` field (its values mapped to
  dissent, consent or opt-out by the profile; any other value is ``unrecognised``);
- **practice settings** (``--practice-sharing``): a GP practice that does not share out
  at all; every patient registered there (``gp_ods_code``) gets a dissent entry dated when
  the practice set it. A practice that shares out makes no entry: it never lifts a
  patient's own dissent.

Each becomes a row of one frame (``ENTRY_SCHEMA``) that keeps its lineage: the source
file, row and column it came from. ``decide`` applies the one rule to all of them: the
latest entry per patient wins; a dissent beats a consent on the same day; an undated
dissent is the latest entry and an undated consent the earliest; an ``unrecognised``
value counts as a dissent (fail safe: a withheld record can be released once someone has
looked, a released one cannot be recalled). Opt-outs are evidence only: the national data
opt-out does not apply to direct care, so they never decide.

Outputs are LazyFrames; no Python runs per row.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING, Any

import polars as pl

from migrate.canonical import SHARING_SETTING
from migrate.matching import code_label
from migrate.staging import sorted_by_ranges
from migrate.streamexpr import mapped

if TYPE_CHECKING:
    from migrate.rules.model import RulePack

SOURCES = ("coded_entry", "patient_setting", "practice_setting")
KINDS = ("dissent", "consent", "opt_out", "unrecognised")
BLOCKING = ("dissent", "unrecognised")
# What an entry is about: record_sharing entries decide whether the clinical history is
# handed over; data_opt_out entries (the national data opt-out) concern uses beyond
# individual care and never block direct care.
SCOPE_OF_KIND = {"dissent": "record_sharing", "consent": "record_sharing", "unrecognised": "record_sharing",
                 "opt_out": "data_opt_out"}
# Kinds of coded entry, from the pack codelists of the same names.
CODELIST_KINDS: dict[str, str] = {
    "sharing_dissent_codes": "dissent",
    "sharing_consent_codes": "consent",
    "opt_out_codes": "opt_out",
}
ENTRY_SCHEMA: dict[str, pl.DataType] = {
    "patient_key": pl.String(),
    "kind": pl.String(),            # KINDS
    "scope": pl.String(),           # record_sharing | data_opt_out
    "source": pl.String(),          # SOURCES
    "label": pl.String(),           # as the extract wrote it: read2:9Nd1. | Sharing Out: No | practice Y01234, Shares: N
    "system": pl.String(),          # coded entries: the code system
    "value": pl.String(),           # the code, or the setting's value, as written
    "recorded_date": pl.Date(),
    "table": pl.String(),           # where the row is: codes | patients | practice_sharing
    "source_file": pl.String(),
    "source_row": pl.Int64(),
    "source_column": pl.String(),   # settings: the column(s) the value came from
}
# The decision per patient (``decide``).
DECISION_SCHEMA: dict[str, pl.DataType] = {
    "patient_key": pl.String(),
    "sharing_state": pl.String(),           # kind of the deciding entry: dissent | consent | unrecognised
    "sharing_blocked": pl.Boolean(),
    "latest_sharing_code": pl.String(),     # the deciding entry's label
    "latest_sharing_date": pl.Date(),
    "latest_sharing_source": pl.String(),   # SOURCES
    "latest_system": pl.String(),
    "latest_value": pl.String(),
    "latest_column": pl.String(),
    "latest_file": pl.String(),
    "latest_row": pl.Int64(),
    "opt_out_codes": pl.List(pl.String()),  # labels of opt-out entries (evidence only), or null
}
# The rows of a patient's setting entries in the state frame (``state``): lineage of the Consents.
ENTRY_ROW = pl.Struct({"table": pl.String(), "source_file": pl.String(), "source_row": pl.Int64()})
OPT_OUT_ROW = pl.Struct({"table": pl.String(), "source_file": pl.String(), "source_row": pl.Int64(),
                         "value": pl.String(), "column": pl.String(), "recorded_date": pl.Date()})
_FAR_FUTURE, _FAR_PAST = date(9999, 12, 31), date(1, 1, 1)
# On the same day and kind, the patient's own entry is named as the deciding one.
_SOURCE_RANK = {"practice_setting": 0, "coded_entry": 1, "patient_setting": 2}


def empty_entries() -> pl.LazyFrame:
    return pl.LazyFrame(schema=ENTRY_SCHEMA)


def _with(frame: pl.LazyFrame, columns: Mapping[str, pl.DataType]) -> pl.LazyFrame:
    """``frame`` with each of ``columns`` it lacks as nulls (frames built in tests may carry
    only the canonical columns, without source_file and source_row)."""
    have = set(frame.collect_schema().names())
    return frame.with_columns(pl.lit(None, dtype=t).alias(c) for c, t in columns.items() if c not in have)


_SOURCE = {"source_file": pl.String(), "source_row": pl.Int64()}


def coded_entries(codes: pl.LazyFrame, pack: RulePack) -> pl.LazyFrame:
    """Codes rows that are sharing or opt-out entries (``ENTRY_SCHEMA``).

    Matched on ``system:code`` in matching form (Read codes without padding dots);
    labelled as the extract wrote them (``read2:9Nd1.``), for evidence and the Consent.
    """
    labels = [(label, kind) for codelist, kind in CODELIST_KINDS.items() for label in pack.keys(codelist)]
    lookup = pl.LazyFrame({"_key": [lb for lb, _ in labels], "kind": [k for _, k in labels]},
                          schema={"_key": pl.String, "kind": pl.String})
    system = pl.col("code_system").cast(pl.String)
    code = pl.col("code").str.strip_chars()
    return (
        _with(codes, _SOURCE).with_columns(code_label(pl.col("code_system"), pl.col("code")).alias("_key"))
        .join(lookup, on="_key", how="inner")
        .select(_entry(pl.col("kind"), "coded_entry", system + ":" + code, system, code, pl.col("recorded_date"),
                       "codes", pl.lit(None, dtype=pl.String)))
    )


def setting_entries(patients: pl.LazyFrame) -> pl.LazyFrame:
    """Each patient row's own sharing setting (``sharing_out``) as an entry."""
    s = pl.col("sharing_out")
    column = s.struct.field("column")
    label = pl.concat_str([column.fill_null("sharing_out"), pl.lit(": "), s.struct.field("value")])
    return _with(patients, {**_SOURCE, "sharing_out": SHARING_SETTING}).filter(s.is_not_null()).select(
        _entry(s.struct.field("kind"), "patient_setting", label, pl.lit(None, dtype=pl.String),
               s.struct.field("value"), s.struct.field("date"), "patients", column))


def practice_entries(patients: pl.LazyFrame, practices: pl.LazyFrame) -> pl.LazyFrame:
    """A dissent (or unrecognised) entry for every patient registered at a practice whose
    setting is one, dated when the practice set it; lineage is the practice's row.

    ODS codes are compared trimmed and in upper case. Consent and opt-out settings make no
    entry: a practice that shares out does not lift a patient's own dissent.
    """
    s = pl.col("sharing_out")
    ods = pl.col("ods_code").str.strip_chars().str.to_uppercase()
    settings = _with(practices, _SOURCE).filter(s.struct.field("kind").is_in(list(BLOCKING))).select(
        ods.alias("_ods"), "ods_code", "sharing_out", "source_file", "source_row")
    registered = patients.select("patient_key", pl.col("gp_ods_code").str.strip_chars().str.to_uppercase()
                                 .alias("_ods")).filter(pl.col("_ods").is_not_null())
    column = s.struct.field("column")
    label = pl.concat_str([pl.lit("practice "), pl.col("ods_code"), pl.lit(", "), column.fill_null("sharing_out"),
                           pl.lit(": "), s.struct.field("value")])
    return registered.join(settings, on="_ods", how="inner").select(
        _entry(s.struct.field("kind"), "practice_setting", label, pl.lit(None, dtype=pl.String),
               s.struct.field("value"), s.struct.field("date"), "practice_sharing", column))


def _entry(kind: pl.Expr, source: str, label: pl.Expr, system: pl.Expr, value: pl.Expr, recorded: pl.Expr,
           table: str, column: pl.Expr) -> list[pl.Expr]:
    return [
        pl.col("patient_key"), kind.alias("kind"),
        mapped(kind, SCOPE_OF_KIND, None, pl.String()).alias("scope"),  # streams (migrate/streamexpr.py)
        pl.lit(source).alias("source"), label.alias("label"), system.alias("system"), value.alias("value"),
        recorded.cast(pl.Date).alias("recorded_date"), pl.lit(table).alias("table"), pl.col("source_file"),
        pl.col("source_row"), column.alias("source_column"),
    ]


def entries(tables: Mapping[str, pl.LazyFrame], pack: RulePack, practices: pl.LazyFrame | None = None,
            all_patients: pl.LazyFrame | None = None) -> pl.LazyFrame:
    """Every sharing entry of ``tables`` (``patients``, ``codes``) and of ``practices``.

    ``all_patients`` (default ``tables["patients"]``) are the patient rows whose settings
    and registrations count: give every source patient, merged ones included, and re-point
    the result to survivors (the pipeline does), so no record's setting is lost in a merge.
    """
    patients = tables["patients"] if all_patients is None else all_patients
    parts = [coded_entries(tables["codes"], pack), setting_entries(patients)]
    if practices is not None:
        parts.append(practice_entries(patients, practices))
    return pl.concat([p.select(list(ENTRY_SCHEMA)).cast(ENTRY_SCHEMA) for p in parts],  # type: ignore[arg-type]
                     how="vertical")


def decide(entries: pl.LazyFrame) -> pl.LazyFrame:
    """Per patient with an entry, the state its entries decide (``DECISION_SCHEMA``).

    The latest dissent, consent or unrecognised entry wins (module docstring): entries are
    ordered by date (an undated blocking entry last, an undated consent first), then a
    blocking entry after a consent on the same day, then the patient's own entry after a
    practice's, then the label — so the same extract always names the same deciding entry.
    """
    blocking = pl.col("kind").is_in(list(BLOCKING))
    order = (pl.when(blocking).then(pl.col("recorded_date").fill_null(_FAR_FUTURE))
             .otherwise(pl.col("recorded_date").fill_null(_FAR_PAST)))
    rank = mapped(pl.col("source"), _SOURCE_RANK, 0, pl.Int64())  # streams, unlike replace_strict
    ordered = entries.filter(pl.col("kind") != "opt_out").with_columns(
        order.alias("_order"), blocking.alias("_blocking"), rank.alias("_rank"))
    keys = ("_order", "_blocking", "_rank", "label", "source_file", "source_row")
    # One sort of the entries, then the last of each patient's: no sort per group and column.
    decided = (ordered.sort("patient_key", *keys, nulls_last=False).group_by("patient_key", maintain_order=True)
               .agg(pl.col("kind").last().alias("sharing_state"), pl.col("label").last().alias("latest_sharing_code"),
                    pl.col("recorded_date").last().alias("latest_sharing_date"),
                    pl.col("source").last().alias("latest_sharing_source"),
                    pl.col("system").last().alias("latest_system"), pl.col("value").last().alias("latest_value"),
                    pl.col("source_column").last().alias("latest_column"),
                    pl.col("source_file").last().alias("latest_file"), pl.col("source_row").last().alias("latest_row"))
               .with_columns(pl.col("sharing_state").is_in(list(BLOCKING)).alias("sharing_blocked")))
    opt_outs = (entries.filter(pl.col("kind") == "opt_out").group_by("patient_key")
                .agg(pl.col("label").unique().sort().alias("opt_out_codes")))
    return (decided.join(opt_outs, on="patient_key", how="full", coalesce=True)
            .with_columns(pl.col("sharing_blocked").fill_null(False))
            .select(list(DECISION_SCHEMA)).cast(DECISION_SCHEMA))  # type: ignore[arg-type]


def state(entries: pl.LazyFrame, decided: pl.LazyFrame | None = None) -> pl.LazyFrame:
    """Per patient with an entry, the sharing state dispositions and FHIR read: ``blocked``,
    the deciding entry (``latest_code``, ``latest_date``, ``latest_source``,
    ``latest_system``, ``latest_value``, ``latest_column``: ``decide``); ``entry_rows``, the
    source rows of the patient's setting entries (patient and practice settings: each is
    lineage of the patient's sharing Consent; coded entries are codes rows); and
    ``opt_out_rows``, the patient's opt-out settings (each an item of the opt-out Consent).
    ``decided``: ``decide(entries)`` when the caller has it already (the rules stage
    computes it once for the rules' features and this state)."""
    setting = pl.col("source") != "coded_entry"
    rows = (entries.filter(setting & (pl.col("kind") != "opt_out")).group_by("patient_key")
            .agg(pl.struct("table", "source_file", "source_row").unique().sort().alias("entry_rows")))
    opt_outs = (entries.filter(setting & (pl.col("kind") == "opt_out")).group_by("patient_key")
                .agg(pl.struct("table", "source_file", "source_row", "value", pl.col("source_column").alias("column"),
                               "recorded_date").unique().sort().alias("opt_out_rows")))
    decided = decide(entries) if decided is None else decided
    return decided.join(rows, on="patient_key", how="left").join(opt_outs, on="patient_key", how="left").select(
        "patient_key", pl.col("sharing_blocked").alias("blocked"), pl.col("latest_sharing_code").alias("latest_code"),
        pl.col("latest_sharing_date").alias("latest_date"), pl.col("latest_sharing_source").alias("latest_source"),
        "latest_system", "latest_value", "latest_column", "latest_file", "latest_row",
        pl.col("entry_rows").cast(pl.List(ENTRY_ROW)), pl.col("opt_out_rows").cast(pl.List(OPT_OUT_ROW)))


def survivor_entries(tables: Mapping[str, pl.LazyFrame], pack: RulePack, merges: pl.DataFrame,
                     practices: pl.LazyFrame | None = None) -> pl.LazyFrame:
    """Every source's sharing entries of every source patient record (merged ones too, so
    no record's setting is lost in a merge), re-pointed to their survivor (``merges``:
    patient_key -> survivor_key). What a run keeps as ``sharing.parquet`` and the rules
    stage decides from."""
    from migrate.identity.merges import repoint

    return repoint(entries(tables, pack, practices), merges)


ORDER = ("patient_key", "source_file", "source_row", "label")  # sharing.parquet's row order (nulls first)
RANGE_PATIENTS = 1_000_000  # patients' entries marked and sorted at a time (``deciding_by_ranges``)


def deciding(entries: pl.LazyFrame, decided: pl.LazyFrame) -> pl.LazyFrame:
    """``entries`` with ``decides``: true for the entry that decided its patient's state
    (``decided``: ``state``'s frame), in a stable order — what ``sharing.parquet`` holds."""
    return _marked(entries, decided).sort(*ORDER, nulls_last=False)


def deciding_by_ranges(entries: pl.LazyFrame, decided: pl.LazyFrame, folder: Path,
                       range_patients: int = RANGE_PATIENTS) -> pl.LazyFrame:
    """``deciding``'s rows, a range of patient keys at a time (``staging.sorted_by_ranges``):
    a scan of parts under ``folder``, what a run writes as ``sharing.parquet``.

    # memory: one range's entries (about ``range_patients`` patients') marked and sorted; the
    # whole sort held every entry, +1.1 GB at 5M patients (the write stage's peak).
    """
    def marked(inside: Callable[[str], pl.Expr]) -> pl.LazyFrame:
        return _marked(entries.filter(inside("patient_key")), decided.filter(inside("patient_key")))

    schema = entries.collect_schema() | {"decides": pl.Boolean()}
    return sorted_by_ranges(marked, decided.select("patient_key"), "patient_key", ORDER, folder, range_patients,
                            schema)


def _marked(entries: pl.LazyFrame, decided: pl.LazyFrame) -> pl.LazyFrame:
    """``entries`` with ``decides`` (``deciding``), unsorted."""
    chosen = decided.filter(pl.col("latest_code").is_not_null() | pl.col("latest_row").is_not_null()).select(
        "patient_key", pl.col("latest_file").alias("source_file"), pl.col("latest_row").alias("source_row"),
        pl.col("latest_code").alias("label"), pl.lit(True).alias("decides"))
    return entries.join(chosen, on=["patient_key", "source_file", "source_row", "label"], how="left",
                        nulls_equal=True).with_columns(pl.col("decides").fill_null(False))


def summary(marked: pl.DataFrame) -> dict[str, Any]:
    """For ``reconciliation.json`` and ``handover check``, from the entries with ``decides``
    (``deciding``; a run's ``sharing.parquet``): patients blocked, by the source of the
    entry that decided; entries by source and kind; every unrecognised value with its
    source, column and entries (each is treated as a dissent: never silent)."""
    decisive = marked.filter(pl.col("decides"))
    blocked = decisive.filter(pl.col("kind").is_in(list(BLOCKING)))
    by_source = dict(blocked.group_by("source").len().iter_rows())
    kinds = marked.group_by("source", "kind").len().sort("source", "kind")
    unknown = (marked.filter(pl.col("kind") == "unrecognised")
               .group_by("source", "source_column", "value").agg(pl.len().alias("entries"),
                                                                 pl.col("patient_key").n_unique().alias("patients"))
               .sort("source", "source_column", "value"))
    return {
        "patients_with_entries": decisive.get_column("patient_key").n_unique(),
        "blocked": blocked.get_column("patient_key").n_unique(),
        "blocked_by_source": {s: int(by_source.get(s, 0)) for s in SOURCES},
        "blocked_unrecognised": blocked.filter(pl.col("kind") == "unrecognised").height,
        "entries": {s: {k: int(n) for src, k, n in kinds.iter_rows() if src == s} for s in SOURCES},
        "unrecognised": [{"source": s, "column": c, "value": v, "entries": int(n), "patients": int(p)}
                         for s, c, v, n, p in unknown.iter_rows()],
    }
