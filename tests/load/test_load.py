"""handover load and reconcile-target against a real FHIR server on loopback.

The server (Medplum's FHIR router, in memory) really processes each transaction; the
tests load a synthetic batch, kill the loader midway and resume, inject 5xx, 429 and
dropped connections, and reconcile what the server holds: nothing missing, nothing
changed — then change one resource at the target and delete another, and both are
reported, by patient and field.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx
import pytest
from click.testing import CliRunner

from cli import main
from migrate.load import STATE, LoadOptions, load_run, read_state


def _ndjson_counts(run: Path) -> dict[str, int]:
    return {p.stem: len(p.read_text(encoding="utf-8").splitlines())
            for p in sorted((run / "fhir" / "ndjson").glob("*.ndjson"))}


def _bundles(run: Path) -> int:
    return len(list((run / "fhir" / "bundles").glob("bundle-*.json")))


def _fast(base: str, **kw: Any) -> LoadOptions:
    return LoadOptions(fhir_base=base, backoff=0.01, backoff_max=0.05, **kw)


def _target_json(run: Path) -> dict[str, Any]:
    return dict(json.loads((run / "reports" / "target.json").read_text(encoding="utf-8")))


def test_load_then_target_holds_everything(fhir_server: Any, run_copy: Path, tmp_path: Path, lh: ModuleType) -> None:
    result = CliRunner().invoke(main, ["load", str(run_copy), "--fhir-base", fhir_server.base, "--concurrency", "3",
                                       "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output)
    assert summary["sent"] == summary["bundles"] == _bundles(run_copy) > 5
    assert summary["failed"] == 0 and summary["resources_sent"] == sum(_ndjson_counts(run_copy).values())
    assert fhir_server.stats()["resources"] == _ndjson_counts(run_copy)  # every resource, once
    # Read back by id …
    by_id = CliRunner().invoke(main, ["reconcile-target", str(run_copy), "--fhir-base", fhir_server.base, "--json"])
    assert by_id.exit_code == 0, by_id.output
    report = json.loads(by_id.output)
    assert report["holds"] and report["totals"]["missing"] == report["totals"]["changed"] == 0
    assert report["totals"]["extra"] == 0 and report["totals"]["found"] == report["totals"]["sent"]
    # … and from a Bulk Data export of the server.
    export = lh.bulk_export(fhir_server, tmp_path / "export")
    from_export = CliRunner().invoke(main, ["reconcile-target", str(run_copy), "--export", str(export), "--json"])
    assert from_export.exit_code == 0, from_export.output
    assert json.loads(from_export.output)["totals"] == report["totals"]
    # The load record and the target report are sealed in the manifest: verify stays whole.
    assert CliRunner().invoke(main, ["verify", str(run_copy)]).exit_code == 0
    assert "What the receiving system holds" in (run_copy / "reports" / "reconciliation.html").read_text("utf-8")


def test_loading_twice_changes_nothing(fhir_server: Any, run_copy: Path, tmp_path: Path, lh: ModuleType) -> None:
    first = load_run(run_copy, _fast(fhir_server.base))
    assert first.ok
    before = _contents(lh.bulk_export(fhir_server, tmp_path / "a"))
    again = load_run(run_copy, _fast(fhir_server.base))  # the state says everything is loaded
    assert again.sent == 0 and again.skipped == first.bundles
    (run_copy / STATE).unlink()  # forget the state: every bundle is sent once more
    third = load_run(run_copy, _fast(fhir_server.base))
    assert third.sent == first.bundles and third.ok
    assert _contents(lh.bulk_export(fhir_server, tmp_path / "b")) == before  # PUT by UUIDv5 id: same resources


def _contents(export: Path) -> dict[str, str]:
    """Every resource by type/id without server-assigned meta."""
    out = {}
    for path in export.glob("*.ndjson"):
        for line in path.read_text(encoding="utf-8").splitlines():
            r = json.loads(line)
            r.pop("meta", None)
            out[f"{r['resourceType']}/{r['id']}"] = json.dumps(r, sort_keys=True)
    return out


def test_killed_load_resumes(fhir_server: Any, run_copy: Path) -> None:
    bundles = _bundles(run_copy)
    fhir_server.faults({"delay": 700, "count": 1000, "match": "POST"})  # slow enough to stop midway
    proc = subprocess.Popen([sys.executable, "-c", "from cli import main; main()", "load", str(run_copy),
                             "--fhir-base", fhir_server.base, "--concurrency", "1", "--quiet"],
                            cwd=Path(__file__).resolve().parents[2], start_new_session=True)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and len(read_state(run_copy)) < 2:
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=10)
    done = {n for n, r in read_state(run_copy).items() if r["ok"]}
    assert 2 <= len(done) < bundles, "the loader was not stopped midway"
    fhir_server.faults()  # no more delay
    resumed = load_run(run_copy, _fast(fhir_server.base))
    assert resumed.ok and resumed.skipped == len(done) and resumed.sent == bundles - len(done)
    assert fhir_server.stats()["resources"] == _ndjson_counts(run_copy)
    assert CliRunner().invoke(main, ["reconcile-target", str(run_copy), "--fhir-base", fhir_server.base]).exit_code == 0


def test_faults_are_retried(fhir_server: Any, run_copy: Path) -> None:
    fhir_server.faults({"status": 503, "count": 2, "match": "POST"}, {"status": 429, "retryAfter": 0, "count": 1},
                       {"status": 500, "count": 1}, {"drop": True, "count": 1})
    result = load_run(run_copy, _fast(fhir_server.base, concurrency=2))
    assert result.ok and result.retried == 5
    assert fhir_server.stats()["faults"] == 5
    assert fhir_server.stats()["resources"] == _ndjson_counts(run_copy)
    # Every bundle's outcome and sha256 is recorded.
    state = read_state(run_copy)
    assert len(state) == _bundles(run_copy) and all(r["ok"] and len(r["sha256"]) == 64 for r in state.values())
    assert sum(r["attempts"] for r in state.values()) == _bundles(run_copy) + 5


def test_persistent_failure_is_reported_and_resumable(fhir_server: Any, run_copy: Path) -> None:
    fhir_server.faults({"status": 503, "count": 1000, "match": "POST"})
    result = load_run(run_copy, _fast(fhir_server.base, max_attempts=2))
    assert not result.ok and result.failed == result.bundles and result.resources_sent == 0
    fhir_server.faults()
    assert load_run(run_copy, _fast(fhir_server.base)).ok


def test_target_changes_reported_by_patient_and_field(fhir_server: Any, run_copy: Path) -> None:
    assert load_run(run_copy, _fast(fhir_server.base)).ok
    patients = [json.loads(line) for line in (run_copy / "fhir" / "ndjson" / "Patient.ndjson").read_text().splitlines()]
    encounters = [json.loads(line) for line in
                  (run_copy / "fhir" / "ndjson" / "Encounter.ndjson").read_text().splitlines()]
    changed = next(p for p in patients if p.get("birthDate"))
    gone = encounters[0]
    local = {p["id"]: next(i["value"] for i in p["identifier"] if i["system"].endswith("/patient")) for p in patients}
    with httpx.Client(base_url=fhir_server.base) as client:
        changed["birthDate"] = "1901-01-01"
        assert client.put(f"Patient/{changed['id']}", json=changed).status_code == 200
        assert client.delete(f"Encounter/{gone['id']}").status_code == 200
    result = CliRunner().invoke(main, ["reconcile-target", str(run_copy), "--fhir-base", fhir_server.base])
    assert result.exit_code == 1
    report = _target_json(run_copy)
    assert report["totals"] | {"sent": 0, "found": 0} == {"sent": 0, "found": 0, "missing": 1, "changed": 1,
                                                          "extra": 0}
    by_patient = {p["patient_ids"][0]: p for p in report["patients"]}
    owner = local[gone["subject"]["reference"].split("/")[1]]
    assert by_patient[owner]["missing"] == [{"type": "Encounter", "id": gone["id"]}]
    assert by_patient[local[changed["id"]]]["changed"] == [{"type": "Patient", "id": changed["id"],
                                                           "fields": ["birth_date"]}]
    assert "1901" not in json.dumps(report)  # the field is named, the value never shown
    page = (run_copy / "reports" / "reconciliation.html").read_text(encoding="utf-8")
    assert "Target:" in page and gone["id"] in page


def test_extra_resource_with_our_identifier(fhir_server: Any, run_copy: Path) -> None:
    assert load_run(run_copy, _fast(fhir_server.base)).ok
    encounter = json.loads((run_copy / "fhir" / "ndjson" / "Encounter.ndjson").read_text().splitlines()[0])
    encounter["id"] = "not-sent-by-this-run"
    with httpx.Client(base_url=fhir_server.base) as client:
        assert client.put("Encounter/not-sent-by-this-run", json=encounter).status_code in (200, 201)
    result = CliRunner().invoke(main, ["reconcile-target", str(run_copy), "--fhir-base", fhir_server.base, "--json"])
    report = json.loads(result.output)
    assert result.exit_code == 0  # extras are reported, they do not fail the check
    assert report["totals"]["extra"] == 1
    assert [r for p in report["patients"] for r in p["extra"]] == [{"type": "Encounter",
                                                                    "id": "not-sent-by-this-run"}]


def test_token_is_sent_and_refusal_stops(run_copy: Path, tmp_path: Path, lh: ModuleType) -> None:
    server = lh.start_server(token="s3cret-token")
    try:
        refused = CliRunner().invoke(main, ["load", str(run_copy), "--fhir-base", server.base])
        assert refused.exit_code == 1 and "credentials" in refused.output
        token = tmp_path / "token"
        token.write_text("s3cret-token\n")
        ok = CliRunner().invoke(main, ["load", str(run_copy), "--fhir-base", server.base, "--token-file", str(token)])
        assert ok.exit_code == 0, ok.output
    finally:
        lh.stop_server(server)


@pytest.mark.parametrize("args, code, message", [
    (["--fhir-base", "ftp://x"], 2, "not an http(s) URL"),
    (["--fhir-base", "http://127.0.0.1:9/fhir", "--token-file", "/nonexistent/token"], 2, "cannot be read"),
])
def test_bad_options_exit_2(run_copy: Path, args: list[str], code: int, message: str) -> None:
    result = CliRunner().invoke(main, ["load", str(run_copy), *args])
    assert result.exit_code == code and message in result.output


def test_run_without_bundles_exits_3(tmp_path: Path) -> None:
    (tmp_path / "manifest.json").write_text("{}")
    result = CliRunner().invoke(main, ["load", str(tmp_path), "--fhir-base", "http://127.0.0.1:9/fhir"])
    assert result.exit_code == 3 and "no FHIR bundles" in result.output


def test_reconcile_target_needs_exactly_one_source(run_copy: Path) -> None:
    result = CliRunner().invoke(main, ["reconcile-target", str(run_copy)])
    assert result.exit_code == 2 and "exactly one" in result.output
