"""Records prepared for comparison: normalised values, value ids and block-key columns.

``prepare(frame, key, valid_nhs)`` gives one row per input row (``idx`` = position) with:

- ``key``, ``nhs`` (the valid NHS number or null), ``sex`` (male/female/other or null);
- names: ``fam`` (cleaned family name), ``giv`` (cleaned given names), ``giv1`` (first
  given name), their initials, Soundex codes (``fam_ph``, ``giv_ph``) and ``giv_pre``
  (first three letters of the first given name);
- ``pc`` (postcode without spaces, upper case) and ``pc_dist`` (outward code);
- ``phone`` (digits only), ``addr`` (lower case, punctuation as spaces), ``addr_num``
  (the first number in the address), ``addr_nums`` (all its numbers, in order) and
  ``street`` (the first word after the first number);
- ``bd`` (birth date), ``bd_key`` / ``bd_swap`` (the date and its day/month swap as
  integers) and ``by`` (year);
- an integer id per distinct source value (``fam_id``, ``giv_id``, ``pc_id``, ``phone_id``,
  ``addr_id``) so string similarities are computed once per distinct pair.

Normalising is done once per distinct value, never per row.
"""

from __future__ import annotations

from collections.abc import Callable

import polars as pl

KNOWN_SEX = ("male", "female", "other")
_SOUNDEX = {**dict.fromkeys("bfpv", "1"), **dict.fromkeys("cgjkqsxz", "2"), **dict.fromkeys("dt", "3"),
            "l": "4", **dict.fromkeys("mn", "5"), "r": "6"}
# String column -> its id column (the position of the source value among the distinct
# source values; two ids may stand for one cleaned value).
# Short values compared only for equality (blocking keys, sex, initials): held as codes.
CODED = ("sex", "fam_init", "giv_init", "fam_ph", "giv_ph", "giv_pre", "pc_dist", "street", "addr_num")
ID_OF = {"fam": "fam_id", "giv": "giv_id", "giv1": "giv_id", "addr": "addr_id", "pc": "pc_id", "phone": "phone_id"}


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
    # memory: joined to the source column alone and the derived columns added: a join of the
    # whole (growing) frame copied every column each time (~+1 GB transient at 5M patients)
    joined = base.select(source).join(derive(distinct), on=source, how="left", maintain_order="left")
    return base.with_columns(joined.drop(source).get_columns())


def _name_parts(source: str, out: str) -> Callable[[pl.DataFrame], pl.DataFrame]:
    """Cleaned name (``out``), initial, Soundex; for given names also the first name
    ``giv1`` and its first three letters ``giv_pre``."""
    def derive(distinct: pl.DataFrame) -> pl.DataFrame:
        cleaned = distinct.with_columns(_clean_name(source).alias(out))
        first = cleaned.get_column(out).str.split(" ").list.first() if out == "giv" else cleaned.get_column(out)
        codes = [soundex(v) if v else None for v in first.to_list()]
        extra = {"giv1": first, "giv_pre": first.str.slice(0, 3)} if out == "giv" else {}
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
    addr = pl.when(addr == "").then(None).otherwise(addr)
    numbers = addr.str.extract_all(r"\d+")
    return distinct.with_columns(
        addr.alias("addr"),
        numbers.list.first().alias("addr_num"),
        addr.str.extract(r"\d+[a-z]?\s+([a-z]{2,})").alias("street"),
        numbers.list.join(" ").alias("addr_nums"),
    )


def _birth_dates(distinct: pl.DataFrame) -> pl.DataFrame:
    day, month = pl.col("bd").dt.day(), pl.col("bd").dt.month()
    return distinct.with_columns(
        pl.col("bd").cast(pl.Int32).alias("bd_key"),
        pl.when((day <= 12) & (day != month)).then(pl.date(pl.col("bd").dt.year(), day, month).cast(pl.Int32))
        .alias("bd_swap"),
        pl.col("bd").dt.year().alias("by"),
    )


def prepare(frame: pl.DataFrame, key: str, valid_nhs: str | None) -> pl.DataFrame:
    """Comparison and block-key columns for each row of ``frame`` (see the module docstring).

    ``frame`` has canonical patient columns (any may be absent: treated as null);
    ``key`` names its identifier column, kept as ``key``; ``valid_nhs`` names a column
    holding the valid NHS number or null (None: no numbers). Output rows keep ``frame``'s
    order with ``idx`` = row position.
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
    # memory: the short block keys as categoricals (a 4-byte code a record, not a 16-byte
    # string view): the records are held whole (identity is global), 9 columns x 12 bytes a
    # record saved (~0.5 GB at 5M patients). Codes of one value are equal in every frame
    # (polars' global categories), so blocking and comparing give what the strings give.
    return base.drop("family_name", "given_names", "postcode", "phone_raw", "address").with_columns(
        pl.col(c).cast(pl.Categorical) for c in CODED)


__all__ = ["ID_OF", "KNOWN_SEX", "prepare", "soundex"]
