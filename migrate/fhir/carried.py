"""The rows the FHIR stage sends, chosen by a bitmap of carried source rows, not a join.

``dispositions.carried`` picks a table's rows to send by a semi join of the table with its
carried ``(source_file, source_row)`` pairs. Streamed a chunk at a time (as the FHIR stage's
staging reads them) that join still builds a hash table of every carried pair: measured on
the contacts of 200k patients (2.1M rows) +505 MB, and +2,039 MB for 5x the rows
(benchmarks/fhir.md) — at 1M patients the largest part of the run process's peak, ~8 GB at
5M. Here the carried rows of each table are one bit per source row: a table's files laid
end to end (each as long as its highest carried row + 1), set where the row's disposition
is carried (``dispositions.CARRIED``), built from the dispositions a chunk at a time. A row
is kept when its bit is set: a filter expression (a literal bitmap gathered at the row's
position), so each chunk is filtered on its own, with no state that grows with the rows.
It relies on ``source_row`` being a position in its file (a CSV's 1-based data row, an HL7
feed's message index: ``migrate.sources``), so a file's bits are as many as its rows.

The rows kept are exactly the semi join's (``tests/fhir/test_carried.py`` compares them on
generated dispositions), and in the table's own order. The patients likewise
(``carried_patients``): a patient by its own row's bit, a merged record by its survivor's
disposition.
"""

from __future__ import annotations

from collections.abc import Mapping

import polars as pl

from migrate.dispositions import CARRIED
from migrate.staging import batches

CHUNK_ROWS = 500_000  # dispositions read at a time while the bitmap is built


def carried_rows(children: Mapping[str, pl.LazyFrame], decided: pl.LazyFrame) -> dict[str, pl.LazyFrame]:
    """Each of ``children`` (referrals, contacts, codes: frames with ``source_file`` and
    ``source_row``) filtered to the rows whose disposition in ``decided`` (``source_file``,
    ``source_row``, ``table``, ``disposition``) is carried — the rows
    ``dispositions.carried`` gives, in the frame's order."""
    keep = decided.filter(pl.col("disposition").cast(pl.String).is_in(list(CARRIED)))
    return {table: frame.filter(_is_carried(keep.filter(pl.col("table").cast(pl.String) == table)))
            for table, frame in children.items()}


def carried_patients(patients: pl.LazyFrame, merges: pl.DataFrame, decided: pl.LazyFrame) -> pl.LazyFrame:
    """``patients`` (with ``survivor_key``) whose survivor is carried — the patients
    ``dispositions.carried`` gives, in the frame's order — by the bitmap of carried patients
    rows, not a semi join with every carried patient's key.

    A patient that is its own survivor is kept when its own row is carried (a patient key is
    one canonical row: its disposition is that row's); a merged record (``merges``: its
    survivor) when its survivor's row is — those survivors are few, and looked up by key.

    # memory: the semi join hashed every carried patient's key twice (a unique, then the join's
    # build side): the FHIR stage's patients split +1.2-1.5 GB at 5M patients, and again in
    # planning the bundles (benchmarks/fhir.md); here a bit per patients source row.
    """
    keep = decided.filter(pl.col("disposition").cast(pl.String).is_in(list(CARRIED))
                          & (pl.col("table").cast(pl.String) == "patients"))
    survivors = merges.get_column("survivor_key").unique()
    # memory: the carried survivors of merged records (no more than the merges)
    kept = (keep.filter(pl.col("patient_key").is_in(survivors.implode())).select("patient_key").unique()
            .collect(engine="streaming").get_column("patient_key"))
    merged = pl.col("survivor_key").is_not_null() & (pl.col("survivor_key") != pl.col("patient_key"))
    return patients.filter(pl.when(merged).then(pl.col("survivor_key").is_in(kept.implode()))
                           .otherwise(_is_carried(keep)))


def _is_carried(keep: pl.LazyFrame) -> pl.Expr:
    """True for a row whose (source_file, source_row) is one of ``keep``'s (a bitmap lookup)."""
    rows = keep.select(pl.col("source_file").cast(pl.String), pl.col("source_row").cast(pl.Int64))
    # memory: one row per source file (its highest carried row)
    tops = rows.group_by("source_file").agg(pl.col("source_row").max()).sort("source_file").collect(engine="streaming")
    tops = tops.filter(pl.col("source_row").is_not_null() & (pl.col("source_row") >= 0))
    if tops.height == 0:
        return pl.lit(False)
    sizes = {str(f): int(top) + 1 for f, top in tops.iter_rows()}
    offsets: dict[str, int] = {}
    total = 0
    for name, length in sizes.items():
        offsets[name], total = total, total + length
    # memory: held: one bit per source row of the child tables (10.7M contacts at 1M: 1.3 MB;
    # 53M at 5M: 6.7 MB) and a key per source file: each chunk is filtered by it on its own.
    bits = pl.Series("carried", [False], dtype=pl.Boolean).extend_constant(False, total - 1)
    for chunk in batches(rows, CHUNK_ROWS):
        at = _position(chunk, offsets, sizes).drop_nulls()
        if at.len():
            bits = bits.scatter(at, True)
    row = pl.col("source_row").cast(pl.Int64)
    # The file's place among the bitmap's files by an Enum cast (an unknown file: null), not
    # replace_strict, which does not stream in polars 2.1 (it held every row: s6-write's finding).
    files = list(sizes)
    place = pl.col("source_file").cast(pl.String).cast(pl.Enum(files), strict=False).to_physical()
    offset = pl.lit(pl.Series([offsets[f] for f in files], dtype=pl.Int64)).gather(place)
    size = pl.lit(pl.Series([sizes[f] for f in files], dtype=pl.Int64)).gather(place)
    inside = (row >= 0) & (row < size)
    return (inside & pl.lit(bits).gather(pl.when(inside).then(offset + row).otherwise(0))).fill_null(False)


def _position(chunk: pl.DataFrame, offsets: dict[str, int], sizes: dict[str, int]) -> pl.Series:
    """Each carried row's bit (null for a row outside the bitmap: a null or negative row)."""
    return chunk.select(
        pl.when(pl.col("source_row").is_between(0, pl.col("source_file").replace_strict(sizes, default=None) - 1))
        .then(pl.col("source_file").replace_strict(offsets, default=None, return_dtype=pl.Int64)
              + pl.col("source_row")).alias("at")).to_series()
