"""The review vocabulary: which decisions a clinician may record on each flag, as rule-pack data.

The rule pack's ``decisions:`` section (``rules/default.yaml``) declares, per flag
family, the flags it covers, what each decision does to the batch (its ``effect``, one of
``EFFECTS``: what handover knows how to do), and whether it needs a note and a second
reviewer. ``any_flag`` lists the decisions every flag takes (``acknowledged``)::

    decisions:
      any_flag:
        acknowledged: {effect: close, meaning: seen; nothing changes}
      families:
        sharing:
          flags: [SHARING_BLOCK, SHARING_BLOCK_ACTIVE_CARE]
          decisions:
            override: {effect: override_sharing, note: required, second_reviewer: required, meaning: ...}
            uphold: {effect: close, meaning: ...}

``parse_vocabulary`` reads it (with the rest of the pack, every problem at once: unknown
keys, unknown effects, an effect that cannot apply to a flag's subjects, a flag in two
families or that no rule raises). Nothing here reads data.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

# effect -> the subjects it can act on (pair: "A+B" patient pairs; referral; patient).
EFFECTS: dict[str, frozenset[str]] = {
    "close": frozenset({"pair", "patient", "referral"}),  # the item is decided; nothing else changes
    "merge": frozenset({"pair"}),  # the two records are one person: merged, survivorship as for exact duplicates
    "keep_apart": frozenset({"pair"}),  # two people: the pair is closed and stays closed while its records hold
    "override_sharing": frozenset({"patient"}),  # clinical record sent despite the dissent, with a permit Consent
    "raise_priority": frozenset({"referral"}),  # ServiceRequest priority raised to ``to``
    "move": frozenset({"patient", "referral"}),  # derived list (cohort) set to ``to``
}
EFFECT_TARGETS = {"raise_priority": ("urgent", "two_week_wait"), "move": ("backlog", "transition", "pifu")}
BINDS_TO = ("evidence", "records")  # what a decision's evidence fingerprint covers
OTHER_FAMILY = "other"
_DECISION_KEYS = {"effect", "to", "note", "second_reviewer", "meaning"}
_FAMILY_KEYS = {"flags", "decisions", "binds_to", "subjects"}
_NAME = re.compile(r"^[a-z][a-z0-9_]*$")
_SUBJECTS = ("pair", "patient", "referral")


@dataclass(frozen=True)
class Decision:
    """One decision value: what it does (``effect`` with its target ``to``), its meaning for
    the reviewer, and whether it needs a note and a second reviewer."""

    name: str
    effect: str
    to: str | None = None
    meaning: str = ""
    note_required: bool = False
    second_reviewer: bool = False


@dataclass(frozen=True)
class DecisionFamily:
    """Flags decided alike: their decisions and what a decision binds to (``evidence``: the
    flag's evidence text; ``records``: the canonical rows of the patients it names)."""

    name: str
    flags: tuple[str, ...]
    decisions: Mapping[str, Decision]
    binds_to: str = "evidence"


@dataclass(frozen=True)
class ReviewVocabulary:
    """The pack's decision vocabulary: families and the decisions every flag takes."""

    families: Mapping[str, DecisionFamily]
    any_flag: Mapping[str, Decision]

    def family_of(self, flag_code: str) -> str:
        """The family deciding ``flag_code`` (``other`` when no family lists it)."""
        return next((f.name for f in self.families.values() if flag_code in f.flags), OTHER_FAMILY)

    def allowed(self, flag_code: str) -> dict[str, Decision]:
        """Every decision ``flag_code`` takes: its family's, then the ``any_flag`` ones."""
        family = self.families.get(self.family_of(flag_code))
        return {**(dict(family.decisions) if family else {}), **self.any_flag}

    def binds_to(self, flag_code: str) -> str:
        family = self.families.get(self.family_of(flag_code))
        return family.binds_to if family else "evidence"

    def choices(self, flag_code: str) -> tuple[str, ...]:
        """The drop-down values of ``flag_code``'s rows in the worklist."""
        return tuple(self.allowed(flag_code))

    def document(self) -> dict[str, Any]:
        """The vocabulary as the pack's ``decisions:`` section (what a run freezes)."""
        def one(d: Decision) -> dict[str, Any]:
            out: dict[str, Any] = {"effect": d.effect}
            if d.to:
                out["to"] = d.to
            if d.note_required:
                out["note"] = "required"
            if d.second_reviewer:
                out["second_reviewer"] = "required"
            if d.meaning:
                out["meaning"] = d.meaning
            return out
        return {"any_flag": {n: one(d) for n, d in self.any_flag.items()},
                "families": {f.name: {"flags": list(f.flags), "binds_to": f.binds_to,
                                      "decisions": {n: one(d) for n, d in f.decisions.items()}}
                             for f in self.families.values()}}


EMPTY = ReviewVocabulary({}, {"acknowledged": Decision("acknowledged", "close", meaning="seen; nothing changes")})


def _required(value: Any, where: str, problems: list[str]) -> bool:
    if value is None or value is False or str(value).strip().lower() in ("", "no", "false", "optional"):
        return False
    if value is True or str(value).strip().lower() in ("required", "yes", "true"):
        return True
    problems.append(f"{where}: {value!r} is not 'required' or 'optional'")
    return False


def _decision(name: Any, raw: Any, subjects: frozenset[str], where: str, problems: list[str]) -> Decision | None:
    if not isinstance(name, str) or not _NAME.match(name):
        problems.append(f"{where}: decision {name!r} must be a lower-case word such as same_person")
        return None
    if not isinstance(raw, dict):
        problems.append(f"{where}.{name}: give the decision's effect, e.g. {{effect: close, meaning: ...}}")
        return None
    for key in sorted(set(raw) - _DECISION_KEYS):
        problems.append(f"{where}.{name}: unknown key '{key}' (a decision has {', '.join(sorted(_DECISION_KEYS))})")
    effect = str(raw.get("effect") or "")
    to = raw.get("to")
    if effect not in EFFECTS:
        problems.append(f"{where}.{name}: effect '{effect}' is not one handover knows ({', '.join(EFFECTS)})")
    else:
        targets = EFFECT_TARGETS.get(effect)
        if targets and str(to) not in targets:
            problems.append(f"{where}.{name}: effect {effect} needs 'to:' one of {', '.join(targets)} (got {to!r})")
        elif not targets and to is not None:
            problems.append(f"{where}.{name}: effect {effect} takes no 'to:'")
        cannot = sorted(subjects - EFFECTS[effect])
        if cannot:
            problems.append(f"{where}.{name}: effect {effect} cannot act on the {'/'.join(cannot)} subjects of "
                            f"this family's flags; it acts on {'/'.join(sorted(EFFECTS[effect]))}")
    return Decision(name, effect, None if to is None else str(to), str(raw.get("meaning") or "").strip(),
                    _required(raw.get("note"), f"{where}.{name}.note", problems),
                    _required(raw.get("second_reviewer"), f"{where}.{name}.second_reviewer", problems))


def parse_vocabulary(raw: Any, flag_subjects: Mapping[str, frozenset[str]], source: str,
                     problems: list[str]) -> ReviewVocabulary:
    """The ``decisions:`` section of a pack, checked against the flags it can raise.

    ``flag_subjects``: every flag code the pack's rules and identity raise, with the
    subjects it is raised on (pair, patient, referral). Problems are appended, each naming
    ``source`` and the key; a pack without the section gets ``EMPTY`` (acknowledged only).
    """
    if raw is None:
        return EMPTY
    where = f"{source}: decisions"
    if not isinstance(raw, dict):
        problems.append(f"{where}: must be a mapping with any_flag: and families:")
        return EMPTY
    for key in sorted(set(raw) - {"any_flag", "families"}):
        problems.append(f"{where}: unknown key '{key}' (use any_flag and families)")
    every = frozenset(_SUBJECTS)
    any_raw = raw.get("any_flag") or {}
    any_flag = {d.name: d for n, r in (any_raw.items() if isinstance(any_raw, dict) else ())
                if (d := _decision(n, r, every, f"{where}.any_flag", problems)) is not None}
    families: dict[str, DecisionFamily] = {}
    owner: dict[str, str] = {}
    fam_raw = raw.get("families") or {}
    if not isinstance(fam_raw, dict):
        problems.append(f"{where}.families: must be a mapping of family name to its flags and decisions")
        fam_raw = {}
    for name, fam in fam_raw.items():
        at = f"{where}.families.{name}"
        if not isinstance(fam, dict):
            problems.append(f"{at}: give flags: and decisions:")
            continue
        for key in sorted(set(fam) - _FAMILY_KEYS):
            problems.append(f"{at}: unknown key '{key}' (a family has {', '.join(sorted(_FAMILY_KEYS))})")
        flags = tuple(str(f) for f in (fam.get("flags") or ()))
        subjects: set[str] = set()
        for flag in flags:
            if flag not in flag_subjects:
                problems.append(f"{at}: flag {flag} is raised by no rule of the pack nor by identity")
            else:
                subjects |= flag_subjects[flag]
            if flag in owner:
                problems.append(f"{at}: flag {flag} is already decided by family {owner[flag]}; keep it in one")
            owner[flag] = str(name)
        binds = str(fam.get("binds_to") or "evidence")
        if binds not in BINDS_TO:
            problems.append(f"{at}.binds_to: '{binds}' is not one of {', '.join(BINDS_TO)}")
        dec_raw = fam.get("decisions") or {}
        decisions = {d.name: d for n, r in (dec_raw.items() if isinstance(dec_raw, dict) else ())
                     if (d := _decision(n, r, frozenset(subjects), f"{at}.decisions", problems)) is not None}
        for clash in sorted(set(decisions) & set(any_flag)):
            problems.append(f"{at}.decisions.{clash}: already a decision of any_flag; give it another name")
        if not decisions:
            problems.append(f"{at}: list at least one decision")
        families[str(name)] = DecisionFamily(str(name), flags, decisions, binds)
    if not any_flag and not families:
        problems.append(f"{where}: declares no decision; remove the section or list decisions")
    return ReviewVocabulary(families, any_flag)


def normalise(value: str) -> str:
    """A typed decision as its vocabulary name: any case, spaces and hyphens as ``_``
    ("Same person", "same-person" → same_person)."""
    return re.sub(r"[\s\-]+", "_", value.strip().lower())


def flag_subjects(rule_flags: Iterable[tuple[str, str]], identity_flags: Iterable[str],
                  pair_flags: Iterable[str]) -> dict[str, frozenset[str]]:
    """flag code -> subjects, from the pack's flag rules (code, level) and identity's flags
    (patient-level; ``pair_flags`` are raised on pairs)."""
    out: dict[str, set[str]] = {}
    for code, level in rule_flags:
        out.setdefault(code, set()).add(level)
    pairs = set(pair_flags)
    for code in identity_flags:
        out.setdefault(code, set()).add("pair" if code in pairs else "patient")
    return {k: frozenset(v) for k, v in out.items()}
