"""Turn the rules of a merged pack into compiled ``Rule`` objects, checking each on the way.

Input: the raw rule mappings (with the file each came from), the pack's thresholds and
codelists, and a list to append problems to. Output: the compiled rules in pack order and
the columns each level may read. Two passes:

1. *structure*: keys, types, ids, severities, placeholders, SQL syntax — per rule;
2. *columns*: referral derived rules in file order (each may read the columns before it),
   then the patient scope (patient columns, features, roll-ups of referral booleans as
   ``any_<column>``), patient derived rules, then every flag rule against the full scope
   of its level. Evidence and reasons may not show patient-identifying columns.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, cast

import polars as pl

from migrate import canonical
from migrate.rules.cohorts import PATIENT_ROLLUPS, REQUIRED_DERIVED, any_column
from migrate.rules.features import PATIENT_FEATURES, REFERRAL_FEATURES, TEXT_COLUMNS
from migrate.rules.compile import (
    Scope,
    check_expr,
    evidence_expr,
    literal_problems,
    parse_sql,
    render_placeholders,
    suggest,
    template_expr,
)
from migrate.rules.model import LEVELS, Case, Codelist, Level, Rule, Threshold

RULE_KEYS = ("id", "title", "description", "applies_to", "condition", "value", "cases", "derive", "flag",
             "severity", "action", "evidence", "priority")
# What a flag rule's ``priority:`` may raise a referral to (canonical.PRIORITY above routine).
RAISED_PRIORITIES = ("urgent", "two_week_wait")
CASE_KEYS = ("value", "condition", "reason")
_ID = re.compile(r"^[A-Za-z][A-Za-z0-9_.-]*$")
_FLAG = re.compile(r"^[A-Z][A-Z0-9_]*$")
_COLUMN = re.compile(r"^[a-z][a-z0-9_]*$")


@dataclass
class _Draft:
    """A rule whose structure has been checked, waiting for its columns to be."""

    rule: Rule
    where: str
    exprs: list[pl.Expr] = field(default_factory=list)  # condition/value, or one per case
    sqls: list[str] = field(default_factory=list)
    ok: bool = True


def compile_rules(
    raw_rules: list[tuple[Any, str]], thresholds: Mapping[str, Threshold], codelists: Mapping[str, Codelist],
    problems: list[str],
) -> tuple[tuple[Rule, ...], dict[Level, Mapping[str, pl.DataType]]]:
    """Compiled rules in pack order and the columns of each level (see module docstring)."""
    drafts = [d for i, (raw, src) in enumerate(raw_rules)
              if (d := _structure(raw, src, i, thresholds, codelists, problems)) is not None]
    scopes = {"referral": _base_scope("referral"), "patient": _base_scope("patient")}
    compiled: dict[int, Rule] = {}
    for level in LEVELS:
        if level == "patient":
            for i in (i for i, d in enumerate(drafts) if i in compiled and d.rule.applies_to == "referral"):
                if compiled[i].derive and compiled[i].dtype == pl.Boolean:
                    scopes["patient"].columns[any_column(compiled[i].derive or "")] = pl.Boolean()
        pending = [i for i, d in enumerate(drafts) if d.rule.applies_to == level and d.rule.derive]
        for position, i in enumerate(pending):
            later = {drafts[j].rule.derive or "": drafts[j].rule.id for j in pending[position + 1:]}
            rule = _derived(drafts[i], scopes[level], later, problems)
            if rule is not None:
                compiled[i] = rule
    for i, draft in enumerate(drafts):
        if draft.rule.flag is not None and draft.rule.applies_to in LEVELS:
            rule = _flag(draft, scopes[draft.rule.applies_to], problems)
            if rule is not None:
                compiled[i] = rule
    declared = {d.rule.derive for d in drafts if d.rule.applies_to == "referral" and d.rule.derive}
    _check_required(compiled.values(), declared, problems)
    rules = tuple(compiled[i] for i in sorted(compiled))
    return rules, {level: dict(scopes[level].columns) for level in LEVELS}


def _base_scope(level: Level) -> Scope:
    table = canonical.REFERRALS if level == "referral" else canonical.PATIENTS
    features = REFERRAL_FEATURES if level == "referral" else {**PATIENT_FEATURES, **PATIENT_ROLLUPS}
    columns = {f.name: f.dtype for f in table.fields} | {name: f.dtype for name, f in features.items()}
    values = {name: tuple(dtype.categories.to_list()) for name, dtype in columns.items() if isinstance(dtype, pl.Enum)}
    text = frozenset(TEXT_COLUMNS) if level == "referral" else frozenset()
    return Scope(level, columns, {f.name for f in table.fields if f.pii}, values, text=text)


def _structure(raw: Any, src: str, index: int, thresholds: Mapping[str, Threshold],
               codelists: Mapping[str, Codelist], problems: list[str]) -> _Draft | None:
    """Check one rule's keys and values and parse its SQL; None if it cannot go further."""
    if not isinstance(raw, dict):
        problems.append(f"{src}: rules #{index + 1}: a rule is a mapping (id:, title:, applies_to:, ...)")
        return None
    rule_id = raw.get("id")
    if not isinstance(rule_id, str) or not _ID.match(rule_id):
        problems.append(f"{src}: rules #{index + 1}: " + ("missing key 'id'" if rule_id is None else
                        f"id {rule_id!r} must start with a letter and use letters, digits, '_', '.', '-'")
                        + "; give the rule a stable id")
        return None
    found: list[str] = []
    where = f"{src}: rule {rule_id}"
    for key in sorted(set(raw) - set(RULE_KEYS)):
        found.append(f"unknown key '{key}'{suggest(key, RULE_KEYS)}; a rule has {', '.join(RULE_KEYS)}")
    title, applies_to = raw.get("title"), raw.get("applies_to")
    if not isinstance(title, str) or not title.strip():
        found.append("missing key 'title'; add one line a clinical lead can read")
    if applies_to not in LEVELS:
        found.append(("missing key 'applies_to'" if applies_to is None else f"applies_to {applies_to!r} is unknown")
                     + "; write applies_to: referral or applies_to: patient")
    derive, flag = raw.get("derive"), raw.get("flag")
    if (derive is None) == (flag is None):
        found.append("give exactly one outcome: derive: <new column> or flag: <FLAG_CODE>")
    forms = [k for k in ("condition", "value", "cases") if k in raw]
    if flag is not None:
        found += _flag_keys(raw, forms)
    elif derive is not None:
        if not isinstance(derive, str) or not _COLUMN.match(derive):
            found.append(f"derive {derive!r} must be a snake_case column name")
        if len(forms) != 1:
            found.append("a derived rule has exactly one of condition: (true/false), value: (any SQL value) "
                         "or cases: (first match wins)")
    rule = Rule(id=rule_id, title=str(title or "").strip(), applies_to=cast(Level, applies_to), source=src,
                expr=pl.lit(None), derive=derive if isinstance(derive, str) else None,
                flag=flag if isinstance(flag, str) else None, description=_text(raw.get("description")))
    draft = _Draft(rule, where)
    uses: list[str] = []
    if forms and forms[0] == "cases":
        cases = _cases(raw["cases"], thresholds, codelists, draft, uses, found)
        draft.rule = replace(draft.rule, cases=cases)
    elif forms:
        text = raw[forms[0]]
        if not isinstance(text, str) or not text.strip():
            found.append(f"{forms[0]} must be SQL text, e.g. history_of_cancer AND body_site IN ('lumbar_spine')")
        else:
            sql = _sql(text, thresholds, codelists, draft, uses, found)
            draft.rule = replace(draft.rule, condition=" ".join(text.split()), sql=sql, value_form=forms[0] == "value")
    if flag is not None:
        priority = raw.get("priority")
        draft.rule = replace(draft.rule, severity=raw.get("severity"), action=_text(raw.get("action")),
                             evidence=tuple(str(e) for e in raw.get("evidence") or ()),
                             priority=priority if isinstance(priority, str) else None)
    elif "priority" in raw:
        found.append("priority: is an outcome of a flag rule (the referral it flags is raised); remove it here")
    draft.rule = replace(draft.rule, uses=tuple(dict.fromkeys(uses)))
    problems += [f"{where}: {p}" for p in found]
    draft.ok = not found
    return draft


def _flag_keys(raw: dict[str, Any], forms: list[str]) -> list[str]:
    found: list[str] = []
    if not isinstance(raw["flag"], str) or not _FLAG.match(raw["flag"]):
        found.append(f"flag {raw['flag']!r} must be an UPPER_SNAKE_CASE code, e.g. UNDER_PRIORITISED")
    if forms != ["condition"]:
        found.append("a flag rule has a condition: (and no value: or cases:)")
    if raw.get("severity") not in canonical.SEVERITIES:
        found.append(("missing key 'severity'" if raw.get("severity") is None
                      else f"severity {raw.get('severity')!r} is unknown")
                     + f"; use one of {', '.join(canonical.SEVERITIES)}")
    if not _text(raw.get("action")):
        found.append("missing key 'action'; say what the reviewer should do")
    if "priority" in raw:
        if raw["priority"] not in RAISED_PRIORITIES:
            found.append(f"priority {raw['priority']!r} is unknown; a flag raises a referral to one of "
                         f"{', '.join(RAISED_PRIORITIES)}")
        if raw.get("applies_to") != "referral":
            found.append("priority: raises a referral's priority: give it on a rule with applies_to: referral")
    evidence = raw.get("evidence")
    if not isinstance(evidence, list) or not evidence or not all(isinstance(e, str) for e in evidence):
        found.append("missing key 'evidence'; list the columns a reviewer needs to see, e.g. [body_site, assigned_priority]")
    return found


def _cases(raw: Any, thresholds: Mapping[str, Threshold], codelists: Mapping[str, Codelist], draft: _Draft,
           uses: list[str], found: list[str]) -> tuple[Case, ...]:
    if not isinstance(raw, list) or not raw:
        found.append("cases must be a list of {value:, condition:, reason:}")
        return ()
    cases: list[Case] = []
    for n, case in enumerate(raw, start=1):
        if not isinstance(case, dict) or any(not isinstance(case.get(k), str | int) for k in CASE_KEYS):
            found.append(f"case #{n} needs value:, condition: and reason:")
            continue
        for key in sorted(set(case) - set(CASE_KEYS)):
            found.append(f"case #{n}: unknown key '{key}'; a case has value:, condition:, reason:")
        text = str(case["condition"])
        sql = _sql(text, thresholds, codelists, draft, uses, found, f"case {case['value']}: ")
        cases.append(Case(str(case["value"]), " ".join(text.split()), sql, " ".join(str(case["reason"]).split())))
    return tuple(cases)


def _sql(text: str, thresholds: Mapping[str, Threshold], codelists: Mapping[str, Codelist], draft: _Draft,
         uses: list[str], found: list[str], prefix: str = "") -> str:
    sql, used, errors = render_placeholders(" ".join(text.split()), thresholds, codelists, frozenset(TEXT_COLUMNS))
    uses += used
    found += [prefix + e for e in errors]
    parsed = parse_sql(sql)
    if isinstance(parsed, str):
        found.append(prefix + parsed)
    else:
        draft.exprs.append(parsed)
        draft.sqls.append(sql)
    return sql


def _columns_ok(draft: _Draft, scope: Scope, later: Mapping[str, str], problems: list[str],
                boolean: bool) -> list[pl.DataType] | None:
    """Dtypes of the draft's expressions in ``scope``, or None after reporting problems."""
    if not draft.ok:
        return None
    dtypes: list[pl.DataType] = []
    found: list[str] = []
    for expr, sql in zip(draft.exprs, draft.sqls, strict=True):
        dtype, errors = check_expr(expr, scope, later)
        found += errors + literal_problems(sql, scope)
        if dtype is not None and boolean and dtype != pl.Boolean:
            found.append(f"condition gives {dtype}, not true/false: {sql}")
        dtypes.append(dtype or pl.Null())
    problems += [f"{draft.where}: {p}" for p in found]
    return None if found else dtypes


def _derived(draft: _Draft, scope: Scope, later: Mapping[str, str], problems: list[str]) -> Rule | None:
    rule = draft.rule
    name = rule.derive or ""
    if name in scope.columns:
        owner = scope.derived_by.get(name)
        problems.append(f"{draft.where}: derive: column '{name}' already exists "
                        f"({'derived by rule ' + owner if owner else 'canonical or feature column'}); choose another name")
        return None
    dtypes = _columns_ok(draft, scope, later, problems, boolean=not rule.value_form)
    reasons: list[pl.Expr] = []
    for case in rule.cases if dtypes is not None else ():
        reason, errors = template_expr(case.reason, scope)
        problems += [f"{draft.where}: case {case.value}: reason: {e}" for e in errors]
        if reason is not None:
            reasons.append(reason)
    if dtypes is None or len(reasons) != len(rule.cases):
        # Keep the column known, so rules that read it are checked without a cascade of
        # 'unknown column' problems that would hide the real one.
        fallback = pl.String() if rule.cases else pl.Null() if rule.value_form else pl.Boolean()
        scope.add(name, fallback, rule.id, ())
        return None
    reads = tuple(dict.fromkeys(c for e in draft.exprs for c in e.meta.root_names()))
    if rule.cases:
        value = pl.lit(None, dtype=pl.String)
        reason_chain = pl.lit(f"no case of rule {rule.id} matched", dtype=pl.String)
        for case, expr, reason in reversed(list(zip(rule.cases, draft.exprs, reasons, strict=True))):
            value = pl.when(expr).then(pl.lit(case.value, dtype=pl.String)).otherwise(value)
            reason_chain = pl.when(expr).then(reason).otherwise(reason_chain)
        rule = replace(rule, expr=value.alias(name), reason_expr=reason_chain.alias(f"{name}_reason"),
                       dtype=pl.String(), columns=reads)
        scope.values[name] = tuple(dict.fromkeys(c.value for c in rule.cases))
        scope.add(name, pl.String(), rule.id, reads)
        scope.add(f"{name}_reason", pl.String(), rule.id, reads)
        return rule
    expr = draft.exprs[0] if rule.value_form else draft.exprs[0].fill_null(False)
    rule = replace(rule, expr=expr.alias(name), dtype=dtypes[0], columns=reads)
    scope.add(name, dtypes[0], rule.id, reads)
    return rule


def _flag(draft: _Draft, scope: Scope, problems: list[str]) -> Rule | None:
    condition_ok = _columns_ok(draft, scope, {}, problems, boolean=True) is not None
    evidence, errors = evidence_expr(draft.rule.evidence, scope)
    problems += [f"{draft.where}: evidence: {e}" for e in errors]
    if evidence is None or not condition_ok:
        return None
    reads = tuple(dict.fromkeys(draft.exprs[0].meta.root_names()))
    return replace(draft.rule, expr=draft.exprs[0], evidence_expr=evidence, columns=reads)


def _check_required(rules: Iterable[Rule], declared: set[str], problems: list[str]) -> None:
    """The columns the outputs need must be derived by the pack (cohort, list_mismatch).

    ``declared`` holds every referral column a rule derives, compiled or not: a rule that
    failed has had its problems reported already.
    """
    by_column = {r.derive: r for r in rules if r.derive and r.applies_to == "referral"}
    for name, (form, hint) in REQUIRED_DERIVED.items():
        rule = by_column.get(name)
        if name not in declared:
            problems.append(f"rules: no referral rule derives '{name}' ({hint}); copy it from rules/default.yaml")
        if rule is None:
            continue
        if form == "cases" and not rule.cases:
            problems.append(f"{rule.source}: rule {rule.id}: '{name}' must be derived with cases: ({hint})")
        if form == "boolean" and (rule.dtype != pl.Boolean or rule.cases):
            problems.append(f"{rule.source}: rule {rule.id}: '{name}' must be true/false ({hint})")
        if name == "cohort":
            for case in rule.cases:
                if case.value not in canonical.COHORTS:
                    problems.append(f"{rule.source}: rule {rule.id}: cohort value '{case.value}'"
                                    f"{suggest(case.value, canonical.COHORTS)} is not one of "
                                    + ", ".join(canonical.COHORTS))


def _text(value: Any) -> str | None:
    return " ".join(str(value).split()) if isinstance(value, str | int | float) and str(value).strip() else None
