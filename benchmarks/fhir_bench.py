"""Benchmark of the FHIR stage: build + validate + write for a synthetic extract.

    .venv/bin/python benchmarks/fhir_bench.py --patients 1000000
    .venv/bin/python benchmarks/fhir_bench.py --patients 100000 --work /tmp/fhir-bench

Steps (results in benchmarks/fhir.md, not README.md):

1. prepare (cached in ``--work/<N>/``, not timed as the FHIR stage): ``migrate.synth``
   writes the extract, ``migrate.ingest`` reads it with ``mappings/generic-csv.yaml`` into
   canonical Parquet, the rules engine (``migrate.rules``; simple stand-in frames if it is
   not importable) gives cohorts, exceptions and the sharing features;
2. the FHIR stage, ``write_fhir`` over Parquet scans, in a fresh child process so its peak
   RSS is its own: wall and CPU time, resources/s, peak RSS, resources validated by the
   R4B models;
3. the baseline: bare ``fhir.resources`` R4B ``model_validate_json`` of a stratified sample
   of the written resources (``--sample`` per type), extrapolated per type to all of them:
   the time full model validation alone would take, and its ratio to the whole stage.

The machine's load average is printed before and after: the benchmark machine is shared.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import random
import resource
import shutil
import subprocess
import sys
import time
from datetime import date
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
CUTOVER = date(2022, 10, 1)


def prepare(patients: int, work: Path) -> dict[str, Any]:
    """Synthesise, ingest and run the rules once per size; reuse the result afterwards."""
    import polars as pl

    done = work / "prepared.json"
    if done.exists():
        return dict(json.loads(done.read_text()))
    from migrate.ingest import ingest
    from migrate.profile import load_profile
    from migrate.resources import mappings_dir
    from migrate.synth import synthesise

    timings: dict[str, Any] = {}
    t = time.perf_counter()
    if not (work / "extract" / "truth" / "summary.json").exists():  # an extract put there is used as it is
        synthesise(work / "extract", patients=patients)
    timings["synth_s"] = round(time.perf_counter() - t, 1)
    t = time.perf_counter()
    ingested = ingest(work / "extract", load_profile(mappings_dir() / "generic-csv.yaml"), work / "tmp",
                      canonical_dir=work / "canonical")
    timings["ingest_s"] = round(time.perf_counter() - t, 1)
    shutil.rmtree(work / "tmp", ignore_errors=True)
    t = time.perf_counter()
    try:
        from migrate.rules import evaluate, load_pack
    except ImportError:  # the rules engine is not there yet: simple stand-ins
        refs = ingested.tables["referrals"]
        cohort = pl.col("status").cast(pl.String).replace_strict(
            {"open": "backlog", "closed": "closed", "rejected": "rejected"}, default="closed")
        refs.select("referral_key", "patient_key", cohort.alias("cohort"),
                    pl.lit("stand-in").alias("cohort_reason")).sink_parquet(work / "cohorts.parquet")
        pl.DataFrame(schema={c: pl.String for c in ("flag_code", "severity", "subject_type", "subject_key",
                                                    "patient_key", "rule_id", "evidence", "action")}
                     ).write_parquet(work / "exceptions.parquet")
        ingested.tables["patients"].select("patient_key", pl.lit(False).alias("blocked"),
                                           pl.lit(None, dtype=pl.String).alias("latest_code"),
                                           pl.lit(None, dtype=pl.Date).alias("latest_date")
                                           ).sink_parquet(work / "sharing.parquet")
        timings["rules"] = "stand-in frames (migrate.rules not importable)"
    else:
        from migrate.fhir import sharing_from_features

        results = evaluate(ingested.tables, load_pack(None), CUTOVER)
        frames = results.collect()
        frames["cohorts"].write_parquet(work / "cohorts.parquet")
        frames["exceptions"].write_parquet(work / "exceptions.parquet")
        sharing_from_features(results.patient_features).sink_parquet(work / "sharing.parquet")
        timings["rules"] = "migrate.rules default pack"
    timings["rules_s"] = round(time.perf_counter() - t, 1)
    info = {"patients": patients, "heights": ingested.heights, "timings": timings,
            "inputs": [{"path": f.name, "sha256": f.sha256} for f in ingested.files]}
    done.write_text(json.dumps(info, indent=2))
    return info


def fhir_stage(work: Path, out: Path, executor: str = "local", partitions: int | None = None,
               chunk_patients: int | None = None) -> dict[str, Any]:
    """Run in the child process: the FHIR stage alone, measured. With ``--executor dask``
    its partitions run on a LocalCluster whose worker processes are this one's children:
    ``workers_peak_rss_mb`` is the largest of their peaks (RUSAGE_CHILDREN, once the
    cluster is closed and its workers waited for); their CPU time is in the parent's."""
    import polars as pl

    from migrate.executor import make_executor
    from migrate.fhir import FhirOptions, InputFile, write_fhir

    info = json.loads((work / "prepared.json").read_text())
    tables = {t: pl.scan_parquet(work / "canonical" / f"{t}.parquet")
              for t in ("patients", "referrals", "contacts", "codes")}
    options = FhirOptions(source_system="outgoing-provider", run_id="fhir-bench", cutover=CUTOVER,
                          inputs=tuple(InputFile(i["path"], i["sha256"]) for i in info["inputs"]))
    if chunk_patients is not None:  # the writer's batch (patients built at once)
        options = dataclasses.replace(options, chunk_patients=chunk_patients)
    t = time.perf_counter()
    result = write_fhir(tables, pl.scan_parquet(work / "cohorts.parquet"), pl.LazyFrame(),
                        pl.scan_parquet(work / "exceptions.parquet"), pl.scan_parquet(work / "sharing.parquet"),
                        options, out, executor=make_executor(executor, None, partitions))
    wall = time.perf_counter() - t
    total = sum(result.counts.values())
    out_bytes = sum(p.stat().st_size for p in result.files)
    return {"wall_s": round(wall, 1), "resources": total, "resources_per_s": round(total / wall),
            "bundles": result.bundles, "counts": result.counts, "errors": result.errors.height,
            "model_validated": result.model_validated, "output_gb": round(out_bytes / 1e9, 2),
            "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
            "workers_peak_rss_mb": round(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024),
            "execution": None if result.execution is None else result.execution.record()}


def baseline(out: Path, counts: dict[str, int], per_type: int) -> dict[str, Any]:
    """Bare R4B model validation of a sample per type, extrapolated to every resource."""
    from migrate.fhir.validate import model

    rng = random.Random(20221001)
    rates, seconds = {}, 0.0
    for path in sorted((out / "fhir" / "ndjson").glob("*.ndjson")):
        lines = _sample_lines(path, per_type, rng)
        cls = model(path.stem)
        t = time.perf_counter()
        for line in lines:
            cls.model_validate_json(line)
        took = time.perf_counter() - t
        rates[path.stem] = round(len(lines) / took)
        seconds += counts.get(path.stem, 0) / (len(lines) / took)
    return {"per_type_per_s": rates, "sample_per_type": per_type, "extrapolated_s": round(seconds, 1)}


def _sample_lines(path: Path, k: int, rng: random.Random) -> list[str]:
    """Reservoir sample of ``k`` lines (files can be gigabytes)."""
    chosen: list[str] = []
    with path.open(encoding="utf-8") as fh:
        for i, line in enumerate(fh):
            if i < k:
                chosen.append(line)
            else:
                j = rng.randint(0, i)
                if j < k:
                    chosen[j] = line
    return chosen


def _step(step: str, args: argparse.Namespace) -> str:
    more = ["--executor", args.executor] + ([] if args.partitions is None else ["--partitions", str(args.partitions)])
    more += [] if args.chunk_patients is None else ["--chunk-patients", str(args.chunk_patients)]
    done = subprocess.run([sys.executable, __file__, "--patients", str(args.patients), "--work", str(args.work),
                           "--step", step, *more], check=True, capture_output=True, text=True)
    return done.stdout.strip().splitlines()[-1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--patients", type=int, default=1_000_000)
    parser.add_argument("--work", type=Path, default=Path("/tmp/handover-fhir-bench"))
    parser.add_argument("--sample", type=int, default=5_000, help="resources per type for the model baseline")
    parser.add_argument("--keep", action="store_true", help="keep the FHIR output (it is large)")
    parser.add_argument("--executor", default="local", choices=["local", "dask"],
                        help="where the partitions run (dask: a LocalCluster of 2 worker processes)")
    parser.add_argument("--partitions", type=int, default=None)
    parser.add_argument("--chunk-patients", type=int, default=None,
                        help="patients per writer batch (default: FhirOptions.chunk_patients)")
    parser.add_argument("--step", choices=["prepare", "fhir"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    work = args.work / str(args.patients)
    out = work / "run"
    if args.step == "prepare":
        work.mkdir(parents=True, exist_ok=True)
        print(json.dumps(prepare(args.patients, work)))
        return
    if args.step == "fhir":
        print(json.dumps(fhir_stage(work, out, args.executor, args.partitions, args.chunk_patients)))
        return
    # Each step in its own process: ru_maxrss survives fork+exec, so a child started from
    # a parent that had ingested a large extract would report the parent's peak as its own.
    prepared = json.loads(_step("prepare", args))
    load_before = os.getloadavg()
    cpu_before = resource.getrusage(resource.RUSAGE_CHILDREN)
    stage = json.loads(_step("fhir", args))
    cpu_after = resource.getrusage(resource.RUSAGE_CHILDREN)
    load_after = os.getloadavg()
    stage["cpu_s"] = round(cpu_after.ru_utime + cpu_after.ru_stime - cpu_before.ru_utime - cpu_before.ru_stime, 1)
    base = baseline(out, stage["counts"], args.sample)
    report = {
        "date": date.today().isoformat(), "cpus": os.cpu_count(), "patients": args.patients,
        "executor": args.executor, "partitions": args.partitions, "chunk_patients": args.chunk_patients,
        "prepared": prepared["timings"], "rows": prepared["heights"], "fhir": stage, "baseline": base,
        "ratio_model_to_stage": round(base["extrapolated_s"] / stage["wall_s"], 1),
        "load_average_before": [round(x, 2) for x in load_before],
        "load_average_after": [round(x, 2) for x in load_after],
    }
    print(json.dumps(report, indent=2))
    if not args.keep:
        shutil.rmtree(out, ignore_errors=True)


if __name__ == "__main__":
    main()
