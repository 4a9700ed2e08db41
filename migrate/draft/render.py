"""The drafted profile as YAML text, every uncertain choice a comment saying why.

Scalars are written plain wherever the project's YAML loader (``migrate.yamltext``) reads
them back as the same text (``Pat Ref``, ``2WW``, ``1``), and double-quoted otherwise
(``"%d/%m/%Y"``, ``""``, ``"true"``); ``scalar`` checks each by loading it. Lines that need
a person carry ``CHECK``; the rest say the confidence and the evidence. No value of a
field that identifies a person is ever written: values appear only in coded fields' maps.
"""

from __future__ import annotations

import json
import re
import textwrap
from collections import Counter
from functools import lru_cache
from typing import Any

from migrate import canonical
from migrate.draft.fields import MAPPED, Proposal
from migrate.draft.options import MapEntry
from migrate.draft.survey import FileSurvey
from migrate.draft.tables import Leftover, TableChoice
from migrate.profile import NEEDED_FIELDS
from migrate.yamltext import read_yaml

WIDTH = 110
_ORDER = ("column", "columns", "split", "required", "remove", "pattern", "on_invalid", "case", "formats", "separator")


@lru_cache(maxsize=4096)
def scalar(value: str) -> str:
    """``value`` as a YAML scalar: plain when it reads back as itself as a key, in a flow
    list and in a flow mapping; else single-quoted (backslashes stay as written) when that
    reads back; else double-quoted."""
    for text in (value, "'" + value.replace("'", "''") + "'"):
        try:
            if value and read_yaml(f"{text}: [{text}, {{k: {text}}}]") == {value: [value, {"k": value}]}:
                return text
        except Exception:  # noqa: BLE001,S112 - any YAML error means: try the next quoting
            continue
    return json.dumps(value, ensure_ascii=False)


def flow(value: Any) -> str:
    """A value in YAML flow style (mappings in ``_ORDER``, then as given)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict):
        keys = [k for k in _ORDER if k in value] + [k for k in value if k not in _ORDER]
        return "{" + ", ".join(f"{k}: {flow(value[k])}" for k in keys) + "}"
    if isinstance(value, list | tuple):
        return "[" + ", ".join(flow(v) for v in value) + "]"
    if value is None:
        return "null"
    return scalar(str(value))


def comment(text: str, indent: int) -> list[str]:
    pad = " " * indent
    return textwrap.wrap(text, WIDTH - indent, initial_indent=pad + "# ", subsequent_indent=pad + "#   ",
                         break_long_words=False, break_on_hyphens=False)


def _source(p: Proposal) -> dict[str, Any]:
    opts = {k: v for k, v in p.options.items() if k not in ("map", "split_name")}
    if len(p.columns) == 1:
        return {"column": p.columns[0], **opts}
    return {"columns": list(p.columns), **opts}


def _field_lines(p: Proposal, indent: int) -> list[str]:
    pad = " " * indent
    lines = comment(f"{p.confidence:.2f} " + "; ".join(p.reasons), indent)
    entries: list[MapEntry] | None = p.options.get("map")
    if entries is None:
        return [*lines, f"{pad}{p.field}: {flow(_source(p))}"]
    lines.append(f"{pad}{p.field}:")
    for key, value in _source(p).items():
        lines.append(f"{pad}  {key}: {flow(value)}")
    known = [e for e in entries if e.meaning is not None]
    unknown = [e for e in entries if e.meaning is None]
    if known:
        lines.append(f"{pad}  map:")
        for e in known:
            lines.append(f"{pad}    {scalar(e.value)}: {e.meaning}  # {e.rows:,} {'row' if e.rows == 1 else 'rows'}")
    else:
        lines.append(f"{pad}  # map: (no value matched a canonical value)")
    for e in unknown:
        note = f"; {e.note}" if e.note else ""
        lines.append(f"{pad}    # CHECK {scalar(e.value)}: ?  # {e.rows:,} {'row' if e.rows == 1 else 'rows'}{note}")
    return lines


def _split_lines(p: Proposal, indent: int) -> list[str]:
    pad = " " * indent
    split = p.options.get("split_name")
    if not split:
        return comment(f"CHECK: '{p.columns[0]}' holds whole names without a comma: say how to split it "
                       "(family_name: {split: {column: …, sep: ' ', index: -1}}) or map separate columns", indent)
    lines = comment(f"{p.confidence:.2f} " + "; ".join(p.reasons) + "; 'SURNAME, Forenames': split at the comma"
                    + ("; family names in capitals, so case: title" if "case" in split["family_name"] else ""), indent)
    return lines + [f"{pad}{name}: {flow(spec)}" for name, spec in split.items()]


def _unmapped(choice: TableChoice, indent: int) -> list[str]:
    used = {c for p in choice.chosen.values() if p.mapped for c in p.columns}
    lines: list[str] = []
    for column in choice.survey.columns:
        if column in used:
            continue
        mapped = {f for f, p in choice.chosen.items() if p.mapped}
        near = [p for p in [*choice.chosen.values(), *choice.rest]
                if p.columns[0] == column and not p.mapped and p.field not in mapped]
        s = choice.survey.stats[column]
        if near:
            p = max(near, key=lambda q: q.confidence)
            text = f"CHECK: not mapped: '{column}' (closest field {p.field}, {p.confidence:.2f}: {'; '.join(p.reasons)})"
        elif s.filled == 0:
            text = f"not mapped: '{column}' (empty in every row)"
        else:
            text = f"CHECK: not mapped: '{column}': no field of {choice.table} by name ({s.distinct:,} distinct values)"
        lines += comment(text, indent)
    return lines


def _defaults(choices: list[TableChoice]) -> dict[str, Any]:
    delimited = [c.survey for c in choices if c.survey.kind == "delimited"]
    encodings = Counter(s.encoding.encoding for s in delimited if s.encoding and "ASCII only" not in s.encoding.why)
    delimiters = Counter(s.dialect.delimiter for s in delimited if s.dialect)
    quotes = Counter(s.dialect.quote_char for s in delimited if s.dialect)
    return {"encoding": encodings.most_common(1)[0][0] if encodings else "utf-8",
            "delimiter": delimiters.most_common(1)[0][0] if delimiters else ",",
            "quote_char": quotes.most_common(1)[0][0] if quotes else '"'}


def _file_lines(s: FileSurvey, defaults: dict[str, Any], indent: int) -> list[str]:
    pad = " " * indent
    lines = []
    if s.encoding is not None:
        lines += comment(("" if s.encoding.certain else "CHECK: ") + f"{s.name}: {s.encoding.why}", indent)
        if s.encoding.encoding != defaults["encoding"] and "ASCII only" not in s.encoding.why:
            lines.append(f"{pad}encoding: {s.encoding.encoding}")
    if s.dialect is not None:
        d = s.dialect
        lines += comment(("" if d.certain else "CHECK: ") + f"{d.why}; {d.line_ending} line ends", indent)
        if d.delimiter != defaults["delimiter"]:
            lines.append(f"{pad}delimiter: {flow(d.delimiter)}")
        if d.quote_char != defaults["quote_char"]:
            lines.append(f"{pad}quote_char: {flow(d.quote_char)}")
    if s.kind == "parquet":
        lines.append(f"{pad}format: parquet")
    return lines


def source_system(name: str) -> str:
    """A FHIR-safe system name from a folder's name: lower case, no spaces or '/' (``FhirOptions``
    rejects both), never empty."""
    slug = re.sub(r"[^a-z0-9._-]+", "-", name.lower()).strip("-.")
    return slug or "outgoing-provider"


def render(name: str, choices: list[TableChoice], leftovers: list[Leftover], skipped: list[str],
           formats: dict[str, list[str]], booleans: tuple[list[str], list[str]],
           catalogue_required: dict[str, dict[str, bool]]) -> str:
    """The YAML text of the drafted profile (module docstring)."""
    out = [f"# Drafted by `handover profile draft` from the files in {name}/. Lines marked CHECK need a person:",
           "# a choice the data could not settle, or rows a run would quarantine. Each field says its confidence",
           "# (0-1: a listed column name whose values fit is 0.97) and its evidence. Then run `handover check`."]
    for left in leftovers:
        s = left.survey
        if s.kind == "hl7v2":
            text = f"not drafted: {s.name} holds HL7 v2 messages: read it with the shipped profile (--mapping hl7v2)"
        elif left.table:
            text = (f"CHECK: not drafted: {s.name} ({s.rows:,} rows) resembles {left.table} (score {left.score:.2f}) "
                    "but another file fits that table better; if it is the new provider's patient index, give it to "
                    "`handover run --target-index` (a target_index table maps its columns)")
        else:
            text = f"CHECK: not drafted: {s.name}: its columns match no canonical table"
        out += comment(text, 0)
    if skipped:
        out += comment(f"not read: {', '.join(skipped)} (only files at the top of --input are extract files)", 0)
    defaults = _defaults(choices)
    out += [f"profile: {scalar(name)}", "format_version: 1",
            f"description: {scalar(f'Drafted from the files in {name}/ by handover profile draft')}",
            *comment("CHECK: source_system names the outgoing system in every FHIR identifier system and every "
                     "resource id: drafted from the folder's name; set the provider's own system name and keep it the "
                     "same for every batch of this provider, or the same patient gets a new id in each batch", 0),
            f"source_system: {scalar(source_system(name))}", "defaults:"]
    for key in ("encoding", "delimiter", "quote_char"):
        out.append(f"  {key}: {flow(defaults[key])}")
    out.append("  on_encoding_error: quarantine")
    for kind in ("date", "datetime"):
        if formats.get(kind):
            out.append(f"  {kind}_formats: {flow(formats[kind])}")
    out.append(f"  null_values: {flow(['', 'NULL'])}")
    out.append(f"  true_values: {flow(booleans[0])}")
    out.append(f"  false_values: {flow(booleans[1])}")
    out.append("")
    out.append("tables:")
    for choice in choices:
        s = choice.survey
        out.append(f"  {choice.table}:")
        out += comment(f"{s.name}: {s.rows:,} rows, {len(s.columns)} columns; table score {choice.score:.2f}"
                       + "".join(f"; {link}" for link in choice.links), 4)
        out.append(f"    files: {flow([s.name])}")
        out += _file_lines(s, defaults, 4)
        out.append("    fields:")
        required = {f for f, spec in catalogue_required.get(choice.table, {}).items() if spec}
        for field in [*canonical.TABLES[choice.table].field_names, "full_name"]:
            p = choice.chosen.get(field)
            if field == "full_name" and p is not None and p.mapped:
                out += _split_lines(p, 6)
            elif p is not None and p.mapped:
                out += _field_lines(p, 6)
            elif field in NEEDED_FIELDS.get(choice.table, ()) or field in required:
                why = ("a row cannot be keyed or linked without it" if field in NEEDED_FIELDS.get(choice.table, ())
                       else "the rules read it")
                maybe = sorted({q.columns[0] for q in [*choice.chosen.values(), *choice.rest]
                                if q.field == field and not q.mapped})
                out += comment(f"CHECK: map {field}: no column found for it by name, and {why}"
                               + (f"; by their values, maybe {', '.join(repr(c) for c in maybe)}" if maybe else ""),
                               6)
        out += _unmapped(choice, 6)
        out.append("")
    return "\n".join(out).rstrip("\n") + "\n"


def field_kind(table: str, field: str) -> str:
    return "name" if field == "full_name" else canonical.TABLES[table].field(field).kind


__all__ = ["MAPPED", "flow", "render", "scalar"]
