"""How many of what: the seed's list sizes scaled to N, the planted-case rates, and who plays which role.

Every rate here is a module constant so the ground truth (``truth/summary.json``) can state
the rates a run was generated with. Counts are ``round(rate * N)``, and at least 1 once
N >= 1000 so a small test extract still carries every case.

Counting rule (the contract the tests and later stages rely on): ``patients`` is the number
of distinct *people*. Each person holds one or two *list entries* (distinct (person,
transfer_list) pairs); the list sizes are those of the seed case scaled to N. Extra source
rows for an existing person (an exact duplicate under a new id, a probable duplicate, a
conflicting record, malformed junk) never add a list entry: an exact duplicate's open
referral repeats its person's list, and the other extra rows carry no transfer-list label.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from migrate.synth.codes import SHARING_GROUPS, sharing_groups

LISTS: tuple[str, ...] = ("backlog", "transition", "pifu")
SEED_PATIENTS = 18_942
SEED_LIST_ENTRIES: dict[str, int] = {"backlog": 5_414, "transition": 6_008, "pifu": 7_523}
SEED_TWO_LIST_PATIENTS = 3
SEED_ALREADY_AT_TARGET = 1_498  # of the seed's 5,414 backlog patients
# Which two lists a two-list patient sits on, cycled (the worked example's P25 is the first).
TWO_LIST_PAIRS: tuple[tuple[int, int], ...] = ((1, 0), (2, 1), (0, 2))

# Clinical cases, planted on one person's open labelled referral (or, for out-of-scope, on an
# extra unlabelled referral). Each entry: rate per person, the labels it may be planted on.
CLINICAL: dict[str, tuple[float, tuple[str, ...]]] = {
    "under_prioritised_cauda_equina": (0.0015, ("backlog", "transition")),
    "under_prioritised_cancer_spine": (0.0015, ("backlog", "transition")),
    "cancer_history_blank": (0.004, LISTS),
    "post_op_routine": (0.003, ("backlog", "transition")),
    "awaiting_injection": (0.005, ("backlog", "transition")),
    "urgent_wait_breach": (0.002, ("backlog", "transition")),
    "over_prioritised": (0.003, ("backlog", "transition")),
    "out_of_scope_lump": (0.002, LISTS),
    "out_of_scope_hip_injection": (0.001, LISTS),
    "pifu_expired": (0.006, ("pifu",)),
    "wrong_list_transition_dna_only": (0.002, ("transition",)),
    "wrong_list_pifu_booked_after_cutover": (0.002, ("pifu",)),
    "wrong_list_backlog_attended": (0.002, ("backlog",)),
    "dummy_slot_only": (0.002, ("backlog",)),
    # Boundary and negative controls: they must NOT raise a flag.
    "attended_on_cutover_date": (0.001, ("transition",)),
    "pifu_expiry_on_cutover_date": (0.001, ("pifu",)),
    "cancer_history_not_spinal": (0.002, LISTS),
}
CLINICAL_KINDS: tuple[str, ...] = tuple(CLINICAL)

# Identity cases, one role per person; the duplicate kinds add a second source patient row.
IDENTITY_RATES: dict[str, float] = {
    "nhs_number_invalid": 0.003,
    "nhs_number_missing": 0.004,
    "duplicate_exact": 0.003,
    "duplicate_probable": 0.002,
    "duplicate_conflict": 0.001,
}
IDENTITY_KINDS: tuple[str, ...] = tuple(IDENTITY_RATES)
NHS_NUMBER_SPACED_RATE = 0.01  # valid numbers written "999 123 4567": normalised, not flagged

URGENT_RATE = 0.06  # clean labelled referrals on priority 2, with a red flag, seen within 14 days
TWO_WEEK_WAIT_RATE = 0.01  # priority 3, only for unblocked people (keeps "urgent" unambiguous)
HISTORY_REFERRALS_MEAN = 1.85  # closed or rejected referrals per person (Poisson)
REJECTED_SHARE = 0.12
OLD_SURGERY_RATE = 0.03  # surgery long before the post-op window: must not flag
TARGET_EXTRA_RATE = 0.10  # target-index rows for people not in the extract, per at-target row
MALFORMED_RATE = 1 / 5_000  # junk rows per malformed kind, per person


def planted_count(rate: float, n: int) -> int:
    """Cases to plant at ``rate`` among ``n`` people: at least one once n >= 1000."""
    count = round(rate * n)
    return max(count, 1) if n >= 1_000 else count


@dataclass(frozen=True)
class ListPlan:
    """List-entry counts for N people: the seed's 5,414 : 6,008 : 7,523 scaled."""

    patients: int
    entries: dict[str, int]
    two_list: int
    at_target: int

    @property
    def total_entries(self) -> int:
        """Sum of list entries: patients + two_list."""
        return sum(self.entries.values())


def list_plan(n: int) -> ListPlan:
    """Scale the seed's list sizes to ``n`` people; exact at the seed size."""
    scale = n / SEED_PATIENTS
    two = round(SEED_TWO_LIST_PATIENTS * scale)
    if n >= 1_000:
        two = max(two, 1)
    backlog = round(SEED_LIST_ENTRIES["backlog"] * scale)
    transition = round(SEED_LIST_ENTRIES["transition"] * scale)
    pifu = n + two - backlog - transition
    at_target = round(SEED_ALREADY_AT_TARGET * backlog / SEED_LIST_ENTRIES["backlog"])
    return ListPlan(n, {"backlog": backlog, "transition": transition, "pifu": pifu}, two, at_target)


@dataclass(frozen=True)
class Roles:
    """Per person (index 0..N-1): lists, planted role and sharing group.

    ``primary``/``secondary`` are indices into LISTS (secondary -1 for one list);
    ``clinical`` indexes CLINICAL_KINDS and ``identity`` IDENTITY_KINDS (-1: none);
    ``sharing`` indexes SHARING_GROUPS. A person plays at most one planted role, so
    planted cases never interact and each one's expected flags are exactly its own.
    """

    primary: np.ndarray
    secondary: np.ndarray
    clinical: np.ndarray
    identity: np.ndarray
    at_target: np.ndarray
    sharing: np.ndarray
    swap_birth_date: np.ndarray  # probable duplicates made by a day/month swap (else a surname typo)
    counts: dict[str, int]


class _Picker:
    """Takes people in one fixed random order, never the same person twice."""

    def __init__(self, rng: np.random.Generator, n: int) -> None:
        self.order = rng.permutation(n)
        self.used = np.zeros(n, dtype=bool)

    def take(self, eligible: np.ndarray, count: int) -> np.ndarray:
        free = self.order[(eligible & ~self.used)[self.order]]
        chosen = free[:count]
        if chosen.size < count:
            raise ValueError(f"too few people to plant {count} cases; use more patients")
        self.used[chosen] = True
        return chosen


def assign_roles(rng: np.random.Generator, plan: ListPlan, day_of_birth_le12: np.ndarray) -> Roles:
    """Labels, planted roles and sharing groups for ``plan.patients`` people.

    ``day_of_birth_le12`` marks people whose birth day <= 12 and differs from the month:
    only they can host a day/month-swapped probable duplicate.
    """
    n = plan.patients
    primary = np.empty(n, dtype=np.int8)
    secondary = np.full(n, -1, dtype=np.int8)
    two = np.arange(plan.two_list)
    pairs = np.array([TWO_LIST_PAIRS[i % len(TWO_LIST_PAIRS)] for i in range(plan.two_list)],
                     dtype=np.int8).reshape(-1, 2)
    singles = [plan.entries[name] - int((pairs == i).sum()) for i, name in enumerate(LISTS)]
    labels = np.repeat(np.arange(3, dtype=np.int8), singles)
    order = rng.permutation(n)  # order[:two] are the two-list people
    primary[order[two]] = pairs[:, 0]
    secondary[order[two]] = pairs[:, 1]
    primary[order[plan.two_list:]] = rng.permutation(labels)

    picker = _Picker(rng, n)
    picker.used[order[two]] = True  # two-list people stay clean: their only flag is ON_TWO_LISTS
    counts: dict[str, int] = {"on_two_lists": plan.two_list}
    clinical = np.full(n, -1, dtype=np.int16)
    for k, (kind, (rate, allowed)) in enumerate(CLINICAL.items()):
        m = planted_count(rate, n)
        counts[kind] = m
        shares = np.diff(np.round(np.linspace(0, m, len(allowed) + 1)).astype(int))
        for name, share in zip(allowed, shares):
            clinical[picker.take(primary == LISTS.index(name), int(share))] = k
    identity = np.full(n, -1, dtype=np.int8)
    swap = np.zeros(n, dtype=bool)
    anyone = np.ones(n, dtype=bool)
    for k, (kind, rate) in enumerate(IDENTITY_RATES.items()):
        m = planted_count(rate, n)
        counts[kind] = m
        if kind == "duplicate_probable":
            # half surname typos, half day/month swaps (needs a swappable birth date)
            half = m // 2
            identity[picker.take(anyone, m - half)] = k
            swapped = picker.take(day_of_birth_le12, half)
            identity[swapped] = k
            swap[swapped] = True
        else:
            identity[picker.take(anyone, m)] = k
    at_target = np.zeros(n, dtype=bool)
    at_target[picker.take(primary == 0, plan.at_target)] = True
    counts["already_at_target"] = plan.at_target
    sharing = sharing_groups(rng, n)
    for g, name in enumerate(SHARING_GROUPS[1:], start=1):
        counts[f"sharing_{name}"] = int((sharing == g).sum())
    return Roles(primary, secondary, clinical, identity, at_target, sharing, swap, counts)
