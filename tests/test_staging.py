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
from migrate.staging import RangeBuckets, boundaries
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
    buckets, updates of one key across batches) against the defaults (one part)."""
    folder, profile = extracts[layout]
    whole = _everything(ingest(folder, load_profile(profile), tmp_path / "w1", canonical_dir=tmp_path / "c1"))
    monkeypatch.setattr(staging, "BUCKET_ROWS", 97)
    monkeypatch.setattr(ingest_tables, "BATCH_ROWS", 113)
    monkeypatch.setattr(ingest_module, "_BATCH_ROWS", 89)
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
