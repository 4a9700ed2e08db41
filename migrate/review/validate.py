"""Each decision row judged against this batch: ``applied``, ``rejected`` (with the reason) or
``superseded``.

``validate(rows, items, subjects, vocabulary)``: ``rows`` are the decision rows of the
``--decisions`` files (``origin`` file) and the previous run's applied decisions
(``origin`` previous, ``--previous``); ``items`` this batch's exceptions with their
evidence fingerprint (``evidence.items``); ``subjects`` every patient and referral key
of the batch. Every row comes out exactly once, in ``DECISIONS_SCHEMA``.

A file row is **rejected** (``REASONS``) when it has no decision; its subject is not in
the batch (``subject_not_found``) or is but the flag is not raised on it
(``flag_not_raised``); its decision is not one the pack allows for the flag
(``unknown_decision``); the reviewer or the date is missing or the date is not a date;
the pack requires a note and there is none (``missing_note``); it carries no evidence id
(``evidence_unknown``); another row decides the same item differently
(``conflicting_decisions``); or the decision needs a second reviewer and has none. A row
is **superseded** when the evidence it saw is not the evidence now (``evidence_changed``:
the item returns for review), when the same decision is recorded again (the latest
applies), or — a previous run's decision — when a new decision replaces it or its flag is
no longer raised. Otherwise it is **applied**: one applied decision per item at most.
A rejected or superseded row changes nothing.
"""

from __future__ import annotations

import difflib
import hashlib
import re
from collections.abc import Collection
from datetime import date, datetime
from typing import Any

import polars as pl

from migrate.review.vocabulary import ReviewVocabulary, normalise

STATUSES = ("applied", "rejected", "superseded")
REASONS: dict[str, str] = {
    "missing_decision": "no decision: the Decision column is empty",
    "subject_not_found": "subject not found: no patient or referral {subject_key} in this batch",
    "flag_not_raised": "flag no longer raised: {flag_code} is not raised on {subject_key} in this batch",
    "unknown_decision": "unknown decision '{decision}' for {flag_code}: use one of {allowed}",
    "missing_reviewer": "missing reviewer: the Reviewer column is empty",
    "missing_date": "missing date: the Date column is empty",
    "invalid_date": "invalid date '{date}': write the date as dd/mm/yyyy",
    "missing_note": "missing note: a note is required for {decision} (state the basis)",
    "evidence_unknown": "evidence not identified: the Evidence id column is empty (keep the worklist's columns)",
    "conflicting_decisions": "conflicting decisions: other rows decide {flag_code} on {subject_key} differently "
                             "({others})",
    "second_reviewer_required": "second reviewer required for {decision}: add a Second reviewer (another person)",
    "evidence_changed": "evidence changed since the decision was made: the item returns for review",
    "recorded_again": "the same decision is recorded again; the latest applies ({winner})",
    "replaced": "replaced by a newer decision on the same item ({winner})",
}
DECISIONS_SCHEMA: dict[str, pl.DataType] = {
    "decision_id": pl.String(), "origin": pl.String(), "source_file": pl.String(), "source_sheet": pl.String(),
    "source_row": pl.Int64(), "source_sha256": pl.String(), "flag_code": pl.String(), "rule_id": pl.String(),
    "subject_type": pl.String(), "subject_key": pl.String(), "patient_key": pl.String(), "family": pl.String(),
    "severity": pl.String(), "decision": pl.String(), "effect": pl.String(), "effect_to": pl.String(),
    "reviewer": pl.String(), "second_reviewer": pl.String(), "decided_on": pl.Date(), "note": pl.String(),
    "evidence_id": pl.String(), "status": pl.String(), "reason_code": pl.String(), "reason": pl.String(),
}
_DAY_FIRST = re.compile(r"^(\d{1,2})[/.\-](\d{1,2})[/.\-](\d{2}|\d{4})$")


def parse_date(text: str | None) -> date | None:
    """A reviewer's date: ISO (a real spreadsheet date arrives so), or dd/mm/yyyy (UK order;
    two-digit years are 20yy). None when it is not a date."""
    if not text:
        return None
    try:
        return date.fromisoformat(text[:10])
    except ValueError:
        pass
    found = _DAY_FIRST.match(text.strip())
    if not found:
        return None
    day, month, year = (int(g) for g in found.groups())
    try:
        return date(year + 2000 if year < 100 else year, month, day)
    except ValueError:
        return None


def decision_id(source_sha256: str, sheet: str | None, row: int) -> str:
    """A file row's stable id: the file's content and the row's place in it."""
    return hashlib.sha256(f"{source_sha256}|{sheet or ''}|{row}".encode()).hexdigest()[:16]


def _reject(row: dict[str, Any], code: str, status: str = "rejected", **extra: Any) -> None:
    row["status"], row["reason_code"] = status, code
    values = {k: ("" if v is None else v) for k, v in row.items()} | extra
    row["reason"] = REASONS[code].format(**values)


def _check(row: dict[str, Any], items: dict[tuple[str, str], dict[str, Any]], subjects: Collection[str],
           vocabulary: ReviewVocabulary) -> None:
    """Fill the item's columns and reject the row for the first problem it has (file rows)."""
    flag, subject = row["flag_code"] or "", row["subject_key"] or ""
    item = items.get((flag, subject))
    if item is not None:
        row.update({k: item[k] for k in ("rule_id", "subject_type", "patient_key", "severity")})
    row["family"] = vocabulary.family_of(flag)
    typed = row["decision"]
    if not typed:
        return _reject(row, "missing_decision")
    if item is None:
        known = all(k in subjects for k in subject.split("+")) if subject else False
        return _reject(row, "flag_not_raised" if known else "subject_not_found")
    allowed = vocabulary.allowed(flag)
    name = normalise(typed)
    if name not in allowed:
        close = difflib.get_close_matches(name, list(allowed), n=1)
        hint = f" (did you mean {close[0]}?)" if close else ""
        return _reject(row, "unknown_decision", allowed=", ".join(allowed) + hint)
    decision = allowed[name]
    row.update({"decision": name, "effect": decision.effect, "effect_to": decision.to})
    if not row["reviewer"]:
        return _reject(row, "missing_reviewer")
    if not row["date"]:
        return _reject(row, "missing_date")
    if row["decided_on"] is None:
        return _reject(row, "invalid_date")
    if decision.note_required and not row["note"]:
        return _reject(row, "missing_note")
    if not row["evidence_id"]:
        return _reject(row, "evidence_unknown")
    if row["evidence_id"] != item["evidence_id"]:
        return _reject(row, "evidence_changed", status="superseded")
    return None


def _resolve(group: list[dict[str, Any]], vocabulary: ReviewVocabulary) -> None:
    """One item's rows that passed their own checks: at most one applied."""
    fresh = [r for r in group if r["origin"] == "file"]
    carried = [r for r in group if r["origin"] == "previous"]
    if fresh:
        choices = sorted({r["decision"] for r in fresh})
        if len(choices) > 1:
            for r in fresh:
                _reject(r, "conflicting_decisions", others=", ".join(c for c in choices if c != r["decision"]))
            fresh = []
        else:
            decision = vocabulary.allowed(group[0]["flag_code"])[choices[0]]
            people = {p.strip().casefold() for r in fresh for p in (r["reviewer"], r["second_reviewer"]) if p}
            if decision.second_reviewer and len(people) < 2:
                for r in fresh:
                    _reject(r, "second_reviewer_required")
                fresh = []
    if fresh:
        # The latest decision applies (by date, then by file and row order).
        winner = max(fresh, key=lambda r: (r["decided_on"], r["_order"]))
        for r in fresh:
            if r is not winner:
                _reject(r, "recorded_again", status="superseded", winner=_where(winner))
        for r in carried:
            _reject(r, "replaced", status="superseded", winner=_where(winner))
        winner["status"] = "applied"
    else:
        for r in carried:
            r["status"] = "applied"  # still binds: same subject, flag and evidence


def _where(row: dict[str, Any]) -> str:
    sheet = f"{row['source_sheet']} " if row.get("source_sheet") else ""
    return f"{row['source_file']} {sheet}row {row['source_row']}"


def validate(rows: pl.DataFrame, items: pl.DataFrame, subjects: Collection[str],
             vocabulary: ReviewVocabulary) -> pl.DataFrame:
    """Every decision row with its status (module docstring), in ``DECISIONS_SCHEMA``, sorted.

    ``rows``: ``files.DECISION_ROW_SCHEMA`` plus ``origin`` and ``source_sha256`` (file
    rows), or ``DECISIONS_SCHEMA`` rows (a previous run's applied decisions);
    ``items``: flag_code, subject_key, rule_id, subject_type, patient_key, severity, evidence_id.
    """
    by_item = {(r["flag_code"], r["subject_key"]): r for r in items.iter_rows(named=True)}
    out: list[dict[str, Any]] = []
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for order, raw in enumerate(rows.iter_rows(named=True)):
        row: dict[str, Any] = {c: raw.get(c) for c in DECISIONS_SCHEMA} | {"_order": order}
        if raw.get("origin") == "previous":
            row["status"] = row["reason_code"] = row["reason"] = None
            item = by_item.get((row["flag_code"], row["subject_key"]))
            if item is None:
                _reject(row, "flag_not_raised", status="superseded")
            elif item["evidence_id"] != row["evidence_id"]:
                _reject(row, "evidence_changed", status="superseded")
        else:
            row["origin"] = "file"
            row["date"] = raw.get("date")
            row["decided_on"] = parse_date(raw.get("date"))
            row["decision_id"] = decision_id(raw["source_sha256"], raw.get("source_sheet"), raw["source_row"])
            _check(row, by_item, subjects, vocabulary)
        out.append(row)
        if row.get("status") is None:
            groups.setdefault((row["flag_code"], row["subject_key"]), []).append(row)
    for group in groups.values():
        _resolve(group, vocabulary)
    frame = pl.DataFrame([{k: r.get(k) for k in DECISIONS_SCHEMA} for r in out], schema=DECISIONS_SCHEMA)
    return frame.sort("origin", "source_file", "source_sheet", "source_row", "decision_id", nulls_last=True)
