"""A patient's story (``migrate.reports.story``) for people: rich renderables and one HTML page.

``story_renderables`` gives the terminal view of ``handover explain`` (fits 100 columns);
``render_story_html`` the self-contained page of ``--html`` (inline CSS, no scripts,
nothing fetched). ``check_destination`` refuses, before anything is computed, to write a
page into the run folder (``handover verify`` would then fail) or a page with identifiers
into a pseudonymised pack.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from rich.console import RenderableType
from rich.table import Table
from rich.text import Text

from migrate.errors import ConfigError
from migrate.outputs import write_text
from migrate.reports import html

TEMPLATE = "explain.html.j2"
PACK_MARKER = "pseudonymisation.json"  # written into every pseudonymised pack


def check_destination(page: Path, run_dir: Path, tokenised: bool) -> None:
    """ConfigError (exit 2) unless ``page`` may be written: outside the run folder, and into a
    pseudonymised pack only when the story is tokenised."""
    target = page.resolve()
    if target.is_relative_to(run_dir.resolve()):
        raise ConfigError(f"{page}: write the page outside the run folder {run_dir} "
                          "(files added to a run fail handover verify)")
    if not tokenised and any((folder / PACK_MARKER).is_file() for folder in target.parents):
        raise ConfigError(f"{page}: that folder is a pseudonymised pack and this page would name the patient; "
                          "give --key-file to tokenise it")


def _table(title: str, *columns: str) -> Table:
    table = Table(title=title, title_justify="left")
    for name in columns:
        table.add_column(name, overflow="fold")
    return table


def _text(value: Any) -> str:
    if value is None:
        return "—"
    if isinstance(value, list):
        return ", ".join(str(v) for v in value) or "—"
    return str(value)


def story_renderables(story: Mapping[str, Any]) -> list[RenderableType]:
    """The story in sections, as rich renderables."""
    head = Text()
    head.append(f"Patient {_text(story['query'])} in run {story['run_id']} (cut-over {story['cutover_date']})\n",
                style="bold")
    head.append(story["summary"])
    out: list[RenderableType] = [head]
    patients = _table("Patient records", "patient", "local id", "NHS number", "valid", "survivor", "cohort",
                      "disposition", "flags", "source")
    for p in story["patients"]:
        patients.add_row(p["patient_key"], _text(p["source_patient_id"]), _text(p["nhs_number"]),
                         _text(p["nhs_number_valid"]), _text(p["survivor_key"]), _text(p["patient_cohort"]),
                         _text(p["disposition"]), _text(p["flag_codes"]), f"{p['source_file']} row {p['source_row']}")
    out.append(patients)
    rows = _table("Source rows", "file", "row", "table", "disposition", "FHIR resources")
    for r in story["source_rows"]:
        rows.add_row(r["source_file"], str(r["source_row"]), r["table"], r["disposition"],
                     ", ".join(x.split("/")[0] for x in r["resources"]) or "—")
    out.append(rows)
    if story["quarantined"]:
        q = _table("Quarantined rows naming them", "file", "row", "table", "reason", "message")
        for r in story["quarantined"]:
            q.add_row(r["source_file"], str(r["source_row"]), r["table"], r["reason_code"], _text(r["message"]))
        out.append(q)
    ident = story["identity"]
    if ident["merged"] or ident["candidate_pairs"] or ident["source_merges"]:
        i = _table("Identity", "what", "detail")
        for m in ident["merged"]:
            i.add_row("merged", f"{m['patient_key']} into {m['survivor_key']}")
        for m in ident["source_merges"]:
            i.add_row("merged by the source", f"{m['patient_key']} ({m['source_file']} row {m['source_row']})")
        for pair in ident["candidate_pairs"]:
            i.add_row(f"candidate pair ({pair['match_type']})",
                      f"{pair['patient_key_a']} + {pair['patient_key_b']}, score {pair['score']}")
        out.append(i)
    refs = _table("Referrals", "referral", "received", "priority", "list", "status", "cohort", "why")
    for r in story["referrals"]:
        held = [c for c in r["rule_path"] if c["held"]]
        path = (f"✓ {held[0]['value']} ({held[0]['condition']}); before it did not hold: "
                + (", ".join(c["value"] for c in r["rule_path"] if not c["held"]) or "—")) if held else ""
        refs.add_row(r["referral_key"], _text(r["received_date"]), _text(r["assigned_priority"]),
                     _text(r["transfer_list"]), _text(r["status"]), _text(r["cohort"]),
                     _text(r["cohort_reason"]) + (f"\nrule path: {path}" if path else ""))
    out.append(refs)
    flags = _table("Flags", "flag", "severity", "subject", "rule", "evidence", "action")
    for f in story["flags"]:
        flags.add_row(f["flag_code"], f["severity"], f"{f['subject_type']} {f['subject_key']}", f["rule_id"],
                      _text(f["evidence"]), _text(f["action"]))
    out.append(flags if story["flags"] else Text("Flags: none"))
    if story.get("sharing"):
        entries = _table("Sharing entries (the latest decides)", "source", "kind", "entry", "date", "where", "decides")
        for e in story["sharing"]:
            entries.add_row(e["source"], e["kind"], _text(e["label"]), _text(e["recorded_date"]),
                            f"{e['source_file']} row {e['source_row']}", "yes" if e["decides"] else "")
        out.append(entries)
    decisions = story["decisions"]
    out.append(Text(f"Decisions: {decisions['note']}"))
    if decisions.get("rows"):
        d = _table("Review decisions", "flag", "decision", "status", "by", "on", "note or reason")
        for row in decisions["rows"]:
            by = " and ".join(str(p) for p in (row.get("reviewer"), row.get("second_reviewer")) if p)
            d.add_row(f"{row.get('flag_code')} {row.get('subject_key')}", _text(row.get("decision")),
                      _text(row.get("status")), by, _text(row.get("decided_on")),
                      _text(row.get("reason") or row.get("note")))
        out.append(d)
    fhir = story["fhir"]
    emitted = _table("FHIR resources emitted", "type", "id")
    for r in fhir["emitted"]:
        emitted.add_row(r["fhir_type"], r["fhir_id"])
    out.append(emitted if fhir["emitted"] else Text("FHIR resources emitted: none"
                                                    + ("" if fhir["present"] else " (the run has no FHIR output)")))
    for name, title in (("withheld", "Withheld from FHIR"), ("not_emitted", "Out of scope: no FHIR resource")):
        if fhir[name]:
            t = _table(title, "file", "row", "table", "reason")
            for r in fhir[name]:
                t.add_row(r["source_file"], str(r["source_row"]), r["table"], r["reason"])
            out.append(t)
    out.append(Text(f"Rule pack: {story['rule_pack']}", style="dim"))
    return out


def render_story_html(story: Mapping[str, Any]) -> str:
    """The story as one self-contained page."""
    return html.environment().get_template(TEMPLATE).render(s=story)


def write_story_html(story: Mapping[str, Any], page: Path) -> Path:
    """Write the page (atomically) and return its path."""
    return write_text(render_story_html(story), page)
