"""Exact duplicates: one valid NHS number on several source ids, and who survives.

Records sharing a valid NHS number are split into *clusters* that agree on birth date and
sex (a blank birth date or an unknown sex takes the group's value when the group has only
one). Each cluster of two or more records merges into one survivor, chosen by the
survivorship order of the settings; two clusters of one number are a conflict (the number
was given to two different people, or one record is wrong): reported, never merged.

The surviving patient then carries, field by field, the most recent non-blank value of its
cluster ("most recent" by the settings' recency order).
"""

from __future__ import annotations

from dataclasses import dataclass

import polars as pl

from migrate.identity.prepare import KNOWN_SEX
from migrate.identity.settings import IdentitySettings

# Criterion -> (sort column, descending) over the columns ``resolve_exact`` expects.
ORDER: dict[str, tuple[tuple[str, bool], ...]] = {
    "nhs_number_verified": (("verified", True),),
    "most_complete": (("completeness", True),),
    "earliest_record": (("source_file", False), ("source_row", False)),
    "latest_record": (("source_file", True), ("source_row", True)),
    "earliest_referral": (("first_referral", False),),
    "latest_referral": (("last_referral", True),),
}
REASON = {
    "nhs_number_verified": "verified NHS number",
    "most_complete": "most complete demographics",
    "earliest_record": "earliest record",
    "latest_record": "most recent record",
    "earliest_referral": "earliest referral",
    "latest_referral": "most recent referral",
}
PAIR_SCHEMA: dict[str, pl.DataType] = {"key_a": pl.String(), "key_b": pl.String(), "match_type": pl.String(),
                                       "patient_key": pl.String(), "evidence": pl.String()}


@dataclass(frozen=True)
class ExactResult:
    """``survivors``: patient_key -> survivor_key for every record of a merged cluster (the
    survivor maps to itself); ``pairs``: exact and conflict pairs with ``key_a`` < ``key_b``,
    the patient their flag is filed under (``patient_key``) and evidence."""

    survivors: pl.DataFrame
    pairs: pl.DataFrame


def sort_columns(order: tuple[str, ...]) -> tuple[list[str], list[bool]]:
    """Sort columns and directions of a survivorship/recency order, patient key last."""
    cols: list[str] = []
    desc: list[bool] = []
    for criterion in order:
        for col, d in ORDER[criterion]:
            cols.append(col)
            desc.append(d)
    return [*cols, "patient_key"], [*desc, False]


def _fill_when_single(col: str, over: list[str]) -> pl.Expr:
    """``col``, or where blank the one value the rest of the group agrees on."""
    known = pl.col(col).drop_nulls()
    return pl.coalesce(pl.col(col), pl.when(known.n_unique().over(over) == 1).then(known.first().over(over)))


def resolve_exact(rows: pl.DataFrame, settings: IdentitySettings) -> ExactResult:
    """Merge and conflict decisions over ``rows``.

    ``rows`` columns: patient_key, nhs (valid number or null), birth_date, sex, source_file,
    source_row, verified, completeness, first_referral, last_referral.
    """
    # memory: ``is_duplicated`` (a count a distinct number), not ``len().over`` (a group of row
    # indices a number, over every patient: +~0.5 GB transient at 5M patients)
    shared = rows.filter(pl.col("nhs").is_not_null() & pl.col("nhs").is_duplicated())
    if shared.height == 0:
        return ExactResult(pl.DataFrame(schema={"patient_key": pl.String(), "survivor_key": pl.String()}),
                           pl.DataFrame(schema=PAIR_SCHEMA))
    cols, desc = sort_columns(settings.survivor_order)
    shared = shared.with_columns(
        pl.when(pl.col("sex").cast(pl.String).is_in(KNOWN_SEX)).then(pl.col("sex").cast(pl.String)).alias("sex_k"),
        pl.len().over("nhs").alias("ids"),
    ).with_columns(_fill_when_single("birth_date", ["nhs"]).alias("bd_c"))
    shared = shared.with_columns(_fill_when_single("sex_k", ["nhs", "bd_c"]).alias("sex_c"))
    cluster = ["nhs", "bd_c", "sex_c"]
    shared = shared.sort(cols, descending=desc, nulls_last=True).with_columns(
        pl.col("patient_key").first().over(cluster).alias("survivor_key"),
        pl.len().over(cluster).alias("size"),
        pl.int_range(pl.len()).over(cluster).alias("rank"),
    )
    reason = _deciding_reason(shared, cluster, settings)
    merged = shared.filter(pl.col("size") > 1)
    survivors = merged.select("patient_key", "survivor_key").sort("patient_key")

    def agrees(col: str, what: str) -> pl.Expr:
        a, b = pl.col(f"{col}"), pl.col(f"{col}_s")
        return (pl.when(a.is_null() | b.is_null()).then(pl.lit(f"{what} blank on one record"))
                .when(a == b).then(pl.lit(f"{what} agrees")).otherwise(pl.lit(f"{what} differs")))

    heads = merged.filter(pl.col("rank") == 0).select(
        "survivor_key", pl.col("birth_date").alias("birth_date_s"), pl.col("sex_k").alias("sex_k_s"))
    exact = (merged.filter(pl.col("rank") > 0).join(heads, on="survivor_key")
             .join(reason, on=cluster, how="left", nulls_equal=True)
             .select(
                 pl.min_horizontal("patient_key", "survivor_key").alias("key_a"),
                 pl.max_horizontal("patient_key", "survivor_key").alias("key_b"),
                 pl.lit("exact_nhs_number").alias("match_type"),
                 pl.col("survivor_key").alias("patient_key"),
                 pl.format("same NHS number on {} source ids; {}; {}; survivor {} ({}); merged",
                           "ids", agrees("birth_date", "birth date"), agrees("sex_k", "sex"), "survivor_key",
                           "reason").alias("evidence"),
             ))
    # One representative per cluster; two clusters of a number conflict.
    reps = shared.filter(pl.col("rank") == 0).select("nhs", "patient_key", "birth_date", "sex_k", "ids")
    other = reps.select("nhs", pl.col("patient_key").alias("other"), pl.col("birth_date").alias("birth_date_s"),
                        pl.col("sex_k").alias("sex_k_s"))
    conflict = (reps.join(other, on="nhs").filter(pl.col("patient_key") < pl.col("other")).select(
        pl.col("patient_key").alias("key_a"), pl.col("other").alias("key_b"), pl.lit("conflict").alias("match_type"),
        pl.col("patient_key"),
        pl.format("same NHS number on {} source ids; {}; {}; not merged",
                  "ids", agrees("birth_date", "birth date"), agrees("sex_k", "sex")).alias("evidence"),
    ))
    pairs = pl.concat([exact, conflict]).cast(PAIR_SCHEMA).sort("key_a", "key_b")  # type: ignore[arg-type]
    return ExactResult(survivors, pairs)


def _deciding_reason(ranked: pl.DataFrame, cluster: list[str], settings: IdentitySettings) -> pl.DataFrame:
    """Per cluster, the first survivorship criterion on which its top two records differ."""
    top = ranked.filter((pl.col("size") > 1) & (pl.col("rank") <= 1))
    checks = []
    for criterion in settings.survivor_order:
        differs = pl.any_horizontal([pl.col(c).n_unique() > 1 for c, _ in ORDER[criterion]])
        checks.append(differs.alias(criterion))
    per = top.group_by(cluster).agg(checks) if checks else top.group_by(cluster).agg()
    text: pl.Expr = pl.lit("lowest patient key")
    for criterion in reversed(settings.survivor_order):
        text = pl.when(pl.col(criterion)).then(pl.lit(REASON[criterion])).otherwise(text)
    return per.select(*cluster, text.alias("reason"))


def survivor_values(frame: pl.DataFrame, survivors: pl.DataFrame, settings: IdentitySettings) -> pl.DataFrame | None:
    """Per survivor (``patient_key``), the most recent non-blank value of each survivorship
    field of its cluster (``<field>__best``), or None when there is nothing to replace.
    ``frame``: patients with the recency columns (``resolve_exact``'s) and the fields;
    ``survivors``: patient_key -> survivor_key of the merged clusters' records."""
    if survivors.height == 0 or not settings.survivorship_fields:
        return None
    cols, desc = sort_columns(settings.recency_order)
    fields = [f for f in settings.survivorship_fields if f in frame.columns]
    # memory: the merged clusters' rows only (semi join first: a row per merged record)
    group = frame.join(survivors.select("patient_key"), on="patient_key", how="semi").select(
        list(dict.fromkeys([*cols, *fields]))).join(survivors, on="patient_key").sort(
        cols, descending=desc, nulls_last=True)

    def blank(col: str) -> pl.Expr:
        value = pl.col(col)
        if col == "sex":
            return value.is_null() | (value.cast(pl.String) == "unknown")
        if frame.schema[col] == pl.String:
            return value.is_null() | (value.str.strip_chars() == "")
        return value.is_null()

    return group.group_by("survivor_key").agg(
        [pl.col(f).filter(~blank(f)).first().alias(f"{f}__best") for f in fields]).rename(
        {"survivor_key": "patient_key"})


def with_survivor_values(frame: pl.LazyFrame, best: pl.DataFrame | None) -> pl.LazyFrame:
    """``frame`` (patients, in order) with each survivor's fields replaced by ``best``
    (``survivor_values``); other rows unchanged, order kept."""
    if best is None:
        return frame
    fields = [c.removesuffix("__best") for c in best.columns if c != "patient_key"]
    fields = [f for f in fields if f in frame.collect_schema().names()]
    joined = frame.join(best.lazy(), on="patient_key", how="left", maintain_order="left")
    return joined.with_columns(
        [pl.coalesce(pl.col(f"{f}__best"), pl.col(f)).alias(f) for f in fields]).drop(
        [c for c in best.columns if c != "patient_key"])


def survivor_demographics(frame: pl.DataFrame, survivors: pl.DataFrame, settings: IdentitySettings) -> pl.DataFrame:
    """``frame`` (patients with first/last_referral) with each survivor's fields replaced by the
    most recent non-blank value of its cluster; other rows unchanged, order kept."""
    best = survivor_values(frame.drop("survivor_key", strict=False), survivors, settings)
    # memory: ``frame`` is already whole (the caller's); the plan adds the best values to it
    return frame if best is None else with_survivor_values(frame.lazy(), best).collect()
