"""Which mapping-profile options can take effect where: checked before any data is read.

An option written where it cannot mean anything is a profile error, never a no-op (issue
#10: ``case: lower`` on a list field once did nothing and hid red flags). Each function
reports through ``add(path, problem)``, the profile's problem collector, so every problem
is listed at once with its YAML path (``migrate.profile`` calls them).

- ``option_problems``: a field option against the field's kind (``OPTION_KINDS``) and the
  options it needs beside it;
- ``implied_option``: ``implied_by`` (its keys, its column, and on a coded field that every
  value it implies maps to a canonical value);
- ``format_problems``: delimited-text table options on a Parquet or HL7 table;
- ``reference_table_problems``: what a table read from a file given on the command line
  (``target_index``, ``practice_sharing``) cannot have.

docs/mapping-profiles.md documents the same table; tests/test_profile_options.py holds
every option against every kind.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

Add = Callable[[str, str], None]

KINDS = ("string", "date", "datetime", "boolean", "list", "enum", "sharing")
_ALL = frozenset(KINDS)
_SHARING = frozenset({"sharing"})
_TEXT = frozenset({"string", "enum", "list"})  # kinds whose values are text after cleaning
# Where each field option can mean something (docs/mapping-profiles.md). Anywhere else it
# is a profile error: an option that silently did nothing once hid red flags (issue #10).
# For a list field, trim, remove, case, map, map_only and pattern apply to each element.
OPTION_KINDS: dict[str, frozenset[str]] = {
    "column": _ALL, "columns": _ALL, "sep": _ALL, "constant": _ALL, "split": _ALL,
    "trim": _ALL, "remove": _ALL, "required": _ALL,
    "case": _TEXT, "map": _TEXT, "map_only": _TEXT,
    "pattern": frozenset({"string", "list"}),
    "formats": frozenset({"date", "datetime", "sharing"}),  # a sharing setting: for its date column
    "separator": frozenset({"list"}),
    "true_values": frozenset({"boolean"}), "false_values": frozenset({"boolean"}),
    # Any kind, but a text or list value can fail only with pattern or map_only (checked apart).
    "on_invalid": _ALL,
    # implied_by: any kind (the implied value is then read as the column's would be), but not
    # beside constant, which is always sent; its keys are checked by implied_option.
    "implied_by": _ALL,
    # refine: coded fields only, checked (with its own keys) by migrate.profile._refine.
    # A sharing setting (docs/mapping-profiles.md, "Sharing settings"): the values meaning
    # each kind of entry, and the column holding the date the setting was made.
    "dissent_values": _SHARING, "consent_values": _SHARING, "opt_out_values": _SHARING, "date": _SHARING,
}
_KIND_WORDS = {"string": "text", "date": "date", "datetime": "date-time", "boolean": "true/false", "list": "list",
               "enum": "coded", "sharing": "sharing-setting"}
_SHARING_HINT = "a sharing setting is read through dissent_values, consent_values and opt_out_values, in any case"
_HINTS = {
    "case": "dates, true/false values and sharing settings are matched without regard to case",
    "map": "use true_values/false_values for true/false fields, formats for dates; " + _SHARING_HINT,
    "map_only": "use true_values/false_values for true/false fields, formats for dates; " + _SHARING_HINT,
    "pattern": "coded values must be canonical values; dates must match formats; true/false values their lists; "
               + _SHARING_HINT,
    "formats": "formats read dates and date-times",
    "separator": "separator splits list fields such as red_flags",
    "true_values": "true_values and false_values read true/false fields",
    "false_values": "true_values and false_values read true/false fields",
    **{k: "only a sharing setting (sharing_out) has values that mean a dissent or a consent, and the date it was set"
       for k in ("dissent_values", "consent_values", "opt_out_values", "date")},
}


def option_problems(where: str, name: str, kind: str, raw: dict[str, Any], add: Add) -> None:
    """Every option of field ``name`` must be able to take effect on a field of its ``kind``.

    See ``OPTION_KINDS``; besides the kind, ``sep`` needs ``columns``, ``map_only`` needs
    ``map``, ``on_invalid`` on a text or list field needs something that can fail
    (``pattern`` or ``map_only``), and on a sharing setting ``formats`` and ``on_invalid``
    apply to its ``date`` column, so they need one.
    """
    for option in sorted(set(raw) & set(OPTION_KINDS)):
        allowed = OPTION_KINDS[option]
        if kind not in allowed:
            kinds = ", ".join(_KIND_WORDS[k] for k in KINDS if k in allowed)
            hint = _HINTS.get(option)
            add(f"{where}.{option}", f"does not apply to {name}, a {_KIND_WORDS[kind]} field; "
                                     f"{option} applies to {kinds} fields" + (f" ({hint})" if hint else ""))
    if "sep" in raw and "columns" not in raw:
        add(f"{where}.sep", "sep joins the columns of columns: [A, B]; this field reads no columns:")
    if "map_only" in raw and "map" not in raw and kind in OPTION_KINDS["map_only"]:
        add(f"{where}.map_only", "map_only needs a map: of source value: canonical value")
    if "on_invalid" in raw and kind in ("string", "list") and not ({"pattern", "map_only"} & set(raw)):
        add(f"{where}.on_invalid", f"nothing can fail in {name} (a {_KIND_WORDS[kind]} field) without "
                                   "pattern: or map_only: true; remove on_invalid or add one of them")
    if "implied_by" in raw and "constant" in raw:
        add(f"{where}.implied_by", "a constant is always sent, so nothing is ever implied: remove implied_by, "
                                   "or read the field from a column")
    if kind == "sharing" and "date" not in raw:
        for option in ("formats", "on_invalid"):
            if option in raw:
                add(f"{where}.{option}", f"{option} applies to the date column of a sharing setting, and {name} "
                                         "reads none: add date: Column, or remove it (an unrecognised value is "
                                         "never an error: it is reported and treated as a dissent)")


IMPLIED_KEYS = ("column", "map")


def implied_option(where: str, raw: dict[str, Any], allowed: tuple[str, ...] | None, add: Add
                   ) -> tuple[str, tuple[tuple[str, str], ...]] | None:
    """``implied_by: {column, map}`` of field options ``raw``: (column, (value of column,
    implied raw value) pairs, values trimmed), or None when it cannot be used.

    The column must be another than the field's own (its own column, when not sent, implies
    nothing). On a coded field (``allowed``: its canonical values) each implied value must
    become a canonical value through the field's own ``map`` (or be one, after ``case``,
    unless ``map_only``), so a typo in the profile cannot quarantine every S15 at run time.
    """
    here = f"{where}.implied_by"
    spec = raw["implied_by"]
    if not (isinstance(spec, dict) and isinstance(spec.get("column"), str) and spec["column"].strip()
            and isinstance(spec.get("map"), dict) and spec["map"]):
        add(here, "expected {column: OtherColumn, map: {value of OtherColumn: value this field then reads}}")
        return None
    for key in sorted(str(k) for k in set(spec) - set(IMPLIED_KEYS)):
        add(f"{here}.{key}", f"unknown option; use one of {', '.join(IMPLIED_KEYS)}")
    column = spec["column"]
    split, columns = raw.get("split"), raw.get("columns")
    own = [raw.get("column"), *(columns if isinstance(columns, list) else [columns]),
           split.get("column") if isinstance(split, dict) else None]
    if column in own:
        add(f"{here}.column", f"{column} is the field's own column: not sent, it implies nothing; name another column")
    pairs = tuple((str(k).strip(), str(v).strip()) for k, v in spec["map"].items())
    if allowed is not None:
        field_map = raw.get("map")
        upper = {str(k).strip().upper(): str(v) for k, v in field_map.items()} if isinstance(field_map, dict) else {}
        case = {"upper": str.upper, "lower": str.lower, "title": str.title}.get(str(raw.get("case")), str)
        for k, v in pairs:
            value = upper.get(v.upper(), None if raw.get("map_only") is True else case(v))
            if value not in allowed:
                add(f"{here}.map.{k}", f"'{v}' does not become a canonical value through the field's map; "
                                       f"imply a code the map knows, or one of {', '.join(allowed)}")
    return column, pairs


# Table options that only a delimited text file can use.
DELIMITED_OPTIONS = ("encoding", "delimiter", "quote_char", "on_encoding_error")
_FORMAT_WHY = {"parquet": "a Parquet file carries its own types and encoding",
               "hl7v2": "an HL7 file declares its delimiters in MSH and is read as UTF-8 (Windows-1252 fallback)"}


def format_problems(where: str, tdoc: dict[str, Any], fmt: str, files: tuple[str, ...], add: Add) -> None:
    """Delimited-text options written on a table whose files are not delimited text do
    nothing: reject them. ``format: auto`` counts as Parquet when every file pattern ends
    in .parquet or .pq. (Set in ``defaults:``, they apply only where they can.)"""
    kind = fmt
    if fmt == "auto" and files and all(f.lower().endswith((".parquet", ".pq")) for f in files):
        kind = "parquet"
    if kind not in _FORMAT_WHY:
        return
    for key in DELIMITED_OPTIONS:
        if key in tdoc:
            add(f"{where}.{key}", f"does not apply to a {kind} table: {_FORMAT_WHY[kind]}; remove it")


_DUPLICATES_WHY = {
    "target_index": "an index may list a patient twice; every record is matched",
    "practice_sharing": "a practice has one setting: a repeated ODS code is quarantined (duplicate_key)",
}


def reference_table_problems(where: str, table: str, tdoc: dict[str, Any], add: Add) -> None:
    """A table read from a file given on the command line (``target_index`` by
    ``--target-index``, ``practice_sharing`` by ``--practice-sharing``) has no files of its
    own in the extract, no repeated-key policy, and is not HL7 (so ``events`` is rejected
    as for any table that is not)."""
    from migrate.canonical import REFERENCE_TABLES

    option = REFERENCE_TABLES[table]
    for key, why in (("files", f"the file is the one given by {option}, not a file of the extract"),
                     ("on_duplicate", _DUPLICATES_WHY[table]), ("updates", "its rows update nothing")):
        if key in tdoc:
            add(f"{where}.{key}", f"does not apply to {table}: {why}; remove it")
    if str(tdoc.get("format", "auto")) == "hl7v2":
        add(f"{where}.format", f"{table} is read from a delimited or Parquet file: use auto, delimited or parquet")
