"""lineage.parquet written a bucket at a time (``migrate.lineage.write_lineage``) is the
whole computation: every row joined with its FHIR links and sorted by file, row and
resource — whatever the rows (files not read, null files and rows, rows past the last
read, repeated rows) and however small the buckets and batches."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import migrate.lineage as lineage
from migrate import canonical

FILES = {"a.csv": 9, "b.csv": 4, "c.csv": 0}  # rows read per file (c.csv read none)
_file = st.one_of(st.none(), st.sampled_from([*FILES, "zz.csv"]))  # zz.csv: a file no reader read
_row = st.one_of(st.none(), st.integers(0, 12))
_rows = st.lists(st.tuples(_file, _row, st.sampled_from(["migrated", "merged", "quarantined"])), max_size=40)
_links = st.lists(st.tuples(_file, _row, st.sampled_from(["Encounter", "Appointment"]),
                            st.text(alphabet="xyz0", min_size=1, max_size=3)), max_size=30)


def _frames(rows: list[tuple[str | None, int | None, str]],
            links: list[tuple[str | None, int | None, str, str]]) -> tuple[pl.LazyFrame, pl.LazyFrame]:
    own = pl.LazyFrame({"source_file": [r[0] for r in rows], "source_row": [r[1] for r in rows],
                        "table": ["contacts"] * len(rows), "patient_key": [f"P{i}" for i in range(len(rows))],
                        "disposition": [r[2] for r in rows], "reason": [None] * len(rows)},
                       schema={c: canonical.LINEAGE_SCHEMA[c] for c in lineage.LINEAGE_COLUMNS})
    fhir = pl.LazyFrame({"source_file": [r[0] for r in links], "source_row": [r[1] for r in links],
                         "fhir_type": [r[2] for r in links], "fhir_id": [r[3] for r in links]},
                        schema={"source_file": pl.String, "source_row": pl.Int64, "fhir_type": pl.String,
                                "fhir_id": pl.String})
    return own, fhir


def _whole(rows: pl.LazyFrame, fhir: pl.LazyFrame | None) -> pl.DataFrame:
    """What write_lineage computes, in memory at once."""
    joined = (rows.with_columns(pl.lit(None, dtype=pl.String).alias("fhir_type"),
                                pl.lit(None, dtype=pl.String).alias("fhir_id")) if fhir is None
              else rows.join(fhir, on=["source_file", "source_row"], how="left"))
    return joined.select(canonical.typed(canonical.LINEAGE_SCHEMA)).collect()


def _canonical_order(frame: pl.DataFrame) -> pl.DataFrame:
    """Rows in one order whatever order ties (same file, row and resource) came in."""
    return frame.sort(pl.all(), nulls_last=False)


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rows=_rows, links=_links, with_fhir=st.booleans(), bucket_rows=st.integers(1, 6))
def test_lineage_a_bucket_at_a_time_is_the_whole_join_sorted(tmp_path_factory: pytest.TempPathFactory,
                                                             monkeypatch: pytest.MonkeyPatch,
                                                             rows: list[tuple[str | None, int | None, str]],
                                                             links: list[tuple[str | None, int | None, str, str]],
                                                             with_fhir: bool, bucket_rows: int) -> None:
    own, fhir = _frames(rows, links)
    folder = tmp_path_factory.mktemp("lineage")
    monkeypatch.setattr(lineage, "BUCKET_ROWS", bucket_rows)  # buckets and batches of a few rows
    n = lineage.write_lineage(own, fhir if with_fhir else None, FILES, folder / "lineage.parquet", folder / "work")
    written = pl.read_parquet(folder / "lineage.parquet")
    whole = _whole(own, fhir if with_fhir else None)
    assert n == written.height == whole.height
    assert written.schema == pl.Schema(canonical.LINEAGE_SCHEMA)
    # The same rows, and in lineage order: file (null first), row (null first), resource.
    assert _canonical_order(written).equals(_canonical_order(whole))
    assert written.select("source_file", "source_row", "fhir_type", "fhir_id").equals(
        written.select("source_file", "source_row", "fhir_type", "fhir_id").sort(
            "source_file", "source_row", "fhir_type", "fhir_id", nulls_last=False))


@settings(max_examples=80, deadline=None)
@given(names=st.lists(st.sampled_from(["a.csv", "b.csv", "c d.psv", "Ä.csv", "z"]), unique=True, max_size=4),
       rows=st.lists(st.tuples(st.one_of(st.none(), st.sampled_from(["a.csv", "b.csv", "c d.psv", "Ä.csv", "z", ""])),
                               st.one_of(st.none(), st.integers(0, 2**39))), max_size=30))
def test_position_is_the_file_index_then_the_row(names: list[str], rows: list[tuple[str | None, int | None]]) -> None:
    """Where buckets split lineage, the FHIR links and the round trip's rows: a file's index
    among the sorted ``names`` (another file or none: -1) shifted above its row, in a lazy
    query as in an eager one."""
    names = sorted(names)
    frame = pl.DataFrame(rows, schema={"source_file": pl.String, "source_row": pl.Int64}, orient="row")
    got = frame.lazy().select(lineage.position(names)).collect(engine="streaming").to_series().to_list()
    index = {n: i for i, n in enumerate(names)}
    want = [index.get(f, -1) * (1 << 40) + (r or 0) if f is not None else -(1 << 40) + (r or 0) for f, r in rows]
    assert got == want
