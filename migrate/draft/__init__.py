"""``handover profile draft``: a first mapping profile written from an extract's files alone.

    survey (encoding, dialect, column shapes, keys and references)
      → tables (which file feeds which canonical table)
      → fields (which column feeds which field, with a confidence)
      → options (formats, maps, case, splits, decided from the values)
      → render (YAML, every uncertain choice a CHECK comment saying why)

What the drafter knows about names and codes is data (``mappings/draft/synonyms.yaml``).
The draft is validated as a profile before it is returned: what it proposes loads; what
it could not decide is a comment, never a silent guess. It quotes values only of coded
fields (their ``map:`` skeletons), never of fields that identify a person.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from migrate import canonical
from migrate.draft.catalogue import Catalogue, load_catalogue
from migrate.draft.options import boolean_words, decide_options
from migrate.draft.render import render
from migrate.draft.shapes import settle_ties
from migrate.draft.survey import survey_folder
from migrate.draft.tables import TableChoice, assign_tables
from migrate.errors import ProfileError
from migrate.profile import parse_profile
from migrate.yamltext import read_yaml

__all__ = ["Draft", "draft_profile", "load_catalogue"]


@dataclass(frozen=True)
class Draft:
    """A drafted profile: its YAML text, what it proposes and what a person must check."""

    text: str
    tables: dict[str, str]  # table -> file
    checks: int  # lines marked CHECK
    problems: tuple[str, ...] = ()  # what the profile validator still says (a field no column was found for)
    leftovers: tuple[str, ...] = field(default_factory=tuple)

    def asdict(self) -> dict[str, Any]:
        return {"tables": self.tables, "checks": self.checks, "problems": list(self.problems),
                "not_drafted": list(self.leftovers)}


def _kind(table: str, name: str) -> str:
    return "name" if name == "full_name" else canonical.TABLES[table].field(name).kind


def _default_formats(choices: list[TableChoice]) -> dict[str, list[str]]:
    """The most used date and date-time formats become defaults; fields that use them drop
    their own ``formats``."""
    used: dict[str, Counter[str]] = {"date": Counter(), "datetime": Counter()}
    for c in choices:
        for name, p in c.chosen.items():
            if p.mapped and "formats" in p.options:
                used[_kind(c.table, name)][p.options["formats"][0]] += 1
    defaults = {k: [counts.most_common(1)[0][0]] for k, counts in used.items() if counts}
    for c in choices:
        for name, p in c.chosen.items():
            kind = _kind(c.table, name)
            if p.options.get("formats") == defaults.get(kind) or (
                    kind == "datetime" and p.options.get("formats") == defaults.get("date")
                    and "datetime" not in defaults):
                p.options.pop("formats", None)
    return defaults


def draft_profile(input_dir: Path, catalogue: Catalogue | None = None) -> Draft:
    """Draft a mapping profile for the files at the top of ``input_dir`` (module docstring)."""
    catalogue = catalogue or load_catalogue()
    files, skipped = survey_folder(input_dir, catalogue)
    settled = iter(settle_ties([s for f in files for s in f.stats.values()]))
    for f in files:
        f.stats = {c: next(settled) for c in f.stats}
    choices, leftovers = assign_tables(files, catalogue)
    for c in choices:
        if ("family_name" in c.chosen or "given_names" in c.chosen) and "full_name" in c.chosen:
            c.rest.append(c.chosen.pop("full_name"))
        for p in c.chosen.values():
            if p.mapped and p.field != "nhs_number_raw":
                decide_options(c.table, p, c.survey, catalogue)
    formats = _default_formats(choices)
    name = input_dir.resolve().name or "extract"
    required = {t: {f: spec.required for f, spec in fields.items()} for t, fields in catalogue.fields.items()}
    text = render(name, choices, leftovers, skipped, formats, boolean_words(
        {c.table: (c.survey, c.chosen) for c in choices}, catalogue), required)
    problems: tuple[str, ...] = ()
    try:
        parse_profile(read_yaml(text), Path(f"{name}.yaml"))
    except ProfileError as exc:
        problems = tuple(exc.problems) if hasattr(exc, "problems") else (str(exc),)
    return Draft(text, {c.table: c.survey.name for c in choices}, text.count("CHECK"), problems,
                 tuple(left.survey.name for left in leftovers))
