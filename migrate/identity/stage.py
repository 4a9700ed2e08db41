"""The identity stage of a batch: ``identify`` runs identity over the canonical tables.

    identify(tables, source_merges, settings, target=None) -> Identified

It resolves identity (``resolve_identity``), joins identity's merges with the extract's
own merge messages (``merges.merge_map``) and gives the rules stage its view of the data:
one patient per person (``merges.people``). The target index is read before, in its own
layout (``migrate.target_index``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import polars as pl

from migrate.identity import IdentityResult, IdentitySettings, resolve_identity
from migrate.identity.merges import merge_map, people


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
             target: pl.LazyFrame | None = None) -> Identified:
    """Identity over canonical ``tables`` (patients, referrals, contacts, codes).

    ``source_merges`` are the extract's merge messages (``canonical.MERGES``);
    ``target`` the new provider's patient index (canonical ``TARGET_INDEX`` columns), if any. Invariant: every canonical
    row of ``tables`` is in ``people`` exactly once (merged patients' rows re-pointed,
    merged patient rows left out of ``people["patients"]``).
    """
    result = resolve_identity(tables["patients"], tables["referrals"], settings, target)
    merges = merge_map(result.merges, source_merges)
    return Identified(result, merges, people(result.patients, tables, merges))
