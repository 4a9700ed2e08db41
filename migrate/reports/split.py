"""Worklists per team: ``handover report RUN --split-by service_line``.

Each service line's team gets a workbook and CSV holding only its patients, in
``reports/by-service-line/<name>/``: the exceptions of its referrals, and the
patient-level exceptions (a sharing block, an identity problem) of every patient with an
open referral in it, so a patient seen by two teams is on both teams' lists. Rows with no
service line (a referral without one, a patient with no open referral) form their own
worklist: every exception of the run is in at least one.
"""

from __future__ import annotations

from pathlib import Path

import polars as pl

from migrate.errors import ConfigError
from migrate.reports.worklist import SERVICE_LINES, SPLIT_COLUMNS, Layout, write_worklists
from migrate.reports.worklist_summary import RunInfo, Scope


def _slug(value: str | None) -> str:
    text = "".join(ch if ch.isascii() and ch.isalnum() else "-" for ch in (value or "").lower())
    return "-".join(part for part in text.split("-") if part) or "none"


def split_worklist(frame: pl.DataFrame, by: str) -> list[tuple[str | None, str, pl.DataFrame]]:
    """The worklist cut per value of ``by`` (a column of SPLIT_COLUMNS): ``(value, folder
    name, rows)`` in value order, None (no value) last, rows in review order.

    A row belongs to every value in its ``_service_lines`` (a patient's row to each service
    line where the patient has an open referral), else to its own ``by`` value; a row with
    none goes to the None part, so every row is in at least one part. Folder names are the
    values lower-cased with runs of other characters as "-", made unique.
    """
    if by not in SPLIT_COLUMNS:
        raise ConfigError(f"--split-by {by}: not a column the worklist can be split by ({', '.join(SPLIT_COLUMNS)})")
    members = (pl.col(SERVICE_LINES) if SERVICE_LINES in frame.columns else pl.concat_list(pl.col(by))).list.unique()
    # A row with no value at all goes to the None part (explode drops an empty list's row).
    members = pl.when(members.list.len() > 0).then(members).otherwise(pl.lit(None, dtype=pl.String).implode())
    exploded = frame.with_row_index("_row").with_columns(members.alias("_part")).explode("_part")
    values = sorted(exploded.get_column("_part").unique().to_list(), key=lambda v: (v is None, v or ""))
    taken: set[str] = set()
    parts: list[tuple[str | None, str, pl.DataFrame]] = []
    for value in values:
        base = _slug(value) if value is not None else "no-" + by.replace("_", "-")
        name, n = base, 1
        while name in taken:
            n += 1
            name = f"{base}-{n}"
        taken.add(name)
        rows = exploded.filter(pl.col("_part").is_null() if value is None else pl.col("_part") == value)
        parts.append((value, name, rows.sort("_row").drop("_row", "_part")))
    return parts


def split_scope(by: str, value: str | None, rows: int, total: int) -> Scope:
    """What a split workbook holds: on every page, and in the Summary."""
    label = by.replace("_", " ")
    if value is None:
        return Scope(f"no {label}", f"Only exceptions with no {label}: referrals without one recorded, and "
                     f"patients with no open referral ({rows:,} of the run's {total:,} exceptions).")
    return Scope(f"{label}: {value}", f"Only the patients of {label} '{value}': their referrals in it, and the "
                 f"patient-level exceptions of every patient with an open referral in it ({rows:,} of the run's "
                 f"{total:,} exceptions).")


def write_split(frame: pl.DataFrame, folder: Path, layout: Layout, info: RunInfo, by: str) -> list[Path]:
    """``exceptions.xlsx`` and ``exceptions.csv`` per value of ``by``, in ``folder/<name>/``."""
    files: list[Path] = []
    for value, name, rows in split_worklist(frame, by):
        files += write_worklists(rows, folder / name, layout, info, split_scope(by, value, rows.height, frame.height))
    return files
