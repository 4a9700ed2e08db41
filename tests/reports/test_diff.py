"""diff_runs between two batches of the worked example with known changes."""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from rich.console import Console

from migrate.reports import diff_runs, write_reports


def edit_extract(source: Path, to: Path) -> Path:
    """Batch B's extract: P24 gone, P30 new, R01 seen before the cut-over (backlog -> transition)."""
    shutil.copytree(source, to)

    def lines(name: str) -> list[str]:
        return (to / name).read_text().splitlines()

    def write(name: str, rows: list[str]) -> None:
        (to / name).write_text("\n".join(rows) + "\n")

    write("patients.csv", [r for r in lines("patients.csv") if not r.startswith("P24,")]
          + ["P30,9991000305,Young,Yasmin,1970-01-30,female,OX9 9AB,K84001"])
    write("referrals.csv", [r for r in lines("referrals.csv") if not r.startswith("R24,")]
          + ["R30,P30,2022-08-01,physio_tier1,routine,backlog,open,,,N,,knee,,N"])
    write("codes.csv", [r for r in lines("codes.csv") if not r.startswith("P24,")])
    write("contacts.csv", lines("contacts.csv") + ["C01a,R01,P01,2022-09-15 10:00,5,initial,"])
    return to


@pytest.fixture(scope="module")
def two_runs(worked_run: Path, rh: ModuleType, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("diff")
    extract = edit_extract(rh.WORKED / "input", root / "extract-b")
    return worked_run, rh.run_extract(extract, rh.WORKED / "mapping.yaml", root / "run-b")


def test_new_gone_and_changed_patients_are_named(two_runs: tuple[Path, Path]) -> None:
    diff = diff_runs(*two_runs).asdict()
    patients = diff["patients"]
    assert patients["new"] == {"count": 1, "ids": ["P30"]}
    assert patients["gone"] == {"count": 1, "ids": ["P24"]}
    assert patients["changed"]["ids"] == ["P01"]
    assert patients["changed"]["by_table"] == {"patients": 0, "referrals": 0, "contacts": 1, "codes": 0}
    assert patients["unchanged"] == 28 - 1 - 1


def test_cohort_moves_and_flags_raised_and_cleared(two_runs: tuple[Path, Path]) -> None:
    diff = diff_runs(*two_runs).asdict()
    # P28 has P01's NHS number: merged into P01, it is reported under its survivor's cohort.
    assert diff["cohort_moves"]["patients"] == [
        {"from": "backlog", "to": "transition", "count": 2, "ids": ["P01", "P28"]}]
    assert diff["cohort_moves"]["referrals"] == [{"from": "backlog", "to": "transition", "count": 1, "ids": ["R01"]}]
    # R01 is labelled backlog but is now in transition.
    assert diff["flags"]["raised"] == [{"flag_code": "WRONG_TRANSFER_LIST", "count": 1, "subject_ids": ["R01"]}]
    # Only flags about P24 (gone) can clear, e.g. an identity pair it was part of.
    cleared = [s for r in diff["flags"]["cleared"] for s in r["subject_ids"]]
    assert all("P24" in s.split("+") for s in cleared)
    assert sum(r["count"] for r in diff["flags"]["cleared"]) == len(cleared)


def test_a_run_against_itself_has_no_changes(two_runs: tuple[Path, Path]) -> None:
    diff = diff_runs(two_runs[0], two_runs[0]).asdict()
    assert [diff["patients"][k]["count"] for k in ("new", "gone", "changed")] == [0, 0, 0]
    assert diff["cohort_moves"] == {"patients": [], "referrals": []}
    assert diff["flags"] == {"raised": [], "cleared": []}


def test_moving_rows_around_in_the_extract_is_no_change(worked_run: Path, rh: ModuleType, tmp_path: Path) -> None:
    extract = tmp_path / "extract"
    shutil.copytree(rh.WORKED / "input", extract)
    for name in ("patients.csv", "referrals.csv", "contacts.csv", "codes.csv"):
        head, *rows = (extract / name).read_text().splitlines()
        (extract / name).write_text("\n".join([head, *reversed(rows)]) + "\n")
    reordered = rh.run_extract(extract, rh.WORKED / "mapping.yaml", tmp_path / "run")
    assert diff_runs(worked_run, reordered).asdict()["patients"]["changed"]["count"] == 0


def test_the_diff_is_json_and_renders_within_100_columns(two_runs: tuple[Path, Path]) -> None:
    diff = diff_runs(*two_runs)
    assert json.loads(json.dumps(diff.asdict())) == diff.asdict()
    out = io.StringIO()
    Console(file=out, width=100, color_system=None).print(diff)
    text = out.getvalue()
    assert max(len(line) for line in text.splitlines()) <= 100
    for expected in ("P30", "P24", "P01", "backlog", "transition", "WRONG_TRANSFER_LIST"):
        assert expected in text


def test_the_reports_show_the_delta_against_the_previous_run(two_runs: tuple[Path, Path], rh: ModuleType,
                                                            tmp_path: Path) -> None:
    run_b = rh.copy_run(two_runs[1], tmp_path / "run-b")
    delta: dict[str, Any] = write_reports(run_b, previous=two_runs[0]).summary["delta"]
    assert delta["available"] and delta["patients"]["new"]["ids"] == ["P30"]
    assert "path" not in delta["run_a"]  # where runs sit must not change the report
    page = (run_b / "reports" / "reconciliation.html").read_text()
    for expected in ("<code>P30</code>", "<code>P24</code>", "<code>R01</code>"):
        assert expected in page
