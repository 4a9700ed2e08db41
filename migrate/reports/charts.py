"""Charts for the HTML report, drawn with matplotlib and inlined as SVG.

SVG keeps the report one self-contained file that opens offline: no image files, no
fonts to fetch (text stays text, drawn in the reader's sans-serif), no scripts. Output is
deterministic: the SVG carries no date and element ids come from a fixed salt, so the
same figures give byte-identical markup. Labels are data and drawn literally (no mathtext:
``$…$`` in a service line is text, not a formula that crashes the chart).
"""

from __future__ import annotations

import io
import re
from collections.abc import Mapping
from typing import Any

import matplotlib
from matplotlib.figure import Figure
from matplotlib.patches import Patch, PathPatch, Rectangle
from matplotlib.path import Path

from migrate.reports.flow import Flow

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
        "text.parse_math": False,  # labels are data: a "$" in a service line is a dollar, not TeX
        "text.usetex": False,
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


# --- the flow at a glance (migrate.reports.flow lays it out) --------------------------------
FLOW_COLOURS = {"migrated": "#2f855a", "already_at_target": "#2c7a7b", "merged": "#2b6cb0",
                "out_of_scope": "#718096", "withheld": "#c05621", "quarantined": "#c00000",
                "unaccounted": "#97266d"}
_FILE_COLOUR, _FHIR_COLOUR = "#4a5568", "#553c9a"
_X = ((0.26, 0.28), (0.56, 0.58), (0.86, 0.88))  # each column's node box, in axes units


def _plain(text: str) -> str:
    """Text matplotlib draws as written: a '$' would otherwise start mathtext."""
    return text.replace("$", r"\$")


def _band(x0: float, x1: float, source: tuple[float, float], target: tuple[float, float]) -> Path:
    """A band between two vertical extents, with S-curved edges (cubic Béziers)."""
    mid = (x0 + x1) / 2
    vertices = [(x0, source[1]), (mid, source[1]), (mid, target[1]), (x1, target[1]), (x1, target[0]),
                (mid, target[0]), (mid, source[0]), (x0, source[0]), (x0, source[1])]
    codes = [Path.MOVETO, Path.CURVE4, Path.CURVE4, Path.CURVE4, Path.LINETO, Path.CURVE4, Path.CURVE4,
             Path.CURVE4, Path.CLOSEPOLY]
    return Path(vertices, codes)


def flow_svg(flow: Flow) -> str:
    """The flow of source rows through dispositions to FHIR resources, as inline SVG.

    Every node and band carries an id (``flow-node-<column>-<n>``, ``flow-link-<n>``) and every
    node a label with its exact figure; empty when nothing was read.
    """
    if not flow.nodes:
        return ""
    per_column = max(sum(1 for n in flow.nodes if n.column == c) for c in range(3))
    with matplotlib.rc_context({"svg.hashsalt": "handover-flow", "svg.fonttype": "none",
                                "font.family": "sans-serif", "font.size": 9}):
        fig = Figure(figsize=(9.0, max(3.4, 0.34 * per_column + 1.4)))
        ax = fig.add_axes((0.0, 0.0, 1.0, 0.9))
        ax.set_xlim(0, 1)
        ax.set_ylim(-0.02, 1.02)
        ax.axis("off")
        colour = {n.name: FLOW_COLOURS.get(n.name, _FILE_COLOUR if n.column == 0 else _FHIR_COLOUR)
                  for n in flow.nodes}
        fhir_types = {n.name for n in flow.nodes if n.column == 2}
        for i, link in enumerate(flow.links):
            column = 1 if link.target in fhir_types else 0
            band = PathPatch(_band(_X[column][1], _X[column + 1][0], link.source_y, link.target_y),
                             facecolor=_FHIR_COLOUR if column else FLOW_COLOURS[link.target],
                             edgecolor="none", alpha=0.3)
            band.set_gid(f"flow-link-{i}")
            ax.add_patch(band)
        for i, node in enumerate(flow.nodes):
            x0, x1 = _X[node.column]
            box = Rectangle((x0, node.y0), x1 - x0, node.y1 - node.y0, facecolor=colour[node.name],
                            edgecolor="none")
            box.set_gid(f"flow-node-{node.column}-{i}")
            ax.add_patch(box)
            left = node.column == 0
            ax.text(x0 - 0.008 if left else x1 + 0.008, (node.y0 + node.y1) / 2, _plain(node.label),
                    ha="right" if left else "left", va="center",
                    bbox={"facecolor": "white", "edgecolor": "none", "alpha": 0.8, "pad": 0.6})
        heads = (f"{flow.rows_read:,} source rows read", "each with one disposition",
                 f"{flow.resources:,} FHIR resources" if flow.resources else "no FHIR output")
        for (x0, x1), head in zip(_X, heads, strict=True):
            ax.text((x0 + x1) / 2, 1.06, head, ha="center", va="bottom", fontweight="bold",
                    transform=ax.transData, clip_on=False)
        return _svg(fig)
