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


# --- bounded-memory splitting: the same rows, in the same order, whatever the budget -----------
from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from migrate.fhir.batches import UNPLACED, split  # noqa: E402

_ROW = st.tuples(st.integers(UNPLACED, 6), st.text(max_size=30), st.none() | st.integers(-5, 5))


def _read(folder: Path, batch: int) -> list[dict[str, object]]:
    files = sorted((folder / f"batch={batch}").glob("*.parquet"))
    return pl.concat([pl.read_parquet(f) for f in files]).to_dicts() if files else []


@settings(max_examples=60, deadline=None)
@given(rows=st.lists(_ROW, max_size=120), chunk_rows=st.integers(1, 130), budget=st.integers(1, 20_000))
def test_split_gives_each_batch_its_rows_in_order_for_any_budget(tmp_path_factory: pytest.TempPathFactory,
                                                                 rows: list[tuple[int, str, int | None]],
                                                                 chunk_rows: int, budget: int) -> None:
    # a small budget writes many files per batch, a chunk of one row many chunks: the rows
    # read back (files in name order) are exactly the batch's rows in the frame's order
    folder = tmp_path_factory.mktemp("split")
    frame = pl.DataFrame(rows, schema={"batch": pl.Int64, "text": pl.String, "n": pl.Int64}, orient="row")
    lost = split(frame.lazy(), folder, chunk_rows=chunk_rows, budget_bytes=budget)
    assert lost == frame.filter(pl.col("batch") == UNPLACED).height
    for batch in range(7):
        assert _read(folder, batch) == frame.filter(pl.col("batch") == batch).drop("batch").to_dicts()
    assert not (folder / f"batch={UNPLACED}").exists()


@settings(max_examples=25, deadline=None)
@given(per_batch=st.integers(1, 4), chunk_rows=st.integers(1, 5), budget=st.integers(1, 3_000))
def test_staging_in_small_pieces_gives_the_rows_of_one_pass(tmp_path_factory: pytest.TempPathFactory,
                                                             per_batch: int, chunk_rows: int, budget: int) -> None:
    # the whole staging (one chunk, a budget no frame reaches) against the same inputs read a
    # few rows at a time and written in many small files: every batch of every frame the same
    tables = _inputs(0)
    patients = tables["patients"].collect()
    more = pl.DataFrame({"patient_key": [f"P{i}" for i in range(4, 12)], "source_row": list(range(4, 12))})
    tables["patients"] = pl.concat([patients, more]).lazy()
    tables["codes"] = pl.LazyFrame({"patient_key": [f"P{i % 11 + 1}" for i in range(40)],
                                    "code": [str(i) for i in range(40)]})
    plan = pl.DataFrame({"patient_key": [f"P{i}" for i in range(1, 12)], "survivor_key": [f"P{i}" for i in range(1, 12)],
                         "bundle_no": list(range(1, 12))}, schema_overrides={"bundle_no": pl.Int64})
    cohorts = pl.LazyFrame({"referral_key": ["R1", "R2", "GONE"], "cohort": ["backlog"] * 3})
    keys = pl.LazyFrame({"patient_key": ["P1", "P7", "GONE"], "flag_code": ["X", "Y", "Z"]})
    whole = stage(tables, cohorts, keys, keys, None, plan, per_batch, tmp_path_factory.mktemp("whole"),
                  chunk_rows=10_000, budget_bytes=1 << 40)
    pieces = stage(tables, cohorts, keys, keys, None, plan, per_batch, tmp_path_factory.mktemp("pieces"),
                   chunk_rows=chunk_rows, budget_bytes=budget)
    for name in ("patients", "referrals", "contacts", "codes", "cohorts", "exceptions", "sharing"):
        for batch in range(-(-11 // per_batch)):
            assert pieces.frame(name, batch).collect().equals(whole.frame(name, batch).collect()), (name, batch)
    assert sum(whole.frame("codes", b).collect().height for b in range(-(-11 // per_batch))) == 40
