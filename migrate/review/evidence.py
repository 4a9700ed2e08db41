"""The evidence a decision binds to: one fingerprint (``evidence_id``) per raised item.

A decision binds to its subject, its flag and the evidence the reviewer saw. The worklist
shows each item's ``evidence_id`` (the Evidence id column); a decision carries it back,
and a later batch compares it with the item's fingerprint then: when they differ the
evidence changed and the decision is superseded (the item returns for review).

What is fingerprinted is the pack's choice per family (``binds_to``): ``evidence``, the
flag's evidence text (what the worklist showed); ``records``, the canonical rows of the
patients a pair names (every column but where the row sat in its file), so a pair decided
``not_same_person`` stays decided while neither record changes, even though the identity
model re-estimated from a new extract scores it a little differently.
"""

from __future__ import annotations

import hashlib
import json

import polars as pl

from migrate.review.vocabulary import ReviewVocabulary

ITEM_SCHEMA: dict[str, pl.DataType] = {
    "flag_code": pl.String(), "subject_key": pl.String(), "rule_id": pl.String(), "subject_type": pl.String(),
    "patient_key": pl.String(), "severity": pl.String(), "evidence_id": pl.String(),
}
_WHERE = ("source_file", "source_row")


def _digest(texts: pl.Series) -> pl.Series:
    # sha256 (not polars' hash, which may change between versions): ids travel between batches.
    return pl.Series([hashlib.sha256(t.encode()).hexdigest()[:12] for t in texts.to_list()], dtype=pl.String)


def _records(exceptions: pl.DataFrame, patients: pl.LazyFrame) -> pl.DataFrame:
    """subject_key -> the canonical rows of the patients it names, as one JSON text."""
    keys = exceptions.select("subject_key").unique().with_columns(
        pl.col("subject_key").str.split("+").alias("patient_key")).explode("patient_key")
    if keys.height == 0:
        return pl.DataFrame(schema={"subject_key": pl.String, "_records": pl.String})
    names = [c for c in patients.collect_schema().names() if c not in _WHERE]
    # memory: the patients named by the flags bound to their records (in the default pack the probable
    # duplicate and NHS number conflict pairs), one JSON text each: grows with those flags
    rows = patients.join(keys.lazy().select("patient_key").unique(), on="patient_key", how="semi").select(
        "patient_key", pl.struct([pl.col(c).cast(pl.String) for c in names]).struct.json_encode().alias("_row")
    ).collect()
    texts = {k: r for k, r in rows.iter_rows()}
    per = keys.group_by("subject_key").agg(pl.col("patient_key").sort())
    return pl.DataFrame({
        "subject_key": per["subject_key"],
        "_records": [json.dumps([texts.get(k) for k in ks]) for ks in per["patient_key"].to_list()],
    }, schema={"subject_key": pl.String, "_records": pl.String})


def items(exceptions: pl.DataFrame, patients: pl.LazyFrame, vocabulary: ReviewVocabulary) -> pl.DataFrame:
    """One row per raised item (``ITEM_SCHEMA``): the exception's identity and its fingerprint.

    ``exceptions``: ``exceptions.parquet`` rows; ``patients``: canonical patients (every
    source record, merged ones too)."""
    frame = exceptions.select("flag_code", "subject_key", "rule_id", "subject_type", "patient_key",
                              pl.col("severity").cast(pl.String), "evidence")
    by_records = [f for f in frame["flag_code"].unique().to_list() if vocabulary.binds_to(f) == "records"]
    records = _records(frame.filter(pl.col("flag_code").is_in(by_records)), patients)
    bound = frame.join(records, on="subject_key", how="left").with_columns(
        pl.when(pl.col("flag_code").is_in(by_records)).then(pl.concat_str([pl.lit("records:"), "_records"]))
        .otherwise(pl.concat_str([pl.lit("evidence:"), pl.col("evidence").fill_null("")])).alias("_bound"))
    text = pl.concat_str(["flag_code", "subject_key", "_bound"], separator="|")
    texts = bound.select(text.fill_null("")).to_series()
    return bound.with_columns(_digest(texts).alias("evidence_id")).select(list(ITEM_SCHEMA)).cast(
        ITEM_SCHEMA)  # type: ignore[arg-type]
