"""The profile options a drafted field needs, decided from its column's values.

For each chosen column: ``required`` (the catalogue's fields a row cannot do without; the
blanks that will quarantine are counted), date ``formats`` (from ``shapes.decide_dates``),
a date and a time column joined for a date-time, the NHS number cleaning every shipped
profile uses, ``case`` where the values are not in the case the canonical model keeps
(postcodes, ODS codes, names in capitals), the list separator, a full name split, and for
coded fields a ``map`` skeleton: every distinct source value with its rows beside the
canonical value it may mean (``None`` when none: the draft leaves it as a comment to fill
in). Values are listed for coded fields only; never for a field that identifies a person.
"""

from __future__ import annotations

from dataclasses import dataclass

import polars as pl

from migrate import canonical
from migrate.draft.catalogue import Catalogue
from migrate.draft.fields import Proposal
from migrate.draft.shapes import ColumnStats, DateDecision, decide_dates, value_counts
from migrate.draft.survey import FileSurvey
from migrate.matching import text_keys

NHS_OPTIONS = {"remove": " -", "pattern": r"^\d{10}$", "on_invalid": "null"}


@dataclass(frozen=True)
class MapEntry:
    """One distinct source value of a coded field and what it may mean."""

    value: str
    rows: int
    meaning: str | None  # a canonical value, or None: nothing known
    note: str = ""  # for an unknown value: the closest canonical values


def map_skeleton(name: str, s: ColumnStats, catalogue: Catalogue) -> list[MapEntry]:
    """Every distinct value of a coded column (most rows first) beside its meaning."""
    meanings = catalogue.value_meanings(name)
    entries = []
    for value, rows in s.counts:
        meaning = meanings.get(text_keys((value,))[0])
        note = ""
        if meaning is None:
            close = catalogue.closest_meanings(name, value)
            note = ("might mean " + " or ".join(f"{m} ({score:.0%} alike)" for m, score in close)) if close else ""
        entries.append(MapEntry(value, rows, meaning, note))
    return entries


def _time_column(survey: FileSurvey, date_column: str, catalogue: Catalogue) -> str | None:
    """A time-of-day column to join with ``date_column`` (the nearest one after it by position)."""
    times = [c for c in survey.columns if survey.stats[c].share("time") >= 0.9 and catalogue.is_time_name(c)]
    if not times:
        return None
    at = survey.columns.index(date_column)
    return min(times, key=lambda c: (abs(survey.columns.index(c) - at), c))


def _joined_dates(survey: FileSurvey, columns: tuple[str, str], catalogue: Catalogue) -> DateDecision | None:
    assert survey.frame is not None
    joined = survey.frame.select(pl.concat_str([pl.col(c).str.strip_chars() for c in columns], separator=" ",
                                               ignore_nulls=True).alias("v"))
    return decide_dates(value_counts(joined, "v"), catalogue, "datetime")


def _split_name(survey: FileSurvey, column: str) -> dict[str, dict[str, object]]:
    """family_name and given_names from one "SURNAME, Forenames" column."""
    assert survey.frame is not None
    family = survey.frame.select(pl.col(column).str.split(",").list.first().str.strip_chars().alias("f"))
    capitals = family.filter(pl.col("f").str.contains(r"\p{Lu}") & ~pl.col("f").str.contains(r"\p{Ll}")).height
    fam: dict[str, object] = {"split": {"column": column, "sep": ",", "index": 0}}
    if capitals >= 0.5 * max(1, family.height):
        fam["case"] = "title"
    return {"family_name": fam, "given_names": {"split": {"column": column, "sep": ",", "index": 1, "rest": True}}}


def decide_options(table: str, p: Proposal, survey: FileSurvey, catalogue: Catalogue) -> None:
    """Fill ``p.options`` (and add reasons) from the column's values; see the module docstring."""
    column = p.columns[0]
    s = survey.stats[column]
    spec = catalogue.fields[table].get(p.field)
    kind = "name" if p.field == "full_name" else canonical.TABLES[table].field(p.field).kind
    if spec is not None and spec.required:
        p.options["required"] = True
        blanks = s.rows - s.filled
        if blanks:
            p.reasons.append(f"CHECK: {blanks:,} rows are blank here and will be quarantined (missing_required)")
    if p.field in ("nhs_number",):
        p.options.update(NHS_OPTIONS)
    if p.field in ("postcode", "gp_ods_code") and s.share("lower") > 0:
        p.options["case"] = "upper"
    if kind == "datetime" and s.dates is not None and s.dates.kind == "date":
        time = _time_column(survey, column, catalogue)
        if time is not None:
            p.columns = (column, time)
            joined = _joined_dates(survey, (column, time), catalogue)
            if joined is not None:
                p.options["formats"] = [joined.format]
                p.reasons.append(f"date and time of day in two columns, joined: {joined.why}")
                return
        p.reasons.append("CHECK: the values are dates without a time of day; the run reads them as midnight")
    if kind in ("date", "datetime") and s.dates is not None:
        p.options["formats"] = [s.dates.format]
        if not s.dates.certain:
            p.reasons = ["CHECK: " + r if r == s.dates.why else r for r in p.reasons]
    if kind == "enum":
        p.options["map"] = map_skeleton(p.field, s, catalogue)
        unknown = [e for e in p.options["map"] if e.meaning is None]
        if unknown:
            p.reasons.append(f"CHECK: {len(unknown)} value(s) match no {p.field} value: give each its canonical "
                             f"value ({', '.join(canonical.TABLES[table].field(p.field).enum_values or ())}) or "
                             "leave them to be quarantined (unmapped_code)")
    if kind == "list":
        seps = {sep: share for sep, share in s.separators.items() if sep != (survey.dialect.delimiter
                                                                              if survey.dialect else None)}
        best = max(seps.items(), key=lambda kv: (kv[1], -list(seps).index(kv[0])), default=(";", 0.0))
        p.options["separator"] = best[0]
        if best[1] == 0:
            p.reasons.append(f"CHECK: no value holds two elements, so the separator '{best[0]}' is assumed")
    if kind == "boolean":
        words = {v.upper() for v, _ in s.counts}
        known = {w.upper() for w in (*catalogue.true_words, *catalogue.false_words)}
        if words - known:
            p.reasons.append(f"CHECK: {len(words - known)} value(s) are not true/false words and will be "
                             "quarantined (invalid_value)")
    if p.field == "full_name":
        p.options["split_name"] = _split_name(survey, column) if s.share("comma") >= 0.9 else None


def boolean_words(tables: dict[str, tuple[FileSurvey, dict[str, Proposal]]],
                  catalogue: Catalogue) -> tuple[list[str], list[str]]:
    """The true and false words the drafted true/false fields use, as written (first seen case)."""
    seen: dict[str, str] = {}
    for table, (survey, chosen) in tables.items():
        for p in chosen.values():  # candidates too: once a person maps them, their words must read
            if p.field != "full_name" and canonical.TABLES[table].field(p.field).kind == "boolean":
                for value, _ in survey.stats[p.columns[0]].counts:
                    seen.setdefault(value.upper(), value)
    trues = {w.upper() for w in catalogue.true_words}
    falses = {w.upper() for w in catalogue.false_words}
    return ([v for k, v in sorted(seen.items()) if k in trues] or ["Y"],
            [v for k, v in sorted(seen.items()) if k in falses] or ["N"])
