"""Shared fixtures: paths to the test cases and a helper to write small extracts."""

from __future__ import annotations

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
