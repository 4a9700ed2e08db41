"""Invariant 1: every source row read ends with exactly one disposition.

``rows_invariant(lineage, files)`` is the one implementation. The pipeline checks a run
with it as soon as ``lineage.parquet`` is written, and ``handover report`` recomputes it
from the run folder, so a report re-rendered after someone edited the lineage shows the
damage. Per input file it holds when:

- every row the reader read (rows ``1..rows_read``; readers number data rows without
  gaps) has a disposition in lineage — none is missing;
- no row has two dispositions (lineage may hold a row once per FHIR resource it became:
  the same disposition repeated is one row);
- lineage names no row the reader never read (outside ``1..rows_read``, a null row, or a
  file nobody read), and no disposition outside ``canonical.DISPOSITIONS``.

Then rows read = Σ rows per disposition. A failure names the invariant, the file and the
first rows of each kind (``failure_lines``), so the message a user sees points at rows.

How, for memory: each (file, row, disposition) triple is packed into one 64-bit integer
(file index, row, disposition code) in one streaming pass, a batch at a time; the integers
go into parts of ``PART_ROWS`` source rows of one file (spilled to disk past
``HOLD_KEYS``), and each part is sorted with numpy and counted from its neighbours — the
counts add up over parts, as a row's keys are all in one part. The peak is one part
whatever the extract (at a million patients the whole sort peaked 0.4 GB over the
stage's entry, about 2 GB at 5M). Rows that cannot be packed (not read, unknown
disposition) are the failures themselves: counted in that pass, and read again for their
details only when there are some.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl

from migrate.canonical import DISPOSITIONS
from migrate.summary import FileInvariant, QuarantineCount, RowExample, RowsExamples, RowsInvariant

EXAMPLES = 20  # failing rows named per kind
NO_FILE = "(no file)"  # how a lineage row without source_file is reported
_ROWS = 1 << 40  # source rows per file the packing holds
_CODES = 8  # disposition codes per row slot (3 bits; there are 6 dispositions)
PART_ROWS = 1_000_000  # source rows of one file counted at a time (``_Parts``)
HOLD_KEYS = 1_000_000  # packed keys held before they are spilled to the parts: 8 MB
BATCH_ROWS = 500_000  # lineage rows packed at a time


@dataclass(frozen=True)
class FileCount:
    """Rows read from one file (from the reader, before any stage)."""

    name: str
    table: str
    rows_read: int


def _frame(lineage: pl.LazyFrame, names: list[str], limits: list[int]) -> pl.LazyFrame:
    """Lineage as (source_file, source_row, disposition, _file, _ok_row, _known): ``_file``
    the file's index in ``names``, whose rows read are ``limits`` (no join: a gather)."""
    frame = lineage.select(pl.col("source_file").cast(pl.String).fill_null(NO_FILE),
                           pl.col("source_row").cast(pl.Int64), pl.col("disposition").cast(pl.String))
    row, index = pl.col("source_row"), pl.col("source_file").cast(pl.Enum(names)).to_physical().cast(pl.Int64)
    limit = pl.lit(pl.Series("_limit", limits, dtype=pl.Int64)).gather(index)
    return frame.with_columns(index.alias("_file")).with_columns(
        (row.is_not_null() & (row >= 1) & (row <= limit)).alias("_ok_row"),
        pl.col("disposition").is_in(DISPOSITIONS).fill_null(False).alias("_known"))


def _no_examples() -> RowsExamples:
    return {"rows_without_disposition": [], "rows_with_several_dispositions": [], "rows_not_read": [],
            "rows_with_unknown_disposition": []}


def _problems(frame: pl.LazyFrame) -> tuple[dict[str, dict[str, int]], RowsExamples]:
    """Rows not read and rows with an unknown disposition: distinct rows per file, and examples."""
    # memory: the rows not read or of unknown disposition only (none when the invariant holds)
    bad = frame.filter(~pl.col("_ok_row") | ~pl.col("_known")).select(
        "source_file", "source_row", "disposition",
        pl.when(~pl.col("_ok_row")).then(pl.lit("rows_not_read")).otherwise(pl.lit("rows_with_unknown_disposition"))
        .alias("kind")).unique().collect(engine="streaming")
    counts: dict[str, dict[str, int]] = {}
    for name, kind, n in bad.group_by("source_file", "kind").agg(pl.col("source_row").n_unique()).iter_rows():
        counts.setdefault(str(name), {})[str(kind)] = int(n)
    examples = _no_examples()
    for kind in ("rows_not_read", "rows_with_unknown_disposition"):
        first = bad.filter(pl.col("kind") == kind).sort("source_file", "source_row", "disposition", nulls_last=True)
        for name, row, disposition in first.head(EXAMPLES).select("source_file", "source_row", "disposition").rows():
            example: RowExample = {"file": str(name), "row": None if row is None else int(row)}
            if kind == "rows_with_unknown_disposition":
                example["dispositions"] = [str(disposition)]
            examples[kind].append(example)
    return counts, examples


class _Parts:
    """The packed triples of the readable rows, in parts of ``PART_ROWS`` source rows of one
    file (part order is key order: every key of part *i* is below every key of part
    *i + 1*, and all of a row's keys are in one part). Up to ``HOLD_KEYS`` keys are held;
    past that they are spilled to one file per part under ``folder``.

    # memory: ``HOLD_KEYS`` keys (8 bytes each) while reading, one part's keys while counting;
    # before: every lineage row's key held and sorted at once (18M keys at a million patients,
    # 0.4 GB over the stage's entry; 2 GB at 5M).
    """

    def __init__(self, limits: list[int], folder: Path) -> None:
        counts = [max(1, -(-limit // PART_ROWS)) for limit in limits]
        self.offsets = np.cumsum([0, *counts])  # first part of each file
        self.limits = limits
        self.folder = folder
        self.held: list[np.ndarray] = []
        self.spilled = False

    def part_of(self, keys: np.ndarray) -> np.ndarray:
        rows = (keys // _CODES) % _ROWS
        part: np.ndarray = self.offsets[keys // (_ROWS * _CODES)] + (rows - 1) // PART_ROWS
        return part

    def add(self, keys: np.ndarray) -> None:
        self.held.append(keys)
        if sum(len(h) for h in self.held) > HOLD_KEYS:
            self._spill()

    def _spill(self) -> None:
        keys = np.concatenate(self.held) if self.held else np.empty(0, dtype=np.int64)
        self.held, self.spilled = [], True
        order = np.argsort(self.part_of(keys), kind="stable")
        keys = keys[order]
        cuts = np.searchsorted(self.part_of(keys), np.arange(1, int(self.offsets[-1])))
        for i, piece in enumerate(np.split(keys, cuts)):
            if len(piece):
                with (self.folder / f"{i:07d}").open("ab") as fh:
                    piece.tofile(fh)

    def finish(self) -> None:
        if self.spilled:
            self._spill()

    def parts(self) -> Iterator[tuple[int, int, int, np.ndarray]]:
        """(file index, first row, last row, sorted distinct triples) of each part, in order."""
        whole = None if self.spilled else _distinct(np.concatenate(self.held) if self.held
                                                     else np.empty(0, dtype=np.int64))
        at = None if whole is None else np.searchsorted(self.part_of(whole), np.arange(int(self.offsets[-1]) + 1))
        for file, limit in enumerate(self.limits):
            for j in range(int(self.offsets[file + 1] - self.offsets[file])):
                i = int(self.offsets[file]) + j
                if at is not None and whole is not None:
                    triples = whole[at[i]:at[i + 1]]
                else:
                    path = self.folder / f"{i:07d}"
                    triples = _distinct(np.fromfile(path, dtype=np.int64)) if path.exists() \
                        else np.empty(0, dtype=np.int64)
                yield file, j * PART_ROWS + 1, min(limit, (j + 1) * PART_ROWS), triples


def _distinct(keys: np.ndarray) -> np.ndarray:
    """``keys`` sorted, each once."""
    # Stable (timsort): lineage is read in file and row order, so the keys come nearly sorted
    # (O(n) for sorted runs).
    keys = np.sort(keys, kind="stable")
    if len(keys) == 0:
        return keys
    distinct = np.ones(len(keys), dtype=bool)
    distinct[1:] = keys[1:] != keys[:-1]
    return keys[distinct]


def _packed(lineage: pl.LazyFrame, names: list[str], parts: _Parts) -> int:
    """Add the packed triples (file index, row, disposition code) of the readable rows to
    ``parts``, in one pass over lineage a batch at a time; returns how many lineage rows
    could not be packed (a row not read, or an unknown disposition)."""
    # Only casts in the plan (they stream); the checks and the packing in numpy, per batch.
    plan = lineage.select(
        pl.col("source_file").cast(pl.String).fill_null(NO_FILE).cast(pl.Enum(names)).to_physical().alias("f"),
        pl.col("source_row").cast(pl.Int64).fill_null(0).alias("r"),
        pl.col("disposition").cast(pl.String).cast(pl.Enum(DISPOSITIONS), strict=False).to_physical()
        .cast(pl.Int64).fill_null(-1).alias("d"))
    limits = np.asarray(parts.limits, dtype=np.int64)
    unpacked = 0
    for batch in plan.collect_batches(chunk_size=BATCH_ROWS):
        file, row, code = (batch[c].to_numpy().astype(np.int64, copy=False) for c in ("f", "r", "d"))
        ok = (row >= 1) & (row <= limits[file]) & (code >= 0)
        unpacked += len(ok) - int(ok.sum())
        parts.add(file[ok] * (_ROWS * _CODES) + row[ok] * _CODES + code[ok])
    parts.finish()
    return unpacked


def rows_invariant(lineage: pl.LazyFrame, files: Iterable[FileCount]) -> RowsInvariant:
    """Invariant 1 of ``lineage`` (source_file, source_row, disposition; one row per source
    row and resource) against the rows each reader read (module docstring)."""
    read = {f.name: f for f in files}
    # memory: the distinct source file names (a few)
    found = lineage.select(pl.col("source_file").cast(pl.String).fill_null(NO_FILE).unique()).collect(
        engine="streaming").to_series().to_list()
    names = sorted(set(read) | {str(n) for n in found})
    limits = [read[n].rows_read if n in read else 0 for n in names]
    with tempfile.TemporaryDirectory(prefix="handover-invariant-") as folder:
        parts = _Parts(limits, Path(folder))
        unpacked = _packed(lineage, names, parts)
        # Rows that could not be packed are failures; read again only when there are some.
        problems, examples = _problems(_frame(lineage, names, limits)) if unpacked else ({}, _no_examples())

        n_files = len(names)
        per_code = np.zeros((n_files, _CODES), dtype=np.int64)
        several = np.zeros(n_files, dtype=np.int64)
        present = np.zeros(n_files, dtype=np.int64)
        for file, _, _, triples in parts.parts():  # counts add up: a row's keys are in one part
            counted = _count(triples)
            per_code[file] += np.bincount(triples % _CODES, minlength=_CODES)
            several[file] += int(counted.first_repeat.sum())
            present[file] += int(counted.new_row.sum())

        rows: list[FileInvariant] = []
        for i, name in enumerate(names):
            known = read.get(name)
            dispositions = {d: int(per_code[i, c]) for c, d in enumerate(DISPOSITIONS)}
            rows_read = known.rows_read if known else 0
            extra = problems.get(name, {})
            entry: FileInvariant = {
                "file": name, "table": known.table if known else None, "rows_read": rows_read,
                "dispositions": dispositions, "total": sum(dispositions.values()),
                "rows_with_several_dispositions": int(several[i]),
                "rows_without_disposition": rows_read - int(present[i]),
                "rows_not_read": extra.get("rows_not_read", 0),
                "rows_with_unknown_disposition": extra.get("rows_with_unknown_disposition", 0),
                "holds": False,
            }
            entry["holds"] = (known is not None and entry["total"] == rows_read
                              and not entry["rows_with_several_dispositions"]
                              and not entry["rows_not_read"] and not entry["rows_with_unknown_disposition"])
            rows.append(entry)
        holds = all(r["holds"] for r in rows)
        if not holds:  # the parts read again, for the first failing rows
            examples["rows_without_disposition"], examples["rows_with_several_dispositions"] = \
                _examples(names, rows, parts)
    return {
        "holds": holds,
        "files": rows,
        "rows_read": sum(r["rows_read"] for r in rows),
        "dispositions": {d: sum(r["dispositions"][d] for r in rows) for d in DISPOSITIONS},
        "examples": examples,
    }


@dataclass(frozen=True)
class _Counted:
    """Of sorted distinct triples: where a row's second disposition starts (``first_repeat``,
    aligned with ``triples[1:]``), which triples start a row (``new_row``), the row keys."""

    row_key: np.ndarray
    same: np.ndarray
    first_repeat: np.ndarray
    new_row: np.ndarray


def _count(triples: np.ndarray) -> _Counted:
    row_key = triples // _CODES  # file and row together
    same = row_key[1:] == row_key[:-1]  # a row's second (third, ...) disposition
    first_repeat = same & ~np.concatenate(([False], same[:-1])) if len(same) else same
    new_row = np.ones(len(row_key), dtype=bool)
    new_row[1:] = ~same
    return _Counted(row_key, same, first_repeat, new_row)


def _examples(names: list[str], rows: list[FileInvariant],
              parts: _Parts) -> tuple[list[RowExample], list[RowExample]]:
    """The first rows of ``1..rows_read`` that lineage does not name, file by file, and the
    first rows with more than one disposition, with all their dispositions."""
    missing: list[RowExample] = []
    several: list[RowExample] = []
    for file, first, last, triples in parts.parts():
        counted = _count(triples)
        if rows[file]["rows_without_disposition"] > 0 and len(missing) < EXAMPLES:
            seen = (triples[counted.new_row] // _CODES) % _ROWS
            absent = np.setdiff1d(np.arange(first, last + 1, dtype=np.int64), seen, assume_unique=True)
            missing += [{"file": rows[file]["file"], "row": int(r)} for r in absent[:EXAMPLES - len(missing)]]
        if len(several) < EXAMPLES and len(counted.same):
            for key in counted.row_key[1:][counted.first_repeat][:EXAMPLES - len(several)]:
                codes = triples[counted.row_key == key] % _CODES
                several.append({"file": names[int(key // _ROWS)], "row": int(key % _ROWS),
                                "dispositions": [DISPOSITIONS[int(c)] for c in codes]})
    return missing, several


def failure_lines(invariant: RowsInvariant) -> list[str]:
    """One sentence per failing file, naming invariant 1 and the first failing rows."""
    lines: list[str] = []
    by_file: dict[str, list[str]] = {}
    labels = {"rows_without_disposition": "without a disposition", "rows_with_several_dispositions":
              "with several dispositions", "rows_not_read": "never read", "rows_with_unknown_disposition":
              "with an unknown disposition"}
    for kind, label in labels.items():
        for e in invariant["examples"].get(kind, []):
            row = "row ?" if e.get("row") is None else f"row {e['row']}"
            what = f" ({', '.join(e['dispositions'])})" if e.get("dispositions") else ""
            by_file.setdefault(e["file"], []).append(f"{row} {label}{what}")
    for f in invariant["files"]:
        if f["holds"]:
            continue
        parts = [f"{f['rows_read']:,} rows read, {f['total']:,} with a disposition"]
        for n, label in ((f["rows_without_disposition"], "unaccounted for"),
                         (f["rows_with_several_dispositions"], "with several dispositions"),
                         (f["rows_not_read"], "in lineage but never read"),
                         (f["rows_with_unknown_disposition"], "with an unknown disposition")):
            if n:
                parts.append(f"{n:,} {'row' if n == 1 else 'rows'} {label}")
        if f["table"] is None:
            parts.append("a file no reader read")
        shown = by_file.get(f["file"], [])
        lines.append(f"Invariant 1 (rows read = Σ dispositions) fails for {f['file']}: " + "; ".join(parts)
                     + (f"; first examples: {', '.join(shown[:5])}" if shown else ""))
    return lines


def quarantine_summary(quarantine: pl.DataFrame) -> list[QuarantineCount]:
    """Quarantined rows per file, table and reason code, in a stable order."""
    grouped = quarantine.group_by("source_file", "table", "reason_code").agg(pl.len().alias("rows"))
    return [
        {"file": str(f), "table": str(t), "reason_code": str(r), "rows": int(n)}
        for f, t, r, n in grouped.sort("source_file", "table", "reason_code").iter_rows()
    ]
