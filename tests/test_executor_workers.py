"""The local executor's worker processes: what their environment gives polars."""

from __future__ import annotations

import os

import pytest

import migrate.executor as executor
from migrate.executor import WORKER_ALLOCATOR, LocalExecutor

NAMES = ["POLARS_MAX_THREADS", "_RJEM_MALLOC_CONF"]


def test_pool_workers_share_the_cores_and_keep_their_memory(monkeypatch: pytest.MonkeyPatch) -> None:
    """Two workers on two cores: one polars thread each (not two each), the allocator kept;
    this process's own environment is left as it was."""
    for name in NAMES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(executor, "cores", lambda: 2)
    seen = LocalExecutor(2, 2).map(os.getenv, NAMES)  # one job per worker process, run there
    assert seen == ["1", WORKER_ALLOCATOR]
    assert [os.getenv(name) for name in NAMES] == [None, None]


def test_a_users_setting_wins(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("POLARS_MAX_THREADS", "3")
    monkeypatch.setenv("_RJEM_MALLOC_CONF", "background_thread:false")
    assert LocalExecutor(2, 2).map(os.getenv, NAMES) == ["3", "background_thread:false"]
    assert os.environ["POLARS_MAX_THREADS"] == "3"
