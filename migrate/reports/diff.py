"""The delta between two runs (``handover diff RUN_A RUN_B``): who is new, gone, changed.

Patients are matched on ``patient_key``. A patient changed when the content of any of
their canonical rows (patients, referrals, contacts, codes; every column but
``source_file`` and ``source_row``, which move when an extract is re-cut) differs: each
row is hashed and each patient's hashes are combined per table as a multiset (sums of
their low and high 32 bits, and the row count), so row order never matters and a million
patients cost one group_by per table; sums of 32-bit halves cannot overflow 64 bits. Cohort moves compare
each patient's (and each referral's) cohort; flags raised and cleared compare
(flag_code, subject_key) pairs of ``exceptions.parquet``. ``config`` names every part of
the configuration the two runs did not share (read from each run's frozen ``config/`` and
options), since a flag can move because the rules changed, not the extract; ``decisions``
names the reviewers' decisions applied in one run and not the other (``decisions.parquet``,
matched on ``decision_id``), since a patient can move list because a clinician moved them.

Both runs are hashed in one process, so polars' (version-specific) row hash is the same
function on both sides.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import polars as pl
from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from migrate import canonical, frozen
from migrate.reports.rundata import CANONICAL_TABLES, TRACE_COLUMNS, RunFolder, reading

SHOWN_IDS = 5  # ids named per line in the terminal rendering


def _table_hashes(run: RunFolder, table: str) -> pl.LazyFrame:
    """patient_key and one hash of all the patient's rows of ``table``."""
    frame = run.canonical(table)
    schema = frame.collect_schema()
    # Enums hash by their physical index: compare their text so a grown enum is no change.
    cols = [pl.col(c).cast(pl.String) if isinstance(t, (pl.Enum, pl.Categorical)) else pl.col(c)
            for c, t in schema.items() if c not in TRACE_COLUMNS]
    h = pl.struct(cols).hash(seed=0)
    return (frame.select("patient_key", (h & 0xFFFFFFFF).alias("lo"), (h // (1 << 32)).alias("hi"))
            .group_by("patient_key").agg(pl.col("lo").sum(), pl.col("hi").sum(), pl.len().alias("n"))
            .select("patient_key", pl.struct("lo", "hi", "n").hash(seed=0).alias(table)))


def patient_hashes(run: RunFolder) -> pl.LazyFrame:
    """One row per patient with a content hash per canonical table (0 where they have no row)."""
    frame = run.canonical("patients").select("patient_key").unique()
    for table in CANONICAL_TABLES:
        frame = frame.join(_table_hashes(run, table), on="patient_key", how="left")
    return frame.with_columns(pl.col(CANONICAL_TABLES).fill_null(0))


def _moves(a: pl.LazyFrame, b: pl.LazyFrame, key: str, column: str) -> list[dict[str, Any]]:
    """(from, to, count, ids) for every key whose ``column`` differs between a and b."""
    def text(frame: pl.LazyFrame, alias: str) -> pl.LazyFrame:
        return frame.select(key, pl.col(column).cast(pl.String).fill_null("none").alias(alias))

    # memory: grows with the difference: every moved key (``handover diff`` lists them all)
    moved = (text(a, "from").join(text(b, "to"), on=key).filter(pl.col("from") != pl.col("to"))
             .group_by("from", "to").agg(pl.len().alias("count"), pl.col(key).sort().alias("ids")).collect(engine="streaming"))
    rank = {c: i for i, c in enumerate((*canonical.COHORTS, "none"))}
    rows = [{"from": f, "to": t, "count": int(n), "ids": list(ids)} for f, t, n, ids in moved.iter_rows()]
    return sorted(rows, key=lambda r: (rank.get(r["from"], 99), rank.get(r["to"], 99), r["from"], r["to"]))


def _flag_changes(a: RunFolder, b: RunFolder) -> dict[str, list[dict[str, Any]]]:
    def pairs(run: RunFolder) -> pl.LazyFrame:
        return run.scan("exceptions.parquet").select("flag_code", "subject_key").unique()

    out: dict[str, list[dict[str, Any]]] = {}
    for name, (left, right) in {"raised": (pairs(b), pairs(a)), "cleared": (pairs(a), pairs(b))}.items():
        # memory: grows with the difference: every raised or cleared (flag, subject) (``handover diff`` lists them
        # all)
        rows = (left.join(right, on=["flag_code", "subject_key"], how="anti").group_by("flag_code")
                .agg(pl.len().alias("count"), pl.col("subject_key").sort().alias("subject_ids"))
                .sort("flag_code").collect())
        out[name] = [{"flag_code": c, "count": int(n), "subject_ids": list(ids)} for c, n, ids in rows.iter_rows()]
    return out


def _applied(run: RunFolder) -> pl.DataFrame:
    """decision_id, decision, flag_code, subject_key of each decision applied in ``run``
    (none when it read no decisions)."""
    columns = ("decision_id", "decision", "flag_code", "subject_key")
    if not run.has("decisions.parquet"):
        return pl.DataFrame(schema=dict.fromkeys(columns, pl.String()))
    # memory: the applied decisions (reviewers' rows: few)
    return (run.scan("decisions.parquet").filter(pl.col("status") == "applied").select(columns)
            .unique("decision_id").collect())


def _decision_changes(a: RunFolder, b: RunFolder) -> dict[str, list[dict[str, Any]]]:
    """Decisions ``applied`` in run B and not in A, and ``no_longer_applied`` (in A, not B):
    per (decision, flag) the count and the subjects."""
    applied_a, applied_b = _applied(a), _applied(b)
    out: dict[str, list[dict[str, Any]]] = {}
    for name, (left, right) in {"applied": (applied_b, applied_a), "no_longer_applied": (applied_a, applied_b)}.items():
        rows = (left.join(right, on="decision_id", how="anti").group_by("decision", "flag_code")
                .agg(pl.len().alias("count"), pl.col("subject_key").sort().alias("subject_ids"))
                .sort("decision", "flag_code"))
        out[name] = [{"decision": d, "flag_code": f, "count": int(n), "subject_ids": list(ids)}
                     for d, f, n, ids in rows.iter_rows()]
    return out


@dataclass
class RunDiff:
    """What changed from run A to run B; ``asdict`` is JSON-serialisable."""

    run_a: dict[str, Any]
    run_b: dict[str, Any]
    patients: dict[str, Any] = field(default_factory=dict)
    cohort_moves: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    flags: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    config: list[dict[str, Any]] = field(default_factory=list)
    decisions: dict[str, list[dict[str, Any]]] = field(default_factory=dict)

    def asdict(self) -> dict[str, Any]:
        """Plain data (sorted id lists) for reconciliation.json and ``--json``."""
        return {"run_a": self.run_a, "run_b": self.run_b, "patients": self.patients,
                "cohort_moves": self.cohort_moves, "flags": self.flags, "config": self.config,
                "decisions": self.decisions}

    def __rich__(self) -> RenderableType:
        return Group(*diff_renderables(self.asdict()))


def _ids(ids: list[str]) -> str:
    shown = ", ".join(ids[:SHOWN_IDS])
    return shown + (f" … (+{len(ids) - SHOWN_IDS:,})" if len(ids) > SHOWN_IDS else "")


def _table(title: str, columns: tuple[str, ...], ids_width: int, rows: list[tuple[Any, ...]]) -> list[Table]:
    """One rich table (none when there are no rows): text columns, then a count and the ids
    (the last two columns of every row)."""
    if not rows:
        return []
    t = Table(title=title, title_justify="left")
    for col in columns:
        t.add_column(col, justify="right" if col == "count" else "left", overflow="fold",
                     max_width=ids_width if col == columns[-1] else None)
    for *texts, count, ids in rows:
        t.add_row(*texts, f"{count:,}", Text(_ids(ids)))
    return [t]


def diff_renderables(diff: dict[str, Any]) -> list[RenderableType]:
    """Rich tables of a diff (``RunDiff.asdict()``), each within 100 columns."""
    p = diff["patients"]
    head = Text(f"Run {diff['run_a'].get('run_id')} → {diff['run_b'].get('run_id')}: {p['new']['count']:,} new, "
                f"{p['gone']['count']:,} gone, {p['changed']['count']:,} changed, {p['unchanged']:,} unchanged "
                "patients")
    patients = Table(title="Patients", title_justify="left")
    patients.add_column("change")
    patients.add_column("patients", justify="right")
    patients.add_column("ids", overflow="fold", max_width=60)
    for name in ("new", "gone", "changed"):
        patients.add_row(name, f"{p[name]['count']:,}", Text(_ids(p[name]["ids"])))
    out: list[RenderableType] = [head, patients]
    if diff.get("config"):
        changed = ", ".join(c["part"] for c in diff["config"])
        out.append(Text(f"Configuration differs between the runs ({changed}): flags and cohorts may move "
                        "because of it, not only because the extract changed", style="yellow"))
    for level in ("patients", "referrals"):
        out += _table(f"Cohort moves ({level})", ("from", "to", "count", "ids"), 60,
                      [(m["from"], m["to"], m["count"], m["ids"]) for m in diff["cohort_moves"].get(level) or []])
    for name in ("raised", "cleared"):
        out += _table(f"Flags {name}", ("flag", "count", "subjects"), 50,
                      [(r["flag_code"], r["count"], r["subject_ids"]) for r in diff["flags"].get(name) or []])
    for name, title in (("applied", "Decisions applied in run B only"),
                        ("no_longer_applied", "Decisions no longer applied")):
        out += _table(title, ("decision", "flag", "count", "subjects"), 40,
                      [(r["decision"], r["flag_code"], r["count"], r["subject_ids"])
                       for r in (diff.get("decisions") or {}).get(name) or []])
    return out


def diff_runs(run_a: Path, run_b: Path) -> RunDiff:
    """The delta from ``run_a`` to ``run_b`` (see the module docstring)."""
    a, b = RunFolder.open(run_a), RunFolder.open(run_b)
    with reading(run_a), reading(run_b):
        return _diff(a, b, run_a, run_b)


def _diff(a: RunFolder, b: RunFolder, run_a: Path, run_b: Path) -> RunDiff:
    # Streaming: rows are hashed a batch at a time, never all of contacts in memory at once.
    ha, hb = pl.collect_all([patient_hashes(a), patient_hashes(b)], engine="streaming")
    keys_a, keys_b = set(ha["patient_key"].to_list()), set(hb["patient_key"].to_list())
    both = ha.join(hb, on="patient_key", suffix="_b")
    differs = {t: pl.col(t) != pl.col(f"{t}_b") for t in CANONICAL_TABLES}
    changed = both.filter(pl.any_horizontal(differs.values())).sort("patient_key")
    diff = RunDiff(
        run_a={"run_id": a.run_id, "path": str(run_a)},
        run_b={"run_id": b.run_id, "path": str(run_b)},
        patients={
            "new": {"count": len(keys_b - keys_a), "ids": sorted(keys_b - keys_a)},
            "gone": {"count": len(keys_a - keys_b), "ids": sorted(keys_a - keys_b)},
            "changed": {"count": changed.height, "ids": changed["patient_key"].to_list(),
                        "by_table": {t: int(changed.select(e.sum()).item()) for t, e in differs.items()}},
            "unchanged": both.height - changed.height,
        },
        cohort_moves={
            "patients": _moves(a.scan("patients.parquet"), b.scan("patients.parquet"), "patient_key",
                               "patient_cohort"),
            "referrals": _moves(a.scan("cohorts.parquet"), b.scan("cohorts.parquet"), "referral_key", "cohort"),
        },
        flags=_flag_changes(a, b),
        config=config_changes(a, b),
        decisions=_decision_changes(a, b),
    )
    return diff


def _config_parts(run: RunFolder) -> dict[str, str | None]:
    """sha256 of each part of a run's configuration (frozen files and options), by part."""
    block = frozen.manifest_config(run.manifest)
    parts: dict[str, str | None] = {f"mapping {i}": m.get("sha256")
                                    for i, m in enumerate(block.get("mappings") or [], start=1)}
    for part in ("rules", "identity", "declared", "practice_sharing"):
        entry = block.get(part)
        parts[part] = entry.get("sha256") if isinstance(entry, dict) else None
    options = run.manifest.get("options") or {}
    parts["sharing_policy"] = options.get("sharing_policy")
    parts["inactive_patients"] = options.get("inactive_patients")
    return parts


def config_changes(a: RunFolder, b: RunFolder) -> list[dict[str, Any]]:
    """Each part of the configuration (frozen in ``config/``, or an option) that differs
    between the runs: ``{part, run_a, run_b}`` (sha256 of the frozen file, or the option)."""
    pa, pb = _config_parts(a), _config_parts(b)
    return [{"part": part, "run_a": pa.get(part), "run_b": pb.get(part)}
            for part in sorted(set(pa) | set(pb)) if pa.get(part) != pb.get(part)]
