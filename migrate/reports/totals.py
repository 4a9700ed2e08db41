"""Control totals of a run, computed from its folder: every stage's counts, per file.

``run_counts`` computes the run's headline figures (invariant 1, quarantine, tables,
cohorts, flags) from the files themselves, so a report re-rendered after someone edited
``lineage.parquet`` shows the damage. ``control_totals`` adds the stage-by-stage view an
audit panel follows: rows read, quarantined by reason, mapped, each disposition, FHIR
resources per type, and exceptions per flag and severity.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import polars as pl

from migrate import canonical
from migrate.reconcile import FileCount, quarantine_summary, rows_invariant
from migrate.reports.rundata import CANONICAL_TABLES, RunFolder
from migrate.summary import RowsInvariant

# Stages in the order a source row meets them; each disposition is a final stage.
STAGES: tuple[tuple[str, str], ...] = (
    ("read", "data rows read from the input files"),
    ("quarantined", "rows rejected by the mapping or integrity checks (kept in quarantine.parquet)"),
    ("mapped", "rows in canonical/*.parquet"),
    ("merged", "patient rows merged into a surviving duplicate"),
    ("already_at_target", "patient rows the new provider already holds (updated, not created)"),
    ("out_of_scope", "rows with nothing active to hand over (closed, rejected, PIFU expired)"),
    ("withheld", "clinical rows withheld under the sharing policy"),
    ("migrated", "rows handed over"),
)


def ordered_counts(values: Mapping[str, int], order: Iterable[str]) -> dict[str, int]:
    """Counts in the listed order (zeros included), then any other key alphabetically."""
    order = tuple(order)
    return {k: int(values.get(k, 0)) for k in order} | {k: int(v) for k, v in sorted(values.items()) if k not in order}


def count_by(frame: pl.LazyFrame, column: str, order: Iterable[str] = ()) -> dict[str, int]:
    """Rows per value of ``column`` (as text; null counted under "none")."""
    # memory: one row per distinct value (callers count small vocabularies: cohort, severity, flag code)
    found = frame.group_by(pl.col(column).cast(pl.String).fill_null("none")).agg(pl.len()).collect()
    return ordered_counts({str(k): int(n) for k, n in found.iter_rows()}, order)


def file_counts(run: RunFolder) -> list[FileCount]:
    """Rows read per input file, as the manifest recorded them from the readers."""
    return [FileCount(str(f["path"]), str(f["table"]), int(f["rows"])) for f in run.inputs()]


def run_counts(run: RunFolder, invariant: RowsInvariant | None = None) -> dict[str, Any]:
    """Invariant 1, quarantine, tables, cohorts and flags of ``run``, from its files.

    ``invariant``: invariant 1 when the caller has just computed it over this folder's
    lineage (the pipeline does, once); otherwise it is computed here.
    """
    # memory: held: quarantine is the rows set aside (thousands; a wholly bad file is the worst case),
    # counted several ways below.
    quarantine = run.scan("quarantine.parquet").collect()
    exceptions = run.scan("exceptions.parquet")
    if invariant is None:
        invariant = rows_invariant(run.scan("lineage.parquet"), file_counts(run))
    return {
        "invariant": invariant,
        "quarantine": quarantine_summary(quarantine),
        "tables": {t: run.height(f"canonical/{t}.parquet") for t in CANONICAL_TABLES},
        "cohorts": {
            "referrals": count_by(run.scan("cohorts.parquet"), "cohort", canonical.COHORTS),
            "patients": count_by(run.scan("patients.parquet"), "patient_cohort", canonical.COHORTS),
        },
        "flags": {
            "by_severity": count_by(exceptions, "severity", canonical.SEVERITIES),
            "by_code": count_by(exceptions, "flag_code"),
        },
    }


def _canonical_rows_per_file(run: RunFolder) -> dict[str, int]:
    parts = [run.canonical(t).select("source_file") for t in CANONICAL_TABLES]
    # memory: one row per source file
    rows = pl.concat(parts).group_by("source_file").agg(pl.len()).collect(engine="streaming")
    return {str(f): int(n) for f, n in rows.iter_rows()}


def control_totals(run: RunFolder, keys: Mapping[str, Any], family_of: Mapping[str, str],
                   fhir: Mapping[str, Any]) -> dict[str, Any]:
    """Every stage's totals: per file, for the whole run, per cohort list, FHIR type and flag.

    ``keys`` is the output of ``run_counts``; ``family_of`` maps flag codes to the
    worklist families (codes it does not list fall in "other"); ``fhir`` is the resource
    count of ``invariants.fhir_output``.
    """
    inv = keys["invariant"]
    by_reason: dict[str, dict[str, int]] = {}
    for q in keys["quarantine"]:
        by_reason.setdefault(q["file"], {})[q["reason_code"]] = by_reason.get(q["file"], {}).get(
            q["reason_code"], 0) + int(q["rows"])
    mapped = _canonical_rows_per_file(run)
    files = []
    for f in inv["files"]:
        quarantined = by_reason.get(f["file"], {})
        files.append({
            "file": f["file"], "table": f["table"], "rows_read": f["rows_read"],
            "quarantined": {"total": sum(quarantined.values()), "by_reason": dict(sorted(quarantined.items()))},
            "mapped": mapped.get(f["file"], 0),
            # Mapping keeps or quarantines each row: read = mapped + quarantined, per file.
            "read_equals_mapped_plus_quarantined": f["rows_read"] == mapped.get(f["file"], 0)
            + sum(quarantined.values()),
            "dispositions": dict(f["dispositions"]),
        })
    read = int(inv["rows_read"])
    totals = {"read": read, "quarantined": sum(f["quarantined"]["total"] for f in files),
              "mapped": sum(f["mapped"] for f in files)} | {d: int(n) for d, n in inv["dispositions"].items()
                                                            if d != "quarantined"}
    stages = [{"stage": s, "rows": totals.get(s, 0), "meaning": meaning} for s, meaning in STAGES]

    # memory: one row per list and cohort
    lists = (
        run.scan("cohorts.parquet")
        .group_by(pl.col("transfer_list").cast(pl.String).fill_null("none"), pl.col("cohort").cast(pl.String))
        .agg(pl.len()).collect()
    )
    crosstab: dict[str, dict[str, int]] = {}
    for label, cohort, n in lists.iter_rows():
        crosstab.setdefault(str(label), {})[str(cohort)] = int(n)
    transfer_lists = {label: ordered_counts(crosstab.get(label, {}), canonical.COHORTS)
                      for label in (*canonical.TRANSFER_LIST, "none") if label in crosstab}

    # memory: one row per flag code and severity
    exc = run.scan("exceptions.parquet").group_by(pl.col("flag_code"), pl.col("severity").cast(pl.String)).agg(
        pl.len()).collect()
    by_code: dict[str, dict[str, int]] = {}
    for code, severity, n in exc.sort("flag_code", "severity").iter_rows():
        by_code.setdefault(str(code), {})[str(severity)] = int(n)
    families: dict[str, dict[str, int]] = {}
    for code, severities in by_code.items():
        fam = families.setdefault(family_of.get(code, "other"), {})
        for severity, n in severities.items():
            fam[severity] = fam.get(severity, 0) + n
    return {
        "files": files,
        "stages": stages,
        "transfer_lists_by_cohort": transfer_lists,
        "fhir": dict(fhir),
        "exceptions": {
            "by_code": {c: ordered_counts(s, canonical.SEVERITIES) | {"total": sum(s.values())}
                        for c, s in by_code.items()},
            "by_family": {f: ordered_counts(s, canonical.SEVERITIES) | {"total": sum(s.values())}
                          for f, s in sorted(families.items())},
        },
    }
