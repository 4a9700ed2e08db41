"""What the drafter knows about extracts, read from data (``mappings/draft/synonyms.yaml``).

Column-name synonyms per canonical field, the words coded values are written as, true/false
words, list separators and the date and time formats to try. Nothing here is a guess in
code: a spelling the drafter should know is added to the data file.

Names compare in one normalised form (``name_key``: lower case, letters and digits only);
values compare in codelist matching form (``migrate.matching.text_key``), so the drafter
and the rules agree on what "the same value" means.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rapidfuzz import fuzz, process

from migrate import canonical, resources
from migrate.errors import ConfigError
from migrate.matching import text_keys
from migrate.yamltext import load_yaml

EXTRA_FIELDS = ("full_name",)  # a drafted pseudo-field: one column split into family and given names
_NOT_ALNUM = re.compile(r"[^0-9a-z]+")
FUZZY_FLOOR = 80.0  # rapidfuzz similarity (0-100) below which a name is not proposed at all


def name_key(name: str) -> str:
    """A column name's comparison form: lower case, letters and digits only."""
    return _NOT_ALNUM.sub("", name.lower())


@dataclass(frozen=True)
class FieldNames:
    """The names a column feeding one canonical field may go by."""

    table: str
    field: str
    names: tuple[str, ...]
    required: bool


@dataclass(frozen=True)
class NameMatch:
    """How well a column name matches a field: 1.0 for a listed synonym, less for a close one."""

    score: float
    synonym: str  # the listed name it matched, as written in the data file

    @property
    def exact(self) -> bool:
        return self.score >= 1.0


@dataclass(frozen=True)
class Catalogue:
    """The drafter's data, loaded and checked (``load_catalogue``)."""

    path: Path
    fields: dict[str, dict[str, FieldNames]]  # table -> field -> names
    file_words: dict[str, tuple[str, ...]]
    time_names: tuple[str, ...]
    values: dict[str, dict[str, tuple[str, ...]]]  # coded field -> canonical value -> spellings
    true_words: tuple[str, ...]
    false_words: tuple[str, ...]
    list_separators: tuple[str, ...]
    date_formats: tuple[str, ...]
    time_formats: tuple[str, ...]
    datetime_joins: tuple[str, ...]

    def match_name(self, table: str, field: str, column: str) -> NameMatch | None:
        """The best match of ``column`` against ``field``'s names (and the field's own name)."""
        spec = self.fields[table][field]
        key = name_key(column)
        candidates: dict[str, str] = {}
        for n in (field, *spec.names):
            candidates.setdefault(name_key(n), n)
        if key in candidates:
            return NameMatch(1.0, candidates[key])
        found = process.extractOne(key, list(candidates), scorer=fuzz.ratio, score_cutoff=FUZZY_FLOOR)
        if found is None:
            return None
        return NameMatch(round(found[1] / 100 * 0.9, 3), candidates[found[0]])

    def is_time_name(self, column: str) -> bool:
        key = name_key(column)
        return key in {name_key(n) for n in self.time_names} or key.endswith("time")

    def value_meanings(self, field: str) -> dict[str, str]:
        """Spelling (in matching form) -> canonical value, for coded ``field``; a canonical
        value is its own spelling."""
        spellings: dict[str, str] = {}
        for canonical_value, words in self.values.get(field, {}).items():
            for key in text_keys((canonical_value, *words)):
                spellings.setdefault(key, canonical_value)
        return spellings

    def closest_meanings(self, field: str, value: str, limit: int = 2) -> list[tuple[str, float]]:
        """Canonical values of ``field`` a value no spelling names might mean, by similarity
        to their spellings (best first; empty when nothing is close)."""
        spellings = self.value_meanings(field)
        key = text_keys((value,))[0]
        scored: dict[str, float] = {}
        for spelling, meaning in spellings.items():
            score = fuzz.ratio(key, spelling) / 100
            if score >= 0.6 and score > scored.get(meaning, 0):
                scored[meaning] = score
        return sorted(scored.items(), key=lambda kv: (-kv[1], kv[0]))[:limit]


def _strings(value: Any, where: str, problems: list[str]) -> tuple[str, ...]:
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return tuple(value)
    problems.append(f"{where}: expected a list of strings (quote words YAML would read otherwise)")
    return ()


def load_catalogue(path: Path | None = None) -> Catalogue:
    """Load the drafter's data (default: the shipped ``mappings/draft/synonyms.yaml``);
    ``ConfigError`` (exit 2) listing every problem: unknown tables, fields or canonical
    values, and entries that are not lists of strings."""
    path = path or resources.mappings_dir() / "draft" / "synonyms.yaml"
    doc = load_yaml(path, "synonyms file")
    problems: list[str] = []
    if not isinstance(doc, dict):
        raise ConfigError(f"synonyms file {path} is not a YAML mapping")
    fields: dict[str, dict[str, FieldNames]] = {}
    for table, tdoc in (doc.get("tables") or {}).items():
        if table not in canonical.TABLE_ORDER:
            problems.append(f"tables.{table}: not a canonical table ({', '.join(canonical.TABLE_ORDER)})")
            continue
        known = canonical.TABLES[table].field_names + (EXTRA_FIELDS if table == "patients" else ())
        for name, fdoc in (tdoc or {}).items():
            if name not in known or not isinstance(fdoc, dict):
                problems.append(f"tables.{table}.{name}: not a field of {table} with {{names: [...]}}")
                continue
            names = _strings(fdoc.get("names"), f"tables.{table}.{name}.names", problems)
            fields.setdefault(table, {})[name] = FieldNames(table, name, names, fdoc.get("required") is True)
    values: dict[str, dict[str, tuple[str, ...]]] = {}
    enums = {f.name: f.enum_values for t in canonical.TABLE_ORDER for f in canonical.TABLES[t].fields if f.enum_values}
    for field, vdoc in (doc.get("values") or {}).items():
        if field not in enums or not isinstance(vdoc, dict):
            problems.append(f"values.{field}: not a coded field ({', '.join(sorted(enums))})")
            continue
        for meaning, words in vdoc.items():
            if meaning not in (enums[field] or ()):
                problems.append(f"values.{field}.{meaning}: not a {field} value ({', '.join(enums[field] or ())})")
                continue
            values.setdefault(field, {})[meaning] = _strings(words, f"values.{field}.{meaning}", problems)
    words = doc.get("file_words") or {}
    booleans = doc.get("booleans") or {}
    catalogue = Catalogue(
        path=path, fields=fields,
        file_words={t: _strings(words.get(t, []), f"file_words.{t}", problems) for t in canonical.TABLE_ORDER},
        time_names=_strings(doc.get("time_names", []), "time_names", problems),
        values=values,
        true_words=_strings(booleans.get("true", []), "booleans.true", problems),
        false_words=_strings(booleans.get("false", []), "booleans.false", problems),
        list_separators=_strings(doc.get("list_separators", []), "list_separators", problems),
        date_formats=_strings(doc.get("date_formats", []), "date_formats", problems),
        time_formats=_strings(doc.get("time_formats", []), "time_formats", problems),
        datetime_joins=_strings(doc.get("datetime_joins", [" "]), "datetime_joins", problems),
    )
    if problems:
        raise ConfigError(f"synonyms file {path} has {len(problems)} problem(s)", problems)
    return catalogue
