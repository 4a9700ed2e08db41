"""Declared vs found: the YAML format, and every difference explained by name."""

from __future__ import annotations

import json
import re
from pathlib import Path
from types import ModuleType
from typing import Any

import polars as pl
import pytest
import yaml

from migrate.errors import ConfigError
from migrate.reports import load_declared, verify, write_reports
from migrate.reports.declared import LABELS_SOURCE


def found_lists(run: Path) -> dict[str, list[str]]:
    """Patient ids per transfer list in the run (no merges in these runs)."""
    frame = pl.read_parquet(run / "cohorts.parquet").filter(pl.col("transfer_list").is_not_null())
    out: dict[str, list[str]] = {}
    for label, key in frame.select(pl.col("transfer_list").cast(pl.String), "patient_key").unique().sort(
            "patient_key").iter_rows():
        out.setdefault(label, []).append(key)
    return out


def quarantined_patient(run: Path) -> tuple[str, str]:
    """A patient id whose patient row was quarantined, and the row it sits on."""
    q = pl.read_parquet(run / "quarantine.parquet").filter(pl.col("table") == "patients").sort("source_row")
    known = set(pl.read_parquet(run / "canonical" / "patients.parquet")["source_patient_id"].to_list())
    for row, raw in q.select("source_row", "raw").iter_rows():
        ids = [i for i in re.findall(r"P\d{7}", raw) if i not in known]
        if ids:
            return ids[0], f"patients.csv row {row}"
    raise AssertionError("the synthetic extract should quarantine a patient row")


@pytest.fixture
def declared_case(synth_run: Path, rh: ModuleType, tmp_path: Path) -> dict[str, Any]:
    """A declaration that differs from the extract in every way the report must explain."""
    run = rh.copy_run(synth_run, tmp_path / "run")
    found = found_lists(run)
    two_list = sorted(set(found["backlog"]) & set(found["transition"]))
    assert two_list, "the synthetic extract plants a patient on two lists"
    quarantined, where = quarantined_patient(run)
    not_declared = next(k for k in found["backlog"] if k not in two_list)
    moved = next(k for k in found["transition"] if k not in two_list)
    backlog = [k for k in found["backlog"] if k != not_declared] + ["P9999999", quarantined, moved]
    transition = [k for k in found["transition"] if k != moved]
    doc = {
        "format_version": 1, "source": "Transfer schedule v3 (test)", "id_type": "source_patient_id",
        "lists": {"backlog": {"count": len(backlog), "ids": backlog},
                  "transition": {"count": len(transition), "ids_file": "transition.txt"},
                  "pifu": {"count": len(found["pifu"]) + 2}},
    }
    (tmp_path / "transition.txt").write_text("# transition list\n" + "\n".join(transition) + "\n")
    path = tmp_path / "declared.yaml"
    path.write_text(yaml.safe_dump(doc))
    return {"run": run, "path": path, "two_list": two_list, "quarantined": quarantined, "where": where,
            "not_declared": not_declared, "moved": moved, "found": found}


def test_every_difference_is_named_with_its_reason(declared_case: dict[str, Any]) -> None:
    c = declared_case
    result = write_reports(c["run"], declared=c["path"])
    dvf = result.summary["declared_vs_found"]
    lists = {entry["list"]: entry for entry in dvf["lists"]}
    backlog, transition, pifu = lists["backlog"], lists["transition"], lists["pifu"]
    assert {(a["id"], a["reason"]) for a in backlog["absent"]} == {
        ("P9999999", "not_in_extract"), (c["quarantined"], "quarantined"), (c["moved"], "on_other_list")}
    quarantined = next(a for a in backlog["absent"] if a["reason"] == "quarantined")
    assert quarantined["detail"].startswith(c["where"] + " (")
    assert backlog["extra"] == [{"id": c["not_declared"], "reason": "not_declared",
                                 "detail": "not on any declared list"}]
    assert transition["absent"] == []
    assert transition["extra"] == [{"id": c["moved"], "reason": "declared_on_other_list",
                                    "detail": "declared on backlog"}]
    for entry in (backlog, transition):
        assert entry["found"] - entry["declared"] == len(entry["extra"]) - len(entry["absent"])
        assert entry["unexplained"] == 0
    assert pifu["absent"] is None and pifu["difference"] == -2 and pifu["unexplained"] == -2
    assert not dvf["explained"]
    assert [e["id"] for e in dvf["two_lists"]["found"]] == c["two_list"]
    assert [e["id"] for e in dvf["two_lists"]["declared"]] == c["two_list"]  # moved: one list each side
    totals = dvf["totals"]
    assert totals["found_entries"] - totals["found_patients"] == totals["entries_on_a_second_list"] == len(
        c["two_list"])
    assert dvf["quarantined_rows"]["patients"] > 0


def test_the_page_names_the_ids_and_the_declaration_is_kept_with_the_run(declared_case: dict[str, Any]) -> None:
    c = declared_case
    write_reports(c["run"], declared=c["path"])
    page = (c["run"] / "reports" / "reconciliation.html").read_text()
    for ident in ("P9999999", c["quarantined"], c["moved"], c["not_declared"], *c["two_list"]):
        assert f"<code>{ident}</code>" in page
    assert "Transfer schedule v3 (test)" in page
    kept = c["run"] / "config" / "declared.json"  # with the rest of the run's configuration
    assert json.loads(kept.read_text())["lists"]["transition"]["ids"]
    manifest = json.loads((c["run"] / "manifest.json").read_text())
    assert manifest["config"]["declared"]["path"] == "config/declared.json"
    assert verify(c["run"]).ok  # declared.json is sealed like the reports
    before = (c["run"] / "reports" / "reconciliation.json").read_bytes()
    write_reports(c["run"])  # a re-render without --declared uses the kept declaration
    assert (c["run"] / "reports" / "reconciliation.json").read_bytes() == before


def test_without_a_declared_file_the_list_labels_are_the_declaration(synth_run: Path, rh: ModuleType,
                                                                    tmp_path: Path) -> None:
    run = rh.copy_run(synth_run, tmp_path / "run")
    dvf = write_reports(run).summary["declared_vs_found"]
    found = found_lists(run)
    assert dvf["source"] == LABELS_SOURCE and dvf["from_labels"]
    assert {e["list"]: e["declared"] for e in dvf["lists"]} == {k: len(v) for k, v in found.items()}
    assert all(e["found"] == e["declared"] and e["unexplained"] == 0 for e in dvf["lists"])
    entries = sum(len(v) for v in found.values())
    patients = len({k for v in found.values() for k in v})
    assert (dvf["totals"]["found_entries"], dvf["totals"]["found_patients"]) == (entries, patients)
    assert entries > patients  # someone is on two lists, and is named
    assert len(dvf["two_lists"]["found"]) == entries - patients


def test_a_counts_only_declaration_reports_the_gap_as_unexplained(worked_run: Path, rh: ModuleType,
                                                                  tmp_path: Path) -> None:
    run = rh.copy_run(worked_run, tmp_path / "run")
    path = tmp_path / "declared.yaml"
    # The seed's shape in small: list entries exceed patients because one patient is on two lists.
    path.write_text("lists:\n  backlog: 14\n  transition: 7\n  pifu: 3\npatients: 23\n")
    dvf = write_reports(run, declared=path).summary["declared_vs_found"]
    assert dvf["totals"]["declared_entries"] == 24 and dvf["totals"]["declared_patients"] == 23
    assert [e["id"] for e in dvf["two_lists"]["found"]] == ["P25"]
    assert all(e["absent"] is None and e["unexplained"] == e["difference"] for e in dvf["lists"])


def test_every_problem_of_a_declared_file_is_reported_at_once(tmp_path: Path) -> None:
    path = tmp_path / "declared.yaml"
    path.write_text(yaml.safe_dump({
        "format_version": 2, "id_type": "mrn", "colour": "blue", "patients": -1,
        "lists": {"backlog": {"count": -3}, "urgent": 4, "pifu": {"count": 1, "ids": ["a"], "ids_file": "x.txt"},
                  "transition": {"count": 2, "size": 9}},
    }))
    with pytest.raises(ConfigError) as caught:
        load_declared(path)
    assert caught.value.exit_code == 2
    problems = "\n".join(caught.value.problems)
    for expected in ("unknown key 'colour'", "format_version 2", "id_type 'mrn'", "patients must be",
                     "lists.backlog.count", "lists.urgent: unknown list", "ids or ids_file, not both",
                     "lists.transition: unknown key 'size'"):
        assert expected in problems
    assert len(caught.value.problems) == 8


def test_a_missing_declared_file_is_a_configuration_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_declared(tmp_path / "nope.yaml")
