"""Plain-text descriptions of a rule pack for ``handover rules list`` / ``rules explain CODE``.

Inputs: a compiled ``RulePack`` (and a rule id, flag code or derived column for
``explain``). Outputs: rows (``list_rules``, ``columns``) and text (``explain``) a clinical
lead can read: what a rule checks, every derived column and feature it relies on (followed
down to canonical columns), the codelists and thresholds it uses with their values, the
evidence shown and the action asked for. Nothing here evaluates data.
"""

from __future__ import annotations

import difflib
from typing import Any

from migrate import canonical
from migrate.rules.cohorts import PATIENT_ROLLUPS
from migrate.errors import ConfigError
from migrate.rules.features import PATIENT_FEATURES, REFERRAL_FEATURES, Feature
from migrate.rules.model import LEVELS, Level, Rule, RulePack

_WHO = {"referral": "each referral", "patient": "each patient"}


def list_rules(pack: RulePack) -> list[dict[str, Any]]:
    """One row per rule in pack order: id, kind (flag/derived), flag, derive, severity, applies_to,
    title, priority (what a flag rule raises the referral's priority to, or None)."""
    return [
        {"id": r.id, "kind": r.kind, "flag": r.flag, "derive": r.derive, "severity": r.severity,
         "applies_to": r.applies_to, "title": r.title, "priority": r.priority}
        for r in pack.rules
    ]


def columns(pack: RulePack) -> list[dict[str, Any]]:
    """Every column rules may read, per level: name, level, dtype, kind and meaning."""
    rows: list[dict[str, Any]] = []
    for level in LEVELS:
        for name, dtype in pack.columns[level].items():
            kind, meaning = _column_meaning(pack, level, name)
            rows.append({"name": name, "level": level, "dtype": str(dtype), "kind": kind, "description": meaning})
    return rows


def explain(pack: RulePack, code: str) -> str:
    """What the rules with id, flag code or derived column ``code`` check, in words.

    Raises ``ConfigError`` (exit 2) for a code the pack does not know, with close matches.
    """
    rules = pack.find(code)
    if not rules:
        known = [r.id for r in pack.rules] + [r.flag for r in pack.rules if r.flag] + \
                [r.derive for r in pack.rules if r.derive]
        close = difflib.get_close_matches(code, known, n=3, cutoff=0.5)
        hint = f"; did you mean {', '.join(close)}?" if close else "; handover rules list shows them"
        raise ConfigError(f"rule pack {pack.name} has no rule, flag or derived column '{code}'{hint}",
                          [f"{pack.path}: no rule id, flag code or derived column '{code}'"])
    return "\n\n".join(_explain_rule(pack, r) for r in rules) + "\n"


def _explain_rule(pack: RulePack, rule: Rule) -> str:
    if rule.flag:
        head = f"{rule.flag} — rule {rule.id} ({rule.source})"
    else:
        head = f"{rule.derive} — derived by rule {rule.id} ({rule.source})"
    lines = [head, f"  {rule.title}"]
    if rule.description:
        lines.append(f"  {rule.description}")
    lines.append(f"  Applies to: {_WHO[rule.applies_to]}")
    if rule.flag:
        lines.append(f"  Severity: {rule.severity}")
        lines.append(f"  Raised when: {rule.condition}")
    elif rule.cases:
        lines.append("  Value: the first of these whose condition holds")
        for case in rule.cases:
            lines.append(f"    {case.value} when {case.condition}")
            lines.append(f"      reason given: {case.reason}")
    elif rule.value_form:
        lines.append(f"  Value: {rule.condition}")
    else:
        lines.append(f"  True when: {rule.condition}")
    meanings = _dependencies(pack, rule)
    if meanings:
        lines.append("  Where:")
        lines += [f"    {line}" for line in meanings]
    uses = _uses(pack, rule)
    if uses:
        lines.append("  Codelists and thresholds used:")
        lines += [f"    {line}" for line in uses]
    if rule.flag:
        lines.append(f"  Evidence shown: {', '.join(rule.evidence)}")
        lines.append(f"  Action: {rule.action}")
        if rule.priority:
            lines.append(f"  Priority: raised to {rule.priority} in the FHIR output (ServiceRequest.priority; "
                         "the assigned priority kept in a note, this rule and its evidence as the reason)")
    return "\n".join(lines)


def _dependencies(pack: RulePack, rule: Rule) -> list[str]:
    """Each derived or feature column the rule reads, directly or through derived columns."""
    lines: list[str] = []
    for level, name in _all_reads(pack, rule):
        producer = _producer(pack, level, name)
        if producer is not None:
            text = producer.condition or "; ".join(f"{c.value} when {c.condition}" for c in producer.cases)
            lines.append(f"{name}: derived by rule {producer.id} — {text}")
            continue
        kind, meaning = _column_meaning(pack, level, name)
        if kind != "canonical":
            lines.append(f"{name}: {meaning}")
    return lines


def _uses(pack: RulePack, rule: Rule) -> list[str]:
    """Codelists and thresholds the rule relies on — in its SQL, in the derived rules it
    depends on, or through the features it reads — with this pack's values."""
    reads = _all_reads(pack, rule)
    rules = [rule] + [p for level, n in reads if (p := _producer(pack, level, n)) is not None]
    refs = [u for r in rules for u in r.uses]
    refs += [f"codelists.{c}" for level, n in reads if n in _features(level) for c in _features(level)[n].codelists]
    lines: list[str] = []
    for ref in dict.fromkeys(refs):
        parts = ref.split(".")
        if parts[0] == "thresholds":
            lines.append(f"{ref} = {pack.thresholds[parts[1]].value}")
            continue
        codelist = pack.codelists[parts[1]]
        if len(parts) == 3:
            lines.append(f"{ref} = {', '.join((codelist.by_system or {})[parts[2]])}")
        elif codelist.by_system is not None:
            per_system = "; ".join(f"{system}: {', '.join(codes)}" for system, codes in codelist.by_system.items())
            lines.append(f"{ref} = {per_system}")
        else:
            lines.append(f"{ref} = {', '.join(codelist.values) or '(empty)'}")
    return lines


def _features(level: Level) -> dict[str, Feature]:
    return REFERRAL_FEATURES if level == "referral" else {**PATIENT_FEATURES, **PATIENT_ROLLUPS}


def _all_reads(pack: RulePack, rule: Rule) -> list[tuple[Level, str]]:
    """(level, column) read by the rule, depth first through the rules deriving them.

    A patient rule reading any_<column> continues into the referral rule deriving <column>.
    """
    out: list[tuple[Level, str]] = []
    stack: list[tuple[Level, str]] = [(rule.applies_to, c) for c in reversed(rule.columns)]
    while stack:
        item = stack.pop()
        if item in out:
            continue
        out.append(item)
        producer = _producer(pack, *item)
        if producer is not None:
            stack += [(producer.applies_to, c) for c in reversed(producer.columns)]
    return out


def _producer(pack: RulePack, level: Level, name: str) -> Rule | None:
    """The derived rule that makes column ``name`` at ``level`` (any_<col> → the referral rule)."""
    for r in pack.derived(level):
        if name in (r.derive, f"{r.derive}_reason"):
            return r
    if level == "patient" and name.startswith("any_"):
        for r in pack.derived("referral"):
            if r.derive == name[4:]:
                return r
    return None


def _column_meaning(pack: RulePack, level: Level, name: str) -> tuple[str, str]:
    features = _features(level)
    if name in features:
        return "feature", features[name].description
    producer = _producer(pack, level, name)
    if producer is not None:
        if level == "patient" and name.startswith("any_") and producer.applies_to == "referral":
            return "roll-up", f"true when any of the patient's referrals has {producer.derive} ({producer.title})"
        return "derived", producer.title
    table = canonical.REFERRALS if level == "referral" else canonical.PATIENTS
    return "canonical", f"canonical {table.name} column"


# --- public views for other documents (the Documented Data Extract, ``migrate.dde``) --------

def explain_rule(pack: RulePack, rule: Rule) -> str:
    """The ``rules explain`` text of one rule (without looking it up by code)."""
    return _explain_rule(pack, rule)


def rule_reads(pack: RulePack, rule: Rule) -> list[tuple[Level, str]]:
    """(level, column) the rule reads, directly or through the derived rules it depends on."""
    return _all_reads(pack, rule)


def producer(pack: RulePack, level: Level, name: str) -> Rule | None:
    """The derived rule that makes column ``name`` at ``level`` (None: canonical or feature)."""
    return _producer(pack, level, name)
