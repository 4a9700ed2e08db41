"""How a source value matches a codelist: defined once, here, for every stage.

Two kinds of codelist, two rules (docs/mapping-profiles.md, "Codelist matching"):

- **Text codelists** (red-flag indicators, body sites, e-RS dummy slot names, out-of-scope
  reason phrases, service lines, referral sources, closure reasons: any flat list of a
  rule pack) match after one normalisation, the value's *key*: lower case, every run of
  characters that are neither letters nor digits (spaces, punctuation, symbols,
  underscores) becomes one ``_``, and ``_`` at either end is dropped. So ``CES``, ``ces``
  and `` ces `` share the key ``ces``, and ``Night pain``, ``NIGHT-PAIN`` and
  ``night_pain`` the key ``night_pain``. A value that is only punctuation has the empty
  key, which no codelist entry can have.
- **Clinical code lists** (SNOMED CT, Read v2, CTV3, local: the per-system lists of a
  pack) match exactly within their code system, after trimming spaces; Read v2 and CTV3
  codes also without their padding dots (``9Nd1.`` is ``9Nd1``). Case matters: Read codes
  are case-sensitive (``9Nd1`` is not ``9ND1``). Their key is the label ``system:code``.

Each rule exists once, as a polars expression (``text_key``, ``code_label``). The other
functions apply that same expression, never a copy of it: to plain Python values
(codelist entries) by running it on a Series, and to large columns by running it once
per *distinct* value (``keys_of``, ``list_keys``, ``unmatched_elements``: a vocabulary
column of a million rows holds a few dozen values, and a regular expression per row, or
per list inside ``list.eval``, costs seconds). Reason phrases are found in free text by
one regular expression over the lower-cased text whose words are joined by the same
separator class (``phrase_pattern``), which finds exactly the phrases whose key sits
between ``_`` in the text's key.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

import polars as pl

# Read codes are padded to 5 characters with dots in some exports (9Nd1. for 9Nd1).
DOTTED_SYSTEMS = ("read2", "ctv3")
_SEPARATORS = r"[^\p{L}\p{N}]+"  # a run of anything that is not a letter or a digit


def text_key(value: pl.Expr) -> pl.Expr:
    """The matching key of a text value (module docstring); null stays null."""
    return value.str.to_lowercase().str.replace_all(_SEPARATORS, "_").str.strip_chars("_")


def keys_of(value: pl.Expr) -> pl.Expr:
    """``text_key`` of a text column, computed once per distinct value."""
    return value.map_batches(_keys_of_series, return_dtype=pl.String, is_elementwise=True)


def list_keys(values: pl.Expr) -> pl.Expr:
    """``text_key`` of each element of a list column (computed once per distinct element)."""
    return values.map_batches(_list_keys_of_series, return_dtype=pl.List(pl.String), is_elementwise=True)


def unmatched_elements(values: pl.Expr, keys: Iterable[str]) -> pl.Expr:
    """The elements of a list column, as written and in order, whose key is none of ``keys``;
    an empty list where every element matched (or the list is empty or null)."""
    known = pl.Series(list(keys), dtype=pl.String)
    return values.map_batches(lambda s: _unmatched_of_series(s, known), return_dtype=pl.List(pl.String),
                              is_elementwise=True)


def phrase_pattern(keys: Iterable[str]) -> str:
    """A regular expression finding any of the phrases with ``keys`` as whole words in
    lower-cased text (group 1: the words as written): each key's words joined, and
    bounded, by runs of the separators ``text_key`` turns into ``_``."""
    alternatives = "|".join(_SEPARATORS.join(re.escape(w) for w in key.split("_"))
                            for key in sorted(keys, key=len, reverse=True))
    return rf"(?:^|{_SEPARATORS})({alternatives})(?:{_SEPARATORS}|$)"


def code_label(system: pl.Expr, code: pl.Expr) -> pl.Expr:
    """``system:code`` of a coded entry in matching form (module docstring); null when either is."""
    trimmed = code.str.strip_chars()
    system_text = system.cast(pl.String)
    undotted = pl.when(system_text.is_in(list(DOTTED_SYSTEMS))).then(trimmed.str.strip_chars_end(".")).otherwise(trimmed)
    return pl.concat_str([system_text, pl.lit(":"), undotted])


def text_keys(values: Iterable[str]) -> tuple[str, ...]:
    """``text_key`` of each of ``values``, in order (the same expression, run on a Series)."""
    series = pl.Series("v", list(values), dtype=pl.String)
    return tuple(pl.select(text_key(pl.lit(series))).to_series().to_list())


def code_labels(system: str, codes: Iterable[str]) -> tuple[str, ...]:
    """``code_label`` of each of ``codes`` in code system ``system``, in order."""
    series = pl.Series("v", list(codes), dtype=pl.String)
    return tuple(pl.select(code_label(pl.lit(system), pl.lit(series))).to_series().to_list())


def in_codelist(value: pl.Expr, keys: Iterable[str]) -> pl.Expr:
    """True where text ``value`` matches one of ``keys`` (keys from ``text_keys``); false for null."""
    return keys_of(value).is_in(pl.Series(list(keys), dtype=pl.String).implode()).fill_null(False)


def _distinct(values: pl.Series) -> tuple[pl.Series, pl.Series]:
    """The distinct non-null values of ``values`` and the ``text_key`` of each."""
    distinct = values.drop_nulls().unique()
    return distinct, pl.select(text_key(pl.lit(distinct))).to_series()


def _keys_of_series(values: pl.Series) -> pl.Series:
    distinct, keys = _distinct(values)
    return values.replace_strict(distinct, keys, default=None, return_dtype=pl.String)


def _list_keys_of_series(values: pl.Series) -> pl.Series:
    distinct, keys = _distinct(values.explode())
    return values.list.eval(pl.element().replace_strict(distinct, keys, default=None, return_dtype=pl.String))


def _unmatched_of_series(values: pl.Series, known: pl.Series) -> pl.Series:
    distinct, keys = _distinct(values.explode())
    unknown = distinct.filter(~keys.is_in(known.implode()))
    # Filtering inside list.eval costs per list; a row-indexed explode and regroup does not.
    rows = pl.DataFrame({"v": values}).with_row_index("i")
    kept = (rows.explode("v").filter(pl.col("v").is_in(unknown.implode()))
            .group_by("i", maintain_order=True).agg("v"))
    return rows.select("i").join(kept, on="i", how="left", maintain_order="left").select(
        pl.col("v").fill_null(pl.lit([], dtype=pl.List(pl.String)))).to_series().alias(values.name)
