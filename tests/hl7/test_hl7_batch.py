"""HL7 v2 as a source in a whole batch: routed by event, updates, merges, CSV + HL7 agreement."""

from __future__ import annotations

import shutil
from datetime import date
from pathlib import Path

import polars as pl

from migrate.pipeline import RunConfig, run_batch
from migrate.synth import synthesise
from migrate.synth.hl7 import synthesise_hl7

CASE = Path(__file__).parents[1] / "cases" / "worked-example"
CUTOVER = date(2022, 10, 1)


def _msh(event: str, control: str, sent: str, structure: str) -> str:
    kind = {"A": "ADT", "I": "REF", "S": "SIU"}[event[0]]
    return f"MSH|^~\\&|PAS|RXX|HANDOVER|RYY|{sent}||{kind}^{event}^{structure}|{control}|P|2.4"


def _pid(pid: str, nhs: str, family: str, given: str, dob: str, sex: str, postcode: str) -> str:
    ids = f"{nhs}^^^NHS^NH~{pid}^^^RXX^MR" if nhs else f"{pid}^^^RXX^MR"
    return f"PID|1||{ids}||{family}^{given}||{dob.replace('-', '')}|{sex}|||^^^^{postcode}"


def adt(event: str, control: str, sent: str, pid: str, nhs: str, family: str, given: str, dob: str, sex: str,
        postcode: str, practice: str = "K84001") -> str:
    structure = "ADT_A05" if event in ("A28", "A31") else "ADT_A01"
    return "\r".join([_msh(event, control, sent, structure), f"EVN|{event}|{sent}",
                      _pid(pid, nhs, family, given, dob, sex, postcode), f"PD1|||Practice^^{practice}", "PV1|1|N"])


def merge(control: str, sent: str, survivor: str, prior: str) -> str:
    return "\r".join([_msh("A40", control, sent, "ADT_A39"), f"EVN|A40|{sent}",
                      f"PID|1||{survivor}^^^RXX^MR||X^Y", f"MRG|{prior}^^^RXX^MR"])


def referral(control: str, sent: str, rid: str, pid: str, received: str, service: str, priority: str = "R",
             status: str = "A") -> str:
    return "\r".join([_msh("I12", control, sent, "REF_I12"),
                      f"RF1|{status}|{priority}|{service}^x|||{rid}^PAS|{received.replace('-', '')}",
                      "PRD|RP|PATEL^ANIL", f"PID|1||{pid}^^^RXX^MR||X^Y"])


def booking(event: str, control: str, sent: str, cid: str, rid: str, pid: str, when: str, status: str,
            kind: str = "NEW") -> str:
    start = when.replace("-", "").replace(" ", "").replace(":", "")
    return "\r".join([_msh(event, control, sent, f"SIU_{event}"),
                      # SCH-2 filler id, SCH-7 reason, SCH-11.4 start, SCH-25 filler status, SCH-26 placer order
                      f"SCH||{cid}^PAS|||||{kind}^x||||^^^{start}" + "|" * 14 + f"{status}|{rid}^PAS",
                      f"PID|1||{pid}^^^RXX^MR||X^Y", "RGS|1", "AIL|1||OPD1^^^RXX"])


HL7_PROFILE_TABLES = {"patients": ["patient_key", "source_patient_id", "nhs_number", "family_name", "given_names",
                                   "birth_date", "sex", "postcode", "gp_ods_code"],
                      "referrals": ["referral_key", "patient_key", "received_date", "service_line",
                                    "assigned_priority", "status"],
                      "contacts": ["contact_key", "referral_key", "patient_key", "contact_datetime", "attendance"]}


def _write(path: Path, messages: list[str]) -> None:
    path.write_bytes(("\r\n".join(messages) + "\r\n").encode())


def _run(inp: Path, out: Path, *mappings: str | Path) -> Path:
    result = run_batch(RunConfig.load(inp, list(mappings), CUTOVER, out))
    assert result.ok
    return out


def test_csv_and_hl7_of_the_same_patients_give_the_same_canonical_rows(tmp_path: Path) -> None:
    patients = pl.read_csv(CASE / "input" / "patients.csv", infer_schema=False).head(5)
    referrals = pl.read_csv(CASE / "input" / "referrals.csv", infer_schema=False).head(5)
    contacts = pl.read_csv(CASE / "input" / "contacts.csv", infer_schema=False)
    contacts = contacts.filter(pl.col("referral_id").is_in(referrals["referral_id"].implode()))
    csv_dir, hl7_dir = tmp_path / "csv", tmp_path / "hl7"
    csv_dir.mkdir()
    hl7_dir.mkdir()
    for name, frame in (("patients", patients), ("referrals", referrals), ("contacts", contacts)):
        frame.write_csv(csv_dir / f"{name}.csv")
    (csv_dir / "codes.csv").write_text("patient_id,code_system,code,display,recorded_date\n")
    messages = [adt("A04", f"A{i}", "20220901090000", p["patient_id"], p["nhs_number"], p["family_name"],
                    p["given_name"], p["birth_date"], p["sex"][0].upper(), p["postcode"])
                for i, p in enumerate(patients.iter_rows(named=True))]
    rf1_status = {"open": "A", "closed": "E", "rejected": "R"}
    messages += [referral(f"R{i}", "20220901100000", r["referral_id"], r["patient_id"], r["received_date"],
                          r["service_line"], status=rf1_status[r["status"]])
                 for i, r in enumerate(referrals.iter_rows(named=True))]
    status = {"5": "Complete", "0": "Booked"}
    messages += [booking("S12", f"S{i}", "20220901110000", c["contact_id"], c["referral_id"], c["patient_id"],
                         c["contact_datetime"], status[c["attendance_code"]],
                         "NEW" if c["contact_type"] == "initial" else "FU")
                 for i, c in enumerate(contacts.iter_rows(named=True))]
    _write(hl7_dir / "feed.hl7", messages)
    a = _run(csv_dir, tmp_path / "a", CASE / "mapping.yaml")
    b = _run(hl7_dir, tmp_path / "b", "hl7v2")
    for table, columns in HL7_PROFILE_TABLES.items():
        left = pl.read_parquet(a / "canonical" / f"{table}.parquet").select(columns).sort(columns[0])
        right = pl.read_parquet(b / "canonical" / f"{table}.parquet").select(columns).sort(columns[0])
        assert left.height > 0
        assert left.equals(right), table


def test_updates_apply_in_message_time_order_and_a40_merges(tmp_path: Path) -> None:
    inp = tmp_path / "in"
    inp.mkdir()
    _write(inp / "feed.hl7", [
        adt("A04", "m1", "20221001090000", "P1", "9434765919", "Smith", "Ann", "1950-01-02", "F", "OX1 1AA"),
        # an update sent later: the latest state wins
        adt("A08", "m2", "20221002090000", "P1", "9434765919", "Smith", "Ann", "1950-01-02", "F", "OX9 9ZZ"),
        # an update that arrives later in the file but was sent EARLIER: applies before m2
        adt("A08", "m3", "20221001120000", "P1", "9434765919", "Smith", "Ann", "1950-01-02", "F", "OX5 5EE"),
        adt("A28", "m4", "20221001090000", "P2", "", "Smyth", "Anne", "1950-01-02", "F", "OX1 1AA"),
        referral("m5", "20221001093000", "R2", "P2", "2022-09-01", "physio_tier1"),
        merge("m6", "20221003090000", "P1", "P2"),
    ])
    run = _run(inp, tmp_path / "run", "hl7v2")
    patients = pl.read_parquet(run / "canonical" / "patients.parquet")
    assert patients.filter(pl.col("patient_key") == "P1")["postcode"].to_list() == ["OX9 9ZZ"]
    lineage = pl.read_parquet(run / "lineage.parquet").select("source_row", pl.col("disposition").cast(pl.String))
    disposition = dict(lineage.iter_rows())
    assert disposition[1] == "merged" and disposition[3] == "merged"  # superseded by m2
    assert disposition[2] == "migrated"
    assert disposition[4] == "merged" and disposition[6] == "merged"  # P2 merged into P1 by the A40
    cohorts = pl.read_parquet(run / "cohorts.parquet")
    assert cohorts.filter(pl.col("referral_key") == "R2")["patient_key"].to_list() == ["P1"]
    summary = pl.read_parquet(run / "patients.parquet").filter(pl.col("patient_key") == "P2")
    assert summary["survivor_key"].to_list() == ["P1"]


def test_an_s15_cancels_the_booking(tmp_path: Path) -> None:
    inp = tmp_path / "in"
    inp.mkdir()
    _write(inp / "feed.hl7", [
        adt("A04", "m1", "20221001090000", "P1", "9434765919", "Smith", "Ann", "1950-01-02", "F", "OX1 1AA"),
        referral("m2", "20221001093000", "R1", "P1", "2022-09-01", "physio_tier1"),
        booking("S12", "m3", "20221001100000", "C1", "R1", "P1", "2022-10-20 09:00", "Booked"),
        booking("S15", "m4", "20221002100000", "C1", "R1", "P1", "2022-10-20 09:00", "Cancelled"),
    ])
    run = _run(inp, tmp_path / "run", "hl7v2")
    contacts = pl.read_parquet(run / "canonical" / "contacts.parquet")
    assert contacts.select("contact_key", pl.col("attendance").cast(pl.String), "source_row").rows() == [
        ("C1", "cancelled_by_provider", 4)]


def test_synthetic_csv_and_hl7_feed_reconcile(tmp_path: Path) -> None:
    synthesise(tmp_path / "x", patients=1000, seed=5)
    synthesise_hl7(tmp_path / "h", messages=2000, seed=2, patients_csv=tmp_path / "x" / "patients.csv")
    inp = tmp_path / "in"
    inp.mkdir()
    for name in ("patients.csv", "referrals.csv", "contacts.csv", "codes.csv"):
        shutil.copy(tmp_path / "x" / name, inp / name)
    shutil.copy(tmp_path / "h" / "feed.hl7", inp / "feed.hl7")
    run = _run(inp, tmp_path / "run", "generic-csv", "hl7v2")
    q = pl.read_parquet(run / "quarantine.parquet").filter(pl.col("reason_code").str.starts_with("hl7_"))
    truth = pl.read_csv(tmp_path / "h" / "truth" / "hl7_quarantine.csv", infer_schema=False)
    assert truth.height > 0
    assert set(q.select("source_file", pl.col("source_row").cast(pl.String), "reason_code").iter_rows()) == set(
        truth.select("source_file", "source_row", "reason_code").iter_rows())
