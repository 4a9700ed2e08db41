"""Checking a parsed YAML document: every problem collected as ``<file>: <path>: <what>``
and raised at once (``ConfigError``, exit 2) — used by the identity settings. Values arrive
as text (``migrate.yamltext``): numbers are converted here."""

from __future__ import annotations

import difflib
from typing import Any

from migrate.errors import ConfigError
from migrate.yamltext import number, whole_number

MAX_WEIGHT = 60.0  # match weights are log2 Bayes factors: beyond this a typo, not a choice


class Checker:
    """Collects problems as ``<file>: <path>: <what>``."""

    def __init__(self, source: str, what: str = "identity rules") -> None:
        self.source = source
        self.what = what
        self.problems: list[str] = []

    def problem(self, where: str, what: str) -> None:
        self.problems.append(f"{self.source}: {where}: {what}" if where else f"{self.source}: {what}")

    def raise_if_any(self) -> None:
        if self.problems:
            n = len(self.problems)
            raise ConfigError(f"{self.what} {self.source}: {n} problem{'s' if n > 1 else ''}", self.problems)

    @staticmethod
    def join(parent: str, key: str) -> str:
        return f"{parent}.{key}" if parent else key

    def unknown_keys(self, node: dict[str, Any], allowed: tuple[str, ...], where: str) -> None:
        for key in node:
            if key not in allowed:
                close = difflib.get_close_matches(str(key), allowed, n=1)
                hint = f"; did you mean '{close[0]}'?" if close else f"; expected one of {', '.join(allowed)}"
                self.problem(self.join(where, str(key)), f"unknown key{hint}")

    def mapping(self, node: dict[str, Any], key: str) -> dict[str, Any]:
        value = node.get(key)
        if not isinstance(value, dict):
            self.problem(key, "missing section" if value is None else "must be a mapping")
            return {}
        return value

    def strings(self, node: dict[str, Any], key: str, where: str) -> tuple[str, ...]:
        value = node.get(key)
        path = self.join(where, key)
        if not isinstance(value, list) or not value:
            self.problem(path, "must be a non-empty list")
            return ()
        bad = [v for v in value if not isinstance(v, str) or not v.strip()]
        if bad:
            self.problem(path, f"every entry must be text (quote numbers such as \"01\"); found {bad[0]!r}")
            return ()
        return tuple(value)

    def choices(self, node: dict[str, Any], key: str, where: str, allowed: tuple[str, ...]) -> tuple[str, ...]:
        values = self.strings(node, key, where)
        for v in values:
            if v not in allowed:
                close = difflib.get_close_matches(v, allowed, n=1)
                hint = f"did you mean '{close[0]}'?" if close else f"expected one of {', '.join(allowed)}"
                self.problem(self.join(where, key), f"unknown '{v}'; {hint}")
        if len(set(values)) < len(values):
            self.problem(self.join(where, key), "lists an entry twice")
        return values

    # The file is read as text (migrate.yamltext): numbers are converted here.
    def integer(self, node: dict[str, Any], key: str, where: str, minimum: int) -> int | None:
        value = whole_number(node.get(key))
        if value is None or value < minimum:
            self.problem(self.join(where, key),
                         f"must be a whole number of at least {minimum}; found {node.get(key)!r}")
            return None
        return value

    def weight(self, node: dict[str, Any], key: str, where: str) -> float | None:
        value = number(node.get(key))
        if value is None or abs(value) > MAX_WEIGHT:
            self.problem(self.join(where, key),
                         f"must be a match weight (log2 Bayes factor) from -{MAX_WEIGHT:g} to {MAX_WEIGHT:g}; "
                         f"found {node.get(key)!r}")
            return None
        return float(value)

    def fraction(self, node: dict[str, Any], key: str, where: str, nullable: bool = False) -> float | None:
        if node.get(key) is None and nullable:
            return None
        value = number(node.get(key))
        if value is None or not 0 <= value <= 1:
            self.problem(self.join(where, key), f"must be a number from 0 to 1; found {node.get(key)!r}")
            return None
        return float(value)

