"""The synthetic HL7 feed: deterministic, its planted truth is what the reader quarantines."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest

from migrate.sources.hl7 import read_hl7
from migrate.synth import synthesise
from migrate.synth.hl7 import EVENTS, PLANTED_KINDS, synthesise_hl7

PATHS = ["PID-3[type=MR].1", "PID-3[type=NH].1", "PID-5.1", "PID-7", "RF1-6.1", "SCH-2.1", "SCH-26.1", "MRG-1.1"]


@pytest.fixture(scope="module")
def feed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, object]]:
    out = tmp_path_factory.mktemp("feed")
    return out, synthesise_hl7(out, messages=3_000, seed=7)


def test_same_arguments_same_bytes(feed: tuple[Path, dict[str, object]], tmp_path: Path) -> None:
    out, summary = feed
    again = synthesise_hl7(tmp_path, messages=3_000, seed=7)
    assert (tmp_path / "feed.hl7").read_bytes() == (out / "feed.hl7").read_bytes()
    truth = Path("truth") / "hl7_quarantine.csv"
    assert (tmp_path / truth).read_bytes() == (out / truth).read_bytes()
    assert {k: v for k, v in again.items() if k != "out"} == {k: v for k, v in summary.items() if k != "out"}


def test_feed_has_every_event_framing_and_envelope(feed: tuple[Path, dict[str, object]]) -> None:
    out, summary = feed
    assert set(summary["events"]) == set(EVENTS)  # type: ignore[call-overload]
    data = (out / "feed.hl7").read_bytes()
    assert data.startswith(b"FHS|") and b"\rBHS|" in data[:200] and data.endswith(b"BTS|3000\rFTS|1\r")
    assert data.count(b"\x0bMSH|") == summary["mllp_framed"] > 0


def test_reader_quarantines_exactly_the_planted_messages(feed: tuple[Path, dict[str, object]], tmp_path: Path) -> None:
    out, summary = feed
    result = read_hl7(out / "feed.hl7", "feed.hl7", PATHS, tmp_path)
    truth = pl.read_csv(out / "truth" / "hl7_quarantine.csv", schema_overrides={"source_row": pl.Int64})
    assert result.rows_read == 3_000
    assert result.rejected.select("source_file", "source_row", "reason_code").equals(truth)
    assert set(truth["reason_code"]) == set(PLANTED_KINDS)
    frame = result.messages.collect()
    assert frame.height == 3_000 - truth.height
    assert frame["PID-3[type=MR].1"].str.contains(r"^P[0-9]{7}$").all()
    refs = frame.filter(pl.col("message_type") == "REF")
    assert refs["RF1-6.1"].str.contains(r"^RH[0-9]{7}$").all()
    siu = frame.filter(pl.col("message_type") == "SIU")
    assert siu["SCH-2.1"].str.contains(r"^CH[0-9]{7}$").all() and siu["SCH-26.1"].str.contains(r"^RH").all()
    assert frame.filter(pl.col("event") == "A40")["MRG-1.1"].is_not_null().all()


def test_people_come_from_the_csv_extract(tmp_path: Path) -> None:
    synthesise(tmp_path / "csv", patients=1_000, seed=5)
    summary = synthesise_hl7(tmp_path / "hl7", messages=1_000, seed=5, patients_csv=tmp_path / "csv" / "patients.csv")
    people = pl.read_csv(tmp_path / "csv" / "patients.csv", infer_schema=False, truncate_ragged_lines=True,
                         encoding="utf8-lossy").unique("patient_id", keep="first", maintain_order=True)
    result = read_hl7(tmp_path / "hl7" / "feed.hl7", "feed.hl7", PATHS, tmp_path / "work")
    frame = result.messages.collect()
    known = frame.join(people, left_on="PID-3[type=MR].1", right_on="patient_id", how="inner")
    assert known.height == frame.height > 0 and 0 < summary["people"] <= people.height  # type: ignore[operator]
    same = known.filter(pl.col("PID-3[type=NH].1").is_not_null())
    assert (same["PID-3[type=NH].1"] == same["nhs_number"]).all()
    assert (known["PID-5.1"] == known["family_name"]).all()
    assert (known["PID-7"] == known["birth_date"].str.replace_all("-", "")).all()


def test_the_feed_exercises_updates_redeliveries_and_hl7_vocabulary(feed: tuple[Path, dict[str, object]],
                                                                      tmp_path: Path) -> None:
    """Ingest of the synthetic feed: each re-delivered copy applies once (merged), nothing
    but the planted messages fails HL7 validation, partial A08s keep the practice, S15s
    with SCH-6 PAT are the patient's cancellations, an S15 or S26 without SCH-25 still
    cancels or records the no-show, HL7 table 0276 codes map."""
    from migrate.ingest import ingest
    from migrate.profile import load_profile

    out, summary = feed
    inp = tmp_path / "in"
    inp.mkdir()
    (inp / "feed.hl7").write_bytes((out / "feed.hl7").read_bytes())
    result = ingest(inp, load_profile("hl7v2"), tmp_path / "work")
    assert summary["redelivered"] == result.repeated_deliveries > 0
    q = result.quarantine
    truth = pl.read_csv(out / "truth" / "hl7_quarantine.csv", schema_overrides={"source_row": pl.Int64})
    assert q.filter(pl.col("reason_code").str.starts_with("hl7_")).select(
        "source_file", "source_row", "reason_code").sort("source_row").equals(truth)
    assert "duplicate_control_id" not in set(q["reason_code"])
    contacts = result.tables["contacts"].collect()
    attendance = set(contacts["attendance"].cast(pl.String))
    assert {"cancelled_by_patient", "cancelled_by_provider", "booked", "attended"} <= attendance
    assert set(contacts["contact_type"].cast(pl.String)) == {"initial", "follow_up", "procedure"}
    # an appointment whose last message is an S15 is cancelled, an S26 a no-show, whether or
    # not that message sent SCH-25 (some leave it out)
    events = read_hl7(inp / "feed.hl7", "feed.hl7", ["SCH-25.1"], tmp_path / "w3").messages.collect()
    last = contacts.join(events, on=["source_file", "source_row"]).select(
        "event", pl.col("attendance").cast(pl.String), pl.col("SCH-25.1").is_null().alias("omitted"))
    cancelled = last.filter(pl.col("event") == "S15")
    no_show = last.filter(pl.col("event") == "S26")
    assert cancelled["attendance"].is_in(["cancelled_by_patient", "cancelled_by_provider"]).all()
    assert (no_show["attendance"] == "did_not_attend").all()
    assert cancelled["omitted"].sum() > 0 and no_show["omitted"].sum() > 0 and (~cancelled["omitted"]).sum() > 0
    # a partial A08 (no PD1) never blanks the practice: every patient one of whose applied
    # messages named a practice has one
    sent = read_hl7(inp / "feed.hl7", "feed.hl7", ["PID-3[type=MR].1", "PD1-3.3"], tmp_path / "w2").messages
    named = (sent.collect().join(q.select("source_row"), on="source_row", how="anti")
             .filter(pl.col("PD1-3.3").is_not_null())["PID-3[type=MR].1"].unique())
    patients = result.tables["patients"].collect()
    practices = patients.filter(pl.col("patient_key").is_in(named.implode()))["gp_ods_code"]
    assert practices.len() > 0 and practices.null_count() == 0
    assert patients["gp_ods_code"].null_count() < patients.height // 10
