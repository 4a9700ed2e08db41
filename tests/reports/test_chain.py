"""verify and the manifest chain: changed, missing and extra files; a broken chain."""

from __future__ import annotations

import hashlib
import io
import json
import shutil
from pathlib import Path
from types import ModuleType

import pytest
from rich.console import Console

from migrate.errors import ConfigError
from migrate.outputs import write_json
from migrate.reports import (
    manifest_sha256,
    record_previous,
    seal_outputs,
    verify,
    write_reports,
)


@pytest.fixture
def sealed(worked_run: Path, rh: ModuleType, tmp_path: Path) -> Path:
    """A private copy of the worked run with its reports written and sealed."""
    run = rh.copy_run(worked_run, tmp_path / "batches" / "run")
    write_reports(run)
    return run


def kinds(result: object) -> list[tuple[str, str]]:
    return [(f.kind, f.path) for f in result.failures]  # type: ignore[attr-defined]


def test_an_intact_run_verifies(sealed: Path) -> None:
    result = verify(sealed)
    assert result.ok and result.failures == []
    listed = json.loads((sealed / "manifest.json").read_text())["outputs"]
    assert result.files_checked == len(listed) > 10
    assert result.bytes_hashed == sum(e["bytes"] for e in listed)
    assert result.asdict()["ok"] is True


def test_one_changed_byte_is_named(sealed: Path) -> None:
    target = sealed / "canonical" / "referrals.parquet"
    data = bytearray(target.read_bytes())
    data[len(data) // 2] ^= 0x01
    target.write_bytes(bytes(data))
    result = verify(sealed)
    assert kinds(result) == [("changed", "canonical/referrals.parquet")]


def test_a_missing_and_an_extra_file_are_named(sealed: Path) -> None:
    (sealed / "reports" / "exceptions.csv").unlink()
    (sealed / "notes.txt").write_text("added after the run")
    (sealed / "canonical" / ".hidden").write_text("")
    result = verify(sealed)
    assert kinds(result) == [("extra", "canonical/.hidden"), ("extra", "notes.txt"),
                             ("missing", "reports/exceptions.csv")]
    text = io.StringIO()
    Console(file=text, width=100).print(result)
    assert "FAILED (3)" in text.getvalue() and "reports/exceptions.csv" in text.getvalue()


def test_an_edited_report_is_caught_too(sealed: Path) -> None:
    page = sealed / "reports" / "reconciliation.html"
    page.write_text(page.read_text().replace("All invariants hold", "All invariants hold!"))
    assert kinds(verify(sealed)) == [("changed", "reports/reconciliation.html")]


def _chained(first: Path, rh: ModuleType, worked_run: Path) -> Path:
    """A second batch whose manifest chains to ``first``."""
    second = rh.copy_run(worked_run, first.parent / "second")
    manifest = json.loads((second / "manifest.json").read_text())
    write_json(record_previous(manifest, first, second), second / "manifest.json")
    write_reports(second)
    return second


def test_a_chain_links_and_records_where_the_previous_run_is(sealed: Path, rh: ModuleType, worked_run: Path) -> None:
    second = _chained(sealed, rh, worked_run)
    manifest = json.loads((second / "manifest.json").read_text())
    assert manifest["previous_manifest_sha256"] == hashlib.sha256((sealed / "manifest.json").read_bytes()).hexdigest()
    assert manifest["previous_manifest_sha256"] == manifest_sha256(sealed)
    assert manifest["previous_run"]["path"] == "../run"
    result = verify(second)
    assert result.ok and result.chain.startswith("links to ")
    # The reports of a chained run compare against the previous batch.
    assert write_reports(second).summary["delta"]["available"] is True


def test_an_altered_previous_manifest_breaks_the_chain(sealed: Path, rh: ModuleType, worked_run: Path) -> None:
    second = _chained(sealed, rh, worked_run)
    previous = sealed / "manifest.json"
    previous.write_bytes(previous.read_bytes().replace(b'"cutover_date"', b'"cutover_date" ', 1))
    result = verify(second)
    assert [f.kind for f in result.failures] == ["chain"]
    assert result.failures[0].path.endswith("../run/manifest.json")
    assert "hashes to" in result.failures[0].detail


def test_a_previous_run_that_moved_breaks_the_chain_until_it_is_given(sealed: Path, rh: ModuleType,
                                                                     worked_run: Path) -> None:
    second = _chained(sealed, rh, worked_run)
    moved = shutil.move(sealed, sealed.parent / "archive")
    result = verify(second)
    assert [f.kind for f in result.failures] == ["chain"] and "not found" in result.failures[0].detail
    assert verify(second, previous=Path(moved)).ok


def test_record_previous_refuses_a_folder_that_is_not_a_run(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        record_previous({}, tmp_path, tmp_path / "run")
    assert caught.value.exit_code == 2


def test_sealing_twice_changes_nothing(sealed: Path) -> None:
    before = (sealed / "manifest.json").read_bytes()
    assert seal_outputs(sealed, [sealed / "reports" / "reconciliation.html"]) is False
    assert (sealed / "manifest.json").read_bytes() == before


def test_an_unreadable_manifest_is_an_input_error(sealed: Path) -> None:
    """Nothing to verify against: exit 3 naming the manifest, not a verdict on the outputs."""
    from migrate.errors import InputError

    (sealed / "manifest.json").write_text("{ not json")
    with pytest.raises(InputError, match="manifest.json") as caught:
        verify(sealed)
    assert caught.value.exit_code == 3
