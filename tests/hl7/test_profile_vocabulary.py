"""The shipped hl7v2 profile speaks HL7: tables 0276 and 0278 in full, SCH-25 with SCH-6
for who cancelled (issue #11 item 7), and the ``refine`` option that makes the last possible."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest

from migrate.errors import ProfileError
from migrate.profile import load_profile
from tests.hl7.feed import adt, booking, quarantined, referral, run, write_feed

# HL7 v2.4 table 0278 (filler status codes) and 0276 (appointment reason codes), every code.
TABLE_0278 = {"Pending": "booked", "Waitlist": "booked", "Booked": "booked", "Started": "attended",
              "Complete": "attended", "Cancelled": "cancelled_by_provider", "Dc": "cancelled_by_provider",
              "Deleted": "cancelled_by_provider", "Blocked": "cancelled_by_provider", "Overbook": "booked",
              "Noshow": "did_not_attend"}
TABLE_0276 = {"ROUTINE": "initial", "WALKIN": "initial", "CHECKUP": "follow_up", "FOLLOWUP": "follow_up",
              "EMERGENCY": "initial"}
PEOPLE = [adt("A04", "a1", "20221001090000", "P1", nhs="9434765919", family="Smith", given="Ann",
              dob="1950-01-02", sex="F", postcode="OX1 1AA"),
          referral("r1", "20221001093000", "R1", "P1", "2022-09-01", "physio")]


def _contacts(tmp_path: Path, bookings: list[str]) -> tuple[pl.DataFrame, dict[tuple[str, int], str], Path]:
    out = run(write_feed(tmp_path / "in" / "feed.hl7", PEOPLE + bookings).parent, tmp_path / "run")
    contacts = pl.read_parquet(out / "canonical" / "contacts.parquet").sort("contact_key")
    return contacts, quarantined(out), out


def test_every_code_of_tables_0278_and_0276_maps(tmp_path: Path) -> None:
    """Regression: the profile mapped SCH-7 only from NEW/FU/PROC, so HL7's own codes
    (ROUTINE, FOLLOWUP, ...) quarantined every booking."""
    bookings = [booking("S12", f"s{i}", "20221002090000", f"C{i:02d}", "R1", "P1", "2022-10-20 09:00", status,
                        kind=reason)
                for i, (status, reason) in enumerate(zip(TABLE_0278, [*TABLE_0276] * 3, strict=False))]
    contacts, q, _ = _contacts(tmp_path, bookings)
    assert q == {}
    got = {(r["contact_key"]): (str(r["attendance"]), str(r["contact_type"])) for r in contacts.iter_rows(named=True)}
    want = {f"C{i:02d}": (TABLE_0278[s], TABLE_0276[k])
            for i, (s, k) in enumerate(zip(TABLE_0278, [*TABLE_0276] * 3, strict=False))}
    assert got == want


def test_sch_6_tells_a_patients_cancellation_from_the_providers(tmp_path: Path) -> None:
    bookings = [booking("S12", f"s{i}", "20221002090000", f"C{i}", "R1", "P1", "2022-10-20 09:00", "Booked")
                for i in range(1, 8)]
    bookings += [
        booking("S15", "x1", "20221003090000", "C1", "R1", "P1", "2022-10-20 09:00", "Cancelled", reason="PAT"),
        booking("S15", "x2", "20221003090000", "C2", "R1", "P1", "2022-10-20 09:00", "Cancelled",
                reason="2^Cancelled by patient"),
        booking("S15", "x3", "20221003090000", "C3", "R1", "P1", "2022-10-20 09:00", "Cancelled"),  # no reason
        booking("S15", "x4", "20221003090000", "C4", "R1", "P1", "2022-10-20 09:00", "Deleted", reason="HOSP"),
        booking("S15", "x5", "20221003090000", "C5", "R1", "P1", "2022-10-20 09:00", "Cancelled", reason="SNOW"),
        booking("S14", "x6", "20221003090000", "C6", "R1", "P1", "2022-10-21 09:00", "Booked", reason="SNOW"),
        booking("S26", "x7", "20221003090000", "C7", "R1", "P1", "2022-10-20 09:00", "Noshow", reason="PAT"),
    ]
    contacts, q, out = _contacts(tmp_path, bookings)
    attendance = {r["contact_key"]: str(r["attendance"]) for r in contacts.iter_rows(named=True)}
    assert attendance == {"C1": "cancelled_by_patient", "C2": "cancelled_by_patient", "C3": "cancelled_by_provider",
                          "C4": "cancelled_by_provider", "C5": "booked", "C6": "booked", "C7": "did_not_attend"}
    # a reason the profile does not know is never guessed: the cancellation is held for review
    assert q == {("feed.hl7", 14): "unmapped_code"}
    message = pl.read_parquet(out / "quarantine.parquet")["message"][0]
    assert "attendance: column SCH-6.1 (which refines cancelled_by_provider) has no mapping (value 'SNOW')" in message


def _profile_problems(tmp_path: Path, attendance: str) -> list[str]:
    path = tmp_path / "p.yaml"
    path.write_text("profile: p\nformat_version: 1\ntables:\n  contacts:\n    files: c.csv\n    fields:\n"
                    "      contact_key: id\n      referral_key: ref\n" + attendance)
    with pytest.raises(ProfileError) as err:
        load_profile(path)
    return err.value.problems


def test_refine_is_checked_against_the_canonical_values(tmp_path: Path) -> None:
    problems = _profile_problems(tmp_path, "      attendance:\n        column: st\n        refine: {column: why, "
                                 "when: [cancelled], map: {P: by_patient}, colour: red}\n")
    assert any("refine.when: 'cancelled' is not a attendance value" in p for p in problems)
    assert any("refine.map.P: 'by_patient' is not a attendance value" in p for p in problems)
    assert any("refine.colour: unknown option" in p for p in problems)
    problems = _profile_problems(tmp_path, "      site: {column: s, refine: {column: w, when: [x], map: {}}}\n")
    assert any("site is not a coded field" in p for p in problems)
