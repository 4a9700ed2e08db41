"""Review progress: raised, decided and outstanding per family and severity, in
reconciliation.json, the HTML page (which opens with outstanding critical items) and the terminal."""

from __future__ import annotations

import io
import json
from pathlib import Path

import polars as pl
import pytest
from rich.console import Console

from migrate.reports.terminal import summary_renderables
from tests.review.conftest import extract, fill, run
from tests.review.test_decisions import DECISIONS, EXTRA, RECORDED


@pytest.fixture(scope="module")
def decided(first_batch: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("progress")
    filled = fill(first_batch / "reports" / "exceptions.xlsx", base / "decided.xlsx", DECISIONS, EXTRA)
    out = base / "run"
    run(extract(base / "input", RECORDED), out, [filled])
    return out


def test_the_figures_add_up_to_the_exceptions_and_the_applied_decisions(decided: Path) -> None:
    review = json.loads((decided / "reports" / "reconciliation.json").read_text())["review"]
    exceptions = pl.read_parquet(decided / "exceptions.parquet")
    decisions = pl.read_parquet(decided / "decisions.parquet")
    assert review["raised"] == exceptions.height
    assert review["decided"] == decisions.filter(pl.col("status") == "applied").height == 4
    assert review["outstanding"] == review["raised"] - review["decided"]
    assert sum(r["raised"] for r in review["by_family"]) == review["raised"]
    per = {(r["family"], r["severity"]): r for r in review["by_family"]}
    assert per[("sharing", "critical")] == {"family": "sharing", "severity": "critical", "raised": 1, "decided": 1,
                                            "outstanding": 0}
    critical = exceptions.filter(pl.col("severity").cast(pl.String) == "critical")
    assert sorted(s for i in review["outstanding_critical"] for s in i["subject_ids"]) == sorted(
        critical.filter(pl.col("subject_key") != "P21")["subject_key"])  # P21's override decided it
    assert review["decisions"]["rows"] == decisions.height
    assert (review["decisions"]["applied"], review["decisions"]["rejected"]) == (4, 7)
    assert {r["reason_code"] for r in review["decisions"]["reasons"]} == set(
        decisions["reason_code"].drop_nulls())


def test_a_run_without_decisions_has_everything_outstanding(first_batch: Path) -> None:
    review = json.loads((first_batch / "reports" / "reconciliation.json").read_text())["review"]
    assert review["decided"] == 0 and review["outstanding"] == review["raised"] > 0
    assert review["decisions"]["rows"] == 0
    assert not (first_batch / "decisions.parquet").exists()


def test_the_page_opens_with_the_outstanding_critical_items(decided: Path, tmp_path: Path) -> None:
    from tests.reports.test_html_browser import CHROMIUM, FLAGS
    import subprocess

    if CHROMIUM is None:
        pytest.skip("chromium is not installed (apt-get install chromium)")
    page = decided / "reports" / "reconciliation.html"
    proc = subprocess.run([CHROMIUM, *FLAGS, f"--user-data-dir={tmp_path / 'profile'}", "--dump-dom", page.as_uri()],
                          capture_output=True, text=True, timeout=180, check=False)
    dom = proc.stdout
    assert [line for line in proc.stderr.splitlines() if ":CONSOLE" in line] == []
    review = dom.index('id="review"')
    assert review < dom.index('id="invariants"') and review < dom.index('id="flags"')  # it opens the report
    section = dom[review:dom.index("</section>", review)]
    assert "2 critical item(s) not yet decided" in section
    assert section.index("R13") < section.index("R14") < section.index("raised")  # the items, then the table
    assert "4 applied, 7 rejected, 0 superseded" in section


def test_the_terminal_summary_shows_progress(decided: Path) -> None:
    summary = json.loads((decided / "reports" / "reconciliation.json").read_text())
    console = Console(file=io.StringIO(), width=100, color_system=None)
    for item in summary_renderables(summary):
        console.print(item)
    text = console.file.getvalue()  # type: ignore[attr-defined]
    assert f"Clinical review: {summary['review']['outstanding']} of {summary['review']['raised']} outstanding" in text
    assert "decisions: 4 applied, 7 rejected, 0 superseded" in text
