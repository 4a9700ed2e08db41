"""An S15 or S26 is information even when it leaves SCH-25 out (follow-up to issue #11).

Under field-level updates a field not sent keeps its value, so an S15 (cancellation) or S26
(no-show) without SCH-25 once left the appointment ``booked``: a cancelled appointment that
looked booked, which can also keep a referral out of PIFU ("no booked contact after the
cut-over"). The shipped profile's ``implied_by`` on ``attendance`` reads the event (MSH-9.2)
when SCH-25 is not sent; the explicit null ``""`` still deletes (and is refused on a
required field); an SCH-25 that contradicts its event is held in quarantine.
"""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl

from migrate.profile import load_profile
from tests.hl7.feed import NULL, adt, booking, dispositions, quarantined, referral, run, write_feed

PEOPLE = [adt("A04", "a1", "20221001090000", "P1", nhs="9434765919", family="Smith", given="Ann",
              dob="1950-01-02", sex="F", postcode="OX1 1AA"),
          referral("r1", "20221001093000", "R1", "P1", "2022-09-01", "physio")]


def _booked(n: int) -> list[str]:
    return [booking("S12", f"s{i}", "20221002090000", f"C{i}", "R1", "P1", "2022-10-20 09:00", "Booked")
            for i in range(1, n + 1)]


def _update(event: str, control: str, cid: str, status: str | None, reason: str | None = None) -> str:
    """An update that sends only the appointment id, the status (or not) and the reason."""
    return booking(event, control, "20221003090000", cid, None, None, None, status, kind=None, reason=reason)


def _attendance(out: Path) -> dict[str, tuple[str, int]]:
    contacts = pl.read_parquet(out / "canonical" / "contacts.parquet")
    return {k: (a, r) for k, a, r in contacts.select("contact_key", pl.col("attendance").cast(pl.String),
                                                     "source_row").iter_rows()}


def test_an_s15_or_s26_without_sch_25_cancels_or_records_the_no_show(tmp_path: Path) -> None:
    """Regression: an S15 or S26 without SCH-25 kept the appointment booked."""
    feed = write_feed(tmp_path / "in" / "feed.hl7", PEOPLE + _booked(6) + [
        _update("S15", "x1", "C1", None),                                   # row 9: no SCH-25, no reason
        _update("S15", "x2", "C2", None, reason="PAT^Patient request"),     # row 10: the patient cancelled
        _update("S15", "x3", "C3", None, reason="2"),                       # row 11: NHS DD code 2 (patient)
        _update("S26", "x4", "C4", None),                                   # row 12: no-show
        _update("S15", "x5", "C5", NULL),                                   # row 13: SCH-25 deleted: refused
        _update("S14", "x6", "C6", None),                                   # row 14: an S14 implies nothing
    ])
    out = run(feed.parent, tmp_path / "run")
    assert _attendance(out) == {
        "C1": ("cancelled_by_provider", 9), "C2": ("cancelled_by_patient", 10), "C3": ("cancelled_by_patient", 11),
        "C4": ("did_not_attend", 12), "C5": ("booked", 7), "C6": ("booked", 14)}
    # "" still deletes (as before): a required field cleared is refused and the booking stands
    assert quarantined(out) == {("feed.hl7", 13): "missing_required"}
    q = pl.read_parquet(out / "quarantine.parquet").row(0, named=True)
    assert q["field"] == "attendance" and q["message"].endswith("update rejected, the state from feed.hl7 row 7 is kept")
    # the FHIR Appointment says so too
    statuses = {json.loads(line)["identifier"][0]["value"]: json.loads(line)["status"]
                for line in (out / "fhir" / "ndjson" / "Appointment.ndjson").read_text().splitlines()}
    assert (statuses["C1"], statuses["C2"], statuses["C4"], statuses["C5"]) == ("cancelled", "cancelled", "noshow",
                                                                                "booked")


def test_a_cancellation_the_feed_never_booked_is_still_a_cancellation(tmp_path: Path) -> None:
    """The first message of an appointment may be its S15: without SCH-25 it creates it cancelled."""
    feed = write_feed(tmp_path / "in" / "feed.hl7", [*PEOPLE, booking(
        "S15", "x1", "20221003090000", "C1", "R1", "P1", "2022-10-20 09:00", None)])
    out = run(feed.parent, tmp_path / "run")
    assert _attendance(out) == {"C1": ("cancelled_by_provider", 3)} and quarantined(out) == {}


def test_an_sch_25_that_contradicts_its_event_is_held_and_the_booking_stands(tmp_path: Path) -> None:
    """An S15 whose SCH-25 says Booked (or an S26 that says Complete) is neither believed:
    quarantined as conflicting_value naming both values, the earlier state kept. SCH-25
    codes that agree with the event (any cancellation code on an S15) apply."""
    feed = write_feed(tmp_path / "in" / "feed.hl7", PEOPLE + _booked(7) + [
        _update("S15", "x1", "C1", "Booked"),                 # row 10
        _update("S26", "x2", "C2", "Complete"),               # row 11
        _update("S26", "x3", "C3", "Cancelled"),              # row 12
        _update("S15", "x4", "C4", "Deleted", reason="PAT"),  # row 13: agrees (a cancellation, by the patient)
        _update("S15", "x5", "C5", "Blocked"),                # row 14: agrees
        _update("S26", "x6", "C6", "Noshow"),                 # row 15: agrees
        _update("S15", "x7", "C7", "Noshow"),                 # row 16
    ])
    out = run(feed.parent, tmp_path / "run")
    assert quarantined(out) == {("feed.hl7", r): "conflicting_value" for r in (10, 11, 12, 16)}
    assert _attendance(out) == {
        "C1": ("booked", 3), "C2": ("booked", 4), "C3": ("booked", 5), "C4": ("cancelled_by_patient", 13),
        "C5": ("cancelled_by_provider", 14), "C6": ("did_not_attend", 15), "C7": ("booked", 9)}
    q = pl.read_parquet(out / "quarantine.parquet").sort("source_row")
    assert set(q["field"]) == {"attendance"}
    assert q["message"][0] == (
        "feed.hl7 row 10: attendance: column SCH-25.1 sends 'Booked' (booked) but column MSH-9.2 'S15' implies "
        "'Cancelled' (cancelled_by_provider); the row is held rather than either believed; update rejected, the "
        "state from feed.hl7 row 3 is kept")
    assert "sends 'Complete' (attended) but column MSH-9.2 'S26' implies 'Noshow' (did_not_attend)" in q["message"][1]
    assert dispositions(out)[("feed.hl7", 3)] == "migrated"


def _csv(path: Path, table: str, row: dict[str, str] | None) -> None:
    """A generic-csv file of one row (or none) with every column the profile reads."""
    columns = load_profile("generic-csv").tables[table].source_columns
    path.parent.mkdir(parents=True, exist_ok=True)
    pl.DataFrame([{c: (row or {}).get(c, "") for c in columns}] if row else [], schema=dict.fromkeys(columns, pl.String)
                 ).write_csv(path)


def test_a_cancellation_without_sch_25_lets_the_referral_reach_pifu(tmp_path: Path) -> None:
    """What the gap did to a cohort: a CSV extract holds a patient seen before the cut-over
    and put on PIFU; the feed books a follow-up after the cut-over and then cancels it with
    an S15 that leaves SCH-25 out. With the booking cancelled, the referral is on PIFU; had
    it stayed booked, the referral would be in transition."""
    inp = tmp_path / "in"
    _csv(inp / "patients.csv", "patients", {"patient_id": "P1", "nhs_number": "9434765919", "family_name": "Smith",
                                            "birth_date": "1950-01-02", "sex": "F", "postcode": "OX1 1AA"})
    _csv(inp / "referrals.csv", "referrals", {"referral_id": "R1", "patient_id": "P1", "received_date": "2022-06-01",
                                              "service_line": "physio", "priority": "1", "status": "open",
                                              "pifu_expiry_date": "2023-01-31"})
    _csv(inp / "contacts.csv", "contacts", {"contact_id": "C0", "referral_id": "R1", "patient_id": "P1",
                                            "contact_datetime": "2022-07-01 09:00", "attendance_code": "5"})
    _csv(inp / "codes.csv", "codes", None)
    write_feed(inp / "feed.hl7", [
        booking("S12", "s1", "20220920090000", "C1", "R1", "P1", "2022-10-20 09:00", "Booked"),
        booking("S15", "s2", "20220921090000", "C1", None, None, None, None, kind=None, reason="PAT"),
    ])
    out = run(inp, tmp_path / "run", "generic-csv", "hl7v2")
    assert _attendance(out)["C1"] == ("cancelled_by_patient", 2)
    cohorts = pl.read_parquet(out / "cohorts.parquet")
    assert cohorts.select("referral_key", pl.col("cohort").cast(pl.String)).rows() == [("R1", "pifu")]
