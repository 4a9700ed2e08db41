"""The run manifest: what went in, what came out, and their hashes.

``manifest.json`` lets an audit panel check that no output was altered after the run
(``handover verify``) and chains batches. Everything in it is deterministic except
``started`` and ``finished``.

Its own content is covered too. ``digest`` holds two sha256 of its canonical JSON (sorted
keys, no whitespace, without ``digest`` and ``seal``): ``manifest`` over all of it, and
``batch`` over all but what re-rendering its reports may change (``handover report
--declared``): the outputs under ``reports/``, the kept declaration ``config/declared.json``
and its entry in the ``config`` block — so ``batch`` is what the batch itself computed. ``verify`` recomputes both, so an edit to
the inputs' hashes, the cut-over, the options or the counts shows; the next batch records
the previous one's ``batch`` digest (``previous_batch_digest``), so an edit that also
rewrites the digest shows there. Against an editor careful enough to do both, a run can
be sealed with the user's key: ``seal.mac`` is HMAC-SHA256(key, "handover-seal" NUL +
the canonical JSON), which only the key's holder can recompute.

``check_manifest`` validates the structure (``ManifestSchema``: pydantic over the writer's
own type, ``migrate.summary.SealedManifest``) and lists every problem with its path, so a
malformed entry is a failure, never a traceback.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, TypeAdapter, ValidationError

from migrate.summary import ISO_DATE, OutputRecord, SealedManifest

SEAL_ALGORITHM = "HMAC-SHA256"
_SEAL_CONTEXT = b"handover-seal\0"
REPORTS_PREFIX = "reports/"
# The declaration a re-render may keep (``migrate.frozen`` writes it there).
DECLARED = "config/declared.json"
# What a complete run lists (FHIR output is optional: --no-fhir).
REQUIRED_OUTPUTS = (
    "canonical/patients.parquet", "canonical/referrals.parquet", "canonical/contacts.parquet",
    "canonical/codes.parquet", "quarantine.parquet", "lineage.parquet", "cohorts.parquet", "patients.parquet",
    "exceptions.parquet", "duplicates.parquet", "reports/reconciliation.json", "reports/reconciliation.html",
    "reports/exceptions.xlsx", "reports/exceptions.csv",
)


class _Strict(BaseModel):
    model_config = ConfigDict(strict=True, extra="allow")


class _Entry(_Strict):
    path: str
    sha256: str


class _Listed(_Entry):
    table: str
    rows: int


class Readable(_Strict):
    """What every reader of a run relies on (``RunFolder.open``): without it the folder is
    not a run at all (exit 3). ``ManifestSchema`` is the full shape ``verify`` checks."""

    run_id: str
    cutover_date: ISO_DATE
    mapping: list[Any]
    rules: dict[str, Any]
    options: dict[str, Any]
    inputs: list[_Listed]
    outputs: list[_Entry]


# The full shape ``verify`` checks: the writer's own type (``migrate.summary``), so the two
# cannot drift.
ManifestSchema: TypeAdapter[SealedManifest] = TypeAdapter(SealedManifest)


def check_manifest(data: Any, schema: TypeAdapter[Any] | type[BaseModel] = ManifestSchema) -> list[str]:
    """Every structural problem of a parsed manifest against ``schema`` (the full
    ``ManifestSchema``, or ``Readable``), as ``path: what`` (empty when sound)."""
    try:
        if isinstance(schema, TypeAdapter):
            schema.validate_python(data)
        else:
            schema.model_validate(data)
    except ValidationError as exc:
        return [f"{'.'.join(str(p) for p in e['loc']) or '(top)'}: {e['msg']}" for e in exc.errors()]
    return []


def _canonical(data: Any) -> bytes:
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str).encode("utf-8")


def _body(manifest: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in manifest.items() if k not in ("digest", "seal")}


def content_digests(manifest: dict[str, Any]) -> dict[str, str]:
    """The ``digest`` block of ``manifest`` as its content stands (see the module docstring)."""
    body = _body(manifest)
    batch = dict(body)
    outputs = body.get("outputs")
    if isinstance(outputs, list):
        batch["outputs"] = [e for e in outputs if not (isinstance(e, dict) and (
            str(e.get("path", "")).startswith(REPORTS_PREFIX) or e.get("path") == DECLARED))]
    config = body.get("config")
    if isinstance(config, dict):
        batch["config"] = {k: v for k, v in config.items() if k != "declared"}
    return {"algorithm": "sha256", "manifest": hashlib.sha256(_canonical(body)).hexdigest(),
            "batch": hashlib.sha256(_canonical(batch)).hexdigest()}


def seal_mac(manifest: dict[str, Any], key: bytes) -> str:
    """HMAC-SHA256 of the manifest's content under ``key`` (domain-separated from other uses)."""
    return hmac.new(key, _SEAL_CONTEXT + _canonical(_body(manifest)), hashlib.sha256).hexdigest()


def with_digest(manifest: dict[str, Any], key: bytes | None = None) -> dict[str, Any]:
    """``manifest`` with its ``digest`` (re)computed, and ``seal`` when a key is given."""
    body = _body(manifest)
    sealed = body | {"digest": content_digests(body)}
    if key is not None:
        sealed["seal"] = {"algorithm": SEAL_ALGORITHM, "mac": seal_mac(body, key)}
    return sealed


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file: ``hashlib.file_digest`` reads into one buffer in C (no Python
    loop per chunk); measured faster than a Python loop over 1-16 MiB reads."""
    with path.open("rb", buffering=0) as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


def run_id(parts: Iterable[str]) -> str:
    """A run id that depends only on the run's inputs and options (same batch → same id)."""
    h = hashlib.sha256()
    for part in parts:
        h.update(part.encode("utf-8"))
        h.update(b"\0")
    return h.hexdigest()[:16]


def describe_outputs(run_dir: Path, paths: Iterable[Path], rows: dict[str, int]) -> list[OutputRecord]:
    """Path (relative to the run), bytes, sha256 and row count of each output file."""
    out = []
    for p in sorted(paths):
        rel = p.relative_to(run_dir).as_posix()
        entry: OutputRecord = {"path": rel, "bytes": p.stat().st_size, "sha256": sha256_file(p)}
        if rel in rows:
            entry["rows"] = rows[rel]
        out.append(entry)
    return out
