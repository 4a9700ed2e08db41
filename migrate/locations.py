"""Where a run reads its extract and writes its run folder: a path, or a URL.

    handover run --input PATH | file:///PATH | PROTOCOL://…   --out PATH | file:///PATH

- A plain path, or a ``file://`` URL, is a folder on this machine's filesystem. For a
  run across machines (``--executor dask --scheduler …``) it must be a shared filesystem
  (NFS, SMB, a mounted bucket) at the same path on every machine: the workers write the
  FHIR partitions into the run folder by its path (``migrate.fhir.partitions``).
- Any other URL is read with fsspec (``memory://``, ``s3://`` with s3fs, ``gs://`` with
  gcsfs, …) for ``--input`` only: every file under it is **copied** into the run folder's
  work area (``.work/input/``, removed at the end) before the extract is read, so the
  stages read local files as always — a copy costs the extract's size in disk and the
  time to fetch it. The files' sha256 in the manifest are of the bytes read, as for a path.
- The run folder cannot be an object-store URL: it is written in place, locked, and
  renamed into place when complete (``migrate.runfolder``), which an object store does
  not do. ``--out s3://…`` is a configuration error (exit 2) that says to mount it.

Every problem is found before any data is read (``resolve``): an unknown protocol, one
whose fsspec package is not installed, a URL folder that does not exist.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlparse

_URL = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")


@dataclass(frozen=True)
class Location:
    """A folder given on the command line: ``path`` on this machine, or ``url`` read with fsspec."""

    given: str
    path: Path | None = None
    url: str | None = None


def resolve(option: str, given: str | Path, remote: bool) -> tuple[Location, list[str]]:
    """``given`` as a Location, with every problem in words (empty when it can be used).

    ``remote``: whether an fsspec URL other than ``file://`` may be given (only ``--input``).
    """
    text = str(given)
    found = _URL.match(text) if isinstance(given, str) else None
    if found is None:
        return Location(text, path=Path(text)), []
    protocol = found.group(1).lower()
    if protocol == "file":
        parsed = urlparse(text)
        if parsed.netloc not in ("", "localhost"):
            return Location(text), [f"{option}: {text} names another host ({parsed.netloc}); a file:// URL is a "
                                    "path on this machine (file:///path)"]
        return Location(text, path=Path(unquote(parsed.path))), []
    if not remote:
        return Location(text), [f"{option}: {text} is a {protocol}:// URL; the run folder must be a path on this "
                                "machine's filesystem (for a run across machines, a shared filesystem — NFS, or the "
                                "bucket mounted — at the same path on every machine)"]
    return _remote(option, text, protocol)


def _remote(option: str, url: str, protocol: str) -> tuple[Location, list[str]]:
    try:
        import fsspec
    except ImportError:
        return Location(url), [f"{option}: reading {protocol}:// URLs needs fsspec, which is not installed here "
                               "(pip install fsspec, or handover's dask extra), or give a path"]
    try:
        fs, path = fsspec.core.url_to_fs(url)
    except (ImportError, ValueError) as exc:  # unknown protocol, or its implementation's package missing
        return Location(url), [f"{option}: cannot read {protocol}:// URLs here ({_first_line(exc)})"]
    try:
        is_dir = fs.isdir(path)
    except Exception as exc:  # noqa: BLE001 — any backend's failure is the same problem: the folder cannot be read
        return Location(url), [f"{option}: cannot list {url} ({type(exc).__name__}: {_first_line(exc)})"]
    if not is_dir:
        return Location(url), [f"input folder not found: {url}"]
    return Location(url, url=url), []


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


def fetch(url: str, into: Path) -> Path:
    """Copy every file under the fsspec folder ``url`` into ``into`` (relative paths kept); return ``into``.

    A file at a time, streamed (never a whole file in memory), in sorted order.
    """
    import fsspec

    fs, root = fsspec.core.url_to_fs(url)
    root = root.rstrip("/")
    into.mkdir(parents=True, exist_ok=True)
    for name in sorted(fs.find(root)):
        relative = name[len(root):].lstrip("/")
        target = into / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        fs.get_file(name, str(target))
    return into
