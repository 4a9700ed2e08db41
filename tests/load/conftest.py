"""A real FHIR server on 127.0.0.1 for the load and target tests, and a small run to send.

The server is ``tests/fhir_server/server.cjs``: Medplum's FHIR router over its in-memory
repository (installed from the npm registry by ``.ci/run`` / ``make test``:
``npm ci --prefix tests/fhir_server``). When Node or the packages are missing the tests
FAIL with the command to fix it — never skip: a load test that silently does not run
would hide a regression.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx
import pytest

from migrate.pipeline import RunConfig, run_batch
from migrate.synth import synthesise

SERVER_DIR = Path(__file__).resolve().parents[1] / "fhir_server"
CUTOVER = date(2022, 10, 1)


@dataclass
class FhirServer:
    """A running test server: its FHIR base URL, admin helpers, the process."""

    port: int
    process: subprocess.Popen[str]

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}/fhir"

    def admin(self, path: str, body: Any = None) -> Any:
        url = f"http://127.0.0.1:{self.port}/admin/{path}"
        response = httpx.post(url, json=body) if body is not None or path in ("reset",) else httpx.get(url)
        response.raise_for_status()
        return response.json()

    def reset(self) -> None:
        self.admin("reset", {})

    def faults(self, *faults: dict[str, Any]) -> None:
        self.admin("faults", list(faults))

    def stats(self) -> dict[str, Any]:
        return dict(self.admin("stats"))


def start_server(token: str | None = None) -> FhirServer:
    """Start the server on a free loopback port; fail (not skip) when it cannot run."""
    node = shutil.which("node")
    if node is None:
        pytest.fail("Node.js is not installed: the load tests need a real FHIR server "
                    "(install Node >= 20.19, then `npm ci --prefix tests/fhir_server`; .ci/run does both)")
    if not (SERVER_DIR / "node_modules" / "@medplum" / "fhir-router").is_dir():
        pytest.fail("the test FHIR server's packages are not installed: run `npm ci --prefix tests/fhir_server` "
                    "(.ci/run and `make test` do)")
    args = [node, str(SERVER_DIR / "server.cjs"), "--port", "0"] + (["--token", token] if token else [])
    process = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert process.stdout is not None
    line = process.stdout.readline()  # {"port": N} once listening (definitions load first: a few seconds)
    if not line:
        err = process.stderr.read() if process.stderr else ""
        pytest.fail(f"the test FHIR server did not start: {err[-2000:]}")
    return FhirServer(int(json.loads(line)["port"]), process)


def stop_server(server: FhirServer) -> None:
    server.process.terminate()
    try:
        server.process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        server.process.kill()


@pytest.fixture(scope="session")
def fhir_server_session() -> Iterator[FhirServer]:
    server = start_server()
    yield server
    stop_server(server)


@pytest.fixture
def fhir_server(fhir_server_session: FhirServer) -> FhirServer:
    """The session's server, emptied (resources, faults, counters) for each test."""
    fhir_server_session.reset()
    return fhir_server_session


@pytest.fixture(scope="session")
def small_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """80 synthetic patients in bundles of 8 (about ten bundles, ~700 resources)."""
    root = tmp_path_factory.mktemp("load")
    synthesise(root / "extract", patients=80, seed=5)
    result = run_batch(RunConfig.load(root / "extract", "generic-csv", CUTOVER, root / "run", bundle_size=8))
    assert result.ok
    return root / "run"


@pytest.fixture
def run_copy(small_run: Path, tmp_path: Path) -> Path:
    """A private copy of the small run (loading writes its state into the run folder)."""
    return Path(shutil.copytree(small_run, tmp_path / "run"))


@pytest.fixture(scope="session")
def lh() -> ModuleType:
    """These helpers, for tests (test folders are not importable under importlib mode)."""
    return sys.modules[__name__]


def bulk_export(server: FhirServer, out: Path) -> Path:
    """A FHIR Bulk Data system export of the server into ``out`` (kick-off, poll, download)."""
    out.mkdir(parents=True, exist_ok=True)
    with httpx.Client(timeout=60) as client:
        kick = client.get(f"{server.base}/$export", headers={"Accept": "application/fhir+json",
                                                            "Prefer": "respond-async"})
        assert kick.status_code == 202, kick.text
        status_url = kick.headers["content-location"]
        for _ in range(100):
            status = client.get(status_url)
            if status.status_code == 200:
                break
            time.sleep(0.1)
        manifest = status.json()
        for item in manifest["output"]:
            (out / f"{item['type']}.ndjson").write_bytes(client.get(item["url"]).content)
    return out
