"""``write_reports``: the reconciliation of a finished run and every report file.

Reads the run folder only (manifest, canonical tables, lineage, quarantine, cohorts,
patients, exceptions, FHIR NDJSON when present) and writes, under ``reports/``:

- ``reconciliation.json``: the run summary (``migrate.summary.RunSummary``), every figure
  computed from the files: both invariants, control totals, declared vs found, waits and
  the delta (docs/reports.md). Written here and nowhere else;
- ``reconciliation.html``: the same, one self-contained page for an audit panel;
- ``exceptions.xlsx`` / ``exceptions.csv``: worklists for clinical leads, and with
  ``split_by`` the same per service line in ``by-service-line/<name>/``;
- ``hazard-log.html``: the clinical-safety hazard log with this run's figures;

and, when a declared file is given, keeps it as the run's ``config/declared.json`` (so a
re-render, ``handover report RUN``, compares against the same figures).

Then it records those files in the manifest's outputs, so ``handover verify`` covers them.
Deterministic: the only times in any report are the manifest's started/finished, so the
same run gives byte-identical reports and an unchanged manifest on re-render.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import polars as pl

from migrate import canonical, frozen, sharing
from migrate.errors import ConfigError, ReconciliationError
from migrate.manifest import sha256_file
from migrate.outputs import write_json, write_text
from migrate.reports import hazard_log, html
from migrate.summary import RowsInvariant, RunSummary
from migrate.reports.chain import check_sealable, manifest_sha256, seal_outputs
from migrate.reports.charts import flow_svg, waits_svg
from migrate.reports.declared import (
    Declaration,
    declared_vs_found,
    labels_declaration,
    load_declared,
)
from migrate.reports.diff import diff_runs
from migrate.reports.fidelity import sections as fidelity_sections
from migrate.reports.flow import layout as flow_layout
from migrate.reports.fidelity import with_checks
from migrate.reports.invariants import fhir_output, verdict
from migrate.review.outreach import write_outreach
from migrate.review.progress import review_progress
from migrate.reports.rundata import CANONICAL_TABLES, MANIFEST, RunFolder, read_json, reading
from migrate.reports.split import write_split
from migrate.reports.totals import control_totals, run_counts
from migrate.reports.waits import dummy_slot_names, waits
from migrate.vocabulary import vocabulary
from migrate.reports.worklist import (
    SPLIT_COLUMNS,
    Layout,
    Rows,
    build_worklist,
    load_layout,
    stage_worklist,
    with_vocabulary,
    write_worklists,
)
from migrate.reports.worklist_summary import RunInfo

REPORT_FORMAT_VERSION = 1
REPORT_FILES = ("reports/reconciliation.json", "reports/reconciliation.html", "reports/exceptions.xlsx",
                "reports/exceptions.csv", "reports/hazard-log.html", "reports/outreach.xlsx")


@dataclass
class ReportModel:
    """Everything the report files show, before rendering (and before pseudonymisation)."""

    summary: RunSummary
    worklist: Rows  # lazy when staged on disk (``build`` with ``workdir``)
    layout: Layout
    info: RunInfo


@dataclass
class ReportResult:
    """What ``write_reports`` did: the summary (as in reconciliation.json), whether every
    invariant holds, and the files written."""

    run_dir: Path
    summary: RunSummary
    holds: bool
    files: list[Path] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.holds

    def raise_on_failure(self) -> None:
        """``ReconciliationError`` (exit 1) with a sentence per failing invariant, naming it
        and its first examples; nothing when both hold."""
        if not self.holds:
            raise ReconciliationError(f"reconciliation failed for run {self.summary['run_id']} "
                                      f"(see {self.run_dir / 'reports' / 'reconciliation.html'})",
                                      list(self.summary["invariants"]["failures"]))

    def asdict(self) -> dict[str, Any]:
        """Plain data for ``--json``."""
        return {"run_dir": str(self.run_dir), "holds": self.holds, "files": [str(f) for f in self.files],
                "summary": self.summary}


def _delta(run: RunFolder, previous: Path | None) -> dict[str, Any]:
    """The diff from the previous run (given, or recorded in the manifest) to this one."""
    recorded = (run.manifest.get("previous_run") or {}).get("path")
    target = previous if previous is not None else run.previous_path()
    if target is None:
        return {"available": False, "reason": "no previous run: give --previous RUN to compare batches"}
    if not (target / "manifest.json").is_file():
        return {"available": False, "reason": f"previous run not found at {recorded or target.name}"}
    diff = diff_runs(target, run.path).asdict()
    # Paths depend on where the runs sit; ids and the manifest hash say which runs they are.
    diff["run_a"] = {"run_id": diff["run_a"]["run_id"], "manifest_sha256": manifest_sha256(target)}
    diff["run_b"] = {"run_id": diff["run_b"]["run_id"]}
    return {"available": True, **diff}


def _run_block(run: RunFolder) -> dict[str, Any]:
    m = run.manifest
    return {
        "tool": m.get("tool"), "started": m.get("started"), "finished": m.get("finished"),
        "options": m.get("options"), "counts": m.get("counts"),
        "previous_manifest_sha256": m.get("previous_manifest_sha256"), "previous_run": m.get("previous_run"),
    }


def stored_declaration(run: RunFolder) -> Declaration | None:
    """The declaration kept with the run (``config/declared.json``), if any."""
    return frozen.load_declaration(run.path)


def _keep_declaration(run_dir: Path, declaration: Declaration, key: bytes | None) -> None:
    """Keep a newly given declaration as the run's: written, recorded in the manifest's
    config block and sealed in its outputs (digest and seal recomputed), before the
    summary (which lists them) is built."""
    path = frozen.write_declaration(run_dir, declaration)
    manifest = read_json(run_dir / MANIFEST)
    config = frozen.manifest_config(manifest) | {"declared": {"path": frozen.DECLARED, "sha256": sha256_file(path)}}
    seal_outputs(run_dir, [path], key, {"config": config})


def _stages(run: RunFolder) -> dict[str, Any]:
    """What the pipeline recorded that only it knew (identity's numbers, the updates ingest
    applied, the FHIR writer's statistics, the target index as read): the manifest's stages."""
    stages = run.manifest.get("stages")
    return dict(stages) if isinstance(stages, dict) else {}


SHARING = "sharing.parquet"


def _vocabulary_tables(run: RunFolder) -> dict[str, pl.LazyFrame]:
    """The canonical tables, and the practice sharing file's rows when the run read one
    (from its frozen copy, by its frozen profile)."""
    tables = {t: run.canonical(t) for t in CANONICAL_TABLES}
    practices = frozen.load_practice_sharing(run.path, run.manifest)
    return tables if practices is None else {**tables, canonical.PRACTICE_TABLE: practices.frame.lazy()}


def build(run: RunFolder, previous: Path | None = None, declaration: Declaration | None = None,
          invariant: RowsInvariant | None = None, workdir: Path | None = None) -> ReportModel:
    """Compute every figure of the reports from ``run`` (nothing is written to it).

    ``invariant``: invariant 1 if the caller has just computed it over this folder.
    ``workdir``: a folder where the worklist is staged as Parquet (one row per flag: it grows
    with the flags), kept until the model is rendered; without it, it is held in memory.
    """
    counts = run_counts(run, invariant)
    pack = frozen.load_pack(run.path)  # the pack the run used, never the shipped one
    layout = with_vocabulary(load_layout(), pack.review)  # the decisions the run's pack allows
    fhir_counts, fhir_invariant = fhir_output(run)
    declaration = declaration or stored_declaration(run) or labels_declaration(run)
    stages = _stages(run)
    m = run.manifest
    summary: RunSummary = {
        "report_format_version": REPORT_FORMAT_VERSION,
        "run_id": run.run_id,
        "cutover_date": str(m.get("cutover_date")),
        "mapping": m.get("mapping", []),
        "rules": m.get("rules", {}),
        "sharing_policy": str((m.get("options") or {}).get("sharing_policy")),
        "run": _run_block(run),
        "inputs": run.inputs(),
        # Report files are left out: their hashes change as they are (re)written.
        "outputs": [e for e in m.get("outputs", []) if not str(e["path"]).startswith("reports/")],
        "invariant": counts["invariant"],
        "invariant_fhir": fhir_invariant,
        "invariants": verdict(counts["invariant"], fhir_invariant),
        "quarantine": counts["quarantine"],
        "tables": counts["tables"],
        "cohorts": counts["cohorts"],
        "flags": counts["flags"],
        "identity": dict(stages.get("identity") or {}),
        "updates": dict(stages.get("updates") or {}),
        "fhir": stages.get("fhir"),
        "target_index": stages.get("target_index"),
        # Computed here, from the canonical tables and the run's own pack: a re-render matches.
        "vocabulary": vocabulary(_vocabulary_tables(run), pack),
        # memory: whole: sharing.parquet (one row per sharing entry; ``sharing.summary`` lists every unrecognised
        # value with its entries)
        "sharing": sharing.summary(run.scan(SHARING).collect()) if run.has(SHARING) else None,
        "control_totals": control_totals(run, counts, layout.family_of(), fhir_counts),
        "declared_vs_found": declared_vs_found(run, declaration),
        "waits": waits(run, dummy_slot_names(pack)),
        "delta": _delta(run, previous),
        "report_files": list(REPORT_FILES),
    }
    checks = fidelity_sections(run)  # round trip and target, as stored in reports/
    if "roundtrip" in checks:
        summary["roundtrip"] = checks["roundtrip"]
    if "target" in checks:
        summary["target"] = checks["target"]
    summary["invariants"] = with_checks(summary["invariants"], checks)
    summary["review"] = review_progress(run)
    summary["hazard_log"] = hazard_log.section(run, summary)
    worklist = (stage_worklist(run, layout, pack.review, workdir) if workdir is not None
                else build_worklist(run, layout, pack.review))
    return ReportModel(summary, worklist, layout, RunInfo.of(run))


def split_folder(by: str) -> str:
    """The folder, under ``reports/``, of the worklists split by column ``by``."""
    return "by-" + by.replace("_", "-")


def render(model: ReportModel, folder: Path, split_by: str | None = None) -> list[Path]:
    """Write reconciliation.json, reconciliation.html, exceptions.xlsx, exceptions.csv and hazard-log.html
    into ``folder``, and with ``split_by`` the worklists per value in ``folder/by-…/<name>/``."""
    page = html.render_html(model.summary, {"waits": waits_svg(model.summary["waits"]),
                                            "flow": flow_svg(flow_layout(model.summary))})
    split = (write_split(model.worklist, folder / split_folder(split_by), model.layout, model.info, split_by)
             if split_by is not None else [])
    return [
        write_json(model.summary, folder / "reconciliation.json"),
        write_text(page, folder / "reconciliation.html"),
        *write_worklists(model.worklist, folder, model.layout, model.info),
        write_text(hazard_log.render_page(model.summary), folder / hazard_log.PAGE),
        *split,
    ]


def write_reports(run_dir: Path, previous: Path | None = None, declared: Path | None = None,
                  split_by: str | None = None, *, invariant: RowsInvariant | None = None,
                  key: bytes | None = None) -> ReportResult:
    """Compute the reconciliation of ``run_dir`` and write every report (module docstring).

    ``previous`` defaults to the run the manifest chains to; ``declared`` is a declared
    YAML file (docs/reports.md), else the declaration kept by an earlier render, else the
    extract's own list labels; ``split_by`` (one of SPLIT_COLUMNS) adds a worklist per
    value, each team's own. Call after ``manifest.json`` is written: the report files are
    then recorded in it, and its digest (and seal, with ``key``) recomputed; a sealed run
    is refused without its key, before anything is written. ``holds`` is False when either
    invariant fails. ``invariant``: invariant 1 when the caller (the pipeline) has just
    computed it here.
    """
    if split_by is not None and split_by not in SPLIT_COLUMNS:  # before any data is read
        raise ConfigError(f"--split-by {split_by}: the worklists can be split by {', '.join(SPLIT_COLUMNS)}")
    run = RunFolder.open(run_dir)
    if previous is not None:
        RunFolder.open(previous, check_tables=False)  # a run given by name must be one (exit 3)
    check_sealable(run_dir, key)
    declaration = load_declared(declared) if declared is not None else None
    with reading(run_dir), tempfile.TemporaryDirectory(prefix="handover-worklist-") as work:
        if declaration is not None:
            _keep_declaration(run_dir, declaration, key)
            run = RunFolder.open(run_dir)
        model = build(run, previous, declaration, invariant, Path(work))
        files = render(model, run_dir / "reports", split_by)
        # Identifiable (contact details): the run's own reports only, never the pseudonymised pack.
        files.append(write_outreach(run, run_dir / "reports"))
        seal_outputs(run_dir, files, key)
    return ReportResult(run_dir, model.summary, bool(model.summary["invariants"]["holds"]), files)
