"""HL7 event semantics that hold in every order: merges before checks, a bad update never
erases, conflicting merges refused (issue #11, items 1 and 2)."""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path

import polars as pl

from tests.hl7.feed import adt, booking, dispositions, merge, quarantined, referral, run, write_feed

ANN = dict(nhs="9434765919", family="Smith", given="Ann", dob="1950-01-02", sex="F", postcode="OX1 1AA")
BOB = dict(nhs="9990001375", family="Jones", given="Bob", dob="1960-03-04", sex="M", postcode="LS1 1AA")
ANN_DOB, BOB_DOB = date(1950, 1, 2), date(1960, 3, 4)


def _canonical(run_dir: Path, table: str) -> pl.DataFrame:
    return pl.read_parquet(run_dir / "canonical" / f"{table}.parquet")


def test_a_referral_under_a_merged_patient_keeps_its_survivors_bookings(tmp_path: Path) -> None:
    """Regression: the referral was sent under P2, later merged (A40) into P1; P1's SIU
    bookings for it were quarantined as patient_mismatch because the check ran before the
    merges. A booking sent under the prior id after the merge is re-pointed too."""
    feed = write_feed(tmp_path / "in" / "feed.hl7", [
        adt("A04", "m1", "20221001090000", "P1", **ANN),
        adt("A04", "m2", "20221001091000", "P2", **BOB),
        referral("m3", "20221001093000", "R1", "P2", "2022-09-01", "physio"),
        merge("m4", "20221002090000", "P1", "P2"),
        booking("S12", "m5", "20221003090000", "C1", "R1", "P1", "2022-10-20 09:00", "Booked"),
        booking("S12", "m6", "20221001100000", "C2", "R1", "P2", "2022-10-21 09:00", "Booked"),  # before the A40
        booking("S12", "m7", "20221004100000", "C3", "R1", "P2", "2022-10-22 09:00", "Booked"),  # after it
    ])
    out = run(feed.parent, tmp_path / "run")
    assert quarantined(out) == {}
    contacts = _canonical(out, "contacts").sort("contact_key")
    assert contacts.select("contact_key", "patient_key").rows() == [("C1", "P1"), ("C2", "P1"), ("C3", "P1")]
    assert _canonical(out, "referrals")["patient_key"].to_list() == ["P1"]
    disp = dispositions(out)
    assert [disp[("feed.hl7", r)] for r in (5, 6, 7)] == ["migrated"] * 3
    assert disp[("feed.hl7", 2)] == disp[("feed.hl7", 4)] == "merged"


def test_a_merge_chain_resolves_in_message_time_order(tmp_path: Path) -> None:
    """P3 into P2, then P2 into P1 (sent in the other order in the file): P3's referral is P1's."""
    feed = write_feed(tmp_path / "in" / "feed.hl7", [
        merge("m9", "20221003090000", "P1", "P2"),
        adt("A04", "m1", "20221001090000", "P1", **ANN),
        adt("A04", "m2", "20221001090000", "P2", **BOB),
        adt("A04", "m3", "20221001090000", "P3", nhs="9990002746", family="Carter", given="Ben", dob="2001-01-01",
            sex="M", postcode="WF1 1AB"),
        referral("m4", "20221001093000", "R3", "P3", "2022-09-01", "physio"),
        merge("m5", "20221002090000", "P2", "P3"),
    ])
    out = run(feed.parent, tmp_path / "run")
    assert _canonical(out, "referrals").select("referral_key", "patient_key").rows() == [("R3", "P1")]
    summary = pl.read_parquet(out / "patients.parquet").select("patient_key", "survivor_key").sort("patient_key")
    assert summary.rows() == [("P1", "P1"), ("P2", "P1"), ("P3", "P1")]


def test_conflicting_merges_are_refused_and_the_first_stands(tmp_path: Path) -> None:
    feed = write_feed(tmp_path / "in" / "feed.hl7", [
        adt("A04", "m1", "20221001090000", "P1", **ANN),
        adt("A04", "m2", "20221001090000", "P2", **BOB),
        adt("A04", "m3", "20221001090000", "P3", nhs="9990002746", family="Carter", given="Ben", dob="2001-01-01",
            sex="M", postcode="WF1 1AB"),
        merge("m4", "20221002090000", "P1", "P2"),
        merge("m5", "20221003090000", "P3", "P2"),  # P2 merged a second time, elsewhere
        merge("m6", "20221004090000", "P2", "P1"),  # a cycle: P2 was merged into P1
        merge("m7", "20221005090000", "P3", "P3"),  # into itself
    ])
    out = run(feed.parent, tmp_path / "run")
    q = pl.read_parquet(out / "quarantine.parquet").sort("source_row")
    assert q.select("source_row", "reason_code").rows() == [(5, "merge_conflict"), (6, "merge_conflict"),
                                                           (7, "merge_conflict")]
    assert "prior patient P2 was already merged into P1 by feed.hl7 row 4" in q["message"][0]
    assert "cycle" in q["message"][1]
    survivors = dict(pl.read_parquet(out / "patients.parquet").select("patient_key", "survivor_key").iter_rows())
    assert survivors == {"P1": "P1", "P2": "P1", "P3": "P3"}


def test_a_bad_update_never_erases_the_good_record(tmp_path: Path) -> None:
    """Regression: the latest S14 of a booking names an unknown referral. It is quarantined
    with its reason; the S12 before it stands (it was marked merged into the bad update,
    and the appointment disappeared from the canonical tables)."""
    feed = write_feed(tmp_path / "in" / "feed.hl7", [
        adt("A04", "m1", "20221001090000", "P1", **ANN),
        adt("A04", "m2", "20221001090000", "P2", **BOB),
        referral("m3", "20221001093000", "R1", "P1", "2022-09-01", "physio"),
        booking("S12", "m4", "20221002090000", "C1", "R1", "P1", "2022-10-20 09:00", "Booked"),
        booking("S14", "m5", "20221003090000", "C1", "R9", "P1", "2022-10-21 09:00", "Booked"),   # unknown referral
        booking("S12", "m6", "20221002090000", "C2", "R1", "P1", "2022-10-20 10:00", "Booked"),
        booking("S14", "m7", "20221003090000", "C2", "R1", "P1", "2022-10-22 10:00", "Booked"),   # applies
        booking("S14", "m8", "20221004090000", "C2", "R1", "P2", "2022-10-23 10:00", "Booked"),   # wrong patient
        adt("A08", "m9", "20221005090000", "P1", **{**ANN, "sex": "X"}),                          # unmapped sex
    ])
    out = run(feed.parent, tmp_path / "run")
    assert quarantined(out) == {("feed.hl7", 5): "unknown_referral", ("feed.hl7", 8): "patient_mismatch",
                                ("feed.hl7", 9): "unmapped_code"}
    contacts = _canonical(out, "contacts").sort("contact_key")
    assert contacts.select("contact_key", "source_row", pl.col("contact_datetime").dt.day()).rows() == [
        ("C1", 4, 20), ("C2", 7, 22)]
    disp = dispositions(out)
    assert (disp[("feed.hl7", 4)], disp[("feed.hl7", 6)], disp[("feed.hl7", 7)]) == ("migrated", "merged", "migrated")
    q = pl.read_parquet(out / "quarantine.parquet").sort("source_row")
    assert q["message"][0].endswith("update rejected, the state from feed.hl7 row 4 is kept")
    assert q["message"][1].endswith("update rejected, the state from feed.hl7 row 7 is kept")
    assert q["message"][2].endswith("update rejected, the state from feed.hl7 row 1 is kept")
    report = json.loads((out / "reports" / "reconciliation.json").read_text())
    assert report["updates"]["rejected_previous_kept"] == {"patients": 1, "referrals": 0, "contacts": 2, "codes": 0}


def test_a_rejected_update_in_the_middle_leaves_later_updates_applying_to_the_earlier_state(tmp_path: Path) -> None:
    feed = write_feed(tmp_path / "in" / "feed.hl7", [
        adt("A04", "m1", "20221001090000", "P1", **ANN),
        referral("m2", "20221001093000", "R1", "P1", "2022-09-01", "physio"),
        booking("S12", "m3", "20221002090000", "C1", "R1", "P1", "2022-10-20 09:00", "Booked"),
        booking("S14", "m4", "20221003090000", "C1", "R9", "P1", "2022-10-21 09:00", "Booked"),
        booking("S26", "m5", "20221004090000", "C1", "R1", "P1", "2022-10-20 09:00", "Noshow"),
    ])
    out = run(feed.parent, tmp_path / "run")
    assert quarantined(out) == {("feed.hl7", 4): "unknown_referral"}
    c1 = _canonical(out, "contacts")
    assert c1.select("source_row", pl.col("attendance").cast(pl.String), "referral_key").rows() == [
        (5, "did_not_attend", "R1")]
    assert dispositions(out)[("feed.hl7", 3)] == "merged"


def test_an_update_that_leaves_out_a_segment_or_field_keeps_it_and_the_explicit_null_deletes(
        tmp_path: Path) -> None:
    """Regression: an A08 without PD1 and with an empty PID-13 blanked the GP practice and
    the phone. Not sent keeps the current value; "" deletes it."""
    feed = write_feed(tmp_path / "in" / "feed.hl7", [
        adt("A04", "m1", "20221001090000", "P1", **ANN, practice="K84001", phone="01865 000001"),
        adt("A04", "m2", "20221001090000", "P2", **BOB, practice="B82005", phone="0113 496 0001"),
        adt("A08", "m3", "20221002090000", "P1", nhs="9434765919", practice=None, phone=None),
        adt("A08", "m4", "20221002090000", "P2", nhs="9990001375", practice='""', phone='""', postcode='""'),
        referral("m5", "20221001093000", "R1", "P1", "2022-09-01", "physio"),
        booking("S12", "m6", "20221002090000", "C1", "R1", "P1", "2022-10-20 09:00", "Booked"),
        # an S14 that sends only the new time: the referral, patient and status stand
        booking("S14", "m7", "20221003090000", "C1", None, None, "2022-10-27 09:00", None, kind=None),
    ])
    out = run(feed.parent, tmp_path / "run")
    assert quarantined(out) == {}
    patients = _canonical(out, "patients").sort("patient_key")
    assert patients.select("patient_key", "gp_ods_code", "phone", "postcode", "family_name", "birth_date",
                           "source_row").rows() == [
        ("P1", "K84001", "01865 000001", "OX1 1AA", "Smith", ANN_DOB, 3),
        ("P2", None, None, None, "Jones", BOB_DOB, 4)]
    contact = _canonical(out, "contacts").row(0, named=True)
    assert (contact["referral_key"], contact["patient_key"], str(contact["attendance"]), contact["source_row"],
            contact["contact_datetime"].day) == ("R1", "P1", "booked", 7, 27)


def test_an_explicit_null_in_a_required_field_is_refused_and_the_record_stands(tmp_path: Path) -> None:
    feed = write_feed(tmp_path / "in" / "feed.hl7", [
        adt("A04", "m1", "20221001090000", "P1", **ANN),
        adt("A08", "m2", "20221002090000", "P1", nhs="9434765919", dob='""', family="Smythe"),
        adt("A04", "m3", "20221001090000", "P3"),  # a first message without its birth date
    ])
    out = run(feed.parent, tmp_path / "run")
    q = pl.read_parquet(out / "quarantine.parquet").sort("source_row")
    assert q.select("source_row", "reason_code", "field").rows() == [(2, "missing_required", "birth_date"),
                                                                    (3, "missing_required", "birth_date")]
    assert q["message"][0] == ("feed.hl7 row 2: birth_date is required but blank, and no earlier message gave it; "
                               "update rejected, the state from feed.hl7 row 1 is kept")
    assert _canonical(out, "patients").select("family_name", "birth_date", "source_row").rows() == [
        ("Smith", ANN_DOB, 1)]


def test_a_message_delivered_again_applies_once_and_a_reused_control_id_is_held(tmp_path: Path) -> None:
    """Regression: a message whose MSH-10 repeats an earlier one's was applied a second time.
    The same text again (in the same file or another) is a re-delivery: merged. Other text
    under the same control id from the same sender: quarantined as duplicate_control_id.
    The same control id from another sending facility is another message."""
    a04 = adt("A04", "m1", "20221001090000", "P1", **ANN)
    booked = booking("S12", "s1", "20221002090000", "C1", "R1", "P1", "2022-10-20 09:00", "Booked")
    write_feed(tmp_path / "in" / "a.hl7", [
        a04,
        referral("r1", "20221001093000", "R1", "P1", "2022-09-01", "physio"),
        booked,
        a04,                                                                                  # again: merged
        booking("S15", "s1", "20221003090000", "C1", "R1", "P1", "2022-10-20 09:00", "Cancelled"),  # reused id
    ])
    write_feed(tmp_path / "in" / "b.hl7", [
        booked,                                                                               # again, elsewhere
        adt("A04", "m1", "20221001090000", "P2", **BOB).replace("|PAS|RXX|", "|PAS|RYY|"),  # another facility
    ])
    out = run(tmp_path / "in", tmp_path / "run")
    assert quarantined(out) == {("a.hl7", 5): "duplicate_control_id"}
    q = pl.read_parquet(out / "quarantine.parquet").row(0, named=True)
    assert q["message"].startswith("a.hl7 message 5: control id s1 from PAS/RXX was already used by a.hl7 message 3")
    assert json.loads(q["raw"]) == {"MSH-3": "PAS", "MSH-4": "RXX", "MSH-9": "SIU^S15", "MSH-10": "s1"}
    disp = dispositions(out)
    assert (disp[("a.hl7", 4)], disp[("b.hl7", 1)], disp[("b.hl7", 2)]) == ("merged", "merged", "migrated")
    assert _canonical(out, "contacts").select("source_file", "source_row", pl.col("attendance").cast(pl.String)
                                              ).rows() == [("a.hl7", 3, "booked")]
    assert sorted(_canonical(out, "patients")["patient_key"].to_list()) == ["P1", "P2"]
    report = json.loads((out / "reports" / "reconciliation.json").read_text())
    assert report["updates"]["repeated_deliveries"] == 2
    assert report["invariant"]["holds"]


def test_a_booking_the_profile_allows_without_a_referral_becomes_fhir_for_its_patient(tmp_path: Path) -> None:
    """Regression: a booking without SCH-26, allowed by the profile, was migrated but became
    no FHIR resource (invariant 2 failed). It is the patient's Appointment or Encounter,
    without basedOn; a booking with neither referral nor patient is quarantined."""
    from migrate.resources import mappings_dir

    profile = (mappings_dir() / "hl7v2.yaml").read_text().replace(
        'referral_key: {column: "SCH-26.1", required: true}', 'referral_key: "SCH-26.1"')
    assert 'referral_key: "SCH-26.1"' in profile
    (tmp_path / "lenient.yaml").write_text(profile)
    feed = write_feed(tmp_path / "in" / "feed.hl7", [
        adt("A04", "m1", "20221001090000", "P1", **ANN),
        referral("m2", "20221001093000", "R1", "P1", "2022-09-01", "physio"),
        booking("S12", "m3", "20221002090000", "C1", "R1", "P1", "2022-10-20 09:00", "Booked"),
        booking("S12", "m4", "20221002090000", "C2", None, "P1", "2022-10-21 09:00", "Booked"),
        booking("S12", "m5", "20221002090000", "C3", None, "P1", "2022-09-21 09:00", "Complete"),
        booking("S12", "m6", "20221002090000", "C4", None, None, "2022-10-21 09:00", "Booked"),
    ])
    out = run(feed.parent, tmp_path / "run", tmp_path / "lenient.yaml")
    assert quarantined(out) == {("feed.hl7", 6): "missing_required"}
    lineage = pl.read_parquet(out / "lineage.parquet").filter((pl.col("table") == "contacts") & (pl.col("source_row") < 6))
    assert lineage.select("source_row", pl.col("disposition").cast(pl.String), "fhir_type").sort("source_row").rows(
        ) == [(3, "migrated", "Appointment"), (4, "migrated", "Appointment"), (5, "migrated", "Encounter")]
    resources = {}
    for kind in ("Appointment", "Encounter"):
        for line in (out / "fhir" / "ndjson" / f"{kind}.ndjson").read_text().splitlines():
            r = json.loads(line)
            resources[r["identifier"][0]["value"]] = r
    assert "basedOn" in resources["C1"] and "basedOn" not in resources["C2"]
    assert "episodeOfCare" not in resources["C3"] and resources["C3"]["subject"]["reference"].startswith("Patient/")
    assert resources["C2"]["participant"][0]["actor"]["reference"] == resources["C3"]["subject"]["reference"]
    report = json.loads((out / "reports" / "reconciliation.json").read_text())
    assert report["invariants"]["holds"] and report["invariant_fhir"]["migrated_rows_without_resource"] == 0


def test_times_with_a_utc_offset_become_europe_london_local_time(tmp_path: Path) -> None:
    """Regression: SIU times with a UTC offset (202403181400+0000) could not be parsed (the
    profile's formats rejected %z). They are converted to Europe/London wall-clock time, the
    zone of every canonical date-time; MSH-7 orders messages as instants (a time without an
    offset is local), so an update stamped 09:30 BST comes before one stamped 09:00 UTC."""
    feed = write_feed(tmp_path / "in" / "feed.hl7", [
        adt("A04", "m1", "20230601090000", "P1", **ANN),
        referral("m2", "20230601093000", "R1", "P1", "2023-05-01", "physio"),
        booking("S12", "m3", "20230602090000", "C1", "R1", "P1", "202403181400+0000", "Booked"),   # GMT
        booking("S12", "m4", "20230602090000", "C2", "R1", "P1", "202406181400+0000", "Booked"),   # BST
        booking("S12", "m5", "20230602090000", "C3", "R1", "P1", "202406181530+0130", "Booked"),
        booking("S12", "m6", "20230602090000", "C4", "R1", "P1", "202406181400", "Booked"),        # local
        booking("S14", "m7", "20230618090000+0000", "C4", None, None, "202406181600", None, kind=None),
        booking("S14", "m8", "20230618093000", "C4", None, None, "202406181500", None, kind=None),  # 08:30 UTC
    ])
    out = run(feed.parent, tmp_path / "run")
    assert quarantined(out) == {}
    contacts = _canonical(out, "contacts").sort("contact_key")
    assert [t.isoformat() for t in contacts["contact_datetime"]] == [
        "2024-03-18T14:00:00", "2024-06-18T15:00:00", "2024-06-18T15:00:00", "2024-06-18T16:00:00"]
    assert contacts["source_row"].to_list() == [3, 4, 5, 7]
    starts = sorted(json.loads(line)["start"] for line in
                    (out / "fhir" / "ndjson" / "Appointment.ndjson").read_text().splitlines())
    assert starts == ["2024-03-18T14:00:00Z", "2024-06-18T15:00:00+01:00", "2024-06-18T15:00:00+01:00",
                      "2024-06-18T16:00:00+01:00"]


def test_a_profile_datetime_format_may_carry_an_offset(tmp_path: Path) -> None:
    from migrate.profile import load_profile

    path = tmp_path / "p.yaml"
    path.write_text("profile: p\nformat_version: 1\ntables:\n  contacts:\n    files: c.csv\n    fields:\n"
                    "      contact_key: id\n      referral_key: ref\n"
                    "      contact_datetime: {column: at, formats: ['%Y-%m-%dT%H:%M:%S%z', '%Y-%m-%d %H:%M']}\n")
    spec = load_profile(path).tables["contacts"]
    assert spec.fields[2].formats == ("%Y-%m-%dT%H:%M:%S%z", "%Y-%m-%d %H:%M")
