"""`--fhir-form both|ndjson`: the NDJSON-only run writes no transaction bundle and every
other output the same bytes; it is recorded, verified, refused by `handover load` (see
tests/load/test_load_form.py), and `handover fhir RUN --fhir-form both` writes the bundles
a `both` run writes."""

from __future__ import annotations

import json
import shutil
from datetime import date
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

import cli
from migrate.manifest import check_manifest
from migrate.pipeline import RunConfig, run_batch
from migrate.synth import synthesise

CUTOVER = date(2022, 10, 1)
# Fields of the manifest and reconciliation.json that hold the wall clock.
TIMES = ("started", "finished", "digest", "execution")


def _files(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _outputs(run: Path) -> dict[str, str]:
    """path -> sha256 of every output the manifest lists."""
    return {o["path"]: o["sha256"] for o in json.loads((run / "manifest.json").read_text())["outputs"]}


def _json(path: Path) -> dict[str, Any]:
    return dict(json.loads(path.read_text(encoding="utf-8")))


def _patients(run: Path) -> int:
    """Patients written (each in one bundle)."""
    return len((run / "fhir" / "ndjson" / "Patient.ndjson").read_text(encoding="utf-8").splitlines())


def invoke(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli.main, list(args))
    return result.exit_code, result.output


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The same synthetic extract (60 patients, bundles of 8) run in each form."""
    root = tmp_path_factory.mktemp("form")
    synthesise(root / "extract", patients=60, seed=11)
    out = {}
    for form in ("both", "ndjson"):
        result = run_batch(RunConfig.load(root / "extract", "generic-csv", CUTOVER, root / form, bundle_size=8,
                                          fhir_form=form))
        assert result.ok, result.failures()
        out[form] = root / form
    return out


def _without_fhir_form(data: Any) -> Any:
    """A reconciliation summary or manifest with its clocks and what the form changes taken
    out: the form itself, the FHIR writer's bundle count and file list, the bundles (and
    the reports, whose bytes hold the clock) among the outputs."""
    if isinstance(data, list):
        return [_without_fhir_form(v) for v in data if not (isinstance(v, dict) and str(v.get("path", "")).startswith(
            ("fhir/bundles/", "reports/")))]
    if not isinstance(data, dict):
        return data
    drop = {*TIMES, "fhir_form"} | ({"bundles", "form", "files"} if "resources_total" in data else set())
    return {k: _without_fhir_form(v) for k, v in data.items() if k not in drop}


def test_an_ndjson_run_writes_no_bundle_and_every_other_output_the_same(runs: dict[str, Path]) -> None:
    both, ndjson = runs["both"], runs["ndjson"]
    bundles = len(list((both / "fhir" / "bundles").glob("bundle-*.json")))
    assert bundles == -(-_patients(both) // 8) > 2
    assert not (ndjson / "fhir" / "bundles").exists()
    expected = {p: h for p, h in _outputs(both).items() if not p.startswith("fhir/bundles/")}
    found = _outputs(ndjson)
    assert sorted(found) == sorted(expected)
    # Every table, the NDJSON, FHIR lineage and errors, the round trip: the same bytes.
    differ = sorted(p for p in expected if found[p] != expected[p])
    assert all(p.startswith("reports/") for p in differ), differ
    assert _files(ndjson / "fhir" / "ndjson") == _files(both / "fhir" / "ndjson")
    # The reports differ only where they state the form (and their clocks).
    a, b = (_json(r / "reports" / "reconciliation.json") for r in (both, ndjson))
    assert _without_fhir_form(a) == _without_fhir_form(b)
    assert (a["fhir"]["bundles"], a["fhir"]["form"], b["fhir"]["bundles"], b["fhir"]["form"]) == (
        bundles, "both", 0, "ndjson")
    assert [f for f in a["fhir"]["files"] if not f.startswith("fhir/bundles/")] == b["fhir"]["files"]
    assert _without_fhir_form(_json(both / "manifest.json")) == _without_fhir_form(_json(ndjson / "manifest.json"))


def test_an_ndjson_run_proves_nothing_was_lost_and_verifies(runs: dict[str, Path]) -> None:
    summary = _json(runs["ndjson"] / "reports" / "reconciliation.json")
    assert summary["invariant"]["holds"] is True
    assert summary["invariant_fhir"]["applicable"] is True and summary["invariant_fhir"]["holds"] is True
    assert _json(runs["ndjson"] / "reports" / "roundtrip.json")["holds"] is True
    code, output = invoke("verify", str(runs["ndjson"]))
    assert code == 0, output
    code, output = invoke("verify", str(runs["ndjson"]), "--fields")
    assert code == 0, output


def test_the_manifest_records_the_form_and_older_manifests_still_check(runs: dict[str, Path]) -> None:
    for form, run in runs.items():
        manifest = _json(run / "manifest.json")
        assert manifest["options"]["fhir_form"] == form and manifest["stages"]["fhir"]["form"] == form
        assert check_manifest(manifest) == []
    manifest = _json(runs["ndjson"] / "manifest.json")
    assert manifest["stages"]["fhir"]["bundles"] == 0
    # A manifest written before the option (it wrote both forms) names none: still sound.
    older = json.loads(json.dumps(manifest))
    del older["options"]["fhir_form"], older["stages"]["fhir"]["form"]
    assert check_manifest(older) == []
    manifest["options"]["fhir_form"] = "bundles"
    assert [p.split(":")[0] for p in check_manifest(manifest)] == ["options.fhir_form"]


def test_a_form_outside_the_choice_exits_2_before_reading_data(tmp_path: Path) -> None:
    code, output = invoke("run", "--input", str(tmp_path / "missing"), "--mapping", "generic-csv", "--cutover",
                          "2022-10-01", "--out", str(tmp_path / "run"), "--fhir-form", "bundles")
    assert code == 2 and "Invalid value for '--fhir-form'" in output and "'both', 'ndjson'" in output
    code, output = invoke("fhir", str(tmp_path), "--fhir-form", "json")
    assert code == 2 and "Invalid value for '--fhir-form'" in output
    synthesise(tmp_path / "extract", patients=3, seed=1)
    code, output = invoke("run", "--input", str(tmp_path / "extract"), "--mapping", "generic-csv", "--cutover",
                          "2022-10-01", "--out", str(tmp_path / "run"), "--no-fhir", "--fhir-form", "ndjson")
    assert code == 2 and "--fhir-form ndjson" in output and "--no-fhir" in output
    assert not (tmp_path / "run").exists()


def test_re_emitting_with_both_writes_the_bundles_of_a_both_run(runs: dict[str, Path], tmp_path: Path) -> None:
    copy = Path(shutil.copytree(runs["ndjson"], tmp_path / "run"))
    code, output = invoke("fhir", str(copy))  # the run's own form by default: still no bundle
    assert code == 0, output
    assert "NDJSON only" in output and not (copy / "fhir" / "bundles").exists()
    assert _files(copy / "fhir") == _files(runs["ndjson"] / "fhir")
    code, output = invoke("fhir", str(copy), "--fhir-form", "both")
    assert code == 0, output
    assert _files(copy / "fhir") == _files(runs["both"] / "fhir")  # bundles, NDJSON, lineage, errors
    manifest = _json(copy / "manifest.json")
    assert manifest["options"]["fhir_form"] == "both"
    assert manifest["stages"]["fhir"] == _json(runs["both"] / "manifest.json")["stages"]["fhir"]
    assert {p: h for p, h in _outputs(copy).items() if p.startswith("fhir/")} == {
        p: h for p, h in _outputs(runs["both"]).items() if p.startswith("fhir/")}
    code, output = invoke("verify", str(copy))
    assert code == 0, output
    # And back: NDJSON only again, recorded, and still verified.
    code, output = invoke("fhir", str(copy), "--fhir-form", "ndjson")
    assert code == 0, output
    assert _files(copy / "fhir") == _files(runs["ndjson"] / "fhir")
    assert _json(copy / "manifest.json")["options"]["fhir_form"] == "ndjson"
    code, output = invoke("verify", str(copy))
    assert code == 0, output


@pytest.mark.parametrize("size", [1, 7, 60])
def test_the_form_changes_no_byte_of_the_ndjson_whatever_the_bundle_size(runs: dict[str, Path], tmp_path: Path,
                                                                          size: int) -> None:
    """Re-emitted at another bundle size: NDJSON-only and both agree on every file they share,
    and the bundles re-emitted from the NDJSON-only run are the both run's."""
    trees = {}
    for source, form in (("both", "both"), ("ndjson", "ndjson"), ("ndjson", "both")):
        copy = Path(shutil.copytree(runs[source], tmp_path / f"{source}-{form}"))
        code, output = invoke("fhir", str(copy), "--bundle-size", str(size), "--fhir-form", form)
        assert code == 0, output
        trees[(source, form)] = _files(copy / "fhir")
    both = trees[("both", "both")]
    assert len([p for p in both if p.startswith("bundles/")]) == -(-_patients(runs["both"]) // size)
    assert trees[("ndjson", "both")] == both
    assert trees[("ndjson", "ndjson")] == {p: b for p, b in both.items() if not p.startswith("bundles/")}


def test_explain_tells_the_same_fhir_story_of_an_ndjson_run(runs: dict[str, Path]) -> None:
    """The patient's story reads the NDJSON and lineage: the form changes none of it."""
    first = json.loads((runs["both"] / "fhir" / "ndjson" / "Patient.ndjson").read_text().splitlines()[0])
    local_id = next(i["value"] for i in first["identifier"] if i["system"].endswith("/patient"))
    stories = {}
    for form, run in runs.items():
        code, output = invoke("explain", str(run), local_id, "--json")
        assert code == 0, output
        stories[form] = json.loads(output)["fhir"]
    assert stories["ndjson"]["present"] and stories["ndjson"]["emitted"]
    assert stories["ndjson"] == stories["both"]
