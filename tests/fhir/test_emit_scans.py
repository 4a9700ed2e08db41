"""``fhir.stage.emit`` takes the earlier stages' frames in memory or as scans of staged
Parquet (identity's patients, the merge map, the rules' cohorts and exceptions, the sharing
state): the FHIR output is the same bytes either way."""

from __future__ import annotations

import dataclasses
from datetime import date
from pathlib import Path
from typing import Any

import polars as pl
import pytest

import migrate.executor as executor
import migrate.pipeline as pipeline
from migrate.pipeline import RunConfig, run_batch
from migrate.synth import synthesise

CUTOVER = date(2022, 10, 1)
CHUNK = 24  # patients per writer batch (3 bundles of 8): several batches, so the inputs are staged


def _tree(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _run(extract: Path, out: Path, as_scans: bool, partitions: int) -> Path:
    with pytest.MonkeyPatch.context() as mp:
        real = pipeline.options_for
        mp.setattr(pipeline, "options_for", lambda *a, **k: dataclasses.replace(real(*a, **k), chunk_patients=CHUNK))
        mp.setattr(executor, "cores", lambda: 1)  # partitions in this process
        if as_scans:
            emit = pipeline.emit
            folder = out.parent / f"{out.name}-scans"
            folder.mkdir()

            def scan(name: str, frame: Any) -> Any:
                if not isinstance(frame, pl.DataFrame):
                    return frame
                frame.write_parquet(folder / f"{name}.parquet")
                return pl.scan_parquet(folder / f"{name}.parquet")

            def scanned(patients: Any, merges: Any, tables: Any, decided: Any, cohorts: Any, patient_cohorts: Any,
                        exceptions: Any, sharing: Any, *args: Any, **kwargs: Any) -> Any:
                return emit(scan("patients", patients), scan("merges", merges), tables, decided,
                            scan("cohorts", cohorts), scan("patient_cohorts", patient_cohorts),
                            scan("exceptions", exceptions), scan("sharing", sharing.collect()), *args, **kwargs)

            mp.setattr(pipeline, "emit", scanned)
        result = run_batch(RunConfig.load(extract, "generic-csv", CUTOVER, out, bundle_size=8, fhir_form="ndjson",
                                          fhir_compression="gzip", partitions=partitions))
    assert result.ok, result.failures()
    return out


@pytest.mark.parametrize("partitions", [1, 2])
def test_emit_over_scans_writes_the_same_bytes_as_over_frames(tmp_path: Path, partitions: int) -> None:
    synthesise(tmp_path / "extract", patients=60, seed=29)
    frames = _run(tmp_path / "extract", tmp_path / "frames", as_scans=False, partitions=partitions)
    scans = _run(tmp_path / "extract", tmp_path / "scans", as_scans=True, partitions=partitions)
    assert _tree(scans / "fhir") == _tree(frames / "fhir")
    assert len(_tree(frames / "fhir" / "ndjson")) > 3
