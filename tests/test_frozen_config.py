"""The run folder re-derives itself: configuration frozen into config/, and handover fhir,
report and diff reading it from there, never from the shipped defaults."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import polars as pl
import pytest
import yaml
from click.testing import CliRunner

import cli
from migrate import resources
from migrate.identity.settings import default_path as shipped_identity

CASE = Path(__file__).parent / "cases" / "worked-example"
MAPPING = CASE / "mapping.yaml"


def invoke(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli.main, list(args))
    return result.exit_code, result.stdout, result.stderr


def run(out: Path, *extra: str, input_dir: Path = CASE / "input", mapping: Path = MAPPING) -> Path:
    code, _, err = invoke("run", "--input", str(input_dir), "--mapping", str(mapping), "--cutover", "2022-10-01",
                          "--out", str(out), "--quiet", *extra)
    assert code == 0, err
    return out


@pytest.fixture(scope="module")
def site_pack(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A site pack that does not treat 'ADMIN APPOINTMENT ONLY' as an e-RS dummy slot: R11's
    attended contact (C11a) is then a real Encounter, which the shipped pack would drop."""
    site = tmp_path_factory.mktemp("site")
    (site / "default.yaml").write_text("extends: default\nname: oxford-msk\nversion: '7'\n"
                                       "codelists:\n  dummy_slot_names: [DO NOT ATTEND, DUMMY SLOT]\n")
    return site


@pytest.fixture(scope="module")
def site_run(site_pack: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return run(tmp_path_factory.mktemp("site-run") / "run", "--rules", str(site_pack))


def _encounter_contacts(run_dir: Path) -> set[str]:
    lines = (run_dir / "fhir" / "ndjson" / "Encounter.ndjson").read_text().splitlines()
    return {i["value"] for r in map(json.loads, lines) for i in r["identifier"]}


def _bytes(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_the_configuration_is_frozen_with_its_sha256(site_run: Path, site_pack: Path) -> None:
    manifest = json.loads((site_run / "manifest.json").read_text())
    config = manifest["config"]
    outputs = {o["path"]: o["sha256"] for o in manifest["outputs"]}
    for entry in [*config["mappings"], config["rules"], config["identity"]]:
        digest = hashlib.sha256((site_run / entry["path"]).read_bytes()).hexdigest()
        assert entry["sha256"] == digest == outputs[entry["path"]], entry["path"]
    assert config["declared"] is None
    # Profiles and identity settings byte for byte; the pack after extends:, self-contained.
    assert (site_run / "config" / "mapping-1.yaml").read_bytes() == MAPPING.read_bytes()
    assert config["mappings"][0]["sha256"] == manifest["mapping"][0]["sha256"]
    assert (site_run / "config" / "identity.yaml").read_bytes() == shipped_identity().read_bytes()
    pack = yaml.safe_load((site_run / "config" / "rules.yaml").read_text())
    assert "extends" not in pack and pack["name"] == "oxford-msk"
    assert pack["codelists"]["dummy_slot_names"] == ["DO NOT ATTEND", "DUMMY SLOT"]
    assert {r["id"] for r in pack["rules"]} >= {"cohort", "UNDER_PRIORITISED"} or len(pack["rules"]) > 10


def test_fhir_re_emits_a_site_pack_run_identically_and_verify_passes(
        site_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import shutil

    copy = tmp_path / "run"
    shutil.copytree(site_run, copy)
    assert "C11a" in _encounter_contacts(copy)  # the site pack made C11a an Encounter
    before = _bytes(copy)
    # Nothing shipped may be read: the shipped rules folder is gone for this command.
    monkeypatch.setattr(resources, "rules_dir", lambda: tmp_path / "no-shipped-rules")
    code, out, err = invoke("fhir", str(copy), "--json")
    assert code == 0, err
    assert _bytes(copy) == before  # every file, the manifest included
    code, _, err = invoke("verify", str(copy))
    assert code == 0, err


def test_report_re_renders_a_site_pack_run_with_its_own_pack(
        site_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import shutil

    copy = tmp_path / "run"
    shutil.copytree(site_run, copy)
    before = _bytes(copy)
    monkeypatch.setattr(resources, "rules_dir", lambda: tmp_path / "no-shipped-rules")
    code, _, err = invoke("report", str(copy), "--quiet")
    assert code == 0, err
    assert _bytes(copy) == before
    monkeypatch.undo()
    # The waits follow the site's dummy-slot list: R11 (attended C11a) counts as seen.
    default = run(tmp_path / "default")
    seen = {}
    for name, folder in (("site", copy), ("default", default)):
        summary = json.loads((folder / "reports" / "reconciliation.json").read_text())
        seen[name] = sum(line["seen"]["n"] for line in summary["waits"]["service_lines"] if line["seen"])
    assert seen["site"] == seen["default"] + 1


def test_diff_names_the_configuration_the_runs_did_not_share(site_run: Path, tmp_path: Path) -> None:
    default = run(tmp_path / "default")
    code, out, _ = invoke("diff", str(default), str(site_run), "--json")
    assert code == 0
    assert [c["part"] for c in json.loads(out)["config"]] == ["rules"]
    code, out, _ = invoke("diff", str(default), str(default), "--json")
    assert json.loads(out)["config"] == []
    code, out, _ = invoke("diff", str(default), str(site_run))
    assert "Configuration differs between the runs (rules)" in " ".join(out.split())


def test_a_run_without_frozen_configuration_is_refused(site_run: Path, tmp_path: Path) -> None:
    import shutil

    copy = tmp_path / "run"
    shutil.copytree(site_run, copy)
    (copy / "config" / "rules.yaml").unlink()
    for command in ("fhir", "report"):
        code, _, err = invoke(command, str(copy))
        assert code == 3 and "config/rules.yaml" in err and len(err.strip().splitlines()) == 1, err
    (copy / "config" / "rules.yaml").write_text("name: altered\nthresholds: {post_op_window_days: soon}\n")
    for command in ("fhir", "report"):
        code, _, err = invoke(command, str(copy))
        assert code == 3 and "config/rules.yaml no longer loads" in err, err
        assert len(err.strip().splitlines()) == 1, err


def test_re_emitting_a_run_with_merges_gives_the_same_bytes(tmp_path: Path) -> None:
    """A survivor carries the latest non-blank demographics of its duplicates (identity's
    survivorship), which the canonical tables do not hold: re-derived with the frozen
    identity settings, the re-emitted Patient is the run's."""
    import shutil

    extract = tmp_path / "in"
    shutil.copytree(CASE / "input", extract)
    # P28 (P01's NHS number) moved practice and postcode, and its referral is the latest.
    patients = (extract / "patients.csv").read_text().replace(
        "P28,9991000003,Ashby,Alice,1941-02-11,female,OX2 1AB,K84001",
        "P28,9991000003,Ashby,Alice,1941-02-11,female,OX4 9ZZ,K84099")
    (extract / "patients.csv").write_text(patients)
    referrals = (extract / "referrals.csv").read_text().replace("R28,P28,2022-07-01", "R28,P28,2022-08-01")
    (extract / "referrals.csv").write_text(referrals)
    folder = run(tmp_path / "run", input_dir=extract)
    survivor = [json.loads(line) for line in (folder / "fhir" / "ndjson" / "Patient.ndjson").read_text().splitlines()
                if any(i["value"] == "P01" for i in json.loads(line)["identifier"])]
    assert survivor[0]["address"][0]["postalCode"] == "OX4 9ZZ"  # survivorship, not P01's own row
    before = _bytes(folder)
    code, _, err = invoke("fhir", str(folder))
    assert code == 0, err
    assert _bytes(folder) == before
    # Another bundle size re-emits other bundles and records them: verify still passes.
    code, _, err = invoke("fhir", str(folder), "--bundle-size", "7")
    assert code == 0, err
    assert json.loads((folder / "manifest.json").read_text())["options"]["bundle_size"] == 7
    assert len(list((folder / "fhir" / "bundles").glob("*.json"))) > 1
    code, _, err = invoke("verify", str(folder))
    assert code == 0, err
