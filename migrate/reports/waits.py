"""Waiting times of the handed-over caseload, by service line.

Two measures per service line, over referrals still open at the cut-over (cohorts
backlog, transition, pifu, pifu_expired):

- ``seen``: days from ``received_date`` to the first attended contact on or before the
  cut-over (attended = CSDS 5 or 6; e-RS dummy slots are not attendances);
- ``waiting``: for referrals not yet seen at the cut-over, days from ``received_date`` to
  the cut-over.

Each is summarised as count, 5th, 25th, 50th, 75th, 95th percentile and maximum; the
chart draws the box (quartiles) with whiskers at the 5th and 95th percentiles, from these
summaries alone, so a million referrals cost one group_by, not a million points.
"""

from __future__ import annotations

from typing import Any

import polars as pl

from migrate.matching import in_codelist
from migrate.reports.rundata import RunFolder
from migrate.reports.worklist import OPEN_COHORTS
from migrate.rules import RulePack

QUANTILES = (("p5", 0.05), ("q1", 0.25), ("median", 0.5), ("q3", 0.75), ("p95", 0.95))
MEASURES = ("seen", "waiting")
DEFINITION = {
    "population": "referrals open at the cut-over (cohort backlog, transition, pifu or pifu_expired)",
    "seen": "days from referral received to the first attended contact (CSDS 5 or 6, not an e-RS dummy slot) "
            "on or before the cut-over",
    "waiting": "days from referral received to the cut-over, for referrals with no attended contact by then",
    "whiskers": "5th and 95th percentiles",
}


def dummy_slot_names(pack: RulePack) -> tuple[str, ...]:
    """e-RS dummy slot names of ``pack`` in matching form (the run's own pack, from its
    ``config/rules.yaml``)."""
    return pack.keys("dummy_slot_names")


def _summary(days: pl.Expr) -> list[pl.Expr]:
    return [days.count().alias("n"), *(days.quantile(q, "nearest").alias(name) for name, q in QUANTILES),
            days.max().alias("max")]


def waits(run: RunFolder, dummy_slots: tuple[str, ...]) -> dict[str, Any]:
    """Per service line, the ``seen`` and ``waiting`` summaries (see the module docstring);
    ``dummy_slots``: the run pack's e-RS dummy slot names (``dummy_slot_names``)."""
    cutover = run.cutover
    dummy = list(dummy_slots)
    day = pl.col("contact_datetime").dt.date()
    first_seen = (
        run.canonical("contacts")
        .filter((pl.col("attendance").cast(pl.String) == "attended") & (day <= cutover)
                & ~in_codelist(pl.col("slot_name"), dummy))
        .group_by("referral_key").agg(day.min().alias("first_seen"))
    )
    open_refs = (
        run.canonical("referrals").select("referral_key", "received_date",
                                          pl.col("service_line").fill_null("(not recorded)"))
        .join(run.scan("cohorts.parquet").filter(pl.col("cohort").cast(pl.String).is_in(OPEN_COHORTS))
              .select("referral_key"), on="referral_key", how="semi")
        .join(first_seen, on="referral_key", how="left")
        .with_columns(
            pl.when(pl.col("first_seen").is_not_null())
            .then((pl.col("first_seen") - pl.col("received_date")).dt.total_days()).alias("seen"),
            pl.when(pl.col("first_seen").is_null())
            .then((pl.lit(cutover) - pl.col("received_date")).dt.total_days()).alias("waiting"),
        ).select("service_line", *MEASURES)
        # memory: three columns of the open referrals (~1.5M rows at 1M patients, ~40 MB),
        # held so the contacts are read once for both measures, not once per measure.
        .collect(engine="streaming")
    )
    rows: list[dict[str, Any]] = []
    for measure in MEASURES:
        stats = open_refs.filter(pl.col(measure).is_not_null()).group_by("service_line").agg(
            _summary(pl.col(measure))).sort("service_line")
        for r in stats.iter_rows(named=True):
            rows.append({"service_line": r["service_line"], "measure": measure,
                         **{k: int(v) for k, v in r.items() if k != "service_line" and v is not None}})
    lines = sorted({r["service_line"] for r in rows})
    by_line = {line: {m: next((r for r in rows if r["service_line"] == line and r["measure"] == m), None)
                      for m in MEASURES} for line in lines}
    return {
        "definition": DEFINITION,
        "service_lines": [
            {"service_line": line, **{m: _strip(by_line[line][m]) for m in MEASURES}} for line in lines
        ],
    }


def _strip(row: dict[str, Any] | None) -> dict[str, int] | None:
    return None if row is None else {k: v for k, v in row.items() if k not in ("service_line", "measure")}
