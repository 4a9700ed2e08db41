"""handover synth: determinism, the seed's list sizes, and a truth that an independent reading confirms.

The checks here do not reuse the generator's code: files are read with Python's csv
module, the quarantine reasons are re-derived from mappings/generic-csv.yaml, and cohorts
and flags are re-derived row by row from domain.md's definitions.
"""

from __future__ import annotations

import csv
import json
import re
from collections import defaultdict
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

import polars as pl
import pytest
import yaml

from migrate import canonical
from migrate.quarantine import REASON_CODES
from migrate.synth import SynthSummary, synthesise

ROOT = Path(__file__).resolve().parents[2]
PROFILE = yaml.safe_load((ROOT / "mappings" / "generic-csv.yaml").read_text(encoding="utf-8"))
T = date(2022, 10, 1)
SMALL = 2_000
FILES = ("patients", "referrals", "contacts", "codes")
DUMMY = {"DO NOT ATTEND", "ADMIN APPOINTMENT ONLY"}
DISSENT = {"416409005", "416308001", "320011000000108", "93C1", "93C3", "9Nd1", "9NdH", "9NdJ", "9Ndo"}
CONSENT = {"425691002", "417528008", "417370002", "319951000000105", "9Nd7"}
SPINAL = {"lumbar_spine", "thoracic_spine", "cervical_spine"}
ACTIVITY = ("transition", "backlog", "pifu", "pifu_expired", "closed", "rejected")


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, SynthSummary]:
    out = tmp_path_factory.mktemp("synth") / "extract"
    return out, synthesise(out, patients=SMALL)


def records(path: Path) -> tuple[list[str], list[list[str]]]:
    """Header and data records as Python's csv module reads them, blank lines skipped.

    Bytes that are not UTF-8 survive as surrogates, so an invalid byte can be seen."""
    header, rows, _ = raw_records(path)
    return header, rows


def raw_records(path: Path) -> tuple[list[str], list[list[str]], list[str]]:
    """``records`` and the raw text of each data record (the lines the csv module consumed)."""
    consumed: list[str] = []

    def lines(fh: Any) -> Any:
        for line in fh:
            consumed.append(line)
            yield line

    rows, raws = [], []
    with path.open(encoding="utf-8", errors="surrogateescape", newline="") as fh:
        for r in csv.reader(lines(fh)):
            if r:
                rows.append(r)
                raws.append("".join(consumed))
            consumed.clear()
    return rows[0], rows[1:], raws[1:]


def stray_quote(raw: str, row: list[str]) -> bool:
    """A record the csv module reads only by leniency: a quote in an unquoted field, or text
    after a closing quote (strict mode refuses it, or a quoted value is not written quoted)."""
    try:
        list(csv.reader([raw], strict=True))
    except csv.Error:
        return True
    return any('"' in v and '"' + v.replace('"', '""') + '"' not in raw for v in row)


def truth_csv(out: Path, name: str) -> list[dict[str, str]]:
    with (out / "truth" / name).open(encoding="utf-8", newline="") as fh:
        return list(csv.DictReader(fh))


def mod11_valid(number: str) -> bool:
    """NHS number check (domain.md §6), written independently of the generator."""
    if not re.fullmatch(r"\d{10}", number):
        return False
    check = 11 - sum(int(d) * w for d, w in zip(number[:9], range(10, 1, -1))) % 11
    return check != 10 and (0 if check == 11 else check) == int(number[9])


def test_mod11_helper_agrees_with_domain_examples() -> None:
    assert all(mod11_valid(n) for n in ("9434765919", "9912003888", "4010232137"))
    assert not any(mod11_valid(n) for n in ("1234567890", "9434765918"))


# --- row-level defects, read from the profile ------------------------------------------------

def _kind(table: str, field: str) -> str:
    return canonical.TABLES[table].field(field).kind


def row_defects(table: str, header: list[str], row: list[str], raw: str | None = None) -> set[str]:
    """Quarantine reasons of one record that need no other row, per the profile."""
    if raw is not None and stray_quote(raw, row):
        return {"malformed_record"}
    if len(row) != len(header):
        return {"wrong_field_count"}
    if any(re.search("[\udc80-\udcff]", v) for v in row):
        return {"invalid_encoding"}
    values = dict(zip(header, row))
    defaults = PROFILE["defaults"]
    nulls = set(defaults["null_values"])
    found: set[str] = set()
    for name, spec in PROFILE["tables"][table]["fields"].items():
        raw = values[spec["column"]].strip()
        if raw in nulls:
            if spec.get("required"):
                found.add("missing_required")
            continue
        kind = _kind(table, name)
        if kind in ("date", "datetime"):
            formats = defaults["date_formats"] + (defaults["datetime_formats"] if kind == "datetime" else [])
            if not any(_parses(raw, f) for f in formats):
                found.add("unparseable_date")
        elif kind == "boolean":
            if raw.upper() not in {v.upper() for v in defaults["true_values"] + defaults["false_values"]}:
                found.add("invalid_value")
        elif kind == "enum":
            mapped = {str(k).upper(): v for k, v in spec.get("map", {}).items()}.get(raw.upper())
            cased = raw.lower() if spec.get("case") == "lower" else raw
            if mapped is None and cased not in (canonical.TABLES[table].field(name).enum_values or ()):
                found.add("unmapped_code")
    return found


def _parses(text: str, fmt: str) -> bool:
    try:
        datetime.strptime(text, fmt)
    except ValueError:
        return False
    return True


def expected_quarantine(out: Path) -> set[tuple[str, int, str, str]]:
    """Every record a correct run must quarantine, derived from the files alone; asserts
    that each such record has exactly one reason (so the reason is unambiguous)."""
    raw = {t: raw_records(out / f"{t}.csv") for t in FILES}
    data = {t: (h, rows) for t, (h, rows, _) in raw.items()}
    defects: dict[str, list[set[str]]] = {t: [row_defects(t, h, r, text) for r, text in zip(rows, texts)]
                                          for t, (h, rows, texts) in raw.items()}
    col = {t: {c: i for i, c in enumerate(h)} for t, (h, _) in data.items()}

    def get(t: str, row: list[str], c: str) -> str | None:
        i = col[t][c]
        return row[i] if i < len(row) else None

    patient_ids = {r[0] for r in data["patients"][1]}
    bad_patients = {r[0] for r, d in zip(data["patients"][1], defects["patients"]) if d}
    seen: set[str] = set()
    owner: dict[str, str | None] = {}
    for row, d in zip(data["referrals"][1], defects["referrals"]):
        rid, pid = row[0], get("referrals", row, "patient_id")
        if rid in seen:
            d.add("duplicate_key")
        elif pid not in patient_ids:
            d.add("unknown_patient")
        elif not d and pid in bad_patients:
            d.add("parent_quarantined")
        if rid not in seen:
            seen.add(rid)
            owner[rid] = pid
    good_refs = {r[0] for r, d in zip(data["referrals"][1], defects["referrals"]) if not d}
    bad_refs = {r[0] for r, d in zip(data["referrals"][1], defects["referrals"]) if d} - good_refs
    seen = set()
    for row, d in zip(data["contacts"][1], defects["contacts"]):
        cid, ref, who = row[0], get("contacts", row, "referral_id"), get("contacts", row, "patient_id")
        if cid in seen:
            d.add("duplicate_key")
        seen.add(cid)
        if d:
            continue
        if ref not in owner:
            d.add("unknown_referral")
        elif ref in bad_refs or who in bad_patients:
            d.add("parent_quarantined")
        elif who != owner[ref]:
            d.add("patient_mismatch")
    for row, d in zip(data["codes"][1], defects["codes"]):
        if not d and row[0] not in patient_ids:
            d.add("unknown_patient")
        elif not d and row[0] in bad_patients:
            d.add("parent_quarantined")
    found = set()
    for t in FILES:
        for n, d in enumerate(defects[t], start=1):
            assert len(d) <= 1, f"{t}.csv row {n} has several defects {d}: its reason would be ambiguous"
            if d:
                found.add((f"{t}.csv", n, t, d.pop()))
    return found


def test_quarantine_truth_is_exactly_the_malformed_rows(small: tuple[Path, SynthSummary]) -> None:
    out, _ = small
    truth = {(r["source_file"], int(r["source_row"]), r["table"], r["reason_code"])
             for r in truth_csv(out, "quarantine.csv")}
    assert truth == expected_quarantine(out)
    # every reason code of a delimited extract is planted (HL7 reasons, source merges and
    # control ids come with the HL7 feed; conflicting_value with a profile's implied_by)
    feed_only = ("merge_conflict", "duplicate_control_id", "conflicting_value")
    assert {r[3] for r in truth} == {c for c in REASON_CODES if not c.startswith("hl7_") and c not in feed_only}
    by_file = defaultdict(list)
    for f, n, _, reason in truth:
        by_file[f].append(n)
    for f, rows in by_file.items():  # scattered through the file, not only at the end
        assert min(rows) < 0.5 * len(records(out / f)[1])


def test_source_rows_count_records_not_lines(small: tuple[Path, SynthSummary]) -> None:
    out, summary = small
    for t in FILES:
        header, rows = records(out / f"{t}.csv")
        assert summary.rows[f"{t}.csv"] == len(rows)
    raw = (out / "patients.csv").read_bytes()
    assert raw.endswith(b"\n\n\n")  # the last record, then two blank lines that are not rows
    header, rows = records(out / "patients.csv")
    assert raw.count(b"\n") - 2 - 1 > len(rows)  # an embedded newline: more lines than records
    tail = (out / "contacts.csv").read_bytes()
    assert not tail.endswith(b"\n")
    header, contacts = records(out / "contacts.csv")
    last = {(r["source_file"], int(r["source_row"])): r["reason_code"] for r in truth_csv(out, "quarantine.csv")}
    assert len(contacts[-1]) < len(header) and last[("contacts.csv", len(contacts))] == "wrong_field_count"


def test_embedded_newline_row_is_intact(small: tuple[Path, SynthSummary]) -> None:
    out, _ = small
    header, rows = records(out / "patients.csv")
    multi = [(n, r) for n, r in enumerate(rows, start=1) if any("\n" in v for v in r)]
    assert len(multi) == 1
    n, row = multi[0]
    assert len(row) == len(header) and row_defects("patients", header, row) == set()
    address = row[header.index("address")]
    assert address.startswith("Flat 2\n") and row[header.index("postcode")]
    quarantined = {int(r["source_row"]) for r in truth_csv(out, "quarantine.csv") if r["source_file"] == "patients.csv"}
    assert n not in quarantined
    assert row[0] in {r["patient_id"] for r in truth_csv(out, "patient_cohorts.csv")}


def test_deterministic_and_seeded(tmp_path: Path) -> None:
    a, b, c = (tmp_path / x for x in "abc")
    synthesise(a, patients=1_200, seed=7)
    synthesise(b, patients=1_200, seed=7)
    synthesise(c, patients=1_200, seed=8)
    names = sorted(str(p.relative_to(a)) for p in a.rglob("*") if p.is_file())
    assert names == sorted(str(p.relative_to(b)) for p in b.rglob("*") if p.is_file())
    assert len(names) == 11
    for name in names:
        assert (a / name).read_bytes() == (b / name).read_bytes(), name
    assert (a / "patients.csv").read_bytes() != (c / "patients.csv").read_bytes()


def test_nhs_numbers_in_test_range_and_valid_unless_planted(small: tuple[Path, SynthSummary]) -> None:
    out, _ = small
    _, rows = records(out / "patients.csv")
    bad = {int(r["source_row"]) for r in truth_csv(out, "quarantine.csv") if r["source_file"] == "patients.csv"}
    flags = truth_csv(out, "flags.csv")
    invalid = {f["subject_id"] for f in flags if f["flag_code"] == "NHS_NUMBER_INVALID"}
    missing = {f["subject_id"] for f in flags if f["flag_code"] == "NHS_NUMBER_MISSING"}
    holders: dict[str, list[str]] = defaultdict(list)
    seen_invalid, seen_missing = set(), set()
    for n, row in enumerate(rows, start=1):
        if n in bad:
            continue
        pid, number = row[0], re.sub(r"[ -]", "", row[1])
        if not number:
            seen_missing.add(pid)
            continue
        assert number.startswith("999") and len(number) == 10, pid
        if mod11_valid(number):
            holders[number].append(pid)
        else:
            seen_invalid.add(pid)
    assert seen_invalid == invalid and seen_missing == missing and invalid and missing
    shared = {"+".join(sorted(p)) for p in holders.values() if len(p) > 1}
    dups = truth_csv(out, "duplicates.csv")
    assert shared == {f"{d['patient_id_a']}+{d['patient_id_b']}" for d in dups if d["match_type"] != "probable"}
    assert any(" " in row[1] for row in rows)  # some written with spaces: normalised, not flagged


def test_default_size_reproduces_the_seed_lists(tmp_path: Path) -> None:
    summary = synthesise(tmp_path)
    bad = pl.read_csv(tmp_path / "truth" / "quarantine.csv").filter(pl.col("source_file") == "referrals.csv")
    header, rows = records(tmp_path / "referrals.csv")
    rows = [[v.encode("utf-8", "surrogateescape").decode("utf-8", "replace") for v in r] for r in rows]
    refs = pl.DataFrame([dict(zip(header, r)) for r in rows], schema=dict.fromkeys(header, pl.String)).with_row_index(
        "source_row", offset=1).with_columns(pl.col("source_row").cast(pl.Int64), pl.col(header).replace("", None))
    assert refs.height == summary.rows["referrals.csv"]
    merge = pl.read_csv(tmp_path / "truth" / "duplicates.csv").filter(pl.col("match_type") == "exact_nhs_number")
    entries = (
        refs.join(bad.select("source_row"), on="source_row", how="anti")
        .join(merge.select(pl.col("patient_id_b").alias("patient_id"), "patient_id_a"), on="patient_id", how="left")
        .select(pl.coalesce("patient_id_a", "patient_id").alias("person"), "transfer_list")
        .filter(pl.col("transfer_list").is_not_null()).unique()
    )
    counts = dict(entries.group_by("transfer_list").len().iter_rows())
    assert counts == {"backlog": 5_414, "transition": 6_008, "pifu": 7_523}
    per_person = entries.group_by("person").len()
    assert per_person.height == 18_942 and per_person.filter(pl.col("len") == 2).height == 3
    backlog = entries.filter(pl.col("transfer_list") == "backlog").select(pl.col("person").alias("patient_id"))
    patients = pl.read_csv(tmp_path / "patients.csv", infer_schema=False, truncate_ragged_lines=True,
                           encoding="utf8-lossy").select("patient_id", pl.col("nhs_number").str.replace_all(" ", ""))
    target = pl.read_csv(tmp_path / "target-index.csv", infer_schema=False)
    at_target = patients.join(backlog, on="patient_id", how="semi").join(target, on="nhs_number", how="semi")
    assert at_target.height == 1_498
    doc = json.loads((tmp_path / "truth" / "summary.json").read_text())
    assert doc["list_entries"] == {"backlog": 5_414, "transition": 6_008, "pifu": 7_523, "total": 18_945,
                                   "two_list_patients": 3}


# --- cohorts and flags, re-derived row by row ----------------------------------------------------

def _clean(out: Path, table: str) -> list[dict[str, str]]:
    bad = {int(r["source_row"]) for r in truth_csv(out, "quarantine.csv") if r["table"] == table}
    header, rows = records(out / f"{table}.csv")
    return [dict(zip(header, r)) for n, r in enumerate(rows, start=1) if n not in bad]


def _day(text: str) -> date | None:
    return date.fromisoformat(text) if text else None


def oracle(out: Path) -> tuple[dict[str, str], set[tuple[str, str, str]]]:
    """(cohort per referral, flags) from domain.md §2-§3, over the rows a correct run keeps."""
    refs, contacts, codes = _clean(out, "referrals"), _clean(out, "contacts"), _clean(out, "codes")
    patients = _clean(out, "patients")
    merged = {d["patient_id_b"]: d["patient_id_a"] for d in truth_csv(out, "duplicates.csv")
              if d["match_type"] == "exact_nhs_number"}
    by_ref: dict[str, list[dict[str, str]]] = defaultdict(list)
    for c in contacts:
        by_ref[c["referral_id"]].append(c)
    cohort: dict[str, str] = {}
    flags: set[tuple[str, str, str]] = set()
    person: dict[str, list[dict[str, str]]] = defaultdict(list)
    for r in refs:
        when = [(datetime.strptime(c["contact_datetime"], "%Y-%m-%d %H:%M").date(), c) for c in by_ref[r["referral_id"]]]
        attended = [d for d, c in when if c["attendance_code"] in ("5", "6") and d <= T and c["slot_name"] not in DUMMY]
        booked = any(c["attendance_code"] == "0" and d > T for d, c in when)
        expiry = _day(r["pifu_expiry_date"])
        oos = r["body_site"] == "lump" or (r["body_site"] == "hip" and "intra-articular hip injection" in r["reason"].lower())
        if r["status"] == "rejected" or oos:
            got = "rejected"
        elif r["status"] == "closed":
            got = "closed"
        elif not attended:
            got = "backlog"
        elif expiry and not booked:
            got = "pifu" if expiry >= T else "pifu_expired"
        else:
            got = "transition"
        cohort[r["referral_id"]] = got
        person[merged.get(r["patient_id"], r["patient_id"])].append(r | {"cohort": got})
        received, is_open = date.fromisoformat(r["received_date"]), r["status"] == "open"
        indicator = bool(r["red_flags"]) or (r["history_of_cancer"] == "Y" and r["body_site"] in SPINAL)
        surgery = _day(r["surgery_date"])
        raised = {
            "UNDER_PRIORITISED": is_open and r["priority"] == "1" and indicator,
            "OVER_PRIORITISED": is_open and r["priority"] == "2" and not indicator,
            "URGENT_WAIT_BREACH": is_open and r["priority"] == "2" and received + timedelta(days=14) < T
            and not any(d <= received + timedelta(days=14) for d in attended),
            "POST_OP_NOT_PRIORITISED": is_open and r["priority"] == "1" and surgery is not None
            and T - timedelta(days=84) <= surgery <= T,
            "CANCER_HISTORY_NOT_RECORDED": is_open and r["history_of_cancer"] == "",
            "AWAITING_INJECTION": is_open and r["awaiting_injection"] == "Y",
            "OUT_OF_SCOPE": oos,
            "PIFU_EXPIRED": got == "pifu_expired",
            "WRONG_TRANSFER_LIST": r["transfer_list"] != "" and r["transfer_list"] != got
            and not (r["transfer_list"] == "pifu" and got == "pifu_expired"),
        }
        flags |= {("referral", r["referral_id"], code) for code, on in raised.items() if on}
    latest: dict[str, tuple[str, str]] = {}
    for k in codes:
        if k["code"] in DISSENT | CONSENT and (k["patient_id"] not in latest or k["recorded_date"] > latest[k["patient_id"]][0]):
            latest[k["patient_id"]] = (k["recorded_date"], k["code"])
    for pid, rs in person.items():
        top = min(ACTIVITY.index(r["cohort"]) for r in rs)
        if pid in latest and latest[pid][1] in DISSENT:
            flags.add(("patient", pid, "SHARING_BLOCK"))
            if ACTIVITY[top] == "transition" or any(r["priority"] == "2" and r["status"] == "open" for r in rs):
                flags.add(("patient", pid, "SHARING_BLOCK_ACTIVE_CARE"))
        if len({r["transfer_list"] for r in rs} - {""}) > 1:
            flags.add(("patient", pid, "ON_TWO_LISTS"))
    target = {r["nhs_number"] for r in csv.DictReader((out / "target-index.csv").open(encoding="utf-8"))}
    for p in patients:
        number = re.sub(r"[ -]", "", p["nhs_number"])
        if not number:
            flags.add(("patient", p["patient_id"], "NHS_NUMBER_MISSING"))
        elif not mod11_valid(number):
            flags.add(("patient", p["patient_id"], "NHS_NUMBER_INVALID"))
        elif number in target:
            flags.add(("patient", p["patient_id"], "ALREADY_AT_TARGET"))
    for d in truth_csv(out, "duplicates.csv"):
        code = {"probable": "PROBABLE_DUPLICATE", "conflict": "NHS_NUMBER_CONFLICT"}.get(d["match_type"],
                                                                                      "DUPLICATE_NHS_NUMBER")
        flags.add(("patient", f"{d['patient_id_a']}+{d['patient_id_b']}", code))
    return cohort, flags


def test_truth_cohorts_and_flags_match_an_independent_reading(small: tuple[Path, SynthSummary]) -> None:
    out, summary = small
    cohort, flags = oracle(out)
    assert cohort == {r["referral_id"]: r["cohort"] for r in truth_csv(out, "cohorts.csv")}
    truth = {(f["subject_type"], f["subject_id"], f["flag_code"]) for f in truth_csv(out, "flags.csv")}
    assert flags == truth
    raised = {code for _, _, code in truth}
    assert raised == {"SHARING_BLOCK", "SHARING_BLOCK_ACTIVE_CARE", "UNDER_PRIORITISED", "OVER_PRIORITISED",
                      "CANCER_HISTORY_NOT_RECORDED", "POST_OP_NOT_PRIORITISED", "URGENT_WAIT_BREACH",
                      "AWAITING_INJECTION", "OUT_OF_SCOPE", "PIFU_EXPIRED", "WRONG_TRANSFER_LIST", "ON_TWO_LISTS",
                      "NHS_NUMBER_INVALID", "NHS_NUMBER_MISSING", "DUPLICATE_NHS_NUMBER", "NHS_NUMBER_CONFLICT",
                      "PROBABLE_DUPLICATE",
                      "ALREADY_AT_TARGET"}
    assert set(cohort.values()) == set(ACTIVITY)
    assert all(v >= 1 for v in summary.planted.values()), summary.planted


def test_duplicates_are_what_they_claim(small: tuple[Path, SynthSummary]) -> None:
    out, _ = small
    people = {p["patient_id"]: p for p in _clean(out, "patients")}
    kinds: dict[str, int] = defaultdict(int)
    for d in truth_csv(out, "duplicates.csv"):
        a, b = people[d["patient_id_a"]], people[d["patient_id_b"]]
        kinds[d["match_type"]] += 1
        same_number = re.sub(r"\D", "", a["nhs_number"]) == re.sub(r"\D", "", b["nhs_number"])
        if d["match_type"] == "exact_nhs_number":
            assert same_number and all(a[k] == b[k] for k in ("family_name", "given_names", "birth_date", "postcode"))
        elif d["match_type"] == "conflict":
            assert same_number and a["birth_date"] != b["birth_date"]
        else:
            assert b["nhs_number"] == "" and a["given_names"] == b["given_names"]
            ya, ma, da = a["birth_date"].split("-")
            swapped = b["birth_date"] == f"{ya}-{da}-{ma}" and a["family_name"] == b["family_name"]
            typo = (a["birth_date"] == b["birth_date"] and a["family_name"] != b["family_name"]
                    and sorted(a["family_name"]) == sorted(b["family_name"]))
            assert swapped or typo
    assert set(kinds) == {"exact_nhs_number", "probable", "conflict"}


def test_summary_is_json_and_matches(small: tuple[Path, SynthSummary]) -> None:
    out, summary = small
    doc: dict[str, Any] = json.loads((out / "truth" / "summary.json").read_text(encoding="utf-8"))
    assert doc["parameters"] == {"patients": SMALL, "seed": 20221001, "cutover": "2022-10-01", "sharing_as": "codes"}
    assert doc["rows"] == summary.rows and doc["planted"] == summary.planted
    assert summary.asdict()["list_entries"]["total"] == sum(summary.list_entries[k] for k in ("backlog", "transition", "pifu"))
    with pytest.raises(AttributeError):
        summary.patients = 3  # type: ignore[misc]
