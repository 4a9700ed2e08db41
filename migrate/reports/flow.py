"""The flow at a glance: where every source row went, laid out for the picture that opens
reconciliation.html (drawn by ``migrate.reports.charts.flow_svg``).

Three columns: the input files (rows read), the dispositions (quarantined, merged, already
at target, out of scope, withheld, migrated) and the FHIR resources by type. A band joins a
file to a disposition with the rows of that file given that disposition; one band joins
the rows carried to FHIR (migrated and already at target) to the resources they became.
Every figure comes from the reconciliation summary — the invariant table per file and the
FHIR resource counts — so the picture and the tables cannot disagree.

Heights are proportional within a column (rows in the first two, resources in the third);
a non-empty group is never drawn thinner than ``MIN_SHARE`` of the column, so a handful of
quarantined rows stays visible among 300,000; the labels carry the exact numbers. When
the invariant fails for a file, the rows it cannot account for flow to an ``unaccounted``
node, drawn in red.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from migrate import canonical

# Top to bottom: carried to FHIR first, then what was set aside, then what was rejected.
ORDER = ("migrated", "already_at_target", "merged", "out_of_scope", "withheld", "quarantined")
CARRIED = ("migrated", "already_at_target")
UNACCOUNTED = "unaccounted"
GAP = 0.025  # between nodes of a column, as a share of its height
MIN_SHARE = 0.012


@dataclass(frozen=True)
class Node:
    """A box: its column (0 files, 1 dispositions, 2 FHIR types), name, value and vertical extent."""

    column: int
    name: str
    value: int
    y0: float
    y1: float
    label: str = ""


@dataclass(frozen=True)
class Link:
    """A band from ``source`` to ``target`` (node names) carrying ``value`` (rows; resources for
    a band into the FHIR column), with its vertical extent at each end."""

    source: str
    target: str
    value: int
    source_y: tuple[float, float]
    target_y: tuple[float, float]


@dataclass(frozen=True)
class Flow:
    """The laid-out picture: nodes, links, and the totals it states."""

    nodes: tuple[Node, ...]
    links: tuple[Link, ...]
    rows_read: int
    resources: int

    def node(self, column: int, name: str) -> Node:
        return next(n for n in self.nodes if n.column == column and n.name == name)


def spacing(count: int) -> tuple[float, float]:
    """(gap between nodes, minimum node height) for a column of ``count`` nodes: ``GAP`` and
    ``MIN_SHARE``, shrunk for a long column so the gaps and minimums never fill it."""
    gap = min(GAP, 0.25 / max(1, count - 1))
    return gap, min(MIN_SHARE, 0.5 / max(1, count))


def _stack(column: int, values: Sequence[tuple[str, int]], labels: Mapping[str, str]) -> list[Node]:
    """Nodes of one column from the top (y = 1) down, proportional with a minimum height;
    empty groups get no node."""
    items = [(name, value) for name, value in values if value > 0]
    if not items:
        return []
    gap, least = spacing(len(items))
    room = 1.0 - gap * (len(items) - 1)
    # Nodes too small for the minimum are held at it; the rest share what is left, in proportion
    # (repeated, since sharing less may push another node under the minimum).
    held: set[int] = set()
    while True:
        free = [i for i in range(len(items)) if i not in held]
        share = (room - least * len(held)) / sum(items[i][1] for i in free)
        under = {i for i in free if items[i][1] * share < least}
        if not under or len(under) == len(free):
            held |= under
            break
        held |= under
    heights = [least if i in held else value * share for i, (_, value) in enumerate(items)]
    scale = room / sum(heights)  # 1 unless every node was held at the minimum
    nodes, top = [], 1.0
    for (name, value), h in zip(items, heights, strict=True):
        nodes.append(Node(column, name, value, top - h * scale, top, labels[name]))
        top -= h * scale + gap
    return nodes


def layout(summary: Mapping[str, Any]) -> Flow:
    """The flow of ``summary`` (reconciliation.json: ``invariant``, ``control_totals.fhir``)."""
    files = summary["invariant"]["files"]
    per_file: list[tuple[str, dict[str, int]]] = []
    labels: dict[str, str] = {}
    for f in files:
        counts = {d: int(f["dispositions"].get(d, 0)) for d in canonical.DISPOSITIONS}
        read, given = int(f["rows_read"]), sum(counts.values())
        if read > given:
            counts[UNACCOUNTED] = read - given
        labels[str(f["file"])] = f"{f['file']}: {read:,} read" + (f" ({given:,} dispositions)" if given > read else "")
        if sum(counts.values()):
            per_file.append((str(f["file"]), counts))
    order = [*ORDER, UNACCOUNTED]
    file_nodes = _stack(0, [(name, sum(c.values())) for name, c in per_file], labels)
    totals = {d: sum(c.get(d, 0) for _, c in per_file) for d in order}
    disposition_nodes = _stack(1, [(d, totals[d]) for d in order],
                               {d: f"{d.replace('_', ' ')}: {n:,}" for d, n in totals.items()})
    fhir = (summary.get("control_totals") or {}).get("fhir") or {}
    types = sorted(((str(t), int(n)) for t, n in (fhir.get("resources") or {}).items()), key=lambda t: (-t[1], t[0]))
    fhir_nodes = _stack(2, types, {t: f"{t}: {n:,}" for t, n in types})

    links: list[Link] = []
    by_name = {n.name: n for n in disposition_nodes}
    filled = {n.name: n.y1 for n in disposition_nodes}  # where the next incoming band starts
    for node, (_, counts) in zip(file_nodes, per_file, strict=True):
        top = node.y1
        for d in order:
            value = counts.get(d, 0)
            if not value:
                continue
            target = by_name[d]
            src = (node.y1 - node.y0) * value / node.value
            dst = (target.y1 - target.y0) * value / target.value
            links.append(Link(node.name, d, value, (top - src, top), (filled[d] - dst, filled[d])))
            top -= src
            filled[d] -= dst
    carried = [n for n in disposition_nodes if n.name in CARRIED]
    if fhir_nodes and carried:
        # Rows carried (migrated, already at target) fan out to the resource types they became:
        # their extent is shared in proportion to the resources of each type.
        source = "+".join(n.name for n in carried)
        top, bottom = max(n.y1 for n in carried), min(n.y0 for n in carried)
        total = sum(n.value for n in fhir_nodes)
        for node in fhir_nodes:
            share = (top - bottom) * node.value / total
            links.append(Link(source, node.name, node.value, (top - share, top), (node.y0, node.y1)))
            top -= share
    return Flow(tuple(file_nodes + disposition_nodes + fhir_nodes), tuple(links),
                int(summary["invariant"]["rows_read"]), int(fhir.get("total") or 0))
