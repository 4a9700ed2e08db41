"""Compile rule-pack SQL into polars expressions, checking it against the known columns.

Inputs: one rule's text (a condition, value or case list, with ``{codelists.X}`` and
``{thresholds.Y}`` placeholders), the pack's codelists and thresholds, and a ``Scope``: the
columns (canonical + features + earlier derived) rules of one level may read, with types.
Outputs: polars expressions, or problem strings that name what is wrong and what to do.

Nothing here reads data: a condition's type is found by running it on an *empty* frame
of the scope's schema, which catches unknown columns, type errors (``body_site > 5``) and
aggregates (``SUM(x)``) before any row is read. Codelist values are substituted as quoted
SQL literals (quotes doubled) and thresholds as plain numbers, so pack data can never
change the structure of the SQL it is put into.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Mapping
from dataclasses import dataclass, field

import polars as pl

from migrate.matching import text_keys
from migrate.rules.model import Codelist, Threshold

_PLACEHOLDER = re.compile(r"\{([^{}]*)\}")
_TEMPLATE_FIELD = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")
_IDENT = r"([A-Za-z_][A-Za-z0-9_]*)"
_QUOTED = r"'((?:[^']|'')*)'"
# col = 'x' / col <> 'x' / col != 'x', and col [NOT] IN ('a', 'b'): the literal forms whose
# values can be checked against an enumeration (a typo there would silently never match).
_COMPARE = re.compile(_IDENT + r"\s*(?:=|<>|!=)\s*" + _QUOTED)
_IN_LIST = re.compile(_IDENT + r"\s+(?:NOT\s+)?IN\s*\(([^)]*)\)", re.IGNORECASE)
_LITERAL = re.compile(_QUOTED)
# The column a placeholder is the list of: "body_site NOT IN {codelists.x}".
_IN_BEFORE = re.compile(_IDENT + r"\s+(?:NOT\s+)?IN\s*$", re.IGNORECASE)
BLANK = "blank"


@dataclass
class Scope:
    """The columns rules of one level may read at one point of the pack.

    ``sensitive`` are patient-identifying columns (and values derived from them) that
    evidence and reasons must never show; ``values`` are the allowed literals of
    enumerated columns; ``derived_by`` names the rule that added each derived column.
    """

    level: str
    columns: dict[str, pl.DataType]
    sensitive: set[str] = field(default_factory=set)
    values: dict[str, tuple[str, ...]] = field(default_factory=dict)
    derived_by: dict[str, str] = field(default_factory=dict)
    text: frozenset[str] = frozenset()  # vocabulary columns, read in matching form (migrate.matching)

    def add(self, name: str, dtype: pl.DataType, rule_id: str, reads: tuple[str, ...]) -> None:
        """Record column ``name`` derived by ``rule_id`` from columns ``reads``."""
        self.columns[name] = dtype
        self.derived_by[name] = rule_id
        # A boolean reveals nothing of the values it was computed from; anything else might.
        if dtype != pl.Boolean and any(c in self.sensitive for c in reads):
            self.sensitive.add(name)


def render_placeholders(
    text: str, thresholds: Mapping[str, Threshold], codelists: Mapping[str, Codelist],
    text_columns: frozenset[str] = frozenset(),
) -> tuple[str, tuple[str, ...], list[str]]:
    """Substitute pack values into ``text``; returns (sql, placeholders used, problems).

    A flat codelist placed after ``<column> [NOT] IN`` where the column is one of
    ``text_columns`` (vocabulary the rules read in matching form) becomes the list of its
    matching keys (``Codelist.keys``), so 'Lumbar Spine' in the pack matches 'LUMBAR-SPINE'
    in the extract; anywhere else, the values as written.
    """
    used: list[str] = []
    problems: list[str] = []

    def substitute(match: re.Match[str]) -> str:
        ref = match.group(1).strip()
        parts = ref.split(".")
        if len(parts) == 2 and parts[0] == "thresholds":
            threshold = thresholds.get(parts[1])
            if threshold is None:
                problems.append(f"unknown placeholder {{{ref}}}: no threshold '{parts[1]}'"
                                f"{_suggest(parts[1], thresholds)}; define it under thresholds:")
                return "0"
            used.append(ref)
            return repr(threshold.value)
        if len(parts) in (2, 3) and parts[0] == "codelists":
            codelist = codelists.get(parts[1])
            if codelist is None:
                problems.append(f"unknown placeholder {{{ref}}}: no codelist '{parts[1]}'"
                                f"{_suggest(parts[1], codelists)}; define it under codelists:")
                return "('')"
            column = _IN_BEFORE.search(text[:match.start()])
            as_keys = column is not None and column.group(1) in text_columns and codelist.by_system is None
            values = codelist.keys if as_keys else codelist.values
            if len(parts) == 3:
                if codelist.by_system is None or parts[2] not in codelist.by_system:
                    systems = ", ".join(codelist.by_system or {}) or "none: it is a flat list"
                    problems.append(f"unknown placeholder {{{ref}}}: codelist '{parts[1]}' has no code system "
                                    f"'{parts[2]}' (it has {systems})")
                    return "('')"
                values = codelist.by_system[parts[2]]
            if not values:
                problems.append(f"placeholder {{{ref}}} is an empty codelist, and SQL cannot test membership of "
                                "an empty list; add a value or remove that part of the condition")
                return "('')"
            used.append(ref)
            return "(" + ", ".join(sql_quote(v) for v in values) + ")"
        problems.append(f"unknown placeholder {{{ref}}}; placeholders are {{codelists.NAME}}, "
                        "{codelists.NAME.SYSTEM} or {thresholds.NAME}")
        return "NULL"

    sql = _PLACEHOLDER.sub(substitute, text)
    return sql, tuple(dict.fromkeys(used)), problems


def sql_quote(value: str) -> str:
    """A SQL string literal for ``value`` (single quotes doubled; backslash is not special)."""
    return "'" + value.replace("'", "''") + "'"


def parse_sql(sql: str) -> pl.Expr | str:
    """The polars expression of SQL ``sql``, or the parser's complaint."""
    try:
        return pl.sql_expr(sql)
    except (pl.exceptions.PolarsError, ValueError, TypeError) as exc:
        return f"SQL does not parse ({_first_line(exc)}); SQL as rendered: {sql}"


def check_expr(expr: pl.Expr, scope: Scope, later: Mapping[str, str]) -> tuple[pl.DataType | None, list[str]]:
    """The dtype ``expr`` yields over ``scope``, or the problems that stop it.

    ``later`` maps columns derived further down the pack to their rule, for a precise hint.
    """
    problems: list[str] = []
    for name in dict.fromkeys(expr.meta.root_names()):
        if name in scope.columns:
            continue
        if name in later:
            problems.append(f"column '{name}' is derived by rule {later[name]}, which comes later; "
                            "move that rule above this one")
        else:
            problems.append(f"unknown column '{name}'{_suggest(name, scope.columns)}; use a canonical, "
                            f"feature or derived {scope.level} column")
    if problems:
        return None, problems
    try:
        # memory: no rows: the expression is type-checked on an empty frame
        result = pl.DataFrame(schema=scope.columns).lazy().select(expr.alias("_value")).collect()
    except (pl.exceptions.PolarsError, ValueError, TypeError) as exc:
        return None, [f"type error: {_first_line(exc)}"]
    if result.height != 0 and expr.meta.root_names():
        return None, ["aggregates over all rows (e.g. SUM, COUNT, MAX); a rule reads one row at a time"]
    return result.schema["_value"], []


def literal_problems(sql: str, scope: Scope) -> list[str]:
    """Quoted literals compared with an enumerated column, or with a vocabulary column in a
    form other than its matching key, that can never match it."""
    problems: list[str] = []
    pairs = [(m.group(1), [m.group(2)]) for m in _COMPARE.finditer(sql)]
    pairs += [(m.group(1), _LITERAL.findall(m.group(2))) for m in _IN_LIST.finditer(sql)]
    for column, literals in pairs:
        if column in scope.text:
            values = [literal.replace("''", "'") for literal in literals]
            for value, key in zip(values, text_keys(values), strict=True):
                if value != key:
                    problems.append(f"{column} is compared in matching form (lower case, '_' for spaces and "
                                    f"punctuation), so '{value}' never matches; write '{key}'")
            continue
        allowed = scope.values.get(column)
        if allowed is None:
            continue
        for literal in literals:
            value = literal.replace("''", "'")
            if value not in allowed:
                problems.append(f"{column} is never '{value}'{_suggest(value, allowed)}; its values are "
                                + ", ".join(allowed))
    return problems


def value_text(name: str, dtype: pl.DataType) -> pl.Expr:
    """Column ``name`` as readable text: true/false, ISO dates, lists joined; null → 'blank'."""
    col = pl.col(name)
    text: pl.Expr
    if isinstance(dtype, pl.Datetime):
        text = col.dt.to_string("%Y-%m-%d %H:%M")
    elif isinstance(dtype, pl.List):
        joined = col.list.eval(pl.element().cast(pl.String)).list.join(", ")
        text = pl.when(col.list.len() == 0).then(pl.lit("none")).otherwise(joined)
    else:
        text = col.cast(pl.String)
    return text.fill_null(BLANK)


def evidence_expr(columns: tuple[str, ...], scope: Scope) -> tuple[pl.Expr | None, list[str]]:
    """``"col = value; col = value"`` over ``columns``, or the problems with them."""
    problems = [p for c in columns for p in _showable(c, scope)]
    if problems:
        return None, problems
    parts = [pl.concat_str(pl.lit(f"{c} = "), value_text(c, scope.columns[c])) for c in columns]
    return pl.concat_str(parts, separator="; "), []


def template_expr(template: str, scope: Scope) -> tuple[pl.Expr | None, list[str]]:
    """Text with each ``{column}`` replaced by the row's value, or the problems with it."""
    parts: list[pl.Expr] = []
    problems: list[str] = []
    position = 0
    for match in _TEMPLATE_FIELD.finditer(template):
        parts.append(pl.lit(template[position:match.start()]))
        name = match.group(1)
        found = _showable(name, scope)
        problems += found
        if not found:
            parts.append(value_text(name, scope.columns[name]))
        position = match.end()
    parts.append(pl.lit(template[position:]))
    if "{" in _TEMPLATE_FIELD.sub("", template):
        problems.append("a '{' in the reason is not a {column} reference; write {column_name}")
    return (None if problems else pl.concat_str(parts)), problems


def suggest(name: str, known: Mapping[str, object] | tuple[str, ...]) -> str:
    """' — did you mean X?' for the closest known name, or ''."""
    return _suggest(name, known)


def _showable(name: str, scope: Scope) -> list[str]:
    if name not in scope.columns:
        return [f"unknown column '{name}'{_suggest(name, scope.columns)} in evidence or reason"]
    if name in scope.sensitive:
        return [(f"column '{name}' identifies the patient (or is computed from a column that does); "
                 "evidence and reasons must never show it — remove it")]
    return []


def _suggest(name: str, known: Mapping[str, object] | tuple[str, ...]) -> str:
    close = difflib.get_close_matches(name, list(known), n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]
