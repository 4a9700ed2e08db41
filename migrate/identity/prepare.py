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
- ``addr_given`` (the source address is present, even where it cleans to nothing).

The compared strings (``fam``, ``giv``, ``giv1``, ``pc``, ``phone``, ``addr``, ``addr_nums``)
are categoricals over a per-value vocabulary (``VOCABULARY``): a record holds the value's
id (its code), the vocabulary each distinct cleaned value once. The vocabularies are named
(``pl.Categories``), so one value has one id in every frame prepared (the target index's
too): equality, joins and blocking on them mean what they mean on the strings. String
similarities are computed once per distinct pair of ids (``compare``).

Normalising is done once per distinct value, never per row.
"""

from __future__ import annotations

from collections.abc import Callable

import polars as pl

KNOWN_SEX = ("male", "female", "other")
_SOUNDEX = {**dict.fromkeys("bfpv", "1"), **dict.fromkeys("cgjkqsxz", "2"), **dict.fromkeys("dt", "3"),
            "l": "4", **dict.fromkeys("mn", "5"), "r": "6"}
# Short values compared only for equality (blocking keys, sex, initials): held as codes.
CODED = ("sex", "fam_init", "giv_init", "fam_ph", "giv_ph", "giv_pre", "pc_dist", "street", "addr_num")
_NAMESPACE = "handover.identity"
_NAMES = pl.Categorical(pl.Categories("names", _NAMESPACE))  # one vocabulary: names_reversed crosses them
# Compared string column -> its categorical: the id of its cleaned value in a named vocabulary.
# memory: a 4-byte id a record, not a 16-byte string view, and no separate per-source-value
# id column (seven columns: ~0.5 GB at 5M patients); each distinct value held once, by its
# vocabulary. Near-unique values (the synthetic addresses: 631k distinct at 1M patients)
# cost about what their strings did (67 MB against 51 + 4 measured at 1M), but no
# vocabulary is rebuilt to compare them. Named, not polars' global categories: a vocabulary
# is freed once no frame uses it (the records; the model's term frequencies hold names and
# postcodes), and one value has one id in the extract's records and the target index's.
VOCABULARY: dict[str, pl.DataType] = {
    "fam": _NAMES, "giv": _NAMES, "giv1": _NAMES,
    **{c: pl.Categorical(pl.Categories(c, _NAMESPACE)) for c in ("pc", "phone", "addr", "addr_nums")}}


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


def _by_distinct_value(base: pl.DataFrame, source: str, derive: Callable[[pl.DataFrame], pl.DataFrame]
                       ) -> pl.DataFrame:
    """``base`` with the columns ``derive`` adds to a frame of the distinct values of
    ``source`` (so each is computed once per value, not per row), the compared strings as
    ids (``VOCABULARY``) and the short keys as codes (``CODED``)."""
    distinct = base.select(source).drop_nulls().unique(maintain_order=True)
    derived = derive(distinct)
    # memory: cast over the distinct values, then joined: a record gets a code, never a
    # string view that is cast afterwards (a whole column of strings a column, transient)
    derived = derived.with_columns(
        *[pl.col(c).cast(t) for c, t in VOCABULARY.items() if c in derived.columns],
        *[pl.col(c).cast(pl.Categorical) for c in CODED if c in derived.columns])
    # memory: joined to the source column alone and the derived columns added: a join of the
    # whole (growing) frame copied every column each time (~+1 GB transient at 5M patients)
    joined = base.select(source).join(derived, on=source, how="left", maintain_order="left")
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
        # memory: the short block keys as categoricals (a 4-byte code a record, not a 16-byte
        # string view): the records are held whole (identity is global), 9 columns x 12 bytes a
        # record saved (~0.5 GB at 5M patients). Codes of one value are equal in every frame
        # (polars' global categories), so blocking and comparing give what the strings give.
        pl.when(col("sex", pl.String()).is_in(KNOWN_SEX)).then(col("sex", pl.String())).cast(pl.Categorical)
        .alias("sex"),
        col("postcode", pl.String()).alias("postcode"), col("phone", pl.String()).alias("phone_raw"),
        col("address", pl.String()).alias("address"), col("address", pl.String()).is_not_null().alias("addr_given"),
    ).with_row_index("idx")
    for source, derive in (
        ("family_name", _name_parts("family_name", "fam")), ("given_names", _name_parts("given_names", "giv")),
        ("postcode", _postcodes), ("phone_raw", _phones), ("address", _addresses), ("bd", _birth_dates),
    ):
        base = _by_distinct_value(base, source, derive)
    return base.drop("family_name", "given_names", "postcode", "phone_raw", "address")


__all__ = ["CODED", "KNOWN_SEX", "VOCABULARY", "prepare", "soundex"]
