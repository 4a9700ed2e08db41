"""Writing a batch's run folder: its tables and its manifest (docs/architecture.md).

The canonical tables are written by ingest as each becomes final; ``write_tables``
writes the rest (quarantine, lineage, cohorts, patients, exceptions, duplicates) and
remembers every path and row count for the manifest. ``build_manifest`` records what
went in, what came out, the invariant's counts and what only the pipeline knows
(``stages``: identity's headline numbers, the FHIR writer's statistics) and the frozen
configuration (``config``, see ``migrate.frozen``), so every later command reads those
facts from the folder instead of recomputing them differently.

The folder's lifecycle: a run owns its folder alone, replaces it whole, and never
leaves a folder that looks finished when it is not.

    with stage(out) as staging:        # lock out, check it, make a temporary sibling
        ...                            # every output written under staging.path
        staging.publish()              # renamed into place (a previous run replaced whole)

- ``out`` must be absent, an empty folder, or a handover run folder (a ``manifest.json``
  written by handover, and nothing but what a run writes): anything else is refused
  (``ConfigError``, exit 2) — a run never deletes or seals files it did not write.
- A lock (``.<name>.lock`` beside ``out``, ``flock``) stops a second run into the same
  folder: ``InputError`` (exit 3), "run folder in use".
- The run writes into a hidden sibling (``.<name>.partial-*``) and renames it to ``out``
  only when it is complete, so a run that is killed leaves ``out`` as it was (the previous
  run, or nothing) and nothing ``handover verify`` accepts; the next run into ``out``
  removes the leftovers. Nothing of an earlier run survives into a new one.

Renames stay within ``out``'s parent folder (one filesystem), where ``os.rename`` is atomic.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import polars as pl

from migrate import __version__
from migrate.errors import ConfigError, InputError
from migrate.manifest import describe_outputs, sha256_file
from migrate.outputs import write_parquet
from migrate.staging import sink_parts
from migrate.summary import FrozenConfig, InputRecord, Manifest, Profile, RowsInvariant, RulesRecord, RunOptions, Stages, TargetIndexRecord


@dataclass
class Written:
    """Files of the run folder written so far, with row counts of the tables."""

    paths: list[Path] = field(default_factory=list)
    rows: dict[str, int] = field(default_factory=dict)

    def table(self, out: Path, rel: str, frame: pl.DataFrame | pl.LazyFrame, work: Path) -> None:
        """Write ``frame`` as ``out/rel`` (Parquet, atomically) and record it.

        A scan or plan (the rules' outputs staged in ``work``, the sharing entries) is
        streamed (``staging.sink_parts``: the bytes of its rows alone), a frame in memory
        written as it is (``write_parquet``).
        """
        # memory: a scan is never collected: one batch of rows at a time (``sink_parts``); it was
        # read whole to be written — the cohorts, a row per referral, ~1.3 GB at 5M patients.
        if isinstance(frame, pl.LazyFrame):
            self.paths.append(out / rel)
            self.rows[rel] = sink_parts(frame, out / rel, work / "write" / rel)
        else:
            self.paths.append(write_parquet(frame, out / rel))
            self.rows[rel] = frame.height

    def existing(self, out: Path, rel: str, rows: int) -> None:
        """Record a file another stage wrote (the canonical tables, written by ingest)."""
        self.paths.append(out / rel)
        self.rows[rel] = rows


def write_tables(out: Path, existing: Mapping[str, int],
                 tables: Mapping[str, pl.DataFrame | pl.LazyFrame], work: Path) -> Written:
    """Record the tables other stages wrote (``existing``: {relative path: rows}; the canonical
    tables ingest wrote, the lineage streamed to disk) and write ``tables`` ({relative path: frame};
    ``work``: a scratch folder for the scans streamed, see ``Written.table``)."""
    written = Written()
    for rel, rows in existing.items():
        written.existing(out, rel, rows)
    for rel, frame in tables.items():
        written.table(out, rel, frame, work)
    return written


def run_files(out: Path) -> list[Path]:
    """Every file of the run folder but the manifest itself (and no hidden work files)."""
    return [p for p in out.rglob("*") if p.is_file() and p.name != "manifest.json"
            and not any(part.startswith(".") for part in p.relative_to(out).parts)]


@dataclass(frozen=True)
class RunRecord:
    """What the manifest says about the run's configuration (from ``RunConfig``)."""

    run_id: str
    cutover: str
    mapping: list[Profile]
    rules: RulesRecord
    options: RunOptions
    identity_sha256: str


def target_record(path: Path | None, mapping: str | None) -> TargetIndexRecord | None:
    """Name and sha256 of the target index and the profile that read it, or None."""
    return None if path is None else {"path": path.name, "sha256": sha256_file(path), "mapping": mapping}


def build_manifest(out: Path, record: RunRecord, started: datetime, finished: datetime,
                   inputs: Sequence[InputRecord], rows: Mapping[str, int], invariant: RowsInvariant,
                   quarantined: int, stages: Stages, config: FrozenConfig, identity_model: dict[str, Any]) -> Manifest:
    """The manifest of a finished batch (before reports are sealed into it)."""
    return {
        "run_id": record.run_id,
        "tool": {"name": "handover", "version": __version__},
        "started": started.isoformat(timespec="seconds"),
        "finished": finished.isoformat(timespec="seconds"),
        "cutover_date": record.cutover,
        "mapping": record.mapping,
        "rules": record.rules,
        "options": record.options,
        "identity_rules": {"sha256": record.identity_sha256},
        "identity_model": identity_model,
        "inputs": sorted(inputs, key=lambda i: i["path"]),
        "outputs": describe_outputs(out, run_files(out), dict(rows)),
        "counts": {"rows_read": invariant["rows_read"], "dispositions": invariant["dispositions"],
                   "quarantined": quarantined},
        "stages": stages,
        "config": config,
        "previous_manifest_sha256": None,
    }


MANIFEST = "manifest.json"
# What a run writes: a previous run folder holding anything else is not replaced.
RUN_DIRS = ("canonical", "config", "fhir", "reports", "load")
_PARTIAL = "partial"
_OLD = "old"


def _sibling(out: Path, kind: str) -> str:
    return f".{out.name}.{kind}"


def lock_path(out: Path) -> Path:
    """The lock file of run folder ``out`` (beside it, so it outlives the folder's rename)."""
    return out.parent / f"{_sibling(out, 'lock')}"


@contextlib.contextmanager
def locked(out: Path) -> Iterator[None]:
    """Hold the lock of run folder ``out``; InputError (exit 3) when another run holds it."""
    out = Path(os.path.abspath(out))
    out.parent.mkdir(parents=True, exist_ok=True)
    path = lock_path(out)
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise InputError(f"run folder in use: {out} (another handover run holds {path.name})") from None
        # The lock file may have been removed (and replaced) by the run that held it between
        # our open and our lock: then we hold a lock nobody else sees; take the new file's.
        try:
            same = os.fstat(fd).st_ino == os.stat(path).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)
    try:
        yield
    finally:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        os.close(fd)


def is_run_folder(path: Path) -> bool:
    """Whether ``path`` holds a manifest written by handover."""
    try:
        manifest = json.loads((path / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(manifest, dict) and isinstance(manifest.get("tool"), dict) and \
        manifest["tool"].get("name") == "handover"


def _foreign_files(path: Path) -> list[str]:
    """Files of a run folder that no run writes (neither listed in its manifest, nor under
    a folder a run owns, nor a Parquet table at its top)."""
    manifest = json.loads((path / MANIFEST).read_text(encoding="utf-8"))
    listed = {str(e.get("path")) for e in manifest.get("outputs", []) if isinstance(e, dict)}
    foreign = []
    for p in sorted(path.rglob("*")):
        rel = p.relative_to(path)
        if not p.is_file() or rel.as_posix() in listed or rel.as_posix() == MANIFEST:
            continue
        if rel.parts[0] in RUN_DIRS or (len(rel.parts) == 1 and rel.suffix == ".parquet"):
            continue
        foreign.append(rel.as_posix())
    return foreign


def check_target(out: Path) -> None:
    """ConfigError (exit 2) unless ``out`` is absent, an empty folder, or a handover run
    folder that holds only what a run writes (it is then replaced whole)."""
    if not out.exists():
        return
    if not out.is_dir():
        raise ConfigError(f"--out {out}: is a file, not a folder")
    if not any(out.iterdir()):
        return
    if not is_run_folder(out):
        raise ConfigError(f"--out {out}: the folder is not empty and is not a handover run folder (no handover "
                          "manifest.json); give a new or empty folder — a run never deletes files it did not write")
    foreign = _foreign_files(out)
    if foreign:
        shown = ", ".join(foreign[:5]) + (f" and {len(foreign) - 5} more" if len(foreign) > 5 else "")
        raise ConfigError(f"--out {out}: the previous run folder holds files no run wrote ({shown}); move them "
                          "out, or give another folder — the run replaces the folder whole")


def _sweep(out: Path) -> None:
    """Remove what killed runs left beside ``out`` (called under the lock)."""
    for kind in (_PARTIAL, _OLD):
        for leftover in out.parent.glob(f"{_sibling(out, kind)}-*"):
            shutil.rmtree(leftover, ignore_errors=True)


@dataclass
class Staging:
    """A run being written: ``path`` (the hidden sibling) becomes ``target`` on ``publish``."""

    path: Path
    target: Path
    published: bool = field(default=False)

    def publish(self) -> None:
        """Rename the finished run into place; a previous run at ``target`` is replaced whole."""
        if self.target.exists():
            old = Path(tempfile.mkdtemp(prefix=f"{_sibling(self.target, _OLD)}-", dir=self.target.parent))
            os.rename(self.target, old / "run")
            os.rename(self.path, self.target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.rename(self.path, self.target)
        self.published = True

    def final(self, path: Path) -> Path:
        """Where ``path`` (under the staging folder) is once published."""
        return self.target / path.relative_to(self.path)


@contextlib.contextmanager
def stage(out: Path) -> Iterator[Staging]:
    """Lock ``out``, check it may be written, and yield a fresh staging folder beside it.

    The caller writes the whole run under ``Staging.path`` and calls ``publish``; if it
    raises first, the staging folder is removed and ``out`` is left as it was.
    """
    out = Path(os.path.abspath(out))
    with locked(out):
        check_target(out)
        _sweep(out)
        staging = Staging(Path(tempfile.mkdtemp(prefix=f"{_sibling(out, _PARTIAL)}-", dir=out.parent)), out)
        try:
            yield staging
        finally:
            if not staging.published:
                shutil.rmtree(staging.path, ignore_errors=True)
