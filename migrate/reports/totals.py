"""Control totals of a run, recomputed from its folder: every stage's counts, per file.

``pipeline_keys`` recomputes what ``run_batch`` wrote into ``reconciliation.json``
(invariant, quarantine, tables, cohorts, flags) from the files themselves, so a report
re-rendered after someone edited ``lineage.parquet`` shows the damage instead of
repeating the pipeline's earlier verdict. ``control_totals`` adds the stage-by-stage view
an audit panel follows: rows read, quarantined by reason, mapped, each disposition,
FHIR resources per type, and exceptions per flag and severity.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
import polars as pl

from migrate import canonical
from migrate.reconcile import FileCount, invariant, quarantine_summary
from migrate.reports.rundata import CANONICAL_TABLES, RunFolder

_ROWS = 1 << 40  # source rows per file the packing holds
_CODES = canonical.DISPOSITIONS  # the Enum of lineage's disposition: 6 codes, 3 bits

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
    found = frame.group_by(pl.col(column).cast(pl.String).fill_null("none")).agg(pl.len()).collect()
    return ordered_counts({str(k): int(n) for k, n in found.iter_rows()}, order)


def file_counts(run: RunFolder) -> list[FileCount]:
    """Rows read per input file, as the manifest recorded them from the readers."""
    return [FileCount(str(f["path"]), str(f["table"]), int(f["rows"])) for f in run.inputs()]


def rows_invariant(run: RunFolder) -> dict[str, Any]:
    """Invariant 1 (rows read = Σ dispositions, per file, no source row twice) from
    lineage.parquet and the rows read that the manifest recorded; so an edited lineage
    breaks it here. Same result as ``migrate.reconcile.invariant`` (a test holds them equal).

    ``invariant`` counts distinct (file, row, disposition) triples with polars group_bys of
    one group per source row: 2-3 GB at a million patients, whose lineage has a row per
    FHIR resource. Here each triple is packed into one integer (file index, row, disposition
    code), the integers sorted with numpy, and triples and rows with several dispositions
    counted from neighbours: 0.75 GB peak (against 1.8 GB) for the same 18 million rows.
    """
    scan = run.scan("lineage.parquet").select("source_file", "source_row", "disposition")
    lineage = scan.select(pl.col("source_file").cast(pl.String), "source_row", pl.col("disposition").cast(pl.String))
    names = sorted(str(f) for f in lineage.select(pl.col("source_file").unique()).collect(engine="streaming")
                   .to_series().drop_nulls().to_list())
    bounds = lineage.select(pl.col("source_row").min().alias("lo"), pl.col("source_row").max().alias("hi"),
                            pl.col("source_row").null_count().alias("nulls"), pl.col("source_file").null_count()
                            .alias("files")).collect().row(0, named=True)
    packable = scan.collect_schema()["disposition"] == pl.Enum(_CODES) and not bounds["nulls"] \
        and not bounds["files"] and (bounds["lo"] is None or (bounds["lo"] >= 0 and bounds["hi"] < _ROWS))
    if not packable:  # never so as the pipeline writes lineage: the reference way
        return invariant(lineage.collect(), file_counts(run))
    codes = {d: i for i, d in enumerate(_CODES)}
    # Enum codes, not string look-ups: the packing then streams in about 0.25 GB at 1M patients.
    packed = scan.select(
        (pl.col("source_file").cast(pl.Enum(names)).to_physical().cast(pl.Int64) * _ROWS * 8
         + pl.col("source_row") * 8 + pl.col("disposition").to_physical().cast(pl.Int64)).alias("k")
    ).collect(engine="streaming").to_series().to_numpy()
    keys = np.sort(packed)
    del packed
    distinct = np.ones(len(keys), dtype=bool)
    distinct[1:] = keys[1:] != keys[:-1]
    triples = keys[distinct]
    del keys, distinct
    file_of = triples // (_ROWS * 8)
    per_code = np.bincount(file_of * 8 + triples % 8, minlength=len(names) * 8).reshape(len(names), 8)
    row_of = triples // 8
    same = row_of[1:] == row_of[:-1]  # a row's second (third, ...) disposition
    first_repeat = same & ~np.concatenate(([False], same[:-1])) if len(same) else same
    repeated = np.bincount(file_of[1:][first_repeat], minlength=len(names))
    repeats = {name: int(repeated[i]) for i, name in enumerate(names)}
    counts = pl.DataFrame(
        [(name, d, int(per_code[i, c])) for i, name in enumerate(names) for d, c in codes.items() if per_code[i, c]],
        schema={"source_file": pl.String, "disposition": pl.String, "n": pl.Int64}, orient="row")
    found: dict[str, dict[str, int]] = {}
    for name, disposition, n in counts.iter_rows():
        found.setdefault(str(name), {})[str(disposition)] = int(n)

    def row(name: str, table: str | None, read: int, known: bool) -> dict[str, Any]:
        dispositions = {d: found.get(name, {}).get(d, 0) for d in canonical.DISPOSITIONS}
        total = sum(dispositions.values())
        return {"file": name, "table": table, "rows_read": read, "dispositions": dispositions, "total": total,
                "rows_with_several_dispositions": repeats.get(name, 0),
                "holds": known and total == read and repeats.get(name, 0) == 0}

    files = sorted(file_counts(run), key=lambda f: f.name)
    rows = [row(f.name, f.table, f.rows_read, True) for f in files]
    # Lineage rows from a file nobody read fail the invariant.
    rows += [row(name, None, 0, False) for name in sorted(set(found) - {f.name for f in files})]
    return {
        "holds": all(r["holds"] for r in rows),
        "files": rows,
        "rows_read": sum(r["rows_read"] for r in rows),
        "dispositions": {d: sum(r["dispositions"][d] for r in rows) for d in canonical.DISPOSITIONS},
    }


def pipeline_keys(run: RunFolder) -> dict[str, Any]:
    """The keys ``run_batch`` writes into reconciliation.json, recomputed from the run folder."""
    quarantine = run.scan("quarantine.parquet").collect()
    exceptions = run.scan("exceptions.parquet")
    return {
        "invariant": rows_invariant(run),
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
    rows = pl.concat(parts).group_by("source_file").agg(pl.len()).collect(engine="streaming")
    return {str(f): int(n) for f, n in rows.iter_rows()}


def control_totals(run: RunFolder, keys: Mapping[str, Any], family_of: Mapping[str, str],
                   fhir: Mapping[str, Any]) -> dict[str, Any]:
    """Every stage's totals: per file, for the whole run, per cohort list, FHIR type and flag.

    ``keys`` is the output of ``pipeline_keys``; ``family_of`` maps flag codes to the
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
