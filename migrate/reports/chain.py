"""Manifest chaining and ``handover verify``: nothing in a run altered, and batches linked.

A run's ``manifest.json`` lists every output with its sha256 and carries a digest of its
own content (``migrate/manifest.py``). ``verify`` checks, and names what fails:

- *manifest*: it parses, has the documented shape (``check_manifest``), and its content
  still matches its digest — so the inputs' hashes, cut-over, options and counts are
  covered, not only the outputs; with ``key``, its HMAC seal matches too (*seal*);
- *incomplete*: every output a finished run writes is listed (a run killed before its
  reports were sealed is not a run);
- *changed*, *missing*, *extra*: each output re-hashed; files the manifest does not list;
- *chain*: a delta batch records the previous batch's ``batch`` digest
  (``previous_batch_digest``, beside the sha256 of its manifest file) and where that run
  was (``previous_run.path``, relative to this run when it can be). The previous manifest
  must still hash to that digest: editing an earlier batch breaks every later one, while
  re-rendering its reports (``handover report --declared``) does not, since the ``batch``
  digest leaves the report files out. With ``chain=True`` every earlier batch is
  verified in full as well, back to the first.

Hashing goes through ``hashlib.file_digest`` on a thread per core (hashlib releases the
GIL), measured at over 1 GB/s per core (benchmarks/reports.md).
"""

from __future__ import annotations

import hmac
import os
import time
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Group, RenderableType
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from migrate.errors import ConfigError, HandoverError, ReconciliationError
from migrate.manifest import (
    REQUIRED_OUTPUTS,
    check_manifest,
    content_digests,
    describe_outputs,
    seal_mac,
    sha256_file,
    with_digest,
)
from migrate.outputs import write_json
from migrate.reports.rundata import MANIFEST, RunFolder, read_json


def manifest_sha256(run_dir: Path) -> str:
    """sha256 of ``run_dir/manifest.json`` as it is on disk."""
    return sha256_file(run_dir / MANIFEST)


def record_previous(manifest: dict[str, Any], previous_run: Path, run_dir: Path) -> dict[str, Any]:
    """``manifest`` with ``previous_manifest_sha256``, ``previous_batch_digest`` and
    ``previous_run`` (path, run_id) set.

    The path is stored relative to ``run_dir`` when the two share a root (so a folder of
    batches can move as a whole), else absolute. ConfigError (exit 2) when
    ``previous_run`` has no manifest, or one whose content no longer matches its digest
    (a batch does not chain to an edited one).
    """
    if not (previous_run / MANIFEST).is_file():
        raise ConfigError(f"--previous {previous_run}: not a run folder (no {MANIFEST})")
    try:
        path = Path(os.path.relpath(previous_run.resolve(), run_dir.resolve())).as_posix()
    except ValueError:  # another drive (Windows): no relative path exists
        path = previous_run.resolve().as_posix()
    prev = read_json(previous_run / MANIFEST)
    problems = _content_problems(prev)
    if problems:
        raise ConfigError(f"--previous {previous_run}: its manifest does not verify; run handover verify on it",
                          problems)
    return manifest | {"previous_manifest_sha256": manifest_sha256(previous_run),
                       "previous_batch_digest": content_digests(prev)["batch"],
                       "previous_run": {"path": path, "run_id": prev.get("run_id")}}


def _check_key(manifest: dict[str, Any], key: bytes | None, where: Path) -> None:
    """A sealed run is re-sealed only by its key's holder: ConfigError otherwise."""
    seal = manifest.get("seal")
    if not seal:
        return
    if key is None:
        raise ConfigError(f"{where}: the run is sealed; give --key-file to re-render and re-seal it")
    if not hmac.compare_digest(str(seal.get("mac", "")), seal_mac(manifest, key)):
        raise ConfigError(f"{where}: the run's seal does not match this key (a different key, or the manifest "
                          "was edited); nothing was written")


def seal_outputs(run_dir: Path, paths: Iterable[Path], key: bytes | None = None,
                 updates: dict[str, Any] | None = None, replacing: str | None = None) -> bool:
    """Record (or refresh) ``paths`` in the manifest's outputs, apply ``updates`` (top-level
    keys, e.g. the ``config`` block naming a newly kept declaration) and recompute its
    digest (and seal, with ``key``); True when the manifest changed. ``replacing``: a
    folder prefix (``fhir/``) whose earlier entries ``paths`` replace whole.

    Reports are written after the manifest; sealing them keeps ``verify`` whole. A
    re-render that produces identical files leaves the manifest byte-identical. A sealed
    run needs its key (ConfigError otherwise).
    """
    manifest = read_json(run_dir / MANIFEST)
    _check_key(manifest, key, run_dir)
    fresh = {e["path"]: e for e in describe_outputs(run_dir, list(paths), {})}
    kept = [e for e in manifest.get("outputs", []) if e["path"] not in fresh
            and not (replacing and str(e["path"]).startswith(replacing))]
    outputs = sorted(kept + list(fresh.values()), key=lambda e: str(e["path"]))
    updated = with_digest(manifest | dict(updates or {}) | {"outputs": outputs}, key)
    if updated == manifest:
        return False
    write_json(updated, run_dir / MANIFEST)
    return True


def check_sealable(run_dir: Path, key: bytes | None) -> None:
    """ConfigError before anything is written when ``run_dir`` is sealed and ``key`` cannot re-seal it."""
    _check_key(read_json(run_dir / MANIFEST), key, run_dir)


@dataclass(frozen=True)
class Failure:
    """One verification failure: what (manifest, seal, incomplete, changed, missing, extra,
    chain) and where (a path relative to the run, or the run's folder for an earlier batch)."""

    kind: str
    path: str
    detail: str

    def __str__(self) -> str:
        return f"{self.kind}: {self.path} — {self.detail}"


@dataclass
class VerifyResult:
    """The outcome of ``verify``: failures (empty when the run is intact) and what was read."""

    run_dir: str
    failures: list[Failure] = field(default_factory=list)
    files_checked: int = 0
    bytes_hashed: int = 0
    seconds: float = 0.0
    chain: str = "no previous run recorded"
    seal: str = "not sealed"
    runs_checked: int = 1

    @property
    def ok(self) -> bool:
        return not self.failures

    def raise_on_failure(self) -> None:
        """``ReconciliationError`` (exit 1) naming every failure; nothing when the run is intact."""
        if self.failures:
            raise ReconciliationError(f"verification failed for {self.run_dir}: {len(self.failures)} failure(s)",
                                      [str(f) for f in self.failures])

    def asdict(self) -> dict[str, Any]:
        """Plain data for ``--json``."""
        return asdict(self) | {"ok": self.ok}

    def __rich__(self) -> RenderableType:
        rate = self.bytes_hashed / self.seconds / 1e6 if self.seconds else 0.0
        head = Text.from_markup(
            ("[green]Verified[/]" if self.ok else f"[bold red]Verification FAILED ({len(self.failures)})[/]")
            + escape(f": {self.runs_checked} run(s), {self.files_checked:,} files, {self.bytes_hashed / 1e6:,.1f} MB "
                     f"in {self.seconds:.2f} s ({rate:,.0f} MB/s); seal: {self.seal}; chain: {self.chain}"))
        if self.ok:
            return head
        table = Table(title="Failures", title_justify="left")
        for col in ("kind", "file", "detail"):
            table.add_column(col, overflow="fold")
        for f in self.failures:
            table.add_row(Text(f.kind), Text(f.path), Text(f.detail))
        return Group(head, table)


def _walk(run_dir: Path) -> set[str]:
    """Every file under ``run_dir`` as a POSIX path relative to it (hidden files included)."""
    found: set[str] = set()
    for root, _dirs, files in os.walk(run_dir):
        for name in files:
            found.add((Path(root) / name).relative_to(run_dir).as_posix())
    return found


def _content_problems(manifest: dict[str, Any]) -> list[str]:
    """Schema problems, else whether the content still matches its digest."""
    problems = check_manifest(manifest)
    if problems:
        return problems
    digest = manifest["digest"]
    found = content_digests(manifest)
    if found["manifest"] != digest["manifest"] or found["batch"] != digest["batch"]:
        edited = "the batch's own content (inputs, options, counts or outputs)" if found["batch"] != digest["batch"] \
            else "its report entries"
        return [f"content does not match its digest: {edited} edited after the run"]
    return []


def _previous_path(run_dir: Path, manifest: dict[str, Any], previous: Path | None) -> Path | None:
    recorded = manifest.get("previous_run") or {}
    if previous is None and recorded.get("path"):
        path = Path(str(recorded["path"]))
        previous = path if path.is_absolute() else run_dir / path
    return previous


def _check_chain(run_dir: Path, manifest: dict[str, Any], previous: Path | None) -> tuple[str, list[Failure]]:
    expected_file = manifest.get("previous_manifest_sha256")
    expected_batch = manifest.get("previous_batch_digest")
    if not expected_file and not expected_batch:
        return "no previous run recorded", []
    recorded = manifest.get("previous_run") or {}
    previous = _previous_path(run_dir, manifest, previous)
    if previous is None:
        return "broken", [Failure("chain", MANIFEST, "a previous batch is recorded but not where it is; give it "
                                                     "(--previous RUN)")]
    where = (previous / MANIFEST).as_posix()
    if not (previous / MANIFEST).is_file():
        return "broken", [Failure("chain", where, "previous run not found: its manifest is missing")]
    try:
        prev = read_json(previous / MANIFEST)
    except HandoverError as exc:
        return "broken", [Failure("chain", where, str(exc))]
    name = recorded.get("run_id") or previous.name
    if expected_batch:
        found = content_digests(prev)["batch"]
        if found != expected_batch:
            return "broken", [Failure("chain", where, f"the previous batch's manifest content digests to "
                                                      f"{found[:12]}…, this run recorded {str(expected_batch)[:12]}… "
                                                      "(edited after this run chained to it)")]
        rerendered = expected_file and manifest_sha256(previous) != expected_file
        return f"links to {name} (batch digest {found[:12]}…" + (
            "; its reports were re-rendered since)" if rerendered else ")"), []
    found = manifest_sha256(previous)
    if found != expected_file:
        return "broken", [Failure("chain", where, f"previous manifest hashes to {found[:12]}…, "
                                                  f"this run recorded {str(expected_file)[:12]}…")]
    return f"links to {name} (manifest sha256 {found[:12]}…)", []


def _verify_one(run_dir: Path, previous: Path | None, key: bytes | None, result: VerifyResult,
                prefix: str = "") -> dict[str, Any] | None:
    """Check one run into ``result`` (failures' paths prefixed for earlier batches); its manifest when readable."""
    def fail(kind: str, path: str, detail: str) -> None:
        result.failures.append(Failure(kind, f"{prefix}{path}", detail))

    try:
        manifest = read_json(run_dir / MANIFEST)
    except HandoverError as exc:
        fail("manifest", MANIFEST, str(exc))
        return None
    problems = check_manifest(manifest)
    for problem in problems:
        fail("manifest", MANIFEST, problem)
    if problems:
        return None
    for problem in _content_problems(manifest):
        fail("manifest", MANIFEST, problem)
    seal = manifest.get("seal")
    if key is not None:
        if not seal:
            fail("seal", MANIFEST, "the run is not sealed, so the key cannot vouch for it")
        elif not hmac.compare_digest(seal["mac"], seal_mac(manifest, key)):
            fail("seal", MANIFEST, "the seal does not match this key: the manifest was edited, or the key is another")
        elif not prefix:
            result.seal = "matches the key"
    elif seal and not prefix:
        result.seal = "sealed (give --key-file to check it)"
    listed = {e["path"]: e for e in manifest["outputs"]}
    for rel in REQUIRED_OUTPUTS:
        if rel not in listed:
            fail("incomplete", rel, "a finished run lists it; this run never recorded it (killed, or edited)")
    present = _walk(run_dir)
    for rel in sorted(set(listed) - present):
        fail("missing", rel, "listed in the manifest, not in the run folder")
    for rel in sorted(present - set(listed) - {MANIFEST}):
        fail("extra", rel, "in the run folder, not listed in the manifest")
    to_hash = sorted(set(listed) & present)
    with ThreadPoolExecutor(max_workers=max(1, min(len(to_hash), os.cpu_count() or 1))) as pool:
        digests = list(pool.map(lambda rel: sha256_file(run_dir / rel), to_hash))
    for rel, digest in zip(to_hash, digests, strict=True):
        if digest != listed[rel]["sha256"]:
            fail("changed", rel, f"sha256 {digest[:12]}…, manifest says {str(listed[rel]['sha256'])[:12]}…")
    result.files_checked += len(to_hash)
    result.bytes_hashed += sum((run_dir / rel).stat().st_size for rel in to_hash)
    chain, chain_failures = _check_chain(run_dir, manifest, previous)
    for f in chain_failures:
        fail(f.kind, f.path, f.detail)
    if not prefix:
        result.chain = chain
    return manifest


def verify(run_dir: Path, previous: Path | None = None, key: bytes | None = None, chain: bool = False) -> VerifyResult:
    """Check everything ``run_dir/manifest.json`` vouches for (module docstring).

    ``previous`` overrides where the previous run is (else ``previous_run.path``); ``key``
    checks the HMAC seal; ``chain`` verifies every earlier batch in full as well, failures
    named by their run folder. InputError (exit 3) when ``run_dir`` is not a run folder at
    all (``RunFolder.open``); past that, every problem is a Failure, never an exception.
    """
    started = time.perf_counter()
    result = VerifyResult(run_dir=str(run_dir))
    # Not a run folder at all (no folder, no manifest, not a manifest readers can use): exit 3,
    # not a verdict. Everything past that is a failure of this verification (exit 1).
    RunFolder.open(run_dir, check_tables=False)
    manifest = _verify_one(run_dir, previous, key, result)
    seen = {run_dir.resolve()}
    here = run_dir
    while chain and manifest is not None:
        earlier = _previous_path(here, manifest, previous if here == run_dir else None)
        if earlier is None or not (earlier / MANIFEST).is_file():
            break  # a missing previous run is already a chain failure
        if earlier.resolve() in seen:
            result.failures.append(Failure("chain", earlier.as_posix(), "the chain loops back to a run already "
                                                                        "checked"))
            break
        seen.add(earlier.resolve())
        result.runs_checked += 1
        manifest = _verify_one(earlier, None, None, result, prefix=f"{earlier.as_posix()}/")
        here = earlier
    if chain and result.runs_checked > 1:
        result.chain += f"; {result.runs_checked - 1} earlier batch(es) verified"
    result.failures.sort(key=lambda f: (f.kind, f.path))
    result.seconds = time.perf_counter() - started
    return result
