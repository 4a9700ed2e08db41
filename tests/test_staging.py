"""Staged Parquet and range buckets: handling a table a part at a time gives what handling
it whole gives (migrate.staging, migrate.ingest_tables)."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import migrate.ingest as ingest_module
import migrate.ingest_tables as ingest_tables
import migrate.staging as staging
from migrate.ingest import Ingested, ingest
from migrate.profile import load_profile
from migrate.sources import records as record_index
from migrate.staging import RangeBuckets, SortedKeys, boundaries
from migrate.synth import synthesise
from migrate.synth.hl7 import synthesise_hl7


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(values=st.lists(st.one_of(st.none(), st.text(alphabet="ABCab019", max_size=4)), max_size=60),
       bucket_rows=st.integers(1, 7), chunk=st.integers(1, 9))
def test_buckets_in_order_are_the_whole_table_sorted(tmp_path_factory: pytest.TempPathFactory, values: list[str | None],
                                                     bucket_rows: int, chunk: int) -> None:
    frame = pl.DataFrame({"k": values, "i": list(range(len(values)))}, schema={"k": pl.String, "i": pl.Int64})
    buckets = RangeBuckets(tmp_path_factory.mktemp("b") / "buckets", "k", boundaries(frame["k"], frame.height,
                                                                                    bucket_rows))
    for start in range(0, frame.height, chunk):
        buckets.add(frame.slice(start, chunk))
    parts = [buckets.read(i, frame.schema) for i in range(buckets.count)]
    # every row in exactly one bucket, in the order added within it
    assert sorted(r for p in parts for r in p["i"]) == list(range(frame.height))
    assert all(p["i"].is_sorted() for p in parts)
    # bucket by bucket, sorted within each, is the whole table sorted
    each = [p.sort("k", "i", nulls_last=False) for p in parts if p.height]
    whole = pl.concat(each) if each else frame.clear()
    assert whole.equals(frame.sort("k", "i", nulls_last=False))
    # compacted, each bucket is one file with the same rows in the same order; adding goes on
    buckets.compact()
    assert all(len(p) <= 1 for p in buckets.parts)
    assert all(buckets.read(i, frame.schema).equals(parts[i]) for i in range(buckets.count))
    buckets.add(frame)
    again = [buckets.read(i, frame.schema) for i in range(buckets.count)]
    assert sorted(r for p in again for r in p["i"]) == sorted(list(range(frame.height)) * 2)
    buckets.close()


def _everything(result: Ingested) -> dict[str, object]:
    return {
        **{t: f.collect() for t, f in result.tables.items()},
        "quarantine": result.quarantine, "superseded": result.superseded, "merges": result.merges,
        "heights": result.heights, "kept_previous": result.kept_previous,
    }


def _same(a: dict[str, object], b: dict[str, object]) -> None:
    assert a.keys() == b.keys()
    for name, value in a.items():
        other = b[name]
        if isinstance(value, pl.DataFrame):
            assert isinstance(other, pl.DataFrame)
            # row order too: the canonical tables are written in this order
            assert value.equals(other), name
        else:
            assert value == other, name


@pytest.fixture(scope="module")
def extracts(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, str]]:
    root = tmp_path_factory.mktemp("extracts")
    synthesise(root / "csv", patients=1_500, seed=11)
    synthesise_hl7(root / "hl7", messages=2_000, seed=3, patients_csv=root / "csv" / "patients.csv")
    return {"csv": (root / "csv", "generic-csv"), "hl7": (root / "hl7", "hl7v2")}


@pytest.mark.parametrize("layout", ["csv", "hl7"])
def test_ingest_in_small_parts_gives_the_same_tables(extracts: dict[str, tuple[Path, str]], layout: str,
                                                     tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Buckets of a few rows and batches of a few rows (many parts, keys spread over many
    buckets, updates of one key across batches), CSV files indexed a few lines at a time
    and key hashes sorted a few at a time, against the defaults (one part)."""
    folder, profile = extracts[layout]
    whole = _everything(ingest(folder, load_profile(profile), tmp_path / "w1", canonical_dir=tmp_path / "c1"))
    monkeypatch.setattr(staging, "BUCKET_ROWS", 97)
    monkeypatch.setattr(ingest_tables, "BATCH_ROWS", 113)
    monkeypatch.setattr(ingest_module, "_BATCH_ROWS", 89)
    monkeypatch.setattr(record_index, "RANGE_LINES", 101)  # CSV files indexed 101 lines at a time
    monkeypatch.setattr(staging, "HASH_ROWS", 59)  # key hashes spilled into parts
    parts = _everything(ingest(folder, load_profile(profile), tmp_path / "w2", canonical_dir=tmp_path / "c2"))
    _same(whole, parts)
    for table in ("patients", "referrals", "contacts", "codes"):  # and the files, byte for byte
        assert (tmp_path / "c1" / f"{table}.parquet").read_bytes() == (tmp_path / "c2" / f"{table}.parquet").read_bytes()
    assert int(whole["quarantine"].height) > 0  # type: ignore[attr-defined]  # the planted rows exercise the ordered path


def test_lineage_in_small_buckets_is_the_same_file(extracts: dict[str, tuple[Path, str]], tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """lineage.parquet written from buckets of 97 source rows is byte for byte the file
    written from one bucket (row groups of a fixed size: the bytes depend on the rows alone)."""
    from datetime import date

    import migrate.lineage as lineage
    from migrate.pipeline import RunConfig, run_batch

    folder, profile = extracts["csv"]

    def run(out: Path) -> bytes:
        result = run_batch(RunConfig.load(folder, profile, date(2022, 10, 1), out, emit_fhir=False))
        assert result.ok
        return (out / "lineage.parquet").read_bytes()

    whole = run(tmp_path / "one")
    monkeypatch.setattr(lineage, "BUCKET_ROWS", 97)
    assert run(tmp_path / "many") == whole


def _contacts(rows: list[tuple[str, str, int]], source_file: str, start: int) -> pl.DataFrame:
    """Contact rows (key, referral, rank) as the mapping stages them: every field touched."""
    from migrate import canonical, updates

    frame = canonical.empty("contacts").drop("contact_key", "referral_key", "source_file", "source_row")
    given = pl.DataFrame({"contact_key": [r[0] for r in rows], "referral_key": [r[1] for r in rows],
                          "source_file": [source_file] * len(rows),
                          "source_row": list(range(start, start + len(rows))),
                          "rank": [r[2] for r in rows]}, schema={"contact_key": pl.String, "referral_key": pl.String,
                                                                  "source_file": pl.String, "source_row": pl.Int64,
                                                                  "rank": pl.Int64})
    out = pl.concat([given, frame.clear(len(rows))], how="horizontal")
    return out.with_columns(pl.struct(pl.col("rank"), pl.lit(None, dtype=pl.Datetime("us")).alias("at"))
                            .alias(updates.ORDER), pl.lit(2 ** 10 - 1, dtype=pl.UInt64).alias("__touched"),
                            pl.lit(0, dtype=pl.UInt64).alias("__required"),
                            *(pl.lit(None, dtype=pl.String).alias(c) for c in ("__reason", "__field"))).drop("rank")


@settings(max_examples=80, deadline=None)
@given(rows=st.lists(st.tuples(st.sampled_from("abcdefgh"), st.sampled_from(["R1", "R2", "gone"]), st.integers(0, 2)),
                     unique_by=lambda r: r[0], min_size=1, max_size=8),
       invalid=st.lists(st.tuples(st.sampled_from("abcdefghij"), st.just("R1"), st.integers(0, 2)), max_size=6))
def test_unique_keys_with_failed_rows_apply_as_the_ordered_apply(rows: list[tuple[str, str, int]],
                                                                 invalid: list[tuple[str, str, int]]) -> None:
    """Each key has one row, some keys also rows the mapping failed: the shortcut (a row is
    its own state; only keys with failed rows applied in order) gives what applying every
    key in order gives — the same kept rows in the same order, failures, messages naming
    the state kept, and the count of those."""
    from migrate import integrity, quarantine, updates

    def check(frame: pl.DataFrame) -> tuple[pl.DataFrame, list[pl.DataFrame]]:
        split = integrity.parent_references(frame, "referral_key", "referrals", SortedKeys(pl.Series(["R1", "R2"])),
                                            pl.Series(["R3"]))
        return split.passed, [split.failed]

    frame = _contacts(rows, "c.csv", 1)
    failed = quarantine.mark(_contacts(invalid, "d.csv", 1), "invalid_value", "site", pl.lit("bad site")).with_columns(
        pl.lit("{}").alias("__raw"))
    fast = updates.apply_rows("contacts", frame, check, failed)
    slow = updates._in_order("contacts", "contact_key", frame, check, failed)
    columns = frame.columns
    assert fast.kept.select(columns).equals(slow.kept.select(columns))
    by_row = ["source_file", "source_row"]

    def rejected(frames: list[pl.DataFrame]) -> list[tuple[object, ...]]:
        return sorted(r for f in frames if f.height for r in f.select(*by_row, "__reason", "__message").iter_rows())

    assert rejected(fast.failed) == rejected(slow.failed)
    assert fast.invalid is not None and slow.invalid is not None
    assert rejected([fast.invalid]) == rejected([slow.invalid])
    assert fast.kept_previous == slow.kept_previous
    assert fast.superseded.height == slow.superseded.height == 0


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(values=st.lists(st.one_of(st.none(), st.text(alphabet="ab01", max_size=3)), max_size=40))
def test_repeated_hashes_name_every_repeated_value(values: list[str | None]) -> None:
    """Every value that repeats has its hash listed (nulls as one value, or left out), and a
    value listed is one that repeats unless two values share a hash."""
    frame = pl.LazyFrame({"k": values}, schema={"k": pl.String})
    for nulls in (True, False):
        hashes, rows = staging.repeated_hashes(frame, "k", nulls)
        kept = [v for v in values if nulls or v is not None]
        assert rows == len(kept)
        repeated = {v for v in kept if kept.count(v) > 1}
        listed = pl.DataFrame({"k": kept}, schema={"k": pl.String}).filter(
            staging.hashed_in("k", hashes))["k"].to_list()
        assert set(listed) == repeated


@settings(max_examples=200, deadline=None)
@given(keys=st.lists(st.one_of(st.none(), st.text(alphabet="ab\u00e9\u0000Z", max_size=14)), max_size=40),
       refs=st.lists(st.one_of(st.none(), st.text(alphabet="ab\u00e9\u0000Z", max_size=14)), max_size=40))
def test_sorted_keys_find_exactly_what_a_whole_set_and_a_join_find(keys: list[str | None],
                                                                   refs: list[str | None]) -> None:
    """The parents' keys looked up by binary search: the same orphans as ``is_in`` over the
    whole key set, and a referral's patient as a join over the whole owners table gives."""
    unique = list(dict.fromkeys(keys))
    owners = pl.DataFrame({"referral_key": unique, "patient_key": [f"P{i}" for i in range(len(unique))]},
                          schema={"referral_key": pl.String, "patient_key": pl.String})
    found = SortedKeys(owners["referral_key"], owners["patient_key"])
    wanted = pl.Series("referral_key", refs, dtype=pl.String)
    whole = owners.drop_nulls("referral_key")
    assert found.contains(wanted).to_list() == (wanted.is_in(whole["referral_key"].implode())
                                                 & wanted.is_not_null()).to_list()
    joined = wanted.to_frame().join(whole, on="referral_key", how="left", maintain_order="left")["patient_key"]
    assert found.lookup(wanted).to_list() == joined.to_list()


@settings(max_examples=200, deadline=None)
@given(keys=st.lists(st.one_of(st.none(), st.text(alphabet="ab\u00e9\u0000Z", max_size=14)), max_size=40),
       values=st.lists(st.none() | st.integers(0, 5), min_size=40, max_size=40),
       refs=st.lists(st.one_of(st.none(), st.text(alphabet="ab\u00e9\u0000Z", max_size=14)), max_size=40),
       parts=st.integers(1, 5))
def test_hashed_keys_look_up_what_the_sorted_keys_do(keys: list[str | None], values: list[int | None],
                                                     refs: list[str | None], parts: int) -> None:
    """Keys held by their hashes (added in parts) give each reference the value the keys
    themselves give (``SortedKeys``): null for an unknown or null reference and for a null
    value; two equal keys are a collision, never a silent pick of one."""
    owners = pl.DataFrame({"k": keys, "v": values[:len(keys)]}, schema={"k": pl.String, "v": pl.Int64})
    hashed = staging.HashedKeys()
    step = max(1, -(-owners.height // parts))
    for start in range(0, max(owners.height, 1), step):
        chunk = owners.slice(start, step)
        hashed.add(chunk["k"], chunk["v"])
    distinct = owners.drop_nulls("k")["k"].n_unique() == owners.drop_nulls("k").height
    assert hashed.sorted() == distinct
    if distinct:
        wanted = pl.Series("k", refs, dtype=pl.String)
        assert hashed.lookup(wanted).to_list() == SortedKeys(owners["k"], owners["v"]).lookup(wanted).to_list()


@settings(max_examples=60, deadline=None)
@given(values=st.lists(st.one_of(st.none(), st.integers(0, 60).map(str)), max_size=300),
       held=st.integers(1, 50), nulls=st.booleans())
def test_repeated_hashes_spilled_to_parts_are_the_repeats_found_in_memory(values: list[str | None], held: int,
                                                                          nulls: bool) -> None:
    """Beyond ``HASH_ROWS`` the hashes go to files by their top bits and each is sorted
    alone: the same repeated hashes (sorted) and row count as sorting them all at once, and
    every value that repeats is among them."""
    frame = pl.LazyFrame({"k": values}, schema={"k": pl.String})
    whole = staging.repeated_hashes(frame, "k", nulls)
    original = staging.HASH_ROWS
    try:
        staging.HASH_ROWS = held
        spilled = staging.repeated_hashes(frame, "k", nulls)
    finally:
        staging.HASH_ROWS = original
    assert spilled[0].equals(whole[0]) and spilled[1] == whole[1]
    assert spilled[1] == len([v for v in values if nulls or v is not None])
    repeats = {v for v in values if values.count(v) > 1 and (nulls or v is not None)}
    assert set(pl.Series("k", list(repeats), dtype=pl.String).hash().to_list()) <= set(spilled[0].to_list())


_ROW = st.fixed_dictionaries({
    "s": st.one_of(st.none(), st.text(max_size=30)), "n": st.one_of(st.none(), st.integers(-2**40, 2**40)),
    "d": st.one_of(st.none(), st.dates()), "l": st.one_of(st.none(), st.lists(st.text(max_size=14), max_size=3)),
})


@settings(max_examples=60, deadline=None)
@given(rows=st.lists(_ROW, max_size=40), keep=st.lists(st.booleans(), min_size=40, max_size=40),
       batch=st.integers(1, 50))
def test_rows_copied_out_of_their_batch_are_the_same_rows(rows: list[dict[str, object]], keep: list[bool],
                                                          batch: int) -> None:
    """``compact`` (a few rows kept from a batch, copied into buffers of their own) and
    ``collect_compact`` (a query collected a batch at a time, each compacted) give exactly
    the rows, values and dtypes of the frame, or of the query collected whole."""
    schema = {"s": pl.String(), "n": pl.Int64(), "d": pl.Date(), "l": pl.List(pl.String())}
    frame = pl.DataFrame(rows, schema=schema).with_columns(
        pl.struct("n", "d").alias("o"), pl.col("s").cast(pl.Categorical).alias("c"))
    kept = frame.filter(pl.Series(keep[:frame.height], dtype=pl.Boolean))
    assert staging.compact(kept).equals(kept) and staging.compact(kept).schema == kept.schema
    assert staging.compact_series(kept["s"]).equals(kept["s"])
    query = frame.lazy().filter(pl.col("n").is_null() | (pl.col("n") % 3 == 0))
    assert staging.collect_compact(query, batch).equals(query.collect())


@given(values=st.lists(st.one_of(st.none(), st.text(max_size=5)), max_size=60), chunk=st.integers(1, 25))
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_pulled_chunks_are_the_query_in_order_and_leave_no_file(tmp_path_factory: pytest.TempPathFactory,
                                                                values: list[str | None], chunk: int) -> None:
    """A long query read a chunk at a time (the round trip's lineage and canonical rows, the
    FHIR staging's inputs): the chunks, concatenated, are the query's rows in its order; at
    least one frame even when empty; each chunk has at most ``chunk`` rows; nothing left behind."""
    folder = tmp_path_factory.mktemp("pulled")
    query = pl.LazyFrame({"value": values, "at": list(range(len(values)))}, schema={"value": pl.String, "at": pl.Int64})
    query = query.filter(pl.col("at") % 3 != 1).with_columns(pl.col("value").str.to_uppercase())
    chunks = list(staging.pulled(query, chunk, folder))
    assert chunks and all(c.height <= chunk for c in chunks)
    assert pl.concat(chunks).equals(query.collect())
    assert list(folder.iterdir()) == []
