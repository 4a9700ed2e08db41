"""What ``handover check`` suggests beside each problem: the fix that would work.

- **Layout.** A file missing columns the profile reads: its header sniffed again (a
  different delimiter or encoding that would split it into the profile's columns), and
  for each missing column the closest columns the file has — a listed synonym of the
  field it feeds (``mappings/draft/synonyms.yaml``) first, then by name similarity.
- **Dates.** Values of a date field that match none of its formats: the format that would
  parse them, with the share it parses (``migrate.draft.shapes.format_shares``, the same
  parse the run does). No value is shown: a birth date identifies a person.
- **Codes.** An unmapped code: every distinct unmapped value with its rows, beside the
  canonical value it may mean (values only for fields that identify no one).
- **True/false words** not in ``true_values``/``false_values``, likewise.
- **Records** that do not split into the header's fields, or bytes not valid in the
  declared encoding, in most of a file: the delimiter or encoding that reads them.
- **Rows whose parent was quarantined**: the parent table's problem to fix first.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import polars as pl
from rapidfuzz import fuzz, process

from migrate import canonical
from migrate.draft.catalogue import Catalogue, load_catalogue, name_key
from migrate.draft.shapes import candidate_formats, format_shares
from migrate.draft.sniff import MISFIT_REASONS, detect_encoding, sniff_dialect
from migrate.mapping import cleaned_values
from migrate.matching import text_keys
from migrate.profile import FieldSpec
from migrate.sources import InputFile, read_file

MOST = 0.5  # a file-level fix is suggested when at least this share of its records fails
LISTED = 20  # unmapped values listed per problem (the JSON has every one)


def closest_columns(spec: FieldSpec | None, table: str, missing: str, present: Sequence[str],
                    catalogue: Catalogue, limit: int = 3) -> list[str]:
    """The columns of ``present`` most like ``missing`` (which feeds ``spec``): a listed
    name of the field first, then by similarity of the names (best first)."""
    found: list[str] = []
    if spec is not None and spec.name in catalogue.fields.get(table, {}):
        for column in present:
            match = catalogue.match_name(table, spec.name, column)
            if match is not None and match.exact:
                found.append(f"'{column}' (a listed name for {spec.name})")
    keys = {name_key(c): c for c in present}
    for key, score, _ in process.extract(name_key(missing), list(keys), scorer=fuzz.ratio, limit=limit):
        if score >= 50 and not any(f"'{keys[key]}'" in f for f in found):
            found.append(f"'{keys[key]}' ({score:.0f}% alike)")
    return found[:limit]


def dialect_suggestion(f: InputFile) -> list[str]:
    """The delimiter, quoting and encoding the file's head reads with, where they differ from
    the profile's (none for Parquet, or when the profile's dialect is the sniffed one)."""
    spec = f.spec()
    if f.is_parquet:
        return []
    encoding = detect_encoding(f.path)
    dialect = sniff_dialect(f.path, encoding.encoding)
    if (dialect.delimiter, dialect.quote_char) == (spec.delimiter, spec.quote_char):
        return []
    return [f"{f.name}: sniffed as {dialect.why} (delimiter {dialect.delimiter!r}, quote_char "
            f"{dialect.quote_char!r}, encoding {encoding.encoding}); the profile says delimiter "
            f"{spec.delimiter!r}, quote_char {spec.quote_char!r}, encoding {spec.encoding}"]


def layout_suggestions(f: InputFile, present: tuple[str, ...], absent: list[str],
                       catalogue: Catalogue) -> list[str]:
    """Fixes for a file missing ``absent`` columns: another dialect, and the closest columns."""
    spec = f.spec()
    out: list[str] = []
    if not set(present) & set(spec.source_columns):
        out.append(f"{f.name}: its header matches none of the columns the profile's {f.table} table reads")
        out += dialect_suggestion(f)
    by_column = {c: s for s in spec.fields for c in s.source_columns}
    for column in absent:
        close = closest_columns(by_column.get(column), f.table, column, present, catalogue)
        if close:
            out.append(f"{f.name}: instead of '{column}', the closest columns: {', '.join(close)}")
    return out


def _field_spec(f: InputFile, field: str | None) -> FieldSpec | None:
    return next((s for s in f.spec().fields if s.name == field), None)


def _failing(f: InputFile, spec: FieldSpec, rows: pl.Series, work: Path) -> pl.DataFrame:
    """The distinct cleaned values of ``spec`` at the quarantined ``rows``, with their counts,
    read again from the file: quarantine messages leave a value out when the row may be
    misaligned, so they cannot be counted from the messages."""
    values = cleaned_values(read_file(f, work).frame, f.table, spec, f.profile)
    # memory: the distinct failing values of one field, with counts
    return (values.filter(pl.col("source_row").is_in(rows.implode()) & pl.col("value").is_not_null())
            .group_by("value").agg(pl.len().cast(pl.Int64).alias("count")).collect())


def _date_fix(f: InputFile, spec: FieldSpec, rows: pl.Series, catalogue: Catalogue, work: Path) -> str | None:
    kind = canonical.TABLES[f.table].field(spec.name).kind
    failing = _failing(f, spec, rows, work)
    shares = [s for s in format_shares(failing, candidate_formats(catalogue, kind), kind)
              if s.format not in spec.formats]
    if not shares or shares[0].parsed == 0:
        return None
    best = shares[0]
    tied = [s.format for s in shares[1:] if s.parsed == best.parsed]
    also = (f" (so does {' and '.join(tied)}: no value tells day from month; the extract's other dates may)"
            if tied else "")
    return (f"the format {best.format} parses {best.parsed:,} of these {best.total:,} values ({best.share:.0%}){also}: "
            f"set formats: ['{best.format}'] on {spec.name} (or add it to defaults.{kind}_formats)")


def _value_counts(failing: pl.DataFrame) -> list[tuple[str, int]]:
    return sorted(((str(v), int(n)) for v, n in failing.select("value", "count").iter_rows()),
                  key=lambda vn: (-vn[1], vn[0]))


def _code_fix(field: str, counts: list[tuple[str, int]], catalogue: Catalogue) -> tuple[str, list[dict[str, Any]]]:
    meanings = catalogue.value_meanings(field)
    listed = []
    for value, rows in counts:
        meaning = meanings.get(text_keys((value,))[0])
        close = [m for m, _ in catalogue.closest_meanings(field, value)] if meaning is None else []
        listed.append({"value": value, "rows": rows, "might_mean": meaning or (close[0] if close else None)})
    shown = ", ".join(f"'{v['value']}' ({v['rows']:,} rows" + (f" → {v['might_mean']}" if v["might_mean"] else "")
                      + ")" for v in listed[:LISTED])
    more = f" and {len(listed) - LISTED:,} more" if len(listed) > LISTED else ""
    return f"{len(listed):,} distinct unmapped value(s): {shown}{more}; add them to {field}'s map:", listed


def _boolean_fix(spec: FieldSpec, counts: list[tuple[str, int]], catalogue: Catalogue) -> str:
    trues = {w.upper() for w in catalogue.true_words}
    falses = {w.upper() for w in catalogue.false_words}
    parts = []
    for value, rows in counts[:LISTED]:
        word = ("true_values" if value.upper() in trues else "false_values" if value.upper() in falses else None)
        parts.append(f"'{value}' ({rows:,} rows" + (f" → add to {word}" if word else ": not a true/false word") + ")")
    return f"values that are not in true_values/false_values: {', '.join(parts)}"


def _file_fix(f: InputFile, reason: str) -> str | None:
    if f.is_parquet or f.kind == "hl7v2":
        return None
    encoding = detect_encoding(f.path)
    if reason == "invalid_encoding" and encoding.encoding not in ("utf-8", "utf-8-sig"):
        return f"{encoding.why.split(';')[0]}: set encoding: {encoding.encoding}"
    if reason in MISFIT_REASONS:
        d = sniff_dialect(f.path, encoding.encoding)
        spec = f.spec()
        if (d.delimiter, d.quote_char) != (spec.delimiter, spec.quote_char) and d.misfits == 0:
            return f"the file reads as {d.why}: set delimiter: {d.delimiter!r}, quote_char: {d.quote_char!r}"
    return None


def _parent_fix(table: str, problems: list[dict[str, Any]]) -> str | None:
    parents: set[str] = set()
    todo = [table]
    while todo:  # the parents' parents too: a contact's referral may be quarantined for its patient
        for _, parent, _ in canonical.TABLES[todo.pop()].parents:
            if parent not in parents:
                parents.add(parent)
                todo.append(parent)
    causes = [p for p in problems if p["table"] in parents and p["reason_code"] != "parent_quarantined"]
    if not causes:
        return None
    top = max(causes, key=lambda p: p["rows"])
    return (f"their parents were quarantined: fix {top['source_file']} first ({top['rows']:,} rows "
            f"{top['reason_code']} in {top['field'] or 'the record'})")


def suggest(problems: list[dict[str, Any]], quarantine: pl.DataFrame, files: Sequence[InputFile],
            rows_read: dict[str, int], catalogue: Catalogue | None = None) -> None:
    """Add ``suggestion`` (text or None) to each problem group of ``check`` (and
    ``unmapped_values`` to unmapped-code groups); reads the files again only where a
    date format must be tried on the failing values."""
    catalogue = catalogue or load_catalogue()
    by_name = {f.name: f for f in files}
    work = Path(tempfile.mkdtemp(prefix="handover-suggest-"))
    try:
        for p in problems:
            f = by_name.get(p["source_file"])
            p["suggestion"] = None
            if f is None:
                continue
            group = quarantine.filter((pl.col("source_file") == p["source_file"]) & (pl.col("table") == p["table"])
                                      & (pl.col("reason_code") == p["reason_code"])
                                      & pl.col("field").eq_missing(pl.lit(p["field"], dtype=pl.String)))
            spec = _field_spec(f, p["field"])
            reason = p["reason_code"]
            field = canonical.TABLES[p["table"]].field(spec.name) if spec is not None else None
            if reason == "unparseable_date" and spec is not None:
                p["suggestion"] = _date_fix(f, spec, group["source_row"], catalogue, work / f.name)
            elif reason == "unmapped_code" and spec is not None and field is not None and not field.pii:
                counts = _value_counts(_failing(f, spec, group["source_row"], work / f.name))
                p["suggestion"], p["unmapped_values"] = _code_fix(field.name, counts, catalogue)
            elif reason == "invalid_value" and field is not None and field.kind == "boolean" and spec is not None:
                counts = _value_counts(_failing(f, spec, group["source_row"], work / f.name))
                p["suggestion"] = _boolean_fix(spec, counts, catalogue)
            elif reason in (*MISFIT_REASONS, "invalid_encoding"):
                if p["rows"] >= MOST * max(1, rows_read.get(f.name, 0)):
                    p["suggestion"] = _file_fix(f, reason)
            elif reason == "parent_quarantined":
                p["suggestion"] = _parent_fix(p["table"], problems)
    finally:
        shutil.rmtree(work, ignore_errors=True)


__all__ = ["closest_columns", "dialect_suggestion", "layout_suggestions", "suggest"]
