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

Each rule exists once, as a polars expression; the functions for plain Python values
(codelist entries, a handful at a time) run that same expression on a Series, so a
codelist entry and a source value can never be normalised two different ways.
"""

from __future__ import annotations

from collections.abc import Iterable

import polars as pl

# Read codes are padded to 5 characters with dots in some exports (9Nd1. for 9Nd1).
DOTTED_SYSTEMS = ("read2", "ctv3")
_SEPARATORS = r"[^\p{L}\p{N}]+"  # a run of anything that is not a letter or a digit


def text_key(value: pl.Expr) -> pl.Expr:
    """The matching key of a text value (module docstring); null stays null."""
    return value.str.to_lowercase().str.replace_all(_SEPARATORS, "_").str.strip_chars("_")


def list_keys(values: pl.Expr) -> pl.Expr:
    """``text_key`` of each element of a list column."""
    return values.list.eval(text_key(pl.element()))


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
    return text_key(value).is_in(pl.Series(list(keys), dtype=pl.String).implode()).fill_null(False)
