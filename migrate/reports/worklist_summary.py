"""The worklist's Summary sheet, which stands alone on paper, and the run on every page.

A clinical lead handed a printed worklist learns from its first page which run it is (id,
cut-over, provider and mapping profile, rule pack and version, when it ran), what each
family of exceptions means and what they are asked to do, how many of each severity there
are, how to record a decision in the reviewer's columns, and where the workbook goes next.
The run id and cut-over are also in every page's header (``RunInfo.page``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date
from typing import TYPE_CHECKING, Any

import polars as pl

from migrate import canonical
from migrate.reports import display, xlsx
from migrate.reports.rundata import RunFolder

if TYPE_CHECKING:
    from migrate.reports.worklist import Layout

SECTIONS = ("About this run", "Exceptions by family", "How to record a decision", "Where it goes next")
ALL_FAMILIES = "All families"
COLUMNS = (
    xlsx.Column("item", "Item", 28, "wrap"),
    xlsx.Column("details", "Details", 76, "wrap"),
    *(xlsx.Column(s, s.capitalize(), 9) for s in canonical.SEVERITIES),
    xlsx.Column("total", "Total", 9),
)


def _profiles(mapping: Any) -> str:
    entries = [mapping] if isinstance(mapping, Mapping) else list(mapping or [])
    names = [f"{e.get('name')} (source system: {e['source_system']})" if e.get("source_system") else str(e.get("name"))
             for e in entries if isinstance(e, Mapping)]
    return "; ".join(names) or "not recorded"


@dataclass(frozen=True)
class Scope:
    """Which part of a run's exceptions a workbook holds: ``label`` on every page (e.g.
    "service line: knee"), ``text`` the Summary's line on it."""

    label: str
    text: str


@dataclass(frozen=True)
class RunInfo:
    """What identifies a run on paper, from its manifest (never from the data)."""

    run_id: str
    cutover: date
    profiles: str
    rules: str
    ran: str

    @classmethod
    def of(cls, run: RunFolder) -> RunInfo:
        """The run's id, cut-over, mapping profile(s), rule pack and times, from ``manifest.json``."""
        m = run.manifest
        rules = m.get("rules") or {}
        tool = m.get("tool") or {}
        started, finished = display.timestamp(m.get("started")), display.timestamp(m.get("finished"))
        ran = f"{started} to {finished}" if finished else (started or "not recorded")
        if tool:
            ran += f" (by {tool.get('name', 'handover')} {tool.get('version', '')})".replace(" )", ")")
        return cls(run.run_id, run.cutover, _profiles(m.get("mapping")),
                   f"{rules.get('name', 'not recorded')}, version {rules.get('version', '?')}", ran)

    def page(self, scope: Scope | None = None) -> xlsx.Page:
        """Header and footer text of every printed page."""
        header = f"Run {self.run_id} · cut-over {display.day_first(self.cutover)}"
        return xlsx.Page(header + (f" · {scope.label}" if scope else ""),
                         f"Provider profile {self.profiles} · rule pack {self.rules}")


def _rows(counts: pl.DataFrame, layout: Layout, info: RunInfo, scope: Scope | None) -> list[dict[str, Any]]:
    def line(item: str, details: str = "", **n: int) -> dict[str, Any]:
        return {"item": item, "details": details, **n}

    fams = {r["family"]: r for r in counts.iter_rows(named=True)}
    severities = {s: int(counts[s].sum()) for s in canonical.SEVERITIES}
    review = layout.decisions
    headers = {c.name: c.header for c in layout.columns}
    return [
        line(SECTIONS[0]),
        line("Run", info.run_id),
        line("Cut-over date", display.day_first(info.cutover)),
        line("Provider (mapping profile)", info.profiles),
        line("Rule pack", info.rules),
        line("Ran", info.ran),
        line("This workbook", scope.text if scope else "Every exception the run raised."),
        line(""),
        line(SECTIONS[1], "What the rows on each sheet are, and what you are asked to do. Counts by severity."),
        *(line(f.sheet, f"{f.means}\nTo do: {f.ask}",
               **{s: fams[name][s] for s in canonical.SEVERITIES}, total=fams[name]["flags"])
          for name, f in layout.families.items()),
        line(ALL_FAMILIES, "", **severities, total=sum(severities.values())),
        line(""),
        line(SECTIONS[2], "On any sheet, fill in the last columns of each row you review: "
             + ", ".join(headers[c] for c in review.columns) + "."),
        *(line(headers[c], review.columns[c]) for c in review.columns),
        *(line(f"Decision: {value}", meaning) for value, meaning in review.values),
        line(""),
        line(SECTIONS[3], review.next),
    ]


def summary_sheet(counts: pl.DataFrame, layout: Layout, info: RunInfo, scope: Scope | None = None) -> xlsx.Sheet:
    """The Summary sheet from ``counts`` (``worklist.family_counts``) and the run's ``info``."""
    schema = {"item": pl.String, "details": pl.String, **{s: pl.Int64 for s in canonical.SEVERITIES},
              "total": pl.Int64}
    frame = pl.DataFrame(_rows(counts, layout, info, scope), schema=schema)
    bold = {title: xlsx.STYLE_BOLD for title in (*SECTIONS, ALL_FAMILIES)}
    return xlsx.Sheet("Summary", frame, COLUMNS, emphasis={"item": bold}, autofilter=False)
