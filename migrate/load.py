"""``handover load``: send a run's transaction bundles to a FHIR server, resumably.

    result = load_run(run_dir, LoadOptions(fhir_base="https://…/fhir", token=…, concurrency=4))

A run made with ``--fhir-form ndjson`` has no bundle: it is refused (exit 3, before any
request) naming ``handover fhir RUN --fhir-form both``, which writes them.

Each ``fhir/bundles/bundle-NNNNN.json`` is POSTed to the server's base as a FHIR
transaction. Bundles start in file order; with ``concurrency`` > 1 several are in flight,
but a bundle that references a resource created by an earlier bundle (an Organization
goes in the first bundle that needs it) waits until that bundle is confirmed, so a server
that checks references never sees one dangling.

Retries: a 429, a 5xx, a timeout or a dropped connection is retried with exponential
backoff (``Retry-After`` honoured), up to ``max_attempts``; another 4xx fails the bundle
at once (401/403 stop the whole load: the token is wrong). Every entry is ``PUT
Type/id`` with a UUIDv5 id, so a retried or re-sent bundle updates the same resources:
loading twice creates nothing new.

Resume: the outcome of every bundle is appended to ``load/state.jsonl`` in the run folder
(bundle, its sha256, HTTP status, entries and their response statuses, attempts), flushed
and fsynced, as soon as the server answers. A later ``handover load`` skips bundles whose
name and sha256 are recorded as loaded, and sends the rest (a bundle re-emitted since,
with another sha256, is sent again). When a load finishes — completely or not — the state
file is recorded in the manifest (``verify`` covers it); while a load is interrupted it is
an extra file ``verify`` reports.

httpx is the HTTP client (timeouts, connection pooling, HTTP/1.1 keep-alive, thread-safe
clients); the retry policy is here because it is the part a migration must prove.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import re
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, Any

import httpx

from migrate.errors import ConfigError, InputError, ReconciliationError
from migrate.progress import NULL_PROGRESS, Progress
from migrate.summary import recorded_fhir_form

STATE = "load/state.jsonl"
RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
FATAL_STATUSES = frozenset({401, 403})
_DEFINED = re.compile(rb'"request":\{"method":"PUT","url":"([A-Za-z]+/[A-Za-z0-9\-.]+)"')
_REFERENCED = re.compile(rb'"reference":"([A-Za-z]+/[A-Za-z0-9\-.]+)"')


@dataclass(frozen=True)
class LoadOptions:
    """Where and how to send: the server's FHIR base URL, a bearer token, parallelism,
    retry policy (attempts, backoff base and cap in seconds) and the per-request timeout."""

    fhir_base: str
    token: str | None = None
    concurrency: int = 4
    max_attempts: int = 8
    backoff: float = 0.5
    backoff_max: float = 30.0
    timeout: float = 300.0
    seal_key: bytes | None = field(default=None, repr=False)  # a sealed run's key: state.jsonl is re-sealed

    def __post_init__(self) -> None:
        problems = []
        if not re.match(r"^https?://[^/\s]+", self.fhir_base):
            problems.append(f"--fhir-base {self.fhir_base!r} is not an http(s) URL")
        if self.concurrency < 1:
            problems.append(f"--concurrency must be at least 1, not {self.concurrency}")
        if self.max_attempts < 1:
            problems.append("max_attempts must be at least 1")
        if problems:
            raise ConfigError("invalid load options", problems)


def read_token(path: Path | None) -> str | None:
    """The bearer token in ``path`` (whitespace stripped); exit 2 when unreadable or empty."""
    if path is None:
        return None
    try:
        token = path.read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise ConfigError(f"--token-file {path}: cannot be read ({exc.__class__.__name__})") from None
    if not token:
        raise ConfigError(f"--token-file {path}: is empty")
    return token


@dataclass
class Outcome:
    """What happened to one bundle."""

    bundle: str
    sha256: str
    ok: bool
    http_status: int | None
    entries: int
    entry_statuses: dict[str, int] = field(default_factory=dict)
    attempts: int = 0
    error: str | None = None


@dataclass
class LoadResult:
    """Bundles and resources sent, skipped (already loaded), failed, and retries made."""

    fhir_base: str
    bundles: int = 0
    sent: int = 0
    skipped: int = 0
    failed: int = 0
    retried: int = 0
    resources_sent: int = 0
    resources_failed: int = 0
    seconds: float = 0.0
    failures: list[dict[str, Any]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.failed == 0

    def asdict(self) -> dict[str, Any]:
        rate = self.resources_sent / self.seconds if self.seconds else 0.0
        return asdict(self) | {"ok": self.ok, "resources_per_second": round(rate, 1)}


def bundle_files(run_dir: Path) -> list[Path]:
    """The run's transaction bundles in order; InputError (exit 3) when it has none — a run
    made with ``--fhir-form ndjson`` named as such, with the command that writes them —
    before anything is sent."""
    folder = run_dir / "fhir" / "bundles"
    files = sorted(folder.glob("bundle-*.json")) if folder.is_dir() else []
    manifest = run_dir / "manifest.json"
    if not manifest.is_file():
        raise InputError(f"{run_dir}: not a run folder (no manifest.json)")
    try:
        options = json.loads(manifest.read_text(encoding="utf-8")).get("options")
    except (OSError, ValueError, AttributeError):
        options = None  # an unreadable manifest: the checks below (and handover verify) say what is wrong
    if recorded_fhir_form(options) == "ndjson":
        raise InputError(f"{run_dir}: its FHIR output is NDJSON only (--fhir-form ndjson): no transaction bundles "
                         f"to load", [f"write them first: handover fhir {run_dir} --fhir-form both "
                                      "(the same bundles a run with --fhir-form both writes), then load again"])
    if not files:
        raise InputError(f"{run_dir}: no FHIR bundles (fhir/bundles/bundle-*.json); run with --fhir or handover fhir")
    return files


def read_state(run_dir: Path) -> dict[str, dict[str, Any]]:
    """The latest recorded outcome per bundle name (a torn last line, from a kill, is ignored)."""
    path = run_dir / STATE
    state: dict[str, dict[str, Any]] = {}
    if not path.is_file():
        return state
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        state[record["bundle"]] = record
    return state


class _StateWriter:
    """Appends outcomes to the state file, one line each, flushed and fsynced (thread-safe)."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._fh: IO[str] = path.open("a", encoding="utf-8")
        self._lock = threading.Lock()

    def record(self, outcome: Outcome) -> None:
        line = json.dumps(asdict(outcome), sort_keys=True, separators=(",", ":"))
        with self._lock:
            self._fh.write(line + "\n")
            self._fh.flush()
            os.fsync(self._fh.fileno())

    def close(self) -> None:
        self._fh.close()


class _Stop(Exception):
    """The load cannot go on (credentials refused)."""


def _delay(options: LoadOptions, attempt: int, retry_after: str | None) -> float:
    if retry_after is not None:
        try:
            return min(options.backoff_max, max(0.0, float(retry_after)))
        except ValueError:
            pass
    return float(min(options.backoff_max, options.backoff * 2 ** (attempt - 1)) * (0.5 + random.random() / 2))


def _check_response(body: bytes, entries: int) -> tuple[bool, dict[str, int], str | None]:
    """Whether a transaction-response confirms every entry, with the per-status counts."""
    try:
        response = json.loads(body)
    except json.JSONDecodeError:
        return False, {}, "response is not JSON"
    if response.get("resourceType") != "Bundle" or response.get("type") != "transaction-response":
        return False, {}, f"response is a {response.get('resourceType')} ({response.get('type')}), not a " \
                          "transaction-response"
    statuses: dict[str, int] = {}
    for entry in response.get("entry") or []:
        code = str((entry.get("response") or {}).get("status", "")).split(" ")[0] or "none"
        statuses[code] = statuses.get(code, 0) + 1
    good = sum(n for code, n in statuses.items() if code.startswith("2"))
    if good != entries:
        return False, statuses, f"{good} of {entries} entries confirmed"
    return True, statuses, None


def send_bundle(client: httpx.Client, options: LoadOptions, path: Path, stats: LoadResult,
                lock: threading.Lock) -> Outcome:
    """POST one bundle, retrying transient failures; the outcome (never raises but _Stop)."""
    body = path.read_bytes()
    digest = hashlib.sha256(body).hexdigest()
    entries = len(_DEFINED.findall(body))
    outcome = Outcome(path.name, digest, False, None, entries)
    for attempt in range(1, options.max_attempts + 1):
        outcome.attempts = attempt
        retry_after = None
        try:
            response = client.post("", content=body)
        except httpx.TransportError as exc:  # dropped connection, timeout, refused
            outcome.error = f"{exc.__class__.__name__}"
        else:
            outcome.http_status = response.status_code
            if response.status_code in FATAL_STATUSES:
                outcome.error = f"HTTP {response.status_code}: credentials refused"
                raise _Stop(outcome.error)
            if response.status_code in RETRY_STATUSES:
                outcome.error = f"HTTP {response.status_code}"
                retry_after = response.headers.get("retry-after")
            elif response.status_code >= 300:
                outcome.error = f"HTTP {response.status_code}"
                return outcome
            else:
                outcome.ok, outcome.entry_statuses, outcome.error = _check_response(response.content, entries)
                return outcome
        if attempt < options.max_attempts:
            with lock:
                stats.retried += 1
            time.sleep(_delay(options, attempt, retry_after))
    return outcome


def load_run(run_dir: Path, options: LoadOptions, progress: Progress = NULL_PROGRESS,
             transport: httpx.BaseTransport | None = None) -> LoadResult:
    """Send the run's bundles (module docstring); the state file records every outcome.
    A sealed run is loaded only with its key (``options.seal_key``): ConfigError before
    anything is sent, since the state file is recorded in its manifest."""
    from migrate.reports.chain import check_sealable, seal_outputs

    check_sealable(run_dir, options.seal_key)

    files = bundle_files(run_dir)
    done = {name for name, r in read_state(run_dir).items() if r.get("ok")}
    state_sha = {name: r.get("sha256") for name, r in read_state(run_dir).items()}
    result = LoadResult(options.fhir_base, bundles=len(files))
    headers = {"Content-Type": "application/fhir+json", "Accept": "application/fhir+json"}
    if options.token:
        headers["Authorization"] = f"Bearer {options.token}"
    writer = _StateWriter(run_dir / STATE)
    lock = threading.Lock()
    started = time.perf_counter()
    defined_by: dict[bytes, Future[Outcome]] = {}
    stop = threading.Event()
    progress.start("load", total=len(files))

    def task(path: Path, waits: list[Future[Outcome]]) -> Outcome:
        for dep in waits:
            if not dep.result().ok:
                return Outcome(path.name, "", False, None, 0, error=f"waits for {dep.result().bundle}, which failed")
        if stop.is_set():
            return Outcome(path.name, "", False, None, 0, error="load stopped")
        try:
            outcome = send_bundle(client, options, path, result, lock)
        except _Stop as exc:
            stop.set()
            outcome = Outcome(path.name, "", False, 401, 0, error=str(exc))
        writer.record(outcome)
        progress.advance("load", 1, path.name)
        return outcome

    limits = httpx.Limits(max_connections=options.concurrency, max_keepalive_connections=options.concurrency)
    base = options.fhir_base.rstrip("/")
    outcomes: list[Future[Outcome]] = []
    try:
        with httpx.Client(base_url=base, headers=headers, timeout=options.timeout, limits=limits,
                          transport=transport) as client, \
                ThreadPoolExecutor(max_workers=options.concurrency) as pool:
            for path in files:
                text = path.read_bytes()
                digest = hashlib.sha256(text).hexdigest()
                own = set(_DEFINED.findall(text))
                if path.name in done and state_sha.get(path.name) == digest:
                    result.skipped += 1
                    progress.advance("load", 1, f"{path.name} (already loaded)")
                    continue
                waits = sorted({id(f): f for ref in set(_REFERENCED.findall(text)) - own
                                if (f := defined_by.get(ref)) is not None}.values(), key=id)
                future = pool.submit(task, path, waits)
                for ref in own:
                    defined_by[ref] = future
                outcomes.append(future)
            for future in outcomes:
                outcome = future.result()
                result.sent += 1 if outcome.http_status is not None else 0
                if outcome.ok:
                    result.resources_sent += outcome.entries
                else:
                    result.failed += 1
                    result.resources_failed += outcome.entries
                    result.failures.append({"bundle": outcome.bundle, "error": outcome.error,
                                            "http_status": outcome.http_status, "attempts": outcome.attempts})
    finally:
        writer.close()
        progress.finish("load")
        result.seconds = round(time.perf_counter() - started, 3)
        seal_outputs(run_dir, [run_dir / STATE], options.seal_key)
    if stop.is_set():
        raise ReconciliationError(f"load stopped: the server at {options.fhir_base} refused the credentials "
                                  "(HTTP 401/403); check --token-file", [f"{f['bundle']}: {f['error']}"
                                                                          for f in result.failures[:5]])
    return result
