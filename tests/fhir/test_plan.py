"""The patients planned into bundles (``migrate.fhir.inputs.plan_patients``): every patient
row once, a merged record in its survivor's bundle, survivors numbered in key order and cut
into bundles of the bundle size, whatever order the rows come in."""

from __future__ import annotations

import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from migrate.errors import HandoverError
from migrate.fhir.inputs import plan_patients


@settings(max_examples=150, deadline=None)
@given(keys=st.lists(st.text("abcXYZ019", min_size=1, max_size=5), max_size=30, unique=True),
       merged=st.lists(st.tuples(st.integers(0, 29), st.integers(0, 29)), max_size=10),
       size=st.integers(1, 4), rnd=st.randoms())
def test_every_patient_is_planned_once_with_its_survivor(keys: list[str], merged: list[tuple[int, int]], size: int,
                                                         rnd: object) -> None:
    survivor = {keys[a]: keys[b] for a, b in merged if max(a, b) < len(keys) and a != b}
    survivor = {k: s for k, s in survivor.items() if s not in survivor}  # no chains
    rows = [(k, survivor.get(k)) for k in keys]
    rnd.shuffle(rows)  # type: ignore[attr-defined]
    plan = plan_patients(pl.LazyFrame(rows, schema={"patient_key": pl.String, "survivor_key": pl.String},
                                      orient="row"), size)
    assert sorted(plan["patient_key"].to_list()) == sorted(keys)
    survivors = sorted(k for k in keys if k not in survivor)
    bundle_of = {k: i // size + 1 for i, k in enumerate(survivors)}
    for key, own, bundle in plan.select("patient_key", "survivor_key", "bundle_no").iter_rows():
        assert own == survivor.get(key, key)
        assert bundle == bundle_of[own]
    assert plan.select("survivor_key", "patient_key").rows() == sorted(plan.select("survivor_key", "patient_key").rows())


def test_a_survivor_that_is_not_a_patient_is_raised() -> None:
    frame = pl.LazyFrame({"patient_key": ["P1", "P2"], "survivor_key": [None, "GONE"]})
    with pytest.raises(HandoverError, match="not a survivor"):
        plan_patients(frame, 2)
