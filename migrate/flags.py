"""Flags: evaluate the pack's flag rules into the exceptions frame.

Inputs: the referral frame and the patient frame after their derived rules (see
``migrate.rules.engine``) and the compiled pack. Output: one LazyFrame with the
``exceptions.parquet`` columns of docs/architecture.md (``EXCEPTIONS_SCHEMA``), one row per
(subject, flag code), sorted by patient_key, subject_type, subject_key, flag_code.

Other stages (identity: NHS_NUMBER_*, DUPLICATE_NHS_NUMBER, PROBABLE_DUPLICATE,
ALREADY_AT_TARGET) build rows with ``exception_rows`` or to ``EXCEPTIONS_SCHEMA`` and join
them with ``combine_exceptions``, which keeps the same order and uniqueness.

Each rule is a filter of its level's frame: the frames are shared sub-plans, so collecting
the results together (``RuleResults.collect``) computes them once. Evidence text is built
only for the rows that raise a flag.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING

import polars as pl

from migrate import canonical

if TYPE_CHECKING:
    from migrate.rules.model import Level, RulePack

SEVERITY = pl.Enum(canonical.SEVERITIES)
SUBJECT_TYPES = ("patient", "referral")
SUBJECT_KEYS: dict[str, str] = {"referral": "referral_key", "patient": "patient_key"}

EXCEPTIONS_SCHEMA: dict[str, pl.DataType] = {
    "flag_code": pl.String(),
    "severity": SEVERITY,
    "subject_type": pl.String(),
    "subject_key": pl.String(),
    "patient_key": pl.String(),
    "rule_id": pl.String(),
    "evidence": pl.String(),
    "action": pl.String(),
}
SORT_KEYS = ("patient_key", "subject_type", "subject_key", "flag_code", "rule_id")


def evaluate_flags(frames: Mapping[Level, pl.LazyFrame], pack: RulePack) -> pl.LazyFrame:
    """Exceptions raised by every flag rule of ``pack`` over ``frames`` (one per level)."""
    parts = [
        exception_rows(
            frames[rule.applies_to].filter(rule.expr),
            flag_code=rule.flag or "", severity=rule.severity or "low", subject_type=rule.applies_to,
            rule_id=rule.id, evidence=rule.evidence_expr if rule.evidence_expr is not None else pl.lit(""),
            action=rule.action or "",
        ).with_columns(pl.lit(order, dtype=pl.Int64).alias("_order"))
        for order, rule in enumerate(pack.flag_rules())
    ]
    return combine_exceptions(parts)


def exception_rows(
    subjects: pl.LazyFrame, *, flag_code: str, severity: str, subject_type: str, rule_id: str,
    evidence: pl.Expr, action: str, subject_key: pl.Expr | None = None,
) -> pl.LazyFrame:
    """Exceptions rows (``EXCEPTIONS_SCHEMA``) for each row of ``subjects``.

    ``subjects`` must have ``patient_key`` and, unless ``subject_key`` is given, the key
    column of ``subject_type``. ``evidence`` must never show names, birth dates or NHS numbers.
    """
    key = subject_key if subject_key is not None else pl.col(SUBJECT_KEYS[subject_type])
    return subjects.select(
        pl.lit(flag_code, dtype=pl.String).alias("flag_code"),
        pl.lit(severity, dtype=pl.String).cast(SEVERITY).alias("severity"),
        pl.lit(subject_type, dtype=pl.String).alias("subject_type"),
        key.cast(pl.String).alias("subject_key"),
        pl.col("patient_key").cast(pl.String),
        pl.lit(rule_id, dtype=pl.String).alias("rule_id"),
        evidence.cast(pl.String).alias("evidence"),
        pl.lit(action, dtype=pl.String).alias("action"),
    )


def combine_exceptions(parts: Iterable[pl.LazyFrame]) -> pl.LazyFrame:
    """One exceptions frame from several: one row per (subject, flag code), sorted.

    Where several rules raise the same flag for one subject, the most severe is kept, then
    the one earliest in its pack (column ``_order`` when present), so output is stable.
    """
    frames = [p if "_order" in p.collect_schema() else p.with_columns(pl.lit(0, dtype=pl.Int64).alias("_order"))
              for p in parts]
    if not frames:
        return pl.LazyFrame(schema=EXCEPTIONS_SCHEMA)
    return (
        pl.concat(frames, how="vertical")
        .sort("severity", "_order", *SORT_KEYS)
        .unique(subset=["subject_type", "subject_key", "flag_code"], keep="first", maintain_order=True)
        .sort(*SORT_KEYS)
        .select(list(EXCEPTIONS_SCHEMA))
    )
