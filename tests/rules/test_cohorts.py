"""Cohorts at the cut-over (domain.md section 2), per referral and per patient, at their edges."""

from __future__ import annotations

import itertools
from datetime import date
from types import ModuleType
from typing import Any

import polars as pl
import pytest

from migrate import canonical

EXPIRY = date(2023, 1, 1)


@pytest.mark.parametrize(("name", "referral", "contacts", "cohort"), [
    ("open, nothing yet", {}, [], "backlog"),
    ("attended on the cut-over date itself", {}, [("2022-10-01 10:00", "attended")], "transition"),
    ("attended only after the cut-over", {}, [("2022-10-02 10:00", "attended")], "backlog"),
    ("booked but not attended", {}, [("2022-10-20 10:00", "booked")], "backlog"),
    ("DNA only", {}, [("2022-09-10 09:00", "did_not_attend")], "backlog"),
    # CSDS 7, late and not seen, is mapped to did_not_attend: not an attendance.
    ("late, not seen", {"transfer_list": "backlog"}, [("2022-09-12 09:00", "did_not_attend")], "backlog"),
    ("cancelled both ways", {}, [("2022-09-01 09:00", "cancelled_by_patient"),
                                 ("2022-09-02 09:00", "cancelled_by_provider")], "backlog"),
    ("attended, follow-up booked", {}, [("2022-09-01 09:00", "attended"), ("2022-10-15 10:00", "booked")],
     "transition"),
    ("PIFU running, nothing booked", {"pifu_expiry_date": EXPIRY}, [("2022-08-01 09:00", "attended")], "pifu"),
    ("PIFU expiring on the cut-over date", {"pifu_expiry_date": date(2022, 10, 1)},
     [("2022-09-01 09:00", "attended")], "pifu"),
    ("PIFU expired the day before", {"pifu_expiry_date": date(2022, 9, 30)}, [("2022-09-01 09:00", "attended")],
     "pifu_expired"),
    ("PIFU but a follow-up is booked", {"pifu_expiry_date": EXPIRY},
     [("2022-08-01 09:00", "attended"), ("2022-11-01 09:00", "booked")], "transition"),
    ("expired PIFU but a follow-up is booked", {"pifu_expiry_date": date(2022, 7, 1)},
     [("2022-06-01 09:00", "attended"), ("2022-11-01 09:00", "booked")], "transition"),
    ("PIFU date but never attended", {"pifu_expiry_date": EXPIRY}, [], "backlog"),
    ("closed before the cut-over", {"status": "closed", "closed_date": date(2022, 9, 20)},
     [("2022-08-20 09:00", "attended")], "closed"),
    ("closed on the cut-over date", {"status": "closed", "closed_date": date(2022, 10, 1)}, [], "closed"),
    ("closed the day after the cut-over, unseen", {"status": "closed", "closed_date": date(2022, 10, 2)}, [],
     "backlog"),
    ("closed the day after the cut-over, seen", {"status": "closed", "closed_date": date(2022, 10, 2)},
     [("2022-09-01 09:00", "attended")], "transition"),
    ("rejected", {"status": "rejected"}, [("2022-09-01 09:00", "attended")], "rejected"),
    ("out of scope by body site, attended", {"body_site": "lump"}, [("2022-09-01 09:00", "attended")], "rejected"),
    ("out of scope, closed", {"body_site": "lump", "status": "closed", "closed_date": date(2022, 1, 1)}, [],
     "rejected"),
    ("out of scope by reason text", {"reason_text": "Hip intra-articular injection please"}, [], "rejected"),
])
def test_referral_cohort(rc: ModuleType, name: str, referral: dict[str, Any], contacts: list[tuple[str, str]],
                         cohort: str) -> None:
    frames = rc.tables([rc.referral(**referral)], [rc.contact(when=w, attendance=a) for w, a in contacts])
    assert rc.cohort_of(rc.run(frames)) == cohort, name


def test_dummy_slot_attendance_leaves_a_referral_in_the_backlog(rc: ModuleType) -> None:
    frames = rc.tables([rc.referral()], [rc.contact(when="2022-09-05 09:00", slot_name="ADMIN APPOINTMENT ONLY")])
    results = rc.run(frames)
    assert rc.cohort_of(results) == "backlog"
    assert results["cohorts"]["cohort_reason"][0] == (
        "open; no attended contact on or before the cut-over; next booked: blank; e-RS dummy slots ignored: 1")


def test_every_combination_of_inputs_gets_a_cohort(rc: ModuleType) -> None:
    referrals, contacts = [], []
    states = itertools.product(
        [("open", None), ("closed", date(2022, 9, 1)), ("closed", date(2022, 10, 2)), ("closed", None),
         ("rejected", None)],
        [None, date(2022, 9, 30), date(2022, 10, 1)],
        [False, True], [False, True], ["knee", "lump"],
    )
    for i, ((status, closed), pifu, attended, booked, site) in enumerate(states):
        key = f"R{i:03d}"
        referrals.append(rc.referral(key, status=status, closed_date=closed, pifu_expiry_date=pifu, body_site=site))
        if attended:
            contacts.append(rc.contact(key, when="2022-09-01 09:00"))
        if booked:
            contacts.append(rc.contact(key, when="2022-10-05 09:00", attendance="booked"))
    cohorts = rc.run(rc.tables(referrals, contacts))["cohorts"]
    assert cohorts.height == len(referrals)
    assert cohorts["cohort"].null_count() == 0
    assert cohorts.filter(pl.col("cohort_reason").str.starts_with("no case")).is_empty()


@pytest.mark.parametrize(("cohorts", "patient_cohort"), [
    (["backlog", "transition"], "transition"),
    (["pifu", "backlog"], "backlog"),
    (["pifu_expired", "pifu"], "pifu"),
    (["closed", "pifu_expired"], "pifu_expired"),
    (["rejected", "closed"], "closed"),
    (["rejected"], "rejected"),
])
def test_patient_cohort_is_the_most_active(rc: ModuleType, cohorts: list[str], patient_cohort: str) -> None:
    make = {
        "transition": (rc.referral("X", "P1"), [rc.contact("X")]),
        "backlog": (rc.referral("X", "P1"), []),
        "pifu": (rc.referral("X", "P1", pifu_expiry_date=EXPIRY), [rc.contact("X")]),
        "pifu_expired": (rc.referral("X", "P1", pifu_expiry_date=date(2022, 1, 1)), [rc.contact("X")]),
        "closed": (rc.referral("X", "P1", status="closed", closed_date=date(2022, 1, 1)), []),
        "rejected": (rc.referral("X", "P1", status="rejected"), []),
    }
    referrals, contacts = [], []
    for n, cohort in enumerate(cohorts):
        referral, its_contacts = make[cohort]
        referrals.append({**referral, "referral_key": f"R{n}"})
        contacts += [{**c, "referral_key": f"R{n}", "contact_key": f"C{n}"} for c in its_contacts]
    results = rc.run(rc.tables(referrals, contacts))
    assert [str(c) for c in results["cohorts"]["cohort"]] == cohorts
    assert results["patient_cohorts"].row(0) == ("P1", patient_cohort)


def test_a_patient_without_referrals_has_no_cohort(rc: ModuleType) -> None:
    frames = rc.tables([rc.referral("R1", "P1")], patients=[{"patient_key": "P1"}, {"patient_key": "P2"}])
    assert rc.run(frames)["patient_cohorts"].rows() == [("P1", "backlog"), ("P2", None)]


def test_cohorts_table_contract(rc: ModuleType) -> None:
    frames = rc.tables([rc.referral("R2", transfer_list="transition"), rc.referral("R1", transfer_list="backlog"),
                        rc.referral("R3")])
    table = rc.run(frames)["cohorts"]
    assert table.schema == pl.Schema({
        "referral_key": pl.String, "patient_key": pl.String, "cohort": pl.Enum(canonical.COHORTS),
        "cohort_reason": pl.String, "transfer_list": pl.Enum(canonical.TRANSFER_LIST), "list_mismatch": pl.Boolean,
    })
    # Sorted by key; a label that differs is a mismatch, no label is not.
    assert table.select("referral_key", "list_mismatch").rows() == [("R1", False), ("R2", True), ("R3", False)]


def test_lazy_outputs_equal_the_staged_collect(rc: ModuleType) -> None:
    frames = rc.tables([rc.referral("R1", transfer_list="transition"), rc.referral("R2", "P2", awaiting_injection=True)],
                       [rc.contact("R2", patient="P2")])
    results = rc.evaluate(frames, rc.default_pack(), rc.T)
    staged = results.collect(features=True)
    for name in ("cohorts", "patient_cohorts", "exceptions"):
        assert getattr(results, name).collect().equals(staged[name]), name
    assert set(staged["referral_features"].columns) >= {"cohort", "in_active_care", "days_waiting"}
