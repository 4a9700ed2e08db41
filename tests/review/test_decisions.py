"""`handover run --decisions`: a workbook filled in as a clinician would, read back, each row
judged, and the applied decisions changing the next batch traceably."""

from __future__ import annotations

import hashlib
import json
from datetime import datetime
from pathlib import Path

import polars as pl
import pytest
from click.testing import CliRunner
from fhir.resources.R4B.consent import Consent
from fhir.resources.R4B.provenance import Provenance

from tests.review.conftest import extract, fill, fill_csv, run

DAY = datetime(2022, 10, 3)
OVERRIDE = {"Reviewer": "Dr A Patel", "Decision": "override", "Date": DAY,
            "Note": "consent to share recorded by phone on 02/10/2022", "Second reviewer": "Dr B Jones"}
DECISIONS = {
    ("P21", "SHARING_BLOCK_ACTIVE_CARE"): OVERRIDE,
    ("P23", "SHARING_BLOCK"): {"Reviewer": "Dr A Patel", "Decision": "overide", "Date": DAY},  # misspelt
    ("R16", "POST_OP_NOT_PRIORITISED"): {"Reviewer": "Dr C Wu", "Decision": "Upgrade urgent", "Date": "03/10/2022"},
    ("R13", "UNDER_PRIORITISED"): {"Reviewer": "Dr C Wu", "Decision": "keep", "Date": DAY},  # no note
    ("R07", "WRONG_TRANSFER_LIST"): {"Reviewer": "Dr D Okafor", "Decision": "move_transition", "Date": DAY},
    ("R19", "URGENT_WAIT_BREACH"): {"Decision": "acknowledged", "Date": DAY},  # no reviewer
    ("R20", "OVER_PRIORITISED"): {"Reviewer": "Dr C Wu", "Decision": "acknowledged", "Date": "31/02/2022"},
    ("P02+P29", "NHS_NUMBER_CONFLICT"): {"Reviewer": "Dr A Patel", "Decision": "same_person", "Date": DAY,
                                         "Note": "PDS trace: one person, birth date keyed day-first",
                                         "Second reviewer": "Dr B Jones"},
    ("P05+P06", "NHS_NUMBER_CONFLICT"): {"Reviewer": "Dr A Patel", "Decision": "same_person", "Date": DAY,
                                         "Note": "looks the same"},  # no second reviewer
    ("R15", "CANCER_HISTORY_NOT_RECORDED"): {"Reviewer": "Dr C Wu", "Decision": "acknowledged", "Date": DAY},
}
# A row a reviewer added by hand, for a referral the batch does not hold.
EXTRA = {"Prioritisation": [{"Flag": "UNDER_PRIORITISED", "Rule": "under-prioritised", "Subject": "R99",
                             "Reviewer": "Dr C Wu", "Decision": "upgrade_urgent", "Date": DAY}]}
# The second batch: R15's cancer history is now recorded, so its flag is no longer raised.
RECORDED = {"referrals.csv": lambda text: text.replace("R15,P15,2022-07-01,physio_tier1,routine,backlog,open,,,,",
                                                      "R15,P15,2022-07-01,physio_tier1,routine,backlog,open,,,N,")}


@pytest.fixture(scope="module")
def second_batch(first_batch: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    base = tmp_path_factory.mktemp("second")
    filled = fill(first_batch / "reports" / "exceptions.xlsx", base / "decided.xlsx", DECISIONS, EXTRA)
    out = base / "run2"
    run(extract(base / "input", RECORDED), out, [filled])
    return out, filled


def _decisions(run_dir: Path) -> dict[tuple[str, str], dict[str, object]]:
    frame = pl.read_parquet(run_dir / "decisions.parquet")
    return {(r["subject_key"], r["flag_code"]): r for r in frame.iter_rows(named=True)}


def test_the_edit_is_real() -> None:
    """The second batch's input really records R15's cancer history (so the test below means something)."""
    text = (Path(__file__).parents[1] / "cases" / "worked-example" / "input" / "referrals.csv").read_text()
    assert RECORDED["referrals.csv"](text) != text


def test_every_row_the_reviewers_wrote_on_is_judged(second_batch: tuple[Path, Path]) -> None:
    out, filled = second_batch
    got = _decisions(out)
    assert len(got) == len(DECISIONS) + 1  # every row written on, the added one too
    expect = {
        ("P21", "SHARING_BLOCK_ACTIVE_CARE"): ("applied", None),
        ("P23", "SHARING_BLOCK"): ("rejected", "unknown_decision"),
        ("R16", "POST_OP_NOT_PRIORITISED"): ("applied", None),
        ("R13", "UNDER_PRIORITISED"): ("rejected", "missing_note"),
        ("R07", "WRONG_TRANSFER_LIST"): ("applied", None),
        ("R19", "URGENT_WAIT_BREACH"): ("rejected", "missing_reviewer"),
        ("R20", "OVER_PRIORITISED"): ("rejected", "invalid_date"),
        ("P02+P29", "NHS_NUMBER_CONFLICT"): ("applied", None),
        ("P05+P06", "NHS_NUMBER_CONFLICT"): ("rejected", "second_reviewer_required"),
        ("R15", "CANCER_HISTORY_NOT_RECORDED"): ("rejected", "flag_not_raised"),
        ("R99", "UNDER_PRIORITISED"): ("rejected", "subject_not_found"),
    }
    assert {k: (v["status"], v["reason_code"]) for k, v in got.items()} == expect
    assert "did you mean override?" in str(got[("P23", "SHARING_BLOCK")]["reason"])
    assert got[("R16", "POST_OP_NOT_PRIORITISED")]["decision"] == "upgrade_urgent"  # as typed: "Upgrade urgent"
    assert str(got[("R16", "POST_OP_NOT_PRIORITISED")]["decided_on"]) == "2022-10-03"  # typed as text, dd/mm/yyyy
    assert got[("P21", "SHARING_BLOCK_ACTIVE_CARE")]["source_sheet"] == "Sharing blocks"
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["decisions"] == [{"path": filled.name, "sha256": hashlib.sha256(filled.read_bytes()).hexdigest(),
                                      "bytes": filled.stat().st_size, "rows": len(DECISIONS) + 1}]
    assert "decisions.parquet" in {o["path"] for o in manifest["outputs"]}


def test_a_same_person_decision_merges_the_pair_as_exact_duplicates_are(second_batch: tuple[Path, Path]) -> None:
    out, _ = second_batch
    patients = pl.read_parquet(out / "patients.parquet")
    survivor = dict(patients.select("patient_key", "survivor_key").iter_rows())
    assert survivor["P29"] == survivor["P02"] == "P02"  # P02 has the earlier referral, as survivorship orders
    assert patients.filter(pl.col("patient_key") == "P29")["disposition"].item() == "merged"
    reason = pl.read_parquet(out / "lineage.parquet").filter(
        (pl.col("table") == "patients") & (pl.col("patient_key") == "P29"))["reason"].unique().to_list()
    assert len(reason) == 1 and "merged into P02" in reason[0] and "decision same_person by Dr A Patel and Dr B " \
        "Jones on 2022-10-03" in reason[0]
    cohorts = pl.read_parquet(out / "cohorts.parquet")
    assert cohorts.filter(pl.col("referral_key") == "R29")["patient_key"].item() == "P02"  # R29 re-pointed
    # P05+P06 was rejected: still two people.
    assert survivor["P05"] == "P05" and survivor["P06"] == "P06"


def test_an_override_sends_the_clinical_record_with_a_permit_consent(second_batch: tuple[Path, Path]) -> None:
    out, _ = second_batch
    lineage = pl.read_parquet(out / "lineage.parquet")
    p21 = lineage.filter((pl.col("patient_key") == "P21") & (pl.col("table") == "contacts"))
    assert set(p21["disposition"].cast(pl.String)) == {"migrated"}
    assert p21["fhir_type"].to_list() == ["Encounter"]
    assert "decision override by Dr A Patel and Dr B Jones on 2022-10-03" in p21["reason"].item()
    # The rejected decision on P23 changed nothing: still withheld.
    p23 = lineage.filter((pl.col("patient_key") == "P23") & (pl.col("table") == "contacts"))
    assert set(p23["disposition"].cast(pl.String)) == {"withheld"}
    consents = [json.loads(line) for line in (out / "fhir" / "review" / "Consent.ndjson").read_text().splitlines()]
    [consent] = consents
    Consent.model_validate(consent)
    assert consent["provision"]["type"] == "permit"
    assert consent["sourceAttachment"]["title"] == OVERRIDE["Note"]  # the basis, as the reviewer wrote it
    assert consent["dateTime"] == "2022-10-03"
    # The dissent stays on record: the batch's own Consent for P21 is still a deny.
    denies = [json.loads(line) for line in (out / "fhir" / "ndjson" / "Consent.ndjson").read_text().splitlines()]
    patient_id = lineage.filter((pl.col("patient_key") == "P21") & (pl.col("fhir_type") == "Patient"))["fhir_id"][0]
    assert {c["provision"]["type"] for c in denies if c["patient"]["reference"] == f"Patient/{patient_id}"} == {"deny"}
    assert consent["patient"]["reference"] == f"Patient/{patient_id}"


def test_upgrade_urgent_and_move_change_the_fhir_and_the_lists(second_batch: tuple[Path, Path]) -> None:
    out, _ = second_batch
    requests = {r["identifier"][0]["value"]: r for r in
                (json.loads(line) for line in (out / "fhir" / "ndjson" / "ServiceRequest.ndjson").read_text()
                 .splitlines())}
    assert requests["R16"]["priority"] == "urgent"  # routine in the extract; raised by the decision
    assert requests["R13"]["priority"] == "urgent"  # raised by the rule; the rejected "keep" changed nothing
    assert requests["R19"]["priority"] == "urgent"
    cohorts = pl.read_parquet(out / "cohorts.parquet").filter(pl.col("referral_key") == "R07")
    assert cohorts["cohort"].cast(pl.String).item() == "transition"
    assert cohorts["cohort_reason"].item().startswith("decision move_transition by Dr D Okafor on 2022-10-03")
    assert not cohorts["list_mismatch"].item()
    categories = [c["coding"][0]["code"] for c in requests["R07"]["category"]]
    assert "transition" in categories


def test_each_decision_that_changed_resources_has_a_provenance_naming_it(second_batch: tuple[Path, Path]) -> None:
    out, _ = second_batch
    decisions = pl.read_parquet(out / "decisions.parquet").filter(pl.col("status") == "applied")
    provenances = {p["entity"][0]["what"]["identifier"]["value"]: p for p in
                   (json.loads(line) for line in (out / "fhir" / "review" / "Provenance.ndjson").read_text()
                    .splitlines())}
    assert set(provenances) == set(decisions["decision_id"])
    resources = {(t, json.loads(line)["id"]) for t in ("Patient", "ServiceRequest", "EpisodeOfCare", "Encounter")
                 for line in (out / "fhir" / "ndjson" / f"{t}.ndjson").read_text().splitlines()}
    for row in decisions.iter_rows(named=True):
        prov = provenances[row["decision_id"]]
        Provenance.model_validate(prov)
        targets = [t["reference"] for t in prov["target"]]
        assert targets == row["resources"]
        assert all(tuple(t.split("/")) in resources for t in targets if not t.startswith("Consent/"))
        assert prov["occurredDateTime"] == "2022-10-03"
        assert prov["agent"][0]["who"]["display"] == row["reviewer"]
        assert row["decision"] in prov["activity"]["text"]
    kinds = {r["decision"]: {t.split("/")[0] for t in r["resources"]} for r in decisions.iter_rows(named=True)}
    assert kinds == {"override": {"Encounter", "Consent"}, "upgrade_urgent": {"ServiceRequest"},
                     "move_transition": {"ServiceRequest", "EpisodeOfCare"}, "same_person": {"Patient"}}
    # The review's bundle is the last one, so `handover load` sends it after what it points at.
    bundles = sorted((out / "fhir" / "bundles").glob("bundle-*.json"))
    last = json.loads(bundles[-1].read_text())
    assert {e["resource"]["resourceType"] for e in last["entry"]} == {"Consent", "Provenance"}


def test_bad_decisions_change_no_data(first_batch: Path, tmp_path: Path) -> None:
    bad = {k: v for k, v in DECISIONS.items() if k in {("P23", "SHARING_BLOCK"), ("R13", "UNDER_PRIORITISED"),
                                                        ("R19", "URGENT_WAIT_BREACH"), ("P05+P06", "NHS_NUMBER_CONFLICT")}}
    filled = fill(first_batch / "reports" / "exceptions.xlsx", tmp_path / "bad.xlsx", bad)
    plain, judged = tmp_path / "plain", tmp_path / "judged"
    source = extract(tmp_path / "input")
    run(source, plain)
    run(source, judged, [filled])
    assert set(pl.read_parquet(judged / "decisions.parquet")["status"]) == {"rejected"}
    for rel in ("lineage.parquet", "cohorts.parquet", "patients.parquet", "exceptions.parquet", "duplicates.parquet",
                "fhir/ndjson/Patient.ndjson", "fhir/ndjson/Encounter.ndjson", "fhir/ndjson/ServiceRequest.ndjson",
                "fhir/ndjson/Consent.ndjson"):
        assert (plain / rel).read_bytes() == (judged / rel).read_bytes(), rel
    assert not (judged / "fhir" / "review").exists()


def test_conflicting_decisions_across_two_files_are_both_rejected(first_batch: Path, tmp_path: Path) -> None:
    one = fill(first_batch / "reports" / "exceptions.xlsx", tmp_path / "one.xlsx",
               {("R16", "POST_OP_NOT_PRIORITISED"): {"Reviewer": "Dr C Wu", "Decision": "upgrade_urgent", "Date": DAY}})
    two = fill_csv(first_batch / "reports" / "exceptions.csv", tmp_path / "two.csv",
                   {("R16", "POST_OP_NOT_PRIORITISED"): {"reviewer": "Dr E Hart", "decision": "keep",
                                                         "date": "2022-10-04", "note": "slot already booked"}})
    out = tmp_path / "run"
    run(extract(tmp_path / "input"), out, [one, two])
    rows = pl.read_parquet(out / "decisions.parquet")
    assert rows["reason_code"].to_list() == ["conflicting_decisions"] * 2
    assert sorted(rows["source_file"]) == ["one.xlsx", "two.csv"]
    assert "(keep)" in rows.filter(pl.col("source_file") == "one.xlsx")["reason"].item()
    requests = [json.loads(line) for line in (out / "fhir" / "ndjson" / "ServiceRequest.ndjson").read_text().splitlines()]
    assert {r["identifier"][0]["value"]: r["priority"] for r in requests}["R16"] == "routine"


def test_the_same_decisions_give_byte_identical_outputs(first_batch: Path, tmp_path: Path) -> None:
    filled = fill(first_batch / "reports" / "exceptions.xlsx", tmp_path / "d.xlsx", DECISIONS, EXTRA)
    source = extract(tmp_path / "input")
    a, b = tmp_path / "a", tmp_path / "b"
    run(source, a, [filled])
    run(source, b, [filled])
    ma, mb = (json.loads((r / "manifest.json").read_text()) for r in (a, b))
    assert ma["run_id"] == mb["run_id"]
    stamped = {"reports/exceptions.xlsx", "reports/reconciliation.json", "reports/reconciliation.html",
               "reports/hazard-log.html"}  # the run's start and finish times are shown there
    for entry in ma["outputs"]:
        if entry["path"] not in stamped:
            assert (a / entry["path"]).read_bytes() == (b / entry["path"]).read_bytes(), entry["path"]
    assert [e["sha256"] for e in ma["outputs"] if e["path"] not in stamped] == [
        e["sha256"] for e in mb["outputs"] if e["path"] not in stamped]


def test_the_command_line_takes_repeated_decision_files(first_batch: Path, tmp_path: Path) -> None:
    from cli import main
    from tests.review.conftest import CUTOVER, WORKED

    one = fill(first_batch / "reports" / "exceptions.xlsx", tmp_path / "one.xlsx",
               {("R07", "WRONG_TRANSFER_LIST"): {"Reviewer": "Dr D", "Decision": "keep", "Date": DAY}})
    two = fill_csv(first_batch / "reports" / "exceptions.csv", tmp_path / "two.csv",
                   {("R20", "OVER_PRIORITISED"): {"reviewer": "Dr C", "decision": "acknowledged", "date": "04/10/2022"}})
    source = extract(tmp_path / "input")
    args = ["run", "--input", str(source), "--mapping", str(WORKED / "mapping.yaml"), "--cutover", CUTOVER.isoformat(),
            "--quiet"]
    ok = CliRunner().invoke(main, [*args, "--out", str(tmp_path / "run"), "--decisions", str(one),
                                   "--decisions", str(two)])
    assert ok.exit_code == 0, ok.output
    assert set(pl.read_parquet(tmp_path / "run" / "decisions.parquet")["status"]) == {"applied"}
    missing = CliRunner().invoke(main, [*args, "--out", str(tmp_path / "m"), "--decisions", str(tmp_path / "no.xlsx")])
    assert missing.exit_code == 3 and "no.xlsx" in missing.output
    other = tmp_path / "other.csv"
    other.write_text("a,b\n1,2\n", encoding="utf-8")
    wrong = CliRunner().invoke(main, [*args, "--out", str(tmp_path / "w"), "--decisions", str(other)])
    assert wrong.exit_code == 2 and "flag_code, rule_id and subject_key" in wrong.output
    assert not (tmp_path / "w").exists()


def test_fhir_re_emits_a_decided_run_byte_for_byte(second_batch: tuple[Path, Path], tmp_path: Path) -> None:
    """`handover fhir RUN` re-derives the decisions' effects from the run folder alone."""
    import shutil

    from migrate.fhir.stage import reemit_fhir
    from migrate.reports import verify

    out = tmp_path / "copy"
    shutil.copytree(second_batch[0], out)
    before = {p.relative_to(out): p.read_bytes() for p in (out / "fhir").rglob("*") if p.is_file()}
    reemit_fhir(out)
    after = {p.relative_to(out): p.read_bytes() for p in (out / "fhir").rglob("*") if p.is_file()}
    assert sorted(after) == sorted(before)
    for rel, data in before.items():
        assert after[rel] == data, rel
    assert verify(out).ok


def test_the_workbook_explains_the_packs_decisions_and_offers_them_per_flag(first_batch: Path) -> None:
    import openpyxl

    book = openpyxl.load_workbook(first_batch / "reports" / "exceptions.xlsx")
    summary = {row[0]: row[1] for row in book["Summary"].iter_rows(min_row=2, values_only=True) if row[0]}
    assert "PROBABLE_DUPLICATE, NHS_NUMBER_CONFLICT" in summary["Decision: same_person"]
    assert "needs a note and a second reviewer" in summary["Decision: same_person"]
    assert summary["Decision: acknowledged"].startswith("any flag")
    sheet = book["Sharing blocks"]
    [rule] = sheet.data_validations.dataValidation
    assert rule.formula1 == '"override,uphold,acknowledged"'


def test_a_long_interleaved_sheet_gets_one_drop_down_for_the_column() -> None:
    from migrate.reports.worklist import CHOICES, _choices

    rows = pl.DataFrame({CHOICES: ["a,b", "c"] * 400})
    [one] = _choices(rows)
    assert one.rows is None and one.values == ("a", "b", "c")
    few = _choices(pl.DataFrame({CHOICES: ["a,b"] * 400 + ["c"] * 400}))
    assert [(v.values, v.rows and (v.rows[0], v.rows[-1])) for v in few] == [(("a", "b"), (0, 399)),
                                                                              (("c",), (400, 799))]


def test_the_manifest_shape_check_covers_the_decisions_files(second_batch: tuple[Path, Path]) -> None:
    from migrate.manifest import check_manifest

    manifest = json.loads((second_batch[0] / "manifest.json").read_text())
    assert check_manifest(manifest) == []
    manifest["decisions"][0]["sha256"] = "not a digest"
    assert [p.split(":")[0] for p in check_manifest(manifest)] == ["decisions.0.sha256"]


def _fields(data: object, tp: object, seen: dict[str, set[str]], declared: dict[str, set[str]]) -> list[str]:
    """Walk ``data`` along type ``tp``: record, per TypedDict met with an object, the keys
    it declares and the keys written; return the keys written that no type declares."""
    import typing

    from typing_extensions import is_typeddict

    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Annotated, typing.NotRequired, typing.Required):
        return _fields(data, args[0], seen, declared)
    if origin in (typing.Union, __import__("types").UnionType):
        return [u for a in args if a is not type(None) for u in _fields(data, a, seen, declared)]
    if origin is list and isinstance(data, list):
        return [u for item in data for u in _fields(item, args[0], seen, declared)]
    if origin is dict and isinstance(data, dict):
        return [u for item in data.values() for u in _fields(item, args[1], seen, declared)]
    if is_typeddict(tp) and isinstance(data, dict):
        hints = typing.get_type_hints(tp, include_extras=True)
        name = tp.__name__  # type: ignore[attr-defined]
        declared[name] = set(hints)
        seen.setdefault(name, set()).update(data)
        unknown = [f"{name}.{k}" for k in data if k not in hints]
        return unknown + [u for k, v in data.items() if k in hints for u in _fields(v, hints[k], seen, declared)]
    return []


def test_the_manifest_writer_and_its_schema_agree_field_for_field(second_batch: tuple[Path, Path], first_batch: Path,
                                                                   tmp_path: Path) -> None:
    """One definition (``migrate.summary.SealedManifest``) types the writer and is what verify
    checks: a chained, sealed batch with decisions writes no field it does not declare, and
    every field declared for an object it writes is written (in some entry)."""
    import shutil

    from migrate.manifest import check_manifest
    from migrate.reports import record_previous, verify, write_reports
    from migrate.outputs import write_json
    from migrate.summary import SealedManifest

    run2 = Path(shutil.copytree(second_batch[0], tmp_path / "run2"))
    manifest = json.loads((run2 / "manifest.json").read_text())
    write_json(record_previous(manifest, first_batch, run2), run2 / "manifest.json")
    write_reports(run2, key=b"k" * 32)  # re-seals it, with the key
    assert verify(run2, key=b"k" * 32).ok
    manifest = json.loads((run2 / "manifest.json").read_text())
    assert check_manifest(manifest) == []
    seen: dict[str, set[str]] = {}
    declared: dict[str, set[str]] = {}
    assert _fields(manifest, SealedManifest, seen, declared) == []
    assert {"SealedManifest", "OutputRecord", "DecisionRecord", "PreviousRun", "Seal", "Digest", "RunOptions",
            "Stages", "FhirStats", "FrozenConfig", "InputRecord", "Counts"} <= set(seen)
    # written only on request: the NDJSON's compression, with --fhir-compression gzip (absent: plain)
    on_request = {"FhirStats": {"compression"}, "RunOptions": {"fhir_compression"}}
    assert {name: declared[name] - keys - on_request.get(name, set()) for name, keys in seen.items()
            if declared[name] - keys - on_request.get(name, set())} == {}
    # and a field the writer adds without declaring it is caught by the same walk
    assert _fields(manifest | {"stray": 1}, SealedManifest, {}, {}) == ["SealedManifest.stray"]
