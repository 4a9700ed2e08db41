"""The compiled rule pack: frozen objects built once by ``load_pack`` and read by the engine.

A ``RulePack`` holds the pack's thresholds and codelists (data a clinical lead can edit)
and its rules, each compiled to polars expressions. Nothing here reads files or data.

A rule either *derives* a column (``derive``) or *raises a flag* (``flag``):

- derived, condition form: a boolean column, true where the condition holds (null → false);
- derived, value form: any SQL value expression (e.g. ``days_waiting / 7``);
- derived, cases form: the value of the first case whose condition holds, with a readable
  ``<column>_reason`` beside it (this is how ``cohort`` and ``cohort_reason`` are made);
- flag: one exceptions row per subject where the condition holds, with severity, action
  and evidence text built from the named columns. A referral flag rule may also have a
  ``priority:`` outcome (urgent or two_week_wait): where it raises its flag, the referral's
  priority in the FHIR output is raised to that (the assigned one kept beside it).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import polars as pl

from migrate.review.vocabulary import EMPTY, ReviewVocabulary

Level = Literal["referral", "patient"]
LEVELS: tuple[Level, ...] = ("referral", "patient")


@dataclass(frozen=True)
class Codelist:
    """A named list of codes or phrases; ``by_system`` is set for per-code-system lists.

    ``keys`` are what source values are matched against (``migrate.matching``): for a flat
    (text) list the key of each value, for a per-system (clinical) list each code's
    ``system:code`` label.
    """

    name: str
    values: tuple[str, ...]
    by_system: Mapping[str, tuple[str, ...]] | None = None
    source: str = ""
    keys: tuple[str, ...] = ()


@dataclass(frozen=True)
class Threshold:
    """A named number (days, counts) with the file that set it."""

    name: str
    value: int | float
    source: str = ""


# eq=False: these hold polars expressions, whose == builds an expression instead of a bool.
@dataclass(frozen=True, eq=False)
class Case:
    """One branch of a cases-form derived rule."""

    value: str
    condition: str  # as written in the pack
    sql: str  # with placeholders substituted
    reason: str  # template, ``{column}`` replaced by the row's value


@dataclass(frozen=True, eq=False)
class Rule:
    """One compiled rule. ``expr`` is the polars expression the engine evaluates:

    - flag rules: the boolean condition (rows where it is true raise the flag);
    - derived rules: the column value, already aliased to ``derive``;
    ``reason_expr`` (cases form) is aliased to ``<derive>_reason``; ``evidence_expr`` (flags)
    renders ``evidence`` as ``"column = value; ..."``.
    """

    id: str
    title: str
    applies_to: Level
    source: str  # the pack file the rule was read from
    expr: pl.Expr
    condition: str | None = None  # as written (condition or value form)
    sql: str | None = None  # with placeholders substituted
    derive: str | None = None
    value_form: bool = False
    cases: tuple[Case, ...] = ()
    reason_expr: pl.Expr | None = None
    flag: str | None = None
    severity: str | None = None
    action: str | None = None
    evidence: tuple[str, ...] = ()
    evidence_expr: pl.Expr | None = None
    priority: str | None = None  # flag rules: the priority the referral is raised to
    description: str | None = None
    uses: tuple[str, ...] = ()  # placeholders used, e.g. "codelists.red_flag_codes"
    columns: tuple[str, ...] = ()  # columns the rule reads
    dtype: pl.DataType = field(default_factory=pl.Boolean)  # of the derived column

    @property
    def kind(self) -> Literal["flag", "derived"]:
        """"flag" for a flag rule, "derived" for a rule that adds a column."""
        return "flag" if self.flag is not None else "derived"


@dataclass(frozen=True, eq=False)
class RulePack:
    """A loaded, validated and compiled rule pack.

    ``files`` lists the pack file and every pack it extends (base first) with their sha256;
    ``sha256`` digests them all, for the run manifest. ``document`` is the effective pack
    as one YAML-ready mapping (``extends:`` resolved), what a run freezes into ``config/``. ``columns`` maps each level to the
    columns (canonical, feature, derived) rules of that level may read, with their types.
    """

    name: str
    version: str
    description: str
    path: Path
    files: tuple[tuple[Path, str], ...]
    sha256: str
    thresholds: Mapping[str, Threshold]
    codelists: Mapping[str, Codelist]
    cohort_precedence: tuple[str, ...]
    rules: tuple[Rule, ...]
    columns: Mapping[Level, Mapping[str, pl.DataType]]
    document: Mapping[str, Any] = field(default_factory=dict)  # the effective pack (after extends:)
    review: ReviewVocabulary = EMPTY  # the decisions a reviewer may record per flag (``decisions:``)

    def codelist(self, name: str) -> tuple[str, ...]:
        """Every value of codelist ``name`` (all code systems together)."""
        return self.codelists[name].values

    def keys(self, name: str) -> tuple[str, ...]:
        """The matching keys of codelist ``name`` (``Codelist.keys``); empty if the pack has none."""
        return self.codelists[name].keys if name in self.codelists else ()

    def coded(self, name: str) -> Mapping[str, tuple[str, ...]]:
        """Codelist ``name`` per code system (a flat list has none)."""
        return self.codelists[name].by_system or {}

    def derived(self, level: Level) -> tuple[Rule, ...]:
        """Derived rules of ``level`` in evaluation (file) order."""
        return tuple(r for r in self.rules if r.kind == "derived" and r.applies_to == level)

    def raised_priorities(self) -> dict[str, str]:
        """rule id -> priority, for every flag rule with a ``priority:`` outcome."""
        return {r.id: r.priority for r in self.rules if r.flag is not None and r.priority is not None}

    def flag_rules(self, level: Level | None = None) -> tuple[Rule, ...]:
        """Flag rules, of one level or all."""
        return tuple(r for r in self.rules if r.flag is not None and (level is None or r.applies_to == level))

    def find(self, code: str) -> tuple[Rule, ...]:
        """Rules whose id, flag code or derived column is ``code`` (case-insensitive)."""
        key = code.strip().casefold()
        return tuple(
            r for r in self.rules
            if key in {r.id.casefold(), (r.flag or "").casefold(), (r.derive or "").casefold()}
        )
