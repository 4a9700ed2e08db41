"""Which column feeds which canonical field of a table, with a confidence and the reason.

A column's confidence for a field combines its name (a listed synonym, a close one, or
none) with whether its values fit the field (``_fit``): dates that parse, true/false
words, coded values the catalogue knows, NHS numbers that pass Modulus 11, a key no value
of which repeats, a column whose values are another file's key. A name the values
contradict is proposed only as a comment; values alone propose a field only where their
shape is specific (NHS numbers, postcodes, references between files). Each column feeds
at most one field (an NHS number column also feeds ``nhs_number_raw``).
"""

from __future__ import annotations

from dataclasses import dataclass
from dataclasses import field as dataclass_field
from typing import Any

from migrate import canonical
from migrate.draft.catalogue import Catalogue, NameMatch
from migrate.draft.shapes import MAX_CODES, ColumnStats
from migrate.draft.survey import FileSurvey
from migrate.matching import text_keys

MAPPED = 0.5  # proposals at or above this confidence are mapped; below, they are comments
SURE = 0.85  # at or above this, the draft says no more than the confidence and the evidence
_SHAPED = {"nhs_number": "nhs", "nhs_number_raw": "nhs", "postcode": "postcode", "gp_ods_code": "ods", "phone": "phone"}
_KEYS = {"patients": "source_patient_id", "referrals": "source_referral_id", "contacts": "contact_key"}
_REFERS = {"patient_key": "patients", "referral_key": "referrals"}
BY_VALUES = {"enum": 0.55, "date": 0.4, "datetime": 0.4, "boolean": 0.3}  # confidence from values alone


@dataclass
class Proposal:
    """One canonical field as the draft proposes to map it."""

    field: str
    columns: tuple[str, ...]
    confidence: float
    reasons: list[str]
    options: dict[str, Any] = dataclass_field(default_factory=dict)

    @property
    def mapped(self) -> bool:
        return self.confidence >= MAPPED


def _fit(table: str, name: str, s: ColumnStats, survey: FileSurvey, context: dict[str, FileSurvey],
         catalogue: Catalogue) -> tuple[int, str]:
    """(+1 fits, 0 says nothing, -1 contradicts, reason) of column ``s`` for field ``name``."""
    if s.filled == 0:
        return 0, "the column is empty"
    kind = "name" if name == "full_name" else canonical.TABLES[table].field(name).kind
    if name in _KEYS.values() and name == _KEYS.get(table):
        referenced = [f.name for f in context.values() if any(r.target == survey.name and r.column != s.name
                                                              and r.key == s.name for r in f.references)]
        if s.name in survey.keys:
            return 1, "no value repeats" + (f"; {', '.join(referenced)} refer to it" if referenced else "")
        return -1, f"values repeat ({s.distinct:,} distinct in {s.filled:,} rows): not a key"
    if name in _REFERS and table != _REFERS[name]:
        parent = context.get(_REFERS[name])
        refs = [r for r in survey.references if r.column == s.name]
        if parent is not None and any(r.target == parent.name for r in refs):
            return 1, f"its values are {parent.name}'s {next(r.key for r in refs if r.target == parent.name)}"
        if parent is not None:
            return -1, f"its values are not {parent.name}'s ids"
        return (1, "its values are another file's ids") if refs else (0, "")
    if name in _SHAPED:
        share = s.share(_SHAPED[name])
        words = {"nhs": "pass the NHS number Modulus 11 check", "postcode": "are shaped like postcodes",
                 "ods": "are shaped like ODS practice codes", "phone": "are shaped like UK phone numbers"}
        if share >= 0.5:
            return 1, f"{share:.0%} {words[_SHAPED[name]]}"
        return (-1 if name.startswith("nhs") else 0), f"only {share:.0%} {words[_SHAPED[name]]}"
    if kind in ("date", "datetime"):
        if s.dates is not None and s.dates.share >= 0.9:
            return 1, s.dates.why
        if kind == "datetime" and s.dates is not None:
            return 0, s.dates.why
        return -1, "values are not dates"
    if kind == "boolean":
        share = s.share("boolean")
        return (1, f"{share:.0%} are true/false words") if share >= 0.9 else (-1, f"only {share:.0%} are true/false words")
    if kind == "enum":
        meanings = catalogue.value_meanings(name)
        if not s.counts:
            return -1, f"{s.distinct:,} distinct values: too many for a coded field"
        known = sum(n for v, n in s.counts if text_keys((v,))[0] in meanings)
        share = known / s.filled
        if share >= 0.5:
            return 1, f"{share:.0%} of values are known {name} codes"
        return 0, f"{s.distinct} distinct values, {share:.0%} of rows known {name} codes"
    if s.dates is not None and s.dates.share >= 0.9:
        return -1, "values are dates"
    if s.share("boolean") >= 0.95 and s.distinct <= 4 and kind != "list":
        return -1, "values are true/false words"
    return 0, ""


def _confidence(match: NameMatch | None, fit: int, shaped: bool, kind: str) -> float:
    if match is not None and match.exact:
        return {1: 0.97, 0: 0.85, -1: 0.35}[fit]
    if match is not None:
        return {1: round(0.55 + match.score * 0.35, 2), 0: round(match.score * 0.7, 2), -1: 0.2}[fit]
    if fit != 1:
        return 0.0
    # By values alone: a specific shape (NHS numbers, a reference, coded values the catalogue
    # knows) is proposed; dates and true/false words could be any such field, so they are
    # only named in a comment as candidates.
    return 0.55 if shaped else BY_VALUES.get(kind, 0.0)


def _why(column: str, match: NameMatch | None, reason: str) -> str:
    if match is None:
        said = f"'{column}': by its values only"
    elif match.exact:
        said = f"'{column}'" + ("" if column == match.synonym else f" is a listed name ('{match.synonym}')")
    else:
        said = f"'{column}' is close to the listed name '{match.synonym}' ({match.score / 0.9:.0%})"
    return f"{said}; {reason}" if reason else said


def candidates(table: str, survey: FileSurvey, context: dict[str, FileSurvey],
               catalogue: Catalogue) -> list[Proposal]:
    """Every (field, column) pairing with a confidence above zero, best first."""
    found: list[Proposal] = []
    for name in catalogue.fields.get(table, {}):
        shaped = name in _SHAPED or (name in _REFERS and table != _REFERS[name]) or name == _KEYS.get(table)
        kind = "name" if name == "full_name" else canonical.TABLES[table].field(name).kind
        for column in survey.columns:
            s = survey.stats[column]
            match = catalogue.match_name(table, name, column)
            if match is None and not shaped and kind not in BY_VALUES:
                continue
            fit, reason = _fit(table, name, s, survey, context, catalogue)
            if match is None and kind == "enum" and fit == 1 and not reason.startswith(("9", "100%")):
                fit = 0  # by values alone only when nearly every value is a known code
            conf = _confidence(match, fit, shaped, kind)
            if conf > 0:
                found.append(Proposal(name, (column,), conf, [_why(column, match, reason)]))
    order = {c: i for i, c in enumerate(survey.columns)}
    fields = list(catalogue.fields.get(table, {}))
    return sorted(found, key=lambda p: (-p.confidence, fields.index(p.field), order[p.columns[0]]))


def assign(table: str, survey: FileSurvey, context: dict[str, FileSurvey],
           catalogue: Catalogue) -> tuple[dict[str, Proposal], list[Proposal]]:
    """(field -> chosen proposal, the proposals not chosen): greedy by confidence, one
    column per field and one field per column (``nhs_number_raw`` follows ``nhs_number``)."""
    chosen: dict[str, Proposal] = {}
    used: set[str] = set()
    rest: list[Proposal] = []
    for p in candidates(table, survey, context, catalogue):
        if p.field in chosen or p.columns[0] in used:
            rest.append(p)
            continue
        chosen[p.field] = p
        used.add(p.columns[0])
    nhs = chosen.get("nhs_number")
    if nhs is not None and "nhs_number_raw" in canonical.TABLES[table].field_names:
        chosen.pop("nhs_number_raw", None)
        chosen["nhs_number_raw"] = Proposal("nhs_number_raw", nhs.columns, nhs.confidence,
                                            ["the NHS number as written, for the identity checks"])
    return chosen, rest


def table_score(table: str, chosen: dict[str, Proposal], survey: FileSurvey, catalogue: Catalogue) -> float:
    """How well a file fits a table: the share of its columns mapped with confidence, plus
    the share of the fields the table cannot do without, plus a word of its file name."""
    if not survey.columns:
        return 0.0
    mapped = sum(p.confidence for f, p in chosen.items() if p.mapped and f != "nhs_number_raw")
    needed = [f for f, spec in catalogue.fields.get(table, {}).items() if spec.required]
    covered = sum(1 for f in needed if f in chosen and chosen[f].mapped) / max(1, len(needed))
    words = set(text_keys((survey.path.stem,))[0].split("_"))
    named = 0.2 if words & set(catalogue.file_words.get(table, ())) else 0.0
    return round(mapped / len(survey.columns) + covered + named, 4)


def codes_of(s: ColumnStats) -> bool:
    """True when the column has few enough distinct values to list as codes."""
    return bool(s.counts) and s.distinct <= MAX_CODES
