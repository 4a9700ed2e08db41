"""Exception worklists: formula neutralisation on every dangerous prefix, sheet layout."""

from __future__ import annotations

import csv
import io
import re
import zipfile
from pathlib import Path
from types import ModuleType

import openpyxl
import polars as pl
import pytest

from migrate.reports import write_reports
from migrate.reports.worklist import (
    DANGEROUS_PREFIXES,
    load_layout,
    write_csv,
    write_xlsx,
)
from migrate.reports.xlsx import letter

PAYLOADS = [p + 'cmd|" /C calc"!A0' for p in DANGEROUS_PREFIXES] + ["=HYPERLINK(\"http://x\")", "-2+3", "+1", "@SUM(A1)"]
SAFE = ["P0001", "red_flags = none", "a=b", " =not first", "knee"]


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
    path = write_xlsx(frame, tmp_path / "x.xlsx", load_layout())
    with zipfile.ZipFile(path) as zf:
        for name in zf.namelist():
            assert "<f>" not in zf.read(name).decode() and "<f " not in zf.read(name).decode(), name
        styles = zf.read("xl/styles.xml").decode()
    quoted = re.findall(r"<xf [^>]*/>", styles.split("<cellXfs")[1])[2]
    assert 'quotePrefix="1"' in quoted
    xml = sheet_xml(path, 2)  # the first family sheet (after Summary)
    cells = re.findall(r'<c r="([A-Z]+)(\d+)"([^>]*)>(.*?)</c>', xml)
    strings = [c for c in cells if 't="inlineStr"' in c[2] and int(c[1]) > 1]
    assert strings
    for col, row, attrs, body in strings:
        value = re.sub(r"<[^>]+>", "", body).replace("&amp;", "&").replace("&lt;", "<").replace("&gt;", ">")
        value = value.replace("&#13;", "\r")
        if re.match(r"[=+\-@\t\r]", value):
            assert 's="2"' in attrs, (col, row, value)
    book = openpyxl.load_workbook(path)
    sheet = book.worksheets[1]
    evidence_col = [c.name for c in load_layout().columns].index("evidence") + 1
    read = [sheet.cell(row=r, column=evidence_col) for r in range(2, frame.height + 2)]
    assert [c.value for c in read] == PAYLOADS + SAFE  # the text is kept exactly, as text
    assert all(c.data_type == "s" for c in read)
    assert all(c.quotePrefix for c in read[: len(PAYLOADS)])


def test_workbook_layout_for_clinical_leads(synth_run: Path, rh: ModuleType, tmp_path: Path) -> None:
    run = rh.copy_run(synth_run, tmp_path / "run")
    write_reports(run)
    path = run / "reports" / "exceptions.xlsx"
    layout = load_layout()
    book = openpyxl.load_workbook(path)
    assert book.sheetnames == ["Summary", *(title for title, _ in layout.families.values())]
    exceptions = pl.read_parquet(run / "exceptions.parquet")
    summary = book["Summary"]
    assert sum(summary.cell(row=r, column=3).value for r in range(2, summary.max_row + 1)) == exceptions.height
    sheet = book["Sharing blocks"]
    headers = [c.value for c in sheet[1]]
    assert headers == [c.header for c in layout.columns]
    assert headers[-4:] == ["Reviewer", "Decision", "Date", "Note"]
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
    assert all(all(v is None for v in r[-4:]) for r in rows)  # review columns left blank


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
    a = write_xlsx(frame, tmp_path / "a.xlsx", load_layout()).read_bytes()
    b = write_xlsx(frame, tmp_path / "b.xlsx", load_layout()).read_bytes()
    assert a == b


def test_column_letters() -> None:
    assert [letter(i) for i in (0, 16, 25, 26, 701, 702)] == ["A", "Q", "Z", "AA", "ZZ", "AAA"]
