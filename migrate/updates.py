"""Applying each key's rows in order: the state a table ends in, and where every row went.

A keyed canonical table may receive several rows for one key: HL7 updates (an A08 after
an A04, an S14 after an S12) or a later ``--mapping``'s delta row. They apply in order —
profile rank (the order of ``--mapping``), then message time (MSH-7 as a UTC instant; null
for extracts, which come first), then file and row — to a state that starts empty:

- a row changes the fields it *touches* (``__touched``, one bit per field in canonical
  order, set by the mapping): under ``updates: merge`` the fields it sent a value for or
  cleared with the explicit null ``""``; under ``updates: replace`` every field its profile
  maps. A field it leaves untouched keeps its value; fields no profile maps stay null;
- the state after each row (its *candidate*) is checked (``check``: required fields,
  references to parents, a contact's patient against its referral's). A row whose
  candidate fails is rejected — quarantined with its reason — and the state stays as it
  was: **a bad update never erases a good record**.

The final state of each key is one canonical row carrying the ``source_file`` and
``source_row`` of the last row applied (lineage names that message); the earlier applied
rows are ``superseded`` (disposition ``merged``).

Vectorised, no Python per row: each row's candidate is computed for every row at once
(per field, the position of the last row of the key that touched it, forward-filled, then
gathered). Whether a row is rejected depends on which earlier rows were, so rejections are
found by iteration: candidates are computed as if every row applied; the first failing row
of each key is truly rejected (every row before it passed on the true state); it is
removed and only the keys that had a failure are computed again. Each pass settles every
key without a failure and rejects at least one row of each other key.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import polars as pl

from migrate import canonical

# candidates -> (rows that pass, frames of rows that fail with __reason/__field/__message)
Check = Callable[[pl.DataFrame], tuple[pl.DataFrame, list[pl.DataFrame]]]
ORDER = "__order"  # struct(rank, at): the position of a row among all sources of its table
SUPERSEDED_SCHEMA: dict[str, pl.DataType] = {"source_file": pl.String(), "source_row": pl.Int64(),
                                             "table": pl.String(), "patient_key": pl.String()}


@dataclass(frozen=True)
class Applied:
    """What applying a table's rows gave.

    ``kept``: the final state of each key (every passing row of a table without a key);
    ``failed``: rejected rows with ``__reason``, ``__field`` and ``__message``;
    ``superseded``: rows applied and then replaced by a later row of their key;
    ``kept_previous``: rejected rows (``invalid`` ones included) whose key kept the state
    of an earlier row ("update rejected, previous state kept"); ``invalid``: the rows given
    as already failing, their messages noting the state kept.
    """

    kept: pl.DataFrame
    failed: list[pl.DataFrame]
    superseded: pl.DataFrame
    kept_previous: int
    invalid: pl.DataFrame | None = None


def touched_bits(fields: list[str], table: str) -> int:
    """The ``__touched`` bits of ``fields`` (canonical field names of ``table``)."""
    names = canonical.TABLES[table].field_names
    return sum(1 << names.index(f) for f in set(fields))


def order_columns() -> list[pl.Expr]:
    """The sort keys of the order rows apply in."""
    return [pl.col(ORDER).struct.field("rank"), pl.col(ORDER).struct.field("at"), pl.col("source_file"),
            pl.col("source_row")]


def _candidates(rows: pl.DataFrame, key: str, fields: tuple[str, ...]) -> pl.DataFrame:
    """``rows`` (sorted by key, then order) with each field's value in the state after the row."""
    i = pl.int_range(pl.len(), dtype=pl.Int64)
    first = pl.col(key).ne_missing(pl.col(key).shift(1))
    frame = rows.with_columns(i.alias("__i")).with_columns(
        pl.when(first).then(pl.col("__i")).forward_fill().alias("__start"))
    values = []
    for n, f in enumerate(fields):
        touched = pl.col("__touched") // (1 << n) % 2 == 1
        last = pl.when(touched).then(pl.col("__i")).forward_fill()
        source = pl.when(last >= pl.col("__start")).then(last)
        # Untouched so far: the row's own (blank) value, so a lone row is its own state.
        values.append(pl.when(source.is_null()).then(pl.col(f)).otherwise(pl.col(f).gather(source)).alias(f))
    return frame.with_columns(values).drop("__i", "__start")


def _failures(failed: list[pl.DataFrame]) -> pl.DataFrame | None:
    present = [f for f in failed if f.height]
    return pl.concat(present, how="diagonal_relaxed") if present else None


def apply_rows(table: str, frame: pl.DataFrame, check: Check, invalid: pl.DataFrame | None = None) -> Applied:
    """Apply ``frame``'s rows of canonical ``table`` in order (module docstring).

    ``frame`` has the table's canonical columns, ``source_file``, ``source_row``,
    ``__order`` and ``__touched``. ``invalid`` are rows of the table that already failed
    (the mapping's, with ``__message``): they apply nothing, but their message says which
    state their key kept. Invariant: every row of ``frame`` is in exactly one of ``kept``,
    ``failed`` and ``superseded``; ``invalid`` comes back as ``Applied.invalid``.
    """
    key = canonical.TABLES[table].key
    empty = pl.DataFrame(schema=SUPERSEDED_SCHEMA)
    unique = key is not None and frame.height > 0 and bool(frame[key].is_unique().all())
    if key is None or frame.height == 0 or (invalid is None and unique):
        passed, failed = check(frame)
        return Applied(passed, failed, empty, 0, invalid)
    if unique and invalid is not None and frame[key].null_count() == 0:
        return _unique_keys(table, key, frame, check, invalid)
    return _in_order(table, key, frame, check, invalid)


def _unique_keys(table: str, key: str, frame: pl.DataFrame, check: Check, invalid: pl.DataFrame) -> Applied:
    """``apply_rows`` where every row of ``frame`` has its own key: a row's state is the row,
    so only the keys that also have ``invalid`` rows need the ordered apply (to say which
    state the key kept); the others are checked as they are. Same result, without building
    every row's candidate state."""
    shared = frame[key].is_in(invalid[key].implode())
    alone, together = frame.filter(~shared), frame.filter(shared)
    passed, failed = check(alone)
    applied = (_in_order(table, key, together, check, invalid) if together.height
               else Applied(together, [], pl.DataFrame(schema=SUPERSEDED_SCHEMA), 0, invalid))
    kept = pl.concat([passed, applied.kept.select(passed.columns)], how="vertical").sort(
        pl.col(key), *order_columns(), nulls_last=False, maintain_order=True)
    return Applied(kept, [*failed, *applied.failed], applied.superseded, applied.kept_previous, applied.invalid)


def _in_order(table: str, key: str, frame: pl.DataFrame, check: Check, invalid: pl.DataFrame | None) -> Applied:
    """``apply_rows``'s general case: every state computed in order, rejections found by iteration."""
    empty = pl.DataFrame(schema=SUPERSEDED_SCHEMA)
    fields = canonical.TABLES[table].field_names
    everything = frame.with_columns(pl.lit(False).alias("__invalid"))
    if invalid is not None:
        everything = pl.concat([everything, invalid.with_columns(pl.lit(True).alias("__invalid"))],
                               how="diagonal_relaxed")
    everything = everything.sort(pl.col(key), *order_columns(), nulls_last=False,
                                 maintain_order=True).with_row_index("__seq")
    pending = everything.filter(~pl.col("__invalid")).drop("__invalid")
    states: list[pl.DataFrame] = []
    rejected: list[pl.DataFrame] = [everything.filter(pl.col("__invalid")).drop("__invalid")]
    while pending.height:
        passed, failed = check(_candidates(pending, key, fields))
        bad = _failures(failed)
        if bad is None:
            states.append(passed)
            break
        firsts = bad.sort("__seq").unique(key, keep="first", maintain_order=True)
        failing = firsts.select(key)
        states.append(passed.join(failing, on=key, how="anti"))
        rejected.append(firsts)
        pending = pending.join(failing, on=key, how="semi").join(firsts.select("__seq"), on="__seq", how="anti")
    applied = pl.concat(states, how="vertical_relaxed").sort("__seq") if states else pending.clear()
    last = applied[key].is_last_distinct()
    kept = applied.filter(last)
    superseded = applied.filter(~last).select("source_file", "source_row", pl.lit(table).alias("table"),
                                              "patient_key")
    rejected = [r for r in rejected if r.height]
    if not rejected:
        return Applied(kept.drop("__seq"), [], superseded, 0, invalid)
    noted, kept_previous = _note_previous(pl.concat(rejected, how="diagonal_relaxed"), applied, key)
    was_invalid = noted["__seq"].is_in(everything.filter(pl.col("__invalid"))["__seq"].implode())
    failures = noted.filter(~was_invalid).drop("__seq")
    return Applied(kept.drop("__seq"), [failures] if failures.height else [], superseded, kept_previous,
                   noted.filter(was_invalid).drop("__seq").select(invalid.columns) if invalid is not None else None)


def _note_previous(rejected: pl.DataFrame, applied: pl.DataFrame, key: str) -> tuple[pl.DataFrame, int]:
    """Rejected rows with the state their key kept named in the message, and how many had one."""
    earlier = applied.select(key, "__seq", pl.col("source_file").alias("__prev_file"),
                             pl.col("source_row").alias("__prev_row"))
    # both sorted by __seq (a global order), so each group is too
    noted = rejected.sort("__seq").join_asof(earlier.sort("__seq"), on="__seq", by=key, strategy="backward",
                                             check_sortedness=False)
    had = noted["__prev_row"].is_not_null()
    noted = noted.with_columns(
        pl.when(had).then(pl.concat_str([pl.col("__message"), pl.lit("; update rejected, the state from "),
                                         pl.col("__prev_file"), pl.lit(" row "),
                                         pl.col("__prev_row").cast(pl.String), pl.lit(" is kept")]))
        .otherwise(pl.col("__message")).alias("__message")).drop("__prev_file", "__prev_row")
    return noted, int(had.sum())
