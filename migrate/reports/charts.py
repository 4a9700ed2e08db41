"""Charts for the HTML report, drawn with matplotlib and inlined as SVG.

SVG keeps the report one self-contained file that opens offline: no image files, no
fonts to fetch (text stays text, drawn in the reader's sans-serif), no scripts. Output is
deterministic: the SVG carries no date and element ids come from a fixed salt, so the
same figures give byte-identical markup.
"""

from __future__ import annotations

import io
import re
from collections.abc import Mapping
from typing import Any

import matplotlib
from matplotlib.figure import Figure
from matplotlib.patches import Patch

_COLOURS = {"seen": "#2b6cb0", "waiting": "#c05621"}
_LABELS = {"seen": "referral → first attended contact", "waiting": "waiting at the cut-over, not yet seen"}


def _svg(fig: Figure) -> str:
    """The figure as an inline ``<svg>`` element (no XML prolog or DOCTYPE)."""
    buffer = io.StringIO()
    fig.savefig(buffer, format="svg", metadata={"Date": None, "Creator": None}, bbox_inches="tight")
    text = buffer.getvalue()
    return re.sub(r"\A.*?(?=<svg)", "", text, flags=re.DOTALL).strip()


def waits_svg(waits: Mapping[str, Any]) -> str:
    """Horizontal box plots per service line: days seen and days waiting (empty when no data)."""
    lines = list(waits.get("service_lines", []))
    if not lines:
        return ""
    with matplotlib.rc_context({
        "svg.hashsalt": "handover",  # stable element ids
        "svg.fonttype": "none",  # text as <text>, not glyph paths: smaller, searchable
        "font.family": "sans-serif",
        "font.size": 9,
    }):
        fig = Figure(figsize=(8.0, 0.5 * len(lines) + 1.3))
        ax = fig.add_subplot()
        # Top to bottom in name order; per line the two measures sit just above and below its tick.
        for row, line in enumerate(reversed(lines)):
            for measure, offset in (("seen", 0.18), ("waiting", -0.18)):
                stats = line.get(measure)
                if not stats:
                    continue
                box = {"med": stats["median"], "q1": stats["q1"], "q3": stats["q3"], "whislo": stats["p5"],
                       "whishi": stats["p95"], "fliers": [], "label": ""}
                artists = ax.bxp([box], positions=[row + offset], orientation="horizontal", widths=0.3,
                                 showfliers=False, patch_artist=True,
                                 medianprops={"color": "#1a202c", "linewidth": 1.5})
                for patch in artists["boxes"]:
                    patch.set_facecolor(_COLOURS[measure])
                    patch.set_alpha(0.8)
        ax.set_yticks(range(len(lines)), [str(line["service_line"]) for line in reversed(lines)])
        ax.set_ylim(-0.6, len(lines) - 0.4)
        ax.set_xlabel("days (box: quartiles and median; whiskers: 5th–95th percentile)")
        ax.grid(axis="x", alpha=0.3)
        handles = [Patch(color=c, alpha=0.8, label=_LABELS[m]) for m, c in _COLOURS.items()]
        ax.legend(handles=handles, loc="lower center", bbox_to_anchor=(0.5, 1.0), ncols=2, frameon=False)
        return _svg(fig)
