"""Shared fixtures: paths to the test cases and a helper to write small extracts."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pytest
from hypothesis import settings

CASES = Path(__file__).parent / "cases"

# No per-example deadline: tests assert behaviour, never speed (benchmarks/ measure that),
# and on a shared machine running the suite in parallel a 200 ms deadline fails at random.
settings.register_profile("handover", deadline=None)
settings.load_profile("handover")


@pytest.fixture
def cases() -> Path:
    return CASES


def write(path: Path, text: str | bytes) -> Path:
    """Write a test file (text as UTF-8 unless bytes)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(text if isinstance(text, bytes) else text.encode("utf-8"))
    return path


@pytest.fixture(scope="session")
def worked_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The worked example (29 referrals), run with its own mapping at cut-over 2022-10-01:
    built once per session (per worker in parallel) and never modified — a test that
    edits a run works on a copy (``shutil.copytree``)."""
    from migrate.pipeline import RunConfig, run_batch

    out = tmp_path_factory.mktemp("worked") / "run"
    result = run_batch(RunConfig.load(CASES / "worked-example" / "input", CASES / "worked-example" / "mapping.yaml",
                                      date(2022, 10, 1), out))
    assert result.ok, result.failures()
    return out
