"""Which file feeds which canonical table.

Every delimited or Parquet file is scored against every table (``fields.table_score``:
the share of its columns that map with confidence, the share of the table's required
fields it covers, a word of its file name). The assignment that maximises the total
score, plus the links between files that a migration's tables have (referrals refer to
patients, contacts to referrals, coded entries to patients), wins; each table takes at
most one file and each file at most one table. Files no table takes are reported with
the table they resemble most.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import permutations

from migrate import canonical
from migrate.draft.catalogue import Catalogue
from migrate.draft.fields import Proposal, assign, table_score
from migrate.draft.survey import FileSurvey

MIN_SCORE = 0.8  # below this a file is not proposed for a table at all
# (child, parent, bonus): a file of the child table whose column holds the parent file's key
LINKS = (("referrals", "patients", 0.5), ("contacts", "referrals", 0.5), ("codes", "patients", 0.3),
         ("contacts", "patients", 0.1))


@dataclass(frozen=True)
class TableChoice:
    """A table, the file that feeds it, its score and the fields chosen from its columns."""

    table: str
    survey: FileSurvey
    score: float
    chosen: dict[str, Proposal]
    rest: list[Proposal]
    links: tuple[str, ...]  # "referrals refer to patients (patient_id)"


@dataclass(frozen=True)
class Leftover:
    """A file no table takes, and the table it resembles most."""

    survey: FileSurvey
    table: str | None
    score: float


def _links(assignment: dict[str, FileSurvey]) -> list[tuple[float, str]]:
    found = []
    for child, parent, bonus in LINKS:
        c, p = assignment.get(child), assignment.get(parent)
        if c is not None and p is not None:
            refs = [r for r in c.references if r.target == p.name]
            if refs:
                found.append((bonus, f"{c.name} refers to {p.name} ({refs[0].column} → {refs[0].key})"))
    return found


def assign_tables(files: list[FileSurvey], catalogue: Catalogue) -> tuple[list[TableChoice], list[Leftover]]:
    """The best assignment of files to tables (module docstring), fields chosen knowing it."""
    usable = [f for f in files if f.kind != "hl7v2" and f.columns]
    tables = list(canonical.TABLE_ORDER)
    scores = {(t, f.name): table_score(t, assign(t, f, {}, catalogue)[0], f, catalogue) for t in tables for f in usable}
    slots: list[FileSurvey | None] = [*usable, *([None] * len(tables))]
    best_total, assignment = -1.0, dict[str, FileSurvey]()
    for combo in permutations(range(len(slots)), len(tables)):  # in a fixed order: ties keep the first
        picked = {t: slots[i] for t, i in zip(tables, combo, strict=True)}
        chosen = {t: f for t, f in picked.items() if f is not None and scores[(t, f.name)] >= MIN_SCORE}
        if len(chosen) != sum(1 for f in picked.values() if f is not None):
            continue
        total = sum(scores[(t, f.name)] for t, f in chosen.items()) + sum(b for b, _ in _links(chosen))
        if total > best_total + 1e-9:
            best_total, assignment = total, chosen
    links = _links(assignment)
    choices = []
    for t in tables:
        if t in assignment:
            f = assignment[t]
            fields, rest = assign(t, f, assignment, catalogue)
            own = tuple(text for _, text in links if text.startswith(f.name + " "))
            choices.append(TableChoice(t, f, scores[(t, f.name)], fields, rest, own))
    taken = {f.name for f in assignment.values()}
    leftovers = []
    for f in files:
        if f.name in taken:
            continue
        ranked = sorted(((scores.get((t, f.name), 0.0), t) for t in tables), key=lambda st: (-st[0], tables.index(st[1])))
        leftovers.append(Leftover(f, ranked[0][1] if ranked and ranked[0][0] > 0 else None,
                                  ranked[0][0] if ranked else 0.0))
    return choices, leftovers
