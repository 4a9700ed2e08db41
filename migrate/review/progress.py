"""Review progress: per flag family and severity, how many items were raised, how many are
decided and how many are outstanding — reconciliation.json's ``review`` section, which the
HTML report opens with (outstanding critical items first) and the terminal summary shows.

Read from the run folder (``review.parquet``: every raised item with its state;
``decisions.parquet``: every decision row with its status), so a re-render gives the same
figures. ``outstanding_critical`` lists the critical items nobody has decided, by subject
(``subject_ids``: the pseudonymised pack tokenises them as it does every ``*_ids``).
"""

from __future__ import annotations

from typing import Any

import polars as pl

from migrate import canonical
from migrate.reports.rundata import RunFolder
from migrate.review.outreach import outreach_count
from migrate.review.validate import STATUSES

REVIEW = "review.parquet"
DECISIONS = "decisions.parquet"


def review_progress(run: RunFolder) -> dict[str, Any]:
    """The ``review`` section (module docstring); ``{"available": False}`` for a run made
    before the review loop (no ``review.parquet``)."""
    if not run.has(REVIEW):
        return {"available": False}
    # memory: grows with the flags: every review item (one per raised flag), five short columns
    items = run.scan(REVIEW).select("family", "severity", "flag_code", "subject_key", "state").collect()
    decided = pl.col("state") == "decided"
    order = {s: i for i, s in enumerate(canonical.SEVERITIES)}
    per = (items.group_by("family", "severity")
           .agg(pl.len().alias("raised"), decided.sum().alias("decided"))
           .with_columns((pl.col("raised") - pl.col("decided")).alias("outstanding"),
                         pl.col("severity").replace_strict(order, default=len(order), return_dtype=pl.Int64)
                         .alias("_rank"))
           .sort("_rank", "family").drop("_rank"))
    critical = (items.filter((pl.col("severity") == "critical") & ~decided)
                .sort("flag_code", "subject_key")
                .select("flag_code", "family", pl.col("subject_key").str.split("+").alias("subject_ids")))
    out: dict[str, Any] = {
        "available": True,
        "raised": items.height,
        "decided": int(items.filter(decided).height),
        "outstanding": int(items.filter(~decided).height),
        "by_family": [{k: (int(v) if isinstance(v, int) else v) for k, v in r.items()}
                      for r in per.iter_rows(named=True)],
        "outstanding_critical": critical.to_dicts(),
        "decisions": _decisions(run),
        "files": list(run.manifest.get("decisions") or []),
        # Patients in active care whose block stands: the identifiable call list (reports/outreach.xlsx).
        "outreach": outreach_count(run),
    }
    return out


def _decisions(run: RunFolder) -> dict[str, Any]:
    """Decision rows by status and reason (rejected and superseded ones say why)."""
    counts: dict[str, Any] = {"rows": 0, **{s: 0 for s in STATUSES}, "reasons": []}
    if not run.has(DECISIONS):
        return counts
    # memory: the decision rows (reviewers' rows: few)
    rows = run.scan(DECISIONS).select("status", "reason_code").collect()
    counts["rows"] = rows.height
    for status, n in rows.group_by("status").len().iter_rows():
        counts[str(status)] = int(n)
    reasons = rows.filter(pl.col("reason_code").is_not_null()).group_by("status", "reason_code").len().sort(
        "status", "reason_code")
    counts["reasons"] = [{"status": s, "reason_code": c, "rows": int(n), "means": str(c).replace("_", " ")}
                         for s, c, n in reasons.iter_rows()]
    return counts
