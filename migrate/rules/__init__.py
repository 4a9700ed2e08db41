"""Rule packs: declarative cohorts and clinical flags, compiled once into polars expressions.

    from migrate.rules import load_pack, evaluate
    pack = load_pack(None)                      # rules/default.yaml, or a site pack's path
    results = evaluate(tables, pack, cutover)   # LazyFrames: cohorts, patient_cohorts, exceptions

Modules: ``model`` (the frozen pack objects), ``pack`` (read, merge, validate), ``build``
(per-rule checks and compilation), ``compile`` (SQL, placeholders, evidence text),
``engine`` (evaluation), ``explain`` (text for ``handover rules``); the stage functions
``features`` (per-referral and per-patient features), ``cohorts`` (derived rules, cohorts,
roll-ups) and ``flags`` (exceptions); ``stage`` (``classify``: the rules stage of a batch,
and the sharing state dispositions and FHIR read).
"""

from __future__ import annotations

from migrate.rules.engine import RuleResults, evaluate
from migrate.rules.explain import columns, explain, list_rules
from migrate.rules.model import Case, Codelist, Rule, RulePack, Threshold
from migrate.rules.pack import default_pack_path, load_pack

__all__ = [
    "Case",
    "Codelist",
    "Rule",
    "RulePack",
    "RuleResults",
    "Threshold",
    "columns",
    "default_pack_path",
    "evaluate",
    "explain",
    "list_rules",
    "load_pack",
]
