"""Judging decision rows, for any rows in any order (hypothesis): every row comes out exactly
once with one status; at most one decision applies per item; rejections and conflicts do
not depend on the order of the rows; an applied decision is always one the pack allows."""

from __future__ import annotations

from datetime import date

import polars as pl
from hypothesis import given, settings
from hypothesis import strategies as st

from migrate.review.files import DECISION_ROW_SCHEMA
from migrate.review.validate import DECISIONS_SCHEMA, STATUSES, validate
from migrate.rules import load_pack

REVIEW = load_pack(None).review
ITEMS = pl.DataFrame({
    "flag_code": ["SHARING_BLOCK", "UNDER_PRIORITISED", "NHS_NUMBER_CONFLICT", "WRONG_TRANSFER_LIST"],
    "subject_key": ["P1", "R1", "P1+P2", "R2"],
    "rule_id": ["sharing-block", "under-prioritised", "identity.nhs_number_conflict", "wrong-transfer-list"],
    "subject_type": ["patient", "referral", "patient", "referral"],
    "patient_key": ["P1", "P1", "P1", "P2"],
    "severity": ["high", "critical", "high", "medium"],
    "evidence_id": ["e1", "e2", "e3", "e4"],
})
SUBJECTS = {"P1", "P2", "R1", "R2", "R3"}
ITEM_KEYS = [(f, s) for f, s in ITEMS.select("flag_code", "subject_key").iter_rows()] + [
    ("PIFU_EXPIRED", "R3"), ("UNDER_PRIORITISED", "R9")]

row = st.fixed_dictionaries({
    "item": st.sampled_from(ITEM_KEYS),
    "decision": st.sampled_from(["override", "uphold", "Upgrade urgent", "keep", "same_person", "not_same_person",
                                 "move_backlog", "acknowledged", "overide", None]),
    "reviewer": st.sampled_from(["Dr A", "Dr B", None]),
    "second": st.sampled_from(["Dr B", "Dr C", None]),
    "date": st.sampled_from(["03/10/2022", "2022-10-04", "31/02/2022", None]),
    "note": st.sampled_from(["because", None]),
    "evidence": st.sampled_from(["e1", "e2", "e3", "e4", "old", None]),
})


def _frame(rows: list[dict[str, object]]) -> pl.DataFrame:
    records = [{
        "source_file": "f.xlsx", "source_sheet": "S", "source_row": i + 2, "flag_code": r["item"][0],  # type: ignore[index]
        "rule_id": None, "subject_key": r["item"][1], "evidence_id": r["evidence"], "reviewer": r["reviewer"],  # type: ignore[index]
        "second_reviewer": r["second"], "decision": r["decision"], "date": r["date"], "note": r["note"],
        "origin": "file", "source_sha256": "abc"} for i, r in enumerate(rows)]
    return pl.DataFrame(records, schema={**DECISION_ROW_SCHEMA, "origin": pl.String, "source_sha256": pl.String})


@settings(max_examples=150, deadline=None)
@given(st.lists(row, min_size=1, max_size=12), st.randoms(use_true_random=False))
def test_judging_keeps_its_invariants_in_any_order(rows: list[dict[str, object]], rnd: object) -> None:
    judged = validate(_frame(rows), ITEMS, SUBJECTS, REVIEW)
    assert judged.height == len(rows)
    assert list(judged.schema) == list(DECISIONS_SCHEMA)
    assert set(judged["status"]) <= set(STATUSES) and judged["status"].null_count() == 0
    applied = judged.filter(pl.col("status") == "applied")
    assert applied.select("flag_code", "subject_key").is_unique().all()
    for r in applied.iter_rows(named=True):
        assert r["decision"] in REVIEW.allowed(r["flag_code"])
        assert r["reviewer"] and isinstance(r["decided_on"], date)
        assert r["evidence_id"] == dict(ITEMS.select("subject_key", "evidence_id").iter_rows())[r["subject_key"]]
    # The same rows in another order: the same row ids get the same rejection reasons.
    shuffled = list(rows)
    rnd.shuffle(shuffled)  # type: ignore[attr-defined]
    again = validate(_frame(shuffled), ITEMS, SUBJECTS, REVIEW)

    def rejected(frame: pl.DataFrame) -> set[tuple[object, ...]]:
        return {(r["flag_code"], r["subject_key"], r["decision"], r["reviewer"], r["date"] if "date" in r else None,
                 r["reason_code"]) for r in frame.filter(pl.col("status") == "rejected").iter_rows(named=True)}

    assert sorted(map(str, rejected(judged))) == sorted(map(str, rejected(again)))
    assert set(applied.select("flag_code", "subject_key").iter_rows()) == set(
        again.filter(pl.col("status") == "applied").select("flag_code", "subject_key").iter_rows())
