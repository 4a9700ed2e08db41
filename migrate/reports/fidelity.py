"""The FHIR fidelity checks in the reports: the round trip and the target reconciliation.

Both are computed elsewhere and stored in the run folder (``reports/roundtrip.json`` by
``migrate.fhir.roundtrip``, ``reports/target.json`` by ``migrate.target``); the reports
read them back — one fact, one place — into ``reconciliation.json`` (keys ``roundtrip``
and ``target``, absent when the check has not run) and the HTML, and a failing check
becomes a line of the verdict banner (``holds`` false, exit 1 from ``handover report``).
"""

from __future__ import annotations

from typing import Any

from migrate.reports.rundata import RunFolder, read_json
from migrate.summary import Verdict

ROUNDTRIP = "reports/roundtrip.json"
TARGET = "reports/target.json"
TARGET_EXAMPLES = 20


def sections(run: RunFolder) -> dict[str, Any]:
    """``roundtrip`` and ``target`` sections for the summary (only those the run has)."""
    out: dict[str, Any] = {}
    if run.has(ROUNDTRIP):
        data = read_json(run.path / ROUNDTRIP)
        out["roundtrip"] = {k: data.get(k) for k in ("fields_compared", "mismatches", "holds", "status", "records",
                                                       "fields", "not_carried", "mismatched_fields")
                            if k in data}
    if run.has(TARGET):
        data = read_json(run.path / TARGET)
        section = {k: v for k, v in data.items() if k != "patients"}
        section["patients"] = list(data.get("patients", []))[:TARGET_EXAMPLES]
        out["target"] = section
    return out


def failures(extra: dict[str, Any]) -> list[str]:
    """One banner line per failing check."""
    lines = []
    roundtrip = extra.get("roundtrip")
    if roundtrip and roundtrip.get("holds") is False:
        fields = ", ".join(roundtrip.get("mismatched_fields") or [])
        lines.append(f"Round trip: {roundtrip['mismatches']:,} of {roundtrip['fields_compared']:,} fields compared "
                     f"differ from the source ({fields})")
    target = extra.get("target")
    if target and target.get("holds") is False:
        totals = target.get("totals", {})
        lines.append(f"Target: {totals.get('missing', 0):,} resources missing and {totals.get('changed', 0):,} "
                     f"changed at the receiving system")
    return lines


def with_checks(verdict: Verdict, extra: dict[str, Any]) -> Verdict:
    """``verdict`` (``holds``, ``failures``) with the fidelity checks' failures added."""
    more = failures(extra)
    return {"holds": bool(verdict["holds"]) and not more, "failures": [*verdict["failures"], *more]}
