"""Vocabulary coverage: every distinct value a rule reads as vocabulary, with its row count
and the codelist it matched, or none. An unmatched value is visible, never silent.

Input: canonical tables (LazyFrames) and the rule pack. Output, for ``handover check``
(table and ``--json``), ``reports/reconciliation.json`` (key ``vocabulary``) and the HTML
report::

    {field: [{"value": "CES", "rows": 12, "codelist": "red_flag_codes"}, ...]}

``value`` is the value as the canonical table holds it (after the profile's mapping),
``rows`` the canonical rows holding it (a referral counts once however often its list
repeats a red flag), ``codelist`` the name of the pack codelist it matched
(``migrate.matching``; several names joined by ", " when it matched several), or None.
Fields, in this order: ``FIELDS``; a field the profile does not map has no values.
``code`` lists each coded entry as ``system:code``. ``sharing_out`` (patients) and
``practice_sharing_out`` (the practice sharing file) list each sharing setting value as
written, matched not against the pack but against the profile's value lists
(``dissent_values``, ``consent_values``, ``opt_out_values``): a value in none of them is
``unrecognised``, treated as a dissent and shown with codelist None (a warning in check).

Which codelists a field is matched against is read from the pack itself: the codelists
handover's features read for it (``FIXED``), and every codelist a rule compares the
column with (``column [NOT] IN {codelists.NAME}``), so a site rule over ``service_line``
shows up here without code.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import polars as pl

from migrate.matching import code_label, text_key
from migrate.rules.model import RulePack

# field -> (canonical table, column)
FIELDS: dict[str, tuple[str, str]] = {
    "red_flags": ("referrals", "red_flags"),
    "body_site": ("referrals", "body_site"),
    "slot_name": ("contacts", "slot_name"),
    "service_line": ("referrals", "service_line"),
    "referral_source": ("referrals", "referral_source"),
    "closure_reason": ("referrals", "closure_reason"),
    "code": ("codes", "code"),
    "sharing_out": ("patients", "sharing_out"),
    "practice_sharing_out": ("practice_sharing", "sharing_out"),
}
# Sharing settings are matched by the profile's value lists, not a pack codelist.
SETTING_FIELDS = ("sharing_out", "practice_sharing_out")
SETTING_LISTS = ("dissent_values", "consent_values", "opt_out_values")
# Codelists handover's own features match each field against.
FIXED: dict[str, tuple[str, ...]] = {
    "red_flags": ("red_flag_codes", "not_red_flag_codes"),
    "slot_name": ("dummy_slot_names",),
    "code": ("sharing_dissent_codes", "sharing_consent_codes", "opt_out_codes"),
}
_IN_CODELIST = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)\s+(?:NOT\s+)?IN\s*\{\s*codelists\.([A-Za-z0-9_]+)\s*\}",
                          re.IGNORECASE)
# Words that mark a slot as a placeholder rather than a clinic (a hint for check only).
_PLACEHOLDER_WORDS = {"dummy", "placeholder", "admin", "administration", "block", "blocked", "hold", "held",
                      "reserved", "reserve", "test", "tbc", "tba", "tbd", "pending", "unbooked", "unavailable",
                      "not", "dna", "do", "fake", "filler", "temp", "temporary", "ghost", "void", "spare", "na"}


def bindings(pack: RulePack) -> dict[str, tuple[str, ...]]:
    """The pack codelists each field is matched against, in a stable order."""
    found: dict[str, list[str]] = {f: [c for c in FIXED.get(f, ()) if c in pack.codelists] for f in FIELDS}
    found |= {f: list(SETTING_LISTS) for f in SETTING_FIELDS}
    by_column = {column: f for f, (_, column) in FIELDS.items()}
    for rule in pack.rules:
        texts = [rule.condition or ""] + [case.condition for case in rule.cases]
        for text in texts:
            for column, name in _IN_CODELIST.findall(text):
                field = by_column.get(column)
                if field is not None and name in pack.codelists and name not in found[field]:
                    found[field].append(name)
    return {f: tuple(names) for f, names in found.items()}


def _values(frame: pl.LazyFrame, field: str, column: str) -> pl.LazyFrame:
    """Distinct values of ``column`` with their rows and matching key: value, rows, key.

    Grouped first, so the key is computed once per distinct value."""
    names = frame.collect_schema().names()
    empty = pl.LazyFrame(schema={"value": pl.String, "rows": pl.Int64, "key": pl.String})
    if field == "code":
        if "code" not in names or "code_system" not in names:
            return empty
        system = pl.col("code_system").cast(pl.String)
        return (frame.select(system.alias("system"), "code").filter(pl.col("code").is_not_null())
                .group_by("system", "code").agg(pl.len().cast(pl.Int64).alias("rows"))
                .select(pl.concat_str([pl.col("system"), pl.lit(":"), pl.col("code")]).alias("value"), "rows",
                        code_label(pl.col("system"), pl.col("code")).alias("key")))
    if column not in names:
        return empty
    if field in SETTING_FIELDS:  # the key is the list the value matched (the kind it means)
        if not isinstance(frame.collect_schema()[column], pl.Struct):
            return empty
        setting = pl.col(column)
        kind = pl.col("kind")
        return (frame.filter(setting.is_not_null())
                .group_by(setting.struct.field("value").alias("value"), setting.struct.field("kind").alias("kind"))
                .agg(pl.len().cast(pl.Int64).alias("rows"))
                .select("value", "rows", pl.when(kind != "unrecognised").then(kind + "_values").alias("key")))
    values = frame.select(pl.col(column).alias("value"))
    if isinstance(frame.collect_schema()[column], pl.List):
        values = values.select(pl.col("value").list.unique()).explode("value")
    return (values.select(pl.col("value").cast(pl.String)).filter(pl.col("value").is_not_null())
            .group_by("value").agg(pl.len().cast(pl.Int64).alias("rows"))
            .with_columns(text_key(pl.col("value")).alias("key")))


def vocabulary(tables: Mapping[str, pl.LazyFrame], pack: RulePack) -> dict[str, list[dict[str, Any]]]:
    """Every field of ``FIELDS``: its distinct values, rows and matched codelist (module
    docstring), most frequent first (then by value). Tables absent from ``tables`` count
    as empty."""
    bound = bindings(pack)
    plans: list[pl.LazyFrame] = []
    for field, (table, column) in FIELDS.items():
        frame = tables.get(table)
        if frame is None:
            frame = pl.LazyFrame(schema={column: pl.String})
        matched: list[pl.Expr] = [pl.when(pl.col("key").is_in(pl.Series(pack.keys(name), dtype=pl.String).implode()))
                                  .then(pl.lit(name)) for name in bound[field]]
        if field in SETTING_FIELDS:  # the key is already the profile list the value matched
            matched = [pl.col("key")]
        codelist = (pl.concat_str(matched, separator=", ", ignore_nulls=True) if matched
                    else pl.lit(None, dtype=pl.String))
        plans.append(_values(frame, field, column)
                     .select("value", "rows", pl.when(codelist != "").then(codelist).alias("codelist"))
                     .sort(["rows", "value"], descending=[True, False]))
    frames = pl.collect_all(plans)
    return {field: frame.to_dicts() for field, frame in zip(FIELDS, frames, strict=True)}


def unmatched(vocab: Mapping[str, list[dict[str, Any]]]) -> dict[str, int]:
    """Per field, how many distinct values matched no codelist."""
    return {field: sum(1 for v in values if v["codelist"] is None) for field, values in vocab.items()}


def looks_like_placeholder(slot_name: str) -> bool:
    """A heuristic for ``handover check``'s hints, never a decision: a slot name with a
    placeholder word (dummy, admin, hold, reserved, do not …), or with no letters at all
    (``XXXX`` aside, ``----`` or ``0000``), reads like an e-RS dummy slot, not a clinic."""
    words = set(re.split(r"[^a-z0-9]+", slot_name.lower())) - {""}
    letters = re.sub(r"[^a-z]", "", slot_name.lower())
    return bool(words & _PLACEHOLDER_WORDS) or not letters or set(letters) <= {"x"} or "do not" in slot_name.lower()
