"""Exception worklists: formula neutralisation on every dangerous prefix, sheet layout, the
print setup, the Summary sheet, and identifiers formatted for people (XLSX) or scripts (CSV)."""

from __future__ import annotations

import csv
import io
import re
import zipfile
from datetime import date
from pathlib import Path
from types import ModuleType

import openpyxl
import polars as pl

from migrate.rules import load_pack
import pytest

from migrate import frozen
from migrate.errors import ConfigError
from migrate.reports import worklist, write_reports, xlsx
from migrate.reports.split import write_split
from migrate.reports.rundata import RunFolder
from migrate.reports.worklist import (
    DANGEROUS_PREFIXES,
    REVIEW_COLUMNS,
    load_layout,
    write_csv,
    write_xlsx,
)
from migrate.reports.worklist_summary import SECTIONS, RunInfo
from migrate.reports.xlsx import letter
from migrate.resources import reports_dir

PAYLOADS = [p + 'cmd|" /C calc"!A0' for p in DANGEROUS_PREFIXES] + ["=HYPERLINK(\"http://x\")", "-2+3", "+1", "@SUM(A1)"]
SAFE = ["P0001", "red_flags = none", "a=b", " =not first", "knee"]
INFO = RunInfo("run-42", date(2022, 10, 1), "generic-csv (source system: outgoing)", "default, version 1",
               "01/10/2022 09:00 UTC to 01/10/2022 09:05 UTC (by handover 0.1.0)")


def literal_worklist() -> pl.DataFrame:
    """Rows whose every text column starts with a dangerous prefix (and a few safe ones)."""
    layout = load_layout()
    names = [c.name for c in layout.columns]
    values = PAYLOADS + SAFE
    data = {name: [v for v in values] for name in names if name != "days_waiting"}
    data["days_waiting"] = list(range(len(values)))
    data["severity"] = ["critical"] * len(values)
    data["family"] = ["prioritisation"] * len(values)
    return pl.DataFrame(data).select("family", *names)


def test_csv_neutralises_every_dangerous_prefix(tmp_path: Path) -> None:
    frame = literal_worklist()
    write_csv(frame, tmp_path / "x.csv")
    text = (tmp_path / "x.csv").read_bytes().decode("utf-8-sig")
    rows = list(csv.reader(io.StringIO(text, newline="")))
    assert rows[0] == frame.columns
    cells = [cell for row in rows[1:] for cell in row]
    assert cells, "no data rows"
    for cell in cells:
        assert not re.match(r"[=+\-@\t\r]", cell), repr(cell)
    evidence = [row[frame.columns.index("evidence")] for row in rows[1:]]
    assert evidence == ["'" + v for v in PAYLOADS] + SAFE  # safe values are left alone


@pytest.mark.parametrize("prefix", DANGEROUS_PREFIXES)
def test_each_prefix_alone_is_neutralised_in_csv(prefix: str, tmp_path: Path) -> None:
    frame = pl.DataFrame({"evidence": [prefix + "1+1"]})
    write_csv(frame, tmp_path / "x.csv")
    rows = list(csv.reader(io.StringIO((tmp_path / "x.csv").read_bytes().decode("utf-8-sig"), newline="")))
    assert rows[1] == ["'" + prefix + "1+1"]


def sheet_xml(path: Path, index: int) -> str:
    with zipfile.ZipFile(path) as zf:
        return zf.read(f"xl/worksheets/sheet{index}.xml").decode()


def test_xlsx_has_no_formula_and_quote_prefixes_every_dangerous_cell(tmp_path: Path) -> None:
    frame = literal_worklist()
    path = write_xlsx(frame, tmp_path / "x.xlsx", load_layout(), INFO)
    with zipfile.ZipFile(path) as zf:
        for name in zf.namelist():
            assert "<f>" not in zf.read(name).decode() and "<f " not in zf.read(name).decode(), name
        styles = zf.read("xl/styles.xml").decode()
    xfs = re.findall(r"<xf [^>]*>", styles.split("<cellXfs")[1])
    xml = sheet_xml(path, 2)  # the first family sheet (after Summary)
    cells = re.findall(r'<c r="([A-Z]+)(\d+)"([^>]*)>(.*?)</c>', xml)
    strings = [c for c in cells if 't="inlineStr"' in c[2] and int(c[1]) > 1]
    assert strings
    for col, row, attrs, body in strings:
        value = re.sub(r"<[^>]+>", "", body).replace("&amp;", "&").replace("&lt;", "<").replace("&gt;", ">")
        value = value.replace("&#13;", "\r")
        if re.match(r"[=+\-@\t\r]", value):
            style = re.search(r's="(\d+)"', attrs)
            assert style and 'quotePrefix="1"' in xfs[int(style.group(1))], (col, row, value)
    book = openpyxl.load_workbook(path)
    sheet = book.worksheets[1]
    evidence_col = [c.name for c in load_layout().columns].index("evidence") + 1
    read = [sheet.cell(row=r, column=evidence_col) for r in range(2, frame.height + 2)]
    assert [c.value for c in read] == PAYLOADS + SAFE  # the text is kept exactly, as text
    assert all(c.data_type == "s" for c in read)
    assert all(c.quotePrefix for c in read[: len(PAYLOADS)])
    assert all(c.alignment.wrap_text for c in read)  # evidence wraps, quoted or not


def test_workbook_layout_for_clinical_leads(synth_run: Path, rh: ModuleType, tmp_path: Path) -> None:
    run = rh.copy_run(synth_run, tmp_path / "run")
    write_reports(run)
    path = run / "reports" / "exceptions.xlsx"
    layout = load_layout()
    book = openpyxl.load_workbook(path)
    assert book.sheetnames == ["Summary", *(f.sheet for f in layout.families.values())]
    exceptions = pl.read_parquet(run / "exceptions.parquet")
    summary = {row[0]: row for row in book["Summary"].iter_rows(min_row=2, values_only=True) if row[0]}
    assert summary["All families"][-1] == exceptions.height
    sheet = book["Sharing blocks"]
    headers = [c.value for c in sheet[1]]
    assert headers == [c.header for c in layout.columns]
    assert headers[-5:] == ["Reviewer", "Decision", "Date", "Note", "Second reviewer"]
    assert sheet.freeze_panes == "A2"
    assert sheet.auto_filter.ref == f"A1:{letter(len(layout.columns) - 1)}{sheet.max_row}"
    widths = {c.header: c.width for c in layout.columns}
    assert sheet.column_dimensions["J"].width == widths["Evidence"]
    rows = list(sheet.iter_rows(min_row=2, values_only=True))
    assert len(rows) == exceptions.filter(pl.col("flag_code").str.starts_with("SHARING_BLOCK")).height
    order = {"critical": 0, "high": 1, "medium": 2, "low": 3}
    keys = [(order[r[0]], -(r[2] if r[2] is not None else -1)) for r in rows]
    assert keys == sorted(keys)
    nhs, local = headers.index("NHS number"), headers.index("Local patient id")
    assert all(r[local] for r in rows)  # identifiers are there for clinicians
    assert sum(1 for r in rows if r[nhs]) > 0.9 * len(rows)  # (a few planted patients have none)
    assert all(all(v is None for v in r[-5:]) for r in rows)  # review columns left blank


def test_every_sheet_prints_landscape_one_page_wide_with_the_run_on_each_page(worked_run: Path, rh: ModuleType,
                                                                              tmp_path: Path) -> None:
    run = rh.copy_run(worked_run, tmp_path / "run")
    write_reports(run)
    run_id = RunFolder.open(run).run_id
    book = openpyxl.load_workbook(run / "reports" / "exceptions.xlsx")
    for sheet in book.worksheets:
        setup = sheet.page_setup
        assert (setup.orientation, setup.paperSize, setup.fitToWidth, setup.fitToHeight) == ("landscape", 9, 1, 0)
        assert sheet.sheet_properties.pageSetUpPr.fitToPage, sheet.title
        assert sheet.print_title_rows == "$1:$1", sheet.title  # the header row on every page
        assert sheet.print_options.gridLines, sheet.title
        assert sheet.oddHeader.left.text == "&A"  # the sheet's name
        assert f"Run {run_id}" in sheet.oddHeader.right.text and "cut-over 01/10/2022" in sheet.oddHeader.right.text
        assert sheet.oddFooter.right.text == "Page &P of &N"
        assert "generic" in sheet.oddFooter.left.text or "worked" in sheet.oddFooter.left.text


def test_columns_are_wide_enough_for_their_headers_and_long_text_wraps(worked_run: Path, rh: ModuleType,
                                                                      tmp_path: Path) -> None:
    run = rh.copy_run(worked_run, tmp_path / "run")
    write_reports(run)
    book = openpyxl.load_workbook(run / "reports" / "exceptions.xlsx")
    sheet = book["Prioritisation"]
    for i, cell in enumerate(sheet[1]):
        width = sheet.column_dimensions[letter(i)].width
        longest = max(len(word) for word in str(cell.value).split())
        # The header wraps between words; its longest word and the filter button fit (bold is ~1.2 wide).
        assert width >= longest * 1.2 + 2, (cell.value, width)
        assert cell.alignment.wrap_text
    assert sheet.column_dimensions["C"].width >= 10  # "Days waiting", the header once cut to "Days wait"
    evidence = [c.name for c in load_layout().columns].index("evidence") + 1
    cells = [sheet.cell(row=r, column=evidence) for r in range(2, sheet.max_row + 1)]
    assert cells and all(c.alignment.wrap_text for c in cells)
    # A row holding evidence longer than its column is taller than one line.
    tall = [sheet.row_dimensions[c.row].height for c in cells if len(str(c.value)) > 60]
    assert tall and all(h is not None and h >= 30 for h in tall)


def test_nhs_numbers_and_dates_for_people_in_xlsx_raw_in_csv(worked_run: Path, rh: ModuleType,
                                                            tmp_path: Path) -> None:
    run = rh.copy_run(worked_run, tmp_path / "run")
    write_reports(run)
    raw = pl.read_csv(run / "reports" / "exceptions.csv", infer_schema=False)
    numbers = raw.filter(pl.col("nhs_number").str.contains(r"^[0-9]{10}$"))
    assert numbers.height > 0  # the CSV keeps ten digits for scripts
    iso = raw.filter(pl.col("evidence").str.contains(r"[0-9]{4}-[0-9]{2}-[0-9]{2}"))
    assert iso.height > 0  # and ISO dates
    book = openpyxl.load_workbook(run / "reports" / "exceptions.xlsx")
    layout = load_layout()
    shown: list[tuple[str, str]] = []
    for fam in layout.families.values():
        sheet = book[fam.sheet]
        headers = [c.value for c in sheet[1]]
        for row in sheet.iter_rows(min_row=2, values_only=True):
            shown.append((row[headers.index("NHS number")], row[headers.index("Evidence")]))
    assert len(shown) == raw.height
    spaced = {n for n, _ in shown if n and re.fullmatch(r"[0-9]{3} [0-9]{3} [0-9]{4}", n)}
    assert spaced == {f"{n[:3]} {n[3:6]} {n[6:]}" for n in numbers["nhs_number"].to_list()}
    assert not any(n and re.fullmatch(r"[0-9]{10}", n) for n, _ in shown)
    assert not any(re.search(r"[0-9]{4}-[0-9]{2}-[0-9]{2}", e or "") for _, e in shown)
    one = iso["evidence"][0]
    day_first = re.sub(r"([0-9]{4})-([0-9]{2})-([0-9]{2})", r"\3/\2/\1", one)
    assert day_first in {e for _, e in shown}  # the same text, dates dd/mm/yyyy


def test_the_summary_sheet_stands_alone(synth_run: Path, rh: ModuleType, tmp_path: Path) -> None:
    run = rh.copy_run(synth_run, tmp_path / "run")
    write_reports(run)
    folder = RunFolder.open(run)
    manifest = folder.manifest
    book = openpyxl.load_workbook(run / "reports" / "exceptions.xlsx")
    rows = [r for r in book["Summary"].iter_rows(min_row=2, values_only=True)]
    items = {r[0]: r for r in rows if r[0]}
    text = "\n".join(" ".join(str(v) for v in r if v is not None) for r in rows)
    for section in SECTIONS:
        assert section in items
    assert items["Run"][1] == folder.run_id
    assert items["Cut-over date"][1] == "01/10/2022"
    assert "generic-csv" in items["Provider (mapping profile)"][1]
    assert items["Rule pack"][1] == f"{manifest['rules']['name']}, version {manifest['rules']['version']}"
    started = manifest["started"]  # e.g. 2026-11-24T10:00:05+00:00
    assert f"{started[8:10]}/{started[5:7]}/{started[:4]} {started[11:16]} UTC" in items["Ran"][1]
    layout = load_layout()
    exceptions = pl.read_parquet(run / "exceptions.parquet").with_columns(
        pl.col("flag_code").replace_strict(layout.family_of(), default="other").alias("family"))
    for name, fam in layout.families.items():
        row = items[fam.sheet]
        assert fam.means in row[1] and fam.ask in row[1]  # what it means, what to do
        part = exceptions.filter(pl.col("family") == name)
        assert row[2:6] == tuple(part.filter(pl.col("severity") == s).height for s in ("critical", "high", "medium",
                                                                                        "low"))
        assert row[6] == part.height
    assert items["All families"][6] == exceptions.height
    headers = {c.name: c.header for c in layout.columns}
    for column in REVIEW_COLUMNS:  # how to record a decision: every reviewer's column, by its header
        assert items[headers[column]][1] == layout.decisions.columns[column]
    for value, meaning in layout.decisions.values:
        assert items[f"Decision: {value}"][1] == meaning
    assert layout.decisions.next in text


def test_the_decision_column_offers_the_decision_values(worked_run: Path, rh: ModuleType, tmp_path: Path) -> None:
    run = rh.copy_run(worked_run, tmp_path / "run")
    write_reports(run)
    book = openpyxl.load_workbook(run / "reports" / "exceptions.xlsx")
    layout = load_layout()
    names = [c.name for c in layout.columns]
    column = letter(names.index("decision"))
    review = load_pack(None).review
    for fam in layout.families.values():
        sheet = book[fam.sheet]
        flags = {r: sheet.cell(row=r, column=names.index("flag_code") + 1).value for r in range(2, sheet.max_row + 1)}
        covered: list[int] = []
        for rule in sheet.data_validations.dataValidation:
            assert rule.type == "list" and rule.errorStyle == "warning"  # other values allowed, after a warning
            cells = [c for rng in rule.sqref.ranges for c in range(rng.min_row, rng.max_row + 1)]
            assert {rng.min_col for rng in rule.sqref.ranges} == {names.index("decision") + 1}, column
            # Each row offers its own flag's decisions, as the run's rule pack declares them.
            assert {rule.formula1} == {'"' + ",".join(review.choices(flags[c])) + '"' for c in cells}
            covered += cells
        assert sorted(covered) == sorted(flags), fam.sheet
    date_column = letter([c.name for c in layout.columns].index("date"))
    assert book["Prioritisation"].column_dimensions[date_column].number_format == "dd/mm/yyyy"


def test_dangerous_evidence_in_a_real_run_is_neutralised_end_to_end(worked_run: Path, rh: ModuleType,
                                                                    tmp_path: Path) -> None:
    run = rh.copy_run(worked_run, tmp_path / "run")
    exceptions = pl.read_parquet(run / "exceptions.parquet")
    payloads = [PAYLOADS[i % len(PAYLOADS)] for i in range(exceptions.height)]
    rh.rewrite(run / "exceptions.parquet", exceptions.with_columns(pl.Series("evidence", payloads)))
    write_reports(run)
    text = (run / "reports" / "exceptions.csv").read_bytes().decode("utf-8-sig")
    for row in list(csv.reader(io.StringIO(text, newline="")))[1:]:
        for cell in row:
            assert not re.match(r"[=+\-@\t\r]", cell), repr(cell)
    with zipfile.ZipFile(run / "reports" / "exceptions.xlsx") as zf:
        assert not any("<f>" in zf.read(n).decode() for n in zf.namelist())
    book = openpyxl.load_workbook(run / "reports" / "exceptions.xlsx")
    seen = {c.value for s in book.worksheets[1:] for row in s.iter_rows(min_row=2) for c in row if c.quotePrefix}
    assert set(payloads) <= seen


def test_xlsx_is_byte_identical_for_the_same_rows(tmp_path: Path) -> None:
    frame = literal_worklist()
    a = write_xlsx(frame, tmp_path / "a.xlsx", load_layout(), INFO).read_bytes()
    b = write_xlsx(frame, tmp_path / "b.xlsx", load_layout(), INFO).read_bytes()
    assert a == b


def test_column_letters() -> None:
    assert [letter(i) for i in (0, 16, 25, 26, 701, 702)] == ["A", "Q", "Z", "AA", "ZZ", "AAA"]


def test_a_broken_layout_is_refused_with_every_problem(tmp_path: Path) -> None:
    text = (reports_dir() / "exceptions.yaml").read_text(encoding="utf-8")
    text = text.replace("{name: note, header: Note, width: 24, format: wrap}", "{name: notes, header: Note, width: 24}")
    text = text.replace("{name: evidence, header: Evidence, width: 42, format: wrap}",
                        "{name: evidence, header: Evidence, width: 42, format: wrapped}")
    text = text.replace("    date: The date of the decision", "    when: The date of the decision")
    bad = tmp_path / "exceptions.yaml"
    bad.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError) as err:
        load_layout(bad)
    message = str(err.value)
    for part in ("'notes' is not a worklist column", "format 'wrapped'", "reviewer's column 'note' is missing",
                 "decisions.columns: 'when' is not a reviewer's column", "decisions.columns: 'date' is not explained"):
        assert part in message, part
    assert err.value.exit_code == 2


def test_the_staged_worklist_writes_the_bytes_of_the_one_in_memory(synth_run: Path, rh: ModuleType, tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """The reports stage the worklist on disk (built a share of patients at a time, placed in
    review order a part at a time) and write it in passes and chunks: the same rows in the
    same order, and the same files, as the worklist held whole, across shares, parts, sheets
    continued on "(2)" and XML chunks."""
    monkeypatch.setattr(worklist, "PART_ROWS", 97)
    monkeypatch.setattr(worklist, "SHARE_FLAGS", 150)
    monkeypatch.setattr(worklist, "_SHEET_ROWS", 300)
    monkeypatch.setattr(xlsx, "_CHUNK_ROWS", 41)
    run = RunFolder.open(synth_run)
    pack = frozen.load_pack(run.path)
    layout = worklist.with_vocabulary(load_layout(), pack.review)
    whole = worklist.build_worklist(run, layout, pack.review)
    staged = worklist.stage_worklist(run, layout, pack.review, tmp_path / "staged")
    assert whole.height > 3 * 97 and whole.filter(pl.col("family") == "sharing").height > 300
    assert staged.collect().equals(whole)
    for name, frame in (("whole", whole), ("lazy", staged)):
        worklist.write_worklists(frame, tmp_path / name, layout, INFO)
        write_split(frame, tmp_path / name / "split", layout, INFO, "service_line")
    assert rh.all_bytes(tmp_path / "lazy") == rh.all_bytes(tmp_path / "whole")
