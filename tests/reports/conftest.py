"""Runs to report on, built once per session, and helpers to copy and damage them.

Tests reach the helpers through the ``rh`` fixture (this module), because the suite runs
with ``--import-mode=importlib``, where test folders are not importable. Session runs
are never modified: a test that edits a run works on ``rh.copy_run(...)``.
"""

from __future__ import annotations

import shutil
import sys
import zipfile
from datetime import date
from pathlib import Path
from types import ModuleType

import polars as pl
import pytest

from migrate.pipeline import RunConfig, run_batch
from migrate.synth import synthesise

CASES = Path(__file__).resolve().parents[1] / "cases"
WORKED = CASES / "worked-example"
CUTOVER = date(2022, 10, 1)


@pytest.fixture(scope="session")
def rh() -> ModuleType:
    """These helpers: ``rh.copy_run``, ``rh.run_extract``, ``rh.all_bytes``, ``rh.rewrite``."""
    return sys.modules[__name__]


def run_extract(input_dir: Path, mapping: str | Path, out: Path) -> Path:
    """Run the pipeline on an extract into ``out`` (the reports' raw material)."""
    run_batch(RunConfig.load(input_dir, mapping, CUTOVER, out))
    return out


def copy_run(run: Path, to: Path) -> Path:
    """A private copy of a session run, safe to edit."""
    shutil.copytree(run, to)
    return to


def rewrite(path: Path, frame: pl.DataFrame) -> None:
    """Overwrite a run's Parquet file (as someone tampering with it would)."""
    frame.write_parquet(path)


def all_bytes(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` by relative path, with zip members (XLSX) expanded too."""
    out: dict[str, bytes] = {}
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        rel = path.relative_to(folder).as_posix()
        out[rel] = path.read_bytes()
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as zf:
                for name in zf.namelist():
                    out[f"{rel}!{name}"] = zf.read(name)
    return out


# ``worked_run`` (the worked example's run, read-only) is tests/conftest.py's, shared by the suite.


@pytest.fixture(scope="session")
def synth_extract(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 1,000-patient synthetic extract (planted malformed rows, two-list patients)."""
    out = tmp_path_factory.mktemp("synth") / "extract"
    synthesise(out, patients=1000, seed=7)
    return out


@pytest.fixture(scope="session")
def synth_run(synth_extract: Path) -> Path:
    """The synthetic extract run with the generic-csv mapping."""
    return run_extract(synth_extract, "generic-csv", synth_extract.parent / "run")
