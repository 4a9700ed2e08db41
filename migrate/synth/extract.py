"""Referrals and contacts, each referral built to an intended cohort (domain.md §2).

A referral is made from a *recipe*: its received date, status, dates, and the pattern of
contacts that puts it in its cohort at the cut-over T (an attended contact on or before T
or not, a booking after T or not, a PIFU expiry before or after T). Planted clinical cases
are a recipe plus field changes (a red flag on a routine list, a blank cancer-history
field). Everything is drawn per recipe with numpy over all referrals at once.

Choices that keep the clean population free of flags nobody planted (see truth.py for the
rules as evaluated):
- urgent and two-week-wait referrals carry a red flag and are seen within 12 days; they
  only occur on the transition and PIFU lists (a backlog urgent referral has not been seen);
- routine referrals carry no red flag and history_of_cancer N; spinal body sites on a
  routine referral only for people under 48, so "age over 50 with new back pain" cannot
  apply whichever way a rule pack reads it;
- closed and rejected (history) referrals are routine, without flags, PIFU date or surgery
  in the post-op window; contacts after T are only bookings (code 0), never on T itself.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import polars as pl

from migrate.synth.codes import BLOCKED_GROUPS
from migrate.synth.people import NO_DATE, SPINE_AGE_LIMIT_DAYS, as_date
from migrate.synth.plan import (
    CLINICAL_KINDS,
    HISTORY_REFERRALS_MEAN,
    LISTS,
    OLD_SURGERY_RATE,
    REJECTED_SHARE,
    TWO_WEEK_WAIT_RATE,
    URGENT_RATE,
    Roles,
)

(BACKLOG, BACKLOG_URGENT, TRANSITION, TRANSITION_URGENT, PIFU, PIFU_URGENT, PIFU_EXPIRED, CLOSED, REJECTED,
 OUT_OF_SCOPE, BREACH_BACKLOG, BREACH_TRANSITION, DNA_ONLY, PIFU_BOOKED, DUMMY_ONLY, ATTENDED_ON_T,
 PIFU_EXPIRY_T) = range(17)
COHORT_OF = ("backlog", "backlog", "transition", "transition", "pifu", "pifu", "pifu_expired", "closed", "rejected",
             "rejected", "backlog", "transition", "backlog", "transition", "backlog", "transition", "pifu")
BASE = (BACKLOG, TRANSITION, PIFU)  # recipe per list index, as labelled
URGENT_OF = {TRANSITION: TRANSITION_URGENT, PIFU: PIFU_URGENT}
PLANT_RECIPE = {
    "pifu_expired": (PIFU_EXPIRED,) * 3,
    "wrong_list_transition_dna_only": (DNA_ONLY,) * 3,
    "wrong_list_pifu_booked_after_cutover": (PIFU_BOOKED,) * 3,
    "wrong_list_backlog_attended": (TRANSITION,) * 3,
    "dummy_slot_only": (DUMMY_ONLY,) * 3,
    "attended_on_cutover_date": (ATTENDED_ON_T,) * 3,
    "pifu_expiry_on_cutover_date": (PIFU_EXPIRY_T,) * 3,
    "urgent_wait_breach": (BREACH_BACKLOG, BREACH_TRANSITION, BREACH_TRANSITION),
    "over_prioritised": (BACKLOG_URGENT, TRANSITION_URGENT, PIFU_URGENT),
}

SERVICE_LINES = ("physio_tier1", "cats_tier2", "pain", "rheumatology", "podiatry", "hand_therapy")
SERVICE_RATES = (0.55, 0.20, 0.07, 0.08, 0.06, 0.04)
SOURCES = ("gp", "self", "consultant")
SOURCE_RATES = (0.70, 0.25, 0.05)
SITES = ("lumbar_spine", "thoracic_spine", "cervical_spine", "shoulder", "elbow", "hand", "hip", "knee", "ankle",
         "foot", "lump")
SITE_RATES = (0.20, 0.04, 0.10, 0.15, 0.04, 0.05, 0.12, 0.20, 0.05, 0.05, 0.0)
SPINE = (0, 1, 2)
NOT_SPINE = (3, 4, 5, 6, 7, 8, 9)
REASONS = (  # per body site; no red-flag words, no injection requests
    ("Lower back pain", "Mechanical low back pain", "Back stiffness"),
    ("Upper back pain", "Thoracic stiffness"),
    ("Neck pain", "Neck and shoulder stiffness"),
    ("Shoulder pain", "Reduced shoulder movement", "Stiff shoulder"),
    ("Tennis elbow", "Elbow pain"),
    ("Hand and wrist pain", "Trigger finger", "Thumb base pain"),
    ("Hip pain on walking", "Groin pain", "Hip stiffness"),
    ("Knee pain", "Knee pain on stairs", "Anterior knee pain"),
    ("Ankle pain", "Ankle stiffness"),
    ("Heel pain", "Forefoot pain", "Plantar heel pain"),
    ("Lump on back of hand", "Soft tissue lump on shoulder", "Ganglion on wrist"),
)
HIP_INJECTION_REASON = "Request for intra-articular hip injection"
RED_FLAGS = ("cauda_equina", "saddle_anaesthesia", "bladder_bowel_dysfunction", "progressive_neuro_deficit",
             "weight_loss", "night_pain", "fever", "immunosuppression", "iv_drug_use", "trauma", "osteoporosis",
             "corticosteroids", "inflammatory")
CAUDA_FLAGS = ("cauda_equina", "cauda_equina;saddle_anaesthesia", "cauda_equina;bladder_bowel_dysfunction")
CLOSURES = ("Discharged - treatment complete", "Discharged - goals met", "Discharged - patient choice",
            "Discharged - did not attend")
REJECTIONS = ("Rejected - insufficient information", "Rejected - redirected to secondary care")
# CSDS attendance codes before the cut-over: mostly attended, some DNA and cancellations.
PAST_CODES, PAST_RATES = np.array([5, 6, 7, 3, 2, 4]), np.array([0.80, 0.04, 0.02, 0.07, 0.04, 0.03])
MISS_CODES, MISS_RATES = np.array([3, 7, 2, 4]), np.array([0.50, 0.10, 0.25, 0.15])
CONTACT_TYPES = ("initial", "follow_up", "procedure")
MEDIA, MEDIUM_RATES = ("F2F", "TEL", "VID"), np.array([0.70, 0.25, 0.05])
DUMMY_SLOTS = ("DO NOT ATTEND", "ADMIN APPOINTMENT ONLY")
PAST_INJECTION_RATE = 0.03


@dataclass(frozen=True)
class Activity:
    """Referrals (string columns, ``rid``/``pid`` ints, ``cohort`` and ``kind`` as intended)
    and contacts (integer-coded; rendered to text chunk by chunk when written)."""

    referrals: pl.DataFrame
    contacts: pl.DataFrame


def _u(rng: np.random.Generator, lo: np.ndarray | int, hi: np.ndarray | int, size: int) -> np.ndarray:
    """Uniform integers in [lo, hi] inclusive (array bounds allowed)."""
    return np.asarray(np.floor(lo + rng.random(size) * (np.asarray(hi) - lo + 1)), dtype=np.int64)


def _specs(rng: np.random.Generator, roles: Roles, extra_label: dict[int, int], extra_history: np.ndarray
           ) -> dict[str, np.ndarray]:
    """One entry per referral: person (pid), recipe, label (-1 none), priority, plant kind."""
    n = roles.primary.size
    pid = np.arange(1, n + 1)
    kind = roles.clinical
    parts: list[dict[str, np.ndarray]] = []

    def add(p: np.ndarray, recipe: np.ndarray, label: np.ndarray, priority: np.ndarray, k: np.ndarray) -> None:
        parts.append({"pid": p, "recipe": recipe, "label": label, "priority": priority, "kind": k})

    recipe = np.array(BASE, dtype=np.int64)[roles.primary]
    priority = np.ones(n, dtype=np.int64)
    for name, by_label in PLANT_RECIPE.items():
        mask = kind == CLINICAL_KINDS.index(name)
        recipe[mask] = np.array(by_label)[roles.primary[mask]]
    for name in ("urgent_wait_breach", "over_prioritised"):
        priority[kind == CLINICAL_KINDS.index(name)] = 2
    # Clean urgent / two-week-wait referrals: transition and PIFU lists only (seen quickly).
    seen = (kind < 0) & (roles.primary > 0)
    draw = rng.random(n)
    urgent = seen & (draw < URGENT_RATE)
    unblocked = ~np.isin(roles.sharing, BLOCKED_GROUPS)
    two_week = seen & unblocked & (draw >= URGENT_RATE) & (draw < URGENT_RATE + TWO_WEEK_WAIT_RATE)
    priority[urgent], priority[two_week] = 2, 3
    quick = urgent | two_week
    recipe[quick] = np.where(recipe[quick] == TRANSITION, TRANSITION_URGENT, PIFU_URGENT)
    oos = np.isin(kind, [CLINICAL_KINDS.index("out_of_scope_lump"), CLINICAL_KINDS.index("out_of_scope_hip_injection")])
    add(pid, recipe, roles.primary.astype(np.int64), priority, np.where(oos, -1, kind).astype(np.int64))
    two = np.flatnonzero(roles.secondary >= 0)
    add(pid[two], np.array(BASE)[roles.secondary[two]], roles.secondary[two].astype(np.int64),
        np.ones(two.size, dtype=np.int64), np.full(two.size, -1))
    for name, code in (("out_of_scope_lump", -10), ("out_of_scope_hip_injection", -11)):
        who = np.flatnonzero(kind == CLINICAL_KINDS.index(name))
        add(pid[who], np.full(who.size, OUT_OF_SCOPE), np.full(who.size, -1), np.ones(who.size, dtype=np.int64),
            np.full(who.size, code))  # kind -10 / -11 marks the out-of-scope referral itself
    hist = rng.poisson(HISTORY_REFERRALS_MEAN, size=n)
    hp = np.repeat(pid, hist)
    add(hp, np.where(rng.random(hp.size) < REJECTED_SHARE, REJECTED, CLOSED), np.full(hp.size, -1),
        np.ones(hp.size, dtype=np.int64), np.full(hp.size, -1))
    # Extra source rows: an exact duplicate's own open referral repeats its person's list.
    lp = np.array(sorted(extra_label), dtype=np.int64)
    lab = np.array([extra_label[p] for p in lp], dtype=np.int64)
    add(lp, np.array(BASE)[lab] if lp.size else lp, lab, np.ones(lp.size, dtype=np.int64), np.full(lp.size, -1))
    add(extra_history, np.full(extra_history.size, CLOSED), np.full(extra_history.size, -1),
        np.ones(extra_history.size, dtype=np.int64), np.full(extra_history.size, -1))
    return {key: np.concatenate([p[key] for p in parts]).astype(np.int64) for key in parts[0]}


def _schedule(rng: np.random.Generator, recipe: np.ndarray, T: int) -> dict[str, np.ndarray]:
    """Per referral: received/closed/expiry days and the contact pattern of its recipe."""
    m = recipe.size
    s = {k: np.full(m, NO_DATE, dtype=np.int64) for k in ("received", "closed", "expiry", "first", "extra_hi")}
    for k in ("n_extra", "n_miss"):
        s[k] = np.zeros(m, dtype=np.int64)
    for k in ("booked", "dna_only", "on_t", "dummy"):
        s[k] = np.zeros(m, dtype=bool)

    def pick(*recipes: int) -> np.ndarray:
        return np.flatnonzero(np.isin(recipe, recipes))

    def attended_series(i: np.ndarray, recv_lo: int, recv_hi: int, gap_lo: int, gap_hi: int, extra: float) -> None:
        # received recv_lo..recv_hi days before T; first attended gap_lo..gap_hi days later
        # (and before T); a Poisson number of further contacts between then and T - 1.
        r = T - _u(rng, recv_lo, recv_hi, i.size)
        s["received"][i] = r
        s["first"][i] = r + _u(rng, gap_lo, np.minimum(gap_hi, T - 1 - r), i.size)
        s["n_extra"][i] = rng.poisson(extra, i.size)
        s["extra_hi"][i] = np.maximum(s["first"][i], T - 1)

    i = pick(BACKLOG)
    s["received"][i] = T - _u(rng, 2, 400, i.size)
    s["n_miss"][i] = rng.choice(3, size=i.size, p=[0.55, 0.35, 0.10])
    s["booked"][i] = rng.random(i.size) < 0.4
    i = pick(BACKLOG_URGENT)
    s["received"][i] = T - _u(rng, 2, 10, i.size)
    s["booked"][i] = rng.random(i.size) < 0.7
    attended_series(pick(TRANSITION), 30, 700, 1, 90, 3.0)
    attended_series(pick(TRANSITION_URGENT), 15, 700, 1, 12, 3.0)
    s["booked"][pick(TRANSITION, TRANSITION_URGENT)] = rng.random(pick(TRANSITION, TRANSITION_URGENT).size) < 0.6
    s["booked"][pick(PIFU_BOOKED)] = True
    attended_series(pick(PIFU, PIFU_EXPIRY_T, PIFU_BOOKED), 60, 600, 1, 60, 3.0)
    attended_series(pick(PIFU_URGENT), 60, 600, 1, 12, 3.0)
    i = pick(PIFU, PIFU_URGENT, PIFU_BOOKED)
    s["expiry"][i] = T + _u(rng, 1, 180, i.size)
    s["expiry"][pick(PIFU_EXPIRY_T)] = T
    i = pick(PIFU_EXPIRED)
    attended_series(i, 400, 700, 1, 60, 2.0)
    s["extra_hi"][i] = s["first"][i] + 120  # all care long before the window closed
    s["expiry"][i] = T - _u(rng, 1, 150, i.size)
    i = pick(CLOSED)
    r = T - _u(rng, 30, 730, i.size)
    closed = r + _u(rng, 14, np.minimum(240, T - 1 - r), i.size)
    s["received"][i], s["closed"][i] = r, closed
    s["first"][i] = r + _u(rng, 1, np.maximum(1, (closed - r) // 3), i.size)
    s["n_extra"][i] = rng.poisson(3.5, i.size)
    s["extra_hi"][i] = closed
    i = pick(REJECTED)
    s["received"][i] = T - _u(rng, 5, 730, i.size)
    s["closed"][i] = s["received"][i] + _u(rng, 1, 4, i.size)
    i = pick(OUT_OF_SCOPE)
    s["received"][i] = T - _u(rng, 2, 120, i.size)
    i = pick(BREACH_BACKLOG)
    s["received"][i] = T - _u(rng, 30, 200, i.size)
    s["n_miss"][i] = rng.choice(2, size=i.size)
    s["booked"][i] = rng.random(i.size) < 0.5
    attended_series(pick(BREACH_TRANSITION), 60, 400, 21, 45, 2.0)  # first seen 3+ weeks after receipt
    i = pick(DNA_ONLY)
    s["received"][i] = T - _u(rng, 20, 300, i.size)
    s["n_miss"][i], s["dna_only"][i] = 1, True
    s["booked"][i] = rng.random(i.size) < 0.5
    i = pick(DUMMY_ONLY)
    s["received"][i] = T - _u(rng, 10, 300, i.size)
    s["dummy"][i] = True
    s["booked"][i] = rng.random(i.size) < 0.3
    i = pick(ATTENDED_ON_T)
    s["received"][i] = T - _u(rng, 10, 200, i.size)
    s["on_t"][i] = True
    return s


def _contacts(rng: np.random.Generator, s: dict[str, np.ndarray], T: int, injection_booking: np.ndarray
              ) -> dict[str, np.ndarray]:
    """Contacts of every referral from its schedule: ref (referral index), day, minute, code,
    procedure flag and dummy slot (-1 none)."""
    parts: list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]] = []

    def add(ref: np.ndarray, day: np.ndarray, code: np.ndarray, proc: np.ndarray | None = None,
            slot: np.ndarray | None = None) -> None:
        parts.append((ref, day, code, np.zeros(ref.size, dtype=bool) if proc is None else proc,
                      np.full(ref.size, -1) if slot is None else slot))

    first = np.flatnonzero(s["first"] != NO_DATE)
    add(first, s["first"][first], np.where(rng.random(first.size) < 0.95, 5, 6))
    ref = np.repeat(np.arange(s["n_extra"].size), s["n_extra"])
    code = rng.choice(PAST_CODES, size=ref.size, p=PAST_RATES)
    add(ref, _u(rng, s["first"][ref], s["extra_hi"][ref], ref.size), code,
        (code == 5) & (rng.random(ref.size) < PAST_INJECTION_RATE))
    ref = np.repeat(np.arange(s["n_miss"].size), s["n_miss"])
    code = np.where(s["dna_only"][ref], 3, rng.choice(MISS_CODES, size=ref.size, p=MISS_RATES))
    add(ref, _u(rng, s["received"][ref] + 1, T - 1, ref.size), code)
    ref = np.flatnonzero(s["booked"])
    add(ref, T + _u(rng, 1, 120, ref.size), np.zeros(ref.size, dtype=np.int64), injection_booking[ref])
    ref = np.flatnonzero(s["on_t"])
    add(ref, np.full(ref.size, T), np.full(ref.size, 5))
    ref = np.flatnonzero(s["dummy"])
    add(ref, _u(rng, s["received"][ref] + 1, T - 1, ref.size), np.full(ref.size, 5), None,
        rng.integers(0, len(DUMMY_SLOTS), size=ref.size))
    out = {k: np.concatenate([p[j] for p in parts]) for j, k in enumerate(("ref", "day", "code", "proc", "slot"))}
    minute = 480 + 15 * rng.integers(0, 39, size=out["ref"].size)  # 08:00 to 17:30
    out["minute"] = np.where(s["on_t"][out["ref"]] & (out["day"] == T), 600, minute)
    return out


def _pool(values: tuple[str, ...]) -> dict[int, str]:
    return dict(enumerate(values))


def build_activity(rng: np.random.Generator, roles: Roles, birth_day: np.ndarray, extra_label: dict[int, int],
                   extra_history: np.ndarray, T: int, sites: tuple[str, ...]) -> Activity:
    """All referrals and contacts of the clean population.

    ``birth_day[pid]`` is each source patient's birth day number; ``extra_label`` maps an
    exact-duplicate row's pid to its person's list; ``extra_history`` lists the other
    duplicate rows, each given one closed referral. Referral ids follow (patient, received
    date); contact ids follow (referral, date-time).
    """
    spec = _specs(rng, roles, extra_label, extra_history)
    recipe, kind, priority = spec["recipe"], spec["kind"], spec["priority"]
    m = recipe.size
    s = _schedule(rng, recipe, T)

    def plant(name: str) -> np.ndarray:
        return np.asarray(kind == CLINICAL_KINDS.index(name), dtype=bool)

    injection = plant("awaiting_injection") & (rng.random(m) < 0.5)
    s["booked"] |= injection
    service = rng.choice(len(SERVICE_LINES), size=m, p=np.array(SERVICE_RATES))
    site = rng.choice(len(SITES), size=m, p=np.array(SITE_RATES))
    site = np.where(service == 4, rng.choice([8, 9], size=m), np.where(service == 5, rng.choice([4, 5], size=m), site))
    not_spine_p = np.array([SITE_RATES[i] for i in NOT_SPINE]) / sum(SITE_RATES[i] for i in NOT_SPINE)
    other = rng.choice(NOT_SPINE, size=m, p=not_spine_p)
    aged = (T - birth_day[spec["pid"]]) >= SPINE_AGE_LIMIT_DAYS
    site = np.where((priority == 1) & aged & np.isin(site, SPINE), other, site)
    hoc = np.zeros(m, dtype=np.int64)  # 0 N, 1 Y, 2 blank
    flag_pool = ("",) + RED_FLAGS + ("night_pain;weight_loss", "fever;immunosuppression", "trauma;osteoporosis")
    flags = np.zeros(m, dtype=np.int64)  # index into flag_pool + CAUDA_FLAGS; 0 = none
    quick = (priority > 1) & (kind != CLINICAL_KINDS.index("over_prioritised"))
    flags[quick] = rng.integers(1, len(flag_pool), size=int(quick.sum()))
    i = plant("under_prioritised_cauda_equina")
    flags[i], site[i] = len(flag_pool) + rng.integers(0, len(CAUDA_FLAGS), size=int(i.sum())), 0
    i = plant("under_prioritised_cancer_spine")
    hoc[i], site[i] = 1, rng.choice([0, 1], size=int(i.sum()))
    hoc[plant("cancer_history_blank")] = 2
    i = plant("cancer_history_not_spinal")
    hoc[i], site[i] = 1, other[i]
    surgery = np.full(m, NO_DATE, dtype=np.int64)
    old = (priority == 1) & (recipe != OUT_OF_SCOPE) & (rng.random(m) < OLD_SURGERY_RATE)
    surgery[old] = T - _u(rng, 200, 1500, int(old.sum()))
    i = plant("post_op_routine")
    surgery[i], site[i] = T - _u(rng, 7, 80, int(i.sum())), rng.choice([3, 6, 7], size=int(i.sum()))
    site[kind == -10], site[kind == -11] = 10, 6
    lengths = np.array([len(r) for r in REASONS])
    offsets = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    reason_pool = pl.Series([r for group in REASONS for r in group])
    reason = reason_pool.gather(offsets[site] + (rng.random(m) * lengths[site]).astype(np.int64))
    reason = reason.scatter(np.flatnonzero(kind == -11), HIP_INJECTION_REASON)
    reason = reason.scatter(np.flatnonzero(plant("under_prioritised_cauda_equina")), "Low back pain with saddle numbness")
    status = np.where(recipe == CLOSED, 1, np.where(recipe == REJECTED, 2, 0))
    closure = np.where(status == 1, rng.integers(0, len(CLOSURES), size=m),
                       np.where(status == 2, len(CLOSURES) + rng.integers(0, len(REJECTIONS), size=m), -1))
    ubrn = np.where(rng.random(m) < 0.6, rng.integers(10**11, 10**12, size=m), -1)
    kind_ix = np.where(kind >= 0, kind + 1, 0)
    kind_ix[kind == -10] = CLINICAL_KINDS.index("out_of_scope_lump") + 1
    kind_ix[kind == -11] = CLINICAL_KINDS.index("out_of_scope_hip_injection") + 1

    order = np.lexsort((np.arange(m), s["received"], spec["pid"]))
    rid_of = np.empty(m, dtype=np.int64)
    rid_of[order] = np.arange(1, m + 1)
    refs = pl.DataFrame({
        "rid": rid_of, "pid": spec["pid"], "ubrn": ubrn,
        "received_date": s["received"], "service_line": pl.Series(SERVICE_LINES).gather(service),
        "referral_source": pl.Series(SOURCES).gather(rng.choice(3, size=m, p=np.array(SOURCE_RATES))),
        "priority": priority.astype(np.int8), "label": spec["label"], "status": status, "closed": s["closed"],
        "closure": closure, "expiry": s["expiry"], "hoc": hoc,
        "red_flags": pl.Series(flag_pool + CAUDA_FLAGS).gather(flags).replace("", None),
        "body_site": pl.Series(SITES).gather(site), "surgery": surgery, "awaiting": plant("awaiting_injection"),
        "reason": reason, "cohort": pl.Series(COHORT_OF).gather(recipe),
        "kind": pl.Series(("",) + CLINICAL_KINDS).gather(kind_ix),
    }).sort("rid").select(
        "rid", "pid",
        pl.when(pl.col("ubrn") >= 0).then(pl.col("ubrn").cast(pl.String)).alias("ubrn"),
        as_date(pl.col("received_date")).alias("received_date"), "service_line", "referral_source", "priority",
        pl.col("label").replace_strict(_pool(LISTS), default=None, return_dtype=pl.String).alias("transfer_list"),
        pl.col("status").replace_strict(_pool(("open", "closed", "rejected")), return_dtype=pl.String),
        as_date(pl.col("closed")).alias("closed_date"),
        pl.col("closure").replace_strict(_pool(CLOSURES + REJECTIONS), default=None, return_dtype=pl.String)
        .alias("closure_reason"),
        as_date(pl.col("expiry")).alias("pifu_expiry_date"),
        pl.col("hoc").replace_strict({0: "N", 1: "Y"}, default=None, return_dtype=pl.String).alias("history_of_cancer"),
        "red_flags", "body_site", as_date(pl.col("surgery")).alias("surgery_date"),
        pl.when(pl.col("awaiting")).then(pl.lit("Y")).otherwise(pl.lit("N")).alias("awaiting_injection"),
        "reason", "cohort", "kind")

    c = _contacts(rng, s, T, injection)
    crid = rid_of[c["ref"]]
    ts = c["day"] * 1440 + c["minute"]
    corder = np.argsort((crid << 25) | ts, kind="stable")
    crid, ts = crid[corder], ts[corder]
    proc = c["proc"][corder]
    first = np.ones(crid.size, dtype=bool)
    first[1:] = crid[1:] != crid[:-1]
    medium = rng.choice(3, size=crid.size, p=MEDIUM_RATES)
    contacts = pl.DataFrame({
        # 32-bit ids and minutes since 1970 keep ten million contacts near 200 MB
        "cid": np.arange(1, crid.size + 1, dtype=np.int32), "rid": crid.astype(np.int32),
        "pid": spec["pid"][c["ref"][corder]].astype(np.int32), "ts": ts.astype(np.int32),
        "code": c["code"][corder].astype(np.int8),
        "ctype": np.where(proc, 2, np.where(first, 0, 1)).astype(np.int8),
        "medium": medium.astype(np.int8), "proc": proc,
        "site": np.where(medium == 0, rng.integers(0, len(sites), size=crid.size), -1).astype(np.int16),
        "slot": c["slot"][corder].astype(np.int8),
    })
    return Activity(refs, contacts)


def render_contacts(chunk: pl.DataFrame, sites: tuple[str, ...]) -> pl.DataFrame:
    """Integer-coded contacts as the contacts.csv columns (text and datetime)."""
    return chunk.select(
        pl.format("C{}", pl.col("cid").cast(pl.String).str.zfill(8)).alias("contact_id"),
        pl.format("R{}", pl.col("rid").cast(pl.String).str.zfill(7)).alias("referral_id"),
        pl.format("P{}", pl.col("pid").cast(pl.String).str.zfill(7)).alias("patient_id"),
        (pl.col("ts").cast(pl.Int64) * 60_000_000).cast(pl.Datetime("us")).alias("contact_datetime"),
        pl.col("code").alias("attendance_code"),
        pl.col("ctype").replace_strict(_pool(CONTACT_TYPES), return_dtype=pl.String).alias("contact_type"),
        pl.col("medium").replace_strict(_pool(MEDIA), return_dtype=pl.String).alias("medium"),
        pl.when(pl.col("proc")).then(pl.lit("injection")).alias("procedure"),
        pl.col("site").replace_strict(_pool(sites), default=None, return_dtype=pl.String).alias("site"),
        pl.col("slot").replace_strict(_pool(DUMMY_SLOTS), default=None, return_dtype=pl.String).alias("slot_name"),
    )


def render_referrals(chunk: pl.DataFrame) -> pl.DataFrame:
    """Referrals as the referrals.csv columns."""
    return chunk.select(
        pl.format("R{}", pl.col("rid").cast(pl.String).str.zfill(7)).alias("referral_id"),
        pl.format("P{}", pl.col("pid").cast(pl.String).str.zfill(7)).alias("patient_id"),
        "ubrn", "received_date", "service_line", "referral_source", "priority", "transfer_list", "status",
        "closed_date", "closure_reason", "pifu_expiry_date", "history_of_cancer", "red_flags", "body_site",
        "surgery_date", "awaiting_injection", "reason")
