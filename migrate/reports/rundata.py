"""The run folder as the reports see it: its manifest and lazy scans of its tables.

Reports are computed from a finished run folder alone (never from the input extract), so
``handover report RUN`` re-renders them byte for byte and an audit panel can recompute
every figure from the files the manifest lists. ``RunFolder`` is the one place that knows
the folder's layout (docs/architecture.md, "Run directory").
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from migrate.errors import HandoverError, InputError
from migrate.manifest import Readable
from migrate.manifest import check_manifest as manifest_problems

MANIFEST = "manifest.json"
CANONICAL_TABLES = ("patients", "referrals", "contacts", "codes")
# Columns every canonical row carries for tracing; never part of a row's content.
TRACE_COLUMNS = ("source_file", "source_row")


def read_json(path: Path) -> dict[str, Any]:
    """A JSON object from ``path``; InputError (exit 3) naming the file when unreadable."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError(f"{path}: not found") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(f"{path}: not readable as JSON ({exc.__class__.__name__})") from None
    if not isinstance(data, dict):
        raise InputError(f"{path}: expected a JSON object")
    return data


def check_manifest(data: dict[str, Any], where: Path) -> None:
    """InputError (exit 3), every problem in one line, unless ``data`` has the keys and
    types the readers of a run rely on (``migrate.manifest.Readable``: run id, cut-over,
    profiles, pack, options, inputs with path, table, rows and sha256, outputs with path
    and sha256)."""
    problems = manifest_problems(data, Readable)
    if problems:
        raise InputError(f"{where}: not a handover run manifest: {'; '.join(problems[:10])}")


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0][:200]}" if text else type(exc).__name__


@contextmanager
def reading(path: Path) -> Iterator[None]:
    """Errors met while reading the run folder ``path`` (a table polars or Arrow cannot
    decode, a file that cannot be read) become one InputError (exit 3) naming the folder."""
    try:
        yield
    except HandoverError:
        raise
    except (pl.exceptions.PolarsError, pa.ArrowException, OSError, UnicodeDecodeError,
            json.JSONDecodeError) as exc:
        raise InputError(f"{path}: corrupt run folder ({_first_line(exc)})") from None


@dataclass(frozen=True)
class RunFolder:
    """A finished run: ``path`` and its parsed ``manifest.json``."""

    path: Path
    manifest: dict[str, Any]

    @classmethod
    def open(cls, path: Path, check_tables: bool = True) -> RunFolder:
        """Open ``path`` as a run folder. InputError (exit 3), in one line, when it is not
        one: no folder, no manifest, a manifest that is not JSON or lacks what readers rely
        on, and (``check_tables``) a Parquet file it lists whose footer cannot be read (a
        truncated or overwritten table; a missing one fails when a reader needs it). ``verify`` opens without the
        table check: a changed table is its verification failure, not an unreadable run."""
        if not path.is_dir():
            raise InputError(f"{path}: run folder not found")
        if not (path / MANIFEST).is_file():
            raise InputError(f"{path}: not a run folder (no {MANIFEST})")
        manifest = read_json(path / MANIFEST)
        check_manifest(manifest, path / MANIFEST)
        folder = cls(path, manifest)
        if check_tables:
            for entry in manifest["outputs"]:
                rel = str(entry["path"])
                if rel.endswith(".parquet") and folder.has(rel):  # a missing one: when a reader needs it
                    folder.check_table(rel)
        return folder

    def check_table(self, rel: str) -> None:
        """InputError unless the footer (schema, row groups) of Parquet file ``rel`` reads."""
        try:
            pq.read_metadata(self.path / rel)
        except (pa.ArrowException, OSError) as exc:
            raise InputError(f"{self.path}: corrupt run folder: {rel} is not readable Parquet "
                             f"({_first_line(exc)})") from None

    @property
    def run_id(self) -> str:
        return str(self.manifest.get("run_id", ""))

    @property
    def cutover(self) -> date:
        return date.fromisoformat(str(self.manifest["cutover_date"]))

    def has(self, rel: str) -> bool:
        """Whether the run holds file ``rel`` (a path relative to the run folder)."""
        return (self.path / rel).is_file()

    def scan(self, rel: str) -> pl.LazyFrame:
        """A lazy scan of Parquet file ``rel``; InputError naming it when it is missing."""
        if not self.has(rel):
            raise InputError(f"{self.path / rel}: missing from the run folder")
        return pl.scan_parquet(self.path / rel)

    def canonical(self, table: str) -> pl.LazyFrame:
        """Canonical table ``table`` (patients, referrals, contacts or codes)."""
        return self.scan(f"canonical/{table}.parquet")

    def height(self, rel: str) -> int:
        """Rows of Parquet file ``rel``, from its metadata where polars can."""
        # memory: a count
        return int(self.scan(rel).select(pl.len()).collect().item())

    def fhir_ndjson(self) -> list[Path]:
        """``fhir/ndjson/*.ndjson`` (or ``*.ndjson.gz``, ``--fhir-compression gzip``) files in
        name order (empty when the run has no FHIR output)."""
        from migrate.fhir.ndjson import ndjson_paths

        return ndjson_paths(self.path / "fhir" / "ndjson")

    def inputs(self) -> list[dict[str, Any]]:
        """The manifest's input files: path, table, bytes, sha256, rows (read)."""
        return [dict(entry) for entry in self.manifest.get("inputs", [])]

    def previous_path(self) -> Path | None:
        """Where the manifest says the previous run is (``previous_run.path``), if it says."""
        previous = self.manifest.get("previous_run")
        if not isinstance(previous, dict) or not previous.get("path"):
            return None
        path = Path(str(previous["path"]))
        return path if path.is_absolute() else (self.path / path)
