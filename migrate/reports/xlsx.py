"""A small, fast, deterministic XLSX writer for worklists (SpreadsheetML, ECMA-376).

Why not xlsxwriter: measured here, it writes 400,000 worklist rows (a 1M-patient run's
exceptions) in about 26 s, a Python call per cell. This module builds each row's XML with
polars string expressions, a column at a time, and streams it into the zip: a few
seconds for the same rows. It supports only what worklists need: inline strings and
integers, a bold header row, frozen under the header, an autofilter, column widths, a
red emphasis style and Excel's ``quotePrefix`` for formula-like text.

Every string is written as an inline string (``t="inlineStr"``), which a spreadsheet never
evaluates as a formula. Zip entries carry a fixed timestamp and no document properties
are written, so the same frames give a byte-identical file.
"""

from __future__ import annotations

import zipfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import polars as pl

STYLE_NORMAL, STYLE_HEADER, STYLE_QUOTED, STYLE_ALERT = 0, 1, 2, 3
_FORMULA_LIKE = r"^[=+\-@\t\r]"
_ILLEGAL_XML = r"[\x00-\x08\x0B\x0C\x0E-\x1F\uFFFE\uFFFF]"
_EPOCH = (1980, 1, 1, 0, 0, 0)
_CHUNK_ROWS = 20_000
_NS = ('xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main" '
       'xmlns:r="http://schemas.openxmlformats.org/officeDocument/2006/relationships"')
_HEAD = '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n'
_INVALID_SHEET_CHARS = str.maketrans({c: " " for c in "[]:*?/\\"})


@dataclass(frozen=True)
class Column:
    """A worksheet column: the frame column it shows, its header and width in characters."""

    name: str
    header: str
    width: float


@dataclass(frozen=True)
class Sheet:
    """One worksheet: a frame (string and integer columns) shown through ``columns``.

    ``emphasis`` maps a column to values drawn in a given style (e.g. critical in red).
    """

    title: str
    frame: pl.DataFrame
    columns: tuple[Column, ...]
    emphasis: Mapping[str, Mapping[str, int]] = field(default_factory=dict)


def letter(index: int) -> str:
    """Spreadsheet column letters of 0-based ``index`` (0 -> A, 26 -> AA)."""
    out = ""
    index += 1
    while index:
        index, rem = divmod(index - 1, 26)
        out = chr(65 + rem) + out
    return out


def escape(text: pl.Expr) -> pl.Expr:
    """XML text content: markup characters escaped, characters XML 1.0 forbids dropped."""
    return (text.str.replace_all(_ILLEGAL_XML, "").str.replace_all("&", "&amp;", literal=True)
            .str.replace_all("<", "&lt;", literal=True).str.replace_all(">", "&gt;", literal=True)
            # A bare CR would be read back as LF; keep it as a character reference.
            .str.replace_all("\r", "&#13;", literal=True))


def _escape_py(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace('"', "&quot;")


def _cell(frame: pl.DataFrame, col: Column, index: int, emphasis: Mapping[str, int]) -> pl.Expr:
    """The ``<c>`` element of column ``col`` for every row; null where the value is null.

    ``_r`` is the row number as text. Work a column does not need is left out: the
    quote-prefix test when no value is formula-like, escaping when nothing needs it.
    """
    ref = pl.lit(f'<c r="{letter(index)}') + pl.col("_r") + pl.lit('"')
    value = pl.col(col.name)
    if frame.schema[col.name].is_integer():
        return ref + pl.lit("><v>") + value.cast(pl.String) + pl.lit("</v></c>")
    text = value.cast(pl.String)
    column = frame.get_column(col.name).cast(pl.String)
    # The first matching style wins: formula-like text is always quote-prefixed.
    choices = [(text.str.contains(_FORMULA_LIKE), STYLE_QUOTED)] if column.str.contains(_FORMULA_LIKE).any() else []
    choices += [(text == v, s) for v, s in emphasis.items()]
    style: pl.Expr = pl.lit("")
    for cond, style_id in reversed(choices):
        style = pl.when(cond).then(pl.lit(f' s="{style_id}"')).otherwise(style)
    body = escape(text) if column.str.contains(r"[&<>\r\x00-\x08\x0B\x0C\x0E-\x1F\uFFFE\uFFFF]").any() else text
    return ref + style + pl.lit(' t="inlineStr"><is><t xml:space="preserve">') + body + pl.lit("</t></is></c>")


def _sheet_xml(sheet: Sheet, selected: bool) -> list[str]:
    """The worksheet document, in pieces (row XML is built a chunk of rows at a time)."""
    cols = sheet.columns
    last = f"{letter(len(cols) - 1)}{sheet.frame.height + 1}"
    tab = ' tabSelected="1"' if selected else ""
    head = [
        _HEAD, f"<worksheet {_NS}>", f'<dimension ref="A1:{last}"/>',
        (f'<sheetViews><sheetView{tab} workbookViewId="0">'
         '<pane ySplit="1" topLeftCell="A2" activePane="bottomLeft" state="frozen"/>'
         '<selection pane="bottomLeft" activeCell="A2" sqref="A2"/></sheetView></sheetViews>'),
        '<sheetFormatPr defaultRowHeight="15"/><cols>',
        *(f'<col min="{i + 1}" max="{i + 1}" width="{c.width:g}" customWidth="1"/>' for i, c in enumerate(cols)),
        '</cols><sheetData><row r="1">',
        *(f'<c r="{letter(i)}1" s="{STYLE_HEADER}" t="inlineStr"><is><t>{_escape_py(c.header)}</t></is></c>'
          for i, c in enumerate(cols)),
        "</row>",
    ]
    # A column with no value at all (the reviewer's) writes no cells.
    used = [(i, c) for i, c in enumerate(cols) if sheet.frame.get_column(c.name).null_count() < sheet.frame.height]
    cells = [_cell(sheet.frame, c, i, sheet.emphasis.get(c.name, {})) for i, c in used]
    row_xml = pl.concat_str([pl.lit('<row r="') + pl.col("_r") + pl.lit('">'), *cells, pl.lit("</row>")],
                            ignore_nulls=True)  # a null value is a missing cell
    body = [
        chunk.with_columns(pl.int_range(offset + 2, offset + 2 + pl.len(), dtype=pl.Int64).cast(pl.String).alias("_r"))
        .select(row_xml).to_series().str.join("").item()
        for offset, chunk in ((o, sheet.frame.slice(o, _CHUNK_ROWS)) for o in range(0, sheet.frame.height, _CHUNK_ROWS))
    ]
    tail = ["</sheetData>", f'<autoFilter ref="A1:{last}"/>',
            '<pageMargins left="0.7" right="0.7" top="0.75" bottom="0.75" header="0.3" footer="0.3"/></worksheet>']
    return head + body + tail


_STYLES = (
    _HEAD + '<styleSheet xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main">'
    '<fonts count="3"><font><sz val="11"/><name val="Calibri"/><family val="2"/></font>'
    '<font><b/><sz val="11"/><name val="Calibri"/><family val="2"/></font>'
    '<font><b/><sz val="11"/><color rgb="FFC00000"/><name val="Calibri"/><family val="2"/></font></fonts>'
    '<fills count="3"><fill><patternFill patternType="none"/></fill><fill><patternFill patternType="gray125"/></fill>'
    '<fill><patternFill patternType="solid"><fgColor rgb="FFD9E1F2"/><bgColor indexed="64"/></patternFill></fill>'
    '</fills><borders count="1"><border><left/><right/><top/><bottom/><diagonal/></border></borders>'
    '<cellStyleXfs count="1"><xf numFmtId="0" fontId="0" fillId="0" borderId="0"/></cellStyleXfs>'
    '<cellXfs count="4"><xf numFmtId="0" fontId="0" fillId="0" borderId="0" xfId="0"/>'
    '<xf numFmtId="0" fontId="1" fillId="2" borderId="0" xfId="0" applyFont="1" applyFill="1"/>'
    '<xf numFmtId="0" fontId="0" fillId="0" borderId="0" xfId="0" quotePrefix="1"/>'
    '<xf numFmtId="0" fontId="2" fillId="0" borderId="0" xfId="0" applyFont="1"/></cellXfs>'
    '<cellStyles count="1"><cellStyle name="Normal" xfId="0" builtinId="0"/></cellStyles></styleSheet>'
)


def sheet_titles(sheets: list[Sheet]) -> list[str]:
    """Valid, unique sheet titles: forbidden characters replaced, at most 31 characters."""
    titles: list[str] = []
    for sheet in sheets:
        base = sheet.title.translate(_INVALID_SHEET_CHARS).strip("'")[:31] or "Sheet"
        title, n = base, 1
        while title.lower() in (t.lower() for t in titles):
            n += 1
            title = f"{base[:27]} ({n})"
        titles.append(title)
    return titles


def write_workbook(path: Path, sheets: list[Sheet]) -> None:
    """Write ``sheets`` as an XLSX workbook at ``path`` (overwriting it)."""
    titles = sheet_titles(sheets)
    n = len(sheets)
    workbook = [
        _HEAD, f"<workbook {_NS}><bookViews><workbookView/></bookViews><sheets>",
        *(f'<sheet name="{_escape_py(t)}" sheetId="{i + 1}" r:id="rId{i + 1}"/>' for i, t in enumerate(titles)),
        "</sheets><definedNames>",
        # Excel keeps the autofilter range in this hidden name; without it some versions drop the filter.
        *(f'<definedName name="_xlnm._FilterDatabase" localSheetId="{i}" hidden="1">'
          f"'{_escape_py(t.replace(chr(39), chr(39) * 2))}'!$A$1:${letter(len(s.columns) - 1)}${s.frame.height + 1}"
          "</definedName>" for i, (t, s) in enumerate(zip(titles, sheets, strict=True))),
        "</definedNames></workbook>",
    ]
    rels = [
        _HEAD, '<Relationships xmlns="http://schemas.openxmlformats.org/package/2006/relationships">',
        *(f'<Relationship Id="rId{i + 1}" Type="http://schemas.openxmlformats.org/officeDocument/2006/relationships/'
          f'worksheet" Target="worksheets/sheet{i + 1}.xml"/>' for i in range(n)),
        (f'<Relationship Id="rId{n + 1}" Type="http://schemas.openxmlformats.org/officeDocument/2006/relationships/'
         'styles" Target="styles.xml"/></Relationships>'),
    ]
    types = [
        _HEAD, '<Types xmlns="http://schemas.openxmlformats.org/package/2006/content-types">',
        '<Default Extension="rels" ContentType="application/vnd.openxmlformats-package.relationships+xml"/>',
        '<Default Extension="xml" ContentType="application/xml"/>',
        ('<Override PartName="/xl/workbook.xml" '
         'ContentType="application/vnd.openxmlformats-officedocument.spreadsheetml.sheet.main+xml"/>'),
        ('<Override PartName="/xl/styles.xml" '
         'ContentType="application/vnd.openxmlformats-officedocument.spreadsheetml.styles+xml"/>'),
        *(f'<Override PartName="/xl/worksheets/sheet{i + 1}.xml" '
          'ContentType="application/vnd.openxmlformats-officedocument.spreadsheetml.worksheet+xml"/>'
          for i in range(n)),
        "</Types>",
    ]
    root_rels = (
        _HEAD + '<Relationships xmlns="http://schemas.openxmlformats.org/package/2006/relationships">'
        '<Relationship Id="rId1" Type="http://schemas.openxmlformats.org/officeDocument/2006/relationships/'
        'officeDocument" Target="xl/workbook.xml"/></Relationships>'
    )
    # Level 1: about twice as fast as the default on 100 MB of sheet XML, files ~25% larger.
    with zipfile.ZipFile(path, "w", compresslevel=1) as zf:
        def put(name: str, parts: list[str] | str) -> None:
            info = zipfile.ZipInfo(name, date_time=_EPOCH)
            info.compress_type = zipfile.ZIP_DEFLATED
            with zf.open(info, "w") as fh:
                for part in [parts] if isinstance(parts, str) else parts:
                    fh.write(part.encode("utf-8"))

        put("[Content_Types].xml", types)
        put("_rels/.rels", root_rels)
        put("xl/workbook.xml", workbook)
        put("xl/_rels/workbook.xml.rels", rels)
        put("xl/styles.xml", _STYLES)
        for i, sheet in enumerate(sheets):
            put(f"xl/worksheets/sheet{i + 1}.xml", _sheet_xml(sheet, selected=i == 0))
