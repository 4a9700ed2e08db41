"""Manifest chaining and ``handover verify``: nothing in a run altered, and batches linked.

A run's ``manifest.json`` lists every output with its sha256. ``verify`` re-hashes them
and reports each changed or missing file, and each extra file (anything in the run folder
the manifest does not list, except ``manifest.json`` itself). A delta batch records the
sha256 of the previous batch's manifest (``previous_manifest_sha256``) and where that run
was (``previous_run.path``, relative to this run when it can be); ``verify`` locates the
previous run there (or where the caller says) and checks that its manifest still hashes
to the recorded value, so editing an earlier batch breaks every later one.

Hashing goes through ``hashlib.file_digest`` on a thread per core (hashlib releases the
GIL), measured at over 1 GB/s per core (benchmarks/reports.md).
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from migrate.errors import ConfigError, ReconciliationError
from migrate.manifest import describe_outputs, sha256_file
from migrate.outputs import write_json
from migrate.reports.rundata import MANIFEST, RunFolder, read_json


def manifest_sha256(run_dir: Path) -> str:
    """sha256 of ``run_dir/manifest.json`` as it is on disk (what a later batch records)."""
    return sha256_file(run_dir / MANIFEST)


def record_previous(manifest: dict[str, Any], previous_run: Path, run_dir: Path) -> dict[str, Any]:
    """``manifest`` with ``previous_manifest_sha256`` and ``previous_run`` (path, run_id) set.

    The path is stored relative to ``run_dir`` when the two share a root (so a folder of
    batches can move as a whole), else absolute. ConfigError (exit 2) when
    ``previous_run`` has no manifest.
    """
    if not (previous_run / MANIFEST).is_file():
        raise ConfigError(f"--previous {previous_run}: not a run folder (no {MANIFEST})")
    try:
        path = Path(os.path.relpath(previous_run.resolve(), run_dir.resolve())).as_posix()
    except ValueError:  # another drive (Windows): no relative path exists
        path = previous_run.resolve().as_posix()
    prev = read_json(previous_run / MANIFEST)
    return manifest | {"previous_manifest_sha256": manifest_sha256(previous_run),
                       "previous_run": {"path": path, "run_id": prev.get("run_id")}}


def seal_outputs(run_dir: Path, paths: Iterable[Path]) -> bool:
    """Record (or refresh) ``paths`` in the manifest's outputs; True when the manifest changed.

    Reports are written after the manifest; sealing them keeps ``verify`` whole. A
    re-render that produces identical files leaves the manifest byte-identical.
    """
    manifest = read_json(run_dir / MANIFEST)
    fresh = {e["path"]: e for e in describe_outputs(run_dir, list(paths), {})}
    kept = [e for e in manifest.get("outputs", []) if e["path"] not in fresh]
    outputs = sorted(kept + list(fresh.values()), key=lambda e: str(e["path"]))
    if outputs == manifest.get("outputs"):
        return False
    write_json(manifest | {"outputs": outputs}, run_dir / MANIFEST)
    return True


@dataclass(frozen=True)
class Failure:
    """One verification failure: what (changed, missing, extra, chain, manifest) and where."""

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
            + f": {self.files_checked:,} files, {self.bytes_hashed / 1e6:,.1f} MB in {self.seconds:.2f} s "
            f"({rate:,.0f} MB/s); chain: {self.chain}")
        if self.ok:
            return head
        table = Table(title="Failures", title_justify="left")
        for col in ("kind", "file", "detail"):
            table.add_column(col, overflow="fold")
        for f in self.failures:
            table.add_row(f.kind, f.path, f.detail)
        return Group(head, table)


def _walk(run_dir: Path) -> set[str]:
    """Every file under ``run_dir`` as a POSIX path relative to it (hidden files included)."""
    found: set[str] = set()
    for root, _dirs, files in os.walk(run_dir):
        for name in files:
            found.add((Path(root) / name).relative_to(run_dir).as_posix())
    return found


def _check_chain(run_dir: Path, manifest: dict[str, Any], previous: Path | None) -> tuple[str, list[Failure]]:
    expected = manifest.get("previous_manifest_sha256")
    if not expected:
        return "no previous run recorded", []
    recorded = manifest.get("previous_run") or {}
    if previous is None and recorded.get("path"):
        path = Path(str(recorded["path"]))
        previous = path if path.is_absolute() else run_dir / path
    if previous is None:
        return "broken", [Failure("chain", MANIFEST, "previous_manifest_sha256 is recorded but not where the "
                                                     "previous run is; give it (--previous RUN)")]
    where = (previous / MANIFEST).as_posix()
    if not (previous / MANIFEST).is_file():
        return "broken", [Failure("chain", where, "previous run not found: its manifest is missing")]
    found = manifest_sha256(previous)
    if found != expected:
        return "broken", [Failure("chain", where, f"previous manifest hashes to {found[:12]}…, "
                                                  f"this run recorded {str(expected)[:12]}…")]
    return f"links to {recorded.get('run_id') or previous.name} (manifest sha256 {found[:12]}…)", []


def verify(run_dir: Path, previous: Path | None = None) -> VerifyResult:
    """Re-hash every output in ``run_dir/manifest.json`` and check the chain to the previous run.

    Failures name the file: changed (hash differs), missing, extra (not in the manifest),
    chain (previous run missing or its manifest altered). The previous run is
    ``previous`` when given, else ``previous_run.path`` of the manifest. A folder that is
    not a run (no folder, no manifest, a manifest that is not one) is an InputError (exit
    3): there is nothing to verify against.
    """
    started = time.perf_counter()
    result = VerifyResult(run_dir=str(run_dir))
    # Not a run folder at all (no folder, no manifest, not a manifest): exit 3, not a verdict.
    manifest = RunFolder.open(run_dir, check_tables=False).manifest
    listed = {str(e["path"]): e for e in manifest.get("outputs", [])}
    present = _walk(run_dir)
    for rel in sorted(set(listed) - present):
        result.failures.append(Failure("missing", rel, "listed in the manifest, not in the run folder"))
    for rel in sorted(present - set(listed) - {MANIFEST}):
        result.failures.append(Failure("extra", rel, "in the run folder, not listed in the manifest"))
    to_hash = sorted(set(listed) & present)
    with ThreadPoolExecutor(max_workers=max(1, min(len(to_hash), os.cpu_count() or 1))) as pool:
        digests = list(pool.map(lambda rel: sha256_file(run_dir / rel), to_hash))
    for rel, digest in zip(to_hash, digests, strict=True):
        if digest != listed[rel].get("sha256"):
            result.failures.append(Failure("changed", rel, f"sha256 {digest[:12]}…, manifest says "
                                                           f"{str(listed[rel].get('sha256'))[:12]}…"))
    result.files_checked = len(to_hash)
    result.bytes_hashed = sum((run_dir / rel).stat().st_size for rel in to_hash)
    result.chain, chain_failures = _check_chain(run_dir, manifest, previous)
    result.failures += chain_failures
    result.failures.sort(key=lambda f: (f.kind, f.path))
    result.seconds = time.perf_counter() - started
    return result
