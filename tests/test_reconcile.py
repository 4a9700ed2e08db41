"""Invariant 1 (``reconcile.rows_invariant``) against a brute-force oracle, on lineages
hypothesis makes up: lost rows, repeated rows, second dispositions, rows never read,
unknown dispositions, nulls, files nobody read."""

from __future__ import annotations

from typing import Any

import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from migrate.canonical import DISPOSITIONS, LINEAGE_SCHEMA
from migrate.reconcile import EXAMPLES, NO_FILE, FileCount, failure_lines, rows_invariant

FILES = ("a.csv", "b.csv", "feed.hl7")

read_counts = st.fixed_dictionaries({name: st.integers(0, 6) for name in FILES[:2]},
                                    optional={FILES[2]: st.integers(0, 6)})
lineage_rows = st.lists(st.tuples(
    st.sampled_from((*FILES, "stray.csv", None)),
    st.one_of(st.none(), st.integers(-1, 8)),
    st.sampled_from((*DISPOSITIONS, "lost", None)),
), max_size=40)


def oracle(read: dict[str, int], rows: list[tuple[Any, Any, Any]]) -> dict[str, dict[str, Any]]:
    """Per file, by definition: distinct (row, disposition) counts and the three failures."""
    out: dict[str, dict[str, Any]] = {}
    names = set(read) | {NO_FILE if f is None else f for f, _, _ in rows}
    for name in names:
        n = read.get(name, 0)
        mine = {(r, d) for f, r, d in rows if (NO_FILE if f is None else f) == name}
        good = {(r, d) for r, d in mine if r is not None and 1 <= r <= n and d in DISPOSITIONS}
        per_row: dict[int, set[str]] = {}
        for r, d in good:
            per_row.setdefault(r, set()).add(d)
        out[name] = {
            "dispositions": {d: sum(1 for _, dd in good if dd == d) for d in DISPOSITIONS},
            "several": sum(1 for ds in per_row.values() if len(ds) > 1),
            "without": n - len(per_row),
            "not_read": len({r for r, _ in mine if r is None or not 1 <= r <= n}),
            "unknown": len({r for r, d in mine if r is not None and 1 <= r <= n and d not in DISPOSITIONS}),
            "holds": name in read and all(len(per_row.get(r, ())) == 1 for r in range(1, n + 1))
            and not any(r is None or not 1 <= r <= n or d not in DISPOSITIONS for r, d in mine),
        }
    return out


def _lineage(rows: list[tuple[Any, Any, Any]]) -> pl.LazyFrame:
    return pl.LazyFrame({"source_file": [f for f, _, _ in rows], "source_row": [r for _, r, _ in rows],
                         "disposition": [d for _, _, d in rows]},
                        schema={"source_file": pl.String, "source_row": pl.Int64, "disposition": pl.String})


@settings(max_examples=300, deadline=None)
@given(read_counts, lineage_rows)
def test_rows_invariant_agrees_with_its_definition(read: dict[str, int], rows: list[tuple[Any, Any, Any]]) -> None:
    result = rows_invariant(_lineage(rows), [FileCount(n, "t", k) for n, k in read.items()])
    expected = oracle(read, rows)
    got = {f["file"]: f for f in result["files"]}
    assert set(got) == set(expected)
    for name, want in expected.items():
        f = got[name]
        assert f["dispositions"] == want["dispositions"], name
        assert (f["rows_with_several_dispositions"], f["rows_without_disposition"], f["rows_not_read"],
                f["rows_with_unknown_disposition"]) == (want["several"], want["without"], want["not_read"],
                                                        want["unknown"]), name
        assert f["holds"] is want["holds"], name
    assert result["holds"] is all(w["holds"] for w in expected.values())
    assert result["rows_read"] == sum(read.values())
    # A failure names invariant 1 and the file; the examples are real failing rows.
    lines = failure_lines(result)
    assert len(lines) == sum(1 for w in expected.values() if not w["holds"])
    assert all(line.startswith("Invariant 1 (rows read = Σ dispositions) fails for ") for line in lines)
    for e in result["examples"]["rows_without_disposition"]:
        assert not any(f == e["file"] and r == e["row"] and d in DISPOSITIONS for f, r, d in rows)
    assert all(len(v) <= EXAMPLES for v in result["examples"].values())


def test_the_pipelines_lineage_schema_is_accepted() -> None:
    """Lineage as the pipeline writes it (Enum dispositions, FHIR columns) holds when whole."""
    lineage = pl.DataFrame({"source_file": ["a.csv", "a.csv", "a.csv"], "source_row": [1, 2, 2],
                            "table": ["patients"] * 3, "patient_key": ["P1", "P2", "P2"],
                            "disposition": ["migrated", "merged", "merged"], "fhir_type": [None, "Patient", "Flag"],
                            "fhir_id": [None, "x", "y"], "reason": [None, "merged into P1", "merged into P1"]}
                           ).cast(LINEAGE_SCHEMA)  # type: ignore[arg-type]
    result = rows_invariant(lineage.lazy(), [FileCount("a.csv", "patients", 2)])
    assert result["holds"] and result["dispositions"]["merged"] == 1 and result["dispositions"]["migrated"] == 1


@settings(max_examples=200, deadline=None)
@given(read_counts, lineage_rows, st.integers(1, 4), st.integers(0, 6), st.integers(1, 5))
def test_rows_invariant_in_parts_is_the_whole_count(read: dict[str, int], rows: list[tuple[Any, Any, Any]],
                                                    part_rows: int, hold: int, batch: int) -> None:
    """Counted in parts of a few rows, spilled to disk, read in small batches: the same
    invariant, counts and examples as counted at once (``reconcile._Parts``)."""
    import migrate.reconcile as reconcile

    counts = [FileCount(n, "t", k) for n, k in read.items()]
    whole = rows_invariant(_lineage(rows), counts)
    patch = pytest.MonkeyPatch()
    try:
        patch.setattr(reconcile, "PART_ROWS", part_rows)
        patch.setattr(reconcile, "HOLD_KEYS", hold)
        patch.setattr(reconcile, "BATCH_ROWS", batch)
        assert rows_invariant(_lineage(rows), counts) == whole
    finally:
        patch.undo()
