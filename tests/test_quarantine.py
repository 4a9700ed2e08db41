"""One quarantine module owns the reason codes: every code a run writes is one of them,
and the README lists them all."""

from __future__ import annotations

import re
from pathlib import Path

import polars as pl
import pytest
from click.testing import CliRunner

import cli
from migrate import quarantine

README = Path(__file__).resolve().parents[1] / "README.md"


def test_every_reason_code_a_run_writes_is_registered(tmp_path: Path) -> None:
    """A synthetic extract with planted malformed rows and an HL7 feed with planted broken
    messages: every quarantine row's code is one of quarantine.REASON_CODES."""
    runner = CliRunner()
    assert runner.invoke(cli.main, ["synth", "--out", str(tmp_path / "x"), "--patients", "300", "--hl7", "300",
                                    "--quiet"]).exit_code == 0
    result = runner.invoke(cli.main, ["run", "--input", str(tmp_path / "x"), "--mapping", "generic-csv",
                                      "--mapping", "hl7v2", "--cutover", "2022-10-01", "--out",
                                      str(tmp_path / "run"), "--no-fhir", "--quiet"])
    assert result.exit_code == 0, result.stderr
    codes = set(pl.read_parquet(tmp_path / "run" / "quarantine.parquet")["reason_code"])
    assert len(codes) >= 5  # the planted problems are of several kinds
    assert codes <= set(quarantine.REASON_CODES)
    assert pl.read_parquet(tmp_path / "run" / "quarantine.parquet").schema == quarantine.QUARANTINE_SCHEMA


def test_the_readme_lists_every_reason_code() -> None:
    text = README.read_text(encoding="utf-8")
    listed = set(re.findall(r"`([a-z0-9_]+)`", text[text.index("Quarantine reason codes"):]))
    assert set(quarantine.REASON_CODES) <= listed


def test_a_check_cannot_invent_a_reason_code() -> None:
    frame = pl.DataFrame({"source_file": ["a.csv"], "source_row": [1]})
    assert quarantine.mark(frame, "duplicate_key", "x", pl.lit("m"))["__message"][0] == "a.csv row 1: m"
    with pytest.raises(ValueError, match="unknown quarantine reason code"):
        quarantine.mark(frame, "looks_wrong", "x", pl.lit("m"))
