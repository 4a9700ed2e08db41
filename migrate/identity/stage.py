"""The identity stage of a batch: ``identify`` runs identity over the canonical tables.

    identify(tables, source_merges, settings, target_index=None) -> Identified

It resolves identity (``resolve_identity``), joins identity's merges with the extract's
own merge messages (``merges.merge_map``) and gives the rules stage its view of the data:
one patient per person (``merges.people``). The target index, when given, is the one file
this stage reads.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from migrate.identity import IdentityResult, IdentitySettings, resolve_identity
from migrate.identity.merges import merge_map, people


def read_target_index(path: Path) -> pl.LazyFrame:
    """The new provider's existing patients (CSV or Parquet), every column as text."""
    if path.suffix.lower() in (".parquet", ".pq"):
        return pl.scan_parquet(path).select(pl.all().cast(pl.String))
    return pl.scan_csv(path, infer_schema=False, encoding="utf8-lossy")


@dataclass(frozen=True)
class Identified:
    """What the identity stage hands on.

    ``result``: identity's decisions (patients with their verdicts, duplicates, flags,
    at-target matches). ``merges``: every merged ``patient_key -> survivor_key`` (identity
    and source merges, chains followed). ``people``: survivors and their re-pointed
    referrals, contacts and codes, the rows the rules stage and the FHIR output read.
    """

    result: IdentityResult
    merges: pl.DataFrame
    people: dict[str, pl.LazyFrame]

    def at_target_by_number(self) -> pl.LazyFrame:
        """patient_key of the survivors the target index holds by NHS number (updated, not created)."""
        at_target = self.result.at_target
        return at_target.filter(pl.col("match_method") == "nhs_number").select("patient_key").lazy()

    def counts(self, merged_by_source: int, superseded_rows: int) -> dict[str, int]:
        """Identity's headline numbers, with the extract's own merges and superseded rows."""
        return self.result.counts() | {"merged_by_source": merged_by_source, "superseded_rows": superseded_rows}


def identify(tables: Mapping[str, pl.LazyFrame], source_merges: pl.DataFrame, settings: IdentitySettings,
             target_index: Path | None = None) -> Identified:
    """Identity over canonical ``tables`` (patients, referrals, contacts, codes).

    ``source_merges`` are the extract's merge messages (``canonical.MERGES``);
    ``target_index`` the new provider's patient index, if any. Invariant: every canonical
    row of ``tables`` is in ``people`` exactly once (merged patients' rows re-pointed,
    merged patient rows left out of ``people["patients"]``).
    """
    target = read_target_index(target_index) if target_index is not None else None
    result = resolve_identity(tables["patients"], tables["referrals"], settings, target)
    merges = merge_map(result.merges, source_merges)
    return Identified(result, merges, people(result.patients, tables, merges))
