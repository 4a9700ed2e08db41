"""A provider's extract handover has never seen, end to end (issue #10).

A synthetic extract (``handover synth``, with more red flags and e-RS dummy slots planted)
is written twice: in the generic layout, and in the new-provider layout of
tests/cases/new-provider/ — pipe-delimited, its own column names and dates, upper-case
red-flag abbreviations (CES, IVDU) beside mixed-case words (Night Pain), body sites in
words, Read codes padded with dots, a site-specific placeholder slot (ADMIN HOLD) and a
target index with its own column names. Then:

- ``check`` lists every vocabulary value with its rows and codelist, the abbreviations
  with none, and hints at the placeholder slot;
- a run with the default pack raises UNRECOGNISED_RED_FLAG on exactly the referrals in
  active care carrying an abbreviation no codelist knows (never a silent miss), and
  reports the vocabulary in reconciliation.json and the HTML page;
- ``check --rules site-pack.yaml`` shows the unknown values gone; and a run with the site
  pack gives exactly the generic layout's cohorts and flags (UNDER_PRIORITISED included),
  with the target index matched in its own layout and its bad rows quarantined.
"""

from __future__ import annotations

import csv
import json
import random
import shutil
from datetime import datetime
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from click.testing import CliRunner

import cli
from migrate.synth import synthesise

CASE = Path(__file__).parent / "cases" / "new-provider"
PROFILE = str(CASE / "mapping.yaml")
SITE_PACK = str(CASE / "site-pack.yaml")
CUTOVER = "2022-10-01"
ACTIVE = ("backlog", "transition", "pifu")

# Generic red-flag code -> how the new provider writes it, and whether the default pack
# knows that spelling (case and punctuation aside).
RED_FLAGS: dict[str, tuple[str, bool]] = {
    "cauda_equina": ("CES", False), "saddle_anaesthesia": ("SADDLE ANAES", False),
    "bladder_bowel_dysfunction": ("B+B DYSFUNCTION", False), "progressive_neuro_deficit": ("PROG NEURO DEFICIT", False),
    "weight_loss": ("Weight Loss", True), "night_pain": ("NIGHT PAIN", True), "fever": ("Fever", True),
    "immunosuppression": ("IMMUNOSUPP", False), "iv_drug_use": ("IVDU", False), "trauma": ("TRAUMA", True),
    "osteoporosis": ("Osteoporosis", True), "corticosteroids": ("STEROIDS", False), "inflammatory": ("INFLAM", False),
}
UNKNOWN = {written for written, known in RED_FLAGS.values() if not known}
SLOTS = {"DO NOT ATTEND": "ADMIN HOLD", "ADMIN APPOINTMENT ONLY": "Admin Appointment Only"}


def _iso(value: str, fmt: str) -> str:
    try:
        return datetime.strptime(value, "%Y-%m-%d").strftime(fmt)
    except ValueError:
        return value  # blank or planted garbage stays as it is


def _read(path: Path) -> tuple[list[str], list[list[str]]]:
    with path.open(newline="", encoding="utf-8") as fh:
        rows = list(csv.reader(fh))
    return rows[0], rows[1:]


def _write(path: Path, header: list[str], rows: list[list[str]]) -> None:
    with path.open("w", newline="", encoding="utf-8-sig") as fh:  # with a byte-order mark
        csv.writer(fh, delimiter="|", lineterminator="\r\n").writerows([header, *rows])


def _plant(extract: Path, rng: random.Random) -> None:
    """More red flags and dummy slots than a small synthetic extract holds, in the generic layout."""
    header, rows = _read(extract / "referrals.csv")
    flags = header.index("red_flags")
    for row in rng.sample([r for r in rows if len(r) == len(header)], 60):
        row[flags] = ";".join(rng.sample(sorted(RED_FLAGS), rng.choice((1, 1, 2))))
    with (extract / "referrals.csv").open("w", newline="", encoding="utf-8") as fh:
        csv.writer(fh, lineterminator="\n").writerows([header, *rows])
    header, rows = _read(extract / "contacts.csv")
    slot, code, ref = header.index("slot_name"), header.index("attendance_code"), header.index("referral_id")
    attended: dict[str, list[list[str]]] = {}
    for row in rows:
        if len(row) == len(header) and row[code] in ("5", "6"):
            attended.setdefault(row[ref], []).append(row)
    # A referral's only attendance in a dummy slot is no attendance: its cohort depends on it.
    only = sorted(key for key, seen in attended.items() if len(seen) == 1)
    for i, key in enumerate(rng.sample(only, 40)):
        attended[key][0][slot] = "DO NOT ATTEND" if i % 4 else "ADMIN APPOINTMENT ONLY"
    with (extract / "contacts.csv").open("w", newline="", encoding="utf-8") as fh:
        csv.writer(fh, lineterminator="\n").writerows([header, *rows])


def _convert(extract: Path, out: Path) -> None:
    """The same extract in the new-provider layout (tests/cases/new-provider/mapping.yaml)."""
    out.mkdir(parents=True)
    day = "%d-%b-%Y"

    def convert(name: str, new_name: str, new_header: list[str], row_of: Any) -> None:
        header, rows = _read(extract / name)
        converted = [row_of(dict(zip(header, r, strict=True))) if len(r) == len(header) else r for r in rows]
        _write(out / new_name, new_header, converted)

    convert("patients.csv", "PAT_EXPORT.txt",
            ["Pat Ref", "NHS No", "NHS Status", "Surname", "Forenames", "Date of Birth", "Gender", "Address",
             "Post Code", "GP Code", "Tel"],
            lambda r: [r["patient_id"], r["nhs_number"], r["nhs_number_status"], r["family_name"], r["given_names"],
                       _iso(r["birth_date"], day), {"M": "1", "F": "2", "I": "9", "U": "0"}.get(r["sex"], r["sex"]),
                       r["address"], r["postcode"].lower(), r["gp_practice"].lower(), r["phone"]])
    yes_no = {"Y": "Yes", "N": "No"}
    convert("referrals.csv", "REF_EXPORT.txt",
            ["Ref No", "Pat Ref", "UBRN", "Date Recd", "Service", "Source", "Priority", "List", "Status",
             "Discharge Date", "Discharge Reason", "PIFU Until", "Hx Ca", "Red Flags", "Site", "Op Date",
             "Awaiting Inj", "Reason"],
            lambda r: [r["referral_id"], r["patient_id"], r["ubrn"], _iso(r["received_date"], day),
                       r["service_line"].replace("_", " ").title(),
                       {"gp": "GP", "self": "Self", "consultant": "CONS"}.get(r["referral_source"], r["referral_source"]),
                       {"1": "R", "2": "U", "3": "2WW"}.get(r["priority"], r["priority"]), r["transfer_list"].upper(),
                       {"open": "ACTIVE", "closed": "DISCHARGED", "rejected": "REJECTED"}.get(r["status"], r["status"]),
                       _iso(r["closed_date"], day), r["closure_reason"], _iso(r["pifu_expiry_date"], day),
                       yes_no.get(r["history_of_cancer"], r["history_of_cancer"]),
                       "; ".join(RED_FLAGS[f][0] for f in r["red_flags"].split(";") if f),
                       r["body_site"].replace("_", " ").title(), _iso(r["surgery_date"], day),
                       yes_no.get(r["awaiting_injection"], r["awaiting_injection"]), r["reason"]])
    convert("contacts.csv", "APPT_EXPORT.txt",
            ["Appt ID", "Ref No", "Pat Ref", "Appt Date", "Appt Time", "Outcome", "Type", "Medium", "Procedure",
             "Location", "Slot"],
            lambda r: [r["contact_id"], r["referral_id"], r["patient_id"], _iso(r["contact_datetime"][:10], day),
                       r["contact_datetime"][11:], r["attendance_code"],
                       {"initial": "NEW", "follow_up": "FU", "procedure": "PROC"}.get(r["contact_type"],
                                                                                       r["contact_type"]),
                       r["medium"], r["procedure"], r["site"], SLOTS.get(r["slot_name"], r["slot_name"])])
    convert("codes.csv", "CODED_EXPORT.txt", ["Pat Ref", "Scheme", "Code", "Term", "Date Recorded", "Value"],
            lambda r: [r["patient_id"], r["code_system"].upper(),
                       r["code"].ljust(5, ".") if r["code_system"] == "read2" else r["code"], r["display"],
                       _iso(r["recorded_date"], day), r["value"]])
    header, rows = _read(extract / "target-index.csv")
    target = [[r[0], f"{r[1][:3]} {r[1][3:6]} {r[1][6:]}" if len(r[1]) == 10 else r[1], r[2], r[3],
               _iso(r[4], "%d/%m/%Y"), {"M": "Male", "F": "Female"}.get(r[5], r[5]), r[6].lower()] for r in rows]
    target += [["BAD1", "999 000 0001", "Nobody", "Nemo", "31/02/1950", "Male", "ox1 1aa"],  # no 31 February
               ["BAD2", "999 000 0002", "Nobody", "Nula", "01/01/1950", "X", "ox1 1aa"]]    # unknown sex code
    with (out / "TargetPatients.csv").open("w", newline="", encoding="utf-8") as fh:
        csv.writer(fh, lineterminator="\n").writerows(
            [["MRN", "NHS Number", "Last Name", "First Name", "DOB", "Sex", "Postcode"], *target])


def invoke(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli.main, list(args))
    return result.exit_code, result.stdout, result.stderr


@pytest.fixture(scope="module")
def extracts(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("new-provider")
    synthesise(root / "generic", patients=600, seed=11)
    _plant(root / "generic", random.Random(10))
    _convert(root / "generic", root / "new")
    return {"root": root, "generic": root / "generic", "new": root / "new"}


def _run(extracts: dict[str, Path], name: str, *args: str) -> Path:
    out = extracts["root"] / name
    if not out.exists():
        code, _, err = invoke("run", "--cutover", CUTOVER, "--out", str(out), "--quiet", *args)
        assert code == 0, err
    return out


def generic_run(extracts: dict[str, Path]) -> Path:
    return _run(extracts, "run-generic", "--input", str(extracts["generic"]), "--mapping", "generic-csv",
                "--target-index", str(extracts["generic"] / "target-index.csv"), "--no-fhir")


def new_run(extracts: dict[str, Path], pack: str | None) -> Path:
    rules = ["--rules", pack] if pack else []
    return _run(extracts, "run-site" if pack else "run-default", "--input", str(extracts["new"]), "--mapping",
                PROFILE, "--target-index", str(extracts["new"] / "TargetPatients.csv"), *rules)


def _flags(run: Path) -> set[tuple[str, str]]:
    ex = pl.read_parquet(run / "exceptions.parquet")
    return set(zip(ex["flag_code"].to_list(), ex["subject_key"].to_list(), strict=True))


def _cohorts(run: Path) -> dict[str, str]:
    frame = pl.read_parquet(run / "cohorts.parquet")
    return dict(zip(frame["referral_key"].to_list(), frame["cohort"].cast(pl.String).to_list(), strict=True))


def _check(extracts: dict[str, Path], *extra: str) -> dict[str, Any]:
    code, out, err = invoke("check", "--input", str(extracts["new"]), "--mapping", PROFILE, "--json", *extra)
    assert code == 0, err
    return dict(json.loads(out))


def _expected_red_flags(extracts: dict[str, Path]) -> dict[str, int]:
    """Per value as the new provider writes it: referrals carrying it (from the generic run)."""
    refs = pl.read_parquet(generic_run(extracts) / "canonical" / "referrals.parquet")
    counts = refs.select(pl.col("red_flags").list.unique()).explode("red_flags").drop_nulls()["red_flags"]
    return {RED_FLAGS[code][0]: n for code, n in counts.value_counts().rows()}


def test_check_lists_every_value_and_the_unknown_ones_have_no_codelist(extracts: dict[str, Path]) -> None:
    report = _check(extracts)
    assert report["layout_problems"] == []
    red = {v["value"]: (v["rows"], v["codelist"]) for v in report["vocabulary"]["red_flags"]}
    expected = _expected_red_flags(extracts)
    assert {value: rows for value, (rows, _) in red.items()} == expected
    assert {value for value, (_, codelist) in red.items() if codelist is None} == UNKNOWN & set(expected)
    assert all(codelist == "red_flag_codes" for value, (_, codelist) in red.items() if value not in UNKNOWN)
    sites = {v["value"]: v["codelist"] for v in report["vocabulary"]["body_site"]}
    assert sites["Lumbar Spine"] == "spinal_body_sites" and sites["Knee"] is None
    slots = {v["value"]: v["codelist"] for v in report["vocabulary"]["slot_name"]}
    assert slots == {"ADMIN HOLD": None, "Admin Appointment Only": "dummy_slot_names"}
    assert [h for h in report["hints"] if "'ADMIN HOLD'" in h and "dummy_slot_names" in h]
    codes = {v["value"]: v["codelist"] for v in report["vocabulary"]["code"]}
    assert codes["read2:9Nd1."] == "sharing_dissent_codes" and codes["read2:9Nd7."] == "sharing_consent_codes"
    assert report["vocabulary_codelists"]["service_line"] == []
    assert report["vocabulary_codelists"]["red_flags"] == ["red_flag_codes", "not_red_flag_codes"]
    code, out, _ = invoke("check", "--input", str(extracts["new"]), "--mapping", PROFILE)
    assert code == 0 and "ADMIN HOLD" in out and "hint:" in out and "IVDU" in out
    assert "no codelist reads this field" in out


def test_with_the_default_pack_unknown_red_flags_are_raised_never_missed(extracts: dict[str, Path]) -> None:
    run = new_run(extracts, None)
    refs = pl.read_parquet(run / "canonical" / "referrals.parquet")
    cohorts = _cohorts(run)
    carrying = {key for key, flags in zip(refs["referral_key"].to_list(), refs["red_flags"].to_list(), strict=True)
                if set(flags) & UNKNOWN and cohorts[key] in ACTIVE}
    assert carrying, "the planted extract should carry unknown red flags in active care"
    raised = {s for f, s in _flags(run) if f == "UNRECOGNISED_RED_FLAG"}
    assert raised == carrying
    ex = pl.read_parquet(run / "exceptions.parquet").filter(pl.col("flag_code") == "UNRECOGNISED_RED_FLAG")
    assert set(ex["severity"].to_list()) == {"critical"}
    for evidence in ex["evidence"].to_list():  # the values as the extract wrote them
        assert any(f"unrecognised_red_flags = {v}" in evidence or f", {v}" in evidence for v in UNKNOWN), evidence
    # Every referral the generic layout flags UNDER_PRIORITISED is flagged one way or the other.
    assert _cohorts(run) != _cohorts(generic_run(extracts)), "ADMIN HOLD counts as an attendance until listed"
    generic = {s for f, s in _flags(generic_run(extracts)) if f == "UNDER_PRIORITISED"}
    flagged = {s for f, s in _flags(run) if f in ("UNDER_PRIORITISED", "UNRECOGNISED_RED_FLAG")}
    assert generic - flagged == set()
    assert generic - {s for f, s in _flags(run) if f == "UNDER_PRIORITISED"}, "abbreviations should hide some"
    flags_fhir = (run / "fhir" / "ndjson" / "Flag.ndjson").read_text(encoding="utf-8")
    assert flags_fhir.count('"code":"UNRECOGNISED_RED_FLAG"') == len(carrying)


def test_the_run_reports_the_vocabulary_in_json_and_html(extracts: dict[str, Path]) -> None:
    run = new_run(extracts, None)
    summary = json.loads((run / "reports" / "reconciliation.json").read_text(encoding="utf-8"))
    assert summary["vocabulary"] == _check(extracts)["vocabulary"]  # one computation, check and run alike
    page = (run / "reports" / "reconciliation.html").read_text(encoding="utf-8")
    section = page[page.index('id="vocabulary"'):page.index('id="waits"')]
    for value in _expected_red_flags(extracts):
        assert f"<code>{value}</code>" in section, value
    assert "ADMIN HOLD" in section and "UNRECOGNISED_RED_FLAG" in section


def test_once_the_site_pack_lists_them_the_run_matches_the_generic_layout(extracts: dict[str, Path]) -> None:
    report = _check(extracts, "--rules", SITE_PACK)
    assert [v["value"] for v in report["vocabulary"]["red_flags"] if v["codelist"] is None] == []
    assert [v["value"] for v in report["vocabulary"]["slot_name"] if v["codelist"] is None] == []
    assert report["hints"] == []
    site, generic = new_run(extracts, SITE_PACK), generic_run(extracts)
    assert _cohorts(site) == _cohorts(generic)
    assert _flags(site) == _flags(generic)
    assert {s for f, s in _flags(site) if f == "UNDER_PRIORITISED"}
    assert not {s for f, s in _flags(site) if f == "UNRECOGNISED_RED_FLAG"}


def test_the_target_index_is_read_in_its_own_layout(extracts: dict[str, Path]) -> None:
    site, generic = new_run(extracts, SITE_PACK), generic_run(extracts)
    at_target = {s for f, s in _flags(site) if f == "ALREADY_AT_TARGET"}
    assert at_target and at_target == {s for f, s in _flags(generic) if f == "ALREADY_AT_TARGET"}
    patients = pl.read_parquet(site / "patients.parquet").select("patient_key", "at_target_id").sort("patient_key")
    assert patients.equals(pl.read_parquet(generic / "patients.parquet").select("patient_key", "at_target_id")
                           .sort("patient_key"))
    summary = json.loads((site / "reports" / "reconciliation.json").read_text(encoding="utf-8"))["target_index"]
    rows = pl.read_csv(extracts["generic"] / "target-index.csv", infer_schema=False).height
    assert summary == {"file": "TargetPatients.csv", "mapping": "new-provider", "rows_read": rows + 2,
                       "rows_used": rows, "quarantined": 2,
                       "quarantined_by_reason": {"unmapped_code": 1, "unparseable_date": 1}}
    q = pl.read_parquet(site / "target-quarantine.parquet")
    assert q.select("source_row", "reason_code", "field").rows() == [(rows + 1, "unparseable_date", "birth_date"),
                                                                    (rows + 2, "unmapped_code", "sex")]
    assert "1950" not in " ".join(q["message"].to_list())  # birth dates are never quoted
    manifest = json.loads((site / "manifest.json").read_text(encoding="utf-8"))
    assert manifest["options"]["target_index"]["mapping"] == "new-provider"
    assert "target-quarantine.parquet" in {o["path"] for o in manifest["outputs"]}


def test_target_mapping_needs_a_target_index_and_a_target_index_table(extracts: dict[str, Path],
                                                                      tmp_path: Path) -> None:
    base = ["run", "--input", str(extracts["new"]), "--mapping", PROFILE, "--cutover", CUTOVER,
            "--out", str(tmp_path / "run")]
    code, _, err = invoke(*base, "--target-mapping", PROFILE)
    assert code == 2 and "--target-index" in err
    code, _, err = invoke(*base, "--target-index", str(extracts["new"] / "TargetPatients.csv"),
                          "--target-mapping", "generic-csv")
    assert code == 2 and "no target_index table" in err
    shutil.copy(extracts["new"] / "TargetPatients.csv", tmp_path / "t.csv")
    pl.read_csv(tmp_path / "t.csv", infer_schema=False).drop("DOB").write_csv(tmp_path / "t.csv")
    code, _, err = invoke(*base, "--target-index", str(tmp_path / "t.csv"))
    assert code == 2 and "t.csv (target_index): missing column(s) DOB" in err
    assert not (tmp_path / "run" / "manifest.json").exists()
