"""Every configuration problem at once: every file's problems reported together, before
anything is read or written."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

import cli

CASE = Path(__file__).parent / "cases" / "worked-example"


def invoke(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli.main, list(args))
    return result.exit_code, result.stdout, result.stderr


@pytest.fixture
def bad(tmp_path: Path) -> dict[str, Path]:
    """One broken file of every kind a run loads."""
    profile = tmp_path / "profile.yaml"
    profile.write_text("profile: bad\nformat_version: 1\ntables:\n  patients:\n    files: p.csv\n    fields:\n"
                       "      source_patient_id: id\n      shoe_size: s\n")
    other = tmp_path / "other.yaml"
    other.write_text("profile: other\nformat_version: 1\ntables:\n  referrals:\n    files: r.csv\n    fields:\n"
                     "      referral_key: {column: id, formats: ['%Q']}\n")
    site = tmp_path / "site"
    site.mkdir()
    (site / "default.yaml").write_text("extends: default\nname: site\nthresholds: {post_op_window_days: soon}\n")
    (site / "identity.yaml").write_text("name: identity\nnhs_number: 5\n")
    declared = tmp_path / "declared.yaml"
    declared.write_text("lists: {holiday: 3}\n")
    index = tmp_path / "index.csv"
    index.write_text("id,number\n1,9434765919\n")
    return {"profile": profile, "other": other, "site": site, "declared": declared, "index": index}


def test_a_run_reports_every_problem_of_every_file_at_once(bad: dict[str, Path], tmp_path: Path) -> None:
    """Before: only the profile's problem was reported, then the next run stopped at the pack…"""
    code, _, err = invoke("run", "--input", str(CASE / "input"), "--mapping", str(bad["profile"]), "--mapping",
                          str(bad["other"]), "--cutover", "2022-10-01", "--out", str(tmp_path / "run"),
                          "--rules", str(bad["site"]), "--target-index", str(tmp_path / "absent.csv"),
                          "--declared", str(bad["declared"]))
    assert code == 2
    for expected in ("shoe_size",  # the first profile
                     "other.yaml: tables.referrals",  # the second profile
                     "post_op_window_days",  # the rule pack
                     "identity.yaml: nhs_number: must be a mapping",  # the site's identity settings
                     "target index not found",  # a missing input, listed with the rest
                     "lists.holiday"):  # the declaration
        assert expected in err, expected
    assert "configuration problem(s); nothing was read" in err
    assert not (tmp_path / "run").exists()


def test_target_index_columns_are_checked_before_reading(bad: dict[str, Path], tmp_path: Path) -> None:
    code, _, err = invoke("run", "--input", str(CASE / "input"), "--mapping", str(CASE / "mapping.yaml"),
                          "--cutover", "2022-10-01", "--out", str(tmp_path / "run"), "--target-index",
                          str(bad["index"]))
    assert code == 2
    assert "index.csv (target_index): missing column(s) local_id, nhs_number; columns present: id, number" in err
    assert not (tmp_path / "run").exists()


def test_only_missing_inputs_exit_3_listing_each(tmp_path: Path) -> None:
    code, _, err = invoke("run", "--input", str(tmp_path / "no-extract"), "--mapping", str(CASE / "mapping.yaml"),
                          "--cutover", "2022-10-01", "--out", str(tmp_path / "run"), "--target-index",
                          str(tmp_path / "no-index.csv"), "--previous", str(tmp_path / "no-run"))
    assert code == 3
    for name in ("no-extract", "no-index.csv", "no-run"):
        assert name in err, name


def test_check_and_dedupe_report_every_problem(bad: dict[str, Path], tmp_path: Path) -> None:
    code, _, err = invoke("check", "--input", str(CASE / "input"), "--mapping", str(bad["profile"]), "--mapping",
                          str(bad["other"]))
    assert code == 2 and "shoe_size" in err and "other.yaml: tables.referrals" in err
    code, _, err = invoke("dedupe", "--input", str(tmp_path / "none.csv"), "--mapping", str(bad["profile"]),
                          "--out", str(tmp_path / "dd"), "--rules", str(bad["site"]))
    assert code == 2
    assert "shoe_size" in err and "identity.yaml" in err and "none.csv" in err
