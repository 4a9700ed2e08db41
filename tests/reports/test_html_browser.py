"""reconciliation.html in a real browser: headless Chromium, offline, no console errors.

Chromium prints every console message (errors, CSP violations, failed loads) on stderr
as ``INFO:CONSOLE`` lines with ``--enable-logging=stderr --v=0``; the page has no scripts,
so any such line is a fault. Skipped, with the reason, only when Chromium is not installed
(Debian package ``chromium``).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from types import ModuleType

import polars as pl
import pytest
from matplotlib.image import imread

from migrate.reports import write_reports

CHROMIUM = next((p for p in (shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome")) if p), None)
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run", "--enable-logging=stderr", "--v=0")


@pytest.fixture
def browser(tmp_path: Path) -> object:
    """A function opening a page in a fresh headless Chromium: (DOM, console lines)."""
    if CHROMIUM is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is missing: .ci/run installs it")
        pytest.skip("chromium is not installed (apt-get install chromium)")
    profiles = iter(range(100))

    def open_page(page: Path, *extra: str) -> tuple[str, list[str]]:
        profile = tmp_path / f"chromium-profile-{next(profiles)}"
        proc = subprocess.run([CHROMIUM, *FLAGS, f"--user-data-dir={profile}", *extra, page.as_uri()],
                              capture_output=True, text=True, timeout=180, check=False)
        return proc.stdout, [line for line in proc.stderr.splitlines() if ":CONSOLE" in line]

    return open_page


def test_the_page_opens_offline_with_the_expected_figures(browser: object, synth_run: Path, rh: ModuleType,
                                                          tmp_path: Path) -> None:
    run = rh.copy_run(synth_run, tmp_path / "run")
    summary = write_reports(run).summary
    dom, console = browser(run / "reports" / "reconciliation.html", "--dump-dom")  # type: ignore[operator]
    assert console == []
    assert dom.count("<svg") == 2  # the flow picture and the waits chart, inline
    for line in summary["waits"]["service_lines"]:
        assert line["service_line"] in dom
    inv = summary["invariant"]
    expected = [summary["run_id"], "All invariants hold", f"{inv['rows_read']:,}",
                *(f"{f['rows_read']:,}" for f in inv["files"]),
                *(f"{n:,}" for n in summary["cohorts"]["patients"].values()),
                *(f"{n:,}" for n in summary["flags"]["by_severity"].values()),
                f"{summary['declared_vs_found']['totals']['found_patients']:,}"]
    for figure in expected:
        assert figure in dom, figure
    vocabulary = dom[dom.index('id="vocabulary"'):dom.index('id="waits"')]
    for value in summary["vocabulary"]["red_flags"]:  # every red-flag value, with its codelist or none
        assert f"<code>{value['value']}</code>" in vocabulary, value
    assert summary["vocabulary"]["red_flags"] and "red_flag_codes" in vocabulary
    assert "<script" not in dom


def test_an_external_reference_would_show_as_a_console_error(browser: object, worked_run: Path, rh: ModuleType,
                                                              tmp_path: Path) -> None:
    """The console check can fail: the page's CSP blocks (and reports) anything fetched."""
    run = rh.copy_run(worked_run, tmp_path / "run")
    write_reports(run)
    page = run / "reports" / "reconciliation.html"
    tampered = tmp_path / "tampered.html"
    tampered.write_text(page.read_text().replace("<main>", '<main><img src="https://example.invalid/x.png">', 1))
    _, console = browser(tampered, "--dump-dom")  # type: ignore[operator]
    assert any("example.invalid" in line for line in console)


def test_a_failing_run_opens_with_the_red_banner(browser: object, worked_run: Path, rh: ModuleType,
                                                 tmp_path: Path) -> None:
    run = rh.copy_run(worked_run, tmp_path / "run")
    lineage = pl.read_parquet(run / "lineage.parquet")
    rh.rewrite(run / "lineage.parquet", lineage.slice(1))
    assert not write_reports(run).holds
    page = run / "reports" / "reconciliation.html"
    dom, console = browser(page, "--dump-dom")  # type: ignore[operator]
    assert console == []
    body = dom.split("<body>", 1)[1].lstrip()
    assert body.startswith('<div id="verdict" class="banner fail">RECONCILIATION FAILED')
    shot = tmp_path / "top.png"
    browser(page, f"--screenshot={shot}", "--window-size=1000,600", "--hide-scrollbars")  # type: ignore[operator]
    pixels = imread(shot)
    top = pixels[5:40, 100:900, :3].reshape(-1, 3).mean(axis=0)  # the banner's band, off the text
    assert top[0] > 0.6 and top[1] < 0.2 and top[2] < 0.2, top  # red (#c00000)


def test_the_documented_data_extract_opens_offline(browser: object, tmp_path: Path) -> None:
    from migrate.dde import write_dde
    from migrate.profile import load_profile
    from migrate.rules import load_pack

    pack = load_pack(None)
    _, page = write_dde([load_profile("generic-csv"), load_profile("hl7v2")], pack, tmp_path / "dde")
    dom, console = browser(page, "--dump-dom")  # type: ignore[operator]
    assert console == []
    assert "<script" not in dom
    for rule in pack.rules:
        assert f'id="rule-{rule.id}"' in dom
    assert "PID-3[type=MR].1" in dom and "attendance_code" in dom


def test_the_hazard_log_opens_offline(browser: object, worked_run: Path, rh: ModuleType, tmp_path: Path) -> None:
    from migrate.hazards import load_hazards

    run = rh.copy_run(worked_run, tmp_path / "run")
    write_reports(run)
    dom, console = browser(run / "reports" / "hazard-log.html", "--dump-dom")  # type: ignore[operator]
    assert console == []
    assert "<script" not in dom and 'id="unassessed"' not in dom
    for hazard in load_hazards().hazards:
        assert f'id="{hazard.id}"' in dom and hazard.title in dom


def test_a_patients_story_opens_offline(browser: object, worked_run: Path, tmp_path: Path) -> None:
    from migrate.reports.story import patient_story
    from migrate.reports.story_view import write_story_html

    page = write_story_html(patient_story(worked_run, "P28"), tmp_path / "p28.html")
    dom, console = browser(page, "--dump-dom")  # type: ignore[operator]
    assert console == []
    assert "<script" not in dom
    for text in ("P28</code> merged into <code>P01", "R01", "R28", "DUPLICATE_NHS_NUMBER", "No decisions recorded"):
        assert text in dom, text


def test_the_page_opens_with_the_flow_matching_the_invariant_table(browser: object, synth_run: Path, rh: ModuleType,
                                                                   tmp_path: Path) -> None:
    run = rh.copy_run(synth_run, tmp_path / "run")
    summary = write_reports(run).summary
    dom, console = browser(run / "reports" / "reconciliation.html", "--dump-dom")  # type: ignore[operator]
    assert console == []
    main = dom.split("<main>", 1)[1]
    # the title, then the picture, before any table
    assert main.index('<figure id="flow"') < main.index("<table") and main.index("</h1>") < main.index("<figure")
    picture = main[main.index('<figure id="flow"'):main.index("</figure>")]
    inv = summary["invariant"]
    for f in inv["files"]:
        assert f">{f['file']}: {f['rows_read']:,} read<" in picture, f["file"]
    for d, n in inv["dispositions"].items():
        assert (f">{d.replace('_', ' ')}: {n:,}<" in picture) == bool(n), d
    for kind, n in summary["control_totals"]["fhir"]["resources"].items():
        assert f">{kind}: {n:,}<" in picture
    assert f">{inv['rows_read']:,} source rows read<" in picture
    assert f">{summary['control_totals']['fhir']['total']:,} FHIR resources<" in picture
