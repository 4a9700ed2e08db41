"""Writing the FHIR output of a batch: transaction Bundles and Bulk Data NDJSON.

``write_fhir`` streams the patients in batches of ``options.chunk_patients`` (whole
bundles), so memory stays flat in the number of patients: each batch's rows are read,
built, validated and written, then dropped. It writes, under ``out_dir/fhir/``:

- ``bundles/bundle-00001.json`` … (only with ``options.form`` ``both``, the default; the
  form ``ndjson`` writes no bundle, ``FhirResult.bundles`` 0, and the rest the same
  bytes): transaction Bundles of at most ``bundle_size``
  patients. Every entry is ``PUT Type/id`` with ``fullUrl`` ``urn:uuid:<id>`` (the same
  UUID). Why PUT by id rather than a conditional update on the NHS number: the id is
  derived from the outgoing provider's key (``migrate.fhir.ids``), so re-sending a batch or
  a delta updates the same resources (idempotent) and every resource type works the same
  way (a ServiceRequest or Encounter has no NHS number); a conditional update
  (``PUT Patient?identifier=…nhs-number|…``) would fail with 412 when two source records
  share a number (DUPLICATE_NHS_NUMBER before the merge), could silently attach to a
  receiving-system patient that was wrongly traced, and cannot carry patients without a
  valid number. References are relative (``Patient/<id>``) so they resolve inside the
  bundle and to resources of earlier bundles (an Organization goes in the first bundle
  that needs it). Each bundle ends with its Provenance.
- ``ndjson/<Type>.ndjson``: one resource per line, in patient order (survivor key) then
  id — the bundles' order, so each file is written in one pass; Organization.ndjson in
  the order of the bundles that first need them (then id), Provenance.ndjson by bundle.
  With ``options.compression`` ``gzip``: ``<Type>.ndjson.gz``, the same lines as one gzip
  member per batch (``migrate.fhir.ndjson``).
- ``lineage.parquet`` (source row → resource), in batch order. Rows that become no
  resource never reach this stage: their dispositions (``migrate.dispositions``) say why.
- ``errors.parquet``: every resource that failed validation (ERROR_SCHEMA: type, id,
  patient, problem — locations and messages, never values — and its source row), in
  source order; empty when all validated.

Everything goes into ``fhir.partial/`` first and is renamed to ``fhir/`` at the end, so a
killed run never leaves a complete-looking half output. Same frames and options →
byte-identical files (no wall-clock time anywhere; every order is by key).
"""

from __future__ import annotations

import io
import json
import os
import shutil
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import polars as pl
import pyarrow.parquet as pq

from migrate.errors import ReconciliationError
from migrate.fhir.ids import fhir_ids
from migrate.fhir.inputs import Context, Staged, gather, stage
from migrate.fhir.ndjson import file_name, write_lines
from migrate.fhir.options import FhirOptions, profile
from migrate.executor import Execution, Executor, LocalExecutor, ran_on
from migrate.fhir.resources import (
    LINEAGE_OUT_SCHEMA,
    Built,
    Prepared,
    build_batch,
    organisation_refs,
    prepare,
)
from migrate.fhir.validate import ERROR_SCHEMA
from migrate.outputs import ROW_GROUP_ROWS, write_parquet
from migrate.progress import NULL_PROGRESS, Progress
from migrate.summary import FhirCompression, FhirForm, FhirStats

ERROR_EXAMPLES = 5  # failing resources named in the summary


def validation_failure(stats: FhirStats) -> str | None:
    """One sentence when resources failed validation, naming the first; None when none did."""
    if not stats["errors"]:
        return None
    shown = "; ".join(f"{e['fhir_type']} {e['fhir_id']} ({e['problem']})" for e in stats["error_examples"][:3])
    return (f"FHIR validation failed: {stats['errors']:,} error rows for {stats['error_patients']:,} patients "
            f"whose resources were not written" + (f"; first: {shown}" if shown else ""))


def bundles_phrase(bundles: int, form: FhirForm) -> str:
    """``12 bundles``, or, for the form ``ndjson``, that none were asked for."""
    if form == "ndjson":
        return ("NDJSON only (--fhir-form ndjson: no transaction bundles; handover fhir RUN --fhir-form both "
                "writes them)")
    return f"{bundles:,} bundles"


@dataclass
class FhirResult:
    """What ``write_fhir`` wrote and how every source row it read was accounted for.

    ``lineage`` is a scan of the Parquet file written beside the bundles (it can be as long
    as the extract); ``errors`` is in memory.
    """

    out_dir: Path
    counts: dict[str, int]
    bundles: int  # bundle files written (0 with the form ``ndjson``)
    files: list[Path]
    lineage: pl.LazyFrame
    errors: pl.DataFrame
    model_validated: int = 0  # resources the R4B models validated (one per shape on the fast path)
    policy: str = ""
    execution: Execution | None = None  # how its partitions ran (the manifest's ``execution``)
    form: FhirForm = "both"
    compression: FhirCompression = "none"

    @property
    def ok(self) -> bool:
        return self.errors.height == 0

    def raise_on_failure(self) -> None:
        """``ReconciliationError`` (exit 1) when resources failed validation (not written)."""
        line = validation_failure(self.asdict())
        if line is not None:
            raise ReconciliationError(f"FHIR output of {self.out_dir} is incomplete", [line])

    def asdict(self) -> FhirStats:
        """A JSON-ready summary (for the manifest and ``--json``), with the first errors."""
        first = self.errors.sort("fhir_type", "fhir_id", "source_file", "source_row", nulls_last=True).head(ERROR_EXAMPLES)
        stats: FhirStats = {
            "bundles": self.bundles,
            "form": self.form,
            "resources": dict(sorted(self.counts.items())),
            "resources_total": sum(self.counts.values()),
            "sharing_policy": self.policy,
            "errors": self.errors.height,
            "error_patients": self.errors["patient_key"].drop_nulls().n_unique(),
            "model_validated": self.model_validated,
            "files": [p.relative_to(self.out_dir).as_posix() for p in self.files],
            "error_examples": first.select("fhir_type", "fhir_id", "source_file", "source_row", "problem").to_dicts(),
        }
        if self.compression != "none":  # only gzip is recorded: a plain run's summary as before the option
            stats["compression"] = self.compression
        return stats

    def render(self) -> str:
        """A few lines for a person."""
        total = sum(self.counts.values())
        lines = [f"FHIR: {total:,} resources in {bundles_phrase(self.bundles, self.form)} "
                 f"(sharing policy {self.policy})"]
        lines += [f"  {t}: {n:,}" for t, n in sorted(self.counts.items())]
        if self.errors.height:
            lines.append(f"  {self.errors.height:,} error rows for "
                         f"{self.errors['patient_key'].drop_nulls().n_unique():,} patients not written")
        return "\n".join(lines)


@dataclass
class _Writers:
    """Open output files of one run (NDJSON per type, Parquet for the accounting)."""

    root: Path
    bundles: Path | None = None  # where bundle files go (default: root/bundles)
    compression: FhirCompression = "none"  # of the NDJSON files (migrate.fhir.ndjson)
    ndjson: dict[str, IO[bytes]] = field(default_factory=dict)
    parquet: dict[str, pq.ParquetWriter] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)

    def handle(self, resource_type: str) -> IO[bytes]:
        """The open NDJSON file of ``resource_type`` (created on first use)."""
        if resource_type not in self.ndjson:
            path = self.root / "ndjson" / file_name(resource_type, self.compression)
            path.parent.mkdir(parents=True, exist_ok=True)
            self.ndjson[resource_type] = path.open("wb")
        return self.ndjson[resource_type]

    def lines(self, resource_type: str, texts: pl.Series) -> None:
        """Append one JSON text per line (written by polars: no Python string per resource)."""
        if texts.len() == 0:
            return
        # A one-column CSV without quoting is exactly NDJSON: JSON text never holds a raw newline.
        if self.compression == "none":
            texts.to_frame().write_csv(self.handle(resource_type), include_header=False, quote_style="never")
        else:  # the batch's lines of this type as one gzip member (a batch's text: tens of MB)
            text = io.BytesIO()
            texts.to_frame().write_csv(text, include_header=False, quote_style="never")
            write_lines(self.handle(resource_type), text.getbuffer(), self.compression)
        self.counts[resource_type] = self.counts.get(resource_type, 0) + texts.len()

    def table(self, name: str, frame: pl.DataFrame, schema: Mapping[str, pl.DataType]) -> None:
        if name not in self.parquet:
            self.root.mkdir(parents=True, exist_ok=True)
            empty = pl.DataFrame(schema=dict(schema)).to_arrow()
            self.parquet[name] = pq.ParquetWriter(self.root / f"{name}.parquet", empty.schema, compression="zstd")
        cast = frame.select(list(schema)).cast(dict(schema)).rechunk()  # type: ignore[arg-type]
        arrow = cast.to_arrow().cast(self.parquet[name].schema)
        if arrow.num_rows:  # one chunk, fixed row groups: bytes follow the rows, not the chunking
            self.parquet[name].write_table(arrow, row_group_size=ROW_GROUP_ROWS)

    def close(self, schemas: Mapping[str, Mapping[str, pl.DataType]]) -> None:
        for fh in self.ndjson.values():
            fh.close()
        for name, schema in schemas.items():
            if name not in self.parquet:
                self.table(name, pl.DataFrame(schema=dict(schema)), schema)
            self.parquet[name].close()


def bundle_texts(resources: pl.DataFrame, ctx: Context) -> pl.DataFrame:
    """bundle_no and the JSON text of each bundle of ``resources`` (rows in bundle order),
    built by polars: a bundle's text (megabytes) never becomes a Python string."""
    meta = json.dumps({"profile": [profile("Bundle")]}, separators=(",", ":"))
    # memory: one batch's resources (``_write_batch``), as one JSON text per bundle
    entries = resources.lazy().select(
        "bundle_no",
        pl.concat_str([pl.lit('{"fullUrl":"urn:uuid:'), pl.col("fhir_id"), pl.lit('","resource":'), pl.col("json"),
                       pl.lit(',"request":{"method":"PUT","url":"'), pl.col("fhir_type"), pl.lit("/"),
                       pl.col("fhir_id"), pl.lit('"}}')]).alias("entry"),
    ).group_by("bundle_no", maintain_order=True).agg(pl.col("entry").str.join(",")).collect()
    keys = entries.select(pl.concat_str([pl.lit(f"{ctx.options.run_id}/"),
                                         pl.col("bundle_no").cast(pl.String).str.zfill(5)]).alias("key")).to_series()
    return entries.with_columns(fhir_ids(ctx.ns, "bundle", keys).alias("bundle_id")).select(
        "bundle_no",
        pl.concat_str([pl.lit('{"resourceType":"Bundle","id":"'), pl.col("bundle_id"),
                       pl.lit(f'","meta":{meta},"type":"transaction","entry":['), pl.col("entry"), pl.lit("]}")])
        .alias("text"))


def bundle_name(bundle_no: int) -> str:
    return f"bundle-{bundle_no:05d}.json"


def write_fhir(tables: Mapping[str, pl.LazyFrame], cohorts: pl.LazyFrame, patient_cohorts: pl.LazyFrame,
               exceptions: pl.LazyFrame, sharing: pl.LazyFrame, options: FhirOptions, out_dir: Path,
               derived_priority: pl.LazyFrame | None = None, progress: Progress = NULL_PROGRESS,
               executor: Executor | None = None) -> FhirResult:
    """Build, validate and write the FHIR output of one batch into ``out_dir/fhir``.

    Inputs: canonical ``tables`` (patients, referrals, contacts, codes), the rules stage's
    ``cohorts``, ``patient_cohorts`` and ``exceptions``, the ``sharing`` frame (patient_key,
    blocked, latest_code, latest_date; see ``sharing_from_features``) and optionally
    ``derived_priority`` (referral_key, priority, reason). Every row given is sent (the
    rows to send are chosen by their dispositions, before this stage). Invariant: every
    source row given is in lineage (one row per resource it became) or in errors.

    ``executor``: with more than one partition (``migrate.executor``), the batches run as
    partitions (``migrate.fhir.partitions``: same bytes whatever the number); otherwise
    they run here, one after another.
    """
    del patient_cohorts  # each referral carries its own cohort
    p = prepare(tables, cohorts, exceptions, sharing, options, derived_priority)
    ctx, shapes, plan, orgs, org_errors = p.ctx, p.shapes, p.plan, p.orgs, p.org_errors
    last_bundle = int(plan["bundle_no"].max() or 0)  # type: ignore[arg-type]
    known_orgs = organisation_refs(orgs)
    final, partial = out_dir / "fhir", out_dir / "fhir.partial"
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    if options.writes_bundles:
        (partial / "bundles").mkdir()
    writers = _Writers(partial, compression=options.compression)
    written: list[str] = []
    errors = [org_errors]
    per_chunk = max(1, options.chunk_patients // options.bundle_size)
    executor = executor or LocalExecutor()
    execution = Execution(executor.name, executor.where, executor.partitions, -(-last_bundle // per_chunk))
    # A cluster runs every partition, a single batch too: asking for Dask never runs here unsaid.
    partitioned = last_bundle > 0 and (executor.partitions > 1 or executor.name != "local")
    staged = None
    if last_bundle > per_chunk or partitioned:  # split the inputs once instead of rescanning per batch
        staged = stage(tables, cohorts, exceptions, sharing, derived_priority, plan, per_chunk, partial / ".stage")
    progress.start("fhir", total=last_bundle)
    validated = None
    if staged is not None and partitioned:
        counts, names, more, validated = _partitioned(p, staged, per_chunk, last_bundle, derived_priority is not None,
                                                      partial, executor, execution)
        writers.counts, written[:] = counts, names
        errors += more
        progress.advance("fhir", last_bundle, f"bundles 1-{last_bundle:,} in {execution.partitions_run} partitions")
    else:
        if last_bundle:
            execution.partitions_run, execution.ran_on = 1, {ran_on(): 1}
        else:
            execution.notes.append("no patient to write: no partition ran")
        try:
            for first in range(1, last_bundle + 1, per_chunk):
                last = min(first + per_chunk - 1, last_bundle)
                batch = plan.filter(pl.col("bundle_no").is_between(first, last))
                if staged is None:
                    inputs = gather(tables, cohorts, exceptions, sharing, derived_priority, batch, ctx)
                else:
                    n = (first - 1) // per_chunk
                    frames = {t: staged.frame(t, n) for t in ("patients", "referrals", "contacts", "codes")}
                    inputs = gather(frames, staged.frame("cohorts", n), staged.frame("exceptions", n),
                                    staged.frame("sharing", n),
                                    None if derived_priority is None else staged.frame("derived_priority", n), batch, ctx)
                chunk_orgs = orgs.filter(pl.col("bundle_no").is_between(first, last))
                built = build_batch(inputs, chunk_orgs, known_orgs, ctx, shapes)
                _write_batch(built, ctx, writers, written)
                errors.append(built.errors)
                progress.advance("fhir", last - first + 1, f"bundles {first:,}-{last:,}")
                del inputs, built
        finally:
            writers.close({"lineage": LINEAGE_OUT_SCHEMA})
    progress.finish("fhir")
    shutil.rmtree(partial / ".stage", ignore_errors=True)
    if final.exists():
        shutil.rmtree(final)
    os.replace(partial, final)
    all_errors = pl.concat([e.cast(ERROR_SCHEMA) for e in errors]).sort(
        "source_file", "source_row", "fhir_type", "fhir_id", "problem", nulls_last=True)
    # Written beside the output, so a failing run shows what failed long after the terminal is gone.
    write_parquet(all_errors, final / "errors.parquet")
    files = sorted(p for p in final.rglob("*") if p.is_file())
    return FhirResult(
        out_dir=out_dir, counts=dict(sorted(writers.counts.items())), bundles=len(written), files=files,
        lineage=pl.scan_parquet(final / "lineage.parquet"), errors=all_errors,
        model_validated=shapes.validated if validated is None else validated, policy=options.sharing_policy,
        execution=execution, form=options.form, compression=options.compression,
    )


def _partitioned(p: Prepared, staged: Staged, per_chunk: int, last_bundle: int, with_priority: bool, partial: Path,
                 executor: Executor, execution: Execution) -> tuple[dict[str, int], list[str], list[pl.DataFrame], int]:
    """The batches as ``executor.partitions`` partitions, then their parts combined;
    ``execution`` records how many ran, where, and why fewer than asked."""
    from migrate.fhir.partitions import Partition, combine, run_partition, split

    batches = [((first - 1) // per_chunk, first, min(first + per_chunk - 1, last_bundle))
               for first in range(1, last_bundle + 1, per_chunk)]
    if len(batches) < executor.partitions:
        execution.notes.append(f"{executor.partitions} partitions asked for, but the FHIR output is "
                               f"{len(batches)} writer batch(es) of up to {per_chunk * p.ctx.options.bundle_size:,} "
                               f"patients and a partition is a range of whole batches: {len(batches)} ran")
    jobs = []
    for index, group in enumerate(split(batches, executor.partitions)):
        low, high = group[0][1], group[-1][2]
        jobs.append(Partition(index, group, staged, p.plan.filter(pl.col("bundle_no").is_between(low, high)),
                              p.orgs.filter(pl.col("bundle_no").is_between(low, high)), organisation_refs(p.orgs),
                              p.ctx, dict(p.shapes.verdicts), with_priority, partial))
    results = executor.map(run_partition, jobs)
    execution.partitions_run = len(results)
    for result in results:
        execution.ran_on[result.ran_on] = execution.ran_on.get(result.ran_on, 0) + 1
    counts, names, errors, validated = combine(results, jobs, partial)
    return counts, names, errors, validated + p.shapes.individually


def _write_batch(built: Built, ctx: Context, writers: _Writers, written: list[str]) -> None:
    if ctx.options.writes_bundles:  # the form ``ndjson``: no bundle is built at all
        texts = bundle_texts(built.resources, ctx)
        folder = writers.bundles or writers.root / "bundles"
        for i, bundle_no in enumerate(texts["bundle_no"]):
            name = bundle_name(bundle_no)
            # One JSON text and its newline: a one-column CSV without quoting (as NDJSON lines).
            texts.slice(i, 1).select("text").write_csv(folder / name, include_header=False, quote_style="never")
            written.append(name)
    by_type = built.resources.with_columns(pl.col("patient_key").fill_null("")).sort(
        "fhir_type", "patient_key", "fhir_id")
    for (resource_type,), frame in by_type.group_by("fhir_type", maintain_order=True):
        if resource_type in ("Organization", "Provenance"):  # not a patient's: by bundle
            frame = frame.sort("bundle_no", "fhir_id")
        writers.lines(str(resource_type), frame["json"])
    writers.table("lineage", built.lineage, LINEAGE_OUT_SCHEMA)
