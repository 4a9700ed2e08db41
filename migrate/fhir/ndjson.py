"""The FHIR NDJSON files, plain or gzip-compressed: their names, how they are written and found.

A run's ``fhir/ndjson/`` holds one file per resource type: ``<Type>.ndjson``, or with
``--fhir-compression gzip`` ``<Type>.ndjson.gz`` (the FHIR Bulk Data convention). Every
reader finds them with ``ndjson_paths`` (both names), and reads a ``.gz`` the same way as a
plain file: polars' ``scan_csv``/``scan_ndjson`` and Arrow's ``open_json`` decompress it as
they stream (measured: no whole-file hold; ``benchmarks/fhir.md``).

A compressed file is a sequence of gzip members, **one per writer batch** (per resource
type): a batch's lines are compressed on their own, so a file is the batch members in batch
order whichever process or partition wrote them, and appending partitions' files (as
``migrate.fhir.partitions.combine`` does) stays byte-for-byte the same whatever their
number. Each member's header has mtime 0 and no file name, so two runs write the same
bytes. Compressed by ISA-L (``isal``) at level ``GZIP_LEVEL``: at 1 it compresses ~1.5 GB/s
per core (zlib level 6: ~0.12 GB/s) to ~92 % of zlib level 6's ratio (measured on the
FHIR of 20k patients: ~10x; ``benchmarks/fhir.md``); any gzip reader reads it.

A damaged file is never read short without a word: a truncated member, a bad CRC or
length, or trailing garbage is an error from the decompressor, which ``unreadable`` turns
into one naming the file. (A file cut exactly between two members is still a valid gzip
file: invariant 2 then finds every resource lineage names that the NDJSON lacks.)
"""

from __future__ import annotations

import gzip
import zlib
from pathlib import Path
from typing import IO

from isal import isal_zlib

from migrate.errors import InputError
from migrate.summary import FhirCompression

PLAIN, GZIP = ".ndjson", ".ndjson.gz"
GZIP_LEVEL = 1  # ISA-L's levels are 0-3; 1 is as small as 2 and 3.5x faster than 3 (benchmarks/fhir.md)
_GZIP_WBITS = 31  # a gzip wrapper (16 + a 32 KB window): header mtime 0, no file name, OS 255


def suffix(compression: FhirCompression) -> str:
    """The file name ending of the NDJSON written with ``compression``."""
    return GZIP if compression == "gzip" else PLAIN


def file_name(resource_type: str, compression: FhirCompression) -> str:
    """``<Type>.ndjson`` or ``<Type>.ndjson.gz``."""
    return f"{resource_type}{suffix(compression)}"


def is_ndjson(path: Path) -> bool:
    return path.name.endswith(PLAIN) or path.name.endswith(GZIP)


def stem(path: Path) -> str:
    """The name without ``.ndjson`` or ``.ndjson.gz`` (``Encounter``, ``Encounter.2``)."""
    name = path.name
    return name[: -len(GZIP)] if name.endswith(GZIP) else name[: -len(PLAIN)]


def ndjson_paths(folder: Path) -> list[Path]:
    """Every ``*.ndjson`` and ``*.ndjson.gz`` file directly under ``folder``, in name order
    (empty when it is not a folder)."""
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.is_file() and is_ndjson(p))


def write_lines(handle: IO[bytes], text: bytes | memoryview, compression: FhirCompression) -> None:
    """Append NDJSON ``text`` (whole lines) to ``handle``: as it is, or as one gzip member."""
    handle.write(isal_zlib.compress(text, GZIP_LEVEL, _GZIP_WBITS) if compression == "gzip" else text)


def read_text(path: Path) -> str:
    """The whole text of a (small) NDJSON file, decompressed when it is a ``.gz``."""
    try:
        data = gzip.decompress(path.read_bytes()) if path.name.endswith(GZIP) else path.read_bytes()
        return data.decode("utf-8")
    except (OSError, EOFError, zlib.error, ValueError) as exc:  # BadGzipFile: an OSError; a cut member: EOFError
        raise unreadable(path, exc) from None


def check_readable(paths: list[Path]) -> None:
    """Decompress every ``.gz`` of ``paths`` to its end (streaming, nothing held), so a damaged
    one is named before a reader that cannot name it (a lazy scan of several files) reads it."""
    for path in paths:
        if path.name.endswith(GZIP):
            try:
                with gzip.open(path, "rb") as stream:
                    while stream.read(16 << 20):
                        pass
            except (OSError, EOFError, zlib.error) as exc:
                raise unreadable(path, exc) from None


def unreadable(path: Path, exc: BaseException) -> InputError:
    """The error for an NDJSON file a reader could not read to the end, naming the file (and,
    for a ``.gz``, that it is damaged: truncated or corrupted, never read short)."""
    what = "a damaged gzip file (truncated or corrupted)" if path.name.endswith(GZIP) else "not readable as NDJSON"
    detail = str(exc).splitlines()[0] if str(exc) else exc.__class__.__name__
    return InputError(f"{path}: {what}: {detail}")
