"""Shared fixtures: paths to the test cases and a helper to write small extracts."""

from __future__ import annotations

from pathlib import Path

import pytest

CASES = Path(__file__).parent / "cases"


@pytest.fixture
def cases() -> Path:
    return CASES


def write(path: Path, text: str | bytes) -> Path:
    """Write a test file (text as UTF-8 unless bytes)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(text if isinstance(text, bytes) else text.encode("utf-8"))
    return path
