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
from migrate.identity.checker import Checker
from migrate.yamltext import load_yaml, number, whole_number

IDENTITY_FILE = "identity.yaml"

SURVIVOR_CRITERIA = ("nhs_number_verified", "most_complete", "earliest_record", "latest_record",
                     "earliest_referral", "latest_referral")
RECENCY_CRITERIA = ("earliest_record", "latest_record", "earliest_referral", "latest_referral")
DEMOGRAPHIC_FIELDS = ("family_name", "given_names", "birth_date", "sex", "address", "postcode", "gp_ods_code",
                      "phone")
BLOCKING_PARTS = ("nhs_number", "birth_date", "birth_date_swapped", "birth_year", "family_name", "family_initial",
                  "family_phonetic", "given_name", "given_initial", "given_prefix", "given_phonetic", "postcode",
                  "postcode_district", "phone", "address_number", "street", "names_reversed", "crossed_phonetic")
# Comparison -> the tests its levels may use (``rules/identity.yaml`` comparisons lists them).
COMPARISON_TESTS: dict[str, tuple[str, ...]] = {
    "family_name": ("exact", "jaro_winkler", "part_of", "else"),
    "given_names": ("exact", "first_name", "nickname", "jaro_winkler", "typo", "part_of", "initial", "else"),
    "birth_date": ("exact", "day_month_swapped", "one_digit", "within_days", "else"),
    "sex": ("exact", "else"),
    "postcode": ("exact", "one_edit", "district", "else"),
    "address": ("exact", "similar", "else"),
    "phone": ("exact", "one_edit", "else"),
    "names_reversed": ("reversed", "else"),
}
# given_names tests that mean the same name (spelt, shortened or written another way): never
# twin levels.
SAME_NAME_TESTS = ("exact", "first_name", "nickname", "typo", "part_of", "initial")
# Tests taking a threshold: test -> (key, is a fraction 0-1 (else a whole number of days)).
THRESHOLD: dict[str, tuple[str, bool]] = {"jaro_winkler": ("at_least", True), "similar": ("at_least", True),
                                          "reversed": ("at_least", True), "within_days": ("at_most", False)}
MAX_RULES = 64
TOP_LEVEL = ("name", "version", "nhs_number", "survivorship", "blocking", "comparisons", "twins", "model",
             "thresholds", "nicknames")
MODEL_KEYS = ("u_pairs", "em_pairs", "seed", "em_max_iterations", "em_tolerance", "strength", "duplicates_per_record",
              "nhs_number_disagree", "counted_once")
STRENGTH_KEYS = ("m", "u", "term_frequency", "prior")


@dataclass(frozen=True)
class Level:
    """One level of a comparison: its test (with ``threshold`` for the tests that take one)
    and the starting m and u probabilities (``rules/identity.yaml`` comparisons)."""

    test: str
    threshold: float | None
    m: float
    u: float

    @property
    def label(self) -> str:
        """Stable name of the level, e.g. ``exact``, ``jaro_winkler>=0.92``, ``within_days<=366``."""
        if self.threshold is None:
            return self.test
        key, fraction = THRESHOLD[self.test]
        return f"{self.test}{'>=' if key == 'at_least' else '<='}{self.threshold:g}"


@dataclass(frozen=True)
class Comparison:
    """How one field of two records is compared: ordered levels, the first whose test holds
    wins (the last is ``else``); ``term_frequency`` adjusts the exact level by the value's share."""

    name: str
    term_frequency: bool
    levels: tuple[Level, ...]

    def level(self, test: str) -> Level | None:
        """The first level with ``test`` (None when the comparison has none)."""
        return next((lv for lv in self.levels if lv.test == test), None)


@dataclass(frozen=True)
class ModelSettings:
    """How the model's parameters are estimated (``rules/identity.yaml`` model)."""

    u_pairs: int
    em_pairs: int
    seed: int
    em_max_iterations: int
    em_tolerance: float
    m_strength: float
    u_strength: float
    tf_strength: float
    prior_strength: float
    duplicates_per_record: float
    nhs_number_disagree: float
    counted_once: tuple[tuple[str, ...], ...] = ()


@dataclass(frozen=True)
class IdentitySettings:
    """The identity part of a rule pack, validated (see ``rules/identity.yaml``)."""

    source: str
    prefix_ranges: tuple[tuple[int, int], ...]
    verified_statuses: tuple[str, ...]  # lower case, trimmed
    survivor_order: tuple[str, ...]
    recency_order: tuple[str, ...]
    survivorship_fields: tuple[str, ...]
    blocking_rules: tuple[tuple[str, ...], ...]
    max_block_size: int
    comparisons: tuple[Comparison, ...]
    model: ModelSettings
    probable_threshold: float
    review_threshold: float
    nicknames: tuple[tuple[str, ...], ...]  # lower case
    # Indices of the given_names levels that mean "another given name" (``twins``): with the
    # same surname, birth date and address, such a pair is twins and never paired.
    twin_given_levels: tuple[int, ...] = ()

    def comparison(self, name: str) -> Comparison | None:
        """The comparison of ``name`` (None when the pack leaves it out)."""
        return next((c for c in self.comparisons if c.name == name), None)


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
    c = Checker(source, "identity rules")
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
    rules = _blocking_rules(c, block)
    max_block = c.integer(block, "max_block_size", "blocking", minimum=2)
    c.unknown_keys(block, ("rules", "max_block_size"), "blocking")
    comparisons = _comparisons(c, c.mapping(raw, "comparisons"))
    twins = _twins(c, c.mapping(raw, "twins"), comparisons)
    model = _model(c, c.mapping(raw, "model"))
    thr = c.mapping(raw, "thresholds")
    probable = c.fraction(thr, "probable", "thresholds")
    review = c.fraction(thr, "review", "thresholds")
    c.unknown_keys(thr, ("probable", "review"), "thresholds")
    if probable is not None and review is not None and review > probable:
        c.problem("thresholds.review", f"{review} is above thresholds.probable {probable}; review must be lower")
    nicknames = _nicknames(c, raw.get("nicknames"))
    c.raise_if_any()
    assert probable is not None and review is not None and max_block is not None and model is not None
    return IdentitySettings(
        source=source, prefix_ranges=ranges, verified_statuses=verified, survivor_order=survivor,
        recency_order=recency, survivorship_fields=fields, blocking_rules=rules, max_block_size=max_block,
        comparisons=comparisons, model=model, probable_threshold=probable, review_threshold=review,
        nicknames=nicknames, twin_given_levels=twins,
    )


def _prefix_ranges(c: Checker, nhs: dict[str, Any]) -> tuple[tuple[int, int], ...]:
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


def _blocking_rules(c: Checker, block: dict[str, Any]) -> tuple[tuple[str, ...], ...]:
    value = block.get("rules")
    if not isinstance(value, list) or not value:
        c.problem("blocking.rules", "must be a non-empty list of rules, each a list of parts")
        return ()
    rules: list[tuple[str, ...]] = []
    for i, rule in enumerate(value):
        at = f"blocking.rules[{i}]"
        if not isinstance(rule, list) or not rule or not all(isinstance(p, str) for p in rule):
            c.problem(at, f"must be a non-empty list of parts; found {rule!r}")
            continue
        for part in rule:
            if part not in BLOCKING_PARTS:
                close = difflib.get_close_matches(part, BLOCKING_PARTS, n=1)
                hint = f"did you mean '{close[0]}'?" if close else f"expected one of {', '.join(BLOCKING_PARTS)}"
                c.problem(at, f"unknown part '{part}'; {hint}")
        if len(set(rule)) < len(rule):
            c.problem(at, "lists a part twice")
        if tuple(rule) in rules:
            c.problem(at, "repeats an earlier rule")
        rules.append(tuple(rule))
    if len(rules) > MAX_RULES:
        c.problem("blocking.rules", f"at most {MAX_RULES} rules (each pair records its rules in one 64-bit mask); "
                  f"found {len(rules)}")
    return tuple(rules)


def _probability(c: Checker, spec: dict[str, Any], key: str, where: str) -> float | None:
    value = number(spec.get(key))
    if value is None or not 0 < value <= 1:
        c.problem(f"{where}.{key}", f"must be a probability above 0 and at most 1; found {spec.get(key)!r}")
        return None
    return float(value)


def _level(c: Checker, name: str, spec: Any, where: str) -> Level | None:
    if not isinstance(spec, dict):
        c.problem(where, f"must be a mapping such as {{test: exact, m: 0.9, u: 0.01}}; found {spec!r}")
        return None
    test = spec.get("test")
    allowed = COMPARISON_TESTS[name]
    if test not in allowed:
        c.problem(f"{where}.test", f"unknown test {test!r} for {name}; expected one of {', '.join(allowed)}")
        return None
    threshold: float | None = None
    keys: tuple[str, ...] = ("test", "m", "u")
    if test in THRESHOLD:
        key, fraction = THRESHOLD[test]
        keys = (*keys, key)
        value = spec.get(key)
        if fraction:
            threshold = c.fraction(spec, key, where)
            if threshold is not None and threshold == 0:
                c.problem(f"{where}.{key}", "must be above 0")
        elif (days := whole_number(value)) is None or days < 1:
            c.problem(f"{where}.{key}", f"must be a whole number of days of at least 1; found {value!r}")
        else:
            threshold = float(days)
    c.unknown_keys(spec, keys, where)
    m, u = _probability(c, spec, "m", where), _probability(c, spec, "u", where)
    if threshold is None and test in THRESHOLD or m is None or u is None:
        return None
    return Level(str(test), threshold, m, u)


def _comparisons(c: Checker, node: dict[str, Any]) -> tuple[Comparison, ...]:
    c.unknown_keys(node, tuple(COMPARISON_TESTS), "comparisons")
    out: list[Comparison] = []
    for name in COMPARISON_TESTS:
        if name not in node:
            continue
        where = f"comparisons.{name}"
        spec = node[name]
        if not isinstance(spec, dict):
            c.problem(where, "must be a mapping with levels (and optionally term_frequency)")
            continue
        c.unknown_keys(spec, ("levels", "term_frequency"), where)
        tf = spec.get("term_frequency", False)
        if not isinstance(tf, bool):
            c.problem(f"{where}.term_frequency", f"must be true or false; found {tf!r}")
        raw_levels = spec.get("levels")
        if not isinstance(raw_levels, list) or len(raw_levels) < 2:
            c.problem(f"{where}.levels", "must list at least two levels, the last {test: else, ...}")
            continue
        levels = [_level(c, name, lv, f"{where}.levels[{i}]") for i, lv in enumerate(raw_levels)]
        found = [lv for lv in levels if lv is not None]
        if len(found) < len(levels):
            continue
        if found[-1].test != "else" or any(lv.test == "else" for lv in found[:-1]):
            c.problem(f"{where}.levels", "the last level, and only the last, must be {test: else, ...}")
        if len({lv.label for lv in found}) < len(found):
            c.problem(f"{where}.levels", "lists a level twice")
        for prob in ("m", "u"):
            total = sum(getattr(lv, prob) for lv in found)
            if abs(total - 1) > 0.001:
                c.problem(f"{where}.levels", f"the {prob} values must add up to 1; they add up to {total:.4g}")
        if tf is True and found[0].test != "exact":
            c.problem(f"{where}.term_frequency", "needs an exact level first (it adjusts that level)")
        out.append(Comparison(name, tf is True, tuple(found)))
    if not out and node:
        c.problem("comparisons", "no usable comparison")
    elif not node:
        c.problem("comparisons", "must list at least one comparison")
    return tuple(out)


def _twins(c: Checker, node: dict[str, Any], comparisons: tuple[Comparison, ...]) -> tuple[int, ...]:
    """The given_names levels (by label) that mean another given name, as level indices.
    ``else`` must be one of them (two wholly different names at one address and birth date
    are twins: the issue's rule), and no level meaning the same name may be."""
    c.unknown_keys(node, ("given_names",), "twins")
    where = "twins.given_names"
    given = next((x for x in comparisons if x.name == "given_names"), None)
    labels = node.get("given_names")
    if not isinstance(labels, list) or not labels or not all(isinstance(x, str) for x in labels):
        c.problem(where, f"must list the given_names levels meaning another name, e.g. [else]; found {labels!r}")
        return ()
    if given is None:
        c.problem(where, "needs the given_names comparison (comparisons.given_names)")
        return ()
    known = [lv.label for lv in given.levels]
    out: list[int] = []
    for label in labels:
        if label not in known:
            close = difflib.get_close_matches(label, known, n=1)
            hint = f"did you mean '{close[0]}'?" if close else f"expected one of {', '.join(known)}"
            c.problem(where, f"unknown level '{label}' of comparisons.given_names; {hint}")
        elif given.levels[known.index(label)].test in SAME_NAME_TESTS:
            c.problem(where, f"'{label}' means the same name; it cannot make two records twins")
        else:
            out.append(known.index(label))
    if "else" not in labels:
        c.problem(where, "must include else: two different given names at one address and birth date are twins")
    return tuple(sorted(set(out)))


def _model(c: Checker, node: dict[str, Any]) -> ModelSettings | None:
    c.unknown_keys(node, MODEL_KEYS, "model")
    u_pairs = c.integer(node, "u_pairs", "model", minimum=1000)
    em_pairs = c.integer(node, "em_pairs", "model", minimum=1000)
    seed = c.integer(node, "seed", "model", minimum=0)
    iterations = c.integer(node, "em_max_iterations", "model", minimum=1)
    tolerance = c.fraction(node, "em_tolerance", "model")
    strength = node.get("strength")
    values: dict[str, float] = {}
    if not isinstance(strength, dict):
        c.problem("model.strength", "must be a mapping {m: ..., u: ..., term_frequency: ..., prior: ...}")
    else:
        c.unknown_keys(strength, STRENGTH_KEYS, "model.strength")
        for key in STRENGTH_KEYS:
            v = number(strength.get(key))
            if v is None or v <= 0:
                c.problem(f"model.strength.{key}",
                          f"must be a number above 0 (pairs or records); found {strength.get(key)!r}")
            else:
                values[key] = float(v)
    rate = number(node.get("duplicates_per_record"))
    if rate is None or not 0 < rate < 1:
        c.problem("model.duplicates_per_record",
                  f"must be a number above 0 and below 1; found {node.get('duplicates_per_record')!r}")
    nhs_disagree = c.weight(node, "nhs_number_disagree", "model")
    if nhs_disagree is not None and nhs_disagree > 0:
        c.problem("model.nhs_number_disagree", f"must be 0 or negative; found {nhs_disagree}")
    groups = node.get("counted_once", [])
    counted: list[tuple[str, ...]] = []
    if not isinstance(groups, list) or not all(isinstance(g, list) and len(g) >= 2 for g in groups):
        c.problem("model.counted_once", f"must be a list of groups of at least two comparisons; found {groups!r}")
    else:
        for n, group in enumerate(groups):
            unknown = [g for g in group if g not in COMPARISON_TESTS]
            if unknown:
                c.problem(f"model.counted_once[{n}]", f"unknown comparison {unknown[0]!r}; expected one of "
                          f"{', '.join(COMPARISON_TESTS)}")
            counted.append(tuple(str(g) for g in group))
    if None in (u_pairs, em_pairs, seed, iterations, tolerance, nhs_disagree) or len(values) < len(STRENGTH_KEYS) or (
            rate is None or not 0 < rate < 1):
        return None
    assert u_pairs is not None and em_pairs is not None and seed is not None and iterations is not None and tolerance is not None
    assert nhs_disagree is not None
    return ModelSettings(u_pairs=u_pairs, em_pairs=em_pairs, seed=seed, em_max_iterations=iterations, em_tolerance=tolerance,
                         m_strength=values["m"], u_strength=values["u"], tf_strength=values["term_frequency"],
                         prior_strength=values["prior"], duplicates_per_record=float(rate or 0.0),
                         nhs_number_disagree=nhs_disagree, counted_once=tuple(counted))


def _nicknames(c: Checker, value: Any) -> tuple[tuple[str, ...], ...]:
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
