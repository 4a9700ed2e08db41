"""`--previous RUN`: a batch's applied decisions bind in the next one while their subject, flag
and evidence hold; changed evidence supersedes a decision and the item returns for review."""

from __future__ import annotations

import json
from pathlib import Path

import openpyxl
import polars as pl
import pytest

from tests.review.conftest import extract, fill, run
from tests.review.test_decisions import DAY, DECISIONS, EXTRA, RECORDED

# The third batch: P21's dissent was recorded again, later (its evidence changes), and
# R07's list is reconsidered on the second batch's worklist.
REDISSENT = {**RECORDED, "codes.csv": lambda text: text.replace("93C1,Refused consent for upload to local shared "
                                                                "electronic record,2021-05-01",
                                                                "93C1,Refused consent for upload to local shared "
                                                                "electronic record,2022-09-20")}


@pytest.fixture(scope="module")
def batches(first_batch: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    base = tmp_path_factory.mktemp("carry")
    filled = fill(first_batch / "reports" / "exceptions.xlsx", base / "decided.xlsx", DECISIONS, EXTRA)
    second, third = base / "run2", base / "run3"
    run(extract(base / "input2", RECORDED), second, [filled])
    again = fill(second / "reports" / "exceptions.xlsx", base / "again.xlsx",
                 {("R07", "WRONG_TRANSFER_LIST"): {"Reviewer": "Dr D Okafor", "Decision": "keep", "Date": DAY}})
    run(extract(base / "input3", REDISSENT), third, [again], previous=second)
    return second, third


def _rows(run_dir: Path) -> dict[tuple[str, str, str], dict[str, object]]:
    frame = pl.read_parquet(run_dir / "decisions.parquet")
    return {(r["subject_key"], r["flag_code"], r["origin"]): r for r in frame.iter_rows(named=True)}


def test_the_edit_is_real() -> None:
    text = (Path(__file__).parents[1] / "cases" / "worked-example" / "input" / "codes.csv").read_text()
    assert REDISSENT["codes.csv"](text) != text


def test_previous_decisions_bind_while_their_evidence_holds(batches: tuple[Path, Path]) -> None:
    second, third = batches
    rows = _rows(third)
    applied_before = {(k[0], k[1]) for k, r in _rows(second).items() if r["status"] == "applied"}
    carried = {(k[0], k[1]): r for k, r in rows.items() if k[2] == "previous"}
    assert set(carried) == applied_before  # only applied decisions carry forward
    assert carried[("R16", "POST_OP_NOT_PRIORITISED")]["status"] == "applied"
    assert carried[("P02+P29", "NHS_NUMBER_CONFLICT")]["status"] == "applied"
    # The carried decision is the same decision: same id, reviewer, date and source file.
    before = _rows(second)[("R16", "POST_OP_NOT_PRIORITISED", "file")]
    for key in ("decision_id", "reviewer", "decided_on", "source_file", "source_sha256", "evidence_id"):
        assert carried[("R16", "POST_OP_NOT_PRIORITISED")][key] == before[key], key
    requests = {r["identifier"][0]["value"]: r for r in (json.loads(line) for line in (
        third / "fhir" / "ndjson" / "ServiceRequest.ndjson").read_text().splitlines())}
    assert requests["R16"]["priority"] == "urgent"  # still raised by the carried decision
    survivors = dict(pl.read_parquet(third / "patients.parquet").select("patient_key", "survivor_key").iter_rows())
    assert survivors["P29"] == "P02"  # still one person


def test_changed_evidence_supersedes_and_the_item_returns_for_review(batches: tuple[Path, Path]) -> None:
    _, third = batches
    override = _rows(third)[("P21", "SHARING_BLOCK_ACTIVE_CARE", "previous")]
    assert (override["status"], override["reason_code"]) == ("superseded", "evidence_changed")
    lineage = pl.read_parquet(third / "lineage.parquet")
    p21 = lineage.filter((pl.col("patient_key") == "P21") & (pl.col("table") == "contacts"))
    assert set(p21["disposition"].cast(pl.String)) == {"withheld"}  # the override no longer applies
    review = pl.read_parquet(third / "review.parquet")
    state = {(r["subject_key"], r["flag_code"]): r["state"] for r in review.iter_rows(named=True)}
    assert state[("P21", "SHARING_BLOCK_ACTIVE_CARE")] == "outstanding"
    assert state[("R16", "POST_OP_NOT_PRIORITISED")] == "decided"
    # The worklist puts it back among the outstanding items, before the decided ones.
    book = openpyxl.load_workbook(third / "reports" / "exceptions.xlsx")
    sheet = book["Sharing blocks"]
    headers = [c.value for c in sheet[1]]
    rows = [dict(zip(headers, r, strict=True)) for r in sheet.iter_rows(min_row=2, values_only=True)]
    assert [r["Review"] for r in rows][:1] == ["outstanding"]
    assert {(r["Subject"], r["Flag"]): r["Review"] for r in rows}[("P21", "SHARING_BLOCK_ACTIVE_CARE")] == "outstanding"


def test_a_new_decision_replaces_the_carried_one(batches: tuple[Path, Path]) -> None:
    _, third = batches
    rows = _rows(third)
    old, new = rows[("R07", "WRONG_TRANSFER_LIST", "previous")], rows[("R07", "WRONG_TRANSFER_LIST", "file")]
    assert (old["status"], old["reason_code"]) == ("superseded", "replaced")
    assert new["status"] == "applied" and new["decision"] == "keep"
    cohort = pl.read_parquet(third / "cohorts.parquet").filter(pl.col("referral_key") == "R07")
    assert cohort["cohort"].cast(pl.String).item() == "backlog"  # the derived list stands again


def test_the_next_worklist_shows_prior_decisions_outstanding_first(batches: tuple[Path, Path]) -> None:
    second, _ = batches
    book = openpyxl.load_workbook(second / "reports" / "exceptions.xlsx")
    for sheet in book.worksheets[1:]:
        headers = [c.value for c in sheet[1]]
        rows = [dict(zip(headers, r, strict=True)) for r in sheet.iter_rows(min_row=2, values_only=True)]
        states = [r["Review"] for r in rows]
        assert states == sorted(states, key=lambda s: s != "outstanding"), sheet.title
        for r in rows:
            assert (r["Prior decision"] is not None) == (r["Review"] == "decided")
    prior = {(r[12], r[1]): r[15] for s in book.worksheets[1:] for r in s.iter_rows(min_row=2, values_only=True)}
    assert prior[("R16", "POST_OP_NOT_PRIORITISED")] == "upgrade_urgent by Dr C Wu on 03/10/2022"


def test_a_previous_run_with_unreadable_decisions_exits_3_before_reading(batches: tuple[Path, Path],
                                                                          tmp_path: Path) -> None:
    import shutil

    from click.testing import CliRunner

    from cli import main
    from tests.review.conftest import CUTOVER, WORKED

    broken = tmp_path / "previous"
    shutil.copytree(batches[0], broken)
    (broken / "decisions.parquet").write_bytes(b"not parquet")
    out = tmp_path / "run"
    result = CliRunner().invoke(main, ["run", "--input", str(WORKED / "input"), "--mapping", str(WORKED / "mapping.yaml"),
                                       "--cutover", CUTOVER.isoformat(), "--out", str(out), "--previous", str(broken),
                                       "--quiet"])
    assert result.exit_code == 3 and "decisions.parquet is not readable" in result.output
    assert not (out / "canonical").exists()


def test_the_decisions_a_previous_run_carries_change_the_run_id(first_batch: Path, batches: tuple[Path, Path],
                                                                  tmp_path: Path) -> None:
    """A run id names what decided the batch: the decisions carried forward from --previous
    change it as a decisions file does; a previous run without decisions does not."""
    from migrate.pipeline import RunConfig
    from tests.review.conftest import CUTOVER, WORKED

    second, _ = batches
    assert (second / "decisions.parquet").is_file() and not (first_batch / "decisions.parquet").is_file()
    source = extract(tmp_path / "input")

    def rid(previous: Path | None) -> str:
        config = RunConfig.load(source, WORKED / "mapping.yaml", CUTOVER, tmp_path / "out", previous=previous)
        return config.run_id(["same-input-hash"])

    assert rid(second) != rid(None)
    assert rid(first_batch) == rid(None)


def test_diff_names_the_decisions_applied_in_one_run_and_not_the_other(batches: tuple[Path, Path]) -> None:
    """An auditor comparing two batches sees which moves were a clinician's doing: the third
    batch's new decision on R07, and the override it no longer applies (evidence changed)."""
    from click.testing import CliRunner

    import cli
    from migrate.reports import diff_runs

    second, third = batches
    decisions = diff_runs(second, third).asdict()["decisions"]
    applied = {(r["decision"], r["flag_code"]): r["subject_ids"] for r in decisions["applied"]}
    dropped = {(r["decision"], r["flag_code"]): r["subject_ids"] for r in decisions["no_longer_applied"]}
    assert applied[("keep", "WRONG_TRANSFER_LIST")] == ["R07"]
    assert dropped[("override", "SHARING_BLOCK_ACTIVE_CARE")] == ["P21"]
    # Carried forward unchanged (same decision id): in neither list.
    assert not any("R16" in ids for ids in (*applied.values(), *dropped.values()))
    shown = CliRunner().invoke(cli.main, ["diff", str(second), str(third)], terminal_width=100)
    assert shown.exit_code == 0, shown.output
    assert "Decisions no longer applied" in shown.output and "P21" in shown.output
