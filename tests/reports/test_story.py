"""handover explain: one patient's story from the run folder alone.

Every patient of the worked example is explained and checked against the case's expected
cohorts and flags; over all patients the stories account for every source row and every
FHIR resource exactly once per merge cluster; quarantined rows are found on a synthetic
extract with planted faults; with a key the story is tokenised like the pseudonymised pack.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from types import ModuleType

import polars as pl
import pytest
from click.testing import CliRunner

import cli
from migrate.errors import ConfigError
from migrate.reports import pseudonymise
from migrate.reports.pseudonymise import Pseudonymiser
from migrate.reports.story import patient_story
from migrate.reports.story_view import render_story_html, story_renderables

CASE = Path(__file__).resolve().parents[1] / "cases" / "worked-example"
PATIENTS = pl.read_csv(CASE / "input" / "patients.csv", infer_schema=False)["patient_id"].to_list()
KEY = b"an audit pack key of 32 bytes..."


def _expected(name: str) -> pl.DataFrame:
    return pl.read_csv(CASE / "expected" / f"{name}.csv", infer_schema=False)


@pytest.mark.parametrize("patient", PATIENTS)
def test_every_patient_of_the_worked_example_can_be_explained(worked_run: Path, patient: str) -> None:
    story = patient_story(worked_run, patient)
    assert patient in story["matched"]
    keys = {p["patient_key"] for p in story["patients"]}
    cohorts = dict(_expected("referral_cohorts").iter_rows())
    referrals = pl.read_csv(CASE / "input" / "referrals.csv", infer_schema=False)
    theirs = set(referrals.filter(pl.col("patient_id").is_in(list(keys)))["referral_id"].to_list())
    assert {r["referral_key"] for r in story["referrals"]} == theirs
    for r in story["referrals"]:
        assert r["cohort"] == cohorts[r["referral_key"]]
        assert r["rule_path"][-1] == {**r["rule_path"][-1], "value": r["cohort"], "held": True}
        assert not any(step["held"] for step in r["rule_path"][:-1])
    flags = _expected("flags")
    subjects = keys | theirs | {s for s in flags["subject"].to_list() if set(s.split("+")) & keys}
    expected = {(s, f) for _, s, f in flags.iter_rows() if s in subjects}
    found = {(f["subject_key"], f["flag_code"]) for f in story["flags"]}
    assert expected <= found  # the identity stage may add NHS_NUMBER_CONFLICT on this case's shared numbers
    assert {code for _, code in found - expected} <= {"NHS_NUMBER_CONFLICT"}
    assert story["decisions"] == {"recorded": False, "note": "no decisions recorded", "rows": []}
    assert story["quarantined"] == []
    for renderable in story_renderables(story):  # the terminal view renders every story
        assert renderable is not None
    assert "<script" not in render_story_html(story)


def test_the_stories_account_for_every_row_and_resource(worked_run: Path) -> None:
    lineage = pl.read_parquet(worked_run / "lineage.parquet")
    rows: dict[tuple[str, int], int] = {}
    resources: set[tuple[str, str]] = set()
    clusters: set[frozenset[str]] = set()
    for patient in PATIENTS:
        story = patient_story(worked_run, patient)
        cluster = frozenset(p["patient_key"] for p in story["patients"])
        if cluster in clusters:
            continue
        clusters.add(cluster)
        for r in story["source_rows"]:
            rows[(r["source_file"], r["source_row"])] = rows.get((r["source_file"], r["source_row"]), 0) + 1
        resources |= {(r["fhir_type"], r["fhir_id"]) for r in story["fhir"]["emitted"]}
    traced = lineage.filter(pl.col("patient_key").is_not_null())
    assert rows == {k: 1 for k in traced.select("source_file", "source_row").unique().iter_rows()}
    named = traced.filter(pl.col("fhir_id").is_not_null()).select("fhir_type", "fhir_id").unique()
    assert resources == set(named.iter_rows())


def test_a_merged_record_tells_whom_it_joined(worked_run: Path) -> None:
    story = patient_story(worked_run, "P28")
    assert story["identity"]["merged"] == [{"patient_key": "P28", "survivor_key": "P01"}]
    assert {r["referral_key"] for r in story["referrals"]} == {"R01", "R28"}
    pair = story["identity"]["candidate_pairs"][0]
    assert (pair["patient_key_a"], pair["patient_key_b"], pair["match_type"]) == ("P01", "P28", "exact_nhs_number")
    assert story == patient_story(worked_run, "P01") | {"query": "P28", "matched": ["P28"],
                                                         "summary": story["summary"]}


def test_a_withheld_history_says_why(worked_run: Path) -> None:
    story = patient_story(worked_run, "P21")
    (withheld,) = story["fhir"]["withheld"]
    assert withheld["table"] == "contacts" and withheld["reason"].startswith("sharing block")
    assert any(r["disposition"] == "withheld" for r in story["source_rows"])
    assert {f["flag_code"] for f in story["flags"]} == {"SHARING_BLOCK", "SHARING_BLOCK_ACTIVE_CARE"}
    assert all(f["condition"] for f in story["flags"])  # the rule's condition, from the run's pack


def test_by_nhs_number_written_any_way(worked_run: Path) -> None:
    number = pl.read_parquet(worked_run / "patients.parquet").filter(pl.col("patient_key") == "P21")["nhs_number"][0]
    spaced = f"{number[:3]} {number[3:6]} {number[6:]}"
    assert patient_story(worked_run, spaced)["matched"] == ["P21"]
    assert patient_story(worked_run, number.replace("", "-").strip("-"))["matched"] == ["P21"]


def test_a_token_finds_the_patient_and_the_story_names_no_one(worked_run: Path, tmp_path: Path) -> None:
    token = Pseudonymiser(KEY).token("P21")
    story = patient_story(worked_run, token, KEY)
    assert story["tokenised"] and story["query"] == token and story["matched"] == [token]
    text = json.dumps(story)
    patients = pl.read_parquet(worked_run / "canonical" / "patients.parquet")
    referrals = pl.read_parquet(worked_run / "canonical" / "referrals.parquet")
    secrets = {*patients["source_patient_id"], *patients["nhs_number"].drop_nulls(), *referrals["referral_key"]}
    leaked = {s for s in secrets if re.search(rf"(?<![0-9A-Za-z]){re.escape(s)}(?![0-9A-Za-z])", text)}
    assert not leaked
    # The same tokens as the pseudonymised pack made with the same key.
    files = pseudonymise(worked_run, KEY, tmp_path / "pack")
    worklist = next(f for f in files if f.name == "exceptions.csv").read_text(encoding="utf-8")
    assert token in worklist
    assert patient_story(worked_run, "P21") != story


def test_quarantined_rows_naming_the_patient_are_in_the_story(synth_run: Path) -> None:
    quarantine = pl.read_parquet(synth_run / "quarantine.parquet")
    patients = set(pl.read_parquet(synth_run / "canonical" / "patients.parquet")["source_patient_id"].to_list())
    structured = quarantine.filter(pl.col("raw").str.starts_with("{") & (pl.col("table") != "patients"))
    owners = structured.with_columns(pl.col("raw").str.json_path_match("$.patient_id").alias("patient_id"))
    row = owners.filter(pl.col("patient_id").is_in(list(patients))).row(0, named=True)
    story = patient_story(synth_run, row["patient_id"])
    assert (row["source_file"], row["source_row"], row["reason_code"]) in {
        (q["source_file"], q["source_row"], q["reason_code"]) for q in story["quarantined"]}
    assert all("raw" not in q for q in story["quarantined"])  # the record itself is never shown


def test_a_patient_whose_own_row_was_quarantined_is_explained_by_the_rows_naming_them(
        rh: ModuleType, tmp_path: Path) -> None:
    extract = tmp_path / "input"
    shutil.copytree(CASE / "input", extract)
    patients = (extract / "patients.csv").read_text(encoding="utf-8")
    (extract / "patients.csv").write_text(patients.replace("P02,9991000011,Bennett,Ben,1942-03-12",
                                                           "P02,9991000011,Bennett,Ben,12/03/1942"), encoding="utf-8")
    run = rh.run_extract(extract, CASE / "mapping.yaml", tmp_path / "run")
    story = patient_story(run, "P02")
    assert story["patients"] == [] and story["source_rows"] == []
    reasons = {(q["source_file"], q["reason_code"]) for q in story["quarantined"]}
    assert reasons == {("patients.csv", "unparseable_date"), ("referrals.csv", "parent_quarantined"),
                       ("contacts.csv", "parent_quarantined")}


def test_decisions_are_shown_when_the_run_has_them(tmp_path: Path) -> None:
    """The review loop's decisions.parquet (the worked example's decisions file applied)."""
    from datetime import date

    from migrate.pipeline import RunConfig, run_batch

    case = Path(__file__).parents[1] / "cases" / "worked-example"
    run = tmp_path / "run"
    run_batch(RunConfig.load(case / "input", case / "mapping.yaml", date(2022, 10, 1), run,
                             decisions=[case / "decisions.csv"]))
    decisions = patient_story(run, "P21")["decisions"]
    assert decisions["recorded"] and decisions["note"] == "1 decision(s): 1 applied"
    [row] = decisions["rows"]
    assert (row["flag_code"], row["decision"], row["status"]) == ("SHARING_BLOCK_ACTIVE_CARE", "override", "applied")
    assert row["reviewer"].startswith("Dr A Patel") and row["second_reviewer"].startswith("Dr B Jones")
    assert [t.split("/")[0] for t in row["resources"]] == ["Consent", "Encounter"]
    rejected = patient_story(run, "P13")["decisions"]
    assert [(r["status"], r["reason"].split(":")[0]) for r in rejected["rows"]] == [("rejected", "missing note")]
    # A pair's decision is shown for both of its patients.
    assert [r["decision"] for r in patient_story(run, "P06")["decisions"]["rows"]] == ["not_same_person"]


def test_an_unknown_patient_exits_2_without_echoing_it(worked_run: Path) -> None:
    result = CliRunner().invoke(cli.main, ["explain", str(worked_run), "9990000000"])
    assert result.exit_code == 2 and "9990000000" not in result.stderr
    with pytest.raises(ConfigError):
        patient_story(worked_run, "P99")


def test_json_and_html_from_the_command_line(worked_run: Path, tmp_path: Path) -> None:
    page = tmp_path / "p21.html"
    result = CliRunner().invoke(cli.main, ["explain", str(worked_run), "P21", "--json", "--html", str(page)])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["matched"] == ["P21"]
    assert "P21" in page.read_text(encoding="utf-8")
    terminal = CliRunner().invoke(cli.main, ["explain", str(worked_run), "P21"])
    assert terminal.exit_code == 0 and "SHARING_BLOCK_ACTIVE_CARE" in terminal.stdout


def test_the_page_never_goes_into_the_run_or_a_pseudonymised_pack_untokenised(worked_run: Path,
                                                                             tmp_path: Path) -> None:
    inside = CliRunner().invoke(cli.main, ["explain", str(worked_run), "P21", "--html", str(worked_run / "p.html")])
    assert inside.exit_code == 2 and not (worked_run / "p.html").exists()
    pack = tmp_path / "pack"
    pseudonymise(worked_run, KEY, pack)
    plain = CliRunner().invoke(cli.main, ["explain", str(worked_run), "P21", "--html", str(pack / "p21.html")])
    assert plain.exit_code == 2 and "--key-file" in plain.stderr and not (pack / "p21.html").exists()
    key_file = tmp_path / "key"
    key_file.write_bytes(KEY)
    token = Pseudonymiser(KEY).token("P21")
    tokenised = CliRunner().invoke(cli.main, ["explain", str(worked_run), token, "--key-file", str(key_file),
                                              "--html", str(pack / "p21.html"), "--json"])
    assert tokenised.exit_code == 0, tokenised.output
    page = (pack / "p21.html").read_text(encoding="utf-8")
    assert "P21" not in page and token in page and "pseudonym tokens" in page


def test_an_hl7_merge_and_superseded_messages_are_in_the_story(rh: ModuleType, tmp_path: Path) -> None:
    def msh(event: str, control: str, sent: str, structure: str) -> str:
        return f"MSH|^~\\&|PAS|RXX|HANDOVER|RYY|{sent}||ADT^{event}^{structure}|{control}|P|2.4"

    def adt(event: str, control: str, sent: str, pid: str, postcode: str) -> str:
        return "\r".join([msh(event, control, sent, "ADT_A01"), f"EVN|{event}|{sent}",
                          f"PID|1||{pid}^^^RXX^MR||Smith^Ann||19500102|F|||^^^^{postcode}", "PV1|1|N"])

    merge = "\r".join([msh("A40", "m4", "20221003090000", "ADT_A39"), "EVN|A40|20221003090000",
                       "PID|1||P1^^^RXX^MR||X^Y", "MRG|P2^^^RXX^MR"])
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "feed.hl7").write_bytes("\r\n".join([
        adt("A04", "m1", "20221001090000", "P1", "OX1 1AA"), adt("A08", "m2", "20221002090000", "P1", "OX9 9ZZ"),
        adt("A04", "m3", "20221001090000", "P2", "OX1 1AA"), merge]).encode() + b"\r\n")
    run = rh.run_extract(tmp_path / "in", "hl7v2", tmp_path / "run")
    story = patient_story(run, "P2")
    assert {p["patient_key"] for p in story["patients"]} == {"P1", "P2"}
    assert story["identity"]["source_merges"] == [{"source_file": "feed.hl7", "source_row": 4, "patient_key": "P1"}]
    dispositions = {r["source_row"]: r["disposition"] for r in story["source_rows"]}
    # m1 superseded by m2, P2 (m3) merged by the A40 (m4): only m2 is the patient's record
    assert set(dispositions) == {1, 2, 3, 4} and dispositions[2] != "merged"
    assert {dispositions[1], dispositions[3], dispositions[4]} == {"merged"}
