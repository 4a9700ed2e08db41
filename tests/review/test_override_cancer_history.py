"""An applied override lifts the whole withholding: the cancer history recorded on a blocked
patient's referral is sent as a Condition once a reviewer overrides the block, as the
patient's contacts and clinical entries are (and stays withheld without the override)."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path

import polars as pl
import pytest

from tests.review.conftest import extract, fill, run

# P21 is blocked (SHARING_BLOCK_ACTIVE_CARE); here its referral R21 records a history of cancer.
CANCER = {"referrals.csv": lambda text: text.replace("R21,P21,2022-07-01,physio_tier1,routine,transition,open,,,N,",
                                                    "R21,P21,2022-07-01,physio_tier1,routine,transition,open,,,Y,")}
OVERRIDE = {"Reviewer": "Dr A Patel", "Decision": "override", "Date": datetime(2022, 10, 3),
            "Note": "consent to share recorded by phone on 02/10/2022", "Second reviewer": "Dr B Jones"}


@pytest.fixture(scope="module")
def batches(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    base = tmp_path_factory.mktemp("cancer")
    source = extract(base / "input", CANCER)
    first = base / "run1"
    run(source, first)
    filled = fill(first / "reports" / "exceptions.xlsx", base / "decided.xlsx",
                  {("P21", "SHARING_BLOCK_ACTIVE_CARE"): OVERRIDE})
    second = base / "run2"
    run(source, second, [filled])
    return first, second


def _cancer_history(run_dir: Path) -> list[dict[str, object]]:
    """P21's cancer-history Conditions in the run's FHIR output."""
    lineage = pl.read_parquet(run_dir / "lineage.parquet")
    patient = lineage.filter((pl.col("patient_key") == "P21") & (pl.col("fhir_type") == "Patient"))["fhir_id"][0]
    lines = (run_dir / "fhir" / "ndjson" / "Condition.ndjson").read_text(encoding="utf-8").splitlines()
    return [c for c in map(json.loads, lines)
            if c["subject"]["reference"] == f"Patient/{patient}" and c["code"].get("text") == "Personal history of cancer"]


def test_the_edit_is_real(batches: tuple[Path, Path]) -> None:
    first, _ = batches
    referrals = pl.read_parquet(first / "canonical" / "referrals.parquet")
    assert referrals.filter(pl.col("referral_key") == "R21")["history_of_cancer"].to_list() == [True]
    blocked = pl.read_parquet(first / "exceptions.parquet").filter(pl.col("subject_key") == "P21")
    assert "SHARING_BLOCK_ACTIVE_CARE" in blocked["flag_code"].to_list()


def test_without_an_override_the_cancer_history_is_withheld(batches: tuple[Path, Path]) -> None:
    first, _ = batches
    assert _cancer_history(first) == []


def test_an_override_sends_the_cancer_history_with_its_lineage(batches: tuple[Path, Path]) -> None:
    _, second = batches
    [condition] = _cancer_history(second)
    lineage = pl.read_parquet(second / "lineage.parquet")
    r21 = lineage.filter((pl.col("table") == "referrals") & (pl.col("fhir_id") == condition["id"]))
    assert r21["fhir_type"].to_list() == ["Condition"]
    roundtrip = json.loads((second / "reports" / "roundtrip.json").read_text(encoding="utf-8"))
    assert roundtrip["mismatches"] == 0
