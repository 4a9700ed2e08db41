"""The identity stage of a batch: ``identify`` runs identity over the canonical tables.

    identify(tables, source_merges, settings, target=None, work=None) -> Identified

It resolves identity (``identity_plan``), joins identity's merges with the extract's
own merge messages (``merges.merge_map``) and gives the rules stage its view of the data:
one patient per person (``merges.people``). The target index is read before, in its own
layout (``migrate.target_index``). With ``work`` (the run's ``.work/`` folder) identity's
large frames are handed on as staged Parquet, each reader scanning it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from migrate.identity import IdentityPlan, IdentitySettings, Model, identity_plan
from migrate.identity.merges import merge_map, people
from migrate.outputs import write_parquet
from migrate.staging import sink

STAGED = ("patients", "duplicates", "exceptions")  # IdentityResult's frames handed on as work/identity-*.parquet


@dataclass(frozen=True)
class Identified:
    """What the identity stage hands on.

    ``patients``, ``duplicates``, ``exceptions``: identity's frames (``IdentityResult``:
    every source patient with its verdicts, the candidate pairs, identity's flags), as scans
    of Parquet staged in the run's work folder (or of the frames themselves without one).
    ``identity_merges``: identity's own merges; ``at_target``: survivors found in the target
    index; ``model``: what identity learned; ``totals``: ``IdentityResult.counts``.
    ``merges``: every merged ``patient_key -> survivor_key`` (identity and source merges,
    chains followed). ``people``: survivors and their re-pointed referrals, contacts and
    codes, the rows the rules stage and the FHIR output read.
    """

    # memory: scans: the patient table, pairs and flags are read from work/ by each reader
    # (not held from identity to the end of the run: 0.3 GB at 1M, 1.5 GB at 5M patients).
    # Held: the merge maps and the target matches (a row per merged or matched patient).
    patients: pl.LazyFrame
    duplicates: pl.LazyFrame
    exceptions: pl.LazyFrame
    identity_merges: pl.DataFrame
    at_target: pl.DataFrame
    model: Model
    totals: dict[str, int]
    merges: pl.DataFrame
    people: dict[str, pl.LazyFrame]

    def at_target_by_number(self) -> pl.LazyFrame:
        """patient_key of the survivors the target index holds by NHS number (updated, not created)."""
        at_target = self.at_target
        return at_target.filter(pl.col("match_method") == "nhs_number").select("patient_key").lazy()

    def counts(self, merged_by_source: int, superseded_rows: int) -> dict[str, int]:
        """Identity's headline numbers (merged: after review's merges), with the extract's own
        merges and superseded rows."""
        return self.totals | {"merged": self.identity_merges.height, "merged_by_source": merged_by_source,
                              "superseded_rows": superseded_rows}


def handed_on(result: IdentityPlan, work: Path | None) -> dict[str, pl.LazyFrame]:
    """``result``'s patients, duplicates and exceptions as scans of ``work/identity-<name>.parquet``
    (written here: the patients sunk from their plan, never collected), or lazy over the
    frames (the patients collected) without ``work``."""
    if work is None:
        # memory: whole: without a work folder (tests, in-memory callers) the patients are a frame
        return {"patients": result.patients.collect().lazy(),
                **{name: getattr(result, name).lazy() for name in STAGED if name != "patients"}}
    work.mkdir(parents=True, exist_ok=True)
    # memory: streamed: the canonical patients read a batch at a time beside identity's verdicts
    staged = {"patients": pl.scan_parquet(sink(result.patients, work / "identity-patients.parquet"))}
    return staged | {name: pl.scan_parquet(write_parquet(getattr(result, name), work / f"identity-{name}.parquet"))
                     for name in STAGED if name != "patients"}


def identify(tables: Mapping[str, pl.LazyFrame], source_merges: pl.DataFrame, settings: IdentitySettings,
             target: pl.LazyFrame | None = None, work: Path | None = None) -> Identified:
    """Identity over canonical ``tables`` (patients, referrals, contacts, codes).

    ``source_merges`` are the extract's merge messages (``canonical.MERGES``);
    ``target`` the new provider's patient index (canonical ``TARGET_INDEX`` columns), if any;
    ``work`` the folder identity's large frames are staged in. Invariant: every canonical
    row of ``tables`` is in ``people`` exactly once (merged patient rows re-pointed,
    merged patient rows left out of ``people["patients"]``).
    """
    result = identity_plan(tables["patients"], tables["referrals"], settings, target)
    merges = merge_map(result.merges, source_merges)
    frames = handed_on(result, work)
    identified = Identified(frames["patients"], frames["duplicates"], frames["exceptions"], result.merges,
                            result.at_target, result.model, result.counts(), merges,
                            people(frames["patients"], tables, merges))
    del result  # the frames are on disk now (with ``work``)
    return identified
