"""The ground truth: what a correct run must find, evaluated from the generated rows.

Referrals are built to an intended cohort and cases are planted on purpose, but the truth
files are not written from those intentions: the cohort and flag rules of domain.md §2-§3
are evaluated here over the clean rows (everything a correct run keeps), and the result is
checked against the intentions (``check``), so a generator bug cannot hide in the truth.

The rules as read here (each unambiguous for this extract; extract.py avoids the cases
where readings could differ):
- attended: CSDS 5 or 6, on or before T (by date), not in an e-RS dummy slot; booked: 0
  after T. Out of scope: body_site lump, or hip with "intra-articular hip injection" in
  the reason. A patient's cohort is the most active of their (merged) referrals.
- indicator: any red_flags code, or history_of_cancer Y on a spinal site. UNDER_PRIORITISED:
  open, priority 1, indicator. OVER_PRIORITISED: open, priority 2, no indicator.
  URGENT_WAIT_BREACH: open, priority 2, received over 14 days before T, no attendance
  within 14 days of receipt. POST_OP_NOT_PRIORITISED: open, priority 1, surgery in
  [T - 84 days, T]. CANCER_HISTORY_NOT_RECORDED / AWAITING_INJECTION: open, field blank / Y.
  PIFU_EXPIRED: cohort pifu_expired. WRONG_TRANSFER_LIST: label set and not the cohort
  (a pifu label on pifu_expired excepted). Referral flags name the referral.
- Patient flags name the surviving patient (an exact duplicate merges into the lower id):
  SHARING_BLOCK when the latest dissent/consent entry is a dissent (opt-outs are not
  entries); SHARING_BLOCK_ACTIVE_CARE when also in transition or holding an open urgent
  referral; ON_TWO_LISTS for two distinct labels. Identity flags name source patient
  rows: NHS_NUMBER_INVALID / _MISSING; DUPLICATE_NHS_NUMBER "Pa+Pb" for every pair of
  rows sharing a valid number with the same birth date and sex (merged: exact);
  NHS_NUMBER_CONFLICT "Pa+Pb" for a pair sharing a valid number whose birth date or sex
  differ (not merged: the worked example's P05/P06); PROBABLE_DUPLICATE "Pa+Pb" for the
  planted demographic near-matches; ALREADY_AT_TARGET for rows whose NHS number is in
  target-index.csv.
"""

from __future__ import annotations

import polars as pl

from migrate.synth.codes import CONSENT, DISSENT
from migrate.synth.people import nhs_check_digits

COHORT_RANK = ("transition", "backlog", "pifu", "pifu_expired", "closed", "rejected")
SPINAL = ("lumbar_spine", "thoracic_spine", "cervical_spine")
POST_OP_WINDOW_DAYS = 84
URGENT_TARGET_DAYS = 14
FLAG_OF_PLANT: dict[str, tuple[str, ...]] = {
    "UNDER_PRIORITISED": ("under_prioritised_cauda_equina", "under_prioritised_cancer_spine"),
    "CANCER_HISTORY_NOT_RECORDED": ("cancer_history_blank",),
    "POST_OP_NOT_PRIORITISED": ("post_op_routine",),
    "AWAITING_INJECTION": ("awaiting_injection",),
    "URGENT_WAIT_BREACH": ("urgent_wait_breach",),
    "OVER_PRIORITISED": ("over_prioritised",),
    "OUT_OF_SCOPE": ("out_of_scope_lump", "out_of_scope_hip_injection"),
    "PIFU_EXPIRED": ("pifu_expired",),
    "WRONG_TRANSFER_LIST": ("wrong_list_transition_dna_only", "wrong_list_pifu_booked_after_cutover",
                            "wrong_list_backlog_attended"),
    "ON_TWO_LISTS": ("on_two_lists",),
    "NHS_NUMBER_INVALID": ("nhs_number_invalid",),
    "NHS_NUMBER_MISSING": ("nhs_number_missing", "duplicate_probable"),
    "DUPLICATE_NHS_NUMBER": ("duplicate_exact",),
    "NHS_NUMBER_CONFLICT": ("duplicate_conflict",),
    "PROBABLE_DUPLICATE": ("duplicate_probable",),
    "ALREADY_AT_TARGET": ("already_at_target",),
    "SHARING_BLOCK": ("sharing_dissent", "sharing_consent_then_dissent"),
}


def _pid(col: str) -> pl.Expr:
    return pl.format("P{}", pl.col(col).cast(pl.String).str.zfill(7))


def referral_state(refs: pl.DataFrame, contacts: pl.DataFrame, T: int) -> pl.DataFrame:
    """Per referral: rid, derived cohort, first attended day (null if never).

    ``refs`` as built by extract.build_activity; ``contacts`` integer-coded (rid, ts, code, slot).
    """
    day = pl.col("ts") // 1440
    real = (pl.col("code").is_in([5, 6])) & (day <= T) & (pl.col("slot") < 0)
    per = contacts.lazy().group_by("rid").agg(
        day.filter(real).min().alias("first_attended"),
        ((pl.col("code") == 0) & (day > T)).any().alias("booked_after"),
    )
    received = pl.col("received_date").cast(pl.Int64)
    oos = (pl.col("body_site") == "lump") | ((pl.col("body_site") == "hip") & pl.col("reason").str.to_lowercase()
                                             .str.contains("intra-articular hip injection", literal=True))
    expiry = pl.col("pifu_expiry_date").cast(pl.Int64)
    attended = pl.col("first_attended").is_not_null()
    cohort = (
        pl.when((pl.col("status") == "rejected") | oos).then(pl.lit("rejected"))
        .when(pl.col("status") == "closed").then(pl.lit("closed"))
        .when(~attended).then(pl.lit("backlog"))
        .when(expiry.is_not_null() & ~pl.col("booked_after").fill_null(False))
        .then(pl.when(expiry >= T).then(pl.lit("pifu")).otherwise(pl.lit("pifu_expired")))
        .otherwise(pl.lit("transition"))
    )
    return refs.lazy().join(per, on="rid", how="left").select(
        "rid", cohort.alias("derived"), (pl.col("first_attended") - received).alias("days_to_attend"),
        oos.alias("out_of_scope")).sort("rid").collect()


def referral_flags(refs: pl.DataFrame, state: pl.DataFrame, T: int) -> pl.DataFrame:
    """(rid, flag_code) for every referral flag of domain.md §3."""
    r = refs.select("rid", "status", "priority", "red_flags", "history_of_cancer", "body_site", "received_date",
                    "surgery_date", "transfer_list", "awaiting_injection").join(state, on="rid", how="left")
    open_ = pl.col("status") == "open"
    indicator = (pl.col("red_flags").fill_null("") != "") | (
        (pl.col("history_of_cancer") == "Y") & pl.col("body_site").is_in(SPINAL))
    received = pl.col("received_date").cast(pl.Int64)
    surgery = pl.col("surgery_date").cast(pl.Int64)
    label = pl.col("transfer_list")
    rules = {
        "UNDER_PRIORITISED": open_ & (pl.col("priority") == 1) & indicator,
        "OVER_PRIORITISED": open_ & (pl.col("priority") == 2) & ~indicator,
        "URGENT_WAIT_BREACH": open_ & (pl.col("priority") == 2) & (received + URGENT_TARGET_DAYS < T)
        & ~(pl.col("days_to_attend").fill_null(10**6) <= URGENT_TARGET_DAYS),
        "POST_OP_NOT_PRIORITISED": open_ & (pl.col("priority") == 1) & surgery.is_between(T - POST_OP_WINDOW_DAYS, T),
        "CANCER_HISTORY_NOT_RECORDED": open_ & pl.col("history_of_cancer").is_null(),
        "AWAITING_INJECTION": open_ & (pl.col("awaiting_injection") == "Y"),
        "OUT_OF_SCOPE": pl.col("out_of_scope"),
        "PIFU_EXPIRED": pl.col("derived") == "pifu_expired",
        "WRONG_TRANSFER_LIST": label.is_not_null() & (label != pl.col("derived"))
        & ~((label == "pifu") & (pl.col("derived") == "pifu_expired")),
    }
    parts = [r.filter(rule.fill_null(False)).select("rid", pl.lit(code).alias("flag_code")) for code, rule in rules.items()]
    return pl.concat(parts)


def normalised_nhs(col: str = "nhs_number") -> pl.Expr:
    """The written NHS number without spaces and dashes."""
    return pl.col(col).str.replace_all(r"[ -]", "")


def _valid_nhs(frame: pl.DataFrame) -> pl.Series:
    digits = frame.select(normalised_nhs()).to_series()
    ten = digits.str.contains(r"^\d{10}$").fill_null(False)
    numbers = digits.filter(ten).cast(pl.Int64).to_numpy()
    ok = nhs_check_digits(numbers // 10) == numbers % 10
    valid = pl.Series([False] * frame.height)
    return valid.scatter(ten.arg_true(), pl.Series(ok))


def patient_flags(refs: pl.DataFrame, state: pl.DataFrame, codes: pl.DataFrame, patients: pl.DataFrame,
                  survivor: pl.DataFrame, probable: pl.DataFrame, target: pl.DataFrame) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(patient flags as subject_id/flag_code, patient cohorts as pid/cohort).

    ``survivor`` maps pid -> survivor pid; ``probable`` holds planted (a, b) near-matches.
    """
    r = refs.select("rid", "pid", "transfer_list", "status", "priority").join(
        state.select("rid", "derived"), on="rid").join(survivor, on="pid").with_columns(
        pl.col("derived").replace_strict({c: i for i, c in enumerate(COHORT_RANK)}, return_dtype=pl.Int64).alias("rank"))
    per = r.group_by("survivor").agg(
        pl.col("rank").min(),
        pl.col("transfer_list").drop_nulls().n_unique().alias("lists"),
        ((pl.col("status") == "open") & (pl.col("priority") == 2)).any().alias("urgent"),
    ).with_columns(pl.col("rank").replace_strict(dict(enumerate(COHORT_RANK)), return_dtype=pl.String).alias("cohort"))
    kind = {c[1]: "dissent" for c in DISSENT} | {c[1]: "consent" for c in CONSENT}
    latest = codes.join(survivor, on="pid").filter(pl.col("code").is_in(list(kind))).sort("recorded_date").group_by(
        "survivor").agg(pl.col("code").last()).filter(pl.col("code").replace_strict(kind, default="") == "dissent")
    blocked = per.join(latest.select("survivor"), on="survivor", how="semi")
    valid = _valid_nhs(patients)
    rows = patients.with_columns(normalised_nhs().alias("nhs"), valid.alias("valid"))
    shared = rows.filter("valid").sort("pid").group_by("nhs").agg("pid", "birth_date", "sex").filter(
        pl.col("pid").list.len() > 1)
    pairs = shared.select(pl.col("pid").list.first().alias("a"), pl.col("pid").list.last().alias("b"),
                          ((pl.col("birth_date").list.n_unique() > 1) | (pl.col("sex").list.n_unique() > 1))
                          .alias("conflict"))
    at_target = rows.filter("valid").join(target.select(pl.col("nhs_number").alias("nhs")), on="nhs", how="semi")
    parts = [
        blocked.select(_pid("survivor").alias("subject_id"), pl.lit("SHARING_BLOCK").alias("flag_code")),
        blocked.filter((pl.col("cohort") == "transition") | pl.col("urgent")).select(
            _pid("survivor").alias("subject_id"), pl.lit("SHARING_BLOCK_ACTIVE_CARE").alias("flag_code")),
        per.filter(pl.col("lists") > 1).select(_pid("survivor").alias("subject_id"), pl.lit("ON_TWO_LISTS").alias("flag_code")),
        rows.filter(pl.col("nhs").is_not_null() & ~pl.col("valid")).select(
            _pid("pid").alias("subject_id"), pl.lit("NHS_NUMBER_INVALID").alias("flag_code")),
        rows.filter(pl.col("nhs").is_null()).select(_pid("pid").alias("subject_id"),
                                                    pl.lit("NHS_NUMBER_MISSING").alias("flag_code")),
        pairs.select(pl.concat_str([_pid("a"), _pid("b")], separator="+").alias("subject_id"),
                     pl.when("conflict").then(pl.lit("NHS_NUMBER_CONFLICT")).otherwise(pl.lit("DUPLICATE_NHS_NUMBER"))
                     .alias("flag_code")),
        probable.select(pl.concat_str([_pid("a"), _pid("b")], separator="+").alias("subject_id"),
                        pl.lit("PROBABLE_DUPLICATE").alias("flag_code")),
        at_target.select(_pid("pid").alias("subject_id"), pl.lit("ALREADY_AT_TARGET").alias("flag_code")),
    ]
    return pl.concat(parts), per.select(pl.col("survivor").alias("pid"), "cohort").sort("pid")


def all_flags(refs: pl.DataFrame, state: pl.DataFrame, patient: pl.DataFrame, T: int) -> pl.DataFrame:
    """Every flag, as truth/flags.csv: subject_type, subject_id, flag_code, sorted."""
    ref = referral_flags(refs, state, T).select(
        pl.lit("referral").alias("subject_type"),
        pl.format("R{}", pl.col("rid").cast(pl.String).str.zfill(7)).alias("subject_id"), "flag_code")
    pat = patient.select(pl.lit("patient").alias("subject_type"), "subject_id", "flag_code")
    return pl.concat([ref, pat]).sort("subject_type", "subject_id", "flag_code")


def check(refs: pl.DataFrame, state: pl.DataFrame, flags: pl.DataFrame, planted: dict[str, int]) -> None:
    """Raise RuntimeError unless derived cohorts equal the intended ones and every flag
    count equals the count of the cases planted to raise it (nothing unplanted fires)."""
    wrong = refs.select("rid", "cohort", "kind").join(state, on="rid").filter(pl.col("cohort") != pl.col("derived"))
    problems = [f"referral R{rid:07d} ({kind or 'clean'}): intended {want}, derived {got}"
                for rid, want, kind, got, *_ in wrong.head(10).iter_rows()]
    counts = dict(flags.group_by("flag_code").len().iter_rows())
    for code, kinds in FLAG_OF_PLANT.items():
        want = sum(planted[k] for k in kinds)
        if counts.get(code, 0) != want:
            problems.append(f"{code}: {counts.get(code, 0)} raised, {want} planted")
    if problems:
        raise RuntimeError("synthetic extract failed its own check: " + "; ".join(problems))
