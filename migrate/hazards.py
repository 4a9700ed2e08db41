"""The clinical-safety hazard log (DCB0129 / DCB0160) as data: ``rules/hazards.yaml``.

Each hazard names its cause, effect, severity and likelihood (before and after its
controls), what it covers — flags, dispositions, quarantine reasons, behaviours — and its
controls: a rule of the pack or a check handover makes, each with the tests (pytest node
ids) that evidence it. ``load_hazards`` validates the file and reports every problem at
once (exit 2); ``coverage`` lists what handover can do that no hazard covers, and what a
hazard names that does not exist; ``run_view`` adds one run's figures (how often each
hazard's flags fired, how many rows took its dispositions) for the audit pack.

What must be covered is derived, not listed by hand (``required``): every flag a rule of the
pack raises and every identity flag, every rule id, every disposition but ``migrated``,
every quarantine reason, and the behaviours in ``BEHAVIOURS`` — so a new flag, rule or
reason needs a hazard entry before the tests pass.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from migrate import canonical, resources
from migrate.errors import ConfigError
from migrate.quarantine import REASON_CODES
from migrate.rules.model import RulePack
from migrate.yamltext import load_yaml, whole_number

HAZARDS_FILE = "hazards.yaml"
TOP_LEVEL = {"name", "version", "description", "risk_matrix", "hazards"}
HAZARD_KEYS = {"id", "title", "cause", "effect", "severity", "likelihood", "residual_likelihood", "flags",
               "dispositions", "quarantine_reasons", "behaviours", "controls"}
COVERS = ("flags", "dispositions", "quarantine_reasons", "behaviours")
# Safety-relevant behaviours that are neither a flag nor a disposition.
BEHAVIOURS: dict[str, str] = {
    "priority_raising": "a flag raises the FHIR ServiceRequest priority above the list it was on",
    "unknown_vocabulary": "a value no profile map or codelist knows reaches the rules or quarantine",
    "sharing_sources": "a sharing wish kept outside coded entries (a patient's setting column, a GP practice's "
                       "setting given with --practice-sharing) decides a sharing block",
    "unrecognised_sharing_value": "a sharing setting value the profile lists neither as dissent nor as consent "
                                  "is treated as a dissent and reported",
    "review_decisions": "a reviewer's decision changes the batch: merges records, sends a withheld record, "
                        "raises a priority or moves a list (migrate/review/)",
}


@dataclass(frozen=True)
class Control:
    """A rule of the pack (``kind`` "rule", ``ref`` its id) or a check (``ref`` in words)."""

    kind: str
    ref: str
    tests: tuple[str, ...]


@dataclass(frozen=True)
class Hazard:
    """One hazard; ``covers`` maps each of ``COVERS`` to the names it lists."""

    id: str
    title: str
    cause: str
    effect: str
    severity: str
    likelihood: str
    residual_likelihood: str
    covers: Mapping[str, tuple[str, ...]]
    controls: tuple[Control, ...]

    @property
    def rules(self) -> tuple[str, ...]:
        """Ids of the rules among the controls."""
        return tuple(c.ref for c in self.controls if c.kind == "rule")


@dataclass(frozen=True)
class HazardLog:
    """A validated hazard log and its risk matrix."""

    name: str
    version: str
    description: str
    path: Path
    sha256: str
    severities: tuple[str, ...]
    likelihoods: tuple[str, ...]
    ratings: Mapping[str, tuple[int, ...]]
    acceptability: Mapping[int, str]
    hazards: tuple[Hazard, ...]

    def rating(self, severity: str, likelihood: str) -> int:
        """The matrix's risk rating of ``severity`` at ``likelihood``."""
        return self.ratings[likelihood][self.severities.index(severity)]


def default_hazards_path() -> Path:
    """The shipped hazard log (``rules/hazards.yaml``)."""
    return resources.rules_dir() / HAZARDS_FILE


def hazards_path(pack_path: Path | None) -> Path:
    """A site pack's folder may hold its own hazards.yaml; otherwise the shipped one."""
    if pack_path is not None and (pack_path.parent / HAZARDS_FILE).is_file():
        return pack_path.parent / HAZARDS_FILE
    return default_hazards_path()


def load_hazards(path: Path | None = None) -> HazardLog:
    """Read and validate the hazard log at ``path`` (None: the shipped one).

    Raises ConfigError (exit 2) listing every problem, each as ``<file>: <where>: <what>``.
    """
    path = default_hazards_path() if path is None else Path(path)
    doc = load_yaml(path, "hazard log")  # the one YAML reader: scalars stay text, no repeated keys
    data = path.read_bytes()
    problems: list[str] = []
    if not isinstance(doc, dict):
        raise ConfigError(f"hazard log {path} is not a YAML mapping (name:, risk_matrix:, hazards:)")
    for key in sorted(set(doc) - TOP_LEVEL):
        problems.append(f"{path.name}: unknown key '{key}'; use {', '.join(sorted(TOP_LEVEL))}")
    severities, likelihoods, ratings, acceptability = _matrix(doc.get("risk_matrix"), path.name, problems)
    hazards: list[Hazard] = []
    raw = doc.get("hazards")
    if not isinstance(raw, list) or not raw:
        problems.append(f"{path.name}: hazards: list the hazards, each starting '- id: HAZ-01'")
        raw = []
    seen: set[str] = set()
    for index, item in enumerate(raw):
        hazard = _hazard(item, f"{path.name}: hazards[{index}]", severities, likelihoods, problems)
        if hazard is None:
            continue
        if hazard.id in seen:
            problems.append(f"{path.name}: hazard {hazard.id}: duplicate id; give each hazard its own")
        seen.add(hazard.id)
        hazards.append(hazard)
    if problems:
        raise ConfigError(f"hazard log {path} has {len(problems)} problem(s)", problems)
    return HazardLog(str(doc.get("name") or path.stem), str(doc.get("version") or ""),
                     " ".join(str(doc.get("description") or "").split()), path,
                     hashlib.sha256(data).hexdigest(), severities, likelihoods, ratings, acceptability,
                     tuple(hazards))


def _names(value: Any, where: str, problems: list[str]) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, list) and all(isinstance(v, str) and v.strip() for v in value):
        return tuple(v.strip() for v in value)
    problems.append(f"{where}: expected a list of names")
    return ()


def _matrix(raw: Any, where: str, problems: list[str]
            ) -> tuple[tuple[str, ...], tuple[str, ...], dict[str, tuple[int, ...]], dict[int, str]]:
    if not isinstance(raw, dict):
        problems.append(f"{where}: risk_matrix: give severities, likelihoods, ratings and acceptability")
        return (), (), {}, {}
    severities = _names(raw.get("severities"), f"{where}: risk_matrix.severities", problems)
    likelihoods = _names(raw.get("likelihoods"), f"{where}: risk_matrix.likelihoods", problems)
    ratings: dict[str, tuple[int, ...]] = {}
    given = raw.get("ratings")
    table: dict[str, Any] = given if isinstance(given, dict) else {}
    for likelihood in likelihoods:
        row = table.get(likelihood)
        numbers = [whole_number(v) for v in row] if isinstance(row, list) else []
        values = tuple(n for n in numbers if n is not None) if None not in numbers else ()
        if len(values) != len(severities) or not severities:
            problems.append(f"{where}: risk_matrix.ratings.{likelihood}: one whole number per severity "
                            f"({', '.join(severities)})")
        ratings[likelihood] = values
    acceptability: dict[int, str] = {}
    stated = raw.get("acceptability")
    for key, text in (stated if isinstance(stated, dict) else {}).items():
        if not str(key).isdigit():
            problems.append(f"{where}: risk_matrix.acceptability: '{key}' is not a rating")
            continue
        acceptability[int(str(key))] = str(text)
    for rating in sorted({r for row in ratings.values() for r in row} - set(acceptability)):
        problems.append(f"{where}: risk_matrix.acceptability: say what rating {rating} means")
    return severities, likelihoods, ratings, acceptability


def _hazard(raw: Any, where: str, severities: tuple[str, ...], likelihoods: tuple[str, ...],
            problems: list[str]) -> Hazard | None:
    if not isinstance(raw, dict) or not isinstance(raw.get("id"), str):
        problems.append(f"{where}: a hazard is a mapping with an id")
        return None
    where = f"{where.split(':')[0]}: hazard {raw['id']}"
    for key in sorted(set(raw) - HAZARD_KEYS):
        problems.append(f"{where}: unknown key '{key}'; use {', '.join(sorted(HAZARD_KEYS))}")
    text = {}
    for key in ("title", "cause", "effect"):
        value = raw.get(key)
        if not isinstance(value, str) or not value.strip():
            problems.append(f"{where}: {key}: say it in words")
        text[key] = " ".join(str(value or "").split())
    scale = {"severity": severities, "likelihood": likelihoods, "residual_likelihood": likelihoods}
    for key, allowed in scale.items():
        if raw.get(key) not in allowed:
            problems.append(f"{where}: {key}: {raw.get(key)!r} is not one of {', '.join(allowed)}")
    controls: list[Control] = []
    raw_controls = raw.get("controls")
    if not isinstance(raw_controls, list) or not raw_controls:
        problems.append(f"{where}: controls: name at least one rule or check that mitigates it")
        raw_controls = []
    for i, c in enumerate(raw_controls):
        kinds = [k for k in ("rule", "check") if isinstance(c, dict) and k in c]
        if len(kinds) != 1 or not str(c[kinds[0]]).strip():
            problems.append(f"{where}: controls[{i}]: give exactly one of rule: (a rule id) or check: (in words)")
            continue
        for key in sorted(set(c) - {"rule", "check", "tests"}):
            problems.append(f"{where}: controls[{i}]: unknown key '{key}'")
        tests = _names(c.get("tests"), f"{where}: controls[{i}].tests", problems)
        if not tests:
            problems.append(f"{where}: controls[{i}]: tests: name the tests that evidence the control")
        controls.append(Control(kinds[0], " ".join(str(c[kinds[0]]).split()), tests))
    covers = {key: _names(raw.get(key), f"{where}: {key}", problems) for key in COVERS}
    return Hazard(raw["id"], text["title"], text["cause"], text["effect"], str(raw.get("severity")),
                  str(raw.get("likelihood")), str(raw.get("residual_likelihood")), covers, tuple(controls))


def required(pack: RulePack) -> dict[str, tuple[str, ...]]:
    """What the hazard log must cover: flags, rules, dispositions, quarantine reasons, behaviours."""
    from migrate.identity import FLAGS as IDENTITY_FLAGS  # the identity stage's own flags

    flags = dict.fromkeys([r.flag for r in pack.flag_rules() if r.flag] + list(IDENTITY_FLAGS))
    return {
        "flags": tuple(flags),
        "rules": tuple(r.id for r in pack.rules),
        "dispositions": tuple(d for d in canonical.DISPOSITIONS if d != "migrated"),
        "quarantine_reasons": tuple(REASON_CODES),
        "behaviours": tuple(BEHAVIOURS),
    }


def coverage(log: HazardLog, pack: RulePack) -> list[str]:
    """Every gap between the log and handover: a flag, rule, disposition, quarantine reason or
    behaviour no hazard covers, and a name a hazard lists that does not exist. Empty: complete."""
    need = required(pack)
    named: dict[str, set[str]] = {key: set() for key in need}
    for hazard in log.hazards:
        for key in COVERS:
            named[key] |= set(hazard.covers[key])
        named["rules"] |= set(hazard.rules)
    problems: list[str] = []
    for key, names in need.items():
        label = key.replace("_", " ").rstrip("s")
        problems += [f"{label} {n}: no hazard covers it; add it to {log.path.name}" for n in names
                     if n not in named[key]]
        problems += [f"{label} {n}: named by a hazard but handover has no such {label}" for n in sorted(named[key])
                     if n not in names]
    return problems


def run_view(log: HazardLog, summary: Mapping[str, Any], problems: list[str] | None = None) -> dict[str, Any]:
    """The hazard log with one run's figures, for the audit pack (reconciliation.json ``hazard_log``).

    ``summary`` is the reconciliation summary: its flags by code, dispositions and quarantine
    rows give, per hazard, how often its causes were found in this run and handled.
    """
    by_code = dict(summary.get("flags", {}).get("by_code", {}))
    dispositions = dict(summary.get("invariant", {}).get("dispositions", {}))
    reasons: dict[str, int] = {}
    for q in summary.get("quarantine", []):
        reasons[q["reason_code"]] = reasons.get(q["reason_code"], 0) + int(q["rows"])
    covered = {f for h in log.hazards for f in h.covers["flags"]}
    hazards = []
    for h in log.hazards:
        before, after = log.rating(h.severity, h.likelihood), log.rating(h.severity, h.residual_likelihood)
        hazards.append({
            "hazard": h.id, "title": h.title, "cause": h.cause, "effect": h.effect, "severity": h.severity,
            "likelihood": h.likelihood, "residual_likelihood": h.residual_likelihood,
            "rating": before, "residual_rating": after, "residual_acceptability": log.acceptability.get(after, ""),
            **{key: list(h.covers[key]) for key in COVERS},
            "controls": [{"kind": c.kind, "ref": c.ref, "tests": list(c.tests)} for c in h.controls],
            "this_run": {
                "flags": {f: int(by_code.get(f, 0)) for f in h.covers["flags"]},
                "dispositions": {d: int(dispositions.get(d, 0)) for d in h.covers["dispositions"]},
                "quarantine_reasons": {r: reasons.get(r, 0) for r in h.covers["quarantine_reasons"]},
            },
        })
    return {
        "name": log.name, "version": log.version, "description": log.description, "file": log.path.name,
        "sha256": log.sha256, "matrix": {"severities": list(log.severities), "likelihoods": list(log.likelihoods),
                                         "ratings": {k: list(v) for k, v in log.ratings.items()},
                                         "acceptability": {str(k): v for k, v in sorted(log.acceptability.items())}},
        "hazards": hazards,
        # A flag raised in this run that no hazard covers: a site pack's new flag, unassessed.
        "flags_without_hazard": sorted(code for code, n in by_code.items() if n and code not in covered),
        "problems": list(problems or []),
    }
