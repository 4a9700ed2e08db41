"""The flow at a glance: the picture's figures are the invariant table's, and its geometry holds.

Checked on real runs (the worked example, the synthetic extract) against reconciliation.json,
and with hypothesis over arbitrary per-file disposition counts (empty files, one quarantined
row among millions, a broken invariant) for the layout's invariants.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from migrate import canonical
from migrate.reports.charts import flow_svg
from migrate.reports.flow import GAP, MIN_SHARE, UNACCOUNTED, Flow, layout, spacing

EPS = 1e-9


def _summary(run: Path) -> dict[str, Any]:
    return json.loads((run / "reports" / "reconciliation.json").read_text(encoding="utf-8"))


def _check_figures(summary: dict[str, Any], flow: Flow) -> None:
    """Every band and box carries the invariant table's (and the FHIR table's) figure."""
    inv = summary["invariant"]
    assert flow.rows_read == inv["rows_read"]
    for f in inv["files"]:
        out = {link.target: link.value for link in flow.links if link.source == f["file"]}
        assert out == {d: n for d, n in f["dispositions"].items() if n} | (
            {UNACCOUNTED: f["rows_read"] - f["total"]} if f["rows_read"] > f["total"] else {})
        if f["rows_read"]:
            assert flow.node(0, f["file"]).label.startswith(f"{f['file']}: {f['rows_read']:,} read")
    for d, n in inv["dispositions"].items():
        if n:
            assert flow.node(1, d).value == n and flow.node(1, d).label == f"{d.replace('_', ' ')}: {n:,}"
        else:
            assert not any(node.name == d for node in flow.nodes)
    fhir = summary["control_totals"]["fhir"]
    assert {n.name: n.value for n in flow.nodes if n.column == 2} == {t: n for t, n in fhir["resources"].items() if n}
    assert flow.resources == fhir["total"]
    into_fhir = [link for link in flow.links if link.target in fhir["resources"]]
    carried = inv["dispositions"]["migrated"] + inv["dispositions"]["already_at_target"]
    assert sum(link.value for link in into_fhir) == (fhir["total"] if carried else 0)


def _check_geometry(flow: Flow) -> None:
    """Boxes inside the picture, apart, at least the minimum height; bands inside their boxes."""
    for column in range(3):
        nodes = sorted((n for n in flow.nodes if n.column == column), key=lambda n: -n.y1)
        gap, least = spacing(len(nodes))
        assert gap <= GAP and least <= MIN_SHARE
        for node in nodes:
            assert -EPS <= node.y0 < node.y1 <= 1 + EPS
            assert node.y1 - node.y0 >= least - EPS
        for upper, lower in zip(nodes, nodes[1:]):
            assert lower.y1 <= upper.y0 - gap + EPS
        # Above the minimum, heights are in proportion to the figures.
        free = [n for n in nodes if n.y1 - n.y0 > least + EPS]
        for a, b in zip(free, free[1:]):
            per_a, per_b = (a.y1 - a.y0) / a.value, (b.y1 - b.y0) / b.value
            assert abs(per_a - per_b) <= 1e-6 * max(per_a, per_b)
    boxes = {(n.column, n.name): n for n in flow.nodes}
    for link in flow.links:
        target_column = 2 if (2, link.target) in boxes else 1
        target = boxes[(target_column, link.target)]
        assert target.y0 - EPS <= link.target_y[0] < link.target_y[1] <= target.y1 + EPS
        sources = [boxes[(target_column - 1, name)] for name in link.source.split("+")]
        assert min(s.y0 for s in sources) - EPS <= link.source_y[0] < link.source_y[1] <= max(
            s.y1 for s in sources) + EPS
    # Bands leaving one box do not overlap.
    for node in flow.nodes:
        spans = sorted(link.source_y for link in flow.links if link.source == node.name)
        for (_, top), (bottom, _) in zip(spans, spans[1:]):
            assert top <= bottom + EPS


def test_the_picture_matches_the_invariant_table_of_real_runs(worked_run: Path, synth_run: Path) -> None:
    for run in (worked_run, synth_run):
        summary = _summary(run)
        flow = layout(summary)
        _check_figures(summary, flow)
        _check_geometry(flow)


def test_the_svg_names_every_box_with_its_exact_figure(synth_run: Path) -> None:
    flow = layout(_summary(synth_run))
    svg = flow_svg(flow)
    assert svg.startswith("<svg") and "<script" not in svg
    for node in flow.nodes:
        assert f">{node.label}<" in svg, node.label
    assert svg.count('id="flow-node-') == len(flow.nodes)
    assert svg.count('id="flow-link-') == len(flow.links)
    assert svg == flow_svg(layout(_summary(synth_run)))  # deterministic


def _summary_of(files: list[tuple[str, int, dict[str, int]]], resources: dict[str, int]) -> dict[str, Any]:
    rows = [{"file": name, "rows_read": read, "dispositions": {d: counts.get(d, 0) for d in canonical.DISPOSITIONS},
             "total": sum(counts.values())} for name, read, counts in files]
    return {"invariant": {"rows_read": sum(r["rows_read"] for r in rows), "files": rows,
                          "dispositions": {d: sum(r["dispositions"][d] for r in rows) for d in canonical.DISPOSITIONS}},
            "control_totals": {"fhir": {"present": bool(resources), "resources": resources,
                                        "total": sum(resources.values())}}}


_COUNT = st.one_of(st.just(0), st.integers(1, 5), st.integers(1, 5_000_000))
_FILE = st.tuples(st.dictionaries(st.sampled_from(canonical.DISPOSITIONS), _COUNT), st.integers(-3, 3))



@settings(max_examples=150, deadline=None)
@given(files=st.lists(_FILE, min_size=1, max_size=40),
       resources=st.dictionaries(st.sampled_from(["Patient", "ServiceRequest", "Encounter", "Flag", "Consent"]),
                                 st.integers(1, 2_000_000)))
def test_any_counts_give_a_sound_picture(files: list[tuple[dict[str, int], int]], resources: dict[str, int]) -> None:
    rows = [(f"file-{i}$x.csv", max(0, sum(c.values()) + skew), c) for i, (c, skew) in enumerate(files)]
    summary = _summary_of(rows, resources)
    flow = layout(summary)
    _check_figures(summary, flow)
    _check_geometry(flow)
    if any(read > sum(c.values()) for _, read, c in rows):
        assert flow.node(1, UNACCOUNTED).value == sum(max(0, read - sum(c.values())) for _, read, c in rows)


def test_a_dollar_in_a_file_name_is_drawn_as_written() -> None:
    summary = _summary_of([("cost$ and $ref.csv", 10, {"migrated": 9, "quarantined": 1})], {"Patient": 3})
    svg = flow_svg(layout(summary))
    assert ">cost$ and $ref.csv: 10 read<" in svg


def test_nothing_read_draws_nothing() -> None:
    assert flow_svg(layout(_summary_of([("empty.csv", 0, {})], {}))) == ""
