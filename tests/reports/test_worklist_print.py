"""The worklist as a clinical lead prints it: LibreOffice (headless) renders the workbook to
PDF, and the PDF is read back with poppler's ``pdftotext -bbox`` (word positions).

Checked on every page: A4 landscape, the sheet name and the run (id, cut-over) in the
header, "Page N of M" in the footer, and every column header (fit to one page wide: no
column is pushed to another page). Per sheet: every row printed exactly once, and as few
pages as the rows need — each page but a sheet's last is full (its next row would not have
fitted), so the page count is what fitting to the width gives. A copy without the fit
fails these checks, so they can fail.

Then the reviewer's columns survive a round trip through LibreOffice. Needs the Debian
packages libreoffice-calc-nogui, poppler-utils and fonts-crosextra-carlito (installed by
.ci/run): skipped without them on a developer's machine, a failure under CI.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from types import ModuleType

import openpyxl
import pytest

from migrate.reports import write_reports
from migrate.reports.rundata import RunFolder
from migrate.reports.worklist import REVIEW_COLUMNS, load_layout

SOFFICE = shutil.which("soffice") or shutil.which("libreoffice")
PDFTOTEXT = shutil.which("pdftotext")
SEVERITIES = ("critical", "high", "medium", "low")
BAND_PT = 34.0  # the page header and footer sit within this distance of the paper's edge
ROUNDING_PT = 1.0  # LibreOffice keeps row heights in its own units


@dataclass(frozen=True)
class Word:
    x0: float
    y0: float
    x1: float
    y1: float
    text: str


@dataclass(frozen=True)
class Page:
    width: float
    height: float
    words: tuple[Word, ...]

    def band(self, top: bool) -> list[Word]:
        """The page header's (top) or footer's words, left to right."""
        inside = [w for w in self.words if (w.y1 < BAND_PT if top else w.y0 > self.height - BAND_PT)]
        return sorted(inside, key=lambda w: w.x0)

    def body(self) -> list[Word]:
        return [w for w in self.words if BAND_PT <= w.y0 <= self.height - BAND_PT]

    def sheet(self) -> str:
        """The sheet name: the header's left half."""
        return " ".join(w.text for w in self.band(True) if w.x0 < self.width / 2)


Convert = Callable[[Path, str, Path], Path]


@pytest.fixture(scope="module")
def office(tmp_path_factory: pytest.TempPathFactory) -> Convert:
    """``convert(file, format, out_dir)`` with a headless LibreOffice of its own profile."""
    if SOFFICE is None or PDFTOTEXT is None:
        missing = "libreoffice-calc-nogui" if SOFFICE is None else "poppler-utils"
        if os.environ.get("CI"):
            pytest.fail(f"{missing} is not installed: .ci/run installs it")
        pytest.skip(f"{missing} is not installed (apt-get install {missing})")
    profile = tmp_path_factory.mktemp("libreoffice-profile")

    def convert(path: Path, to: str, out: Path) -> Path:
        subprocess.run([SOFFICE, f"-env:UserInstallation={profile.as_uri()}", "--headless", "--norestore",
                        "--convert-to", to, "--outdir", str(out), str(path)],
                       check=True, capture_output=True, timeout=600)
        return out / f"{path.stem}.{to.split(':')[0]}"

    return convert


def read_pdf(path: Path) -> list[Page]:
    xml = subprocess.run([PDFTOTEXT or "pdftotext", "-bbox", str(path), "-"], check=True, capture_output=True,
                         text=True).stdout
    pages = []
    for width, height, body in re.findall(r'<page width="([\d.]+)" height="([\d.]+)">(.*?)</page>', xml, re.S):
        words = tuple(Word(float(a), float(b), float(c), float(d), t.replace("&amp;", "&"))
                      for a, b, c, d, t in re.findall(
                          r'<word xMin="([\d.]+)" yMin="([\d.]+)" xMax="([\d.]+)" yMax="([\d.]+)">(.*?)</word>', body))
        pages.append(Page(float(width), float(height), words))
    return pages


def print_problems(pages: list[Page], workbook: Path, run_id: str) -> list[str]:
    """Everything that keeps the printed workbook from reading like a clinical document."""
    book = openpyxl.load_workbook(workbook)
    problems: list[str] = []
    for n, page in enumerate(pages, start=1):
        header = " ".join(w.text for w in page.band(True))
        footer = " ".join(w.text for w in page.band(False))
        if page.width <= page.height:
            problems.append(f"page {n}: portrait")
        if f"Run {run_id} · cut-over 01/10/2022" not in header:
            problems.append(f"page {n}: the run is not in the header ({header!r})")
        if not footer.endswith(f"Page {n} of {len(pages)}"):
            problems.append(f"page {n}: no 'Page {n} of {len(pages)}' in the footer ({footer!r})")
    ends: list[tuple[str, int, float, float]] = []  # (sheet, last row, its bottom, the next row's height)
    for sheet in book.worksheets:
        mine = [p for p in pages if p.sheet() == sheet.title]
        if not mine:
            problems.append(f"{sheet.title}: not printed")
            continue
        headers = [str(c.value) for c in sheet[1]]
        for k, page in enumerate(mine, start=1):
            words = {w.text for w in page.body()}
            missing = [h for h in headers if not set(h.split()) <= words]
            if missing:
                problems.append(f"{sheet.title} page {k}: column headers {missing} not on the page")
        if headers[0] == "Severity":
            problems += page_ends(sheet, mine, ends)
    # The page body ends at the same height on every page: the deepest row bottom printed.
    # A page (but a sheet's last) whose next row would have fitted above it was not full.
    deepest = max((bottom for _, _, bottom, _ in ends), default=0.0)
    problems += [f"{title}: a page ends at row {row} with room for row {row + 1}"
                 for title, row, bottom, following in ends if bottom + following <= deepest - ROUNDING_PT]
    return problems


def page_ends(sheet: openpyxl.worksheet.worksheet.Worksheet, pages: list[Page],
              ends: list[tuple[str, int, float, float]]) -> list[str]:
    """Checks every row is printed exactly once; adds to ``ends`` where each page but the
    sheet's last ends (its last row's bottom) and how tall the next row is, as printed."""
    heights = [sheet.row_dimensions[r].height or 15.0 for r in range(1, sheet.max_row + 1)]
    left = min(w.x0 for w in pages[0].body() if w.text == "Severity")
    # Each data row starts with its severity, top left in its cell: its top, page by page.
    tops = [sorted(w.y0 for w in p.body() if w.text in SEVERITIES and abs(w.x0 - left) < 2) for p in pages]
    printed = sum(len(t) for t in tops)
    if printed != sheet.max_row - 1:
        return [f"{sheet.title}: {printed} rows printed, {sheet.max_row - 1} in the sheet"]
    if not tops[0]:
        return []
    header_top = min(w.y0 for w in pages[0].body() if w.text == "Severity")
    scale = (tops[0][0] - header_top) / heights[0]  # rows print at the scale that fits the width
    row = 1  # 1-based sheet row of the last row printed so far (the header)
    for page_tops in tops[:-1]:
        row += len(page_tops)
        if page_tops and row < len(heights):  # (a sheet split across the width ends its rows early)
            ends.append((sheet.title, row, page_tops[-1] + heights[row - 1] * scale, heights[row] * scale))
    return []


@pytest.fixture(scope="module")
def printed(office: Convert, synth_run: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[Page]]:
    run = tmp_path_factory.mktemp("printed") / "run"
    shutil.copytree(synth_run, run)
    write_reports(run)
    pdf = office(run / "reports" / "exceptions.xlsx", "pdf", run.parent)
    return run, read_pdf(pdf)


def test_the_printed_worklist_reads_like_a_clinical_document(printed: tuple[Path, list[Page]]) -> None:
    run, pages = printed
    workbook = run / "reports" / "exceptions.xlsx"
    assert print_problems(pages, workbook, RunFolder.open(run).run_id) == []
    book = openpyxl.load_workbook(workbook)
    sheets = [p.sheet() for p in pages]
    assert sheets == sorted(sheets, key=[s.title for s in book.worksheets].index)  # sheet by sheet, in order
    assert {s.title for s in book.worksheets} == set(sheets)
    first = " ".join(w.text for w in pages[0].body())
    assert "About this run" in first and "Exceptions by family" in first  # the Summary opens the print
    rows = sum(s.max_row - 1 for s in book.worksheets[1:])
    assert len(pages) < rows / 5  # several rows a page: not 4 columns a page, as before


def altered(workbook: Path, out: Path, change: Callable[[str, bytes], bytes]) -> Path:
    """A copy of ``workbook`` with ``change(part name, xml)`` applied to every worksheet."""
    out.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(workbook) as src, zipfile.ZipFile(out, "w") as dst:
        for item in src.infolist():
            data = src.read(item.filename)
            dst.writestr(item, change(item.filename, data) if item.filename.startswith("xl/worksheets/") else data)
    return out


def test_the_checks_fail_on_a_workbook_not_fitted_or_not_filled(office: Convert, worked_run: Path,
                                                                printed: tuple[Path, list[Page]], rh: ModuleType,
                                                                tmp_path: Path) -> None:
    small = rh.copy_run(worked_run, tmp_path / "run")
    write_reports(small)
    workbook = small / "reports" / "exceptions.xlsx"
    unfitted = altered(workbook, tmp_path / "unfitted" / "exceptions.xlsx", lambda _, xml: xml.replace(
        b'<pageSetUpPr fitToPage="1"/>', b"").replace(b' fitToWidth="1" fitToHeight="0"', b""))
    problems = print_problems(read_pdf(office(unfitted, "pdf", unfitted.parent)), unfitted,
                              RunFolder.open(small).run_id)
    assert any("not on the page" in p for p in problems)
    # Page breaks every two rows at the top of a long sheet leave pages with room for more.
    run, _ = printed
    breaks = b'<rowBreaks count="5" manualBreakCount="5">' + b"".join(
        b'<brk id="%d" max="16383" man="1"/>' % (2 * k + 1) for k in range(1, 6)) + b"</rowBreaks>"

    identity = openpyxl.load_workbook(run / "reports" / "exceptions.xlsx").sheetnames.index("Identity") + 1

    def break_identity(name: str, xml: bytes) -> bytes:
        if name != f"xl/worksheets/sheet{identity}.xml":
            return xml
        return xml.replace(b"</headerFooter>", b"</headerFooter>" + breaks)

    broken = altered(run / "reports" / "exceptions.xlsx", tmp_path / "broken" / "exceptions.xlsx", break_identity)
    problems = print_problems(read_pdf(office(broken, "pdf", broken.parent)), broken, RunFolder.open(run).run_id)
    assert any(p.startswith("Identity: a page ends at row 3 with room") for p in problems), problems


def test_decisions_survive_a_round_trip_through_libreoffice(office: Convert, worked_run: Path, rh: ModuleType,
                                                            tmp_path: Path) -> None:
    run = rh.copy_run(worked_run, tmp_path / "run")
    write_reports(run)
    layout = load_layout()
    names = [c.name for c in layout.columns]
    col = {name: names.index(name) + 1 for name in (*REVIEW_COLUMNS, "nhs_number", "days_waiting", "subject_key")}
    book = openpyxl.load_workbook(run / "reports" / "exceptions.xlsx")
    filled: dict[tuple[str, int], tuple[object, ...]] = {}
    for sheet in book.worksheets[1:]:
        for r in range(2, min(sheet.max_row, 3) + 1):  # a reviewer decides the first two rows of each sheet
            values = ("Dr A Reviewer", ("acknowledged", "Acknowledged")[r % 2], datetime(2022, 10, 14), f"note = {r}; ok")
            for name, value in zip(REVIEW_COLUMNS, values, strict=True):
                sheet.cell(row=r, column=col[name], value=value)
            filled[(sheet.title, r)] = values
    assert filled
    book.save(tmp_path / "filled.xlsx")
    before = openpyxl.load_workbook(tmp_path / "filled.xlsx")
    (tmp_path / "lo").mkdir()
    back = openpyxl.load_workbook(office(tmp_path / "filled.xlsx", "xlsx", tmp_path / "lo"))
    assert back.sheetnames == before.sheetnames
    for sheet in back.worksheets[1:]:
        old = before[sheet.title]
        assert [c.value for c in sheet[1]] == [c.value for c in old[1]]  # headers, reviewer's included
        for r in range(2, old.max_row + 1):
            assert sheet.cell(row=r, column=col["subject_key"]).value == old.cell(row=r, column=col["subject_key"]).value
            nhs = sheet.cell(row=r, column=col["nhs_number"]).value
            assert nhs == old.cell(row=r, column=col["nhs_number"]).value  # "999 810 2758" stays text
            assert sheet.cell(row=r, column=col["days_waiting"]).value == old.cell(
                row=r, column=col["days_waiting"]).value
            got = tuple(sheet.cell(row=r, column=col[name]).value for name in REVIEW_COLUMNS)
            assert got == filled.get((sheet.title, r), (None,) * 4), (sheet.title, r)
        assert sheet.page_setup.orientation == "landscape" and sheet.page_setup.fitToWidth == 1
        assert sheet.print_title_rows == "$1:$1"
    # handover reads the decisions back from the file LibreOffice saved: every filled row, dates as dates.
    from migrate.review.files import read_decisions

    read = read_decisions(tmp_path / "lo" / "filled.xlsx").rows
    assert sorted((r["source_sheet"], r["source_row"]) for r in read.iter_rows(named=True)) == sorted(filled)
    assert set(read["date"].to_list()) == {"2022-10-14"}
    nhs_values = [v for s in back.worksheets[1:] for (v,) in s.iter_rows(
        min_row=2, min_col=col["nhs_number"], max_col=col["nhs_number"], values_only=True)]
    assert any(isinstance(v, str) and re.fullmatch(r"\d{3} \d{3} \d{4}", v) for v in nhs_values)
