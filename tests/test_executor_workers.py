"""The local executor's worker processes: what their environment gives polars."""

from __future__ import annotations

import os

import pytest

import migrate.executor as executor
from migrate.executor import LocalExecutor

NAMES = ["POLARS_MAX_THREADS"]


def test_pool_workers_share_the_cores(monkeypatch: pytest.MonkeyPatch) -> None:
    """Two workers on two cores: one polars thread each (not two each); this process's own
    environment is left as it was."""
    for name in NAMES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(executor, "cores", lambda: 2)
    seen = LocalExecutor(2, 2).map(os.getenv, NAMES * 2)  # each job runs in a worker process
    assert seen == ["1", "1"]
    assert os.getenv("POLARS_MAX_THREADS") is None


def test_a_users_setting_wins(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("POLARS_MAX_THREADS", "3")
    assert LocalExecutor(2, 2).map(os.getenv, NAMES * 2) == ["3", "3"]
    assert os.environ["POLARS_MAX_THREADS"] == "3"
