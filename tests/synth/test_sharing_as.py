"""``handover synth --sharing-as codes|column|practice`` (issue #20): the same people, their
sharing wishes kept as coded entries, as their own ``sharing_out`` column, or as GP practices
that do not share out; a run over each finds exactly the truth's flags, and every row of the
practice file has a disposition."""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path

import polars as pl
import pytest

from migrate.pipeline import RunConfig, run_batch
from migrate.synth import PRACTICE_FILE, synthesise

PATIENTS, SEED = 1_000, 11


def _people(path: Path) -> pl.DataFrame:
    """The clean people's rows of patients.csv (planted junk rows, after them, set aside)."""
    rows = pl.read_csv(path, infer_schema=False, truncate_ragged_lines=True, encoding="utf8-lossy")
    return rows.filter(pl.col("patient_id") <= f"P{PATIENTS:07d}")


@pytest.fixture(scope="module")
def extracts(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("sharing-as")
    for mode in ("codes", "column", "practice"):
        synthesise(root / mode, patients=PATIENTS, seed=SEED, sharing_as=mode)
    return {mode: root / mode for mode in ("codes", "column", "practice")}


def test_the_truth_and_every_other_file_but_where_sharing_is_kept_are_the_same(extracts: dict[str, Path]) -> None:
    codes, column, practice = (extracts[m] for m in ("codes", "column", "practice"))
    for name in ("referrals.csv", "contacts.csv", "target-index.csv", "truth/flags.csv", "truth/cohorts.csv",
                 "truth/patient_cohorts.csv"):
        assert (codes / name).read_bytes() == (column / name).read_bytes() == (practice / name).read_bytes(), name
    settings, plain = (_people(extracts[m] / "patients.csv") for m in ("column", "codes"))
    assert set(settings["sharing_out"].drop_nulls()) == {"No", "Yes"}
    assert plain["sharing_out"].null_count() == plain.height
    kept = pl.read_csv(column / "codes.csv", infer_schema=False, truncate_ragged_lines=True, encoding="utf8-lossy")
    assert not kept["code"].is_in(["93C1", "9Nd7", "416409005", "425691002"]).any()
    assert not (codes / PRACTICE_FILE).exists() and not (column / PRACTICE_FILE).exists()
    practices = pl.read_csv(practice / PRACTICE_FILE, infer_schema=False)
    assert set(practices["shares_out"]) == {"Y", "N"} and practices["ods_code"].is_unique().all()
    summary = json.loads((practice / "truth" / "summary.json").read_text())
    assert summary["parameters"]["sharing_as"] == "practice"


def test_deterministic_per_mode(tmp_path: Path, extracts: dict[str, Path]) -> None:
    synthesise(tmp_path / "again", patients=PATIENTS, seed=SEED, sharing_as="practice")
    for name in ("patients.csv", "codes.csv", PRACTICE_FILE):
        assert (tmp_path / "again" / name).read_bytes() == (extracts["practice"] / name).read_bytes()
    with pytest.raises(ValueError):
        synthesise(tmp_path / "bad", patients=10, sharing_as="somewhere")


@pytest.mark.parametrize("mode", ["column", "practice"])
def test_a_run_finds_the_truths_flags_wherever_the_block_is_kept(extracts: dict[str, Path], mode: str) -> None:
    extract = extracts[mode]
    practice = extract / PRACTICE_FILE if mode == "practice" else None
    result = run_batch(RunConfig.load(extract, "generic-csv", date(2022, 10, 1), extract.parent / f"{mode}-run",
                                      target_index=extract / "target-index.csv", practice_sharing=practice))
    assert result.ok
    run = result.run_dir
    truth = pl.read_csv(extract / "truth" / "flags.csv", infer_schema=False)
    got = pl.read_parquet(run / "exceptions.parquet").filter(pl.col("subject_type") == "patient")
    for code in ("SHARING_BLOCK", "SHARING_BLOCK_ACTIVE_CARE"):
        want = set(truth.filter(pl.col("flag_code") == code)["subject_id"])
        assert want and set(got.filter(pl.col("flag_code") == code)["subject_key"]) == want, code
    source = {"column": "patient_setting", "practice": "practice_setting"}[mode]
    blocked = result.summary["sharing"]["blocked_by_source"]
    assert blocked[source] == len(set(truth.filter(pl.col("flag_code") == "SHARING_BLOCK")["subject_id"]))
    assert sum(blocked.values()) == blocked[source]
    files = {f["file"]: f for f in result.summary["invariant"]["files"]}
    if mode == "practice":
        rows = files[PRACTICE_FILE]
        assert rows["holds"] and rows["dispositions"]["migrated"] > 0 and rows["dispositions"]["out_of_scope"] > 0
        assert rows["rows_read"] == pl.read_csv(extract / PRACTICE_FILE).height


def test_the_command_writes_the_practice_file_and_says_how_to_read_it(tmp_path: Path) -> None:
    from click.testing import CliRunner

    import cli

    result = CliRunner().invoke(cli.main, ["synth", "--out", str(tmp_path / "x"), "--patients", "300",
                                           "--sharing-as", "practice"])
    assert result.exit_code == 0, result.output
    said = " ".join(result.output.split())  # the console wraps lines by the length of the path it names
    assert "sharing blocks as practice" in said and "--practice-sharing" in said
    assert (tmp_path / "x" / PRACTICE_FILE).is_file()
    bad = CliRunner().invoke(cli.main, ["synth", "--out", str(tmp_path / "y"), "--sharing-as", "elsewhere"])
    assert bad.exit_code == 2
