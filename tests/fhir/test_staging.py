"""The FHIR writer's inputs staged by batch (``migrate.fhir.inputs.stage``): every row of
the canonical tables lands in its patient's batch, or the stage says which did not."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest

from migrate.errors import HandoverError
from migrate.fhir.inputs import stage


def _inputs(orphans: int) -> dict[str, pl.LazyFrame]:
    patients = pl.LazyFrame({"patient_key": ["P1", "P2", "P3"], "source_row": [1, 2, 3]})
    referrals = pl.LazyFrame({"referral_key": ["R1", "R2", "R3"] + [f"RX{i}" for i in range(orphans)],
                              "patient_key": ["P1", "P2", "P3"] + ["NOBODY"] * orphans})
    contacts = pl.LazyFrame({"contact_key": ["C1", "C2", "C3"], "referral_key": ["R1", "R3", None],
                             "patient_key": ["P1", "P3", "P2"]})
    codes = pl.LazyFrame({"patient_key": ["P2", "P3"], "code": ["a", "b"]})
    return {"patients": patients, "referrals": referrals, "contacts": contacts, "codes": codes}


def _plan() -> pl.DataFrame:
    return pl.DataFrame({"patient_key": ["P1", "P2", "P3"], "survivor_key": ["P1", "P2", "P3"],
                         "bundle_no": [1, 2, 3]}, schema_overrides={"bundle_no": pl.Int64})


def _stage(tables: dict[str, pl.LazyFrame], root: Path) -> object:
    cohorts = pl.LazyFrame({"referral_key": ["R1", "R2", "GONE"], "cohort": ["backlog"] * 3})
    keys = pl.LazyFrame({"patient_key": ["P1", "GONE"], "flag_code": ["X", "Y"]})
    return stage(tables, cohorts, keys, keys, None, _plan(), 2, root)


def test_every_row_lands_in_its_patients_batch(tmp_path: Path) -> None:
    staged = _stage(_inputs(0), tmp_path)
    batches = {name: {b: sorted(staged.frame(name, b).collect().to_dicts(), key=str)  # type: ignore[attr-defined]
                      for b in (0, 1)} for name in ("referrals", "contacts", "codes", "cohorts", "exceptions")}
    # bundles 1-2 are batch 0, bundle 3 batch 1; a contact follows its referral, or its patient without one
    assert [r["referral_key"] for r in batches["referrals"][0]] == ["R1", "R2"]
    assert [r["contact_key"] for r in batches["contacts"][0]] == ["C1", "C3"]
    assert [r["contact_key"] for r in batches["contacts"][1]] == ["C2"]
    assert [r["patient_key"] for r in batches["codes"][1]] == ["P3"]
    # a cohort or flag of no patient of the output is not needed: left out, not raised
    assert [r["referral_key"] for r in batches["cohorts"][0]] == ["R1", "R2"]
    assert [r["patient_key"] for r in batches["exceptions"][0]] == ["P1"]
    assert not any(p.name.startswith("batch=-") for p in tmp_path.rglob("*"))


def test_rows_of_no_patient_are_raised_with_their_count(tmp_path: Path) -> None:
    with pytest.raises(HandoverError) as raised:
        _stage(_inputs(2), tmp_path)
    assert raised.value.problems == ["referrals: 2 rows belong to no patient of the batch"]
