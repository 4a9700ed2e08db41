"""How many lines wrapped text takes in a worksheet column, so rows can be written tall enough.

Neither LibreOffice nor Excel reliably re-measures row heights when it opens a file
(LibreOffice 7.4 leaves every row at the default height and clips wrapped text), so the
writer states each row's height. The line count is a greedy word wrap, as a spreadsheet
does it, with the advance widths of Calibri 11 (Excel's default font, whose metrics
LibreOffice's Carlito shares). Breaking only at spaces is the worst case of the
spreadsheet's rules (they also break after hyphens), and the widths are rounded up, so the
count is an upper bound of what is drawn: a row may be a line too tall, never too short.

Vectorised: words are measured once per distinct word, then each line of every text is
filled at once with a binary search over cumulative widths (``numpy.searchsorted``), so
the loop runs once per line of the longest text, not once per word.
"""

from __future__ import annotations

import numpy as np
import polars as pl

LINE_PT = 15.0  # one line of Calibri 11: Excel's default row height
CHAR_PX = 7.0  # Calibri 11's digit width at 96 dpi: Excel's unit of column width
_CELL_PADDING_PX = 5.0  # a cell's margins and gridline (Excel adds 5 pixels to a width for them)
_SPACE_PX = 3.4
_OTHER_PX = 13.2  # a character not in the table: as wide as the widest ("@", "W")
_BOLD = 1.1  # bold Calibri is at most this much wider
# Advance widths (pixels at 96 dpi, rounded up) of Calibri/Carlito 11 pt, by character.
_WIDTHS = {ch: px for px, chars in (
    (3.3, "'"), (3.4, "il"), (3.5, "j"), (3.7, ",I"), (3.8, "."), (4.0, ":;"), (4.3, "`"), (4.5, "()-[]f"),
    (4.7, "J{}"), (4.8, "!"), (5.0, "t"), (5.2, "r"), (5.7, "/\\"), (5.8, "sz"), (5.9, '"'), (6.2, "L"), (6.3, "c"),
    (6.4, "x"), (6.7, "kvy"), (6.8, "?FS|"), (6.9, "Z"), (7.0, "g"), (7.1, "a"), (7.2, "ETY"), (7.3, "#*+<=>^_e~"),
    (7.5, "$0123456789"), (7.6, "P"), (7.7, "KX"), (7.8, "bdhnopqu"), (7.9, "C"), (8.0, "BR"), (8.4, "V"),
    (8.5, "A"), (9.1, "D"), (9.2, "H"), (9.3, "G"), (9.5, "NU"), (9.8, "O"), (9.9, "Q"), (10.0, "&"), (10.5, "%w"),
    (11.8, "m"), (12.6, "M"), (13.1, "W"), (13.2, "@"),
) for ch in chars}


def text_px(text: str) -> float:
    """Width in pixels of ``text`` on one line in Calibri 11 (rounded up per character)."""
    return float(sum(_SPACE_PX if ch == " " else _WIDTHS.get(ch, _OTHER_PX) for ch in text))


def _words_px(words: pl.Series) -> pl.Series:
    """``text_px`` of each word (no spaces), a character per row rather than a Python call per word."""
    chars = pl.DataFrame({"word": words}).with_row_index("i").with_columns(pl.col("word").str.split("")).explode("word")
    px = chars.with_columns(pl.col("word").replace_strict(
        list(_WIDTHS), list(_WIDTHS.values()), default=_OTHER_PX, return_dtype=pl.Float64).alias("px"))
    sums = px.group_by("i").agg(pl.col("px").sum())
    return (pl.DataFrame({"i": pl.int_range(words.len(), eager=True, dtype=pl.UInt32)})
            .join(sums, on="i", how="left").sort("i").get_column("px").fill_null(0.0))


def room_px(width_chars: float) -> float:
    """Pixels a line of text has in a column ``width_chars`` wide (Excel's width unit)."""
    return width_chars * CHAR_PX - _CELL_PADDING_PX


def wrapped_lines(texts: pl.Series, width_chars: float, bold: bool = False) -> pl.Series:
    """Lines each text takes wrapped in a column ``width_chars`` wide: 0 for null, else at
    least 1; a line break in the text starts a new line; a word wider than the column takes
    the lines its width needs (the spreadsheet breaks it between letters)."""
    texts = texts.cast(pl.String)
    distinct = texts.drop_nulls().unique()
    if distinct.len() < texts.len() // 2:  # few values (flag codes, actions): measure each once
        counts = _wrapped_lines(distinct, width_chars, bold)
        return texts.replace_strict(distinct, counts, default=0, return_dtype=pl.Int64).alias("lines")
    return _wrapped_lines(texts, width_chars, bold)


def _wrapped_lines(texts: pl.Series, width_chars: float, bold: bool) -> pl.Series:
    room = room_px(width_chars) / (_BOLD if bold else 1.0)
    segments = (pl.DataFrame({"text": texts}).with_row_index("row")
                .filter(pl.col("text").is_not_null())
                .with_columns(pl.col("text").str.split("\n")).explode("text").with_row_index("segment"))
    words = segments.select("segment", pl.col("text").str.split(" ")).explode("text")
    vocabulary = words.get_column("text").unique()
    widths = words.get_column("text").replace_strict(
        vocabulary, _words_px(vocabulary), return_dtype=pl.Float64).to_numpy()
    owner = words.get_column("segment").to_numpy()
    ends = np.searchsorted(owner, np.arange(segments.height), side="right")  # words are in segment order
    cumulative = np.cumsum(widths + _SPACE_PX)  # the width of words[:i+1], a space after each
    lines = np.zeros(segments.height, dtype=np.int64)
    pointer = np.concatenate(([0], ends[:-1])) if segments.height else np.zeros(0, dtype=np.int64)
    active = np.flatnonzero(pointer < ends)
    while active.size:
        start = pointer[active]
        before = np.where(start > 0, cumulative[start - 1], 0.0)
        # Words start..stop-1 fit on one line: their widths and the spaces between them <= room.
        stop = np.minimum(np.searchsorted(cumulative, before + room + _SPACE_PX, side="right"), ends[active])
        too_wide = stop == start
        # A word wider than a line is broken between letters: each piece fills its line to
        # within one character.
        pieces = np.ceil(widths[start] / max(room - _OTHER_PX, CHAR_PX)).astype(np.int64)
        lines[active] += np.where(too_wide, pieces, 1)
        pointer[active] = np.where(too_wide, start + 1, stop)
        active = active[pointer[active] < ends[active]]
    per_segment = segments.select("row").with_columns(pl.Series("lines", np.maximum(lines, 1)))
    counts = per_segment.group_by("row").agg(pl.col("lines").sum())
    return (pl.DataFrame({"row": pl.int_range(texts.len(), eager=True, dtype=pl.UInt32)})
            .join(counts, on="row", how="left").sort("row").get_column("lines").fill_null(0).cast(pl.Int64))
