"""The rules stage of a batch: cohorts and flags over one patient per person.

    classify(people, pack, cutover, identity_exceptions, work) -> Classified  (scans of work/rules/)

The rule pack's cohorts and flags are evaluated over the survivors and their re-pointed
rows (``identity.merges.people``); identity's own flags (NHS number, duplicates, at
target) join the exceptions, one row per subject and flag code.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import polars as pl

from migrate import sharing
from migrate.rules.flags import EXCEPTIONS_SCHEMA, SORT_KEYS, combine_exceptions
from migrate.rules.engine import evaluate
from migrate.rules.model import RulePack
from migrate.staging import HashedKeys, SortedKeys, pulled, sink, sorted_by_ranges, write_part


@dataclass(frozen=True)
class Classified:
    """The rules stage's outputs, as scans of the Parquet files ``classify`` wrote into the
    run's work folder: ``cohorts`` (per referral, sorted by ``referral_key``),
    ``patient_cohorts`` (per survivor, by ``patient_key``), ``exceptions`` (rules' and
    identity's flags, in ``flags.SORT_KEYS`` order) and ``sharing`` (per survivor:
    ``migrate.sharing.state``; no row order: its readers join it), which dispositions,
    FHIR, patients.parquet and the run folder's tables read. Nothing is held: each reader
    reads what it needs (a reader that collects says why, next to it)."""

    cohorts: pl.LazyFrame
    patient_cohorts: pl.LazyFrame
    exceptions: pl.LazyFrame
    sharing: pl.LazyFrame


def sharing_state(people: Mapping[str, pl.LazyFrame], pack: RulePack, cutover: date) -> pl.LazyFrame:
    """Each patient's sharing state by the one sharing rule (``migrate.sharing.state``):
    over ``people["sharing"]`` when given (a run gives every source's entries, on
    survivors), else over the coded entries and patient settings of ``people``. The
    latest entry wins whatever the cut-over (``cutover`` is kept for the callers' sake)."""
    del cutover
    return sharing.state(_entries(people, pack))


def _entries(people: Mapping[str, pl.LazyFrame], pack: RulePack) -> pl.LazyFrame:
    return people["sharing"] if "sharing" in people else sharing.entries(people, pack)


def sharing_from_features(features: pl.LazyFrame) -> pl.LazyFrame:
    """The sharing columns of the rules engine's ``patient_features`` (the deciding entry,
    without the rows of setting entries: see ``migrate.sharing.state``)."""
    return features.select(
        "patient_key", pl.col("sharing_blocked").alias("blocked"), pl.col("latest_sharing_code").alias("latest_code"),
        pl.col("latest_sharing_date").alias("latest_date"), pl.col("latest_sharing_source").alias("latest_source"))


PARTITION_PATIENTS = 500_000  # survivors whose rules are evaluated at a time (``classify``)
_SEED = 20221001  # the partitions' hash seed: which partition a patient lands in changes nothing


def partition_of(column: str, partitions: int) -> pl.Expr:
    """The partition (0 .. ``partitions`` - 1) of each row by a stable hash of ``column``
    (a survivor's key; a null key in partition 0)."""
    return (pl.col(column).hash(seed=_SEED) % partitions).fill_null(0)


STAGE_ROWS = 200_000  # rows read at a time while the people's tables are split (``stage_partitions``)
PART = "__partition"


def stage_partitions(people: Mapping[str, pl.LazyFrame], partitions: int, folder: Path) -> list[dict[str, pl.LazyFrame]]:
    """``people`` split into ``partitions`` by survivor, each table read once: for each
    partition, its survivors' patients, referrals, codes and sharing entries (by
    ``patient_key``) and the contacts of those referrals (the features read contacts only
    through their referral; a contact of no referral is in none), as scans of Parquet
    parts written under ``folder`` (rows in the order read).

    # memory: a batch of ``STAGE_ROWS`` rows at a time, each read when the last is written
    # (``staging.pulled``: ``collect_batches`` ran ahead of the writes); for the contacts, every
    # referral key's hash and partition, sorted and looked up by binary search
    # (``staging.HashedKeys``: 14.3M keys at 5M patients), where a semi join per partition read
    # the contacts again for each partition. (A streaming join of the contacts with the keys held ~0.5 GB more at 1M:
    # +1.16 GB over its entry against +0.67, measured.)
    """
    written: dict[str, list[list[Path]]] = {}

    def split(name: str, frame: pl.LazyFrame, mark: Callable[[pl.DataFrame], pl.DataFrame]) -> None:
        paths: list[list[Path]] = [[] for _ in range(partitions)]
        (folder / name).mkdir(parents=True, exist_ok=True)
        for batch in pulled(frame, STAGE_ROWS, folder / name):  # memory: a batch at a time, read when asked
            for (part,), rows in mark(batch).group_by(PART, maintain_order=True):
                i = int(part)
                path = folder / name / f"{i:05d}-{len(paths[i]):06d}.parquet"
                write_part(rows.drop(PART), path)
                paths[i].append(path)
        written[name] = paths

    by_patient = partition_of("patient_key", partitions).cast(pl.UInt32).alias(PART)
    for name, frame in people.items():
        if name != "contacts":
            split(name, frame, lambda batch: batch.with_columns(by_patient))
    if "contacts" in people:
        # memory: held: every referral key's 64-bit hash with its partition, sorted (``HashedKeys``: 12 bytes a
        # key, 0.17 GB for the 14.3M referrals at 5M patients), built a batch of referrals at a time: each
        # contact goes to its referral's partition. The keys' text, collected and sorted, held +0.8 GB there.
        hashed = HashedKeys()
        for i in range(partitions):
            for batch in pulled(_scan(written["referrals"][i], people["referrals"]).select("referral_key"), STAGE_ROWS,
                                folder / "referral-keys"):  # memory: a batch of keys at a time
                hashed.add(batch.get_column("referral_key"), pl.repeat(i, batch.height, dtype=pl.Int32, eager=True))
        if hashed.sorted():  # each referral key once (and no two hashes equal)
            split("contacts", people["contacts"], lambda batch: batch.with_columns(
                hashed.lookup(batch.get_column("referral_key")).cast(pl.UInt32).alias(PART))
                .filter(pl.col(PART).is_not_null()))
        else:  # a key in two partitions, or two keys' hashes equal: the keys themselves
            del hashed
            split("contacts", *_by_referral_text(people, written, partitions))
    return [{name: _scan(written[name][i], frame) for name, frame in people.items()} for i in range(partitions)]


def _by_referral_text(people: Mapping[str, pl.LazyFrame], written: Mapping[str, list[list[Path]]],
                      partitions: int) -> tuple[pl.LazyFrame, Callable[[pl.DataFrame], pl.DataFrame]]:
    """The contacts and how each batch of them is marked with its referral's partition, by the
    referral keys' text: what ``stage_partitions`` does when two referral keys' hashes are equal."""
    # memory: whole: every referral key with its partition, sorted (``SortedKeys``: 14.3M keys at 5M patients,
    # 16 + 4 bytes each and the keys' text); only when two hashes are equal (above)
    referrals = pl.concat([_scan(written["referrals"][i], people["referrals"]).select(
        "referral_key", pl.lit(i, dtype=pl.UInt32).alias(PART)) for i in range(partitions)]).collect()
    index = SortedKeys(referrals.get_column("referral_key"), referrals.get_column(PART))
    del referrals
    if _in_two(index):  # a key in two partitions: its contacts go to both
        pairs = pl.DataFrame([index.keys, index.values]).unique()  # the same rows, sorted: no second read
        return (people["contacts"].join(pairs.lazy(), on="referral_key", how="inner", maintain_order="left"),
                lambda batch: batch)
    return people["contacts"], lambda batch: batch.with_columns(
        index.lookup(batch.get_column("referral_key")).alias(PART)).filter(pl.col(PART).is_not_null())


def _in_two(index: SortedKeys) -> bool:
    """Whether a key of ``index`` (sorted, with its partition) is in two partitions: a key
    repeated with another partition than the one before it (repeated in one partition is
    no conflict)."""
    values = index.values
    assert values is not None
    n = values.len()
    return n > 1 and bool((index.repeats() & (values.slice(1) != values.slice(0, n - 1))).any())


def _scan(paths: list[Path], like: pl.LazyFrame) -> pl.LazyFrame:
    """The parts ``paths`` as one scan; with none, an empty frame of ``like``'s columns."""
    return pl.scan_parquet(paths) if paths else pl.LazyFrame(schema=like.collect_schema())


def partitions_for(people: Mapping[str, pl.LazyFrame]) -> int:
    """Enough partitions for ``PARTITION_PATIENTS`` survivors each."""
    # memory: a count
    survivors = int(people["patients"].select(pl.len()).collect(engine="streaming").item())
    return max(1, -(-survivors // PARTITION_PATIENTS))


OUTPUTS = ("cohorts", "patient_cohorts", "exceptions", "sharing")


def classify(people: Mapping[str, pl.LazyFrame], pack: RulePack, cutover: date,
             identity_exceptions: pl.DataFrame | pl.LazyFrame, work: Path,
             partitions: int | None = None) -> Classified:
    """Cohorts, exceptions and sharing state of ``pack`` at ``cutover`` over ``people``
    (survivors and their referrals, contacts and codes; a run adds ``sharing``, every
    source's sharing entries on survivors), with identity's flags added; written under
    ``work/rules`` and handed on as scans (``Classified``).

    The rules are evaluated a partition of survivors at a time (``partitions``; default
    ``partitions_for``; the tables split once by ``stage_partitions``): nothing in a pack
    looks across patients, so each partition's rows are what the whole evaluation gives
    for them, and the partitions' results merged by their keys are the whole results
    (exceptions: ``combine_exceptions`` keeps each subject's rows in the order given, and
    a subject is in one partition).
    """
    # memory: the evaluation (a patient's features aggregate all their referrals; the cohort
    # and flag plans read both frames) holds one partition of ``PARTITION_PATIENTS``
    # survivors; each partition's results are written to Parquet as it finishes, and the
    # stage's outputs are files merged from them (cohorts and patient cohorts streamed
    # through a sorted merge; the exceptions' dedupe and sort hold the exceptions, ~0.1 GB estimated
    # at 1M patients, while they are written). Nothing is held after the stage.
    # The sharing decision, once: the rules' features (sharing_state, latest_sharing_*) and
    # the sharing state dispositions and FHIR read are the same decision.
    folder = work / "rules"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    found = _entries(people, pack)
    decided = pl.scan_parquet(sink(sharing.decide(found), folder / "sharing-decided.parquet"))
    n = partitions or partitions_for(people)
    tables = {**people, "sharing": found, DECIDED: decided}
    parts = stage_partitions(tables, n, folder / "people") if n > 1 else [tables]
    written: dict[str, list[Path]] = {name: [] for name in OUTPUTS}
    for part, mine in enumerate(parts):
        # memory: one partition's results (``PARTITION_PATIENTS`` survivors), written below
        results = evaluate({k: v for k, v in mine.items() if k != DECIDED}, pack, cutover, mine[DECIDED]).collect()
        results["sharing"] = sharing.state(mine["sharing"], mine[DECIDED]).collect()
        for name in OUTPUTS:
            path = folder / f"{name}-{part:05d}.parquet"
            write_part(results[name], path)
            written[name].append(path)
        del results
    shutil.rmtree(folder / "people", ignore_errors=True)
    cohorts = sink(_merged(written["cohorts"], "referral_key", folder / "cohorts-ranges"), folder / "cohorts.parquet")
    patient_cohorts = sink(_merged(written["patient_cohorts"], "patient_key", folder / "patient-cohorts-ranges"),
                           folder / "patient-cohorts.parquet")
    exceptions = sink(_exceptions([*(pl.scan_parquet(p) for p in written["exceptions"]), identity_exceptions.lazy()],
                                  folder / "exceptions-ranges"), folder / "exceptions.parquet")
    return Classified(pl.scan_parquet(cohorts), pl.scan_parquet(patient_cohorts), pl.scan_parquet(exceptions),
                      pl.scan_parquet(written["sharing"]))


DECIDED = "__sharing_decided"  # ``sharing.decide`` of the entries, split with the people


RANGE_ROWS = 1_000_000  # rows of the partitions' results merged (and sorted) at a time


def _merged(paths: list[Path], key: str, folder: Path) -> pl.LazyFrame:
    """The parts (each sorted by ``key``) as one frame sorted by ``key``, rows of one key in
    the parts' order: a range of keys at a time (``staging.sorted_by_ranges``), each part read
    for the range alone (its row groups are in key order, so the others are skipped).

    # memory: one range of ``RANGE_ROWS`` rows. polars' ``merge_sorted`` of the ten parts at
    # 5M patients (14.3M cohorts) held +1,969 MB while sunk (measured, benchmarks/rules.md).
    """
    scans = [pl.scan_parquet(path) for path in paths]
    return sorted_by_ranges(lambda inside: pl.concat([s.filter(inside(key)) for s in scans]),
                            pl.concat([s.select(key) for s in scans]), key, [key], folder, RANGE_ROWS,
                            scans[0].collect_schema())


def _exceptions(parts: list[pl.LazyFrame], folder: Path) -> pl.LazyFrame:
    """``combine_exceptions`` of ``parts`` (the partitions' flags and identity's), a range of
    subjects at a time: its rows are deduplicated and ordered by subject (``SORT_KEYS``), so
    each subject type's ranges of subject keys, in order, give the same rows as the whole.

    # memory: one range of ``RANGE_ROWS`` flags; the whole dedupe and sort held +1,847 MB for
    # the 1.86M flags at 5M patients (their evidence and action texts; measured).
    """
    frames = [p.select(list(EXCEPTIONS_SCHEMA)) for p in parts]
    # memory: the subject types (a few)
    present = (pl.concat([f.select("subject_type").unique() for f in frames]).unique()
               .collect(engine="streaming").get_column("subject_type").to_list())
    kinds = [None] * (None in present) + sorted(k for k in present if k is not None)  # nulls first, as sorted
    ranged: list[pl.LazyFrame] = []
    for kind in kinds or [None]:
        of_kind = [f.filter(pl.col("subject_type").eq_missing(kind)) for f in frames]

        def combined(inside: Callable[[str], pl.Expr], of_kind: list[pl.LazyFrame] = of_kind) -> pl.LazyFrame:
            return combine_exceptions([f.filter(inside("subject_key")) for f in of_kind])

        ranged.append(sorted_by_ranges(combined, pl.concat([f.select("subject_key") for f in of_kind]), "subject_key",
                                       list(SORT_KEYS), folder / f"{len(ranged):02d}", RANGE_ROWS, EXCEPTIONS_SCHEMA))
    return pl.concat(ranged)
