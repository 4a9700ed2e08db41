"""Patients the new provider already holds: source patients matched to its index.

The target index is a frame with ``local_id`` and ``nhs_number`` and, where known,
``family_name``, ``given_names``, ``birth_date``, ``sex`` and ``postcode`` (the synthetic
extract's ``target-index.csv``). A patient matches a target record by valid NHS number;
failing that, when either side lacks a valid number, by demographics scoring at or above
the review threshold — such a match is reported for review, never taken on trust.
"""

from __future__ import annotations

import numpy as np
import polars as pl

from migrate.errors import InputError
from migrate.identity import nhs_number
from migrate.identity.blocking import PART_COLUMNS, candidate_pairs
from migrate.identity.model import Model
from migrate.identity.prepare import prepare
from migrate.identity.probable import reachable, score_pairs
from migrate.identity.settings import IdentitySettings

REQUIRED = ("local_id", "nhs_number")
OPTIONAL = ("family_name", "given_names", "birth_date", "sex", "postcode")
# Sex as target systems write it -> canonical.
SEX_CODES = {"m": "male", "male": "male", "1": "male", "f": "female", "female": "female", "2": "female",
             "i": "other", "o": "other", "other": "other", "9": "other", "u": "unknown", "unknown": "unknown",
             "0": "unknown"}
AT_TARGET_SCHEMA: dict[str, pl.DataType] = {"patient_key": pl.String(), "at_target_id": pl.String(),
                                            "match_method": pl.String(), "score": pl.Float64(),
                                            "evidence": pl.String()}


def normalise_index(target_index: pl.LazyFrame | pl.DataFrame, settings: IdentitySettings) -> pl.DataFrame:
    """The target index with canonical types: NHS number without spaces or dashes (and
    ``nhs`` = it when valid), birth date as a date, sex as the canonical words.

    Raises InputError naming the missing columns when ``local_id`` or ``nhs_number`` is absent.
    """
    lazy = target_index.lazy()
    names = lazy.collect_schema().names()
    absent = [c for c in REQUIRED if c not in names]
    if absent:
        raise InputError("the target index lacks required column(s)",
                         [f"missing column {c}; the header has {len(names)} column(s)" for c in absent])
    schema = lazy.collect_schema()
    birth = pl.col("birth_date")
    if "birth_date" in names and schema["birth_date"] == pl.String:
        birth = birth.str.strip_chars().str.to_date("%Y-%m-%d", strict=False)
    # memory: whole: the target index (one row per patient the receiving system holds): any source patient may match
    # any of its rows
    frame = lazy.select(
        pl.col("local_id").cast(pl.String),
        pl.col("nhs_number").cast(pl.String).str.replace_all(r"[\s-]", "").alias("nhs_number"),
        *[pl.col(c).cast(pl.String) for c in ("family_name", "given_names", "postcode") if c in names],
        *([birth.cast(pl.Date).alias("birth_date")] if "birth_date" in names else []),
        *([pl.col("sex").cast(pl.String).str.strip_chars().str.to_lowercase().replace_strict(
            SEX_CODES, default=None, return_dtype=pl.String).alias("sex")] if "sex" in names else []),
    ).collect()  # memory: the target index, whole (above)
    return frame.with_columns(
        pl.when(nhs_number.is_valid(settings)).then(pl.col("nhs_number")).alias("nhs"))


def target_prior(model: Model, settings: IdentitySettings, matched: int, numbered: int, index_size: int) -> float:
    """The prior for a (patient, target record) pair: the share of the extract's patients
    the target holds — measured on those with a valid number (``matched`` of ``numbered``),
    smoothed towards ``model.duplicates_per_record`` weighing ``strength.prior`` patients —
    spread over the index's records."""
    ms = settings.model
    share = (matched + ms.prior_strength * ms.duplicates_per_record) / (numbered + ms.prior_strength)
    return min(share / max(index_size, 1), 0.5)


def match_target(records: pl.DataFrame, alive: pl.Series, target_index: pl.LazyFrame | pl.DataFrame,
                 settings: IdentitySettings, model: Model) -> pl.DataFrame:
    """One row per surviving patient found in the target index (``AT_TARGET_SCHEMA``).

    ``records``: ``prepare`` of the extract's patients (``key`` the patient_key, ``nhs`` the
    valid number or null); ``alive``: per record, whether it is a surviving patient (merged
    ones are not matched); ``model``: the extract's estimated model (its prior is replaced
    by ``target_prior``). By NHS number first (the lowest local id when the index repeats a
    number); the rest by demographics, best score per patient (then lowest id). Twins are
    never matched.
    """
    target = normalise_index(target_index, settings)
    numbers = target.filter(pl.col("nhs").is_not_null()).group_by("nhs").agg(
        pl.col("local_id").min(), pl.len().alias("records"))
    # memory: masks over the records (a bit a record): the survivors, those with a valid
    # number, those matched by it and the rest — not copies of the survivors' keys and
    # numbers (+~0.5 GB at 5M patients) for the joins that picked them.
    nhs = records.get_column("nhs")
    numbered = alive & nhs.is_not_null()
    found = numbered & nhs.is_in(numbers.get_column("nhs").implode()).fill_null(False)
    rest = alive & ~found
    by_number = (
        records.filter(found).select(pl.col("key").alias("patient_key"), "nhs")
        .join(numbers, on="nhs")
        .select(
            "patient_key", pl.col("local_id").alias("at_target_id"), pl.lit("nhs_number").alias("match_method"),
            pl.lit(1.0).alias("score"),
            pl.format("NHS number matches target record {}{}", "local_id",
                      pl.when(pl.col("records") > 1).then(pl.format(" (and {} more)", pl.col("records") - 1))
                      .otherwise(pl.lit(""))).alias("evidence"),
        )
    )
    right = prepare(target, "local_id", "nhs")
    # Blocking reads only the key columns: the filters copy those, not every prepared column.
    keyed = {c for rule in settings.blocking_rules for part in rule for side in PART_COLUMNS[part] for c in side}
    columns = records.select("idx", "key", "nhs", *sorted(keyed - {"nhs"}))
    # Two valid numbers that differ are two different people: only pairs where one side has
    # no valid number are compared, so each side is cut down before blocking.
    no_right = right.filter(pl.col("nhs").is_null())
    no_left = columns.filter(rest & nhs.is_null())
    # memory: the numbered patients that share a block key with a numberless target record
    # only (a few); laying out every numbered patient copied and blocked the whole table
    # again (+1.4 GB at 5M patients). The blocks holding a target record keep all their
    # patients, so the pairs and the cap are unchanged.
    numbered_left = columns[_meeting(columns, no_right, settings, rest & nhs.is_not_null())]
    pairs = pl.concat([
        _pairs_between(no_left, right, settings),
        _pairs_between(numbered_left, no_right, settings),
    ])
    linking = model.with_prior(target_prior(model, settings, by_number.height, int(numbered.sum()), target.height))
    pairs = reachable(pairs, records, right, linking, settings, settings.review_threshold)
    scored = score_pairs(pairs, records, right, linking, settings, min_score=settings.review_threshold).filter(
        ~pl.col("twin"))
    by_demographics = (
        scored.sort(["key_a", "score", "key_b"], descending=[False, True, False])
        .group_by("key_a", maintain_order=True).first()
        .select(
            pl.col("key_a").alias("patient_key"), pl.col("key_b").alias("at_target_id"),
            pl.lit("demographics").alias("match_method"), "score",
            pl.format("no NHS number agreement with target record {}; demographic {}", "key_b",
                      "evidence").alias("evidence"),
        )
    )
    out = pl.concat([by_number, by_demographics]).cast(AT_TARGET_SCHEMA)  # type: ignore[arg-type]
    return out.sort("patient_key")


def _meeting(left: pl.DataFrame, right: pl.DataFrame, settings: IdentitySettings, among: pl.Series
             ) -> pl.Series:
    """The positions (ascending) of the rows of ``left`` picked by ``among`` (a mask) that
    share, for a blocking rule either way round, its key with a row of ``right``: the only
    ones that can pair with ``right``."""
    # memory: a bit a row of ``left`` marks those met; each rule way looks every row's key up
    # in the (few) keys of ``right`` (``is_in``: a set of ``right``'s keys), not a semi join
    # of every row's key columns (+~0.4 GB transient at 5M patients, measured alone: +0.3).
    met = np.zeros(left.height, dtype=bool)
    for rule in settings.blocking_rules:
        lcols = tuple(c for part in rule for c in PART_COLUMNS[part][0])
        rcols = tuple(c for part in rule for c in PART_COLUMNS[part][1])
        for lc, rc in {(lcols, rcols), (rcols, lcols)}:
            names = [f"k{n}" for n in range(len(lc))]
            keys = right.select([pl.col(c).alias(k) for c, k in zip(rc, names)]).drop_nulls().unique()
            if keys.height == 0:
                continue
            hit = left.select(pl.struct([pl.col(c).alias(k) for c, k in zip(lc, names)]).is_in(
                keys.select(pl.struct(names)).to_series().implode()).fill_null(False)).to_series()
            met |= (hit & among).to_numpy()
    return pl.Series("_row", np.flatnonzero(met), dtype=pl.UInt32)


def _pairs_between(left: pl.DataFrame, right: pl.DataFrame, settings: IdentitySettings) -> pl.DataFrame:
    """Candidate pairs between two subsets (``i``/``j`` are the ``idx`` of the full frames)."""
    if left.height == 0 or right.height == 0:
        return pl.DataFrame(schema={"i": pl.UInt32(), "j": pl.UInt32()})
    return candidate_pairs(left, right, settings)[0].select("i", "j")
