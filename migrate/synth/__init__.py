"""``handover synth``: a synthetic outgoing-provider extract in the generic-csv layout, with its ground truth.

``synthesise(out, patients, seed, cutover, sharing_as)`` writes patients.csv, referrals.csv,
contacts.csv, codes.csv and target-index.csv (mappings/generic-csv.yaml reads them) and
``truth/``: quarantine.csv, cohorts.csv, patient_cohorts.csv, flags.csv, duplicates.csv
and summary.json. Same (patients, seed, cutover, sharing_as) -> byte-identical files.

``sharing_as`` says where the extract keeps the people's sharing wishes (issue #20): as
coded entries (``codes``, the default), as each patient's own setting (``column``:
patients.csv ``sharing_out``, ``sharing_out_date``) or as GP practices that do not share
out (``practice``: practice-sharing.csv, read with ``--practice-sharing``). The same people
are blocked whichever: the truth does not change (``codes.sharing_elsewhere``).

All sampling is numpy's ``default_rng(seed)``; Faker (en_GB, seeded) only builds pools.
At the default size the population reproduces the seed case: 5,414 / 6,008 / 7,523
backlog / transition / PIFU list entries for 18,942 people, 3 of them on two lists, 1,498
backlog patients already at the new provider. See plan.py for how that is counted.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from migrate.synth import plan as P
from migrate.synth import truth
from migrate.synth.codes import SETTING_COLUMNS, SHARING_AS, SHARING_GROUPS, SHARING_RATES, build_codes, \
    sharing_elsewhere
from migrate.synth.extract import build_activity, render_contacts, render_referrals
from migrate.synth.people import (
    build_patients,
    build_pools,
    day_number,
    demographics,
    swappable_birth_date,
    unique_nhs_numbers,
)
from migrate.synth.planting import PATIENT_KINDS, Junk, plant_malformed, write_table

__all__ = ["COLUMNS", "PRACTICE_FILE", "SHARING_AS", "SynthSummary", "synthesise"]
PRACTICE_FILE = "practice-sharing.csv"  # with --sharing-as practice: read it with --practice-sharing

COLUMNS: dict[str, tuple[str, ...]] = {
    "patients": ("patient_id", "nhs_number", "nhs_number_status", "family_name", "given_names", "birth_date", "sex",
                 "address", "postcode", "gp_practice", "phone", *SETTING_COLUMNS),
    "referrals": ("referral_id", "patient_id", "ubrn", "received_date", "service_line", "referral_source", "priority",
                  "transfer_list", "status", "closed_date", "closure_reason", "pifu_expiry_date", "history_of_cancer",
                  "red_flags", "body_site", "surgery_date", "awaiting_injection", "reason"),
    "contacts": ("contact_id", "referral_id", "patient_id", "contact_datetime", "attendance_code", "contact_type",
                 "medium", "procedure", "site", "slot_name"),
    "codes": ("patient_id", "code_system", "code", "display", "recorded_date", "value"),
}
TARGET_COLUMNS = ("local_id", "nhs_number", "family_name", "given_names", "birth_date", "sex", "postcode")


@dataclass(frozen=True)
class SynthSummary:
    """What ``synthesise`` wrote: data rows per file, planted cases per kind, list entries."""

    out: str
    patients: int
    seed: int
    cutover: str
    rows: dict[str, int] = field(default_factory=dict)
    planted: dict[str, int] = field(default_factory=dict)
    list_entries: dict[str, int] = field(default_factory=dict)
    quarantined: dict[str, int] = field(default_factory=dict)
    flags: dict[str, int] = field(default_factory=dict)
    sharing_as: str = "codes"

    def asdict(self) -> dict[str, Any]:
        """The summary as plain JSON-ready data."""
        return asdict(self)


def _pid_text(col: str = "pid") -> pl.Expr:
    return pl.format("P{}", pl.col(col).cast(pl.String).str.zfill(7))


def synthesise(out: Path, patients: int = P.SEED_PATIENTS, seed: int = 20221001,
               cutover: date = date(2022, 10, 1), sharing_as: str = "codes") -> SynthSummary:
    """Write a synthetic extract of ``patients`` people and its ground truth into ``out``.

    Deterministic in (patients, seed, cutover, sharing_as). Raises RuntimeError if the
    generated rows, evaluated by the domain rules, disagree with what was planted (a
    generator bug); ValueError for a ``sharing_as`` not in SHARING_AS.
    """
    if sharing_as not in SHARING_AS:
        raise ValueError(f"sharing_as must be one of {', '.join(SHARING_AS)}, not {sharing_as!r}")
    out = Path(out)
    (out / "truth").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    T = day_number(cutover)
    pools = build_pools(seed)
    lists = P.list_plan(patients)
    malformed = P.planted_count(P.MALFORMED_RATE, patients)
    target_extra = round(P.TARGET_EXTRA_RATE * lists.at_target)
    demo = demographics(rng, pools, patients + target_extra + malformed * len(PATIENT_KINDS), T)
    nhs = unique_nhs_numbers(rng, demo.height)
    births = demo["birth_day"].to_numpy()
    roles = P.assign_roles(rng, lists, swappable_birth_date(births[:patients]))
    pt = build_patients(rng, roles, demo, nhs, target_extra)
    birth_of_pid = np.concatenate([[0], pt.frame["birth_date"].cast(pl.Int64).to_numpy()])
    exact = pt.extra_of["duplicate_exact"]
    n_exact = exact.size
    pb = np.arange(patients + 1, pt.frame.height + 1)
    extra_label = {int(b): int(roles.primary[a - 1]) for a, b in zip(exact, pb[:n_exact])}
    act = build_activity(rng, roles, birth_of_pid, extra_label, pb[n_exact:], T, pools.sites)
    # The truth reads the coded entries as built; where the extract keeps them is a layout choice.
    all_codes = build_codes(rng, roles.sharing, T)
    codes, patient_rows, practices = sharing_elsewhere(sharing_as, roles.sharing, all_codes, pt.frame,
                                                       pools.practices, T)

    spare = demo.slice(patients + target_extra).with_columns(
        pl.Series("nhs_number", nhs[patients + target_extra:]).cast(pl.String),
        pl.col("birth_day").cast(pl.Date).alias("birth_date"),
        *(pl.lit(None, dtype=pl.String).alias(c) for c in SETTING_COLUMNS)).select(COLUMNS["patients"][1:])
    del demo  # the largest frame no longer needed: keeps the peak down at a million people
    junk, tail, junk_counts = plant_malformed(
        rng, T, malformed, spare, patients, pt.frame, act.referrals, act.contacts, codes.height,
        render_referrals, lambda c: render_contacts(c, pools.sites))

    render_patient = (lambda f: f.select(_pid_text().alias("patient_id"), *COLUMNS["patients"][1:]))
    render_code = (lambda f: f.select(_pid_text().alias("patient_id"), *COLUMNS["codes"][1:]))
    by_table: dict[str, list[Junk]] = {t: [j for j in junk if j.table == t] for t in COLUMNS}
    quarantine: list[tuple[str, int, str, str]] = []
    rows: dict[str, int] = {}
    specs = (("patients", patient_rows, render_patient, b"\n\n", False),
             ("referrals", act.referrals, render_referrals, b"", False),
             ("contacts", act.contacts, lambda c: render_contacts(c, pools.sites), tail.line, True),
             ("codes", codes, render_code, b"", False))
    for table, frame, render, trailer, tail_is_row in specs:
        name = f"{table}.csv"
        at, rows[name] = write_table(out / name, COLUMNS[table], frame, render, by_table[table], trailer, tail_is_row)
        quarantine += [(name, r, table, j.reason) for r, j in zip(at, by_table[table])]
        if tail_is_row:
            quarantine.append((name, rows[name], table, tail.reason))
    pt.target.write_csv(out / "target-index.csv", date_format="%Y-%m-%d")
    rows["target-index.csv"] = pt.target.height
    if practices is not None:
        practices.write_csv(out / PRACTICE_FILE, date_format="%Y-%m-%d")
        rows[PRACTICE_FILE] = practices.height

    state = truth.referral_state(act.referrals, act.contacts, T)
    survivor = pl.DataFrame({"pid": np.arange(1, pt.frame.height + 1), "survivor": pt.survivor[1:]})
    probable = pt.duplicates.filter(pl.col("match_type") == "probable")
    identity = pt.frame.select("pid", "nhs_number", "birth_date", "sex")
    pflags, pcohorts = truth.patient_flags(act.referrals, state, all_codes, identity, survivor,
                                           probable, pt.target)
    flags = truth.all_flags(act.referrals, state, pflags, T)
    truth.check(act.referrals, state, flags, roles.counts)
    entries = (act.referrals.join(survivor, on="pid").filter(pl.col("transfer_list").is_not_null())
               .select("survivor", "transfer_list").unique().group_by("transfer_list").len())
    list_entries = {name: 0 for name in P.LISTS} | dict(entries.iter_rows())
    if list_entries != lists.entries:
        raise RuntimeError(f"list entries {list_entries} differ from the plan {lists.entries}")

    tdir = out / "truth"
    q = pl.DataFrame(quarantine, schema=["source_file", "source_row", "table", "reason_code"], orient="row")
    q.sort("source_file", "source_row").write_csv(tdir / "quarantine.csv")
    state.select(pl.format("R{}", pl.col("rid").cast(pl.String).str.zfill(7)).alias("referral_id"),
                 pl.col("derived").alias("cohort")).write_csv(tdir / "cohorts.csv")
    pcohorts.select(_pid_text().alias("patient_id"), "cohort").write_csv(tdir / "patient_cohorts.csv")
    flags.write_csv(tdir / "flags.csv")
    pt.duplicates.select(_pid_text("a").alias("patient_id_a"), _pid_text("b").alias("patient_id_b"),
                         "match_type").write_csv(tdir / "duplicates.csv")
    planted = roles.counts | junk_counts
    summary = SynthSummary(
        out=str(out), patients=patients, seed=seed, cutover=cutover.isoformat(), rows=rows, planted=planted,
        list_entries=list_entries | {"total": sum(list_entries.values()), "two_list_patients": lists.two_list},
        quarantined=dict(sorted(q.group_by("reason_code").len().iter_rows())),
        flags=dict(sorted(flags.group_by("flag_code").len().iter_rows())), sharing_as=sharing_as,
    )
    _write_summary(tdir / "summary.json", summary, pt.frame.height, pcohorts.height, state)
    return summary


def _write_summary(path: Path, s: SynthSummary, source_patients: int, merged: int, state: pl.DataFrame) -> None:
    doc = {
        "parameters": {"patients": s.patients, "seed": s.seed, "cutover": s.cutover, "sharing_as": s.sharing_as},
        "counting": {
            "patients": "distinct people in the clean population",
            "list_entry": "distinct (person, transfer_list) pair over non-quarantined referrals, exact "
                          "duplicates merged into their person; probable-duplicate and conflict rows carry "
                          "no transfer-list label, junk rows are quarantined",
            "source_row": "1-based data record: header not a row, blank lines not rows, a quoted "
                          "embedded newline does not start a row",
            "source_patient_rows_clean": source_patients,
            "patients_after_merge": merged,
        },
        "rows": s.rows,
        "list_entries": s.list_entries,
        "planted": s.planted,
        "quarantine": s.quarantined,
        "flags": s.flags,
        "cohorts": dict(sorted(state.group_by("derived").len().iter_rows())),
        "rates": {
            "clinical_per_person": {k: rate for k, (rate, _) in P.CLINICAL.items()},
            "clinical_labels": {k: list(labels) for k, (_, labels) in P.CLINICAL.items()},
            "identity_per_person": P.IDENTITY_RATES,
            "sharing_groups": dict(zip(SHARING_GROUPS, SHARING_RATES)),
            "malformed_rows_per_kind_per_person": P.MALFORMED_RATE,
            "urgent": P.URGENT_RATE, "two_week_wait": P.TWO_WEEK_WAIT_RATE,
            "history_referrals_mean": P.HISTORY_REFERRALS_MEAN, "nhs_number_spaced": P.NHS_NUMBER_SPACED_RATE,
            "target_extra_per_at_target": P.TARGET_EXTRA_RATE,
            "minimum_per_kind": "1 when patients >= 1000",
        },
        "rules": truth.__doc__,
    }
    path.write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
