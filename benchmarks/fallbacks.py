"""In-memory fallback nodes of the streamed plans a whole batch runs (a tool, not a test).

    python benchmarks/fallbacks.py EXTRACT OUT [--no-fhir] [--all]

Runs ``migrate.pipeline.run_batch`` with one partition (every FHIR job in this process) and,
before each streamed query runs (``sink_parquet``/``sink_ipc``/``sink_csv``/``sink_ndjson``,
``collect(engine="streaming")``, ``collect_batches``), asks polars for its physical plan
(``show_graph(engine="streaming", plan_stage="physical", raw_output=True)``) and notes every
node the streaming engine runs as an "in-memory engine fallback" (filled "0.0 0.3 1.0": the
node's whole input is materialised, e.g. ``replace_strict``, ``replace``, a Python UDF not
marked elementwise); ``--all`` also the "potentially memory-intensive" ones ("0.16 0.3 1.0":
sorts, joins, group-bys, in-memory sources). Prints one line per call site (the two innermost
``migrate/`` frames) with how many plans it ran and the nodes found, then removes OUT.
Plans are only inspected, never changed: the run's outputs are those of a normal run.
"""

from __future__ import annotations

import argparse
import re
import shutil
import sys
import traceback
from collections import defaultdict
from datetime import date
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import polars as pl  # noqa: E402

FALLBACK = "0.0 0.3 1.0"
INTENSIVE = "0.16 0.3 1.0"
_NODE = re.compile(r'^\d+ \[label="((?:[^"\\]|\\.)*)"(?:,style=filled,fillcolor="([^"]+)")?\];$', re.M)

found: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
plans: dict[str, int] = defaultdict(int)
failed: dict[str, str] = {}


def _site() -> str:
    root = str(Path(__file__).resolve().parent.parent / "migrate")
    frames = [f for f in traceback.extract_stack() if f.filename.startswith(root)]
    if not frames:
        return "?"
    return " <- ".join(f"{Path(f.filename).relative_to(Path(root).parent)}:{f.lineno} ({f.name})"
                       for f in reversed(frames[-2:]))


def fallback_nodes(lf: pl.LazyFrame, colours: tuple[str, ...] = (FALLBACK,)) -> list[str]:
    """The labels of ``lf``'s physical streaming nodes filled with one of ``colours``."""
    dot = lf.show_graph(engine="streaming", plan_stage="physical", raw_output=True)
    return [label.replace("\\n", " | ").replace('\\"', '"').strip(" |")
            for label, colour in _NODE.findall(dot or "") if colour in colours]


def _note(lf: pl.LazyFrame, colours: tuple[str, ...]) -> None:
    site = _site()
    plans[site] += 1
    try:
        for label in fallback_nodes(lf, colours):
            found[site][re.sub(r"_POLARS_TMP_PHYS_\d+", "_tmp", label)[:160]] += 1
    except Exception as exc:  # noqa: BLE001 - a tool: report, never fail the run
        failed[site] = f"{type(exc).__name__}: {str(exc)[:120]}"


def _wrap(colours: tuple[str, ...]) -> None:
    def around(name: str, streamed: bool = True) -> None:
        original = getattr(pl.LazyFrame, name)

        def patched(self, *args, **kwargs):  # type: ignore[no-untyped-def]
            if streamed or kwargs.get("engine") == "streaming":
                _note(self, colours)
            return original(self, *args, **kwargs)

        setattr(pl.LazyFrame, name, patched)

    for name in ("sink_parquet", "sink_ipc", "sink_csv", "sink_ndjson", "collect_batches"):
        around(name)
    around("collect", streamed=False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("extract", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--no-fhir", action="store_true")
    parser.add_argument("--all", action="store_true", help="also the potentially memory-intensive nodes")
    args = parser.parse_args()
    _wrap((FALLBACK, INTENSIVE) if args.all else (FALLBACK,))

    from migrate.pipeline import RunConfig, run_batch

    options: dict[str, object] = {"partitions": 1}
    if args.no_fhir:
        options["emit_fhir"] = False
    config = RunConfig.load(args.extract, "generic-csv", date(2022, 10, 1), args.out, **options)  # type: ignore[arg-type]
    try:
        run_batch(config)
    finally:
        shutil.rmtree(args.out, ignore_errors=True)
    for site in sorted(plans):
        nodes = found.get(site, {})
        print(f"{site}: {plans[site]} plan(s), {sum(nodes.values())} fallback node(s)"
              + (f"  [graph failed: {failed[site]}]" if site in failed else ""))
        for label, n in sorted(nodes.items()):
            print(f"    {n}× {label}")


if __name__ == "__main__":
    main()
