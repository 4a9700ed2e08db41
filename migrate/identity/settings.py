"""Identity settings: ``rules/identity.yaml`` loaded, checked and frozen.

Every problem of the file is found before any row is read and reported at once, each with
the file and the path of the offending value (``ConfigError``, exit 2). After loading the
settings are one frozen object; nothing downstream re-reads the file.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from migrate import resources
from migrate.errors import ConfigError
from migrate.yamltext import load_yaml, number, whole_number

IDENTITY_FILE = "identity.yaml"

SURVIVOR_CRITERIA = ("nhs_number_verified", "most_complete", "earliest_record", "latest_record",
                     "earliest_referral", "latest_referral")
RECENCY_CRITERIA = ("earliest_record", "latest_record", "earliest_referral", "latest_referral")
DEMOGRAPHIC_FIELDS = ("family_name", "given_names", "birth_date", "sex", "address", "postcode", "gp_ods_code",
                      "phone")
BLOCKING_PARTS = ("birth_date", "birth_date_swapped", "birth_year", "family_name", "family_initial",
                  "family_phonetic", "given_name", "given_initial", "given_phonetic", "postcode",
                  "postcode_district", "phone", "names_reversed")
# Compared fields and the similarity parameters each takes besides agree/disagree (all 0-1).
FIELD_PARAMETERS: dict[str, tuple[str, ...]] = {
    "family_name": ("floor", "transposition", "hyphenated_part"),
    "given_names": ("floor", "transposition", "nickname"),
    "birth_date": ("day_month_swapped", "one_edit"),
    "sex": (),
    "postcode": ("one_edit", "same_district"),
    "phone": ("one_edit",),
    "address": ("floor",),
}
MAX_WEIGHT = 60.0  # match weights are log2 Bayes factors: beyond this a typo, not a choice
TOP_LEVEL = ("name", "version", "nhs_number", "survivorship", "blocking", "comparison", "thresholds", "nicknames")


@dataclass(frozen=True)
class FieldComparison:
    """How one field is compared: the match weight (log2 Bayes factor) it adds at similarity
    1 (``agree``) and at or below ``floor`` (``disagree``), linear between; nothing when
    missing on either record; and its method's similarity parameters."""

    name: str
    agree: float
    disagree: float
    parameters: tuple[tuple[str, float], ...] = ()

    def param(self, name: str) -> float:
        """A similarity parameter (0-1); KeyError if the field's method has none of that name."""
        return dict(self.parameters)[name]

    @property
    def floor(self) -> float:
        """Similarity at or below which the field counts as disagreeing (0 unless set)."""
        return dict(self.parameters).get("floor", 0.0)


@dataclass(frozen=True)
class IdentitySettings:
    """The identity part of a rule pack, validated (see ``rules/identity.yaml``)."""

    source: str
    prefix_ranges: tuple[tuple[int, int], ...]
    verified_statuses: tuple[str, ...]  # lower case, trimmed
    survivor_order: tuple[str, ...]
    recency_order: tuple[str, ...]
    survivorship_fields: tuple[str, ...]
    blocking_keys: tuple[tuple[str, ...], ...]
    max_block_size: int
    fields: tuple[FieldComparison, ...]
    prior: float
    prior_records: int
    nhs_number_disagree: float
    names_reversed: float
    probable_threshold: float
    review_threshold: float
    nicknames: tuple[tuple[str, ...], ...]  # lower case

    def field(self, name: str) -> FieldComparison:
        """The comparison settings of ``name``."""
        for f in self.fields:
            if f.name == name:
                return f
        raise KeyError(name)


def default_path() -> Path:
    """The shipped identity rules: ``<repo>/rules/identity.yaml``."""
    return resources.rules_dir() / IDENTITY_FILE


def load_identity_settings(path: Path | None = None) -> IdentitySettings:
    """Read and validate identity settings from ``path`` (None: the shipped file).

    Raises ConfigError (exit 2) listing every problem, each as ``<file>: <path>: <what>``.
    """
    path = default_path() if path is None else Path(path)
    return settings_from_dict(load_yaml(path, "identity rules"), str(path))


def settings_from_dict(raw: Any, source: str = "<identity settings>") -> IdentitySettings:
    """Validate a parsed identity document; ConfigError lists every problem at once."""
    c = _Checker(source)
    if not isinstance(raw, dict):
        raise ConfigError(f"identity rules {source}: 1 problem", [f"{source}: the document must be a mapping"])
    c.unknown_keys(raw, TOP_LEVEL, "")
    nhs = c.mapping(raw, "nhs_number")
    ranges = _prefix_ranges(c, nhs)
    verified = tuple(s.strip().lower() for s in c.strings(nhs, "verified_statuses", "nhs_number"))
    surv = c.mapping(raw, "survivorship")
    survivor = c.choices(surv, "survivor", "survivorship", SURVIVOR_CRITERIA)
    recency = c.choices(surv, "recency", "survivorship", RECENCY_CRITERIA)
    fields = c.choices(surv, "fields", "survivorship", DEMOGRAPHIC_FIELDS)
    c.unknown_keys(surv, ("survivor", "recency", "fields"), "survivorship")
    block = c.mapping(raw, "blocking")
    keys = _blocking_keys(c, block)
    max_block = c.integer(block, "max_block_size", "blocking", minimum=2)
    c.unknown_keys(block, ("keys", "max_block_size"), "blocking")
    cmp = c.mapping(raw, "comparison")
    comparisons, prior, reversed_ = _comparisons(c, cmp)
    prior_records = c.integer(cmp, "prior_records", "comparison", minimum=1)
    nhs_disagree = c.weight(cmp, "nhs_number_disagree", "comparison")
    if nhs_disagree is not None and nhs_disagree > 0:
        c.problem("comparison.nhs_number_disagree", f"must be 0 or negative; found {nhs_disagree}")
    thr = c.mapping(raw, "thresholds")
    probable = c.fraction(thr, "probable", "thresholds")
    review = c.fraction(thr, "review", "thresholds")
    c.unknown_keys(thr, ("probable", "review"), "thresholds")
    if probable is not None and review is not None and review > probable:
        c.problem("thresholds.review", f"{review} is above thresholds.probable {probable}; review must be lower")
    nicknames = _nicknames(c, raw.get("nicknames"))
    c.raise_if_any()
    assert probable is not None and review is not None and reversed_ is not None and max_block is not None
    assert prior is not None and prior_records is not None and nhs_disagree is not None
    return IdentitySettings(
        source=source, prefix_ranges=ranges, verified_statuses=verified, survivor_order=survivor,
        recency_order=recency, survivorship_fields=fields, blocking_keys=keys, max_block_size=max_block,
        fields=comparisons, prior=prior, prior_records=prior_records, nhs_number_disagree=nhs_disagree,
        names_reversed=reversed_, probable_threshold=probable, review_threshold=review,
        nicknames=nicknames,
    )


class _Checker:
    """Collects problems as ``<file>: <path>: <what>``."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.problems: list[str] = []

    def problem(self, where: str, what: str) -> None:
        self.problems.append(f"{self.source}: {where}: {what}" if where else f"{self.source}: {what}")

    def raise_if_any(self) -> None:
        if self.problems:
            n = len(self.problems)
            raise ConfigError(f"identity rules {self.source}: {n} problem{'s' if n > 1 else ''}", self.problems)

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


def _prefix_ranges(c: _Checker, nhs: dict[str, Any]) -> tuple[tuple[int, int], ...]:
    c.unknown_keys(nhs, ("valid_prefix_ranges", "verified_statuses"), "nhs_number")
    value = nhs.get("valid_prefix_ranges")
    where = "nhs_number.valid_prefix_ranges"
    if not isinstance(value, list) or not value:
        c.problem(where, "must be a non-empty list of [first, last] pairs, e.g. [\"400\", \"499\"]")
        return ()
    out: list[tuple[int, int]] = []
    for i, pair in enumerate(value):
        at = f"{where}[{i}]"
        if not isinstance(pair, list) or len(pair) != 2:
            c.problem(at, f"must be a [first, last] pair; found {pair!r}")
            continue
        if not all(isinstance(p, str) and len(p) == 3 and p.isdigit() for p in pair):
            c.problem(at, f"write each end as a quoted 3-digit string, e.g. [\"010\", \"311\"]; found {pair!r}")
            continue
        lo, hi = int(pair[0]), int(pair[1])
        if lo > hi:
            c.problem(at, f"first {pair[0]} is after last {pair[1]}")
            continue
        out.append((lo, hi))
    return tuple(out)


def _blocking_keys(c: _Checker, block: dict[str, Any]) -> tuple[tuple[str, ...], ...]:
    value = block.get("keys")
    if not isinstance(value, list) or not value:
        c.problem("blocking.keys", "must be a non-empty list of keys, each a list of parts")
        return ()
    keys: list[tuple[str, ...]] = []
    for i, key in enumerate(value):
        at = f"blocking.keys[{i}]"
        if not isinstance(key, list) or not key or not all(isinstance(p, str) for p in key):
            c.problem(at, f"must be a non-empty list of parts; found {key!r}")
            continue
        for part in key:
            if part not in BLOCKING_PARTS:
                close = difflib.get_close_matches(part, BLOCKING_PARTS, n=1)
                hint = f"did you mean '{close[0]}'?" if close else f"expected one of {', '.join(BLOCKING_PARTS)}"
                c.problem(at, f"unknown part '{part}'; {hint}")
        if len(set(key)) < len(key):
            c.problem(at, "lists a part twice")
        keys.append(tuple(key))
    return tuple(keys)


def _comparisons(c: _Checker, node: dict[str, Any]
                 ) -> tuple[tuple[FieldComparison, ...], float | None, float | None]:
    c.unknown_keys(node, (*FIELD_PARAMETERS, "prior", "prior_records", "nhs_number_disagree", "names_reversed"),
                   "comparison")
    fields: list[FieldComparison] = []
    for name, params in FIELD_PARAMETERS.items():
        where = f"comparison.{name}"
        spec = node.get(name)
        if not isinstance(spec, dict):
            c.problem(where, "missing; give at least {agree: ..., disagree: ...}" if spec is None else
                      "must be a mapping such as {agree: 4, disagree: -1}")
            continue
        c.unknown_keys(spec, ("agree", "disagree", *params), where)
        agree = c.weight(spec, "agree", where)
        disagree = c.weight(spec, "disagree", where)
        if agree is not None and disagree is not None and agree < disagree:
            c.problem(where, f"agree {agree} is below disagree {disagree}; agreement must weigh more")
        values = tuple((p, c.fraction(spec, p, where)) for p in params)
        if "floor" in params and values[0][1] == 1:
            c.problem(f"{where}.floor", "must be below 1")
        if agree is not None and disagree is not None and all(v is not None for _, v in values):
            fields.append(FieldComparison(name, agree, disagree, tuple((p, float(v or 0.0)) for p, v in values)))
    prior = c.weight(node, "prior", "comparison")
    reversed_ = c.fraction(node, "names_reversed", "comparison")
    return tuple(fields), prior, reversed_


def _nicknames(c: _Checker, value: Any) -> tuple[tuple[str, ...], ...]:
    if value is None:
        return ()
    if not isinstance(value, list):
        c.problem("nicknames", "must be a list of groups, each a list of names, e.g. [william, bill]")
        return ()
    groups: list[tuple[str, ...]] = []
    for i, group in enumerate(value):
        if not isinstance(group, list) or len(group) < 2 or not all(isinstance(n, str) and n.strip() for n in group):
            c.problem(f"nicknames[{i}]", f"must list at least two names; found {group!r}")
            continue
        groups.append(tuple(n.strip().lower() for n in group))
    return tuple(groups)
