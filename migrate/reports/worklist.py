"""Exception worklists for clinical leads: ``exceptions.xlsx`` (a sheet per flag family) and
``exceptions.csv`` (the same rows, flat).

Rows come from ``exceptions.parquet`` joined to the patient's NHS number and local id, the
referral's service line and cohort, and the days waiting at the cut-over. No free text
from the record (the referral's ``reason_text``) is ever included: the evidence column is
the rule's own text. Ordered by family, severity (critical first), then days waiting
(longest first), so the patient who most needs a call is at the top of each sheet.

Formula injection: a cell beginning with ``=``, ``+``, ``-``, ``@``, tab or carriage return
would run as a formula when the CSV is opened in a spreadsheet. Every such CSV cell is
prefixed with a single quote; in the XLSX every string is an inline string (never a
formula) and such cells also carry Excel's ``quotePrefix`` style, so editing them cannot
turn them into formulas either.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl
import yaml

from migrate import canonical
from migrate.errors import ConfigError
from migrate.outputs import write_atomic
from migrate.reports import xlsx
from migrate.reports.rundata import RunFolder
from migrate.resources import reports_dir
from migrate.yamltext import read_yaml

DANGEROUS_PREFIXES = ("=", "+", "-", "@", "\t", "\r")
_DANGEROUS = r"^[=+\-@\t\r]"
# Cohorts of a referral still open at the cut-over: its wait is counted.
OPEN_COHORTS = ("backlog", "transition", "pifu", "pifu_expired")
REVIEW_COLUMNS = ("reviewer", "decision", "date", "note")
OTHER_FAMILY = "other"
_SHEET_ROWS = 1_048_575  # Excel's row limit less the header


@dataclass(frozen=True)
class Layout:
    """The worklist layout of ``reports/exceptions.yaml``: families and columns."""

    families: dict[str, tuple[str, tuple[str, ...]]]  # family -> (sheet title, flag codes)
    columns: tuple[xlsx.Column, ...]

    def family_of(self) -> dict[str, str]:
        """Flag code -> family name."""
        return {code: name for name, (_, codes) in self.families.items() for code in codes}


def load_layout(path: Path | None = None) -> Layout:
    """Read the worklist layout (default: the shipped ``reports/exceptions.yaml``)."""
    path = path or reports_dir() / "exceptions.yaml"
    try:
        doc: Any = read_yaml(path.read_bytes())
        families = {str(name): (str(f["sheet"]), tuple(str(c) for c in f.get("flags") or ()))
                    for name, f in doc["families"].items()}
        columns = tuple(xlsx.Column(str(c["name"]), str(c["header"]), float(c["width"])) for c in doc["columns"])
    except (OSError, KeyError, TypeError, ValueError, AttributeError, yaml.YAMLError) as exc:
        raise ConfigError(f"{path}: not a valid worklist layout ({exc.__class__.__name__}: {exc})") from None
    families.setdefault(OTHER_FAMILY, ("Other", ()))
    return Layout(families, columns)


def _waits(run: RunFolder) -> tuple[pl.LazyFrame, pl.LazyFrame]:
    """Per open referral and per patient (their longest-waiting open referral): days waiting at T."""
    cutover = pl.lit(run.cutover, dtype=pl.Date)
    refs = (
        run.canonical("referrals").select("referral_key", "source_referral_id", "received_date", "service_line")
        .join(run.scan("cohorts.parquet").select("referral_key", pl.col("cohort").cast(pl.String)),
              on="referral_key", how="left")
    )
    days = (cutover - pl.col("received_date")).dt.total_days()
    # A referral received after the cut-over is not yet waiting at it: null, not negative.
    refs = refs.with_columns(
        pl.when(pl.col("cohort").is_in(OPEN_COHORTS) & (days >= 0)).then(days).alias("days_waiting"))
    by_patient = (
        refs.join(run.scan("cohorts.parquet").select("referral_key", "patient_key"), on="referral_key")
        .filter(pl.col("days_waiting").is_not_null())
        .sort("days_waiting", "referral_key", descending=[True, False])
        .group_by("patient_key", maintain_order=True).first()
        .select("patient_key", "days_waiting", "service_line")
    )
    return refs, by_patient


def build_worklist(run: RunFolder, layout: Layout) -> pl.DataFrame:
    """One row per exception with the layout's columns plus ``family``, in review order."""
    refs, by_patient = _waits(run)
    patients = run.canonical("patients").select(
        "patient_key", pl.col("source_patient_id").alias("local_patient_id"),
        # An invalid number is null in the canonical column; show what was given, to trace it.
        pl.coalesce("nhs_number", "nhs_number_raw").alias("nhs_number"))
    cohorts = run.scan("patients.parquet").select("patient_key", pl.col("patient_cohort").cast(pl.String))
    family = layout.family_of()
    exc = run.scan("exceptions.parquet").with_columns(
        pl.col("severity").cast(pl.Enum(canonical.SEVERITIES)).alias("_severity"),
        pl.col("flag_code").replace_strict(family, default=OTHER_FAMILY, return_dtype=pl.String).alias("family"))
    is_ref = pl.col("subject_type") == "referral"
    frame = (
        exc.join(refs.rename({"referral_key": "subject_key"}), on="subject_key", how="left")
        .join(by_patient.rename({"days_waiting": "_p_days", "service_line": "_p_line"}), on="patient_key", how="left")
        .join(patients, on="patient_key", how="left")
        .join(cohorts, on="patient_key", how="left")
        .with_columns(
            pl.when(is_ref).then(pl.col("days_waiting")).otherwise(pl.col("_p_days")).alias("days_waiting"),
            pl.when(is_ref).then(pl.col("service_line")).otherwise(pl.col("_p_line")).alias("service_line"),
            pl.when(is_ref).then(pl.col("cohort")).otherwise(pl.col("patient_cohort")).alias("cohort"),
            pl.when(is_ref).then(pl.coalesce("source_referral_id", "subject_key")).alias("referral"),
            pl.col("severity").cast(pl.String),
            *(pl.lit(None, dtype=pl.String).alias(c) for c in REVIEW_COLUMNS),
        )
        .with_columns(pl.col("family").replace_strict(
            {name: i for i, name in enumerate(layout.families)}, return_dtype=pl.Int64).alias("_family"))
        .sort(["_family", "_severity", "days_waiting", "flag_code", "patient_key", "subject_key", "rule_id"],
              descending=[False, False, True, False, False, False, False], nulls_last=True)
    )
    return frame.select("family", *(c.name for c in layout.columns)).collect(engine="streaming")


def neutralise(column: str) -> pl.Expr:
    """``column`` as text, with a single quote before any value a spreadsheet would run."""
    text = pl.col(column).cast(pl.String)
    return pl.when(text.str.contains(_DANGEROUS)).then(pl.lit("'") + text).otherwise(text).alias(column)


def write_csv(frame: pl.DataFrame, path: Path) -> Path:
    """``frame`` as UTF-8 CSV (with a BOM, which Excel needs to read UTF-8), every cell neutralised."""
    safe = frame.select(neutralise(c) for c in frame.columns)
    return write_atomic(path, lambda tmp: safe.write_csv(tmp, include_bom=True))


def family_counts(frame: pl.DataFrame, layout: Layout) -> pl.DataFrame:
    """Per family: its sheet, the number of flags and the count per severity."""
    rows: list[dict[str, Any]] = []
    for name, (sheet, _) in layout.families.items():
        part = frame.filter(pl.col("family") == name)
        counts = dict(part.group_by("severity").len().iter_rows())
        rows.append({"family": name, "sheet": sheet, "flags": part.height,
                     **{s: int(counts.get(s, 0)) for s in canonical.SEVERITIES}})
    return pl.DataFrame(rows, schema={"family": pl.String, "sheet": pl.String, "flags": pl.Int64,
                                      **{s: pl.Int64 for s in canonical.SEVERITIES}})


def write_xlsx(frame: pl.DataFrame, path: Path, layout: Layout) -> Path:
    """The workbook: a summary sheet, then one sheet per family (empty families included,
    so a reviewer sees that nothing was raised rather than a missing tab)."""
    summary = family_counts(frame, layout)
    sheets = [xlsx.Sheet("Summary", summary, tuple(
        xlsx.Column(c, c.replace("_", " ").capitalize(), 18 if c == "sheet" else 11) for c in summary.columns))]
    columns = layout.columns
    for name, (title, _) in layout.families.items():
        rows = frame.filter(pl.col("family") == name).select(c.name for c in columns)
        # Excel holds about a million rows a sheet; a larger family continues on "<title> (2)".
        for part, start in enumerate(range(0, max(rows.height, 1), _SHEET_ROWS)):
            suffix = f" ({part + 1})" if part else ""
            sheets.append(xlsx.Sheet(f"{title}{suffix}", rows.slice(start, _SHEET_ROWS), columns,
                                     emphasis={"severity": {"critical": xlsx.STYLE_ALERT}}))
    return write_atomic(path, lambda tmp: xlsx.write_workbook(tmp, sheets))


def write_worklists(frame: pl.DataFrame, folder: Path, layout: Layout) -> list[Path]:
    """Write ``exceptions.xlsx`` and ``exceptions.csv`` into ``folder``."""
    return [write_xlsx(frame, folder / "exceptions.xlsx", layout), write_csv(frame, folder / "exceptions.csv")]
