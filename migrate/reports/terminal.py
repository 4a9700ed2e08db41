"""The terminal summary of a run's reconciliation, as rich renderables that fit 100 columns.

``summary_renderables(summary)`` takes the summary ``write_reports`` returns (the content
of reconciliation.json) and gives, in order: the verdict on both invariants (and the
round trip when the run has one), the
invariant per input file, cohorts, flags by severity, declared vs found and the report
files. ``cli.py`` prints them; tests render them to a fixed-width console.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from rich.console import RenderableType
from rich.table import Table
from rich.text import Text

from migrate import canonical
from migrate.reports.totals import ordered_counts

_DISPOSITIONS = (("migrated", "migrated"), ("merged", "merged"), ("already_at_target", "at\ntarget"),
                 ("withheld", "withheld"), ("out_of_scope", "out of\nscope"), ("quarantined", "quaran-\ntined"))


def _table(title: str, columns: list[tuple[str, str]]) -> Table:
    table = Table(title=title, title_justify="left")
    for name, justify in columns:
        table.add_column(name, justify="right" if justify == "r" else "left", overflow="fold")
    return table


def verdict(summary: Mapping[str, Any]) -> Text:
    """One line per invariant, red when it fails."""
    inv = summary["invariant"]
    fhir = summary.get("invariant_fhir") or {"applicable": False, "status": "not computed"}
    text = Text()
    if inv["holds"]:
        text.append("Invariant 1 holds", style="green")
        text.append(f": {inv['rows_read']:,} source rows read, each with exactly one disposition\n")
    else:
        text.append("Invariant 1 BROKEN", style="bold red")
        text.append(": rows read ≠ Σ dispositions for " + ", ".join(
            f["file"] for f in inv["files"] if not f["holds"]) + "\n")
    if not fhir.get("applicable"):
        text.append(f"Invariant 2 {fhir['status']}", style="dim")
    elif fhir.get("holds"):
        text.append("Invariant 2 holds", style="green")
        text.append(": every migrated row has a FHIR resource and every resource a source row")
    else:
        text.append(f"Invariant 2 BROKEN: {fhir['status']}", style="bold red")
    roundtrip = summary.get("roundtrip")
    if roundtrip and roundtrip.get("holds") is not None:
        if roundtrip["holds"]:
            text.append("\nRound trip holds", style="green")
        else:
            text.append("\nRound trip FAILS", style="bold red")
        text.append(f": {roundtrip['fields_compared']:,} FHIR fields compared with the source, "
                    f"{roundtrip['mismatches']:,} differ"
                    + ("" if roundtrip["holds"] else f" ({', '.join(roundtrip.get('mismatched_fields') or [])})"))
    return text


def _files(summary: Mapping[str, Any]) -> Table:
    table = _table("Rows read = Σ dispositions, per input file",
                   [("file", "l"), ("read", "r"), *((label, "r") for _, label in _DISPOSITIONS), ("ok", "l")])
    for f in summary["invariant"]["files"]:
        d = f["dispositions"]
        table.add_row(Text(f["file"]), f"{f['rows_read']:,}", *(f"{d.get(k, 0):,}" for k, _ in _DISPOSITIONS),
                      Text("✓", "green") if f["holds"] else Text("✗", "bold red"))
    return table


def _cohorts(summary: Mapping[str, Any]) -> Table:
    table = _table("Cohorts at the cut-over", [("cohort", "l"), ("patients", "r"), ("referrals", "r")])
    cohorts = summary["cohorts"]
    # reconciliation.json is written with sorted keys: restore the domain's order.
    for name, n in ordered_counts(cohorts["patients"], canonical.COHORTS).items():
        table.add_row(name, f"{n:,}", f"{cohorts['referrals'].get(name, 0):,}")
    return table


def _flags(summary: Mapping[str, Any]) -> Table:
    table = _table("Exceptions for clinical review", [("severity", "l"), ("flags", "r")])
    colours = {"critical": "bold red", "high": "yellow"}
    for name, n in ordered_counts(summary["flags"]["by_severity"], canonical.SEVERITIES).items():
        table.add_row(Text(name, colours.get(name, "default")), f"{n:,}")
    return table


def _declared(summary: Mapping[str, Any]) -> Table | None:
    dvf = summary.get("declared_vs_found")
    if not dvf:
        return None
    table = _table("Declared vs found (patients per list)",
                   [("list", "l"), ("declared", "r"), ("found", "r"), ("absent", "r"), ("extra", "r"),
                    ("unexplained", "r")])
    for entry in dvf["lists"]:
        absent, extra = entry["absent"], entry["extra"]
        table.add_row(Text(entry["list"]), f"{entry['declared']:,}", f"{entry['found']:,}",
                      "—" if absent is None else f"{len(absent):,}", "—" if extra is None else f"{len(extra):,}",
                      Text(f"{entry['unexplained']:+,}", "bold red") if entry["unexplained"] else "0")
    t = dvf["totals"]
    table.caption = Text(f"{t['found_entries']:,} list entries for {t['found_patients']:,} patients; "
                         f"{len(dvf['two_lists']['found']):,} on two lists. Declared by: {dvf['source']}")
    table.caption_justify = "left"
    return table


def _review(summary: Mapping[str, Any]) -> Table | None:
    """Review progress per severity and family: raised, decided, outstanding (critical first)."""
    review = summary.get("review") or {}
    if not review.get("available"):
        return None
    table = _table(f"Clinical review: {review['outstanding']:,} of {review['raised']:,} outstanding",
                   [("severity", "l"), ("family", "l"), ("raised", "r"), ("decided", "r"), ("outstanding", "r")])
    for row in review["by_family"]:
        alert = row["severity"] == "critical" and row["outstanding"]
        table.add_row(f"[red]{row['severity']}[/]" if alert else row["severity"], row["family"], f"{row['raised']:,}",
                      f"{row['decided']:,}", f"[red]{row['outstanding']:,}[/]" if alert else f"{row['outstanding']:,}")
    d = review.get("decisions") or {}
    if d.get("rows"):
        table.caption = (f"decisions: {d['applied']:,} applied, {d['rejected']:,} rejected, "
                         f"{d['superseded']:,} superseded (decisions.parquet)")
    return table


def _outputs(summary: Mapping[str, Any]) -> Table:
    table = _table("Reports written", [("file", "l")])
    for path in summary.get("report_files", []):
        table.add_row(Text(path))
    return table


def summary_renderables(summary: Mapping[str, Any]) -> list[RenderableType]:
    """The terminal summary (see the module docstring); each renderable fits 100 columns."""
    out: list[RenderableType] = [verdict(summary), _files(summary)]
    if summary.get("cohorts"):
        out += [_cohorts(summary), _flags(summary)]
    review = _review(summary)
    if review is not None:
        out.append(review)
    declared = _declared(summary)
    if declared is not None:
        out.append(declared)
    out.append(_outputs(summary))
    return out
