"""The child rows the FHIR stage sends (``migrate.fhir.carried``: a bitmap of carried source
rows) are the rows ``dispositions.carried``'s semi join gives, in the table's order, for
dispositions it did not design: several files, repeated and missing rows, other tables'
rows at the same positions, rows beyond every carried one."""

from __future__ import annotations

import polars as pl
from hypothesis import given, settings
from hypothesis import strategies as st

import migrate.fhir.carried as carried_module
from migrate.dispositions import carried
from migrate.fhir.carried import carried_patients, carried_rows

_FILES = st.sampled_from(["contacts.csv", "contacts-2.csv", "adt.hl7", "referrals.csv"])
_DISPOSITIONS = st.sampled_from(["migrated", "already_at_target", "withheld", "out_of_scope", "quarantined",
                                 "merged"])
_ROW = st.tuples(_FILES, st.none() | st.integers(0, 40))


@settings(max_examples=80, deadline=None)
@given(rows=st.lists(_ROW, max_size=60),
       decided=st.lists(st.tuples(st.sampled_from(["contacts", "referrals", "codes"]), _FILES,
                                  st.none() | st.integers(-1, 45), _DISPOSITIONS), max_size=80),
       chunk=st.integers(1, 7))
def test_the_bitmap_keeps_the_rows_the_semi_join_keeps(rows: list[tuple[str, int | None]],
                                                       decided: list[tuple[str, str, int | None, str]],
                                                       chunk: int) -> None:
    frame = pl.DataFrame({"source_file": [f for f, _ in rows], "source_row": [r for _, r in rows],
                          "order": list(range(len(rows)))},
                         schema={"source_file": pl.String, "source_row": pl.Int64, "order": pl.Int64})
    dispositions = pl.DataFrame(decided, schema={"table": pl.String, "source_file": pl.String,
                                                 "source_row": pl.Int64, "disposition": pl.String}, orient="row")
    original = carried_module.CHUNK_ROWS
    carried_module.CHUNK_ROWS = chunk  # the bitmap built from many small chunks of dispositions
    try:
        mine = carried_rows({"contacts": frame.lazy()}, dispositions.lazy())["contacts"].collect()
    finally:
        carried_module.CHUNK_ROWS = original
    theirs = carried(pl.LazyFrame({"patient_key": [], "survivor_key": []}, schema={"patient_key": pl.String,
                                                                                  "survivor_key": pl.String}),
                     {"contacts": frame.lazy()}, dispositions.lazy())["contacts"].collect()
    assert mine.sort("order").equals(theirs.sort("order"))
    assert mine["order"].is_sorted()  # the table's own order
    kept = {(t, f, r) for t, f, r, d in decided if d in ("migrated", "already_at_target")}
    # a null row is no key (a join matches no null)
    assert mine["order"].to_list() == [i for i, (f, r) in enumerate(rows) if r is not None and ("contacts", f, r) in kept]


_PATIENT_FILES = st.sampled_from(["patients.csv", "patients-2.csv", "adt.hl7"])


@settings(max_examples=80, deadline=None)
@given(rows=st.lists(st.tuples(_PATIENT_FILES, st.integers(1, 30)), max_size=25, unique=True),
       fates=st.lists(_DISPOSITIONS, min_size=25, max_size=25),
       merged=st.lists(st.tuples(st.integers(0, 24), st.integers(0, 24)), max_size=8),
       others=st.lists(st.tuples(st.sampled_from(["contacts", "referrals"]), _PATIENT_FILES, st.integers(1, 30),
                                 _DISPOSITIONS), max_size=20))
def test_patients_are_kept_as_the_semi_join_keeps_them(rows: list[tuple[str, int]], fates: list[str],
                                                       merged: list[tuple[int, int]],
                                                       others: list[tuple[str, str, int, str]]) -> None:
    """Patients (one row per key, at its own source row), some merged into a survivor: the
    bitmap keeps a patient whose own row is carried and a merged record whose survivor's is,
    exactly the rows ``dispositions.carried``'s semi join on the survivor's key keeps, in the
    frame's order — other tables' rows at the same positions change nothing."""
    keys = [f"P{i}" for i in range(len(rows))]
    survivor = {keys[a]: keys[b] for a, b in merged if a < len(keys) and b < len(keys) and a != b}
    survivor = {k: s for k, s in survivor.items() if s not in survivor}  # a survivor is not merged in turn
    merges = pl.DataFrame({"patient_key": list(survivor), "survivor_key": list(survivor.values())},
                          schema={"patient_key": pl.String, "survivor_key": pl.String})
    patients = pl.DataFrame({"patient_key": keys, "source_file": [f for f, _ in rows],
                             "source_row": [r for _, r in rows], "order": list(range(len(keys)))},
                            schema={"patient_key": pl.String, "source_file": pl.String, "source_row": pl.Int64,
                                    "order": pl.Int64}).with_columns(
        pl.col("patient_key").replace(survivor).alias("survivor_key"))
    own = [("patients", f, r, k, "merged" if k in survivor else fates[i])
           for i, ((f, r), k) in enumerate(zip(rows, keys, strict=True))]
    decided = pl.DataFrame(own + [(t, f, r, None, d) for t, f, r, d in others],
                           schema={"table": pl.String, "source_file": pl.String, "source_row": pl.Int64,
                                   "patient_key": pl.String, "disposition": pl.String}, orient="row")
    mine = carried_patients(patients.lazy(), merges, decided.lazy()).collect()
    theirs = carried(patients.lazy(), {}, decided.lazy())["patients"].collect()
    assert mine["order"].to_list() == sorted(theirs["order"].to_list())
    carried_keys = {k for _, _, _, k, d in own if d in ("migrated", "already_at_target")}
    assert mine["patient_key"].to_list() == [k for k in keys if survivor.get(k, k) in carried_keys]
