"""``patients.parquet``'s summary, made a range of patient keys at a time, is one row per source
patient in key order whatever the ranges: a merged patient shows its survivor's cohort (the
survivor may fall in another range), its own disposition, and its own flags."""

from __future__ import annotations

from pathlib import Path

import polars as pl
from hypothesis import given, settings
from hypothesis import strategies as st

from migrate import canonical
from migrate.patients import PATIENTS_SCHEMA, patient_summary

FLAGS = ("URGENT_WRONG_LIST", "SHARING_BLOCK", "NO_CONTACT")


@st.composite
def batches(draw: st.DrawFn) -> dict[str, pl.DataFrame]:
    """Patients (keys in no order, some merged into another), a cohort per survivor, a
    disposition per patient row (and rows of other tables), flags (some repeated)."""
    keys = draw(st.lists(st.text("ABCP0123456789", min_size=1, max_size=4), min_size=1, max_size=40, unique=True))
    survivors = [k for k in keys if draw(st.booleans()) or k == keys[0]]
    merged = {k: draw(st.sampled_from(survivors)) for k in keys if k not in survivors}
    patients = pl.DataFrame({
        "patient_key": keys, "nhs_number": [f"999{i:07d}" for i in range(len(keys))],
        "nhs_number_valid": [i % 3 != 0 for i in range(len(keys))],
        "nhs_number_verification": ["01" if i % 2 else None for i in range(len(keys))],
        "at_target_id": [None] * len(keys)}, schema_overrides={"at_target_id": pl.String})
    cohorts = pl.DataFrame({"patient_key": survivors,
                            "patient_cohort": [draw(st.sampled_from(canonical.COHORTS)) for _ in survivors]})
    dispositions = pl.DataFrame({
        "table": ["patients"] * len(keys) + ["referrals"] * len(keys),
        "patient_key": keys + keys,
        "disposition": ["merged" if k in merged else draw(st.sampled_from(canonical.DISPOSITIONS))
                        for k in keys] + ["migrated"] * len(keys)})
    flagged = draw(st.lists(st.tuples(st.sampled_from(keys), st.sampled_from(FLAGS)), max_size=60))
    exceptions = pl.DataFrame({"patient_key": [k for k, _ in flagged], "flag_code": [f for _, f in flagged]},
                              schema={"patient_key": pl.String, "flag_code": pl.String})
    merges = pl.DataFrame({"patient_key": list(merged), "survivor_key": list(merged.values())},
                          schema={"patient_key": pl.String, "survivor_key": pl.String})
    return {"patients": patients, "merges": merges, "cohorts": cohorts, "dispositions": dispositions,
            "exceptions": exceptions}


def _expected(b: dict[str, pl.DataFrame]) -> list[dict[str, object]]:
    """The summary worked out row by row (a reference independent of the ranges)."""
    merged = dict(b["merges"].iter_rows())
    cohort = dict(b["cohorts"].iter_rows())
    disposition = {k: d for t, k, d in b["dispositions"].iter_rows() if t == "patients"}
    flags: dict[str, set[str]] = {}
    for k, f in b["exceptions"].iter_rows():
        flags.setdefault(k, set()).add(f)
    rows = []
    for p in sorted(b["patients"].iter_rows(named=True), key=lambda r: r["patient_key"]):
        key = p["patient_key"]
        survivor = merged.get(key, key)
        rows.append({"patient_key": key, "nhs_number": p["nhs_number"], "patient_cohort": cohort.get(survivor),
                     "disposition": disposition[key], "flag_codes": sorted(flags.get(key, ())),
                     "survivor_key": survivor, "nhs_number_valid": p["nhs_number_valid"],
                     "nhs_number_verification": p["nhs_number_verification"], "at_target_id": None})
    return rows


@settings(max_examples=60, deadline=None)
@given(b=batches(), bucket=st.integers(1, 12))
def test_summary_rows_are_the_same_for_any_ranges(b: dict[str, pl.DataFrame], bucket: int, tmp_path_factory) -> None:
    work = Path(tmp_path_factory.mktemp("work"))
    summary = patient_summary(b["patients"].lazy(), b["merges"], b["cohorts"].lazy(), b["exceptions"].lazy(),
                              b["dispositions"].lazy(), work, bucket_patients=bucket).collect()
    assert summary.schema == pl.Schema(PATIENTS_SCHEMA)
    assert summary.to_dicts() == _expected(b)
