"""Merges applied: who each merged patient became, and their rows re-pointed to the survivor.

Two sources of merges meet here: identity's exact NHS-number duplicates
(``IdentityResult.merges``) and the extract's own merge messages (HL7 ADT^A40,
``Ingested.merges``: ``prior_patient_key`` folds into ``patient_key``). ``merge_map``
joins them into one ``patient_key -> survivor_key`` map with chains followed (A into B
into C gives A -> C); ``repoint`` moves a table's rows onto the survivors; ``people`` is
the view the rules stage reads: one patient per person.

Pure functions of frames; nothing here reads or writes files.
"""

from __future__ import annotations

from collections.abc import Mapping

import polars as pl

from migrate import canonical

MAX_CHAIN = 8  # links followed; real chains are one or two long
CHILD_TABLES = ("referrals", "contacts", "codes")


def merge_map(identity_merges: pl.DataFrame, source_merges: pl.DataFrame) -> pl.DataFrame:
    """``patient_key -> survivor_key`` for every merged patient, sorted by ``patient_key``.

    ``identity_merges`` has patient_key, survivor_key; ``source_merges`` has patient_key
    (the survivor) and prior_patient_key (the record that folds into it). Where both name
    a patient, identity's merge is kept. Invariant: no survivor is itself merged (chains
    are followed) and no patient maps to itself.
    """
    pairs = pl.concat([
        identity_merges.select("patient_key", "survivor_key"),
        source_merges.select(pl.col("prior_patient_key").alias("patient_key"),
                             pl.col("patient_key").alias("survivor_key")),
    ]).unique(subset="patient_key", keep="first", maintain_order=True)
    for _ in range(MAX_CHAIN):  # each pass follows one more link
        followed = pairs.join(pairs.rename({"patient_key": "survivor_key", "survivor_key": "next"}), on="survivor_key",
                              how="left").with_columns(pl.coalesce("next", "survivor_key").alias("survivor_key"))
        followed = followed.drop("next").filter(pl.col("patient_key") != pl.col("survivor_key"))
        if followed.equals(pairs):
            break
        pairs = followed
    return pairs.sort("patient_key")


def repoint(frame: pl.LazyFrame, merges: pl.DataFrame) -> pl.LazyFrame:
    """``frame`` (with ``patient_key``) with the rows of merged patients moved to their survivor."""
    if merges.height == 0:
        return frame
    return frame.join(merges.lazy(), on="patient_key", how="left", maintain_order="left").with_columns(
        pl.coalesce("survivor_key", "patient_key").alias("patient_key")).drop("survivor_key")


def people(patients: pl.DataFrame | pl.LazyFrame, tables: Mapping[str, pl.LazyFrame],
           merges: pl.DataFrame) -> dict[str, pl.LazyFrame]:
    """One patient per person: the surviving ``patients`` rows (canonical columns) and the
    referrals, contacts and codes of every record merged into them, re-pointed."""
    # memory: lazy: a plan over ``patients`` (identity's staged scan in a batch), not a copy
    # of the survivors held beside it.
    survivors = patients.lazy().join(merges.lazy(), on="patient_key", how="anti").select(
        canonical.PATIENTS.schema.keys())
    return {"patients": survivors, **{t: repoint(tables[t], merges) for t in CHILD_TABLES}}
