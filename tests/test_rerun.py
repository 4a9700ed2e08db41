"""Byte-identical reruns at scale (issue #12, item 9): the same 20k-patient batch run twice
gives the same bytes in every file, the run's times (and what records them) aside."""

from __future__ import annotations

import io
import json
import re
import zipfile
from datetime import date
from pathlib import Path
from typing import Any

import pytest

from migrate.pipeline import RunConfig, run_batch
from migrate.reports import verify
from migrate.synth import synthesise

PATIENTS = 20_000
# Files that hold the run's start and finish times (the manifest, the reports' run block, the
# worklists' Summary sheet), compared with the times masked.
TIMED = {"manifest.json", "reports/reconciliation.json", "reports/reconciliation.html", "reports/exceptions.xlsx"}
_TIMES = re.compile(rb"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d[+-]\d\d:\d\d|\d\d/\d\d/\d{4} \d\d:\d\d UTC")


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("rerun")
    extract = root / "extract"
    synthesise(extract, patients=PATIENTS)
    runs = []
    for name in ("a", "b"):
        out = root / name
        run_batch(RunConfig.load(extract, "generic-csv", date(2022, 10, 1), out,
                                 target_index=extract / "target-index.csv"))
        runs.append(out)
    return runs[0], runs[1]


def _files(run: Path) -> dict[str, bytes]:
    return {p.relative_to(run).as_posix(): p.read_bytes() for p in sorted(run.rglob("*")) if p.is_file()}


def _untimed(rel: str, data: bytes) -> list[tuple[str, bytes]]:
    """The file's content with every run time masked (an XLSX member by member)."""
    if rel.endswith(".xlsx"):
        with zipfile.ZipFile(io.BytesIO(data)) as zf:
            return [(i.filename, _TIMES.sub(b"T", zf.read(i))) for i in zf.infolist()]
    return [(rel, _TIMES.sub(b"T", data))]


def _manifest_without_times(run: Path) -> dict[str, Any]:
    manifest = json.loads((run / "manifest.json").read_text())
    for key in ("started", "finished", "digest", "seal"):
        manifest.pop(key, None)
    # Report files show the times, so their hashes differ with them (compared above instead).
    manifest["outputs"] = [e for e in manifest["outputs"] if e["path"] not in TIMED]
    return manifest


def test_the_same_20k_batch_twice_gives_the_same_bytes(two_runs: tuple[Path, Path]) -> None:
    a, b = two_runs
    files_a, files_b = _files(a), _files(b)
    assert files_a.keys() == files_b.keys()
    assert sum(1 for f in files_a if f.startswith("fhir/bundles/")) > 10  # the whole output, at scale
    different = [f for f in files_a if f not in TIMED and files_a[f] != files_b[f]]
    assert different == []
    for rel in sorted(TIMED - {"manifest.json"}):
        assert _untimed(rel, files_a[rel]) == _untimed(rel, files_b[rel]), rel
    assert _manifest_without_times(a) == _manifest_without_times(b)
    assert verify(a).ok and verify(b).ok


def test_xlsx_members_and_parquet_row_groups_are_stable(two_runs: tuple[Path, Path]) -> None:
    """The zip inside the XLSX and the Parquet files carry no time or chunking of their own."""
    import pyarrow.parquet as pq

    a, b = two_runs
    with zipfile.ZipFile(a / "reports" / "exceptions.xlsx") as za, zipfile.ZipFile(b / "reports" / "exceptions.xlsx") as zb:
        assert [(i.filename, i.date_time) for i in za.infolist()] == [(i.filename, i.date_time) for i in zb.infolist()]
    lineage = pq.ParquetFile(a / "lineage.parquet").metadata
    assert lineage.num_rows > 200_000 and lineage.num_row_groups == -(-lineage.num_rows // 262_144)
