"""A whole batch: layouts that differ only in YAML, byte-identical re-runs, atomic outputs."""

from __future__ import annotations

import json
import re
import zipfile
from datetime import date
from pathlib import Path

import polars as pl

from migrate.pipeline import RunConfig, run_batch

CASES = Path(__file__).parent / "cases"
CUTOVER = date(2022, 10, 1)


def _run(case: str, out: Path) -> Path:
    config = RunConfig.load(CASES / case / "input", CASES / case / "mapping.yaml", CUTOVER, out)
    result = run_batch(config)
    assert result.ok
    return out


def test_second_layout_gives_the_same_canonical_rows(tmp_path: Path) -> None:
    """Semicolons, cp1252, dd/mm/yyyy, split names, Y/N, coded lists: onboarded by YAML alone."""
    plain = _run("worked-example", tmp_path / "a")
    other = _run("second-layout", tmp_path / "b")
    ignore = {"source_file", "nhs_number_raw", "address"}
    for table in ("patients", "referrals", "contacts", "codes"):
        a = pl.read_parquet(plain / "canonical" / f"{table}.parquet")
        b = pl.read_parquet(other / "canonical" / f"{table}.parquet")
        keep = [c for c in a.columns if c not in ignore]
        assert a.select(keep).equals(b.select(keep)), table
    addresses = pl.read_parquet(other / "canonical" / "patients.parquet").filter(pl.col("patient_key") == "P21")
    assert addresses["address"].to_list() == ["12 Rue du Café, Oxford"]  # decoded from cp1252


def test_same_inputs_give_byte_identical_outputs(tmp_path: Path) -> None:
    first = _run("worked-example", tmp_path / "one")
    second = _run("worked-example", tmp_path / "two")
    m1 = json.loads((first / "manifest.json").read_text())
    m2 = json.loads((second / "manifest.json").read_text())
    assert m1["run_id"] == m2["run_id"]
    # Only the start and finish times differ: in the manifest and the reports that show them
    # (ISO, or as the worklist's Summary shows them to people, inside the zipped XLSX).
    stamp = re.compile(rb"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d[+-]\d\d:\d\d|\d\d/\d\d/\d{4} \d\d:\d\d UTC")
    assert [o["path"] for o in m1["outputs"]] == [o["path"] for o in m2["outputs"]]
    for o in m1["outputs"]:
        a, b = (_unzipped(first / o["path"]), _unzipped(second / o["path"]))
        if o["path"].startswith("reports/"):
            a, b = stamp.sub(b"T", a), stamp.sub(b"T", b)
        assert a == b, o["path"]


def _unzipped(path: Path) -> bytes:
    """A file's bytes; for an XLSX, its parts' names and contents (the zip compresses them)."""
    if path.suffix != ".xlsx":
        return path.read_bytes()
    with zipfile.ZipFile(path) as zf:
        return b"".join(i.filename.encode() + repr(i.date_time).encode() + zf.read(i) for i in zf.infolist())


def test_manifest_records_inputs_and_outputs(tmp_path: Path) -> None:
    run = _run("worked-example", tmp_path / "run")
    manifest = json.loads((run / "manifest.json").read_text())
    assert {i["path"]: i["rows"] for i in manifest["inputs"]} == {
        "codes.csv": 6, "contacts.csv": 16, "patients.csv": 28, "referrals.csv": 29}
    paths = {o["path"] for o in manifest["outputs"]}
    assert {"canonical/patients.parquet", "quarantine.parquet", "lineage.parquet", "reports/reconciliation.json",
            "duplicates.parquet", "identity-model.json"} <= paths
    # the weights identity learned from this extract, in the manifest and in full beside it
    model = json.loads((run / "identity-model.json").read_text())
    assert manifest["identity_model"]["file"] == "identity-model.json"
    assert manifest["identity_model"]["prior"] == model["prior"] and model["records"] == 28
    assert set(manifest["identity_model"]["weights"]) == set(model["comparisons"])
    assert not list(run.rglob(".*tmp*")), "no temporary files left behind"
    assert not (run / ".work").exists()


def test_lineage_traces_every_source_row_and_resource(tmp_path: Path) -> None:
    run = _run("worked-example", tmp_path / "run")
    lineage = pl.read_parquet(run / "lineage.parquet")
    rows = lineage.select("source_file", "source_row").unique()
    assert rows.height == 79  # every source row, once or once per resource it became
    # each source row has exactly one disposition, however many resources it became
    assert lineage.group_by("source_file", "source_row").agg(pl.col("disposition").n_unique()).filter(
        pl.col("disposition") > 1).height == 0
    migrated = lineage.filter(pl.col("disposition") == "migrated")
    assert migrated.filter(pl.col("fhir_id").is_null()).height == 0
    r13 = lineage.filter((pl.col("source_file") == "referrals.csv") & (pl.col("source_row") == 13))
    assert set(r13["fhir_type"].to_list()) >= {"ServiceRequest", "EpisodeOfCare", "Flag"}


SECTION_3_FLAGS = {
    "SHARING_BLOCK", "SHARING_BLOCK_ACTIVE_CARE", "UNDER_PRIORITISED", "OVER_PRIORITISED", "CANCER_HISTORY_NOT_RECORDED",
    "POST_OP_NOT_PRIORITISED", "URGENT_WAIT_BREACH", "AWAITING_INJECTION", "OUT_OF_SCOPE", "PIFU_EXPIRED",
    "WRONG_TRANSFER_LIST", "ON_TWO_LISTS", "NHS_NUMBER_INVALID", "NHS_NUMBER_MISSING", "DUPLICATE_NHS_NUMBER",
    "PROBABLE_DUPLICATE", "ALREADY_AT_TARGET",
}


def test_worked_example_end_to_end(tmp_path: Path) -> None:
    """The 29 referrals of the worked example: every cohort and every flag of domain.md §3,
    exactly, through the whole batch (mapping, identity, rules)."""
    run = _run("worked-example", tmp_path / "run")
    expected = CASES / "worked-example" / "expected"
    cohorts = pl.read_parquet(run / "cohorts.parquet").select("referral_key", pl.col("cohort").cast(pl.String))
    assert set(cohorts.iter_rows()) == set(pl.read_csv(expected / "referral_cohorts.csv").iter_rows())
    patients = pl.read_parquet(run / "patients.parquet")
    people = patients.filter(pl.col("disposition") != "merged").select(
        "patient_key", pl.col("patient_cohort").cast(pl.String))
    assert set(people.iter_rows()) == set(pl.read_csv(expected / "patient_cohorts.csv").iter_rows())
    merged = patients.filter(pl.col("disposition") == "merged").select("patient_key", "survivor_key")
    assert merged.rows() == [("P28", "P01")]
    flags = pl.read_parquet(run / "exceptions.parquet").filter(pl.col("flag_code").is_in(SECTION_3_FLAGS))
    got = set(flags.select("subject_type", "subject_key", "flag_code").iter_rows())
    assert got == set(pl.read_csv(expected / "flags.csv").iter_rows())


def test_a_red_flag_on_a_routine_list_raises_the_fhir_priority(tmp_path: Path) -> None:
    run = _run("worked-example", tmp_path / "run")
    requests = {}
    for line in (run / "fhir" / "ndjson" / "ServiceRequest.ndjson").read_text().splitlines():
        resource = json.loads(line)
        local = next(i["value"] for i in resource["identifier"] if i["value"].startswith("R"))
        requests[local] = resource
    assert requests["R13"]["priority"] == "urgent"  # cauda equina on a routine list
    reason = requests["R13"]["_priority"]["extension"][0]
    assert reason["url"].endswith("Extension-UKCore-PriorityReason")
    assert "UNDER_PRIORITISED" in reason["valueCodeableConcept"]["text"]
    assert any("routine" in n["text"] for n in requests["R13"]["note"])  # the assigned priority is kept
    assert requests["R01"]["priority"] == "routine" and "_priority" not in requests["R01"]
