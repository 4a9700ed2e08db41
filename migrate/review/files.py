"""Reading decisions back: the worklist as a clinician filled it in (XLSX or CSV).

``read_decisions(path)`` returns one row per worklist row on which a reviewer wrote
anything (reviewer, second reviewer, decision, date or note), every value as the text the
reviewer left, with where it came from (``DECISION_ROW_SCHEMA``). Nothing is judged here
(``validate`` does that, row by row): a file is refused only when it is not a worklist at
all — unreadable (``InputError``, exit 3) or without the columns that identify an item
(``ConfigError``, exit 2) — and that is checked before any data is read.

XLSX: every sheet whose header row names the item columns (the Summary has none); headers
as the layout shows them (``reports/exceptions.yaml``: Flag, Rule, Subject, Evidence id,
Reviewer, …) or as column names. A date typed into the Date column is a real date (the
column is formatted dd/mm/yyyy); one typed as text is kept as text. CSV: UTF-8 (a BOM is
fine), the names of ``exceptions.csv``; values a spreadsheet would run are written with a
leading quote there, which is removed here.
"""

from __future__ import annotations

import csv
import hashlib
import io
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path
from typing import Any

import polars as pl

from migrate.errors import ConfigError, InputError

ITEM_COLUMNS = ("flag_code", "rule_id", "subject_key")
REVIEW_COLUMNS = ("reviewer", "second_reviewer", "decision", "date", "note")
OPTIONAL_COLUMNS = ("evidence_id", "second_reviewer")
DECISION_ROW_SCHEMA: dict[str, pl.DataType] = {
    "source_file": pl.String(), "source_sheet": pl.String(), "source_row": pl.Int64(),
    "flag_code": pl.String(), "rule_id": pl.String(), "subject_key": pl.String(), "evidence_id": pl.String(),
    "reviewer": pl.String(), "second_reviewer": pl.String(), "decision": pl.String(), "date": pl.String(),
    "note": pl.String(),
}
_READ = (*ITEM_COLUMNS, "evidence_id", *REVIEW_COLUMNS)


@dataclass(frozen=True)
class DecisionFile:
    """One ``--decisions`` file: its name, bytes, sha256 and the rows a reviewer wrote on."""

    path: Path
    sha256: str
    bytes: int
    rows: pl.DataFrame

    def record(self) -> dict[str, Any]:
        """What the manifest says of it."""
        return {"path": self.path.name, "sha256": self.sha256, "bytes": self.bytes, "rows": self.rows.height}


def _headers() -> dict[str, str]:
    """Header text (folded) -> column name, from the shipped worklist layout and the names themselves."""
    from migrate.reports.worklist import load_layout

    names = {c: c for c in _READ}
    shown = {c.header: c.name for c in load_layout().columns if c.name in _READ}
    return {k.strip().casefold(): v for k, v in {**names, **shown, "Second reviewer": "second_reviewer",
                                                 "Evidence id": "evidence_id"}.items()}


def _text(value: Any) -> str | None:
    """A cell as the text the reviewer meant: dates as ISO, numbers without '.0', blanks as None."""
    if value is None:
        return None
    if isinstance(value, datetime):
        value = value.date() if value.time() == datetime.min.time() else value
    if isinstance(value, (date, datetime)):
        return value.isoformat()
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    text = str(value).strip()
    if text.startswith("'") and text[1:2] in ("=", "+", "-", "@"):  # exceptions.csv's formula guard
        text = text[1:]
    return text or None


def _columns(header: list[Any], where: str) -> dict[int, str] | None:
    """Column index -> name of a header row, or None when it is not a worklist sheet."""
    known = _headers()
    found = {i: known[str(h).strip().casefold()] for i, h in enumerate(header)
             if h is not None and str(h).strip().casefold() in known}
    names = set(found.values())
    if not set(ITEM_COLUMNS) <= names:
        return None
    missing = [c for c in ("decision", "reviewer", "date", "note") if c not in names]
    if missing:
        raise ConfigError(f"{where}: not a filled-in worklist: no {', '.join(missing)} column "
                          "(keep the reviewer's columns of exceptions.xlsx or exceptions.csv)")
    return found


def _rows(name: str, sheet: str | None, records: list[tuple[int, list[Any]]], columns: dict[int, str]) -> list[dict[str, Any]]:
    out = []
    for number, values in records:
        row = {c: None for c in _READ} | {col: _text(values[i]) if i < len(values) else None
                                           for i, col in columns.items()}
        if not any(row[c] for c in REVIEW_COLUMNS):
            continue  # nothing written on this item: not a decision
        out.append({"source_file": name, "source_sheet": sheet, "source_row": number, **row})
    return out


def _xlsx(path: Path) -> list[dict[str, Any]]:
    from openpyxl import load_workbook

    try:
        book = load_workbook(path, read_only=True, data_only=True)
    except Exception as exc:  # openpyxl raises many types for a file that is not a workbook
        raise InputError(f"decisions file {path.name}: not a readable XLSX workbook ({type(exc).__name__})") from None
    rows: list[dict[str, Any]] = []
    sheets = 0
    try:
        for ws in book.worksheets:
            it = ws.iter_rows(values_only=True)
            header = next(it, None)
            columns = None if header is None else _columns(list(header), f"decisions file {path.name} ({ws.title})")
            if columns is None:
                continue
            sheets += 1
            rows += _rows(path.name, ws.title, [(n, list(v)) for n, v in enumerate(it, start=2)], columns)
    finally:
        book.close()
    if not sheets:
        raise ConfigError(f"decisions file {path.name}: no sheet has the Flag, Rule and Subject columns "
                          "of an exceptions worklist")
    return rows


def _csv(path: Path, raw: bytes) -> list[dict[str, Any]]:
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        text = raw.decode("cp1252", errors="replace")  # saved by Excel in the Windows code page
    records = list(csv.reader(io.StringIO(text, newline="")))
    if not records:
        raise ConfigError(f"decisions file {path.name}: empty; give a filled-in exceptions.csv or .xlsx")
    columns = _columns(records[0], f"decisions file {path.name}")
    if columns is None:
        raise ConfigError(f"decisions file {path.name}: no flag_code, rule_id and subject_key columns; "
                          "give a filled-in exceptions.csv or .xlsx")
    # Data rows numbered from 1, as canonical rows are (the header is not a row).
    return _rows(path.name, None, [(n, list(v)) for n, v in enumerate(records[1:], start=1)], columns)


def read_decisions(path: Path) -> DecisionFile:
    """The rows of one decisions file (module docstring); InputError or ConfigError when it is not one."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise InputError(f"decisions file not found or unreadable: {path} ({exc.strerror})") from None
    rows = _xlsx(path) if raw[:2] == b"PK" else _csv(path, raw)
    frame = pl.DataFrame(rows, schema=DECISION_ROW_SCHEMA, orient="row") if rows else pl.DataFrame(
        schema=DECISION_ROW_SCHEMA)
    return DecisionFile(path, hashlib.sha256(raw).hexdigest(), len(raw), frame)
