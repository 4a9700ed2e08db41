"""Derived features: the columns rule packs read beside the canonical ones.

Inputs are the canonical LazyFrames (``patients``, ``referrals``, ``contacts``, ``codes``),
the rule pack (only for its codelists: dummy slot names, red-flag codes, out-of-scope
reason phrases, sharing codes) and the cut-over date T. Outputs are two LazyFrames:

- ``referral_features``: one row per referral — every canonical referral column plus the
  columns of ``REFERRAL_FEATURES``;
- ``patient_features``: one row per patient — every canonical patient column plus the
  sharing columns of ``PATIENT_FEATURES`` (the referral-derived patient columns are added
  by ``migrate.rules.cohorts``).

Contacts are aggregated with one ``group_by`` and codes with one join and one ``group_by``;
both are joined back on keys, so the cost is linear in the rows and no Python runs per
row. The feature schemas below are the contract ``migrate.rules.pack`` validates rule
conditions against before any data is read; a test keeps them equal to what is computed.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, datetime, time
from typing import TYPE_CHECKING

import polars as pl

from migrate import canonical, sharing
from migrate.matching import (
    in_codelist,
    keys_of,
    list_keys,
    phrase_pattern,
    text_keys,
    unmatched_elements,
)

if TYPE_CHECKING:
    from migrate.rules.model import RulePack


@dataclass(frozen=True)
class Feature:
    """A derived column: its polars type and what it means, in words for a clinical lead."""

    dtype: pl.DataType
    description: str
    codelists: tuple[str, ...] = ()  # pack codelists the feature reads (shown by explain)


_I, _B, _D, _S = pl.Int64(), pl.Boolean(), pl.Date(), pl.String()
_SLOTS = ("dummy_slot_names",)
_SHARING = ("sharing_dissent_codes", "sharing_consent_codes")
_RED_FLAG_LISTS = ("red_flag_codes", "not_red_flag_codes")

REFERRAL_FEATURES: dict[str, Feature] = {
    "cutover_date": Feature(_D, "the cut-over date T of this batch"),
    "open_at_cutover": Feature(_B, "status open, or closed with a closed_date after the cut-over "
                                   "(a referral closed after T was still open at T); never for a rejected one"),
    "attended_before_cutover": Feature(_B, "at least one attended contact (CSDS 5 or 6) dated on or before "
                                           "the cut-over, e-RS dummy slots excluded", _SLOTS),
    "attended_contact_count": Feature(_I, "number of attended contacts on or before the cut-over, "
                                          "dummy slots excluded", _SLOTS),
    "first_attended_date": Feature(_D, "date of the first attended contact on or before the cut-over", _SLOTS),
    "last_attended_date": Feature(_D, "date of the last attended contact on or before the cut-over", _SLOTS),
    "booked_after_cutover": Feature(_B, "at least one booked (future) contact dated on or after the cut-over day, "
                                        "e-RS dummy slots excluded", _SLOTS),
    "next_booked_date": Feature(_D, "date of the earliest booked contact on or after the cut-over day", _SLOTS),
    "dummy_slot_contacts": Feature(_I, "number of contacts in e-RS dummy slots (ignored for cohorts)", _SLOTS),
    "days_waiting": Feature(_I, "days from received_date to the cut-over"),
    "days_to_first_attendance": Feature(_I, "days from received_date to the first attended contact", _SLOTS),
    "days_since_post_op": Feature(_I, "days from post_op_date (surgery) to the cut-over; negative if surgery "
                                      "is after T"),
    "has_red_flag_code": Feature(_B, "one of the referral's red_flags is in the pack's red_flag_codes codelist",
                                 ("red_flag_codes",)),
    "unrecognised_red_flags": Feature(pl.List(_S), "the referral's red_flags values (as the extract wrote them) "
                                                   "that neither red_flag_codes nor not_red_flag_codes lists",
                                      _RED_FLAG_LISTS),
    "has_unrecognised_red_flag": Feature(_B, "at least one red_flags value is in no codelist "
                                             "(red_flag_codes, not_red_flag_codes)", _RED_FLAG_LISTS),
    "out_of_scope_phrase": Feature(_S, "the first out-of-scope phrase (codelist out_of_scope_reason_phrases) "
                                       "found in the referral reason text, matched as whole words, any case",
                                   ("out_of_scope_reason_phrases",)),
    "age_at_cutover": Feature(_I, "the patient's age in whole years on the cut-over date"),
}

PATIENT_FEATURES: dict[str, Feature] = {
    "age_at_cutover": Feature(_I, "the patient's age in whole years on the cut-over date"),
    "sharing_state": Feature(_S, "kind of the patient's latest sharing entry, from a coded entry, the patient's "
                                 "own setting or their practice's: dissent, consent, unrecognised (a setting value "
                                 "the profile does not list: treated as a dissent), or blank if none", _SHARING),
    "sharing_blocked": Feature(_B, "the latest sharing entry is a dissent or unrecognised (a same-day dissent and "
                                   "consent count as dissent; an undated dissent is never lifted)", _SHARING),
    "latest_sharing_code": Feature(_S, "the latest sharing entry as the extract wrote it: system:code of a coded "
                                       "entry, 'Column: value' of a patient setting, 'practice ODS, Column: value' "
                                       "of a practice setting", _SHARING),
    "latest_sharing_date": Feature(_D, "date of the latest sharing entry", _SHARING),
    "latest_sharing_source": Feature(_S, "where the latest sharing entry is, so the reviewer knows what to change "
                                         "where: coded_entry, patient_setting or practice_setting", _SHARING),
    "opt_out_recorded": Feature(_B, "a national data opt-out is recorded (evidence only: it does not "
                                    "apply to direct care and is not a sharing block)", ("opt_out_codes",)),
    "opt_out_codes": Feature(pl.List(_S), "each opt-out entry as written (system:code, or a setting's "
                                          "'Column: value')", ("opt_out_codes",)),
}

# Codelists the feature code reads by name; the pack must define them (validated).
FLAT_CODELISTS = ("dummy_slot_names", "red_flag_codes", "not_red_flag_codes", "out_of_scope_reason_phrases")
CODED_CODELISTS = tuple(sharing.CODELIST_KINDS)
# Read when present; a pack without them behaves as if they were empty.
OPTIONAL_CODELISTS = ("not_red_flag_codes",)
# A value may sit in at most one of these (a red flag cannot also be "not a red flag").
EXCLUSIVE_TEXT_CODELISTS = ("red_flag_codes", "not_red_flag_codes")
# Referral columns holding vocabulary that rules compare with text codelists: the rules see
# them (and each element of red_flags) in matching form, ``migrate.matching.text_key``,
# so ``body_site IN {codelists.spinal_body_sites}`` matches 'Lumbar Spine' and 'LUMBAR-SPINE'.
TEXT_COLUMNS = ("service_line", "referral_source", "closure_reason", "body_site")
TEXT_LIST_COLUMNS = ("red_flags",)


def referral_features(tables: Mapping[str, pl.LazyFrame], pack: RulePack, cutover: date) -> pl.LazyFrame:
    """Referrals with every ``REFERRAL_FEATURES`` column, one row per referral.

    ``tables`` must hold ``referrals``, ``contacts`` and ``patients`` (canonical columns).
    """
    t = pl.lit(cutover, dtype=pl.Date)
    contacts = _contact_summary(tables["contacts"], pack, cutover)
    ages = tables["patients"].select("patient_key", _age(cutover).alias("age_at_cutover"))
    red_flag_codes = pl.Series(pack.keys("red_flag_codes"), dtype=pl.String)
    known = pack.keys("red_flag_codes") + pack.keys("not_red_flag_codes")
    refs = tables["referrals"].select(canonical.REFERRALS.field_names)
    frame = (
        refs.join(contacts, on="referral_key", how="left")
        .join(ages, on="patient_key", how="left")
        .with_columns(
            pl.col("attended_contact_count", "dummy_slot_contacts").fill_null(0),
            pl.col("booked_contact_count").fill_null(0),
        )
        .with_columns(
            t.alias("cutover_date"),
            # A referral closed after T was still open at T; a closed one without a date was
            # closed when the extract (as of T) was taken, so it is not open.
            (
                (pl.col("status") == "open")
                | ((pl.col("status") == "closed") & (pl.col("closed_date") > t))
            ).fill_null(False).alias("open_at_cutover"),
            (pl.col("attended_contact_count") > 0).alias("attended_before_cutover"),
            (pl.col("booked_contact_count") > 0).alias("booked_after_cutover"),
            _days(pl.col("received_date"), t).alias("days_waiting"),
            _days(pl.col("received_date"), pl.col("first_attended_date")).alias("days_to_first_attendance"),
            _days(pl.col("post_op_date"), t).alias("days_since_post_op"),
            list_keys(pl.col("red_flags")).list.eval(pl.element().is_in(red_flag_codes.implode())).list.any()
            .fill_null(False).alias("has_red_flag_code"),
            # Fail safe: a value no codelist knows is shown as written, for a clinician to judge.
            unmatched_elements(pl.col("red_flags"), known).alias("unrecognised_red_flags"),
            _first_phrase(pack.codelist("out_of_scope_reason_phrases")).alias("out_of_scope_phrase"),
        )
        .with_columns(pl.col("unrecognised_red_flags").list.len().gt(0).alias("has_unrecognised_red_flag"))
    )
    vocabulary = [keys_of(pl.col(c)).alias(c) for c in TEXT_COLUMNS] + [
        list_keys(pl.col(c)).alias(c) for c in TEXT_LIST_COLUMNS]
    return frame.with_columns(vocabulary).select(*canonical.REFERRALS.field_names, *REFERRAL_FEATURES)


def _contact_summary(contacts: pl.LazyFrame, pack: RulePack, cutover: date) -> pl.LazyFrame:
    """Per referral: attended and booked counts and dates around T, dummy slots counted apart.

    One group_by over all contacts. Attendance is by calendar day (a contact on T itself
    counts as on or before T); a booking on T itself counts as booked care, because it had
    not happened when the extract was taken — the choice that keeps a patient in active care.
    """
    is_dummy = in_codelist(pl.col("slot_name"), pack.keys("dummy_slot_names"))
    day = pl.col("contact_datetime").dt.date()
    start_of_t = datetime.combine(cutover, time())
    attended = (pl.col("attendance") == "attended") & (day <= cutover) & ~is_dummy
    booked = (pl.col("attendance") == "booked") & (pl.col("contact_datetime") >= start_of_t) & ~is_dummy
    # Only contacts that count for something are grouped (cancellations, DNAs and past
    # bookings are dropped first): the group_by is the costliest step of the stage.
    return (
        contacts.select("referral_key", "contact_datetime", "attendance", "slot_name")
        .with_columns(pl.when(attended).then(day).alias("_attended"), pl.when(booked).then(day).alias("_booked"),
                      is_dummy.alias("_dummy"))
        .filter(pl.col("referral_key").is_not_null()
                & (pl.col("_attended").is_not_null() | pl.col("_booked").is_not_null() | pl.col("_dummy")))
        .group_by("referral_key")
        .agg(
            pl.col("_attended").count().cast(pl.Int64).alias("attended_contact_count"),
            pl.col("_attended").min().alias("first_attended_date"),
            pl.col("_attended").max().alias("last_attended_date"),
            pl.col("_booked").count().cast(pl.Int64).alias("booked_contact_count"),
            pl.col("_booked").min().alias("next_booked_date"),
            pl.col("_dummy").sum().cast(pl.Int64).alias("dummy_slot_contacts"),
        )
    )


def patient_features(tables: Mapping[str, pl.LazyFrame], pack: RulePack, cutover: date,
                     decided: pl.LazyFrame | None = None) -> pl.LazyFrame:
    """Patients with every ``PATIENT_FEATURES`` column, one row per patient.

    The sharing columns are ``migrate.sharing.decide`` over the patient's sharing entries:
    ``tables["sharing"]`` when given (the pipeline gives every source's entries, re-pointed
    to survivors), else the coded entries and patient settings of ``tables``. The latest
    entry wins; ties and gaps lean towards blocking (see ``migrate.sharing``). Opt-outs
    are kept as evidence only. ``decided``: that decision when the caller has it already
    (``migrate.rules.stage.classify`` computes it once for these columns and the sharing state).
    """
    if decided is None:
        decided = sharing.decide(tables["sharing"] if "sharing" in tables else sharing.entries(tables, pack))
    decided = decided.select("patient_key", *(c for c in PATIENT_FEATURES if c in sharing.DECISION_SCHEMA
                                                             and c != "sharing_blocked"))
    patients = tables["patients"].select(canonical.PATIENTS.field_names)
    frame = (
        patients.join(decided, on="patient_key", how="left")
        .with_columns(
            _age(cutover).alias("age_at_cutover"),
            (pl.col("sharing_state").is_in(list(sharing.BLOCKING))).fill_null(False).alias("sharing_blocked"),
            pl.col("opt_out_codes").is_not_null().alias("opt_out_recorded"),
        )
    )
    return frame.select(*canonical.PATIENTS.field_names, *PATIENT_FEATURES)


def _days(start: pl.Expr, end: pl.Expr) -> pl.Expr:
    """Whole days from ``start`` to ``end`` (dates); null when either is null."""
    return (end - start).dt.total_days().cast(pl.Int64)


def _age(cutover: date) -> pl.Expr:
    """Age in whole years on ``cutover`` from ``birth_date`` (a birthday on T counts)."""
    born = pl.col("birth_date")
    before_birthday = (born.dt.month().cast(pl.Int64) * 100 + born.dt.day().cast(pl.Int64)) > (
        cutover.month * 100 + cutover.day
    )
    return (pl.lit(cutover.year, dtype=pl.Int64) - born.dt.year().cast(pl.Int64) - before_birthday.cast(pl.Int64))


def _first_phrase(phrases: tuple[str, ...]) -> pl.Expr:
    """The first of ``phrases`` found in reason_text as whole words, as the pack writes it
    (lower-cased); null if none.

    Text and phrases are compared in matching form (``migrate.matching``), so 'Lumps-and-
    bumps' finds 'lumps and bumps'; a phrase must stand as whole words, so 'lump' does not
    match 'lumpectomy'. One regex, built once (``matching.phrase_pattern``).
    """
    keyed = {k: p.strip().lower() for p, k in zip(phrases, text_keys(phrases), strict=True) if k}
    if not keyed:
        return pl.lit(None, dtype=pl.String)
    found = pl.col("reason_text").str.to_lowercase().str.extract(phrase_pattern(keyed), 1)
    return keys_of(found).replace_strict(keyed, default=None, return_dtype=pl.String)
