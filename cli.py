"""The ``handover`` command: parses options, calls ``migrate``, renders with rich.

Thin by design: no business logic here. Data (summaries, JSON) goes to stdout, messages
and progress to stderr. Errors from the engine are caught once, in ``_guard``, and exit
with the code their class carries (2 configuration, 3 input, 1 reconciliation); an I/O
error (permission, missing file, disk full) is an input error: exit 3, one line naming
the path. Text from files, paths and messages is printed literally: the consoles never
read rich markup, so ``[/]`` in a path is just text; styles are set with ``Text``.
"""

from __future__ import annotations

import functools
import json
import sys
from collections.abc import Callable
from datetime import date, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar

import click
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from migrate import __version__
from migrate.errors import HandoverError, InputError, ReconciliationError
from migrate.progress import NULL_PROGRESS
from migrate.progress import Progress as EngineProgress
from migrate.summary import FHIR_COMPRESSIONS, FHIR_FORMS, FhirCompression, FhirForm

if TYPE_CHECKING:
    from rich.progress import TaskID

    from migrate.pipeline import RunResult
    from migrate.rules import RulePack

F = TypeVar("F", bound=Callable[..., Any])
P = ParamSpec("P")
R = TypeVar("R")
SEED_CUTOVER = date(2022, 10, 1)
SHARING_AS_HELP = ("Where the synthetic extract keeps the sharing blocks: coded entries (codes.csv), each patient's "
                   "own setting (patients.csv sharing_out, sharing_out_date), or GP practices that do not share out "
                   "(practice-sharing.csv). The same patients are blocked whichever.")
PRACTICE_SHARING_HELP = ("CSV or Parquet of GP practices' sharing settings (ODS code, status, date), read by the "
                         "practice_sharing table of a --mapping profile: every patient registered at a practice "
                         "that does not share out is blocked unless their own later entry lifts it.")
FHIR_FORM_HELP = ("Form of the FHIR output: 'both' = transaction bundles (fhir/bundles/, what handover load sends) "
                  "and NDJSON (fhir/ndjson/); 'ndjson' = the NDJSON only, about half the disk. No bundles-only "
                  "form: the round trip and invariant 2, the proof nothing was lost, read the NDJSON.")
FHIR_COMPRESSION_HELP = ("Compression of the FHIR NDJSON: 'none' = fhir/ndjson/<Type>.ndjson; 'gzip' = "
                         "<Type>.ndjson.gz (the FHIR Bulk Data convention, about a tenth of the size; every "
                         "handover command reads either). Bundles are never compressed.")

out = Console(width=100, markup=False)
err = Console(stderr=True, width=100, markup=False)


class RichProgress(EngineProgress):
    """Engine progress drawn as rich bars on stderr (only when it is a terminal)."""

    def __init__(self) -> None:
        self._bars = Progress(SpinnerColumn(), TextColumn("{task.description}", markup=False), BarColumn(),
                              MofNCompleteColumn(), TimeElapsedColumn(), TextColumn("{task.fields[note]}", markup=False),
                              console=err, transient=True)
        self._tasks: dict[str, TaskID] = {}

    def __enter__(self) -> RichProgress:
        self._bars.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._bars.stop()

    def start(self, task: str, total: int | None = None) -> None:
        self._tasks[task] = self._bars.add_task(task, total=total, note="")

    def advance(self, task: str, steps: int = 1, note: str = "") -> None:
        if task in self._tasks:
            self._bars.update(self._tasks[task], advance=steps, note=note)

    def finish(self, task: str) -> None:
        if task in self._tasks:
            t = self._tasks.pop(task)
            self._bars.update(t, completed=self._bars.tasks[t].total or 0)


def _progress(quiet: bool) -> RichProgress | None:
    return RichProgress() if not quiet and err.is_terminal else None


def _guard(fn: Callable[P, R]) -> Callable[P, R]:
    """Turn engine errors into their exit codes with a readable message on stderr: the one
    place an exit code is chosen (from the error's class)."""
    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            try:
                return fn(*args, **kwargs)
            except OSError as exc:
                raise InputError.from_os_error(exc) from None
        except HandoverError as exc:
            _error(exc.render())
            sys.exit(exc.exit_code)
    return wrapper


def _error(message: str, label: str = "error:") -> None:
    """One message on stderr, printed as it is (never read as markup)."""
    err.print(Text.assemble((label, "bold red"), " ", message), highlight=False, soft_wrap=True)


def seal_key_option(fn: F) -> F:
    """--key-file for a command that adds to a finished run: a sealed run is changed (and
    re-sealed) only with its key."""
    return click.option("--key-file", type=click.Path(path_type=Path), default=None,
                        help="The run's seal key (handover run --key-file): a sealed run is changed, and "
                             "re-sealed, only with it.")(fn)


def _seal_key(path: Path | None) -> bytes | None:
    """The seal key read from ``path`` (ConfigError, exit 2, when unreadable or short), or None."""
    from migrate.reports import load_key

    return None if path is None else load_key(path)


def output_options(fn: F) -> F:
    """--quiet and --json, shared by every command that summarises a run."""
    fn = click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON on stdout.")(fn)
    fn = click.option("--quiet", "-q", is_flag=True, help="No progress bars or summary table.")(fn)
    return fn


def _date(_ctx: click.Context, _param: click.Parameter, value: str | None) -> date | None:
    if value is None:
        return None
    try:
        return datetime.strptime(value, "%Y-%m-%d").date()
    except ValueError:
        raise click.BadParameter(f"'{value}' is not a date in YYYY-MM-DD form") from None


def _finish(result: RunResult, quiet: bool, as_json: bool) -> None:
    """Print a run's summary (the one the reports wrote) and fail with exit 1 if it failed."""
    from migrate.executor import execution_lines
    from migrate.reports import summary_renderables

    if as_json:
        click.echo(json.dumps(result.summary, indent=2, sort_keys=True, default=str))
    elif not quiet:
        for renderable in summary_renderables(result.summary):
            out.print(renderable)
        if result.execution is not None:
            for line in execution_lines(result.execution):
                out.print(line, markup=False, highlight=False, soft_wrap=True)
        out.print(f"Run folder: {result.run_dir}")
    result.raise_on_failure()


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="handover")
def main() -> None:
    """handover: migrate a community-service caseload between providers and prove nothing was lost."""


@main.command()
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="Folder to write the extract and its truth/ into.")
@click.option("--patients", type=click.IntRange(min=1), default=18942, show_default=True, help="Distinct people.")
@click.option("--seed", type=int, default=20221001, show_default=True, help="Random seed (same seed, same files).")
@click.option("--cutover", callback=_date, default=SEED_CUTOVER.isoformat(), show_default=True,
              help="Cut-over date the extract is built around (YYYY-MM-DD).")
@click.option("--hl7", "hl7_messages", type=click.IntRange(min=1), default=None,
              help="Also write feed.hl7: this many HL7 v2 messages about the same patients (ADT, REF, SIU, with "
                   "planted malformed messages; truth in truth/hl7_quarantine.csv). Read it with --mapping hl7v2.")
@click.option("--sharing-as", type=click.Choice(["codes", "column", "practice"]), default="codes", show_default=True,
              help=SHARING_AS_HELP)
@output_options
@_guard
def synth(out_dir: Path, patients: int, seed: int, cutover: date, hl7_messages: int | None, sharing_as: str,
          quiet: bool, as_json: bool) -> None:
    """Write a synthetic outgoing-provider extract (generic-csv layout) and its ground truth."""
    from migrate.synth import synthesise

    summary = synthesise(out_dir, patients=patients, seed=seed, cutover=cutover, sharing_as=sharing_as)
    record = summary.asdict()
    if hl7_messages:
        from migrate.synth.hl7 import synthesise_hl7

        record["hl7"] = synthesise_hl7(out_dir, messages=hl7_messages, seed=seed,
                                       patients_csv=out_dir / "patients.csv")
    if as_json:
        click.echo(json.dumps(record, indent=2, sort_keys=True, default=str))
    elif not quiet:
        out.print(f"Synthetic extract for {patients:,} patients written to {out_dir}"
                  + (f", with {hl7_messages:,} HL7 v2 messages in feed.hl7" if hl7_messages else "")
                  + (f"; sharing blocks as {sharing_as}" if sharing_as != "codes" else "")
                  + (" (read practice-sharing.csv with --practice-sharing)" if sharing_as == "practice" else ""))


def _run(input_dir: Path | str, mapping: str | tuple[str, ...], cutover: date, out_dir: Path | str, quiet: bool,
         rules: Path | None = None, sharing_policy: str = "withhold-clinical", target_index: Path | None = None,
         emit_fhir: bool = True, bundle_size: int = 500, previous: Path | None = None,
         declared: Path | None = None, inactive_patients: str = "exclude",
         target_mapping: str | None = None, key_file: Path | None = None,
         practice_sharing: Path | None = None, decisions: tuple[Path, ...] = (), executor: str = "local",
         scheduler: str | None = None, partitions: int | None = None, fhir_form: str = "both",
         fhir_compression: str = "none") -> RunResult:
    from migrate.config import RunConfig
    from migrate.pipeline import run_batch

    config = RunConfig.load(input_dir, mapping, cutover, out_dir, rules=rules, sharing_policy=sharing_policy,
                            target_index=target_index, emit_fhir=emit_fhir, bundle_size=bundle_size,
                            previous=previous, declared=declared, inactive_patients=inactive_patients,
                            target_mapping_profile=target_mapping, key_file=key_file,
                            practice_sharing=practice_sharing, decisions=decisions, executor=executor,
                            scheduler=scheduler, partitions=partitions, fhir_form=fhir_form,
                            fhir_compression=fhir_compression)
    bars = _progress(quiet)
    if bars is None:
        return run_batch(config, NULL_PROGRESS)
    with bars:
        return run_batch(config, bars)


@main.command()
@click.option("--input", "input_dir", required=True, metavar="PATH|URL",
              help="Folder of extract files: a path, a file:// URL, or an fsspec URL (memory://, s3:// with s3fs, "
                   "…) whose files are copied into the run's work area first.")
@click.option("--mapping", "-m", "mapping", required=True, multiple=True,
              help="Mapping profile: a YAML path or a shipped name (generic-csv, hl7v2). Repeat it for an extract "
                   "in several layouts (e.g. CSV and an HL7 feed): rows apply in that order, the latest wins.")
@click.option("--cutover", callback=_date, required=True, help="Cut-over date (YYYY-MM-DD).")
@click.option("--out", "out_dir", required=True, metavar="PATH",
              help="Run folder to write: a path (or file:// URL) on this machine; with --scheduler, a shared "
                   "filesystem at the same path on every machine.")
@click.option("--rules", type=click.Path(path_type=Path), default=None,
              help="A site's rule pack: a YAML file, or a folder with default.yaml (default: the shipped pack).")
@click.option("--sharing-policy", type=click.Choice(["withhold-clinical", "include"]), default="withhold-clinical",
              show_default=True, help="What to emit for patients with an active sharing block.")
@click.option("--inactive-patients", type=click.Choice(["exclude", "include"]), default="exclude", show_default=True,
              help="Patients with nothing active at the cut-over (every referral closed, rejected or PIFU expired): "
                   "exclude = disposition out_of_scope, no FHIR; include = hand over their history too.")
@click.option("--target-index", type=click.Path(path_type=Path), default=None,
              help="CSV or Parquet of the new provider's existing patients: matches are updated, not created again. "
                   "Read by the target_index table of --target-mapping (or of a --mapping profile); without one, "
                   "its columns must be named local_id, nhs_number, family_name, given_names, birth_date, sex, "
                   "postcode.")
@click.option("--target-mapping", default=None,
              help="Mapping profile (path or shipped name) whose target_index table maps the target index's own "
                   "columns, formats and codes.")
@click.option("--practice-sharing", type=click.Path(path_type=Path), default=None,
              help=PRACTICE_SHARING_HELP)
@click.option("--fhir/--no-fhir", "emit_fhir", default=True, show_default=True,
              help="Write the FHIR R4 (UK Core) output (its form: --fhir-form).")
@click.option("--bundle-size", type=click.IntRange(min=1), default=500, show_default=True,
              help="Patients per FHIR transaction bundle.")
@click.option("--fhir-form", type=click.Choice(FHIR_FORMS), default="both", show_default=True, help=FHIR_FORM_HELP)
@click.option("--fhir-compression", type=click.Choice(FHIR_COMPRESSIONS), default="none", show_default=True,
              help=FHIR_COMPRESSION_HELP)
@click.option("--declared", type=click.Path(path_type=Path), default=None,
              help="YAML of what the outgoing provider said it sent (counts, optionally ids per list).")
@click.option("--previous", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="The previous batch's run folder: chains the manifests, reports the delta and carries its "
                   "applied review decisions forward.")
@click.option("--decisions", "decisions", type=click.Path(dir_okay=False, path_type=Path), multiple=True,
              help="A worklist (exceptions.xlsx or .csv) with the reviewers' decisions filled in. Repeatable. Every "
                   "row is judged (applied, rejected with the reason, superseded) into decisions.parquet.")
@click.option("--key-file", type=click.Path(path_type=Path), default=None,
              help="Seal the manifest with an HMAC under this key (handover verify --key-file checks it).")
@click.option("--executor", default="local", show_default=True, metavar="local|dask",
              help="Where the FHIR output's partitions run: on this machine's cores, or on a Dask cluster (pip "
                   "install 'handover[dask]'). The outputs are the same bytes either way.")
@click.option("--scheduler", default=None, metavar="ADDRESS",
              help="With --executor dask: the scheduler (tcp://host:8786) whose workers share the input and run "
                   "folders; without it a local cluster is started on this machine.")
@click.option("--partitions", type=int, default=None,
              help="Partitions of the FHIR output (ranges of its patient batches); locally they run on "
                   "min(N, cores) worker processes, as do the round trip's buckets (1: all in this process); "
                   "default one per core locally, 4 on a local Dask cluster, 8 on a scheduler.")
@output_options
@_guard
def run(input_dir: str, mapping: tuple[str, ...], cutover: date, out_dir: str, rules: Path | None, sharing_policy: str,
        inactive_patients: str, target_index: Path | None, target_mapping: str | None,
        practice_sharing: Path | None, emit_fhir: bool, bundle_size: int, fhir_form: str, fhir_compression: str,
        declared: Path | None, previous: Path | None, key_file: Path | None, decisions: tuple[Path, ...],
        executor: str, scheduler: str | None, partitions: int | None, quiet: bool, as_json: bool) -> None:
    """Run one migration batch into a run folder."""
    _finish(_run(input_dir, mapping, cutover, out_dir, quiet, rules, sharing_policy, target_index, emit_fhir,
                 bundle_size, previous, declared, inactive_patients, target_mapping, key_file, practice_sharing,
                 decisions, executor, scheduler, partitions, fhir_form, fhir_compression), quiet, as_json)


@main.command()
@click.argument("run_dir", type=click.Path(file_okay=False, path_type=Path))
@click.option("--previous", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Compare with this run (default: the run the manifest chains to).")
@click.option("--declared", type=click.Path(path_type=Path), default=None, help="Declared counts YAML.")
@click.option("--pseudonymise", is_flag=True, help="Write the audit pack with identifiers replaced by keyed hashes.")
@click.option("--key-file", type=click.Path(path_type=Path), default=None,
              help="HMAC key: the pseudonymisation key with --pseudonymise; otherwise the run's seal, re-computed "
                   "over the re-rendered manifest (a sealed run is re-rendered only with its key).")
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Folder for the pseudonymised pack (outside the run folder).")
@click.option("--split-by", default=None, metavar="COLUMN",
              help="Also write the worklists per value of COLUMN (service_line), each team only its patients, "
                   "in reports/by-service-line/<name>/.")
@output_options
@_guard
def report(run_dir: Path, previous: Path | None, declared: Path | None, pseudonymise: bool, key_file: Path | None,
           out_dir: Path | None, split_by: str | None, quiet: bool, as_json: bool) -> None:
    """Re-render a run's reports (reconciliation JSON/HTML, exception worklists)."""
    from migrate import reports
    from migrate.errors import ConfigError

    if pseudonymise and split_by is not None:
        raise ConfigError("--split-by applies to the run's own worklists, not to the pseudonymised pack")
    if pseudonymise:
        key = reports.load_key(key_file)  # refuses without a key file: never invents one
        if out_dir is None:
            raise ConfigError("--pseudonymise needs --out DIR (a folder outside the run folder)")
        files = reports.pseudonymise(run_dir, key, out_dir)
        if as_json:
            click.echo(json.dumps({"files": [str(f) for f in files]}, indent=2))
        elif not quiet:
            out.print(f"Pseudonymised audit pack: {len(files)} files in {out_dir}")
        return
    result = reports.write_reports(run_dir, previous, declared, split_by=split_by,
                                   key=_seal_key(key_file))
    if as_json:
        click.echo(json.dumps(result.asdict(), indent=2, sort_keys=True, default=str))
    elif not quiet:
        for renderable in reports.summary_renderables(result.summary):
            out.print(renderable)
    result.raise_on_failure()


@main.command()
@click.argument("run_a", type=click.Path(file_okay=False, path_type=Path))
@click.argument("run_b", type=click.Path(file_okay=False, path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print the delta as JSON.")
@_guard
def diff(run_a: Path, run_b: Path, as_json: bool) -> None:
    """Delta between two batches: patients new, gone and changed, cohort moves, flags."""
    from migrate import reports

    delta = reports.diff_runs(run_a, run_b).asdict()
    if as_json:
        click.echo(json.dumps(delta, indent=2, sort_keys=True, default=str))
        return
    for renderable in reports.diff_renderables(delta):
        out.print(renderable)


@main.command()
@click.argument("run_dir", type=click.Path(file_okay=False, path_type=Path))
@click.option("--previous", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="The previous run, to check the chain (default: the path the manifest records).")
@click.option("--key-file", type=click.Path(path_type=Path), default=None,
              help="Check the manifest's HMAC seal with this key.")
@click.option("--chain", "whole_chain", is_flag=True, help="Verify every earlier batch in full as well.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@click.option("--fields", is_flag=True,
              help="Instead, read the FHIR back and compare every carried field with the source (the round trip); "
                   "exit 1 naming each field that differs.")
@_guard
def verify(run_dir: Path, previous: Path | None, key_file: Path | None, whole_chain: bool, as_json: bool,
           fields: bool) -> None:
    """Check the manifest (shape, digest, seal), re-hash every output and check the chain; exit 1 naming what differs."""
    from migrate import reports

    if fields:
        _verify_fields(run_dir, as_json)
        return

    key = _seal_key(key_file)
    result = reports.verify(run_dir, previous, key=key, chain=whole_chain)
    if as_json:
        click.echo(json.dumps(result.asdict(), indent=2, sort_keys=True, default=str))
    else:
        out.print(result)
    result.raise_on_failure()


def _verify_fields(run_dir: Path, as_json: bool) -> None:
    """``verify --fields``: the round trip, read-only (nothing in the run folder changes)."""
    from migrate.fhir.roundtrip import check_roundtrip

    result = check_roundtrip(run_dir, write=False)
    if as_json:
        click.echo(json.dumps(result, indent=2, default=str))
    else:
        table = Table(title=f"Round trip: {result['fields_compared']:,} fields compared, "
                            f"{result['mismatches']:,} mismatches", title_justify="left")
        for col in ("field", "resource", "compared", "mismatches"):
            table.add_column(col, justify="right" if col in ("compared", "mismatches") else "left")
        for f in result["fields"]:
            style = "red" if f["mismatches"] else None
            table.add_row(f["field"], f["resource"], f"{f['compared']:,}", f"{f['mismatches']:,}", style=style)
        out.print(table)
    if result["holds"] is False:
        lines = []
        for f in result["fields"]:
            if f["mismatches"]:
                first = f["examples"][0] if f["examples"] else {}
                where = f" (e.g. {first.get('file')} row {first.get('row')})" if first else ""
                lines.append(f"field {f['field']} ({f['resource']}.{f['element']}): {f['mismatches']:,} "
                             f"records differ{where}")
        raise ReconciliationError(f"round trip failed for {run_dir}: the FHIR differs from the source", lines)


@main.command()
@click.argument("run_dir", type=click.Path(file_okay=False, path_type=Path))
@click.option("--bundle-size", type=click.IntRange(min=1), default=None,
              help="Patients per FHIR transaction bundle (default: the run's own).")
@click.option("--fhir-form", type=click.Choice(FHIR_FORMS), default=None,
              help=f"{FHIR_FORM_HELP} Default: the form the run was made with (its manifest); 'both' writes the "
                   "bundles of a run made with 'ndjson', the same bytes a 'both' run writes.")
@click.option("--fhir-compression", type=click.Choice(FHIR_COMPRESSIONS), default=None,
              help=f"{FHIR_COMPRESSION_HELP} Default: the compression the run was made with (its manifest).")
@seal_key_option
@click.option("--json", "as_json", is_flag=True, help="Print the FHIR summary as JSON.")
@_guard
def fhir(run_dir: Path, bundle_size: int | None, fhir_form: FhirForm | None,
         fhir_compression: FhirCompression | None, key_file: Path | None, as_json: bool) -> None:
    """Re-emit a finished run's FHIR output from its own tables and the configuration frozen
    in its config/ (replaces RUN/fhir/ and records it in the manifest)."""
    from migrate.fhir.bundle import bundles_phrase
    from migrate.fhir.stage import reemit_fhir

    result = reemit_fhir(run_dir, bundle_size, _seal_key(key_file), fhir_form, fhir_compression)
    stats = result.asdict()
    if as_json:
        click.echo(json.dumps(stats, indent=2, sort_keys=True, default=str))
    else:
        out.print(f"{stats['resources_total']:,} resources in {bundles_phrase(result.bundles, result.form)} "
                  f"({stats['errors']} validation errors) written to {run_dir / 'fhir'}")
    result.raise_on_failure()


@main.command()
@click.argument("run_dir", type=click.Path(file_okay=False, path_type=Path))
@click.option("--fhir-base", required=True, help="The receiving FHIR server's base URL (transactions are POSTed to it).")
@click.option("--token-file", type=click.Path(path_type=Path), default=None,
              help="File holding a bearer token for the server.")
@click.option("--concurrency", type=click.IntRange(min=1), default=4, show_default=True,
              help="Bundles in flight at once (a bundle waits for the bundles it references).")
@seal_key_option
@output_options
@_guard
def load(run_dir: Path, fhir_base: str, token_file: Path | None, concurrency: int, key_file: Path | None,
         quiet: bool, as_json: bool) -> None:
    """Send a run's transaction bundles to a FHIR server: in order, retried, resumable (load/state.jsonl)."""
    from migrate.load import LoadOptions, load_run, read_token

    options = LoadOptions(fhir_base=fhir_base, token=read_token(token_file), concurrency=concurrency,
                          seal_key=_seal_key(key_file))
    bars = _progress(quiet or as_json)
    if bars is None:
        result = load_run(run_dir, options)
    else:
        with bars:
            result = load_run(run_dir, options, bars)
    summary = result.asdict()
    if as_json:
        click.echo(json.dumps(summary, indent=2, sort_keys=True, default=str))
    elif not quiet:
        out.print(f"Bundles: {result.bundles:,} ({result.sent:,} sent, {result.skipped:,} already loaded, "
                  f"{result.failed:,} failed, {result.retried:,} retries); resources: {result.resources_sent:,} "
                  f"sent, {result.resources_failed:,} failed; {summary['resources_per_second']:,} resources/s",
                  highlight=False)
    if not result.ok:
        raise ReconciliationError("load incomplete; run the same command again to resume",
                                  [f"{f['bundle']}: {f['error']} after {f['attempts']} attempt(s)"
                                   for f in result.failures[:10]])


@main.command("reconcile-target")
@click.argument("run_dir", type=click.Path(file_okay=False, path_type=Path))
@click.option("--fhir-base", default=None, help="Read the resources back from this FHIR server, by id (small batches).")
@click.option("--export", "export_dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="A FHIR Bulk Data export of the target: a folder of <Type>.ndjson (or .ndjson.gz) files.")
@click.option("--token-file", type=click.Path(path_type=Path), default=None,
              help="File holding a bearer token for --fhir-base.")
@seal_key_option
@output_options
@_guard
def reconcile_target(run_dir: Path, fhir_base: str | None, export_dir: Path | None, token_file: Path | None,
                     key_file: Path | None, quiet: bool, as_json: bool) -> None:
    """Compare what the target holds with what the run sent: missing, changed (by field) and extra, per patient."""
    from migrate.load import read_token
    from migrate.target import reconcile_target as reconcile

    result = reconcile(run_dir, fhir_base, export_dir, read_token(token_file), key=_seal_key(key_file))
    if as_json:
        click.echo(json.dumps(result, indent=2, sort_keys=True, default=str))
    elif not quiet:
        t = result["totals"]
        out.print(f"Target ({result['source']}): {t['sent']:,} sent, {t['found']:,} found, {t['missing']:,} missing, "
                  f"{t['changed']:,} changed, {t['extra']:,} extra", highlight=False)
        for p in result["patients"][:20]:
            who = ", ".join(p["patient_ids"]) or "(no patient)"
            for r in p["missing"]:
                out.print(f"  {who}: missing {r['type']}/{r['id']}", highlight=False)
            for r in p["changed"]:
                out.print(f"  {who}: changed {r['type']}/{r['id']}: {', '.join(r['fields'])}", highlight=False)
            for r in p["extra"]:
                out.print(f"  {who}: extra {r['type']}/{r['id']}", highlight=False)
    if not result["holds"]:
        raise ReconciliationError("the target does not hold what the run sent (reports/target.json)")


@main.command()
@click.option("--patients", type=click.IntRange(min=1), default=18942, show_default=True,
              help="Distinct people in the synthetic extract (the seed's caseload by default).")
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), default=Path("demo-out"),
              show_default=True, help="Folder for the extract (extract/) and the run (run/).")
@click.option("--sharing-as", type=click.Choice(["codes", "column", "practice"]), default="codes", show_default=True,
              help=SHARING_AS_HELP)
@output_options
@_guard
def demo(patients: int, out_dir: Path, sharing_as: str, quiet: bool, as_json: bool) -> None:
    """Synthesise a seed-scale extract and run the whole batch on it."""
    from migrate.synth import PRACTICE_FILE, synthesise

    extract = out_dir / "extract"
    if not quiet and not as_json:
        err.print(f"Synthesising {patients:,} patients into {extract} …")
    synthesise(extract, patients=patients, sharing_as=sharing_as)
    if not quiet and not as_json:
        err.print(f"Running the batch (cut-over {SEED_CUTOVER}) into {out_dir / 'run'} …")
    _finish(_run(extract, "generic-csv", SEED_CUTOVER, out_dir / "run", quiet,
                 target_index=extract / "target-index.csv",
                 practice_sharing=extract / PRACTICE_FILE if sharing_as == "practice" else None), quiet, as_json)


VOCABULARY_ROWS = 25  # values shown per field in check's table (red flags: all); --json has every value


def render_vocabulary(vocabulary: dict[str, list[dict[str, Any]]], hints: tuple[str, ...], console: Console,
                      codelists: dict[str, tuple[str, ...]] | None = None) -> None:
    """check's vocabulary table: each value a rule reads, its rows, the codelist it matched
    ("none"), or that no codelist of the pack reads the field at all."""
    table = Table(title="Vocabulary: values the rules read, and the codelist each matched", title_justify="left")
    for col in ("field", "value", "rows", "codelist"):
        table.add_column(col, justify="right" if col == "rows" else "left", overflow="fold")
    for name, values in vocabulary.items():
        shown = values if name == "red_flags" else values[:VOCABULARY_ROWS]
        unbound = codelists is not None and not codelists.get(name)
        for v in shown:
            matched = (Text(v["codelist"]) if v["codelist"] else
                       Text("no codelist reads this field", "dim") if unbound else Text("none", "bold yellow"))
            table.add_row(name, Text(str(v["value"])), f"{v['rows']:,}", matched)
        if len(values) > len(shown):
            rest = values[len(shown):]
            none = sum(1 for v in rest if v["codelist"] is None)
            table.add_row(name, f"… {len(rest):,} more values ({none:,} matched no codelist): see --json", "", "")
    console.print(table)
    for hint in hints:
        console.print(Text.assemble(("hint:", "cyan"), " ", hint), highlight=False)


def render_sharing(blocks: dict[str, Any], warnings: tuple[str, ...], console: Console) -> None:
    """check's sharing table: patients each source blocks (by the deciding entry) and its entries."""
    table = Table(title=f"Sharing blocks: {blocks.get('blocked', 0):,} patients blocked (before identity merges), "
                        "by the source of the deciding entry", title_justify="left")
    for col in ("source", "patients blocked", "dissent entries", "consent entries", "opt-out entries",
                "unrecognised entries"):
        table.add_column(col, justify="left" if col == "source" else "right")
    for source, n in blocks.get("blocked_by_source", {}).items():
        kinds = blocks.get("entries", {}).get(source, {})
        table.add_row(source, f"{n:,}", *(f"{kinds.get(k, 0):,}" for k in ("dissent", "consent", "opt_out",
                                                                            "unrecognised")))
    console.print(table)
    for warning in warnings:
        console.print(Text.assemble(("warning:", "bold yellow"), " ", warning), highlight=False)


@main.command()
@click.option("--input", "input_dir", type=click.Path(path_type=Path), required=True, help="Folder of extract files.")
@click.option("--mapping", "-m", "mapping", required=True, multiple=True,
              help="Mapping profile: a YAML path or a shipped name; repeat for several layouts.")
@click.option("--rules", type=click.Path(path_type=Path), default=None,
              help="A site's rule pack, whose codelists the vocabulary is matched against (default: the shipped "
                   "pack). Edit the pack and check again to watch unknown values disappear.")
@click.option("--practice-sharing", type=click.Path(path_type=Path), default=None, help=PRACTICE_SHARING_HELP)
@output_options
@_guard
def check(input_dir: Path, mapping: tuple[str, ...], rules: Path | None, practice_sharing: Path | None, quiet: bool,
          as_json: bool) -> None:
    """Dry-run a mapping profile against an extract and list every problem; writes nothing.

    Exit 2 naming every problem of the profiles, the rule pack and the practice sharing
    file's header, and every file that lacks columns a profile reads; row-level problems
    (which a run would quarantine) are listed with counts and examples, the vocabulary
    with the codelist each value matched, and how many patients each sharing source
    blocks, and exit 0.
    """
    from migrate.check import check_extract
    from migrate.config import Problems, load_profiles, practice_mapping

    found = Problems()  # every problem of every profile, of the pack and of the practice file, at once
    profiles = load_profiles(mapping, found)
    pack = found.attempt(lambda: _pack(rules))
    found.attempt(lambda: practice_mapping(profiles, practice_sharing))
    found.raise_any()
    report = check_extract(input_dir, list(profiles), pack, practice_sharing)
    if as_json:
        click.echo(json.dumps(report.asdict(), indent=2, sort_keys=True, default=str))
    elif not quiet:
        table = Table(title=f"{report.rows_read:,} rows read; problems a run would quarantine", title_justify="left")
        for col in ("file", "field", "reason", "rows", "examples"):
            table.add_column(col, justify="right" if col == "rows" else "left")
        for p in report.problems:
            examples = ", ".join(f"'{v}'" for v in p["example_values"]) or "rows " + ", ".join(map(str, p["example_rows"]))
            table.add_row(p["source_file"], p["field"] or "(record)", p["reason_code"], f"{p['rows']:,}", examples)
        out.print(table)
        for p in report.problems:
            if p.get("suggestion"):
                out.print(Text.assemble(("suggestion", "cyan"), f" ({p['source_file']}, {p['field'] or 'record'}, "
                                        f"{p['reason_code']}): {p['suggestion']}"), highlight=False, soft_wrap=True)
        render_vocabulary(report.vocabulary, report.hints, out, report.codelists)
        render_sharing(report.sharing, report.warnings, out)
    report.raise_on_failure()


@main.command()
@click.option("--input", "input_file", type=click.Path(path_type=Path), required=True,
              help="A patient file (CSV or Parquet).")
@click.option("--mapping", "-m", required=True, help="Mapping profile whose patients table describes the file.")
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="Folder to write duplicates.parquet into.")
@click.option("--rules", type=click.Path(path_type=Path), default=None,
              help="A rule-pack folder holding identity.yaml (default: the shipped identity rules).")
@output_options
@_guard
def dedupe(input_file: Path, mapping: str, out_dir: Path, rules: Path | None, quiet: bool, as_json: bool) -> None:
    """Find duplicate and probable-duplicate patients in one patient file (identity alone)."""
    from migrate.dedupe import dedupe_file

    summary = dedupe_file(input_file, mapping, out_dir, rules)
    if as_json:
        click.echo(json.dumps(summary, indent=2, sort_keys=True))
    elif not quiet:
        table = Table(title=f"{summary['patients']:,} patients read; candidate pairs", title_justify="left")
        table.add_column("match type")
        table.add_column("pairs", justify="right")
        for kind, n in summary["pairs"].items():
            table.add_row(kind, f"{n:,}")
        out.print(table)
        out.print(f"Written: {out_dir / 'duplicates.parquet'}, {out_dir / 'identity-model.json'}")


@main.command()
@click.option("--mapping", "-m", "mapping", required=True, multiple=True,
              help="Mapping profile: a YAML path or a shipped name; repeat for an extract in several layouts.")
@click.option("--rules", type=click.Path(path_type=Path), default=None,
              help="A site's rule pack: a YAML file, or a folder with default.yaml (default: the shipped pack).")
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="Folder to write the Documented Data Extract into (<profiles>.md and .html).")
@output_options
@_guard
def describe(mapping: tuple[str, ...], rules: Path | None, out_dir: Path, quiet: bool, as_json: bool) -> None:
    """Write the Documented Data Extract: files, columns, codes, logical model, rules and codelists."""
    from migrate.dde import write_dde
    from migrate.profile import load_profile

    files = write_dde([load_profile(m) for m in mapping], _pack(rules), out_dir)
    if as_json:
        click.echo(json.dumps({"files": [str(f) for f in files]}, indent=2))
    elif not quiet:
        out.print(f"Documented Data Extract: {', '.join(str(f) for f in files)}", highlight=False)


@main.command("explain")
@click.argument("run_dir", type=click.Path(file_okay=False, path_type=Path))
@click.argument("patient")
@click.option("--json", "as_json", is_flag=True, help="Print the story as JSON on stdout.")
@click.option("--html", "html_page", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Also write the story as one self-contained HTML page (outside the run folder).")
@click.option("--key-file", type=click.Path(path_type=Path), default=None,
              help="The audit pack's pseudonymisation key: PATIENT may then be a token, and every identifier "
                   "in the output is tokenised (so it may go into the pseudonymised pack).")
@_guard
def explain_patient(run_dir: Path, patient: str, as_json: bool, html_page: Path | None, key_file: Path | None) -> None:
    """One patient's story from the run folder: rows, quarantine, identity, cohorts, flags, decisions, FHIR.

    PATIENT is a local patient id, a patient key or an NHS number (a token with --key-file).
    """
    from migrate.reports import load_key
    from migrate.reports.story import patient_story
    from migrate.reports.story_view import check_destination, story_renderables, write_story_html

    key = load_key(key_file) if key_file is not None else None
    if html_page is not None:
        check_destination(html_page, run_dir, tokenised=key is not None)
    story = patient_story(run_dir, patient, key)
    if html_page is not None:
        write_story_html(story, html_page)
    if as_json:
        click.echo(json.dumps(story, indent=2, sort_keys=True, default=str))
        return
    for renderable in story_renderables(story):
        out.print(renderable)
    if html_page is not None:
        out.print(f"Written: {html_page}", highlight=False)


@main.group()
def rules() -> None:
    """Read the rule pack: what each rule checks, in words a clinical lead can read."""


def _pack(path: Path | None) -> RulePack:
    from migrate.config import resolve_rules_path
    from migrate.rules import load_pack

    return load_pack(resolve_rules_path(path))


@rules.command("list")
@click.option("--rules", "pack_path", type=click.Path(path_type=Path), default=None, help="A site's rule pack.")
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
@_guard
def rules_list(pack_path: Path | None, as_json: bool) -> None:
    """List every rule: id, what it raises or derives, severity and title."""
    from migrate.rules import list_rules

    pack = _pack(pack_path)
    listed = list_rules(pack)
    if as_json:
        click.echo(json.dumps(listed, indent=2, default=str))
        return
    table = Table(title=f"Rule pack {pack.name} (version {pack.version})", title_justify="left")
    for col in ("id", "raises / derives", "severity", "applies to", "title"):
        table.add_column(col, overflow="fold")
    for r in listed:
        table.add_row(r["id"], r.get("flag") or r.get("derive") or "", r.get("severity") or "", r["applies_to"],
                      r["title"])
    out.print(table)


@rules.command("hazards")
@click.option("--rules", "pack_path", type=click.Path(path_type=Path), default=None, help="A site's rule pack.")
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
@_guard
def rules_hazards(pack_path: Path | None, as_json: bool) -> None:
    """The clinical-safety hazard log of the pack; exit 2 naming every flag or rule no hazard covers."""
    from migrate.errors import ConfigError
    from migrate.hazards import coverage, hazards_path, load_hazards, run_view
    from migrate.config import resolve_rules_path

    path = resolve_rules_path(pack_path)
    log = load_hazards(hazards_path(path))
    gaps = coverage(log, _pack(pack_path))
    view = run_view(log, {}, gaps)
    if as_json:
        click.echo(json.dumps(view, indent=2, default=str))
    else:
        table = Table(title=f"{log.name} v{log.version} ({log.path.name})", title_justify="left")
        for col in ("hazard", "severity", "risk", "covers", "title"):
            table.add_column(col, overflow="fold")
        for h in view["hazards"]:
            covers = ", ".join(h["flags"] + h["dispositions"] + h["behaviours"])
            table.add_row(h["hazard"], h["severity"], f"{h['rating']} → {h['residual_rating']}", covers, h["title"])
        out.print(table)
    if gaps:
        raise ConfigError(f"the hazard log {log.path} does not cover the pack", gaps)


@rules.command("explain")
@click.argument("code")
@click.option("--rules", "pack_path", type=click.Path(path_type=Path), default=None, help="A site's rule pack.")
@_guard
def rules_explain(code: str, pack_path: Path | None) -> None:
    """Explain a flag code, rule id or derived column: what it checks and what to do."""
    from migrate.rules import explain

    click.echo(explain(_pack(pack_path), code))


@main.group()
def profile() -> None:
    """Mapping profiles: draft a first one from an extract's files."""


@profile.command("draft")
@click.option("--input", "input_dir", type=click.Path(path_type=Path), required=True, help="Folder of extract files.")
@click.option("--out", "out_file", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Write the drafted profile here (default: stdout).")
@click.option("--force", is_flag=True, help="Overwrite --out if it exists (a draft you edited is lost).")
@click.option("--synonyms", type=click.Path(path_type=Path), default=None,
              help="Column-name and code synonyms to draft with (default: the shipped mappings/draft/synonyms.yaml).")
@output_options
@_guard
def profile_draft(input_dir: Path, out_file: Path | None, force: bool, synonyms: Path | None, quiet: bool,
                  as_json: bool) -> None:
    """Draft a mapping profile from the files alone: encoding, delimiter, which file feeds
    which table, a field for each column with its confidence, date formats and map
    skeletons; every uncertain choice is a CHECK comment saying why. Then run check."""
    from migrate.draft import draft_profile, load_catalogue
    from migrate.errors import ConfigError

    if out_file is not None and out_file.exists() and not force:
        raise ConfigError(f"{out_file} exists: give another --out, or --force to overwrite it")
    draft = draft_profile(input_dir, load_catalogue(synonyms))
    if out_file is not None:
        out_file.write_text(draft.text, encoding="utf-8")
    if as_json:
        click.echo(json.dumps({**draft.asdict(), **({} if out_file else {"profile": draft.text})}, indent=2))
    elif out_file is None:
        click.echo(draft.text, nl=False)
    if not quiet and not as_json:
        for table, name in draft.tables.items():
            err.print(f"{table}: {name}", highlight=False)
        for problem in draft.problems:
            err.print(Text.assemble(("to do:", "yellow"), f" {problem}"), highlight=False)
        err.print(f"{draft.checks} line(s) marked CHECK to review; then: handover check --input {input_dir} "
                  f"--mapping {out_file or 'PROFILE.yaml'}", highlight=False)


if __name__ == "__main__":  # pragma: no cover
    main()
