"""Bundles: references resolve, size bound, PUT by id, round-trip through R4B, row order."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import polars as pl
import pytest

from migrate.fhir import write_fhir
from migrate.fhir.validate import model


@pytest.fixture(scope="module")
def run(golden_case: Any, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("bundles")
    result = write_fhir(*golden_case.args(), out, derived_priority=golden_case.derived_priority)
    assert result.ok
    assert result.bundles == 3
    return out / "fhir"


def _bundles(run: Path) -> list[dict[str, Any]]:
    return [json.loads(p.read_text()) for p in sorted((run / "bundles").glob("bundle-*.json"))]


def _references(node: Any) -> list[str]:
    if isinstance(node, dict):
        found = [node["reference"]] if isinstance(node.get("reference"), str) else []
        return found + [r for v in node.values() for r in _references(v)]
    if isinstance(node, list):
        return [r for v in node for r in _references(v)]
    return []


def test_every_reference_resolves_in_this_or_an_earlier_bundle(run: Path) -> None:
    seen: set[str] = set()
    for bundle in _bundles(run):
        here = {e["request"]["url"] for e in bundle["entry"]}
        for entry in bundle["entry"]:
            for ref in _references(entry["resource"]):
                assert ref in here or ref in seen, (entry["request"]["url"], ref)
        seen |= here
    assert seen  # the test saw resources


def test_entries_are_put_by_id_with_urn_uuid_full_urls(run: Path) -> None:
    for bundle in _bundles(run):
        assert bundle["type"] == "transaction"
        for entry in bundle["entry"]:
            r = entry["resource"]
            assert entry["request"] == {"method": "PUT", "url": f"{r['resourceType']}/{r['id']}"}
            assert entry["fullUrl"] == f"urn:uuid:{r['id']}"
            assert r["meta"]["profile"] == [f"https://fhir.hl7.org.uk/StructureDefinition/UKCore-{r['resourceType']}"]


def test_at_most_bundle_size_patients_and_organizations_once(run: Path) -> None:
    orgs = []
    for bundle in _bundles(run):
        types = [e["resource"]["resourceType"] for e in bundle["entry"]]
        assert types.count("Patient") <= 10
        assert types[-1] == "Provenance" and types.count("Provenance") == 1
        orgs += [e["resource"]["id"] for e in bundle["entry"] if e["resource"]["resourceType"] == "Organization"]
    assert len(orgs) == len(set(orgs)) == 1


def test_provenance_targets_every_resource_of_its_bundle(run: Path) -> None:
    for bundle in _bundles(run):
        provenance = bundle["entry"][-1]["resource"]
        targets = [t["reference"] for t in provenance["target"]]
        assert targets == [e["request"]["url"] for e in bundle["entry"][:-1]]
        assert provenance["recorded"] == "2022-10-01T00:00:00Z"
        assert {e["what"]["display"] for e in provenance["entity"][:-1]} == {
            "codes.csv", "contacts.csv", "patients.csv", "referrals.csv"}
        assert provenance["entity"][-1]["what"]["identifier"]["value"] == "golden-run"


def test_every_resource_type_round_trips_through_the_r4b_models(run: Path) -> None:
    bundles = _bundles(run)
    seen = set()
    for bundle in bundles:
        model("Bundle").model_validate(bundle)
        for entry in bundle["entry"]:
            r = entry["resource"]
            parsed = model(r["resourceType"]).model_validate(r)
            assert json.loads(parsed.model_dump_json(exclude_none=True)) == r
            assert type(parsed).__module__.startswith("fhir.resources.R4B.")
            seen.add(r["resourceType"])
    assert seen == {"Organization", "Patient", "Consent", "Condition", "ServiceRequest", "EpisodeOfCare",
                    "Encounter", "Appointment", "Flag", "Provenance"}


def test_ndjson_holds_the_bundles_resources_one_per_line(run: Path) -> None:
    in_bundles = sorted(json.dumps(e["resource"], sort_keys=True) for b in _bundles(run) for e in b["entry"])
    in_ndjson = sorted(json.dumps(json.loads(line), sort_keys=True)
                       for p in (run / "ndjson").glob("*.ndjson") for line in p.read_text().splitlines())
    assert in_ndjson == in_bundles
    for p in (run / "ndjson").glob("*.ndjson"):
        assert {json.loads(line)["resourceType"] for line in p.read_text().splitlines()} == {p.stem}


def test_output_does_not_depend_on_input_row_order(golden_case: Any, run: Path, tmp_path: Path) -> None:
    shuffled = golden_case.with_tables(**{
        name: frame.collect().sample(fraction=1.0, shuffle=True, seed=7).lazy()
        for name, frame in golden_case.tables.items()})
    shuffled = type(golden_case)(shuffled.tables, golden_case.cohorts.collect().reverse().lazy(),
                                 golden_case.patient_cohorts, golden_case.exceptions.collect().reverse().lazy(),
                                 golden_case.sharing, golden_case.derived_priority, golden_case.options)
    write_fhir(*shuffled.args(), tmp_path, derived_priority=shuffled.derived_priority)
    for sub in ("bundles", "ndjson"):
        for p in sorted((run / sub).glob("*")):
            assert (tmp_path / "fhir" / sub / p.name).read_bytes() == p.read_bytes(), p.name


def test_bundle_size_and_batches_do_not_change_resources(golden_case: Any, run: Path, tmp_path: Path) -> None:
    from dataclasses import replace

    case = replace(golden_case, options=replace(golden_case.options, bundle_size=3, chunk_patients=7))
    result = write_fhir(*case.args(), tmp_path, derived_priority=case.derived_priority)
    assert result.bundles == 8  # 23 patients in active care (27 less P04, P05, P06, P18), 3 a bundle
    for p in sorted((run / "ndjson").glob("*.ndjson")):
        if p.stem not in ("Provenance", "Organization"):
            assert (tmp_path / "fhir" / "ndjson" / p.name).read_bytes() == p.read_bytes(), p.name
    lineage = result.lineage.collect().sort("source_file", "source_row", "fhir_type", "fhir_id")
    expected = pl.read_parquet(run / "lineage.parquet").sort("source_file", "source_row", "fhir_type", "fhir_id")
    assert lineage.equals(expected)
