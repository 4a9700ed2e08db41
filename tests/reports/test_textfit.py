"""Row heights: the estimated wrapped lines are never fewer than a spreadsheet draws.

The reference is an independent greedy word wrap measured with the real font (Carlito,
Calibri's metric twin, which LibreOffice prints with; Debian fonts-crosextra-carlito,
installed by .ci/run): whole strings measured with their kerning, words longer than the
line broken between letters, as LibreOffice and Excel break them.
"""

from __future__ import annotations

import os
from pathlib import Path

import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from migrate.reports import textfit

CARLITO = Path("/usr/share/fonts/truetype/crosextra/Carlito-Regular.ttf")


@pytest.fixture(scope="module")
def font() -> object:
    if not CARLITO.is_file():
        if os.environ.get("CI"):
            pytest.fail(f"{CARLITO} is missing: .ci/run installs fonts-crosextra-carlito")
        pytest.skip("Carlito is not installed (apt-get install fonts-crosextra-carlito)")
    from PIL import ImageFont

    return ImageFont.truetype(str(CARLITO), size=11 * 96 / 72)  # 11 pt at 96 dpi, as Excel measures


def drawn_lines(font: object, text: str, width_chars: float) -> int:
    """Lines ``text`` takes, wrapped greedily at spaces in ``width_chars`` (the reference)."""
    room = textfit.room_px(width_chars)
    measure = font.getlength  # type: ignore[attr-defined]
    total = 0
    for segment in text.split("\n"):
        line, lines = "", 1
        for word in segment.split(" "):
            candidate = f"{line} {word}" if line else word
            if not line or measure(candidate) <= room:
                line = candidate
            else:
                lines, line = lines + 1, word
            while measure(line) > room and len(line) > 1:  # too wide: break between letters
                cut = max(n for n in range(1, len(line)) if measure(line[:n]) <= room or n == 1)
                lines, line = lines + 1, line[cut:]
        total += lines
    return total


TEXT = st.text(alphabet=st.sampled_from("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_=;,.-:/() "
                                        "mmmWW@%\n"), max_size=300)


@settings(max_examples=300, deadline=None)
@given(st.lists(TEXT, min_size=1, max_size=8), st.sampled_from([8, 11, 16, 26, 42, 76]))
def test_the_estimate_never_falls_short_of_the_drawn_lines(font: object, texts: list[str], width: int) -> None:
    estimated = textfit.wrapped_lines(pl.Series(texts, dtype=pl.String), width).to_list()
    for text, lines in zip(texts, estimated, strict=True):
        assert lines >= drawn_lines(font, text, width), (text, width)


def test_real_evidence_is_estimated_closely(font: object, worked_run: Path) -> None:
    """On the rules' own evidence text the estimate is an upper bound, and rarely a line over."""
    evidence = pl.read_parquet(worked_run / "exceptions.parquet")["evidence"]
    estimated = textfit.wrapped_lines(evidence, 42).to_list()
    drawn = [drawn_lines(font, t, 42) for t in evidence.to_list()]
    assert all(e >= d for e, d in zip(estimated, drawn, strict=True))
    assert sum(estimated) <= 1.2 * sum(drawn)


def test_nulls_take_no_line_and_line_breaks_start_new_lines() -> None:
    lines = textfit.wrapped_lines(pl.Series(["", None, "a\nb", "a\n\nb", "x " * 100], dtype=pl.String), 10)
    assert lines.to_list()[:4] == [1, 0, 2, 3]
    assert lines[4] > 5
