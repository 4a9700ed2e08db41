"""Probable duplicates: blocking, then vectorised similarity scoring of the candidate pairs.

Records are first *prepared*: names, postcode, phone and address normalised, block key
columns derived (birth date, its day/month swap, year, initials, Soundex codes, postcode
district). Candidate pairs are the records agreeing on every part of at least one
blocking key (``rules/identity.yaml`` blocking.keys), so their number grows with block
sizes, not with n²; a key value shared by more than ``max_block_size`` records is skipped.

Each pair is then scored 0-1 from per-field similarities (Jaro-Winkler over names with a
floor, adjacent letters transposed, nicknames, hyphenated surnames, names given the wrong
way round, birth date exact / day-month swapped / one edit, postcode and phone exact / one
edit / district, address token similarity). Each similarity becomes a match weight (a log2
Bayes factor between the field's ``disagree`` and ``agree`` weights, nothing when missing);
the sum with the prior becomes the score 1 / (1 + 2^-sum). String similarities are computed
by ``rapidfuzz.process.cpdist`` once per *distinct* pair of values, looked up through
integer ids, never in a Python loop per pair; pairs that cannot reach the review threshold
whatever their names are dropped before the names are compared. Evidence text names the
agreements, never the values.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import polars as pl
from rapidfuzz import fuzz, process
from rapidfuzz.distance import DamerauLevenshtein, JaroWinkler, Levenshtein

from migrate.identity.settings import FieldComparison, IdentitySettings

KNOWN_SEX = ("male", "female", "other")
# String columns compared through integer ids: column -> its id column (the position of the
# source value among the distinct source values; two ids may stand for one cleaned value).
ID_OF = {"fam": "fam_id", "giv": "giv_id", "giv1": "giv_id", "addr": "addr_id", "pc": "pc_id", "phone": "phone_id",
         "bd_text": "bd_id"}
# Blocking part -> (columns on the left record, columns on the right record).
PART_COLUMNS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "birth_date": (("bd_key",), ("bd_key",)),
    "birth_date_swapped": (("bd_swap",), ("bd_key",)),
    "birth_year": (("by",), ("by",)),
    "family_name": (("fam",), ("fam",)),
    "family_initial": (("fam_init",), ("fam_init",)),
    "family_phonetic": (("fam_ph",), ("fam_ph",)),
    "given_name": (("giv1",), ("giv1",)),
    "given_initial": (("giv_init",), ("giv_init",)),
    "given_phonetic": (("giv_ph",), ("giv_ph",)),
    "postcode": (("pc",), ("pc",)),
    "postcode_district": (("pc_dist",), ("pc_dist",)),
    "phone": (("phone",), ("phone",)),
    "names_reversed": (("giv1", "fam"), ("fam", "giv1")),
}
PAIR_SCHEMA: dict[str, pl.DataType] = {"i": pl.UInt32(), "j": pl.UInt32()}
_SOUNDEX = {**dict.fromkeys("bfpv", "1"), **dict.fromkeys("cgjkqsxz", "2"), **dict.fromkeys("dt", "3"),
            "l": "4", **dict.fromkeys("mn", "5"), "r": "6"}


# --- preparing records ----------------------------------------------------------------------

def _clean_name(col: str) -> pl.Expr:
    """Lower case, accents and punctuation dropped, hyphens as spaces; blank -> null."""
    text = (pl.col(col).cast(pl.String).str.normalize("NFKD").str.to_lowercase()
            .str.replace_all(r"[-_/]", " ").str.replace_all(r"[^a-z ]", "")
            .str.replace_all(r"\s+", " ").str.strip_chars())
    return pl.when(text == "").then(None).otherwise(text)


def soundex(name: str) -> str:
    """American Soundex of a lower-case name (letters only): e.g. robert -> r163."""
    letters = [c for c in name if "a" <= c <= "z"]
    if not letters:
        return ""
    out, last = [letters[0]], _SOUNDEX.get(letters[0], "")
    for c in letters[1:]:
        code = _SOUNDEX.get(c, "")
        if code and code != last:
            out.append(code)
        if c not in "hw":  # h and w do not separate two equal codes; vowels do
            last = code
    return ("".join(out) + "000")[:4]


def _by_distinct_value(base: pl.DataFrame, source: str, derive: Callable[[pl.DataFrame], pl.DataFrame],
                       id_name: str) -> pl.DataFrame:
    """``base`` with the columns ``derive`` adds to a frame of the distinct values of
    ``source`` (so each is computed once per value, not per row) and ``id_name``, the
    value's position among them (null for a null value)."""
    distinct = base.select(source).drop_nulls().unique(maintain_order=True).with_row_index(id_name)
    return base.join(derive(distinct), on=source, how="left", maintain_order="left")


def _name_parts(source: str, out: str) -> Callable[[pl.DataFrame], pl.DataFrame]:
    """Cleaned name (``out``), initial, Soundex; for given names also the first name ``giv1``."""
    def derive(distinct: pl.DataFrame) -> pl.DataFrame:
        cleaned = distinct.with_columns(_clean_name(source).alias(out))
        first = cleaned.get_column(out).str.split(" ").list.first() if out == "giv" else cleaned.get_column(out)
        codes = [soundex(v) if v else None for v in first.to_list()]
        extra = {"giv1": first} if out == "giv" else {}
        return cleaned.with_columns(
            *[v.alias(k) for k, v in extra.items()],
            first.str.slice(0, 1).alias(f"{out}_init"),
            pl.Series(f"{out}_ph", codes, dtype=pl.String),
        )
    return derive


def _postcodes(distinct: pl.DataFrame) -> pl.DataFrame:
    pc = pl.col("postcode").str.to_uppercase().str.replace_all(r"[^A-Z0-9]", "")
    pc = pl.when(pc == "").then(None).otherwise(pc)
    outward = pl.col("postcode").str.to_uppercase().str.strip_chars().str.extract(r"^([A-Z0-9]+)\s+[A-Z0-9]+$")
    return distinct.with_columns(
        pc.alias("pc"),
        pl.coalesce(outward, pl.when(pc.str.len_chars() >= 5).then(pc.str.slice(0, pc.str.len_chars() - 3)), pc)
        .alias("pc_dist"))


def _phones(distinct: pl.DataFrame) -> pl.DataFrame:
    phone = pl.col("phone_raw").str.replace_all(r"\D", "")
    return distinct.with_columns(pl.when(phone == "").then(None).otherwise(phone).alias("phone"))


def _addresses(distinct: pl.DataFrame) -> pl.DataFrame:
    addr = pl.col("address").str.to_lowercase().str.replace_all(r"[^a-z0-9]+", " ").str.strip_chars()
    return distinct.with_columns(pl.when(addr == "").then(None).otherwise(addr).alias("addr"))


def _birth_dates(distinct: pl.DataFrame) -> pl.DataFrame:
    day, month = pl.col("bd").dt.day(), pl.col("bd").dt.month()
    return distinct.with_columns(
        pl.col("bd").cast(pl.Int32).alias("bd_key"),
        pl.when((day <= 12) & (day != month)).then(pl.date(pl.col("bd").dt.year(), day, month).cast(pl.Int32))
        .alias("bd_swap"),
        pl.col("bd").dt.year().alias("by"),
        pl.col("bd").dt.strftime("%Y%m%d").alias("bd_text"),
    )


def prepare(frame: pl.DataFrame, key: str, valid_nhs: str | None) -> pl.DataFrame:
    """Comparison and block-key columns for each row of ``frame``.

    ``frame`` has canonical patient columns (any may be absent: treated as null);
    ``key`` names its identifier column, kept as ``key``; ``valid_nhs`` names a column
    holding the valid NHS number or null (None: no numbers). Output rows keep ``frame``'s
    order with ``idx`` = row position. Normalising is done once per distinct value.
    """
    def col(name: str, dtype: pl.DataType) -> pl.Expr:
        return pl.col(name).cast(dtype) if name in frame.columns else pl.lit(None, dtype=dtype)

    base = frame.select(
        pl.col(key).cast(pl.String).alias("key"),
        (pl.col(valid_nhs).cast(pl.String) if valid_nhs else pl.lit(None, dtype=pl.String)).alias("nhs"),
        col("family_name", pl.String()).alias("family_name"), col("given_names", pl.String()).alias("given_names"),
        col("birth_date", pl.Date()).alias("bd"),
        pl.when(col("sex", pl.String()).is_in(KNOWN_SEX)).then(col("sex", pl.String())).alias("sex"),
        col("postcode", pl.String()).alias("postcode"), col("phone", pl.String()).alias("phone_raw"),
        col("address", pl.String()).alias("address"),
    ).with_row_index("idx")
    for source, derive, id_name in (
        ("family_name", _name_parts("family_name", "fam"), "fam_id"),
        ("given_names", _name_parts("given_names", "giv"), "giv_id"),
        ("postcode", _postcodes, "pc_id"), ("phone_raw", _phones, "phone_id"), ("address", _addresses, "addr_id"),
        ("bd", _birth_dates, "bd_id"),
    ):
        base = _by_distinct_value(base, source, derive, id_name)
    return base.drop("family_name", "given_names", "postcode", "phone_raw", "address")


# --- blocking --------------------------------------------------------------------------------

def _key_frame(records: pl.DataFrame, columns: tuple[str, ...], max_block: int) -> pl.DataFrame:
    names = [f"k{n}" for n in range(len(columns))]
    keys = records.select("idx", *[pl.col(c).alias(k) for c, k in zip(columns, names)]).drop_nulls(names)
    return keys.filter(pl.len().over(names) <= max_block)


def candidate_pairs(left: pl.DataFrame, right: pl.DataFrame | None, settings: IdentitySettings) -> pl.DataFrame:
    """Distinct candidate pairs (``i`` left idx, ``j`` right idx) under the blocking keys.

    With ``right`` None the records are paired among themselves (i < j); otherwise every
    pair links a left record to a right one.
    """
    parts: list[pl.DataFrame] = []
    for key in settings.blocking_keys:
        lcols = tuple(c for part in key for c in PART_COLUMNS[part][0])
        rcols = tuple(c for part in key for c in PART_COLUMNS[part][1])
        names = [f"k{n}" for n in range(len(lcols))]
        directions = [(lcols, rcols)] if right is None or lcols == rcols else [(lcols, rcols), (rcols, lcols)]
        for lc, rc in directions:
            a = _key_frame(left, lc, settings.max_block_size).rename({"idx": "i"})
            b = _key_frame(left if right is None else right, rc, settings.max_block_size).rename({"idx": "j"})
            pairs = a.join(b, on=names, how="inner").select("i", "j")
            if right is None:
                pairs = pairs.filter(pl.col("i") != pl.col("j")).select(
                    pl.min_horizontal("i", "j").alias("i"), pl.max_horizontal("i", "j").alias("j"))
            parts.append(pairs.cast(PAIR_SCHEMA))  # type: ignore[arg-type]
    if not parts:
        return pl.DataFrame(schema=PAIR_SCHEMA)
    # One u64 per pair: deduplicating and sorting one integer column is far cheaper than two.
    shift = 1 << 32
    packed = pl.concat([p.select(pl.col("i").cast(pl.UInt64) * shift + pl.col("j")) for p in parts]).to_series()
    packed = packed.unique().sort()
    return pl.DataFrame({"i": (packed // shift).cast(pl.UInt32), "j": (packed % shift).cast(pl.UInt32)})


# --- scoring ----------------------------------------------------------------------------------

def _vocabulary(records: pl.DataFrame, col: str) -> pl.Series:
    """``col``'s value for each id of ``ID_OF[col]`` (position = id; ids missing from a
    subset of the prepared rows stay null)."""
    ids = records.select(ID_OF[col], col).drop_nulls(ID_OF[col]).unique(ID_OF[col])
    top = ids.get_column(ID_OF[col]).max()
    size = top + 1 if isinstance(top, int) else 0
    vocab = pl.Series(col, [None] * size, dtype=pl.String)
    return vocab.scatter(ids.get_column(ID_OF[col]), ids.get_column(col)) if ids.height else vocab


def _by_distinct_pair(ids_a: pl.Series, ids_b: pl.Series, vocab_a: pl.Series, vocab_b: pl.Series,
                      compute: Callable[[pl.DataFrame], pl.DataFrame]) -> pl.DataFrame:
    """``compute`` over the distinct (a, b) value pairs only, spread back to every row.

    ``ids_*`` index ``vocab_*``; ``compute`` gets a frame of strings ``x``, ``y`` and returns
    it with result columns added. Rows where either id is null get nulls.
    """
    shift = 1 << 32
    key = ids_a.cast(pl.UInt64) * shift + ids_b.cast(pl.UInt64)
    distinct = key.drop_nulls().unique()
    values = pl.DataFrame({
        "x": vocab_a.gather((distinct // shift).cast(pl.UInt32)),
        "y": vocab_b.gather((distinct % shift).cast(pl.UInt32)),
    })
    results = compute(values).drop("x", "y").with_columns(distinct.alias("k"))
    return key.alias("k").to_frame().join(results, on="k", how="left", maintain_order="left").drop("k")


def _cpdist(values: pl.DataFrame, scorer: Callable[..., Any]) -> np.ndarray:
    if values.height == 0:
        return np.zeros(0)
    return np.asarray(process.cpdist(values.get_column("x").to_list(), values.get_column("y").to_list(),
                                     scorer=scorer, workers=-1, dtype=np.float64), dtype=np.float64)


def _names(values: pl.DataFrame) -> pl.DataFrame:
    """Jaro-Winkler, adjacent transposition (Damerau-Levenshtein 1 but Levenshtein 2) and
    whether one name is a whole part of the other (hyphenated or double surnames)."""
    jw = _cpdist(values, JaroWinkler.normalized_similarity)
    swapped = (_cpdist(values, DamerauLevenshtein.distance) == 1) & (_cpdist(values, Levenshtein.distance) == 2)
    x, y = pl.col("x"), pl.col("y")
    part = (x.str.contains(" ") | y.str.contains(" ")) & (
        x.str.split(" ").list.contains(y) | y.str.split(" ").list.contains(x))
    return values.with_columns(pl.Series("jw", jw), pl.Series("transposed", swapped), part.alias("part"))


def _similarity(scorer: Callable[..., Any], scale: float = 1.0) -> Callable[[pl.DataFrame], pl.DataFrame]:
    return lambda values: values.with_columns(pl.Series("sim", _cpdist(values, scorer) * scale))


def _nicknames(settings: IdentitySettings) -> Callable[[pl.DataFrame], pl.DataFrame]:
    groups = pl.DataFrame([(name, g) for g, group in enumerate(settings.nicknames) for name in group],
                          schema={"x": pl.String(), "g": pl.Int64()}, orient="row")

    def compute(values: pl.DataFrame) -> pl.DataFrame:
        hits = values.join(groups, on="x").join(groups.rename({"x": "y"}), on=["y", "g"], how="semi")
        return values.join(hits.select("x", "y").unique().with_columns(pl.lit(True).alias("nick")),
                           on=["x", "y"], how="left").with_columns(pl.col("nick").fill_null(False))
    return compute


def _floor(sim: pl.Expr, floor: float) -> pl.Expr:
    return pl.when(sim < floor).then(0.0).otherwise(sim)


def _join(frame: pl.DataFrame, comparisons: dict[str, pl.DataFrame]) -> pl.DataFrame:
    """``frame`` with each comparison's columns renamed ``<column>_<comparison>``."""
    return pl.concat([frame, *[c.rename({k: f"{k}_{name}" for k in c.columns}) for name, c in comparisons.items()]],
                     how="horizontal")


def cheap_similarities(frame: pl.DataFrame, settings: IdentitySettings) -> pl.DataFrame:
    """``s_birth_date``, ``s_sex``, ``s_postcode``, ``s_phone`` (and ``bd_swapped``) from the
    gathered columns and the ``bd``, ``pc`` and ``phone`` edit distances."""
    bd, pc, ph = settings.field("birth_date"), settings.field("postcode"), settings.field("phone")
    s = pl.col
    a_bd, b_bd = s("bd_a"), s("bd_b")
    swapped = ((a_bd.dt.year() == b_bd.dt.year()) & (a_bd.dt.month() == b_bd.dt.day())
               & (a_bd.dt.day() == b_bd.dt.month()) & (a_bd != b_bd))
    return frame.with_columns(
        pl.when(a_bd.is_null() | b_bd.is_null()).then(None).when(a_bd == b_bd).then(1.0)
        .when(swapped).then(bd.param("day_month_swapped")).when(s("sim_bd") <= 1).then(bd.param("one_edit"))
        .otherwise(0.0).alias("s_birth_date"),
        swapped.fill_null(False).alias("bd_swapped"),
        pl.when(s("sex_a").is_null() | s("sex_b").is_null()).then(None)
        .when(s("sex_a") == s("sex_b")).then(1.0).otherwise(0.0).alias("s_sex"),
        pl.when(s("sim_pc").is_null()).then(None)
        .when(s("sim_pc") == 0).then(1.0).when(s("sim_pc") <= 1).then(pc.param("one_edit"))
        .when(s("pc_dist_a") == s("pc_dist_b")).then(pc.param("same_district"))
        .otherwise(0.0).alias("s_postcode"),
        pl.when(s("sim_phone").is_null()).then(None)
        .when(s("sim_phone") == 0).then(1.0).when(s("sim_phone") <= 1).then(ph.param("one_edit"))
        .otherwise(0.0).alias("s_phone"),
    )


def name_similarities(frame: pl.DataFrame, settings: IdentitySettings) -> pl.DataFrame:
    """``s_family_name``, ``s_given_names`` (names reversed between the records when that
    scores better: ``reversed``, ``crossed``) and ``s_address`` from the name comparisons."""
    giv = settings.field("given_names")
    s = pl.col

    def name_similarity(cmp: str, field: str) -> pl.Expr:
        f = settings.field(field)
        levels = [_floor(s(f"jw_{cmp}"), f.floor), pl.when(s(f"transposed_{cmp}")).then(f.param("transposition"))
                  .otherwise(0.0)]
        if field == "family_name":
            levels.append(pl.when(s(f"part_{cmp}")).then(f.param("hyphenated_part")).otherwise(0.0))
        return pl.max_horizontal(levels)

    s_fam = pl.when(s("jw_fam").is_null()).then(None).otherwise(name_similarity("fam", "family_name"))
    s_giv = pl.when(s("jw_giv").is_null()).then(None).otherwise(pl.max_horizontal(
        name_similarity("giv1", "given_names"), _floor(s("jw_giv"), giv.floor),
        pl.when(s("nick_nick").fill_null(False)).then(giv.param("nickname")).otherwise(0.0)))
    crossed = settings.names_reversed * pl.min_horizontal("sim_gf", "sim_fg")
    p = frame.with_columns(s_fam.alias("s_family_name"), s_giv.alias("s_given_names"), crossed.alias("crossed"))
    p = p.with_columns(((s("crossed") >= giv.floor) & (s("crossed") > (s("s_family_name") + s("s_given_names")) / 2))
                       .fill_null(False).alias("reversed"))
    return p.with_columns(
        pl.when(s("reversed")).then(s("crossed")).otherwise(s("s_family_name")).alias("s_family_name"),
        pl.when(s("reversed")).then(s("crossed")).otherwise(s("s_given_names")).alias("s_given_names"),
        _floor(s("sim_addr"), settings.field("address").floor).alias("s_address"),
    )


def _field_weight(f: FieldComparison, sim: pl.Expr) -> pl.Expr:
    share = ((sim - f.floor) / (1.0 - f.floor)).clip(0.0, 1.0)
    return (f.disagree + (f.agree - f.disagree) * share).fill_null(0.0)


def prior_for(settings: IdentitySettings, records: int) -> float:
    """The prior match weight for a comparison among ``records`` records.

    The configured prior holds at ``prior_records`` records; duplicates grow with n while
    the pairs that could look alike by chance grow with n², so each doubling of the records
    lowers the prior by 1 (never raised for smaller extracts).
    """
    return settings.prior - math.log2(max(1.0, records / settings.prior_records))


def match_weight(settings: IdentitySettings, prior: float) -> pl.Expr:
    """The pair's total match weight: ``prior`` plus, per field present on both records, its
    weight at the field's similarity (``disagree`` at or below the floor, ``agree`` at 1,
    linear between)."""
    return pl.sum_horizontal([pl.lit(prior), _nhs_weight(settings),
                              *[_field_weight(f, pl.col(f"s_{f.name}")) for f in settings.fields]])


def _nhs_weight(settings: IdentitySettings) -> pl.Expr:
    """Two valid NHS numbers that differ: evidence of two people (the configured weight)."""
    differ = (pl.col("nhs_a") != pl.col("nhs_b")).fill_null(False)
    return pl.when(differ).then(settings.nhs_number_disagree).otherwise(0.0)


def weighted_score(settings: IdentitySettings, prior: float) -> pl.Expr:
    """The pair score 0-1: the match weight as a probability, 1 / (1 + 2^-weight), 4 places."""
    return (1.0 / (1.0 + (2.0 ** (-match_weight(settings, prior))))).round(4)


def _describe(sim: str, missing: str, levels: Sequence[tuple[pl.Expr, str]], otherwise: pl.Expr) -> pl.Expr:
    expr: Any = pl.when(pl.col(sim).is_null()).then(pl.lit(missing))
    for cond, text in levels:
        expr = expr.when(cond).then(pl.lit(text))
    result: pl.Expr = expr.otherwise(otherwise)
    return result


def _rounded(label: str, col: str) -> pl.Expr:
    return pl.format(f"{label} {{}}", pl.col(col).round(2).cast(pl.String))


def evidence() -> pl.Expr:
    """Why a pair scored what it did, field by field, without any value of a field."""
    s = pl.col
    names = pl.concat_str([
        _describe("s_family_name", "surname missing", [
            (s("jw_fam") == 1, "surname equal"),
            (s("transposed_fam") & (s("s_family_name") > s("jw_fam")), "surname two letters transposed"),
            (s("part_fam") & (s("s_family_name") > s("jw_fam")), "surname part of a hyphenated surname"),
            (s("s_family_name") == 0, "surname differs")], _rounded("surname jw", "jw_fam")),
        _describe("s_given_names", "given name missing", [
            (s("jw_giv") == 1, "given name equal"),
            (s("jw_giv1") == 1, "first given name equal"),
            (s("nick_nick").fill_null(False) & (s("s_given_names") > pl.max_horizontal("jw_giv1", "jw_giv")),
             "given name nickname"),
            (s("transposed_giv1") & (s("s_given_names") > s("jw_giv1")), "given name two letters transposed"),
            (s("s_given_names") == 0, "given name differs")], _rounded("given jw", "s_given_names")),
    ], separator=", ")
    return pl.concat_str([
        pl.format("score {}: ", s("score").round(2).cast(pl.String)) + pl.when(s("reversed"))
        .then(_rounded("given and family names reversed, jw", "crossed")).otherwise(names),
        _describe("s_birth_date", "birth date missing", [
            (s("s_birth_date") == 1, "birth date equal"), (s("bd_swapped"), "birth date day/month swapped"),
            (s("s_birth_date") > 0, "birth date one digit differs")], pl.lit("birth date differs")),
        _describe("s_sex", "sex not recorded on both", [(s("s_sex") == 1, "sex agrees")], pl.lit("sex differs")),
        _describe("s_postcode", "postcode missing", [
            (s("s_postcode") == 1, "postcode equal"), (s("sim_pc") <= 1, "postcode one character differs"),
            (s("s_postcode") > 0, "postcode district equal")], pl.lit("postcode differs")),
        _describe("s_phone", "phone not on both", [
            (s("s_phone") == 1, "phone equal"), (s("s_phone") > 0, "phone one digit differs")],
            pl.lit("phone differs")),
        _describe("s_address", "address not on both", [
            (s("s_address") == 1, "address equal"), (s("s_address") == 0, "address differs")],
            _rounded("address similarity", "s_address")),
    ], separator=", ")


SCORE_CHUNK = 1_000_000  # pairs scored at a time: bounds memory whatever the pair count
_GATHERED = ("key", "nhs", "bd", "sex", "pc_dist")


def score_pairs(pairs: pl.DataFrame, left: pl.DataFrame, right: pl.DataFrame, settings: IdentitySettings,
                min_score: float = 0.0, records: int | None = None) -> pl.DataFrame:
    """Score ``pairs`` (``i`` into ``left``, ``j`` into ``right``, both prepared); the prior
    is that for ``records`` records (default: ``right``'s height).

    Returns ``key_a``, ``key_b``, ``nhs_a``, ``nhs_b``, ``score`` and ``evidence`` for the
    pairs scoring at least ``min_score``, in ``pairs`` order.
    """
    prior = prior_for(settings, right.height if records is None else records)
    vocab = {side: {c: _vocabulary(frame, c) for c in ID_OF} for side, frame in (("a", left), ("b", right))}
    out = [_score_chunk(pairs.slice(start, SCORE_CHUNK), left, right, vocab, settings, prior, min_score)
           for start in range(0, max(pairs.height, 1), SCORE_CHUNK)]
    return pl.concat(out)


_NAMED = ("family_name", "given_names", "address")  # compared last: the costly string similarities


def _score_chunk(pairs: pl.DataFrame, left: pl.DataFrame, right: pl.DataFrame, vocab: dict[str, dict[str, pl.Series]],
                 settings: IdentitySettings, prior: float, min_score: float) -> pl.DataFrame:
    i, j = pairs.get_column("i"), pairs.get_column("j")

    def by_pair(col_a: str, col_b: str, compute: Callable[[pl.DataFrame], pl.DataFrame]) -> pl.DataFrame:
        return _by_distinct_pair(left.get_column(ID_OF[col_a]).gather(i), right.get_column(ID_OF[col_b]).gather(j),
                                 vocab["a"][col_a], vocab["b"][col_b], compute)

    dl = _similarity(DamerauLevenshtein.distance)
    frame = pl.DataFrame([
        *[left.get_column(c).gather(i).alias(f"{c}_a") for c in _GATHERED],
        *[right.get_column(c).gather(j).alias(f"{c}_b") for c in _GATHERED],
    ])
    frame = cheap_similarities(_join(frame, {"pc": by_pair("pc", "pc", dl), "phone": by_pair("phone", "phone", dl),
                                             "bd": by_pair("bd_text", "bd_text", dl)}), settings)
    if 0 < min_score < 1:
        # Drop the pairs that could not reach min_score even if names and address agreed
        # fully, before the costly string similarities.
        best = pl.sum_horizontal([pl.lit(prior), _nhs_weight(settings), *[
            _field_weight(f, pl.lit(1.0) if f.name in _NAMED else pl.col(f"s_{f.name}")) for f in settings.fields]])
        keep = frame.select(best >= math.log2(min_score / (1 - min_score))).to_series()
        frame, i, j = frame.filter(keep), i.filter(keep), j.filter(keep)
    jw = _similarity(JaroWinkler.normalized_similarity)
    frame = name_similarities(_join(frame, {
        "fam": by_pair("fam", "fam", _names), "giv1": by_pair("giv1", "giv1", _names),
        "giv": by_pair("giv", "giv", jw).rename({"sim": "jw"}),
        "gf": by_pair("giv1", "fam", jw), "fg": by_pair("fam", "giv1", jw),
        "addr": by_pair("addr", "addr", _similarity(fuzz.token_set_ratio, 0.01)),
        "nick": by_pair("giv1", "giv1", _nicknames(settings)),
    }), settings)
    scored = frame.with_columns(weighted_score(settings, prior).alias("score")).filter(pl.col("score") >= min_score)
    return scored.select("key_a", "key_b", "nhs_a", "nhs_b", "score", evidence().alias("evidence"))


def find_probable(records: pl.DataFrame, settings: IdentitySettings) -> pl.DataFrame:
    """Probable (score >= probable threshold) and possible (>= review) duplicate pairs among
    prepared ``records``, except pairs whose valid NHS numbers agree (those are exact or
    conflicting, decided by NHS number). Columns: ``key_a`` < ``key_b``, ``score``,
    ``match_type``, ``evidence``; sorted by keys."""
    pairs = candidate_pairs(records, None, settings)
    nhs = records.get_column("nhs")
    same = pl.Series(nhs.gather(pairs.get_column("i")) == nhs.gather(pairs.get_column("j"))).fill_null(False)
    pairs = pairs.filter(~same)
    scored = score_pairs(pairs, records, records, settings, min_score=settings.review_threshold)
    return _ordered(scored).with_columns(
        pl.when(pl.col("score") >= settings.probable_threshold).then(pl.lit("probable")).otherwise(pl.lit("possible"))
        .alias("match_type")).select("key_a", "key_b", "score", "match_type", "evidence").sort("key_a", "key_b")


def _ordered(scored: pl.DataFrame) -> pl.DataFrame:
    """Pairs with ``key_a`` < ``key_b`` (keys swapped where needed)."""
    swap = pl.col("key_a") > pl.col("key_b")
    return scored.with_columns(
        pl.when(swap).then(pl.col("key_b")).otherwise(pl.col("key_a")).alias("key_a"),
        pl.when(swap).then(pl.col("key_a")).otherwise(pl.col("key_b")).alias("key_b"),
    )
