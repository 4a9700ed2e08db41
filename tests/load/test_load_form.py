"""`handover load` on a run made with `--fhir-form ndjson`: refused before anything is sent,
naming the command that writes the bundles; after it, the load sends the bundles a `both`
run writes, and the real server holds every resource."""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from cli import main
from migrate.load import STATE
from migrate.pipeline import RunConfig, run_batch
from migrate.synth import synthesise

CUTOVER = date(2022, 10, 1)  # the small run's (tests/load/conftest.py)


@pytest.fixture
def ndjson_run(tmp_path: Path) -> Path:
    """The small run's extract (80 patients, seed 5, bundles of 8) as NDJSON only."""
    synthesise(tmp_path / "extract", patients=80, seed=5)
    result = run_batch(RunConfig.load(tmp_path / "extract", "generic-csv", CUTOVER, tmp_path / "run", bundle_size=8,
                                      fhir_form="ndjson"))
    assert result.ok
    return tmp_path / "run"


def _bundles(run: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted((run / "fhir" / "bundles").glob("bundle-*.json"))}


def test_load_refuses_an_ndjson_run_then_sends_the_bundles_handover_fhir_writes(
        fhir_server: Any, ndjson_run: Path, small_run: Path) -> None:
    refused = CliRunner().invoke(main, ["load", str(ndjson_run), "--fhir-base", fhir_server.base])
    assert refused.exit_code == 3, refused.output  # InputError: the run folder lacks what load reads
    assert "NDJSON only (--fhir-form ndjson)" in refused.output
    assert f"handover fhir {ndjson_run} --fhir-form both" in refused.output
    assert fhir_server.stats()["resources"] == {}  # nothing was sent
    assert not (ndjson_run / STATE).exists()

    made = CliRunner().invoke(main, ["fhir", str(ndjson_run), "--fhir-form", "both"])
    assert made.exit_code == 0, made.output
    assert _bundles(ndjson_run) == _bundles(small_run)  # the same inputs' both run: byte for byte

    loaded = CliRunner().invoke(main, ["load", str(ndjson_run), "--fhir-base", fhir_server.base, "--json"])
    assert loaded.exit_code == 0, loaded.output
    summary = json.loads(loaded.output)
    assert summary["sent"] == summary["bundles"] == len(_bundles(small_run)) and summary["failed"] == 0
    counts = {p.stem: len(p.read_text(encoding="utf-8").splitlines())
              for p in sorted((ndjson_run / "fhir" / "ndjson").glob("*.ndjson"))}
    assert fhir_server.stats()["resources"] == counts
