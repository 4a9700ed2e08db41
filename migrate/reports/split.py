"""Worklists per team: ``handover report RUN --split-by service_line``.

Each service line's team gets a workbook and CSV holding only its patients, in
``reports/by-service-line/<name>/``: the exceptions of its referrals, and the
patient-level exceptions (a sharing block, an identity problem) of every patient with an
open referral in it, so a patient seen by two teams is on both teams' lists. Rows with no
service line (a referral without one, a patient with no open referral) form their own
worklist: every exception of the run is in at least one.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import polars as pl

from migrate.errors import ConfigError
from migrate.reports.worklist import SERVICE_LINES, SPLIT_COLUMNS, Layout, Rows, write_worklists
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
    members = _members(frame.columns, by)
    exploded = frame.with_row_index("_row").with_columns(members.alias("_part")).explode("_part")
    values = exploded.get_column("_part").unique().to_list()
    parts: list[tuple[str | None, str, pl.DataFrame]] = []
    for value, name in _named(values, by):
        rows = exploded.filter(pl.col("_part").is_null() if value is None else pl.col("_part") == value)
        parts.append((value, name, rows.sort("_row").drop("_row", "_part")))
    return parts


def _members(columns: list[str], by: str) -> pl.Expr:
    """The parts a row belongs to, as a list: its ``_service_lines`` (else its ``by`` value),
    each once; ``[null]`` (the None part) when it has none."""
    if by not in SPLIT_COLUMNS:
        raise ConfigError(f"--split-by {by}: not a column the worklist can be split by ({', '.join(SPLIT_COLUMNS)})")
    members = (pl.col(SERVICE_LINES) if SERVICE_LINES in columns else pl.concat_list(pl.col(by))).list.unique()
    # A row with no value at all goes to the None part (explode drops an empty list's row).
    return pl.when(members.list.len() > 0).then(members).otherwise(pl.lit(None, dtype=pl.String).implode())


def _named(values: list[str | None], by: str) -> list[tuple[str | None, str]]:
    """The parts' values in order (None last), each with its unique folder name."""
    taken: set[str] = set()
    named: list[tuple[str | None, str]] = []
    for value in sorted(values, key=lambda v: (v is None, v or "")):
        base = _slug(value) if value is not None else "no-" + by.replace("_", "-")
        name, n = base, 1
        while name in taken:
            n += 1
            name = f"{base}-{n}"
        taken.add(name)
        named.append((value, name))
    return named


def split_scope(by: str, value: str | None, rows: int, total: int) -> Scope:
    """What a split workbook holds: on every page, and in the Summary."""
    label = by.replace("_", " ")
    if value is None:
        return Scope(f"no {label}", f"Only exceptions with no {label}: referrals without one recorded, and "
                     f"patients with no open referral ({rows:,} of the run's {total:,} exceptions).")
    return Scope(f"{label}: {value}", f"Only the patients of {label} '{value}': their referrals in it, and the "
                 f"patient-level exceptions of every patient with an open referral in it ({rows:,} of the run's "
                 f"{total:,} exceptions).")


def write_split(frame: Rows, folder: Path, layout: Layout, info: RunInfo, by: str) -> list[Path]:
    """``exceptions.xlsx`` and ``exceptions.csv`` per value of ``by``, in ``folder/<name>/``.

    A lazy ``frame`` (the staged worklist) is never held whole: each part's rows, in the
    worklist's order, are written to a Parquet file of their own (one streamed pass each),
    which its writers then read in passes and chunks."""
    files: list[Path] = []
    if isinstance(frame, pl.DataFrame):
        for value, name, rows in split_worklist(frame, by):
            files += write_worklists(rows, folder / name, layout, info,
                                     split_scope(by, value, rows.height, frame.height))
        return files
    members = _members(frame.collect_schema().names(), by)
    # memory: a row count per part
    counts = frame.select(members.alias("_part")).explode("_part").group_by("_part").len().collect(engine="streaming")
    sizes = {v: int(n) for v, n in counts.iter_rows()}
    total = int(frame.select(pl.len()).collect().item())
    with tempfile.TemporaryDirectory(prefix="handover-split-") as work:
        for value, name in _named(list(sizes), by):
            inside = (members.list.eval(pl.element().is_null()).list.any() if value is None
                      else members.list.contains(pl.lit(value, dtype=pl.String)))
            part = Path(work) / f"{name}.parquet"
            frame.filter(inside).sink_parquet(part, compression="zstd", maintain_order=True, engine="streaming")
            files += write_worklists(pl.scan_parquet(part), folder / name, layout, info,
                                     split_scope(by, value, sizes[value], total))
            part.unlink()
    return files
