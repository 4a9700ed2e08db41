"""Writing run outputs so that a killed run never leaves a complete-looking half file.

Every file is written to a temporary name in the same folder and renamed into place
(``os.replace`` is atomic on one filesystem). Frames are written in a fixed row order and
JSON with sorted keys, so the same inputs give byte-identical files.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import polars as pl


def write_atomic(path: Path, write: Callable[[Path], object]) -> Path:
    """Run ``write`` on a temporary name beside ``path``, then rename it into place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


# Rows per Parquet row group, fixed: without it polars writes a row group per in-memory
# chunk, and how a frame is chunked depends on thread timing (two identical 20k runs gave
# two different lineage.parquet files with the same rows). Polars' own default size.
ROW_GROUP_ROWS = 512 * 512


def write_parquet(frame: pl.DataFrame, path: Path) -> Path:
    """Write ``frame`` as Parquet at ``path`` atomically (zstd, statistics on); the bytes
    depend only on the rows, not on how the frame happens to be chunked in memory."""
    return write_atomic(path, lambda tmp: frame.write_parquet(tmp, compression="zstd",
                                                              row_group_size=ROW_GROUP_ROWS))


def write_json(data: Any, path: Path) -> Path:
    """Write ``data`` as indented JSON with sorted keys, atomically."""
    text = json.dumps(data, indent=2, sort_keys=True, default=str, ensure_ascii=False) + "\n"
    return write_atomic(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def write_text(text: str, path: Path) -> Path:
    """Write UTF-8 text atomically."""
    return write_atomic(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))
