"""Probable duplicates: candidate pairs scored by the estimated model, with their reasons.

Each candidate pair (``blocking``) gets a level per comparison (``compare``), each level a
match weight from the model estimated on this extract (``model``); the pair's match weight
is their sum with the prior, its score the probability that the two records are one
person: 1 / (1 + 2^-weight). Pairs scoring at least ``thresholds.probable`` are
``probable`` (PROBABLE_DUPLICATE, never merged), at least ``thresholds.review``
``possible``. Twins (``compare._twin``, ``rules/identity.yaml`` twins) are never paired, whatever their score.

Every scored pair carries ``match_weight``, ``contributions`` (comparison, level, weight —
the prior and the NHS-number term included) and ``evidence``, the same in words a reviewer
reads ("surname similar (jaro-winkler >= 0.92) +6.1"), never a value of a field.
"""

from __future__ import annotations

import math

import polars as pl

from migrate.identity.compare import CHEAP, CHUNK, compare
from migrate.identity.model import Model, match_weights, tf_columns
from migrate.identity.settings import IdentitySettings

CONTRIBUTION = pl.Struct({"comparison": pl.String(), "level": pl.String(), "weight": pl.Float64()})
# What a reviewer reads for each comparison: its name, and per test the words for the level.
FIELD_WORDS = {"family_name": "surname", "given_names": "given name", "birth_date": "birth date", "sex": "sex",
               "postcode": "postcode", "address": "address", "phone": "phone", "names_reversed": "name order"}
TEST_WORDS = {
    "exact": "equal", "jaro_winkler": "similar (jaro-winkler >= {t})", "part_of": "part of the other's name",
    "first_name": "first given name equal", "nickname": "nickname", "initial": "initial only",
    "typo": "cut short or two letters swapped",
    "day_month_swapped": "day/month swapped", "one_digit": "one digit differs", "within_days": "within {t} days",
    "one_edit": "one character differs", "district": "district equal", "similar": "similar (>= {t}, same numbers)",
    "reversed": "given and family names reversed", "else": "differs",
}
MISSING_WORDS = {"sex": "sex not recorded on both", "phone": "phone not on both", "address": "address not on both"}


def _words(settings: IdentitySettings, name: str) -> list[str]:
    """The reviewer's words for each level of comparison ``name``."""
    cmp = settings.comparison(name)
    assert cmp is not None
    out = []
    for lv in cmp.levels:
        text = TEST_WORDS[lv.test].format(t=f"{lv.threshold:g}" if lv.threshold is not None else "")
        if name == "family_name" and lv.test == "part_of":
            text = "part of a hyphenated surname"
        if name == "sex" and lv.test == "exact":
            text = "agrees"
        out.append(text if lv.test == "reversed" else f"{FIELD_WORDS[name]} {text}")
    return out


def _signed(col: str) -> pl.Expr:
    # concat_str, not pl.format inside when/then: polars 2.1 panics on that over broadcast columns
    w = pl.col(col).round(1)
    return pl.concat_str([pl.when(w >= 0).then(pl.lit("+")).otherwise(pl.lit("")), w.cast(pl.String)])


def explanations(settings: IdentitySettings, model: Model) -> tuple[pl.Expr, pl.Expr]:
    """(``contributions`` list of structs, ``evidence`` text) over a frame with the ``l_*``
    levels, ``w_*`` weights, ``match_weight``, ``score`` and ``nhs_differ``."""
    structs = [pl.struct(pl.lit("prior").alias("comparison"), pl.lit("prior").alias("level"),
                         pl.lit(round(model.prior_weight, 4)).alias("weight"))]
    texts: list[pl.Expr] = []
    for c in settings.comparisons:
        level = pl.col(f"l_{c.name}")
        labels = dict(enumerate(lv.label for lv in c.levels))
        words = dict(enumerate(_words(settings, c.name)))
        structs.append(pl.struct(
            pl.lit(c.name).alias("comparison"),
            level.replace_strict(labels, default=None, return_dtype=pl.String).fill_null("missing").alias("level"),
            pl.col(f"w_{c.name}").round(4).alias("weight")))
        said = pl.format("{} {}", level.replace_strict(words, default=None, return_dtype=pl.String),
                         _signed(f"w_{c.name}"))
        missing = MISSING_WORDS.get(c.name, f"{FIELD_WORDS[c.name]} missing")
        if c.name == "names_reversed":  # said only when it happened
            texts.append(pl.when(level == 0).then(said))
        elif c.name in ("family_name", "given_names"):  # reversed names: judged by names_reversed
            texts.append(pl.when(pl.col("reversed")).then(None).when(level.is_null()).then(pl.lit(missing))
                         .otherwise(said))
        else:
            texts.append(pl.when(level.is_null()).then(pl.lit(missing)).otherwise(said))
    structs.append(pl.struct(
        pl.lit("nhs_number").alias("comparison"),
        pl.when(pl.col("nhs_differ")).then(pl.lit("both valid, different")).otherwise(pl.lit("not both valid"))
        .alias("level"), pl.col("w_nhs_number").alias("weight")))
    texts.append(pl.when(pl.col("nhs_differ")).then(pl.format("different valid NHS numbers {}",
                                                              _signed("w_nhs_number"))))
    head = pl.format("score {}, match weight {} (prior {}): ", pl.col("score").round(2).cast(pl.String),
                     pl.col("match_weight").round(1).cast(pl.String), pl.lit(f"{model.prior_weight:.1f}"))
    evidence = head + pl.concat_str(texts, separator=", ", ignore_nulls=True)
    return pl.concat_list(structs).alias("contributions"), evidence.alias("evidence")


def score_levels(levels: pl.DataFrame, left: pl.DataFrame, right: pl.DataFrame, model: Model,
                 settings: IdentitySettings, min_score: float = 0.0) -> pl.DataFrame:
    """``key_a``, ``key_b``, ``nhs_a``, ``nhs_b``, ``twin``, ``match_weight``, ``score``,
    ``contributions`` and ``evidence`` for the pairs already compared (``levels`` with
    ``i`` into ``left``, ``j`` into ``right``) that score at least ``min_score``, in order.
    Explanations are built only for those pairs."""
    # memory: CHUNK pairs at a time: a pair's weights (a float a comparison and each term
    # frequency) are kept only for the pairs scoring ``min_score``; over a whole span's pairs
    # (~4M, ``blocking.CHUNK_PAIRS``) they were ~0.4 GB at once.
    return pl.concat([_score_slice(levels.slice(start, CHUNK), left, right, model, settings, min_score)
                      for start in range(0, max(levels.height, 1), CHUNK)])


def _score_slice(levels: pl.DataFrame, left: pl.DataFrame, right: pl.DataFrame, model: Model,
                 settings: IdentitySettings, min_score: float) -> pl.DataFrame:
    i = levels.get_column("i")
    frame = match_weights(levels, tf_columns(model, left, i), model).with_columns(
        (1.0 / (1.0 + 2.0 ** (-pl.col("match_weight")))).round(4).alias("score"))
    if min_score > 0:
        frame = frame.filter(pl.col("score") >= min_score)
    i, j = frame.get_column("i"), frame.get_column("j")
    frame = frame.with_columns(
        left.get_column("key").gather(i).alias("key_a"), right.get_column("key").gather(j).alias("key_b"),
        left.get_column("nhs").gather(i).alias("nhs_a"), right.get_column("nhs").gather(j).alias("nhs_b"),
    )
    contributions, evidence = explanations(settings, model)
    return frame.select("key_a", "key_b", "nhs_a", "nhs_b", "twin", "reversed", pl.col("match_weight").round(4), "score",
                        contributions, evidence)


def score_pairs(pairs: pl.DataFrame, left: pl.DataFrame, right: pl.DataFrame, model: Model,
                settings: IdentitySettings, min_score: float = 0.0) -> pl.DataFrame:
    """``score_levels`` of ``pairs`` (``i`` into ``left``, ``j`` into ``right``)."""
    levels = compare(pairs, left, right, settings).with_columns(pairs.get_column("i"), pairs.get_column("j"))
    return score_levels(levels, left, right, model, settings, min_score)


def reachable(pairs: pl.DataFrame, left: pl.DataFrame, right: pl.DataFrame, model: Model,
              settings: IdentitySettings, min_score: float) -> pl.DataFrame:
    """The ``pairs`` that could score ``min_score`` or more: the weights of the cheap
    comparisons (birth date, sex, postcode, phone, NHS numbers) plus the most each costly
    one (names, address) could add — the others cannot, whatever their names, and are not
    compared further."""
    if min_score <= 0 or pairs.height == 0:
        return pairs
    cheap = compare(pairs, left, right, settings, cheap=True)
    costly = [c for c in model.comparisons if c.name not in CHEAP]
    frame = cheap.with_columns(pairs.get_column("i"), pairs.get_column("j"),
                               *[pl.lit(None, dtype=pl.Int8).alias(f"l_{c.name}") for c in costly])
    tf_u = tf_columns(model, left, pairs.get_column("i"))
    weights = match_weights(frame, tf_u, model)
    bounds: list[pl.Expr] = []
    for c in costly:
        best = max(0.0, *c.weights())
        if c.name in tf_u:
            bounds.append(pl.max_horizontal(pl.lit(best), (c.m[0] / tf_u[c.name].clip(1e-12, 1.0)).log(2))
                          .fill_null(best))
        else:
            bounds.append(pl.lit(best))
    bound = weights.select(pl.sum_horizontal([pl.col("match_weight"), *bounds])).to_series()
    return pairs.filter(bound >= math.log2(min_score / (1 - min_score)))


def classify(scored: pl.DataFrame, settings: IdentitySettings) -> pl.DataFrame:
    """Probable (score >= probable threshold) and possible (>= review) pairs of ``scored``,
    twins left out; ``key_a`` < ``key_b``, sorted by keys."""
    kept = scored.filter(~pl.col("twin") & (pl.col("score") >= settings.review_threshold))
    return ordered(kept).with_columns(
        pl.when(pl.col("score") >= settings.probable_threshold).then(pl.lit("probable")).otherwise(pl.lit("possible"))
        .alias("match_type")).sort("key_a", "key_b")


def ordered(scored: pl.DataFrame) -> pl.DataFrame:
    """Pairs with ``key_a`` < ``key_b`` (keys swapped where needed)."""
    swap = pl.col("key_a") > pl.col("key_b")
    return scored.with_columns(
        pl.when(swap).then(pl.col("key_b")).otherwise(pl.col("key_a")).alias("key_a"),
        pl.when(swap).then(pl.col("key_a")).otherwise(pl.col("key_b")).alias("key_b"),
    )


__all__ = ["CONTRIBUTION", "classify", "reachable", "explanations", "ordered", "score_levels", "score_pairs"]
