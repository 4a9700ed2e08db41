"""Derived features: attendance around the cut-over, waits, scope, red flags, sharing state."""

from __future__ import annotations

from datetime import date
from types import ModuleType
from typing import Any

import polars as pl
import pytest

from migrate import canonical
from migrate.rules.features import PATIENT_FEATURES, REFERRAL_FEATURES, patient_features, referral_features


def _referral(rc: ModuleType, referrals: list[dict[str, Any]], contacts: list[dict[str, Any]] = ()  # type: ignore[assignment]
              ) -> dict[str, Any]:
    frame = referral_features(rc.tables(referrals, list(contacts)), rc.default_pack(), rc.T).collect()
    return dict(frame.row(0, named=True))


def _patient(rc: ModuleType, codes: list[dict[str, Any]]) -> dict[str, Any]:
    frame = patient_features(rc.tables([rc.referral()], codes=codes), rc.default_pack(), rc.T).collect()
    return dict(frame.row(0, named=True))


def test_feature_frames_have_exactly_the_declared_schema(rc: ModuleType) -> None:
    frames = rc.tables([rc.referral()], [rc.contact()])
    refs = referral_features(frames, rc.default_pack(), rc.T).collect_schema()
    pats = patient_features(frames, rc.default_pack(), rc.T).collect_schema()
    assert dict(refs) == {**{f.name: f.dtype for f in canonical.REFERRALS.fields},
                          **{n: f.dtype for n, f in REFERRAL_FEATURES.items()}}
    assert dict(pats) == {**{f.name: f.dtype for f in canonical.PATIENTS.fields},
                          **{n: f.dtype for n, f in PATIENT_FEATURES.items()}}


def test_attendance_counts_on_the_cutover_day_but_not_after(rc: ModuleType) -> None:
    row = _referral(rc, [rc.referral()], [rc.contact(when="2022-08-01 09:00"), rc.contact(when="2022-10-01 17:30"),
                                          rc.contact(when="2022-10-02 09:00")])
    assert row["attended_before_cutover"] and row["attended_contact_count"] == 2
    assert (row["first_attended_date"], row["last_attended_date"]) == (date(2022, 8, 1), date(2022, 10, 1))
    assert row["days_to_first_attendance"] == 31


@pytest.mark.parametrize("attendance", ["did_not_attend", "cancelled_by_patient", "cancelled_by_provider", "booked"])
def test_only_attended_contacts_are_attendances(rc: ModuleType, attendance: str) -> None:
    row = _referral(rc, [rc.referral()], [rc.contact(when="2022-09-01 09:00", attendance=attendance)])
    assert not row["attended_before_cutover"] and row["first_attended_date"] is None


def test_dummy_slots_are_ignored_whatever_their_case(rc: ModuleType) -> None:
    row = _referral(rc, [rc.referral()], [
        rc.contact(when="2022-09-01 09:00", slot_name="  admin appointment only "),
        rc.contact(when="2022-10-20 09:00", attendance="booked", slot_name="Do Not Attend"),
        rc.contact(when="2022-09-02 09:00", slot_name="Clinic 3"),
    ])
    assert row["attended_contact_count"] == 1 and row["first_attended_date"] == date(2022, 9, 2)
    assert not row["booked_after_cutover"] and row["dummy_slot_contacts"] == 2


def test_booked_means_a_booking_on_or_after_the_cutover_day(rc: ModuleType) -> None:
    on_t = _referral(rc, [rc.referral()], [rc.contact(when="2022-10-01 15:00", attendance="booked")])
    stale = _referral(rc, [rc.referral()], [rc.contact(when="2022-09-30 15:00", attendance="booked")])
    assert on_t["booked_after_cutover"] and on_t["next_booked_date"] == date(2022, 10, 1)
    assert not stale["booked_after_cutover"]


@pytest.mark.parametrize(("fields", "is_open"), [
    ({"status": "open"}, True),
    ({"status": "closed", "closed_date": date(2022, 10, 2)}, True),
    ({"status": "closed", "closed_date": date(2022, 10, 1)}, False),
    ({"status": "closed", "closed_date": None}, False),
    ({"status": "rejected"}, False),
])
def test_open_at_cutover(rc: ModuleType, fields: dict[str, Any], is_open: bool) -> None:
    assert _referral(rc, [rc.referral(**fields)])["open_at_cutover"] is is_open


def test_waits_and_post_op_days(rc: ModuleType) -> None:
    row = _referral(rc, [rc.referral(received_date=date(2022, 9, 1), post_op_date=date(2022, 7, 9))])
    assert (row["days_waiting"], row["days_since_post_op"]) == (30, 84)


def test_red_flag_codes_come_from_the_pack(rc: ModuleType) -> None:
    assert _referral(rc, [rc.referral(red_flags=["night_pain", "cauda_equina"])])["has_red_flag_code"]
    assert not _referral(rc, [rc.referral(red_flags=["knee_swelling"])])["has_red_flag_code"]
    assert not _referral(rc, [rc.referral(red_flags=None)])["has_red_flag_code"]


@pytest.mark.parametrize(("text", "phrase"), [
    ("Please arrange HIP Intra-Articular Injection (L)", "hip intra-articular injection"),
    ("GP: lumps and bumps clinic", "lumps and bumps"),
    ("lumps and bumpsy", None),
    ("previous lumpectomy, knee pain", None),
    (None, None),
])
def test_out_of_scope_phrases_match_whole_words_any_case(rc: ModuleType, text: str | None, phrase: str | None) -> None:
    assert _referral(rc, [rc.referral(reason_text=text)])["out_of_scope_phrase"] == phrase


@pytest.mark.parametrize(("born", "age"), [(date(1960, 10, 1), 62), (date(1960, 10, 2), 61), (date(1960, 2, 29), 62)])
def test_age_at_cutover_turns_on_the_birthday(rc: ModuleType, born: date, age: int) -> None:
    frames = rc.tables([rc.referral()], patients=[{"patient_key": "P1", "birth_date": born}])
    assert referral_features(frames, rc.default_pack(), rc.T).collect()["age_at_cutover"][0] == age


# Sharing: the latest entry per patient wins; ties and gaps resolve towards blocking.
@pytest.mark.parametrize(("codes", "blocked", "latest"), [
    ([("read2", "93C1", date(2021, 5, 1))], True, "read2:93C1"),
    ([("read2", "93C1", date(2021, 5, 1)), ("read2", "9Nd7", date(2022, 1, 1))], False, "read2:9Nd7"),
    ([("snomed", "425691002", date(2020, 1, 1)), ("snomed", "416409005", date(2022, 6, 1))], True,
     "snomed:416409005"),
    # The same day: the consent does not lift the dissent (the conservative answer).
    ([("snomed", "425691002", date(2022, 6, 1)), ("read2", "93C1", date(2022, 6, 1))], True, "read2:93C1"),
    ([("read2", "9Nd7", date(2022, 6, 1)), ("ctv3", "XaKRw", date(2022, 6, 1))], True, "ctv3:XaKRw"),
    ([("ctv3", "XaKRw", date(2022, 6, 1)), ("read2", "9Nd7", date(2022, 6, 1))], True, "ctv3:XaKRw"),
    ([("read2", "93C1", date(2022, 6, 1)), ("snomed", "425691002", date(2022, 6, 1)),
      ("read2", "9Nd7", date(2022, 6, 1))], True, "read2:93C1"),
    # An undated dissent cannot be shown to have been lifted; an undated consent lifts nothing.
    ([("read2", "93C1", None), ("read2", "9Nd7", date(2022, 1, 1))], True, "read2:93C1"),
    ([("read2", "93C1", date(2021, 1, 1)), ("read2", "9Nd7", None)], True, "read2:93C1"),
    # A code is only a sharing code in its own code system.
    ([("snomed", "93C1", date(2021, 5, 1))], False, None),
    ([("read2", "9Nu0", date(2019, 3, 1))], False, None),
])
def test_latest_sharing_entry_wins(rc: ModuleType, codes: list[tuple[str, str, date | None]], blocked: bool,
                                   latest: str | None) -> None:
    row = _patient(rc, [rc.code("P1", system, value, when) for system, value, when in codes])
    assert row["sharing_blocked"] is blocked
    assert row["latest_sharing_code"] == latest


def test_opt_outs_are_evidence_not_a_block(rc: ModuleType) -> None:
    row = _patient(rc, [rc.code("P1", "read2", "9Nu0", date(2019, 3, 1)),
                        rc.code("P1", "snomed", "881561000000100", date(2020, 3, 1)),
                        rc.code("P1", "read2", "9Nd7", date(2021, 3, 1))])
    assert row["opt_out_recorded"] and row["opt_out_codes"] == ["read2:9Nu0", "snomed:881561000000100"]
    assert not row["sharing_blocked"] and row["sharing_state"] == "consent"


def test_patients_without_sharing_entries(rc: ModuleType) -> None:
    row = _patient(rc, [])
    assert (row["sharing_blocked"], row["sharing_state"], row["opt_out_recorded"]) == (False, None, False)


def test_code_system_as_plain_text_is_accepted(rc: ModuleType) -> None:
    frames = rc.tables([rc.referral()], codes=[rc.code("P1", "read2", "93C1", date(2021, 5, 1))])
    frames["codes"] = frames["codes"].with_columns(pl.col("code_system").cast(pl.String))
    assert patient_features(frames, rc.default_pack(), rc.T).collect()["sharing_blocked"][0]
