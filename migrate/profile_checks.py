"""Profile checks made by the engine that runs the profile, not by Python look-alikes.

``migrate.profile`` calls these while it validates a profile, so what would crash or
escape later is refused up front (exit 2) with the option's path: a regular expression
Python accepts but polars (Rust's ``regex``) cannot run; a delimiter or quote character
polars' byte-wise reader cannot use; a file pattern that reads outside ``--input``.
"""

from __future__ import annotations

import re
from pathlib import PurePosixPath, PureWindowsPath

import polars as pl


def regex_problem(pattern: str) -> str | None:
    """Why polars (Rust's regex) cannot compile ``pattern``, or None. Python's ``re`` accepts
    look-arounds and back-references that polars refuses at run time."""
    try:
        pl.Series([""], dtype=pl.String).str.contains(pattern)
    except pl.exceptions.PolarsError as exc:
        reason = next((line.strip() for line in str(exc).splitlines() if line.strip().startswith("error:")),
                      "a regex parse error")
        return f"not a regular expression polars can run ({reason.removeprefix('error:').strip()})"
    return None


def dialect_problems(delimiter: str, quote: str | None) -> list[tuple[str, str]]:
    """(option, why) for a delimiter or quote character the reader cannot use: each must be
    one single-byte (ASCII) character — polars reads bytes — other than CR and LF, and the
    two must differ."""
    found = []
    for key, value in (("delimiter", delimiter), ("quote_char", quote)):
        if value is None:
            continue
        if len(value) != 1 or ord(value) > 0x7F:
            found.append((key, f"expected one single-byte (ASCII) character, got {value!r}"
                               + (" (several bytes in UTF-8)" if len(value) == 1 else "")))
        elif value in "\r\n":
            found.append((key, "a line end cannot be a delimiter or quote character"))
    if quote is not None and quote == delimiter:
        found.append(("quote_char", "must differ from the delimiter"))
    return found


def glob_problem(pattern: str) -> str | None:
    """Why a file pattern could read outside ``--input``: absolute, or climbing with ``..``."""
    if not pattern.strip():
        return "an empty file pattern"
    if PurePosixPath(pattern).is_absolute() or PureWindowsPath(pattern).is_absolute() or pattern.startswith(("\\", "~")):
        return "an absolute path: file patterns are relative to --input"
    if ".." in re.split(r"[/\\]", pattern):
        return "'..' climbs out of --input: file patterns must stay inside it"
    return None
