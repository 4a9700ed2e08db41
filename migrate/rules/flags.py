"""Flags: evaluate the pack's flag rules into the exceptions frame.

Inputs: the referral frame and the patient frame after their derived rules (see
``migrate.rules.engine``) and the compiled pack. Output: one LazyFrame with the
``exceptions.parquet`` columns of docs/architecture.md (``EXCEPTIONS_SCHEMA``), one row per
(subject, flag code), sorted by subject_type, subject_key, flag_code (``SORT_KEYS``).

Other stages (identity: NHS_NUMBER_*, DUPLICATE_NHS_NUMBER, PROBABLE_DUPLICATE,
ALREADY_AT_TARGET) build rows with ``exception_rows`` (or to ``EXCEPTIONS_SCHEMA``) and
join them with ``combine_exceptions``, which keeps the same order and uniqueness.

Each rule is a filter of its level's frame, so evidence text is built only for the rows
that raise a flag.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING

import polars as pl

from migrate import canonical

if TYPE_CHECKING:
    from migrate.rules.model import Level, RulePack

SEVERITY = pl.Enum(canonical.SEVERITIES)
SUBJECT_TYPES: tuple[Level, ...] = ("patient", "referral")  # alphabetical: the output order
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
# Output order: every patient-level row, then every referral-level row; by key, then code.
SORT_KEYS = ("subject_type", "subject_key", "flag_code", "rule_id")


def evaluate_flags(frames: Mapping[Level, pl.LazyFrame], pack: RulePack) -> pl.LazyFrame:
    """Exceptions raised by every flag rule of ``pack`` over ``frames`` (one per level).

    Output is in ``SORT_KEYS`` order without sorting the (possibly millions of) exception
    rows by their strings: each level's frame is sorted by its key once (free when it
    already is), rows carry their integer position and their rule's rank in
    (flag_code, severity, pack order), and only those integers are sorted.
    """
    rules = pack.flag_rules()
    codes = [rule.flag or "" for rule in rules]
    ordered = sorted(range(len(rules)), key=lambda i: (codes[i], canonical.SEVERITIES.index(rules[i].severity
                                                                                           or "low"), i))
    rank = {rule_index: position for position, rule_index in enumerate(ordered)}
    # Deduplication costs a pass: only pay it when two rules share a flag code.
    dedupe = len(set(codes)) < len(codes)
    levels: list[pl.LazyFrame] = []
    for level in SUBJECT_TYPES:
        subjects = frames[level].sort(SUBJECT_KEYS[level]).with_row_index("_row")
        parts = [
            subjects.filter(rule.expr).select(
                "_row", pl.lit(rank[i], dtype=pl.Int64).alias("_rank"),
                *_columns(flag_code=rule.flag or "", severity=rule.severity or "low", subject_type=level,
                          rule_id=rule.id, action=rule.action or "",
                          evidence=rule.evidence_expr if rule.evidence_expr is not None else pl.lit(""),
                          subject_key=pl.col(SUBJECT_KEYS[level])),
            )
            for i, rule in enumerate(rules) if rule.applies_to == level
        ]
        if not parts:
            continue
        rows = pl.concat(parts, how="vertical").sort("_row", "_rank")
        if dedupe:
            rows = rows.unique(subset=["_row", "flag_code"], keep="first", maintain_order=True)
        levels.append(rows.select(list(EXCEPTIONS_SCHEMA)))
    return pl.concat(levels, how="vertical") if levels else pl.LazyFrame(schema=EXCEPTIONS_SCHEMA)


def exception_rows(
    subjects: pl.LazyFrame, *, flag_code: str, severity: str, subject_type: str, rule_id: str,
    evidence: pl.Expr, action: str, subject_key: pl.Expr | None = None,
) -> pl.LazyFrame:
    """Exceptions rows (``EXCEPTIONS_SCHEMA``) for each row of ``subjects``.

    For other stages raising flags of their own (identity). ``subjects`` must have
    ``patient_key`` and, unless ``subject_key`` is given, the key column of ``subject_type``.
    ``evidence`` must never show names, birth dates or NHS numbers.
    """
    key = subject_key if subject_key is not None else pl.col(SUBJECT_KEYS[subject_type])
    return subjects.select(_columns(flag_code=flag_code, severity=severity, subject_type=subject_type,
                                    rule_id=rule_id, evidence=evidence, action=action, subject_key=key))


def _columns(*, flag_code: str, severity: str, subject_type: str, rule_id: str, evidence: pl.Expr, action: str,
             subject_key: pl.Expr) -> list[pl.Expr]:
    return [
        pl.lit(flag_code, dtype=pl.String).alias("flag_code"),
        pl.lit(severity, dtype=pl.String).cast(SEVERITY).alias("severity"),
        pl.lit(subject_type, dtype=pl.String).alias("subject_type"),
        subject_key.cast(pl.String).alias("subject_key"),
        pl.col("patient_key").cast(pl.String),
        pl.lit(rule_id, dtype=pl.String).alias("rule_id"),
        evidence.cast(pl.String).alias("evidence"),
        pl.lit(action, dtype=pl.String).alias("action"),
    ]


def combine_exceptions(parts: Iterable[pl.LazyFrame], dedupe: bool = True) -> pl.LazyFrame:
    """One exceptions frame from several (e.g. rules' and identity's), in ``SORT_KEYS`` order.

    With ``dedupe``, one row per (subject_type, subject_key, flag_code) is kept: the most
    severe, then the first given. The order matches ``evaluate_flags``'s.
    """
    frames = [p.select(list(EXCEPTIONS_SCHEMA)) for p in parts]
    if not frames:
        return pl.LazyFrame(schema=EXCEPTIONS_SCHEMA)
    combined = pl.concat(frames, how="vertical")
    if dedupe:
        combined = (
            combined.with_row_index("_given").sort("severity", "_given")
            .unique(subset=["subject_type", "subject_key", "flag_code"], keep="first", maintain_order=True)
            .drop("_given")
        )
    return combined.sort(*SORT_KEYS)
