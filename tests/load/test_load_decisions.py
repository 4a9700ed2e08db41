"""A batch with review decisions, loaded into the real FHIR server: the review's bundle (the
override's Consent, each decision's Provenance) goes last and is accepted."""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path
from typing import Any

import httpx
from click.testing import CliRunner

from cli import main
from migrate.pipeline import RunConfig, run_batch

CASE = Path(__file__).parents[1] / "cases" / "worked-example"


def test_a_decided_run_loads_with_its_consent_and_provenances(fhir_server: Any, tmp_path: Path) -> None:
    run = tmp_path / "run"
    assert run_batch(RunConfig.load(CASE / "input", CASE / "mapping.yaml", date(2022, 10, 1), run,
                                    decisions=[CASE / "decisions.csv"])).ok
    result = CliRunner().invoke(main, ["load", str(run), "--fhir-base", fhir_server.base, "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output)
    assert summary["failed"] == 0 and summary["sent"] == summary["bundles"] == len(list(
        (run / "fhir" / "bundles").glob("bundle-*.json")))
    review = {t: [json.loads(line) for line in (run / "fhir" / "review" / f"{t}.ndjson").read_text().splitlines()]
              for t in ("Consent", "Provenance")}
    with httpx.Client(timeout=30) as client:
        for kind, resources in review.items():
            for resource in resources:
                got = client.get(f"{fhir_server.base}/{kind}/{resource['id']}",
                                 headers={"Accept": "application/fhir+json"})
                assert got.status_code == 200, got.text
                held = got.json()
                if kind == "Consent":
                    assert held["provision"]["type"] == "permit"
                    assert held["sourceAttachment"]["title"] == resource["sourceAttachment"]["title"]
                else:
                    assert [t["reference"] for t in held["target"]] == [t["reference"] for t in resource["target"]]
    # The target holds what was sent: the review's resources are neither missing nor extra.
    check = CliRunner().invoke(main, ["reconcile-target", str(run), "--fhir-base", fhir_server.base, "--json"])
    report = json.loads(check.output)
    assert check.exit_code == 0 and report["holds"], check.output
    assert report["totals"]["extra"] == 0
