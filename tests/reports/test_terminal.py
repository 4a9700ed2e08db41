"""The rich terminal summary: the figures, within 100 columns, red when an invariant fails."""

from __future__ import annotations

import io
import json
from pathlib import Path
from types import ModuleType
from typing import Any

import polars as pl
from rich.console import Console

from migrate import reports
from migrate.reports import summary_renderables, write_reports


def render(summary: dict[str, Any]) -> str:
    out = io.StringIO()
    console = Console(file=out, width=100, color_system=None)
    for renderable in summary_renderables(summary):
        console.print(renderable)
    return out.getvalue()


def test_the_summary_fits_100_columns_and_shows_the_figures(synth_run: Path, rh: ModuleType, tmp_path: Path) -> None:
    run = rh.copy_run(synth_run, tmp_path / "run")
    summary = write_reports(run).summary
    text = render(summary)
    assert max(len(line) for line in text.splitlines()) <= 100
    assert "Invariant 1 holds" in text
    fhir = summary["invariant_fhir"]
    assert ("Invariant 2 holds" if fhir["applicable"] else "Invariant 2 not applicable: no FHIR output") in text
    for f in summary["invariant"]["files"]:
        assert f["file"] in text and f"{f['rows_read']:,}" in text
    for name, n in summary["flags"]["by_severity"].items():
        assert f"{name}" in text and f"{n:,}" in text
    assert "reports/exceptions.xlsx" in text and "Declared vs found" in text
    # Rendering the saved JSON (keys sorted on disk) keeps the canonical order of cohorts and severities.
    saved = render(json.loads((run / "reports" / "reconciliation.json").read_text()))
    assert saved.index("critical") < saved.index("high") < saved.index("medium") < saved.index("low")
    assert saved.index("backlog") < saved.index("transition") < saved.index("closed")


def test_a_broken_invariant_is_said_first(worked_run: Path, rh: ModuleType, tmp_path: Path) -> None:
    run = rh.copy_run(worked_run, tmp_path / "run")
    rh.rewrite(run / "lineage.parquet", pl.read_parquet(run / "lineage.parquet").slice(2))
    text = render(write_reports(run).summary)
    assert text.splitlines()[0].startswith("Invariant 1 BROKEN: rows read ≠ Σ dispositions for codes.csv")


def test_every_public_name_is_exported() -> None:
    assert sorted(reports.__all__) == reports.__all__
    for name in reports.__all__:
        assert getattr(reports, name) is not None
    assert {"write_reports", "verify", "manifest_sha256", "record_previous", "diff_runs", "pseudonymise",
            "summary_renderables"} <= set(reports.__all__)
