"""Comparison levels of candidate pairs: for each declared comparison, the first level whose
test holds (``rules/identity.yaml`` comparisons), as a small integer per pair.

``compare(pairs, left, right, settings)`` takes pairs (``i`` into ``left``, ``j`` into
``right``, both ``prepare``d) and returns, in pair order, ``l_<comparison>`` (Int8 level
index, null when the field is missing on either record), ``nhs_differ`` (both numbers
valid and different) and ``twin`` (see ``_twin``). String similarities are computed by
``rapidfuzz.process.cpdist`` once per *distinct* pair of values (the records hold each
compared string as the id of its value: ``prepare.VOCABULARY``), never in a Python loop per
pair; pairs are compared in chunks so memory stays bounded.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import polars as pl
from rapidfuzz import fuzz, process
from rapidfuzz.distance import DamerauLevenshtein, JaroWinkler, Levenshtein

from migrate.identity.settings import Comparison, IdentitySettings, Level

CHUNK = 1_000_000  # pairs compared at a time: bounds memory whatever the pair count
_GATHERED = ("nhs", "bd", "sex", "pc_dist")


def _by_distinct_pair(a: pl.Series, b: pl.Series, compute: Callable[[pl.DataFrame], pl.DataFrame],
                      when: pl.Series | None = None) -> pl.DataFrame:
    """``compute`` over the distinct (a, b) value pairs only, spread back to every row.

    ``a`` and ``b`` are compared strings as their vocabularies' ids (categoricals,
    ``prepare.VOCABULARY``); ``compute`` gets a frame of strings ``x``, ``y`` (neither null)
    and returns it with result columns added. Rows where either value is null (or ``when``
    is false) get nulls. Rows are mapped to their distinct pair with numpy's ``unique``
    inverse, not a join: one sort of a u64 column; each distinct pair's strings are looked
    up from its first row.
    """
    shift = np.uint64(1 << 32)
    present = a.is_not_null() & b.is_not_null()
    if when is not None:
        present = present & when.fill_null(False)
    rows = np.flatnonzero(present.to_numpy())
    ids_a = a.to_physical().cast(pl.UInt64).to_numpy()[rows]
    ids_b = b.to_physical().cast(pl.UInt64).to_numpy()[rows]
    distinct, first, inverse = np.unique(ids_a * shift + ids_b, return_index=True, return_inverse=True)
    at = pl.Series(rows[first], dtype=pl.UInt32)
    values = pl.DataFrame({"x": a.gather(at).cast(pl.String), "y": b.gather(at).cast(pl.String)})
    results = compute(values).drop("x", "y")
    # row -> distinct pair -> result (null where not present)
    row = np.full(a.len(), -1, dtype=np.int64)
    row[rows] = inverse.reshape(-1)
    index = pl.Series("index", row).replace(-1, None).cast(pl.UInt32)
    return results.select(pl.all().gather(index))


def _cpdist(values: pl.DataFrame, scorer: Callable[..., Any]) -> np.ndarray:
    if values.height == 0:
        return np.zeros(0)
    return np.asarray(process.cpdist(values.get_column("x").to_list(), values.get_column("y").to_list(),
                                     scorer=scorer, workers=-1, dtype=np.float64), dtype=np.float64)


def _part(x: pl.Expr, y: pl.Expr) -> pl.Expr:
    """One name is a whole word of the other (``smith`` in ``smith jones``), not equal."""
    return (x != y) & (x.str.split(" ").list.contains(y) | y.str.split(" ").list.contains(x))


def _names(values: pl.DataFrame) -> pl.DataFrame:
    x, y = pl.col("x"), pl.col("y")
    return values.with_columns(pl.Series("jw", _cpdist(values, JaroWinkler.normalized_similarity)),
                               _part(x, y).alias("part"))


def _first_names(nicknames: pl.DataFrame) -> Callable[[pl.DataFrame], pl.DataFrame]:
    def compute(values: pl.DataFrame) -> pl.DataFrame:
        x, y = pl.col("x"), pl.col("y")
        hits = values.join(nicknames, on="x").join(nicknames.rename({"x": "y"}), on=["y", "g"], how="semi")
        nick = hits.select("x", "y").unique().with_columns(pl.lit(True).alias("nick"))
        initial = (x != y) & (((x.str.len_chars() == 1) & (y.str.slice(0, 1) == x))
                              | ((y.str.len_chars() == 1) & (x.str.slice(0, 1) == y)))
        # the ``typo`` test: cut short ("gu" for "gus", "chris" for "christopher"), or two
        # adjacent letters swapped ("jmaes") — slips of the same name, not another name
        cut = (x != y) & (pl.min_horizontal(x.str.len_chars(), y.str.len_chars()) >= 2) & (
            x.str.starts_with(y) | y.str.starts_with(x))
        swapped = (_cpdist(values, DamerauLevenshtein.distance) == 1) & (_cpdist(values, Levenshtein.distance) == 2)
        return values.join(nick, on=["x", "y"], how="left", maintain_order="left").with_columns(
            pl.col("nick").fill_null(False), initial.alias("initial"), (cut | pl.Series(swapped)).alias("slip"),
            pl.Series("jw", _cpdist(values, JaroWinkler.normalized_similarity)))
    return compute


def _scored(scorer: Callable[..., Any], name: str, scale: float = 1.0) -> Callable[[pl.DataFrame], pl.DataFrame]:
    return lambda values: values.with_columns(pl.Series(name, _cpdist(values, scorer) * scale))


def _addresses(values: pl.DataFrame) -> pl.DataFrame:
    return values.with_columns(pl.Series("ts", _cpdist(values, fuzz.token_set_ratio) / 100.0),
                               (pl.col("x") == pl.col("y")).alias("eq"))


def _level_expr(comparison: Comparison, missing: pl.Expr, test: Callable[[Level], pl.Expr]) -> pl.Expr:
    """The index of the first level whose test holds; null when ``missing``."""
    expr: Any = pl.when(missing).then(None)
    for n, level in enumerate(comparison.levels[:-1]):
        expr = expr.when(test(level)).then(pl.lit(n, dtype=pl.Int8))
    result: pl.Expr = expr.otherwise(pl.lit(len(comparison.levels) - 1, dtype=pl.Int8)).cast(pl.Int8)
    return result


def _tests(settings: IdentitySettings) -> dict[str, Callable[[Level], pl.Expr]]:
    """Comparison -> (level -> boolean expression over the chunk's similarity columns)."""
    s = pl.col

    def family(lv: Level) -> pl.Expr:
        return {"exact": s("jw_fam") == 1, "jaro_winkler": s("jw_fam") >= (lv.threshold or 0),
                "part_of": s("part_fam")}[lv.test]

    def given(lv: Level) -> pl.Expr:
        return {"exact": s("jw_giv") == 1, "first_name": s("jw_giv1") == 1, "nickname": s("nick_giv1"),
                "jaro_winkler": pl.max_horizontal("jw_giv1", "jw_giv") >= (lv.threshold or 0), "typo": s("slip_giv1"),
                "part_of": s("part_giv"), "initial": s("initial_giv1")}[lv.test]

    def birth(lv: Level) -> pl.Expr:
        a, b = s("bd_a"), s("bd_b")
        swapped = ((a.dt.year() == b.dt.year()) & (a.dt.month() == b.dt.day()) & (a.dt.day() == b.dt.month())
                   & (a != b))
        return {"exact": a == b, "day_month_swapped": swapped, "one_digit": s("dl_bd") <= 1,
                "within_days": (a - b).dt.total_days().abs() <= (lv.threshold or 0)}[lv.test]

    def postcode(lv: Level) -> pl.Expr:
        return {"exact": s("dl_pc") == 0, "one_edit": s("dl_pc") <= 1,
                "district": s("pc_dist_a") == s("pc_dist_b")}[lv.test]

    def address(lv: Level) -> pl.Expr:
        # compared only where the house numbers agree (null otherwise: not equal, not similar)
        return {"exact": s("eq_addr").fill_null(False),
                "similar": (s("ts_addr") >= (lv.threshold or 0)).fill_null(False)}[lv.test]

    return {
        "family_name": family, "given_names": given, "birth_date": birth,
        "sex": lambda lv: s("sex_a") == s("sex_b"), "postcode": postcode, "address": address,
        "phone": lambda lv: {"exact": s("dl_phone") == 0, "one_edit": s("dl_phone") <= 1}[lv.test],
        "names_reversed": lambda lv: s("reversed"),
    }


_MISSING: dict[str, tuple[str, ...]] = {
    "family_name": ("jw_fam",), "given_names": ("jw_giv",), "birth_date": ("bd_a", "bd_b"),
    "sex": ("sex_a", "sex_b"), "postcode": ("dl_pc",), "address": ("addr_a",), "phone": ("dl_phone",),
    "names_reversed": ("jw_cross_fam", "jw_cross_giv", "jw_fam", "jw_giv1"),
}


def _reversed(settings: IdentitySettings) -> pl.Expr:
    """Given and family names swapped between the records: each crossed pair at least the
    ``reversed`` level's similarity, and closer than the names as written."""
    cmp = settings.comparison("names_reversed")
    level = cmp.level("reversed") if cmp else None
    if level is None:
        return pl.lit(False)
    s = pl.col
    crossed = pl.min_horizontal("jw_cross_fam", "jw_cross_giv")
    straight = (s("jw_fam") + s("jw_giv1")) / 2
    return ((crossed >= (level.threshold or 0)) & (crossed > straight)).fill_null(False)


def _twin(settings: IdentitySettings) -> pl.Expr:
    """Twins (docs/domain.md section 6): the same surname and birth date, the same address
    (the same postcode when either has no address), names not given the wrong way round,
    and either the sex differs or the given names fall at one of ``twins.given_names``'
    levels — another name, not a spelling, shortening, nickname or initial of the same
    one (those are levels above it). A given name missing on either record is not another
    name. Evaluated over the chunk's ``l_given_names`` level."""
    s = pl.col
    same_place = pl.when(s("addr_a").is_not_null()).then(s("eq_addr").fill_null(False)).otherwise(s("dl_pc") == 0)
    levels = list(settings.twin_given_levels)
    other_name = s("l_given_names").is_in(levels).fill_null(False) if levels and settings.comparison(
        "given_names") else pl.lit(False)
    other_sex = (s("sex_a") != s("sex_b")).fill_null(False)
    return (~s("reversed") & (s("jw_fam") == 1) & (s("bd_a") == s("bd_b")) & same_place
            & (other_name | other_sex)).fill_null(False)


def compare(pairs: pl.DataFrame, left: pl.DataFrame, right: pl.DataFrame, settings: IdentitySettings,
            cheap: bool = False) -> pl.DataFrame:
    """Levels of every pair (module docstring), in ``pairs`` order. ``cheap``: only the
    ``CHEAP`` comparisons' levels and ``nhs_differ`` (no string similarities)."""
    nicknames = pl.DataFrame([(name, g) for g, group in enumerate(settings.nicknames) for name in group],
                             schema={"x": pl.String(), "g": pl.Int64()}, orient="row")
    out = [_compare_chunk(pairs.slice(start, CHUNK), left, right, settings, nicknames, cheap)
           for start in range(0, max(pairs.height, 1), CHUNK)]
    return pl.concat(out)


def _date_edits(a: pl.Series, b: pl.Series) -> pl.Series:
    """Per pair of birth dates: 0 when equal, 1 when their YYYYMMDD digits differ in one
    place or by two adjacent digits swapped (Damerau-Levenshtein 1), 2 otherwise; null when
    either is missing. Integer arithmetic over numpy arrays, no string distance (as one
    polars expression the eight digits of both sides were re-derived for every use: 90% of
    a comparison's time)."""
    def digits(dates: pl.Series) -> np.ndarray:
        n = (dates.dt.year().cast(pl.Int64) * 10_000 + dates.dt.month().cast(pl.Int64) * 100
             + dates.dt.day().cast(pl.Int64)).fill_null(0).to_numpy()
        return np.stack([(n // 10 ** (7 - k)) % 10 for k in range(8)], axis=1)
    x, y = digits(a), digits(b)
    differ = x != y
    count = differ.sum(axis=1)
    swap = (differ[:, :-1] & differ[:, 1:] & (x[:, :-1] == y[:, 1:]) & (x[:, 1:] == y[:, :-1])).any(axis=1)
    edits = np.where(count == 0, 0, np.where((count == 1) | ((count == 2) & swap), 1, 2)).astype(np.int8)
    missing = (a.is_null() | b.is_null()).to_numpy()
    return pl.Series("dl_bd", edits).scatter(np.flatnonzero(missing), None) if missing.any() else pl.Series(
        "dl_bd", edits)


def _edits(a: pl.Series, b: pl.Series) -> pl.Series:
    """Damerau-Levenshtein distance of two short codes per row (0 when equal; null when
    either is missing), computed only where they differ: no distinct-pair bookkeeping,
    which costs more than it saves on postcodes and phone numbers. ``a`` and ``b`` are ids
    of one vocabulary (equal ids, equal values); the strings are looked up where they differ."""
    frame = pl.DataFrame({"x": a, "y": b}).with_row_index("r")
    differ = frame.filter(pl.col("x").is_not_null() & pl.col("y").is_not_null() & (pl.col("x") != pl.col("y")))
    out = pl.Series("dl", [None] * a.len(), dtype=pl.Float64)
    out = out.scatter(frame.filter(pl.col("x") == pl.col("y")).get_column("r"), 0.0)
    if differ.height:
        out = out.scatter(differ.get_column("r"), _cpdist(differ.select(pl.col("x", "y").cast(pl.String)),
                                                           DamerauLevenshtein.distance))
    return out


CHEAP = ("birth_date", "sex", "postcode", "phone")  # compared without costly string similarities


def _compare_chunk(pairs: pl.DataFrame, left: pl.DataFrame, right: pl.DataFrame, settings: IdentitySettings,
                   nicknames: pl.DataFrame, cheap: bool = False) -> pl.DataFrame:
    i, j = pairs.get_column("i"), pairs.get_column("j")

    def by_pair(col_a: str, col_b: str, compute: Callable[[pl.DataFrame], pl.DataFrame], suffix: str,
                when: pl.Series | None = None) -> pl.DataFrame:
        found = _by_distinct_pair(left.get_column(col_a).gather(i), right.get_column(col_b).gather(j), compute, when)
        return found.rename({c: f"{c}_{suffix}" for c in found.columns})

    frame = pl.DataFrame([*[left.get_column(c).gather(i).alias(f"{c}_a") for c in _GATHERED],
                          *[right.get_column(c).gather(j).alias(f"{c}_b") for c in _GATHERED]])
    frame = frame.with_columns(
        _date_edits(frame.get_column("bd_a"), frame.get_column("bd_b")),
        _edits(left.get_column("pc").gather(i), right.get_column("pc").gather(j)).alias("dl_pc"),
        _edits(left.get_column("phone").gather(i), right.get_column("phone").gather(j)).alias("dl_phone"))
    tests = _tests(settings)
    nhs_differ = (pl.col("nhs_a") != pl.col("nhs_b")).fill_null(False).alias("nhs_differ")
    if cheap:
        return frame.select(*[_level_expr(c, pl.any_horizontal([pl.col(m).is_null() for m in _MISSING[c.name]]),
                                          tests[c.name]).alias(f"l_{c.name}")
                              for c in settings.comparisons if c.name in CHEAP], nhs_differ)
    jw = _scored(JaroWinkler.normalized_similarity, "jw")
    # Crossed names are compared only where a crossed initial agrees (names given the wrong
    # way round keep their initials); elsewhere they count as not reversed.
    init = (left.get_column("giv_init").gather(i) == right.get_column("fam_init").gather(j)) | (
        left.get_column("fam_init").gather(i) == right.get_column("giv_init").gather(j))
    init = init.fill_null(False)
    frame = pl.concat([
        frame,
        by_pair("fam", "fam", _names, "fam"), by_pair("giv", "giv", _names, "giv"),
        by_pair("giv1", "giv1", _first_names(nicknames), "giv1"),
        by_pair("fam", "giv1", jw, "cross_fam", init), by_pair("giv1", "fam", jw, "cross_giv", init),
    ], how="horizontal")
    # Addresses are compared (costly token-set similarity) only where their house numbers
    # agree; ``addr_a`` is true where both records have an address (null: missing on either;
    # an address that cleans to nothing is there, compared as missing).
    ids = pl.DataFrame({
        "b": right.get_column("addr").gather(j),
        "same": left.get_column("addr_nums").gather(i).eq_missing(right.get_column("addr_nums").gather(j)),
        "given": left.get_column("addr_given").gather(i) & right.get_column("addr_given").gather(j),
    }).select("b", "same", pl.when("given").then(True).alias("addr_a"))
    found = _by_distinct_pair(left.get_column("addr").gather(i), ids.get_column("b"), _addresses,
                              ids.get_column("same"))
    frame = pl.concat([frame, found.rename({"ts": "ts_addr", "eq": "eq_addr"}), ids.select("addr_a")],
                      how="horizontal")
    frame = frame.with_columns(_reversed(settings).alias("reversed"))
    # Names given the wrong way round are judged once, by names_reversed (whose weight is
    # that of the crossed names agreeing): the two name comparisons then add nothing.
    crossed = {"family_name", "given_names"}
    levels = [
        _level_expr(c, pl.any_horizontal([pl.col(m).is_null() for m in _MISSING[c.name]])
                    | (pl.col("reversed") if c.name in crossed else pl.lit(False)), tests[c.name])
        .alias(f"l_{c.name}") for c in settings.comparisons]
    return frame.with_columns(levels).select(*[f"l_{c.name}" for c in settings.comparisons], "reversed",
                                              nhs_differ, _twin(settings).alias("twin"))


__all__ = ["CHEAP", "CHUNK", "compare"]
