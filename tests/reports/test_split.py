"""Worklists per service line (`handover report RUN --split-by service_line`): each team gets
only its patients, and every exception of the run is in at least one team's worklist."""

from __future__ import annotations

import json
import re
from pathlib import Path
from types import ModuleType

import openpyxl
import polars as pl
import pytest
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st

import cli
from migrate.errors import ConfigError
from migrate.reports import verify, write_reports
from migrate.reports.split import split_worklist
from migrate.reports.worklist import OPEN_COHORTS, SERVICE_LINES

LINES = st.sampled_from(["knee", "Knee", "hand & wrist", "hand-wrist", "physio_tier1", "", "none", "no-service-line"])


@st.composite
def worklists(draw: st.DrawFn) -> pl.DataFrame:
    """Rows with an own service line (or none) and the lines whose worklist they belong to."""
    n = draw(st.integers(min_value=0, max_value=30))
    own = draw(st.lists(st.one_of(st.none(), LINES), min_size=n, max_size=n))
    members = [draw(st.one_of(st.just([o]), st.lists(st.one_of(st.none(), LINES), max_size=3))) for o in own]
    return pl.DataFrame({"row_id": list(range(n)), "service_line": own, SERVICE_LINES: members},
                        schema={"row_id": pl.Int64, "service_line": pl.String, SERVICE_LINES: pl.List(pl.String)})


@settings(max_examples=200, deadline=None)
@given(worklists())
def test_each_row_is_in_the_worklist_of_each_of_its_service_lines(frame: pl.DataFrame) -> None:
    parts = split_worklist(frame, "service_line")
    names = [name for _, name, _ in parts]
    assert len(set(names)) == len(names)  # one folder per value, "Knee" and "knee" included
    assert all(re.fullmatch(r"[a-z0-9]+(-[a-z0-9]+)*", n) for n in names)  # safe on every filesystem
    values = [v for v, _, _ in parts]
    assert values == sorted((v for v in values if v is not None)) + ([None] if None in values else [])
    seen: dict[int, set[str | None]] = {}
    for value, _, rows in parts:
        ids = rows["row_id"].to_list()
        assert ids == sorted(ids)  # review order kept
        assert len(ids) == len(set(ids))
        for i in ids:
            seen.setdefault(i, set()).add(value)
    for row_id, members in zip(frame["row_id"].to_list(), frame[SERVICE_LINES].to_list(), strict=True):
        expected = set(members) if members else {None}
        assert seen[row_id] == expected  # in every part it belongs to, and no other: none is lost


def test_a_column_the_worklist_cannot_be_split_by_is_refused() -> None:
    with pytest.raises(ConfigError, match="service_line"):
        split_worklist(pl.DataFrame({"cohort": ["backlog"]}), "cohort")


@pytest.fixture(scope="module")
def split_run(synth_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    run = tmp_path_factory.mktemp("split") / "run"
    import shutil

    shutil.copytree(synth_run, run)
    write_reports(run, split_by="service_line")
    return run


def team_rows(run: Path) -> dict[str, pl.DataFrame]:
    """Each team's CSV rows by its folder name."""
    folder = run / "reports" / "by-service-line"
    return {p.parent.name: pl.read_csv(p, infer_schema=False) for p in sorted(folder.glob("*/exceptions.csv"))}


def test_each_team_gets_only_its_patients(split_run: Path) -> None:
    everything = pl.read_csv(split_run / "reports" / "exceptions.csv", infer_schema=False)
    teams = team_rows(split_run)
    lines = pl.read_parquet(split_run / "canonical" / "referrals.parquet").select("referral_key", "service_line")
    open_lines = (pl.read_parquet(split_run / "cohorts.parquet")
                  .filter(pl.col("cohort").cast(pl.String).is_in(OPEN_COHORTS))
                  .join(lines, on="referral_key").select("patient_key", "service_line").unique())
    names = {v: re.sub(r"[^a-z0-9]+", "-", v.lower()).strip("-") for v in lines["service_line"].drop_nulls()}
    assert set(teams) - {"no-service-line"} == {names[v] for v in open_lines["service_line"].drop_nulls().unique()}
    key = ["rule_id", "subject_key", "flag_code"]
    for line, name in names.items():
        if name not in teams:
            continue
        rows = teams[name]
        referral_rows = rows.filter(pl.col("referral").is_not_null())
        assert (referral_rows["service_line"] == line).all()  # its referrals only
        patient_rows = rows.filter(pl.col("referral").is_null())
        mine = set(open_lines.filter(pl.col("service_line") == line)["patient_key"].to_list())
        assert set(patient_rows["patient_key"].to_list()) <= mine  # its patients only
        # ... and every patient-level exception of its patients.
        expected = everything.filter(pl.col("referral").is_null() & pl.col("patient_key").is_in(list(mine)))
        assert sorted(map(tuple, expected.select(key).rows())) == sorted(map(tuple, patient_rows.select(key).rows()))
        assert rows.columns == everything.columns  # the same columns, reviewer's included
    union = pl.concat(list(teams.values())).unique(subset=key)
    assert union.height == everything.height  # none is lost
    referral_rows = pl.concat(list(teams.values())).filter(pl.col("referral").is_not_null())
    assert referral_rows.height == everything.filter(pl.col("referral").is_not_null()).height  # once each


def test_team_workbooks_say_whose_they_are_and_are_sealed(split_run: Path) -> None:
    assert verify(split_run).ok  # every team's file is in the manifest
    manifest = json.loads((split_run / "manifest.json").read_text())
    listed = {o["path"] for o in manifest["outputs"]}
    for name, rows in team_rows(split_run).items():
        folder = f"reports/by-service-line/{name}"
        assert {f"{folder}/exceptions.xlsx", f"{folder}/exceptions.csv"} <= listed
        book = openpyxl.load_workbook(split_run / folder / "exceptions.xlsx")
        summary = {r[0]: r for r in book["Summary"].iter_rows(min_row=2, values_only=True) if r[0]}
        assert summary["All families"][6] == rows.height
        assert f"{rows.height:,} of the run's" in summary["This workbook"][1]
        line = rows["service_line"].drop_nulls()
        label = "no service line" if name == "no-service-line" else f"service line: {line[0]}"
        assert all(label in sheet.oddHeader.right.text for sheet in book.worksheets)


def test_the_command_line_splits_and_refuses_what_it_cannot(worked_run: Path, rh: ModuleType, tmp_path: Path) -> None:
    run = rh.copy_run(worked_run, tmp_path / "run")
    result = CliRunner().invoke(cli.main, ["report", str(run), "--split-by", "service_line", "--json"])
    assert result.exit_code == 0, result.output
    files = json.loads(result.stdout)["files"]
    assert any("/by-service-line/" in f and f.endswith("exceptions.xlsx") for f in files)
    result = CliRunner().invoke(cli.main, ["report", str(run), "--split-by", "clinician"])
    assert result.exit_code == 2 and "service_line" in result.stderr
    result = CliRunner().invoke(cli.main, ["report", str(run), "--split-by", "service_line", "--pseudonymise",
                                           "--key-file", str(tmp_path / "k"), "--out", str(tmp_path / "pack")])
    assert result.exit_code == 2 and "--split-by" in result.stderr
