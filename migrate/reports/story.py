"""One patient's story, from the run folder alone (``handover explain RUN PATIENT``).

An audit panel asking "why was she on the backlog, why was her history not shared?" gets,
for the patient (by local id, patient key or NHS number; by pseudonym token when a key is
given) and every record merged with them:

- ``patients``: each source patient record, its survivor, NHS number verdict, cohort and
  disposition;
- ``source_rows``: every source row of theirs by file and row, with its disposition and the
  FHIR resources it became;
- ``quarantined``: quarantined rows whose record names one of their ids (patient, referral,
  contact) or NHS number, with the reason and message (never the raw record);
- ``identity``: merges (identity's and the source's own), candidate duplicate pairs;
- ``referrals``: each referral's cohort, the reason recorded and the rule path that decided it
  (the cases of the pack's cohort rule that did not hold, and the one that did);
- ``flags``: every exception raised for them, with rule, evidence and action;
- ``decisions``: the review decisions applied (``decisions.parquet``, when the run has it);
- ``sharing``: the sharing entries of every source (coded entry, patient setting, practice
  setting) with the one that decided the block or its lifting;
- ``fhir``: resources emitted (type and id), rows withheld and rows left out, with reasons.

Identifiers are printed only because the user asked for this patient. ``tokenise`` replaces
every identifier by its pseudonym (``migrate.reports.pseudonymise``), so the JSON or HTML
may go into a pseudonymised pack.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import polars as pl

from migrate.errors import ConfigError
from migrate.reports.pseudonymise import Pseudonymiser, run_identifiers
from migrate.reports.rundata import RunFolder
from migrate.reports.story_rules import RulePath

DECISIONS = "decisions.parquet"  # written by the review loop (issue #15) when decisions were applied
REFERRAL_FIELDS = ("referral_key", "source_referral_id", "received_date", "service_line", "assigned_priority",
                   "transfer_list", "status", "closed_date", "red_flags", "body_site")
# Story keys holding one identifier each, and those holding text that may contain some.
# Story keys holding one identifier each (tokenised whole), and keys holding one key or two
# joined by "+"; every other text is scrubbed word by word. The query stays as typed: with a
# key it is already a token.
ID_KEYS = {"patient_key", "source_patient_id", "nhs_number", "survivor_key", "referral_key", "source_referral_id",
           "contact_key", "at_target_id", "fhir_id", "patient_key_a", "patient_key_b", "matched"}
PAIR_KEYS = {"subject_key"}
KEEP_KEYS = {"query"}


def _digits(value: str) -> str:
    return re.sub(r"[\s-]", "", value)


def _rows(frame: pl.DataFrame) -> list[dict[str, Any]]:
    """Rows as plain data (dates as ISO text, so JSON and HTML show them the same)."""
    return [{k: (v.isoformat() if hasattr(v, "isoformat") else v) for k, v in row.items()}
            for row in frame.iter_rows(named=True)]


def find_patients(run: RunFolder, patient: str, key: bytes | None = None) -> list[str]:
    """Patient keys ``patient`` names: a patient key, source patient id or NHS number (spaces and
    dashes ignored), or — with ``key`` — the pseudonym token of one of them."""
    patients = run.canonical("patients").select("patient_key", "source_patient_id", "nhs_number", "nhs_number_raw")
    if key is not None:
        p = Pseudonymiser(key)
        wanted = patient.strip().lower()
        columns = ("patient_key", "source_patient_id", "nhs_number")
        # memory: whole: a token is matched by tokenising every patient's ids (these 3 columns, one row per source
        # patient); ``handover explain`` with a key only
        every = patients.select(columns).collect()
        hits = set()
        for column in columns:
            tokens = p.column(every[column])
            hits |= set(every.filter(tokens == wanted)["patient_key"].to_list())
        return sorted(hits)
    text, digits = patient.strip(), _digits(patient)
    # memory: the records ``patient`` names (a few)
    found = patients.filter((pl.col("patient_key") == text) | (pl.col("source_patient_id") == text)
                            | (pl.col("nhs_number") == digits) | (pl.col("nhs_number_raw") == text)).collect()
    return sorted(found["patient_key"].to_list())


def _cluster(run: RunFolder, starts: Iterable[str]) -> list[str]:
    """The patients merged with ``starts`` (through their survivor), ``starts`` included."""
    starts = list(starts)
    summary = run.scan("patients.parquet").select("patient_key", "survivor_key")
    # memory: the starts' rows, then their survivors' members only (one cluster)
    survivors = summary.filter(pl.col("patient_key").is_in(starts)).collect()["survivor_key"].to_list()
    members = summary.filter(pl.col("survivor_key").is_in(survivors) | pl.col("patient_key").is_in(starts)).collect()
    return sorted(set(members["patient_key"].to_list()) | set(starts))


def patient_story(run_dir: Path, patient: str, key: bytes | None = None) -> dict[str, Any]:
    """The story of ``patient`` in the run at ``run_dir`` (module docstring); tokenised with ``key``.

    ConfigError (exit 2) when the run holds no such patient, naming the run but not the query.
    """
    run = RunFolder.open(run_dir)
    starts = find_patients(run, patient, key)
    keys = _cluster(run, starts) if starts else []
    ids = _identifiers(run, keys)
    quarantined = _quarantined(run, ids if keys else [patient.strip(), _digits(patient)] if key is None else [])
    if not keys and not quarantined:
        raise ConfigError(f"run {run.run_id}: no patient with that local id, NHS number"
                          f"{' or token' if key is not None else ''} (nor a quarantined row naming it)")
    rule_path = RulePath.of(run)
    story: dict[str, Any] = {
        "run_id": run.run_id, "cutover_date": run.manifest.get("cutover_date"), "query": patient,
        "matched": starts, "patients": _patients(run, keys), "source_rows": _source_rows(run, keys),
        "quarantined": quarantined, "identity": _identity(run, keys),
        "referrals": _referrals(run, keys, rule_path), "flags": _flags(run, keys, rule_path),
        "sharing": _sharing(run, keys), "decisions": _decisions(run, keys), "fhir": _fhir(run, keys),
        "rule_pack": rule_path.note,
    }
    story["summary"] = _summary(story)
    story["tokenised"] = False
    return tokenise(story, run, key) if key is not None else story


def _identifiers(run: RunFolder, keys: list[str]) -> list[str]:
    """Every id a source record of these patients may carry: patient, referral and contact ids, NHS numbers."""
    if not keys:
        return []
    # memory: one patient's cluster (``keys``): their rows of each table below, and the rows naming them
    pats = run.canonical("patients").filter(pl.col("patient_key").is_in(keys)).select(
        "patient_key", "source_patient_id", "nhs_number", "nhs_number_raw").collect()
    refs = run.canonical("referrals").filter(pl.col("patient_key").is_in(keys)).select(
        "referral_key", "source_referral_id").collect()
    contacts = run.canonical("contacts").filter(pl.col("patient_key").is_in(keys)).select("contact_key").collect()
    values = [v for frame in (pats, refs, contacts) for column in frame.columns for v in frame[column].to_list()]
    return sorted({str(v) for v in values if v})


def _quarantined(run: RunFolder, ids: list[str]) -> list[dict[str, Any]]:
    """Quarantined rows whose raw record names one of ``ids`` as a whole value or word."""
    ids = [i for i in dict.fromkeys(ids) if i]
    if not ids:
        return []
    pattern = r"(?:^|[^0-9A-Za-z])(?:" + "|".join(re.escape(i) for i in ids) + r")(?:[^0-9A-Za-z]|$)"
    # memory: the quarantined rows naming the cluster's ids
    found = run.scan("quarantine.parquet").filter(pl.col("raw").str.contains(pattern)).select(
        "source_file", "source_row", "table", "reason_code", "field", "message").sort(
        "source_file", "source_row").collect()
    return _rows(found)


def _patients(run: RunFolder, keys: list[str]) -> list[dict[str, Any]]:
    canonical = run.canonical("patients").filter(pl.col("patient_key").is_in(keys)).select(
        "patient_key", "source_patient_id", "source_file", "source_row")
    summary = run.scan("patients.parquet").filter(pl.col("patient_key").is_in(keys))
    # memory: the cluster's rows (``keys``)
    frame = summary.join(canonical, on="patient_key", how="left").select(
        "patient_key", "source_patient_id", "nhs_number", "nhs_number_valid", "nhs_number_verification",
        "survivor_key", pl.col("patient_cohort").cast(pl.String), pl.col("disposition").cast(pl.String),
        "flag_codes", "at_target_id", "source_file", "source_row").sort("patient_key").collect()
    return _rows(frame)


def _source_rows(run: RunFolder, keys: list[str]) -> list[dict[str, Any]]:
    """Each source row of these patients with its disposition and the resources it became."""
    # memory: the cluster's rows (``keys``)
    lineage = run.scan("lineage.parquet").filter(pl.col("patient_key").is_in(keys))
    grouped = (lineage.group_by("source_file", "source_row", "table", "patient_key", "disposition")
               .agg(pl.concat_str([pl.col("fhir_type"), pl.col("fhir_id")], separator="/").drop_nulls().sort()
                    .alias("resources"))
               .with_columns(pl.col("disposition").cast(pl.String))
               .sort("source_file", "source_row").collect())
    return _rows(grouped)


def _identity(run: RunFolder, keys: list[str]) -> dict[str, Any]:
    # memory: the cluster's rows (``keys``) of each file below
    summary = run.scan("patients.parquet").filter(pl.col("patient_key").is_in(keys)).collect()
    merges = summary.filter(pl.col("patient_key") != pl.col("survivor_key")).select("patient_key", "survivor_key")
    source_merges = run.scan("lineage.parquet").filter(
        (pl.col("table") == "merges") & pl.col("patient_key").is_in(keys)).select(
        "source_file", "source_row", "patient_key").unique().sort("source_file", "source_row").collect()
    # memory: the pairs naming one of the cluster
    pairs = run.scan("duplicates.parquet").filter(
        pl.col("patient_key_a").is_in(keys) | pl.col("patient_key_b").is_in(keys)).collect()
    # Every column of the pairs file (weights and contributions where the run has them).
    return {"merged": _rows(merges.sort("patient_key")), "source_merges": _rows(source_merges),
            "candidate_pairs": _rows(pairs.sort("patient_key_a", "patient_key_b"))}


def _referrals(run: RunFolder, keys: list[str], rule_path: RulePath) -> list[dict[str, Any]]:
    # memory: the cluster's rows (``keys``)
    refs = run.canonical("referrals").filter(pl.col("patient_key").is_in(keys)).select(
        *REFERRAL_FIELDS, "source_file", "source_row")
    cohorts = run.scan("cohorts.parquet").select("referral_key", pl.col("cohort").cast(pl.String), "cohort_reason",
                                                 "list_mismatch")
    frame = refs.join(cohorts, on="referral_key", how="left").with_columns(
        pl.col("assigned_priority", "transfer_list", "status").cast(pl.String)).sort("referral_key").collect()
    out = []
    for row in _rows(frame):
        row["rule_path"] = rule_path.cohort(row["cohort"], row["cohort_reason"])
        out.append(row)
    return out


def _flags(run: RunFolder, keys: list[str], rule_path: RulePath) -> list[dict[str, Any]]:
    pair_member = pl.col("subject_key").str.split("+").list.eval(pl.element().is_in(keys)).list.any()
    # memory: the cluster's rows (``keys``)
    frame = run.scan("exceptions.parquet").filter(pl.col("patient_key").is_in(keys) | pair_member).select(
        "flag_code", pl.col("severity").cast(pl.String), "subject_type", "subject_key", "rule_id", "evidence",
        "action").sort("subject_type", "subject_key", "flag_code").collect()
    rows = _rows(frame)
    for row in rows:
        row["condition"] = rule_path.condition(row["rule_id"])
    return rows


def _sharing(run: RunFolder, keys: list[str]) -> list[dict[str, Any]]:
    """The patients' sharing entries of every source (``sharing.parquet``), the deciding one
    marked: where a block comes from, and so where it is lifted."""
    if not run.has("sharing.parquet"):
        return []
    # memory: the cluster's rows (``keys``)
    return _rows(run.scan("sharing.parquet").filter(pl.col("patient_key").is_in(keys)).select(
        "source", "kind", "scope", "label", pl.col("recorded_date").cast(pl.String), "source_file", "source_row",
        "source_column", "decides").sort("source_file", "source_row", "label").collect())


def _decisions(run: RunFolder, keys: list[str]) -> dict[str, Any]:
    """The review decisions applied to these patients, or that none were recorded."""
    if not run.has(DECISIONS):
        return {"recorded": False, "note": "no decisions recorded", "rows": []}
    frame = run.scan(DECISIONS)
    names = frame.collect_schema().names()
    # A pair's decision ("P05+P06") belongs to both of its patients.
    match = [pl.col(c).cast(pl.String).str.split("+").list.eval(pl.element().is_in(keys)).list.any()
             for c in ("patient_key", "subject_key") if c in names]
    if not match:
        return {"recorded": True, "note": f"{DECISIONS} has no patient_key or subject_key column", "rows": []}
    # The columns a reader needs (migrate.review.validate.DECISIONS_SCHEMA has the rest).
    shown = [c for c in ("flag_code", "subject_key", "decision", "status", "reason", "reviewer", "second_reviewer",
                         "decided_on", "note", "source_file", "source_row", "resources") if c in names]
    # memory: the cluster's decisions (``keys``)
    rows = _rows(frame.filter(pl.any_horizontal(match)).select(shown or names).collect())
    statuses = [str(r.get("status")) for r in rows]
    counts = ", ".join(f"{statuses.count(s)} {s}" for s in ("applied", "rejected", "superseded") if s in statuses)
    return {"recorded": True, "note": f"{len(rows)} decision(s): {counts}" if rows and counts else
            (f"{len(rows)} decision(s)" if rows else "no decisions for this patient"), "rows": rows}


def _fhir(run: RunFolder, keys: list[str]) -> dict[str, Any]:
    # memory: the cluster's rows (``keys``)
    emitted = run.scan("lineage.parquet").filter(pl.col("patient_key").is_in(keys) & pl.col("fhir_id").is_not_null())
    resources = emitted.select("fhir_type", "fhir_id").unique().sort("fhir_type", "fhir_id").collect()
    out: dict[str, Any] = {"emitted": _rows(resources)}
    # Rows sent no resource, and why: their disposition and its reason, in lineage.parquet.
    lineage = run.scan("lineage.parquet")
    has_reason = "reason" in lineage.collect_schema().names()
    for name, disposition in (("withheld", "withheld"), ("not_emitted", "out_of_scope")):
        # memory: the cluster's rows (``keys``)
        rows = lineage.filter(pl.col("patient_key").is_in(keys) & (pl.col("disposition").cast(pl.String) == disposition))
        out[name] = _rows(rows.select("source_file", "source_row", "table", "reason").unique()
                          .sort("source_file", "source_row").collect()) if has_reason else []
    out["present"] = bool(run.fhir_ndjson())
    return out


def _summary(story: dict[str, Any]) -> str:
    """The story in one paragraph: who, cohort, where the rows went, flags, FHIR."""
    rows = story["source_rows"]
    by_disposition: dict[str, int] = {}
    for r in rows:
        by_disposition[r["disposition"]] = by_disposition.get(r["disposition"], 0) + 1
    parts = [f"{len(story['patients'])} patient record(s)"]
    cohorts = sorted({str(p["patient_cohort"]) for p in story["patients"] if p["patient_cohort"]})
    if cohorts:
        parts.append("cohort " + " / ".join(cohorts))
    parts.append(f"{len(rows)} source row(s): " + ", ".join(f"{n} {d.replace('_', ' ')}"
                                                             for d, n in sorted(by_disposition.items())))
    if story["quarantined"]:
        parts.append(f"{len(story['quarantined'])} quarantined row(s) name them")
    if story["flags"]:
        parts.append("flags " + ", ".join(sorted({f["flag_code"] for f in story["flags"]})))
    fhir = story["fhir"]
    parts.append(f"{len(fhir['emitted'])} FHIR resource(s) emitted, {len(fhir['withheld'])} row(s) withheld, "
                 f"{len(fhir['not_emitted'])} out of scope")
    return "; ".join(parts)


def tokenise(story: dict[str, Any], run: RunFolder, key: bytes) -> dict[str, Any]:
    """The story with every identifier replaced by its pseudonym token (same tokens as the
    pseudonymised pack made with ``key``); every other text scrubbed word by word, so an
    identifier inside evidence, a message or a column a later release adds is caught too."""
    p = Pseudonymiser(key, run_identifiers(run))
    texts: set[str] = set()

    def collect(data: Any, name: str) -> None:
        if isinstance(data, dict):
            for k, v in data.items():
                collect(v, str(k))
        elif isinstance(data, list):
            for v in data:
                collect(v, name)
        elif isinstance(data, str) and name not in ID_KEYS | PAIR_KEYS | KEEP_KEYS | {"resources"}:
            texts.add(data)

    collect(story, "")
    originals = sorted(texts)
    scrubbed = dict(zip(originals, p.texts(pl.Series(originals, dtype=pl.String)).to_list(), strict=True)) \
        if originals else {}

    def apply(data: Any, name: str) -> Any:
        if isinstance(data, dict):
            return {k: apply(v, str(k)) for k, v in data.items()}
        if isinstance(data, list):
            return [apply(v, name) for v in data]
        if isinstance(data, str):
            if name in ID_KEYS:
                return p.token(data)
            if name in PAIR_KEYS:
                return "+".join(p.token(part) for part in data.split("+"))
            if name == "resources":  # "Type/id"
                kind, _, rid = data.partition("/")
                return f"{kind}/{p.token(rid)}"
            return data if name in KEEP_KEYS else scrubbed.get(data, data)
        return data

    out: dict[str, Any] = apply(story, "")
    out["tokenised"] = True
    return out
