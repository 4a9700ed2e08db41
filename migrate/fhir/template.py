"""FHIR JSON as polars expressions: one template per resource type, no Python per row.

A template is a tree of ``Node``s built once per batch; rendering it gives one polars
expression whose value, for each row of a frame, is the resource's JSON text. Absent
values are left out, never written as ``null``, and an object or array whose members are
all absent is itself left out (FHIR forbids empty elements). Member order is the order
the template gives (FHIR element order), so the text is byte-for-byte deterministic.

Each node also carries what validation needs (``migrate.fhir.validate``):

- ``checks``: for every value taken from the data, the FHIR primitive type it must match
  (``string``, ``code``, ``id``, ``uri``, ``date``, ``dateTime``, ``instant``) or the
  value set it must come from, with its element path;
- ``bits``: a cheap presence test per optional element; together they are the resource's
  *shape* (which elements it has). Rows of one shape differ only in values, so the
  fhir.resources R4B model validates one resource per shape and the value checks cover
  the rest;
- ``refs``: the ``Type/id`` of every reference, to prove each resolves;
- ``computed``: values a node uses more than once (a reference's ``Type/id`` text: in the
  JSON, its check and ``refs``; a dateTime's text: in the JSON, its presence, its checks),
  named and computed once per row as columns before the JSON (``Template.frame``): polars
  does not always share a repeated expression between the output columns, and formatting
  a local time with its offset is the dearest value of all.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import polars as pl

from migrate.fhir.options import profile

# FHIR R4 primitive regexes (http://hl7.org/fhir/R4/datatypes.html), anchored. ``string``
# is stricter than the spec's regex (``^[ \r\n\t\S]+$``): it also refuses the control
# characters the spec says a string SHALL NOT contain (below U+0020 other than tab, CR and
# LF) — in the same pass, one regex instead of two (``tests/fhir/test_template_checks.py``
# proves it accepts exactly what the two did).
_YEAR = r"([0-9]([0-9]([0-9][1-9]|[1-9]0)|[1-9]00)|[1-9]000)"
_TIME = r"([01][0-9]|2[0-3]):[0-5][0-9]:([0-5][0-9]|60)(\.[0-9]+)?(Z|(\+|-)((0[0-9]|1[0-3]):[0-5][0-9]|14:00))"
PATTERNS: dict[str, str] = {
    "string": r"^[ \r\n\t[^\s\x00-\x08\x0E-\x1F]]+$",
    "code": r"^[^\s]+( [^\s]+)*$",
    "id": r"^[A-Za-z0-9\-\.]{1,64}$",
    "uri": r"^\S+$",
    "date": rf"^{_YEAR}(-(0[1-9]|1[0-2])(-(0[1-9]|[1-2][0-9]|3[0-1]))?)?$",
    "dateTime": rf"^{_YEAR}(-(0[1-9]|1[0-2])(-(0[1-9]|[1-2][0-9]|3[0-1])(T{_TIME})?)?)?$",
    "instant": rf"^{_YEAR}-(0[1-9]|1[0-2])-(0[1-9]|[1-2][0-9]|3[0-1])T{_TIME}$",
}

Part = str | pl.Expr


@dataclass(frozen=True)
class Check:
    """One value check: ``ok`` is true (never null) where the value is acceptable.

    ``path`` is the element's place in the template (``identifier[1].value``): an array
    index counts the template's items, present or not.
    """

    path: str
    ok: pl.Expr
    message: str

    def under(self, prefix: str) -> Check:
        if not self.path:
            return replace(self, path=prefix)
        return replace(self, path=prefix + (self.path if self.path.startswith("[") else "." + self.path))


@dataclass(frozen=True)
class Node:
    """A JSON fragment: the concatenation of ``parts`` (constant text or expressions).

    An optional node is a single expression that is null where the element is absent;
    ``present`` tests that cheaply (without building the text).
    """

    parts: tuple[Part, ...]
    optional: bool = False
    present: pl.Expr | None = None
    checks: tuple[Check, ...] = ()
    bits: tuple[pl.Expr, ...] = ()
    refs: tuple[pl.Expr, ...] = ()
    computed: tuple[tuple[str, pl.Expr], ...] = ()

    @property
    def constant(self) -> bool:
        return all(isinstance(p, str) for p in self.parts)

    def expr(self) -> pl.Expr:
        """The node's text as one expression (null where an optional node is absent)."""
        return _concat(self.parts)


def _merge(parts: Sequence[Part]) -> list[Part]:
    merged: list[Part] = []
    for p in parts:
        if isinstance(p, str) and merged and isinstance(merged[-1], str):
            merged[-1] = merged[-1] + p
        elif not (isinstance(p, str) and p == ""):
            merged.append(p)
    return merged


def _concat(parts: Sequence[Part]) -> pl.Expr:
    merged = _merge(parts)
    if not merged:
        return pl.lit("", dtype=pl.String)
    if len(merged) == 1:
        p = merged[0]
        return pl.lit(p, dtype=pl.String) if isinstance(p, str) else p
    return pl.concat_str([pl.lit(p, dtype=pl.String) if isinstance(p, str) else p for p in merged])


def _optional(text: pl.Expr, present: pl.Expr, checks: tuple[Check, ...] = (), bits: tuple[pl.Expr, ...] = (),
              refs: tuple[pl.Expr, ...] = (), computed: tuple[tuple[str, pl.Expr], ...] = ()) -> Node:
    return Node((text,), True, present, checks, (present, *bits), refs, computed)


def _computed(prefix: str, value: pl.Expr) -> tuple[pl.Expr, tuple[tuple[str, pl.Expr], ...]]:
    """A column standing for ``value`` (computed once per row: ``Template.frame``), and its
    definition. The name comes from the expression, so the same value is one column."""
    name = f"_{prefix}:{hashlib.sha1(value.meta.serialize(format='json').encode()).hexdigest()[:16]}"
    return pl.col(name), ((name, value),)


# --- leaves ----------------------------------------------------------------------------------
def const(value: Any) -> Node:
    """A constant JSON value (the same in every row)."""
    return Node((json.dumps(value, ensure_ascii=False, separators=(",", ":")),))


def _kind_check(value: pl.Expr, kind: str) -> Check:
    # str.contains is null only where the value is: an absent value is not checked here.
    return Check("", value.str.contains(PATTERNS[kind]).fill_null(True), f"not a valid FHIR {kind}")


def _escaped(value: pl.Expr) -> pl.Expr:
    """``value`` as a JSON string literal (quotes and escapes by polars' JSON encoder)."""
    return pl.struct(value.alias("v")).struct.json_encode().str.slice(5).str.head(-1)


def text(value: pl.Expr, kind: str = "string", required: bool = False) -> Node:
    """A string-valued primitive taken from the data, JSON-escaped and checked against ``kind``.

    ``required`` says the value is never null by construction (a null then nulls the whole
    resource, which validation reports) and saves the presence test.
    """
    check = _kind_check(value, kind)
    if required:
        missing = Check("", value.is_not_null(), "required value is missing")
        return Node((_escaped(value),), checks=(check, missing))
    return _optional(pl.when(value.is_not_null()).then(_escaped(value)), value.is_not_null(), (check,))


def safe(value: pl.Expr, kind: str = "id", required: bool = True) -> Node:
    """A value handover generated (an id, a mapped code): quoted without escaping, still checked."""
    check = _kind_check(value, kind)
    quoted: list[Part] = ['"', value, '"']
    if required:
        return Node(tuple(quoted), checks=(check, Check("", value.is_not_null(), "required value is missing")))
    return _optional(_concat(quoted), value.is_not_null(), (check,))


def date(value: pl.Expr, required: bool = False) -> Node:
    """A polars Date as a FHIR date."""
    formatted = value.dt.strftime("%Y-%m-%d")
    return safe(formatted, "date", required)


def datetime_local(value: pl.Expr, timezone: str, kind: str = "dateTime") -> Node:
    """A naive local polars Datetime as a FHIR dateTime/instant with its UTC offset.

    A wall-clock time that does not exist in ``timezone`` (the hour skipped when clocks go
    forward) has no instant: the check reports it rather than guessing. A repeated hour
    (clocks go back) is read as the earlier one. UTC is written ``Z``, as the R4B models
    write it, so a resource round-trips through them unchanged.
    """
    formatted, computed = _computed("datetime", value.dt.replace_time_zone(
        timezone, ambiguous="earliest", non_existent="null").dt.strftime("%Y-%m-%dT%H:%M:%S%:z")
        .str.replace(r"\+00:00$", "Z"))
    node = safe(formatted, kind, required=False)
    exists = Check("", value.is_null() | formatted.is_not_null(), f"local time does not exist in {timezone}")
    return replace(node, checks=(*node.checks, exists), computed=(*node.computed, *computed))


def mapped(value: pl.Expr, mapping: Mapping[str, str], kind: str = "code", required: bool = False,
           strict: bool = True) -> Node:
    """A code translated through ``mapping`` (values need no escaping).

    ``strict``: a value outside the mapping fails its check; otherwise it is left out.
    """
    out = value.cast(pl.String).replace_strict(dict(mapping), default=None, return_dtype=pl.String)
    node = safe(out, kind, required=False)
    known = Check("", value.is_null() | out.is_not_null() | (not strict),
                  f"value not in the mapping ({', '.join(sorted(mapping))})")
    if required:
        return Node(('"', out, '"'), checks=(*node.checks, known,
                                             Check("", value.is_not_null(), "required value is missing")))
    return replace(node, checks=(*node.checks, known))


def boolean(value: pl.Expr) -> Node:
    """A polars Boolean as JSON true/false (absent when null)."""
    return _optional(pl.when(value).then(pl.lit("true")).when(~value).then(pl.lit("false")), value.is_not_null())


def raw(value: pl.Expr, present: pl.Expr | None = None) -> Node:
    """Ready-made JSON text (null where absent)."""
    return _optional(value, present if present is not None else value.is_not_null())


def spread(items: pl.Expr) -> Node:
    """A list column of ready-made JSON items, spliced into an ``array`` (absent when empty)."""
    present = items.list.len().fill_null(0) > 0
    return _optional(pl.when(present).then(items.list.join(",")), present)


def when(condition: pl.Expr, node: Node) -> Node:
    """``node`` only where ``condition`` holds (absent elsewhere; its checks apply only there)."""
    cond = condition.fill_null(False)
    present = cond & node.present if node.present is not None else cond
    checks = tuple(replace(c, ok=~cond | c.ok) for c in node.checks)
    refs = tuple(pl.when(cond).then(r) for r in node.refs)
    return Node((pl.when(cond).then(node.expr()),), True, present, checks, (present, *node.bits), refs,
                node.computed)


# --- structure -------------------------------------------------------------------------------
def _compose(open_: str, close: str, members: Sequence[tuple[str | None, Node]]) -> Node:
    pieces: list[tuple[list[Part], bool, pl.Expr | None]] = []
    checks: list[Check] = []
    bits: list[pl.Expr] = []
    refs: list[pl.Expr] = []
    computed: list[tuple[str, pl.Expr]] = []
    for i, (key, node) in enumerate(members):
        prefix = "" if key is None else json.dumps(key) + ":"
        label = f"[{i}]" if key is None else key
        checks += [c.under(label) for c in node.checks]
        bits += node.bits
        refs += node.refs
        computed += node.computed
        if node.optional:
            body: list[Part] = [prefix, node.expr()] if prefix else [node.expr()]
            pieces.append(([_concat(body)], True, node.present))
        elif pieces and not pieces[-1][1]:
            pieces[-1][0].extend([",", prefix, *node.parts])
        else:
            pieces.append(([prefix, *node.parts], False, None))
    if not pieces:
        raise ValueError("an object or array needs at least one member")
    if not any(optional for _, optional, _ in pieces):
        return Node(tuple(_merge([open_, *pieces[0][0], close])), False, None, tuple(checks), tuple(bits), tuple(refs),
                    tuple(computed))
    inner = pl.concat_str([_concat(p) for p, _, _ in pieces], separator=",", ignore_nulls=True)
    full = pl.concat_str([pl.lit(open_), inner, pl.lit(close)])
    if all(optional for _, optional, _ in pieces):
        present = pl.any_horizontal([p for _, _, p in pieces if p is not None])
        return _optional(pl.when(present).then(full), present, tuple(checks), tuple(bits), tuple(refs),
                         tuple(computed))
    return Node((full,), False, None, tuple(checks), tuple(bits), tuple(refs), tuple(computed))


def obj(*members: tuple[str, Node | None]) -> Node:
    """A JSON object of the members that are given (None: statically absent)."""
    return _compose("{", "}", [(k, n) for k, n in members if n is not None])


def array(*items: Node | None) -> Node:
    """A JSON array of the items that are present."""
    return _compose("[", "]", [(None, n) for n in items if n is not None])


def reference(resource_type: str, resource_id: pl.Expr, *extra: tuple[str, Node | None]) -> Node:
    """A literal reference ``{"reference": "Type/id", ...extra}``, recorded for the resolution check."""
    target, computed = _computed("reference", pl.concat_str([pl.lit(f"{resource_type}/"), resource_id]))
    node = obj(("reference", safe(target, "string")), *extra)
    return replace(node, refs=(*node.refs, target), computed=(*node.computed, *computed))


def with_checks(node: Node, *checks: Check) -> Node:
    """``node`` with extra checks (for values it holds ready-made, e.g. a ``spread``)."""
    return replace(node, checks=(*node.checks, *checks))


def coding(system: str, code: Node, display: Node | None = None) -> Node:
    return obj(("system", const(system)), ("code", code), ("display", display))


def concept(system: str, code: Node, display: Node | None = None, text_: Node | None = None) -> Node:
    """A CodeableConcept with one coding (and optional text)."""
    return obj(("coding", array(coding(system, code, display))), ("text", text_))


@dataclass(frozen=True)
class Template:
    """A whole resource: its JSON expression and what validation needs."""

    resource_type: str
    json: pl.Expr
    checks: tuple[Check, ...]
    bits: tuple[pl.Expr, ...]
    refs: tuple[pl.Expr, ...]
    computed: tuple[tuple[str, pl.Expr], ...] = ()

    def frame(self, frame: pl.LazyFrame) -> pl.LazyFrame:
        """``frame`` with the template's computed columns (``columns`` and ``problems`` read them)."""
        return frame.with_columns(**dict(self.computed)) if self.computed else frame

    def columns(self) -> list[pl.Expr]:
        """Expressions for columns ``json``, ``shape``, ``passed`` (every value check holds;
        the JSON itself is tested apart) and ``refs``."""
        shape = (pl.concat_str([b.fill_null(False).cast(pl.Int8).cast(pl.String) for b in self.bits])
                 if self.bits else pl.lit(""))
        refs = (pl.concat_list(self.refs).list.drop_nulls() if self.refs
                else pl.lit([], dtype=pl.List(pl.String)))
        return [self.json.alias("json"), shape.alias("shape"), self.passed().alias("passed"), refs.alias("refs")]

    def passed(self) -> pl.Expr:
        """True where no check fails (a null verdict is no failure, as in ``problems``).

        Why apart from ``problems``: a message per check is a string column per check and
        their concatenation, for every row, where almost every row passes; a boolean per
        check costs a fraction of that, and the messages are then made only for the rows
        that fail (``migrate.fhir.inputs.emit``)."""
        return pl.all_horizontal([c.ok.fill_null(True) for c in self.checks]) if self.checks else pl.lit(True)

    def problems(self) -> pl.Expr:
        """The failing checks' messages, ``; ``-separated (null where none fails), then
        ``not built`` where the JSON is null."""
        messages = [pl.when(~c.ok).then(pl.lit(f"{self.resource_type}.{c.path}: {c.message}")) for c in self.checks]
        messages.append(pl.when(self.json.is_null()).then(pl.lit(f"{self.resource_type}: not built")))
        problems = pl.concat_str(messages, separator="; ", ignore_nulls=True)
        return pl.when(problems != "").then(problems)


def resource(resource_type: str, resource_id: pl.Expr, *members: tuple[str, Node | None]) -> Template:
    """A resource of ``resource_type`` with id ``resource_id``, its UK Core profile and ``members``."""
    root = obj(("resourceType", const(resource_type)), ("id", safe(resource_id, "id")),
               ("meta", const({"profile": [profile(resource_type)]})), *members)
    return Template(resource_type, root.expr(), root.checks, root.bits, root.refs, root.computed)


def _list_check(values: pl.Expr, present: pl.Expr) -> Check:
    ok = values.list.eval(pl.element().str.contains(PATTERNS["string"])).list.all()
    return Check("", ~present | ok.fill_null(False), "not a valid FHIR string")


def string_list(values: pl.Expr) -> Node:
    """A list-of-strings column as a JSON array of strings (absent when empty), each checked."""
    present = values.list.len().fill_null(0) > 0
    return _optional(pl.when(present).then(_escaped(values)), present, (_list_check(values, present),))


def annotation_list(values: pl.Expr) -> Node:
    """A list-of-strings column as an array of Annotations ``{"text": …}`` (absent when empty)."""
    present = values.list.len().fill_null(0) > 0
    items = values.list.eval(pl.concat_str([pl.lit('{"text":'), _escaped(pl.element()), pl.lit("}")]))
    array_text = pl.concat_str([pl.lit("["), items.list.join(","), pl.lit("]")])
    return _optional(pl.when(present).then(array_text), present, (_list_check(values, present),))


def escaped(value: pl.Expr) -> pl.Expr:
    """``value`` as a JSON string literal (for ready-made JSON items)."""
    return _escaped(value)
