"""Load a rule pack: read the YAML (and any pack it extends), validate it, compile it once.

``load_pack(path)`` returns a frozen ``RulePack`` or raises ``ConfigError`` (exit 2) whose
``problems`` list *every* problem found — YAML errors, missing keys, unknown keys, duplicate
ids, unknown severities, unknown placeholders, SQL that does not parse, unknown columns,
type errors, evidence that would show patient-identifying data — each naming the file,
the rule id and what to do. No data is read: columns are checked against the canonical
schema plus the feature columns of ``migrate.rules.features`` and ``migrate.rules.cohorts``.

A site pack can change a few things and inherit the rest::

    extends: default              # or a path relative to this file
    name: oxford-msk
    thresholds:
      post_op_window_days: 56     # overrides one threshold; everything else is inherited

Thresholds and codelists override key by key; a rule with the id of an inherited rule
replaces it; ``disable: [rule ids]`` removes inherited rules.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import yaml

from migrate import canonical, resources
from migrate.errors import ConfigError
from migrate.matching import code_labels, text_keys
from migrate.rules.features import CODED_CODELISTS, EXCLUSIVE_TEXT_CODELISTS, FLAT_CODELISTS, OPTIONAL_CODELISTS
from migrate.rules.build import compile_rules
from migrate.rules.compile import suggest
from migrate.review.vocabulary import ReviewVocabulary, flag_subjects, parse_vocabulary
from migrate.rules.model import Codelist, Rule, RulePack, Threshold
from migrate.yamltext import number, read_yaml

TOP_LEVEL = {"name", "version", "description", "extends", "thresholds", "codelists", "cohort_precedence",
             "rules", "disable", "decisions"}
DEFAULT_PACK = "default.yaml"
_MAX_EXTENDS = 8


def default_pack_path() -> Path:
    """The pack shipped with handover (``rules/default.yaml``)."""
    return resources.rules_dir() / DEFAULT_PACK


def load_pack(path: Path | None = None) -> RulePack:
    """Load, validate and compile the pack at ``path`` (None: the shipped default pack).

    Raises ``ConfigError`` listing every problem; nothing is evaluated here.
    """
    top = default_pack_path() if path is None else Path(path)
    problems: list[str] = []
    chain = _read_chain(top, problems)
    if problems or not chain:
        raise ConfigError(f"rule pack {top} cannot be read", problems)
    merged = _merge(chain, problems)
    thresholds = _thresholds(merged["thresholds"], problems)
    codelists = _codelists(merged["codelists"], problems)
    precedence = _precedence(merged["cohort_precedence"], str(top), problems)
    for key in ("name", "rules"):
        if not merged.get(key):
            problems.append(f"{top}: missing key '{key}'; "
                            + ("name the pack" if key == "name" else "list the rules (or extends: default)"))
    rules, columns = compile_rules(merged["rules"], thresholds, codelists, problems)
    review = _review(merged["decisions"], rules, merged["disabled_flags"], problems)
    if problems:
        raise ConfigError(f"rule pack {top} has {len(problems)} problem(s); nothing was read", problems)
    files = tuple((p, digest) for p, _, digest in chain)
    combined = files[0][1] if len(files) == 1 else hashlib.sha256(
        "".join(f"{d}  {p.name}\n" for p, d in files).encode()).hexdigest()
    return RulePack(
        name=str(merged["name"]), version=str(merged.get("version") or ""),
        description=str(merged.get("description") or "").strip(), path=top, files=files, sha256=combined,
        thresholds=thresholds, codelists=codelists, cohort_precedence=precedence, rules=rules, columns=columns,
        document=effective_document(merged), review=review,
    )


def _review(raw: tuple[Any, str], rules: tuple[Rule, ...], disabled: list[str],
            problems: list[str]) -> ReviewVocabulary:
    """The pack's decision vocabulary (``migrate.review.vocabulary``), checked against the
    flags its rules and identity raise (a flag whose rule a site pack disabled may stay)."""
    from migrate.identity import FLAGS, PAIR_FLAGS

    subjects = flag_subjects(((r.flag, r.applies_to) for r in rules if r.flag is not None), FLAGS, PAIR_FLAGS)
    for flag in disabled:
        subjects.setdefault(flag, frozenset())
    return parse_vocabulary(raw[0], subjects, raw[1], problems)


def effective_document(merged: dict[str, Any]) -> dict[str, Any]:
    """The pack after ``extends:`` and ``disable:``, as one self-contained YAML document:
    loading it gives the same thresholds, codelists, precedence and rules (a run freezes it
    into its folder so later commands use exactly the pack the run used)."""
    doc: dict[str, Any] = {key: merged[key] for key in ("name", "version", "description") if key in merged}
    doc["thresholds"] = {name: value for name, (value, _) in merged["thresholds"].items()}
    doc["codelists"] = {name: value for name, (value, _) in merged["codelists"].items()}
    doc["cohort_precedence"] = merged["cohort_precedence"][0]
    doc["rules"] = [raw for raw, _ in merged["rules"]]
    if merged["decisions"][0] is not None:
        doc["decisions"] = merged["decisions"][0]
    return doc


def _read_chain(top: Path, problems: list[str]) -> list[tuple[Path, dict[str, Any], str]]:
    """The pack and every pack it extends, base first: (path, document, sha256)."""
    chain: list[tuple[Path, dict[str, Any], str]] = []
    seen: set[Path] = set()
    current: Path | None = top
    while current is not None:
        if current.resolve() in seen or len(chain) >= _MAX_EXTENDS:
            problems.append(f"{current}: 'extends' goes round in a circle; point it at the base pack")
            break
        seen.add(current.resolve())
        try:
            raw = current.read_bytes()
        except OSError as exc:
            problems.append(f"{current}: cannot read the rule pack ({exc.strerror}); check the path")
            break
        try:
            doc = read_yaml(raw)
        except (yaml.YAMLError, UnicodeDecodeError) as exc:
            problems.append(f"{current}: not valid YAML ({' '.join(str(exc).split())}); fix the syntax")
            break
        if not isinstance(doc, dict):
            problems.append(f"{current}: a rule pack is a YAML mapping (name:, thresholds:, codelists:, rules:)")
            break
        chain.append((current, doc, hashlib.sha256(raw).hexdigest()))
        extends = doc.get("extends")
        if extends is None:
            current = None
        elif not isinstance(extends, str) or not extends.strip():
            problems.append(f"{current}: extends must be 'default' or the path of another pack")
            current = None
        else:
            current = default_pack_path() if extends.strip() == "default" else current.parent / extends.strip()
    return list(reversed(chain))


def _merge(chain: list[tuple[Path, dict[str, Any], str]], problems: list[str]) -> dict[str, Any]:
    """One effective document; values remember their file as (value, source) pairs."""
    merged: dict[str, Any] = {"thresholds": {}, "codelists": {}, "cohort_precedence": (None, ""), "rules": [],
                              "decisions": (None, ""), "disabled_flags": []}
    for path, doc, _ in chain:
        src = str(path)
        for key in sorted(set(doc) - TOP_LEVEL):
            problems.append(f"{src}: unknown key '{key}'{suggest(key, tuple(TOP_LEVEL))}; "
                            f"a pack has {', '.join(sorted(TOP_LEVEL))}")
        for key in ("name", "version", "description"):
            if key in doc:
                merged[key] = doc[key]
        for key in ("thresholds", "codelists"):
            section = doc.get(key)
            if section is None:
                continue
            if not isinstance(section, dict):
                problems.append(f"{src}: {key} must be a mapping of name: value")
                continue
            merged[key].update({str(name): (value, src) for name, value in section.items()})
        if "cohort_precedence" in doc:
            merged["cohort_precedence"] = (doc["cohort_precedence"], src)
        if "decisions" in doc:
            merged["decisions"] = (_merge_decisions(merged["decisions"][0], doc["decisions"]), src)
        _merge_rules(merged["rules"], doc, src, problems, merged["disabled_flags"])
    return merged


def _merge_decisions(base: Any, site: Any) -> Any:
    """A site pack's ``decisions:`` over the inherited one: ``any_flag`` decisions and
    ``families`` replace the inherited ones of the same name; the rest is inherited."""
    if not isinstance(base, dict) or not isinstance(site, dict):
        return site
    out = dict(base)
    for key in ("any_flag", "families"):
        if isinstance(base.get(key), dict) and isinstance(site.get(key), dict):
            out[key] = {**base[key], **site[key]}
        elif key in site:
            out[key] = site[key]
    out.update({k: v for k, v in site.items() if k not in ("any_flag", "families")})
    return out


def _merge_rules(rules: list[tuple[Any, str]], doc: dict[str, Any], src: str, problems: list[str],
                 disabled: list[str]) -> None:
    """Add ``doc``'s rules to ``rules``: same id replaces an inherited rule, new ids append."""
    inherited = {r.get("id"): i for i, (r, _) in enumerate(rules) if isinstance(r, dict)}
    raw_rules = doc.get("rules", [])
    if not isinstance(raw_rules, list):
        problems.append(f"{src}: rules must be a list of rules (each starting '- id: ...')")
        raw_rules = []
    seen: set[str] = set()
    for index, raw in enumerate(raw_rules):
        rule_id = raw.get("id") if isinstance(raw, dict) else None
        if isinstance(rule_id, str) and rule_id in seen:
            problems.append(f"{src}: rule {rule_id}: duplicate id (rule #{index + 1} repeats it); "
                            "give each rule its own id")
            continue
        if isinstance(rule_id, str):
            seen.add(rule_id)
        if rule_id in inherited:
            rules[inherited[rule_id]] = (raw, src)
        else:
            rules.append((raw, src))
    disable = doc.get("disable", [])
    for rule_id in disable if isinstance(disable, list) else [disable]:
        position = next((i for i, (r, _) in enumerate(rules) if isinstance(r, dict) and r.get("id") == rule_id),
                        None)
        if position is None:
            problems.append(f"{src}: disable: no rule '{rule_id}' to disable; use an id from the packs it extends")
        else:
            flag = rules[position][0].get("flag")
            if isinstance(flag, str):  # its flag may stay in the inherited decision vocabulary
                disabled.append(flag)
            del rules[position]


def _thresholds(raw: dict[str, tuple[Any, str]], problems: list[str]) -> dict[str, Threshold]:
    out: dict[str, Threshold] = {}
    for name, (value, src) in sorted(raw.items()):
        found = number(value)  # the pack is read as text (migrate.yamltext)
        if found is None:
            problems.append(f"{src}: thresholds.{name}: {value!r} is not a number; write a number such as 84")
            found = 0  # kept, so the rules using it are not also reported as unknown placeholders
        out[name] = Threshold(name, found, src)
    return out


def _codelists(raw: dict[str, tuple[Any, str]], problems: list[str]) -> dict[str, Codelist]:
    out: dict[str, Codelist] = {}
    for name, (value, src) in sorted(raw.items()):
        where = f"{src}: codelists.{name}"
        if isinstance(value, list):
            values = _codes(value, where, problems)
            keys = text_keys(values)
            for v, key in zip(values, keys, strict=True):
                if not key:
                    problems.append(f"{where}: {v!r} has no letter or digit, so no source value can match it; "
                                    "remove it")
            out[name] = Codelist(name, values, None, src, tuple(dict.fromkeys(k for k in keys if k)))
        elif isinstance(value, dict):
            by_system: dict[str, tuple[str, ...]] = {}
            labels: list[str] = []
            for system, codes in value.items():
                if system not in canonical.CODE_SYSTEM:
                    problems.append(f"{where}: unknown code system '{system}'; use one of "
                                    + ", ".join(canonical.CODE_SYSTEM))
                elif not isinstance(codes, list):
                    problems.append(f"{where}.{system}: must be a list of codes")
                else:
                    by_system[system] = _codes(codes, f"{where}.{system}", problems)
                    labels += code_labels(system, by_system[system])
            flat = tuple(dict.fromkeys(c for codes in by_system.values() for c in codes))
            out[name] = Codelist(name, flat, by_system, src, tuple(dict.fromkeys(labels)))
        else:
            problems.append(f"{where}: must be a list of values, or a mapping of code system to a list of codes")
            out[name] = Codelist(name, ("?",), None, src)  # kept, as for thresholds
    for name in FLAT_CODELISTS + CODED_CODELISTS:
        if name not in out and name not in raw and name not in OPTIONAL_CODELISTS:
            problems.append(f"codelists: missing codelist '{name}' (handover's features read it); "
                            "add it, even as an empty list")
    for name in CODED_CODELISTS:
        if name in out and out[name].by_system is None:
            problems.append(f"{out[name].source}: codelists.{name}: give the codes per code system "
                            "(snomed:, read2:, ctv3:, local:), because the same code means different things in each")
    _overlaps(out, problems)
    return out


def _codes(values: list[Any], where: str, problems: list[str]) -> tuple[str, ...]:
    codes: list[str] = []
    for value in values:
        if isinstance(value, str) and value.strip():
            codes.append(value.strip())
        elif isinstance(value, int) and not isinstance(value, bool):
            codes.append(str(value))  # SNOMED ids written unquoted
        else:
            problems.append(f"{where}: {value!r} is not a code or phrase; write it as quoted text")
    return tuple(dict.fromkeys(codes))


def _overlaps(codelists: dict[str, Codelist], problems: list[str]) -> None:
    """A code cannot both block and lift a block, or be both a block and an opt-out; a value
    cannot be both a red flag and not one. Compared as matched (``migrate.matching``)."""
    for group in (CODED_CODELISTS, EXCLUSIVE_TEXT_CODELISTS):
        kinds = [name for name in group if name in codelists]
        for i, first in enumerate(kinds):
            for second in kinds[i + 1:]:
                both = sorted(set(codelists[first].keys) & set(codelists[second].keys))
                if both:
                    problems.append(f"{codelists[second].source}: codelists {first} and {second} both list "
                                    f"{', '.join(both)}; keep each in one list")


def _precedence(raw: tuple[Any, str], top: str, problems: list[str]) -> tuple[str, ...]:
    value, src = raw
    if value is None:
        problems.append(f"{top}: missing key 'cohort_precedence'; list the cohorts most active first: "
                        + ", ".join(canonical.COHORTS))
        return canonical.COHORTS
    if not isinstance(value, list) or sorted(map(str, value)) != sorted(canonical.COHORTS):
        problems.append(f"{src}: cohort_precedence must list each cohort once, most active first: "
                        + ", ".join(canonical.COHORTS))
        return canonical.COHORTS
    return tuple(str(v) for v in value)
