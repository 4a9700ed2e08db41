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
    previous.write_bytes(previous.read_bytes().replace(b'"cutover_date": "2022-10-01"', b'"cutover_date": "2022-11-01"'))
    result = verify(second)
    assert [f.kind for f in result.failures] == ["chain"]
    assert result.failures[0].path.endswith("../run/manifest.json")
    assert "digests to" in result.failures[0].detail


def test_reformatting_a_previous_manifest_is_not_an_edit(sealed: Path, rh: ModuleType, worked_run: Path) -> None:
    second = _chained(sealed, rh, worked_run)
    previous = sealed / "manifest.json"
    previous.write_bytes(previous.read_bytes().replace(b'"cutover_date"', b'"cutover_date" ', 1))
    assert verify(second).ok and verify(second, chain=True).ok


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


# --- verify checks everything it vouches for (issue #12, item 4) -------------------------

def _edit(run: Path, change: object) -> None:
    manifest = json.loads((run / "manifest.json").read_text())
    change(manifest)  # type: ignore[operator]
    (run / "manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True))


@pytest.mark.parametrize("change", [
    lambda m: m["inputs"][0].update(sha256="0" * 64),
    lambda m: m.update(cutover_date="2023-01-01"),
    lambda m: m["options"].update(sharing_policy="include"),
    lambda m: m["counts"].update(quarantined=0, rows_read=m["counts"]["rows_read"] + 1),
    lambda m: m["outputs"][-1].update(rows=1),
], ids=["input hash", "cut-over", "policy", "counts", "output rows"])
def test_editing_the_manifest_itself_fails_verification(sealed: Path, change: object) -> None:
    _edit(sealed, change)
    result = verify(sealed)
    assert [f.kind for f in result.failures] == ["manifest"]
    assert "does not match its digest" in result.failures[0].detail


@pytest.mark.parametrize(("change", "says", "code"), [
    (lambda m: m["outputs"][0].pop("path"), "outputs.0.path: Field required", 3),
    (lambda m: m["outputs"][0].update(sha256="not-a-hash"), "outputs.0.sha256", 1),
    (lambda m: m["outputs"][0].update(path="../../etc/passwd"), "inside the run folder", 1),
    (lambda m: m.update(outputs={"a": 1}), "outputs", 3),
    (lambda m: m["inputs"][0].update(bytes="12"), "inputs.0.bytes", 1),
    (lambda m: m.pop("digest"), "digest: Field required", 1),
], ids=["no path", "bad hash", "outside path", "not a list", "string bytes", "no digest"])
def test_a_malformed_manifest_is_a_clear_failure_not_a_traceback(sealed: Path, change: object, says: str,
                                                                 code: int) -> None:
    """A manifest readers cannot use at all is not a run (exit 3, one line naming the entry);
    any other departure from the schema is a verification failure naming it (exit 1)."""
    from click.testing import CliRunner

    from cli import main
    from migrate.errors import InputError

    _edit(sealed, change)
    if code == 3:
        with pytest.raises(InputError, match="not a handover run manifest") as caught:
            verify(sealed)
        assert says in str(caught.value)
    else:
        result = verify(sealed)
        assert result.failures and {f.kind for f in result.failures} == {"manifest"}
        assert any(says in f.detail for f in result.failures), [f.detail for f in result.failures]
    cli = CliRunner().invoke(main, ["verify", str(sealed)])
    assert cli.exit_code == code and "Traceback" not in cli.output
    assert says in cli.output + cli.stderr


def test_a_run_killed_before_its_reports_were_sealed_is_incomplete(sealed: Path) -> None:
    from migrate.manifest import with_digest

    manifest = json.loads((sealed / "manifest.json").read_text())
    manifest["outputs"] = [e for e in manifest["outputs"] if not e["path"].startswith("reports/")]
    write_json(with_digest(manifest), sealed / "manifest.json")
    shutil.rmtree(sealed / "reports")
    result = verify(sealed)
    assert {f.kind for f in result.failures} == {"incomplete"}
    assert {f.path for f in result.failures} == {"reports/reconciliation.json", "reports/reconciliation.html",
                                                 "reports/exceptions.xlsx", "reports/exceptions.csv"}


KEY = b"k" * 32


def test_a_sealed_run_shows_a_careful_edit_to_the_key_holder(sealed: Path) -> None:
    from migrate.manifest import with_digest

    write_reports(sealed, key=KEY)  # seals it
    assert verify(sealed, key=KEY).ok and verify(sealed, key=KEY).seal == "matches the key"
    assert verify(sealed).ok and "give --key-file" in verify(sealed).seal
    assert [f.kind for f in verify(sealed, key=b"x" * 32).failures] == ["seal"]
    # A careful editor changes the cut-over and recomputes the digest: only the seal shows it.
    manifest = json.loads((sealed / "manifest.json").read_text())
    seal = manifest["seal"]
    write_json(with_digest(manifest | {"cutover_date": "2023-01-01"}) | {"seal": seal}, sealed / "manifest.json")
    assert verify(sealed).ok
    assert [f.kind for f in verify(sealed, key=KEY).failures] == ["seal"]


def test_a_sealed_run_is_re_rendered_only_with_its_key(sealed: Path) -> None:
    write_reports(sealed, key=KEY)
    before = (sealed / "manifest.json").read_bytes()
    with pytest.raises(ConfigError, match="the run is sealed"):
        write_reports(sealed)
    with pytest.raises(ConfigError, match="does not match this key"):
        write_reports(sealed, key=b"x" * 32)
    assert (sealed / "manifest.json").read_bytes() == before
    write_reports(sealed, key=KEY)
    assert verify(sealed, key=KEY).ok


def test_an_unsealed_run_checked_with_a_key_fails(sealed: Path) -> None:
    assert [f.kind for f in verify(sealed, key=KEY).failures] == ["seal"]


def test_re_rendering_the_previous_batch_is_not_a_chain_break(sealed: Path, rh: ModuleType, worked_run: Path,
                                                              tmp_path: Path) -> None:
    second = _chained(sealed, rh, worked_run)
    declared = tmp_path / "declared.yaml"
    declared.write_text("patients: 28\nlists:\n  backlog: 20\n")
    write_reports(sealed, declared=declared)  # a legitimate `handover report RUN --declared`
    result = verify(second, chain=True)
    assert result.ok, result.failures
    assert "re-rendered since" in result.chain and result.runs_checked == 2


def test_verify_chain_re_verifies_earlier_batches(sealed: Path, rh: ModuleType, worked_run: Path) -> None:
    second = _chained(sealed, rh, worked_run)
    target = sealed / "canonical" / "codes.parquet"
    data = bytearray(target.read_bytes())
    data[len(data) // 2] ^= 0x01
    target.write_bytes(bytes(data))
    assert verify(second).ok  # the link holds: the earlier manifest is untouched
    result = verify(second, chain=True)
    assert kinds(result) == [("changed", f"{(second / '../run').as_posix()}/canonical/codes.parquet")]
    assert result.runs_checked == 2
