"""`--fhir-compression gzip`: the NDJSON as `<Type>.ndjson.gz` (one gzip member per writer
batch), the same lines as a plain run's; every reader reads it (round trip, invariant 2,
explain, target reconciliation, `handover fhir`), the bytes are deterministic whatever the
partitions, and a damaged file is an error naming it — never a short read."""

from __future__ import annotations

import dataclasses
import gzip
import json
import re
import shutil
import struct
from datetime import date
from pathlib import Path
from typing import Any

import polars as pl
import pyarrow.json as pa_json
import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import cli
import migrate.executor as executor
import migrate.pipeline as pipeline
from migrate.errors import InputError
from migrate.fhir.bundle import _Writers
from migrate.fhir.inverse import decode_batches, ndjson_files
from migrate.fhir.roundtrip import check_roundtrip
from migrate.manifest import check_manifest
from migrate.pipeline import RunConfig, run_batch
from migrate.reports.invariants import fhir_output
from migrate.reports.rundata import RunFolder
from migrate.synth import synthesise

CUTOVER = date(2022, 10, 1)
CHUNK = 24  # patients per writer batch (3 bundles of 8): 60 patients make 3 batches


def _json(path: Path) -> dict[str, Any]:
    return dict(json.loads(path.read_text(encoding="utf-8")))


def _tree(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def invoke(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli.main, list(args))
    return result.exit_code, result.output


def _run(extract: Path, out: Path, **options: Any) -> Path:
    with pytest.MonkeyPatch.context() as mp:
        real = pipeline.options_for
        mp.setattr(pipeline, "options_for", lambda *a, **k: dataclasses.replace(real(*a, **k), chunk_patients=CHUNK))
        mp.setattr(executor, "cores", lambda: 1)  # partitions in this process
        result = run_batch(RunConfig.load(extract, "generic-csv", CUTOVER, out, bundle_size=8, **options))
    assert result.ok, result.failures()
    return out


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """One extract (60 patients) as plain NDJSON, gzip in one partition and gzip in three."""
    root = tmp_path_factory.mktemp("compression")
    synthesise(root / "extract", patients=60, seed=23)
    return {"plain": _run(root / "extract", root / "plain", fhir_form="ndjson", partitions=1),
            "gzip": _run(root / "extract", root / "gzip", fhir_form="ndjson", fhir_compression="gzip", partitions=1),
            "gzip3": _run(root / "extract", root / "gzip3", fhir_form="ndjson", fhir_compression="gzip", partitions=3)}


def _members(data: bytes) -> list[bytes]:
    """The gzip members of ``data`` (each checked: header flags, mtime)."""
    import zlib

    members = []
    while data:
        assert data[:3] == b"\x1f\x8b\x08"
        flags, mtime = data[3], struct.unpack("<I", data[4:8])[0]
        assert flags == 0 and mtime == 0  # no file name, no time: the same bytes every run
        inflate = zlib.decompressobj(31)
        members.append(inflate.decompress(data))
        assert inflate.eof
        data = inflate.unused_data
    return members


def test_a_gzip_run_writes_the_plain_runs_lines_one_member_per_batch(runs: dict[str, Path]) -> None:
    plain, packed = _tree(runs["plain"] / "fhir" / "ndjson"), _tree(runs["gzip"] / "fhir" / "ndjson")
    assert sorted(packed) == sorted(f"{name}.gz" for name in plain)
    patients = len(plain["Patient.ndjson"].splitlines())
    for name, text in plain.items():
        members = _members(packed[f"{name}.gz"])
        assert b"".join(members) == text, name
        if name == "Patient.ndjson":  # one member per writer batch that wrote patients
            assert len(members) == -(-patients // CHUNK) > 1
    assert sum(map(len, packed.values())) < sum(map(len, plain.values())) / 4
    # Every other FHIR file the same bytes.
    assert {k: v for k, v in _tree(runs["gzip"] / "fhir").items() if not k.startswith("ndjson/")} == \
           {k: v for k, v in _tree(runs["plain"] / "fhir").items() if not k.startswith("ndjson/")}


def test_the_gzip_bytes_do_not_depend_on_the_partitions(runs: dict[str, Path]) -> None:
    assert _tree(runs["gzip3"] / "fhir") == _tree(runs["gzip"] / "fhir")
    assert json.loads((runs["gzip3"] / "manifest.json").read_text())["execution"]["partitions_run"] == 3


def test_a_gzip_run_proves_nothing_was_lost_and_reports_as_a_plain_one(runs: dict[str, Path]) -> None:
    a, b = (_json(runs[k] / "reports" / "reconciliation.json") for k in ("plain", "gzip"))
    assert b["invariant"]["holds"] is True
    assert b["invariant_fhir"]["applicable"] is True and b["invariant_fhir"]["holds"] is True
    assert b["invariant_fhir"]["resources"] == a["invariant_fhir"]["resources"] > 0
    assert _json(runs["gzip"] / "reports" / "roundtrip.json") == _json(runs["plain"] / "reports" / "roundtrip.json")
    assert _json(runs["gzip"] / "reports" / "roundtrip.json")["holds"] is True
    assert (a["fhir"].get("compression"), b["fhir"]["compression"]) == (None, "gzip")
    assert [f"{f}.gz" if f.endswith(".ndjson") else f for f in a["fhir"]["files"]] == b["fhir"]["files"]
    assert a["fhir"]["resources"] == b["fhir"]["resources"]
    code, output = invoke("verify", str(runs["gzip"]))
    assert code == 0, output


def test_the_manifest_records_gzip_only(runs: dict[str, Path]) -> None:
    plain, packed = (_json(runs[k] / "manifest.json") for k in ("plain", "gzip"))
    assert "fhir_compression" not in plain["options"]  # a plain run's manifest as before the option
    assert packed["options"]["fhir_compression"] == "gzip" and check_manifest(packed) == []
    packed["options"]["fhir_compression"] = "zip"
    assert [p.split(":")[0] for p in check_manifest(packed)] == ["options.fhir_compression"]


def test_explain_reads_a_gzip_run(runs: dict[str, Path]) -> None:
    first = json.loads(gzip.decompress((runs["gzip"] / "fhir" / "ndjson" / "Patient.ndjson.gz").read_bytes())
                       .splitlines()[0])
    local_id = next(i["value"] for i in first["identifier"] if i["system"].endswith("/patient"))
    stories = {}
    for kind in ("plain", "gzip"):
        code, output = invoke("explain", str(runs[kind]), local_id, "--json")
        assert code == 0, output
        stories[kind] = json.loads(output)["fhir"]
    assert stories["gzip"]["present"] and stories["gzip"] == stories["plain"]


def test_handover_fhir_keeps_or_changes_the_compression(runs: dict[str, Path], tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    import migrate.fhir.stage as stage

    real = stage.options_for  # the runs' writer batches (a member per batch: the bytes follow them)
    monkeypatch.setattr(stage, "options_for", lambda *a, **k: dataclasses.replace(real(*a, **k), chunk_patients=CHUNK))
    copy = Path(shutil.copytree(runs["gzip"], tmp_path / "run"))
    code, output = invoke("fhir", str(copy))  # the run's own compression by default
    assert code == 0, output
    assert _tree(copy / "fhir") == _tree(runs["gzip"] / "fhir")
    code, output = invoke("fhir", str(copy), "--fhir-compression", "none")
    assert code == 0, output
    assert _tree(copy / "fhir") == _tree(runs["plain"] / "fhir")
    assert "fhir_compression" not in _json(copy / "manifest.json")["options"]
    code, output = invoke("fhir", str(copy), "--fhir-compression", "gzip", "--fhir-form", "both")
    assert code == 0, output
    assert sorted(p.name for p in (copy / "fhir" / "bundles").iterdir())  # bundles, plain JSON
    assert {k: v for k, v in _tree(copy / "fhir").items() if not k.startswith("bundles/")} == _tree(
        runs["gzip"] / "fhir")
    assert _json(copy / "manifest.json")["options"]["fhir_compression"] == "gzip"
    code, output = invoke("verify", str(copy))
    assert code == 0, output


def test_options_outside_the_choice_exit_2_before_reading_data(tmp_path: Path) -> None:
    code, output = invoke("run", "--input", str(tmp_path / "missing"), "--mapping", "generic-csv", "--cutover",
                          "2022-10-01", "--out", str(tmp_path / "run"), "--fhir-compression", "zip")
    assert code == 2 and "Invalid value for '--fhir-compression'" in output
    synthesise(tmp_path / "extract", patients=3, seed=1)
    code, output = invoke("run", "--input", str(tmp_path / "extract"), "--mapping", "generic-csv", "--cutover",
                          "2022-10-01", "--out", str(tmp_path / "run"), "--no-fhir", "--fhir-compression", "gzip")
    assert code == 2 and "--fhir-compression gzip" in output and "--no-fhir" in output
    assert not (tmp_path / "run").exists()


def _damage(run: Path, tmp_path: Path, how: str) -> tuple[Path, Path]:
    """A copy of ``run`` whose Encounter.ndjson.gz is damaged ``how``; (the copy, the file)."""
    copy = Path(shutil.copytree(run, tmp_path / how))
    path = copy / "fhir" / "ndjson" / "Encounter.ndjson.gz"
    data = path.read_bytes()
    first = _member_ends(data)[0]
    damaged = {"truncated": data[: len(data) - 50], "mid-member": data[: first // 2],
               "flipped": data[: first // 2] + bytes([data[first // 2] ^ 0x55]) + data[first // 2 + 1:],
               "crc": data[: first - 8] + bytes(4) + data[first - 4:],
               "garbage": data + b"\x00\x01"}[how]
    path.write_bytes(damaged)
    return copy, path


def _member_ends(data: bytes) -> list[int]:
    ends, offset = [], 0
    import zlib

    while offset < len(data):
        inflate = zlib.decompressobj(31)
        inflate.decompress(data[offset:])
        offset = len(data) - len(inflate.unused_data)
        ends.append(offset)
    return ends


@pytest.mark.parametrize("how", ["truncated", "mid-member", "flipped", "crc", "garbage"])
def test_a_damaged_gzip_file_is_named_by_every_reader(runs: dict[str, Path], tmp_path: Path, how: str) -> None:
    copy, path = _damage(runs["gzip"], tmp_path, how)
    with pytest.raises(InputError, match=re.escape(str(path))):
        check_roundtrip(copy, write=False)
    with pytest.raises(InputError, match=re.escape(str(path))):
        fhir_output(RunFolder.open(copy))
    with pytest.raises(InputError, match=re.escape(str(path))):
        for _ in decode_batches(ndjson_files(path.parent)["Encounter"], "Encounter"):
            pass
    code, output = invoke("reconcile-target", str(copy), "--export", str(runs["gzip"] / "fhir" / "ndjson"))
    assert code == 3 and "Encounter.ndjson.gz" in output and "damaged gzip" in output, output


def test_a_file_cut_between_members_fails_invariant_2(runs: dict[str, Path], tmp_path: Path) -> None:
    """Cut exactly after a member the file is valid gzip, but resources lineage names are
    missing: invariant 2 and the round trip say so."""
    copy = Path(shutil.copytree(runs["gzip"], tmp_path / "cut"))
    path = copy / "fhir" / "ndjson" / "Encounter.ndjson.gz"
    data = path.read_bytes()
    ends = _member_ends(data)
    assert len(ends) > 1
    path.write_bytes(data[: ends[0]])
    _, invariant = fhir_output(RunFolder.open(copy))
    assert invariant["holds"] is False and invariant["lineage_resources_missing"] > 0
    assert check_roundtrip(copy, write=False)["holds"] is False


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(batches=st.lists(st.lists(st.tuples(st.text(alphabet=st.characters(codec="utf-8", exclude_categories=["Cs"]),
                                                   max_size=12), st.integers(-10**9, 10**9)), max_size=30), min_size=1, max_size=6))
def test_members_of_any_batches_read_back_as_the_plain_lines(tmp_path: Path, batches: list[list[tuple[str, int]]]
                                                             ) -> None:
    """Whatever the batches' sizes (empty ones too), the members concatenated read back by
    polars, Arrow and gzip as exactly the lines a plain writer writes."""
    files = {}
    for compression in ("none", "gzip"):
        writers = _Writers(tmp_path / compression, compression=compression)
        for batch in batches:
            lines = [json.dumps({"resourceType": "Basic", "id": f"b{i}", "text": t, "n": n}, ensure_ascii=False)
                     for i, (t, n) in enumerate(batch)]
            writers.lines("Basic", pl.Series("json", lines, dtype=pl.String))
        writers.close({})
        files[compression] = sorted((tmp_path / compression / "ndjson").glob("Basic.*"))
    total = sum(len(b) for b in batches)
    if total == 0:
        assert files == {"none": [], "gzip": []}
        return
    (plain,), (packed,) = files["none"], files["gzip"]
    assert packed.name == "Basic.ndjson.gz"
    assert gzip.decompress(packed.read_bytes()) == plain.read_bytes()
    schema = {"resourceType": pl.String, "id": pl.String, "text": pl.String, "n": pl.Int64}
    assert pl.read_ndjson(packed, schema=schema).equals(pl.read_ndjson(plain, schema=schema))
    assert pa_json.read_json(packed).equals(pa_json.read_json(plain))
    shutil.rmtree(tmp_path / "none"), shutil.rmtree(tmp_path / "gzip")
