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


def test_a_referral_key_twice_is_raised_not_placed_by_either(tmp_path: Path) -> None:
    """Two referrals with one key: their hashes are equal, so staging turns to the keys
    themselves, which say the key occurs twice (a row cannot be placed by it)."""
    tables = _inputs(0)
    tables["referrals"] = pl.concat([tables["referrals"], pl.LazyFrame({"referral_key": ["R2"], "patient_key": ["P3"]})])
    with pytest.raises(HandoverError, match="a referral key occurs twice"):
        _stage(tables, tmp_path)


def test_keys_whose_hashes_collide_are_placed_by_the_keys_themselves(tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """Were two distinct keys' 64-bit hashes equal, the rows are placed as without hashes."""
    from migrate.staging import HashedKeys

    expected = _stage(_inputs(0), tmp_path / "hashed")
    monkeypatch.setattr(HashedKeys, "sorted", lambda self: False)
    collided = _stage(_inputs(0), tmp_path / "exact")
    for name in ("patients", "referrals", "contacts", "codes", "cohorts", "exceptions"):
        for batch in (0, 1):
            assert (collided.frame(name, batch).collect().to_dicts()  # type: ignore[attr-defined]
                    == expected.frame(name, batch).collect().to_dicts())  # type: ignore[attr-defined]


# --- bounded-memory splitting: the same rows, in the same order, whatever the budget -----------
from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from migrate.fhir.batches import UNPLACED, by, split  # noqa: E402
from migrate.staging import SortedKeys  # noqa: E402

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
    # (each row placed by its id's batch, looked up as staging looks keys up; every third id
    # unknown to the lookup: unplaced, as a row of no patient is)
    folder = tmp_path_factory.mktemp("split")
    frame = pl.DataFrame(rows, schema={"batch": pl.Int64, "text": pl.String, "n": pl.Int64}, orient="row")
    frame = frame.with_row_index("id").with_columns(pl.format("k{}", "id").alias("id"))
    known = frame.gather_every(3, offset=1).vstack(frame.gather_every(3, offset=2))
    frame = frame.with_columns(pl.when(pl.col("id").is_in(known["id"].implode())).then("batch")
                               .otherwise(UNPLACED).alias("batch"))
    lost = split([(frame.drop("batch").lazy(), by(SortedKeys(known["id"], known["batch"]), "id"))], folder,
                 chunk_rows=chunk_rows, budget_bytes=budget)
    assert lost == frame.filter(pl.col("batch") == UNPLACED).height
    for batch in range(7):
        assert _read(folder, batch) == frame.filter(pl.col("batch") == batch).drop("batch").to_dicts()
    assert not (folder / f"batch={UNPLACED}").exists()


_KEY = st.sampled_from(["P1", "P2", "P3", "P4", "P5", "P6"])


@settings(max_examples=40, deadline=None)
@given(referrals=st.lists(_KEY, min_size=1, max_size=25),
       contacts=st.lists(st.tuples(st.none() | st.integers(0, 30), _KEY), max_size=60),
       per_batch=st.integers(1, 4), chunk_rows=st.integers(1, 20), budget=st.integers(1, 5_000),
       orphan=st.sampled_from([None, "referral", "contact"]))
def test_placing_by_lookup_stages_what_the_left_join_did(tmp_path_factory: pytest.TempPathFactory,
                                                          referrals: list[str], contacts: list[tuple[int | None, str]],
                                                          per_batch: int, chunk_rows: int, budget: int,
                                                          orphan: str | None) -> None:
    """Contacts and cohorts placed by their referral's batch (or their patient's, without a
    referral), compared with the streaming left joins that placed them before: the same rows
    in every batch, in the same order; a cohort of no referral left out, a canonical row of
    no patient raised."""
    contacts = [(None if r is None else r % (len(referrals) + (orphan == "contact")), p) for r, p in contacts]
    referrals = referrals + (["NOBODY"] if orphan == "referral" else [])
    plan = pl.DataFrame({"patient_key": [f"P{i}" for i in range(1, 7)], "survivor_key": [f"P{i}" for i in range(1, 7)],
                         "bundle_no": list(range(1, 7))}, schema_overrides={"bundle_no": pl.Int64})
    tables = {"patients": plan.select("patient_key").lazy(),
              "referrals": pl.LazyFrame({"referral_key": [f"R{i}" for i in range(len(referrals))],
                                         "patient_key": referrals}),
              "contacts": pl.LazyFrame({"contact_key": [f"C{i}" for i in range(len(contacts))],
                                        "referral_key": [None if r is None else f"R{r}" for r, _ in contacts],
                                        "patient_key": [p for _, p in contacts]},
                                       schema={"contact_key": pl.String, "referral_key": pl.String,
                                               "patient_key": pl.String}),
              "codes": pl.LazyFrame(schema={"patient_key": pl.String, "code": pl.String})}
    cohorts = pl.concat([tables["contacts"].select("referral_key", pl.col("contact_key").alias("cohort")),
                         pl.LazyFrame({"referral_key": ["GONE"], "cohort": ["x"]})])
    none = pl.LazyFrame(schema={"patient_key": pl.String})
    root = tmp_path_factory.mktemp("lookup")
    by_patient = plan.select("patient_key", ((pl.col("bundle_no") - 1) // per_batch).alias("batch"))
    by_referral = tables["referrals"].collect().join(by_patient, on="patient_key").select("referral_key", "batch")

    def joined(frame: pl.LazyFrame, keys: pl.DataFrame, on: str) -> pl.DataFrame:
        return (frame.join(keys.lazy(), on=on, how="left", maintain_order="left")
                .with_columns(pl.col("batch").fill_null(UNPLACED)).collect())

    contacts_joined = pl.concat([
        joined(tables["contacts"].filter(pl.col("referral_key").is_not_null()), by_referral, "referral_key"),
        joined(tables["contacts"].filter(pl.col("referral_key").is_null()), by_patient, "patient_key")])
    expected = {"contacts": contacts_joined, "cohorts": joined(cohorts, by_referral, "referral_key")}
    orphans = contacts_joined.filter(pl.col("batch") == UNPLACED).height + tables["referrals"].collect().join(
        by_patient, on="patient_key", how="anti").height
    if orphans:
        assert orphan is not None
        with pytest.raises(HandoverError):
            stage(tables, cohorts, none, none, None, plan, per_batch, root, chunk_rows=chunk_rows, budget_bytes=budget)
        return
    staged = stage(tables, cohorts, none, none, None, plan, per_batch, root, chunk_rows=chunk_rows,
                   budget_bytes=budget)
    for name, rows in expected.items():
        for batch in range(-(-6 // per_batch)):
            want = rows.filter(pl.col("batch") == batch).drop("batch")
            assert staged.frame(name, batch).collect().equals(want), (name, batch)


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
