"""The golden case's bundles and NDJSON, byte for byte; and byte-identical re-runs."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import pytest

from migrate.fhir import write_fhir

EXPECTED = Path(__file__).parent.parent / "cases" / "fhir-golden" / "expected" / "fhir"
COMPARED = ("bundles", "ndjson")


def _outputs(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes()
            for sub in COMPARED for p in sorted((root / sub).glob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def written(golden_case: Any, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("golden-run")
    result = write_fhir(*golden_case.args(), out, derived_priority=golden_case.derived_priority)
    assert result.ok, result.errors
    if os.environ.get("HANDOVER_UPDATE_GOLDEN") == "1":
        shutil.rmtree(EXPECTED, ignore_errors=True)
        for sub in COMPARED:
            shutil.copytree(out / "fhir" / sub, EXPECTED / sub)
    return out / "fhir"


def test_same_files_as_golden(written: Path) -> None:
    assert sorted(_outputs(written)) == sorted(_outputs(EXPECTED))


@pytest.mark.parametrize("name", sorted(_outputs(EXPECTED)) if EXPECTED.exists() else [])
def test_file_matches_golden(written: Path, name: str) -> None:
    assert (written / name).read_bytes() == (EXPECTED / name).read_bytes(), (
        f"{name} differs from tests/cases/fhir-golden/expected/fhir/{name}; if the change is intended, "
        "regenerate with HANDOVER_UPDATE_GOLDEN=1 (see the case's README)")


def test_rerun_is_byte_identical(golden_case: Any, written: Path, tmp_path: Path) -> None:
    write_fhir(*golden_case.args(), tmp_path, derived_priority=golden_case.derived_priority)
    again = tmp_path / "fhir"
    files = sorted(p.relative_to(written) for p in written.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(again) for p in again.rglob("*") if p.is_file())
    for rel in files:  # parquet lineage files included
        assert (written / rel).read_bytes() == (again / rel).read_bytes(), rel


def test_no_partial_folder_left(written: Path) -> None:
    assert not (written.parent / "fhir.partial").exists()
