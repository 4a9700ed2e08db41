"""Flags of the default pack (domain.md section 3, identity flags aside): for each, rows that
must raise it and a near miss that must not; then evidence, order, site packs, duplicates."""

from __future__ import annotations

from datetime import date
from pathlib import Path
from types import ModuleType
from typing import Any

import polars as pl
import pytest

from migrate import canonical
from migrate.rules.flags import EXCEPTIONS_SCHEMA, SORT_KEYS, combine_exceptions, exception_rows
from migrate.rules import load_pack

T = date(2022, 10, 1)
SEEN = [("R1", "2022-09-01 09:00", "attended")]
CLOSED = {"status": "closed", "closed_date": date(2022, 9, 1)}
DISSENT = [("read2", "93C1", date(2021, 5, 1))]


def case(flag: str, raised: bool, referrals: list[dict[str, Any]], contacts: list[tuple[str, str, str]] = (),  # type: ignore[assignment]
         codes: list[tuple[str, str, date]] = (), subject: str = "R1") -> Any:  # type: ignore[assignment]
    _COUNTER.append(flag)
    label = f"{flag}-{'raised' if raised else 'near-miss'}-{_COUNTER.count(flag)}"
    return pytest.param(flag, raised, referrals, list(contacts), list(codes), subject, id=label)


CASES: list[Any] = []
_COUNTER: list[str] = []
CASES += [
    case("UNDER_PRIORITISED", True, [{"red_flags": ["cauda_equina"], "body_site": "lumbar_spine"}]),
    case("UNDER_PRIORITISED", True, [{"history_of_cancer": True, "body_site": "thoracic_spine"}]),
    case("UNDER_PRIORITISED", True, [{"red_flags": ["night_pain"], "assigned_priority": "unknown"}]),
    case("UNDER_PRIORITISED", False, [{"history_of_cancer": True, "body_site": "knee"}]),
    case("UNDER_PRIORITISED", False, [{"red_flags": ["cauda_equina"], "assigned_priority": "two_week_wait"}]),
    case("UNDER_PRIORITISED", False, [{"red_flags": ["cauda_equina"], **CLOSED}]),
    case("UNDER_PRIORITISED", False, [{"red_flags": ["knee_swelling"]}]),
    # A value no codelist knows is never taken as "no red flag" (issue #10).
    case("UNRECOGNISED_RED_FLAG", True, [{"red_flags": ["CES"]}]),
    case("UNRECOGNISED_RED_FLAG", True, [{"red_flags": ["night_pain", "knee_swelling"], "assigned_priority": "urgent"}]),
    case("UNRECOGNISED_RED_FLAG", True, [{"red_flags": ["??"]}], SEEN),
    case("UNRECOGNISED_RED_FLAG", False, [{"red_flags": ["Night Pain", "CAUDA-EQUINA"]}]),
    case("UNRECOGNISED_RED_FLAG", False, [{"red_flags": []}]),
    case("UNRECOGNISED_RED_FLAG", False, [{"red_flags": ["CES"], **CLOSED}]),
    case("OVER_PRIORITISED", True, [{"assigned_priority": "urgent"}]),
    case("OVER_PRIORITISED", True, [{"assigned_priority": "two_week_wait", "post_op_date": date(2022, 1, 1)}]),
    case("OVER_PRIORITISED", False, [{"assigned_priority": "urgent", "red_flags": ["fever"]}]),
    case("OVER_PRIORITISED", False, [{"assigned_priority": "urgent", "post_op_date": date(2022, 9, 1)}]),
    case("OVER_PRIORITISED", False, [{"assigned_priority": "routine"}]),
    case("OVER_PRIORITISED", False, [{"assigned_priority": "urgent", **CLOSED}]),
    case("CANCER_HISTORY_NOT_RECORDED", True, [{"history_of_cancer": None}]),
    case("CANCER_HISTORY_NOT_RECORDED", True, [{"history_of_cancer": None}], SEEN),
    case("CANCER_HISTORY_NOT_RECORDED", False, [{"history_of_cancer": False}]),
    case("CANCER_HISTORY_NOT_RECORDED", False, [{"history_of_cancer": None, **CLOSED}]),
    case("CANCER_HISTORY_NOT_RECORDED", False, [{"history_of_cancer": None, "status": "rejected"}]),
    case("POST_OP_NOT_PRIORITISED", True, [{"post_op_date": date(2022, 7, 9)}]),  # 84 days: inside the window
    case("POST_OP_NOT_PRIORITISED", True, [{"post_op_date": date(2022, 10, 1)}], SEEN),
    case("POST_OP_NOT_PRIORITISED", False, [{"post_op_date": date(2022, 7, 8)}]),  # 85 days
    case("POST_OP_NOT_PRIORITISED", False, [{"post_op_date": date(2022, 9, 10), "assigned_priority": "urgent"}]),
    case("POST_OP_NOT_PRIORITISED", False, [{"post_op_date": date(2022, 10, 20)}]),  # surgery after the cut-over
    case("POST_OP_NOT_PRIORITISED", False, [{"post_op_date": date(2022, 9, 10), **CLOSED}]),
    case("URGENT_WAIT_BREACH", True, [{"assigned_priority": "urgent", "received_date": date(2022, 9, 16)}]),
    case("URGENT_WAIT_BREACH", True, [{"assigned_priority": "two_week_wait", "received_date": date(2022, 8, 1)}],
         [("R1", "2022-10-03 09:00", "booked"), ("R1", "2022-09-01 09:00", "did_not_attend")]),
    case("URGENT_WAIT_BREACH", False, [{"assigned_priority": "urgent", "received_date": date(2022, 9, 17)}]),
    # seen 31 days after receipt: no attended contact within the 14-day target
    case("URGENT_WAIT_BREACH", True, [{"assigned_priority": "urgent", "received_date": date(2022, 8, 1)}], SEEN),
    # seen within the target
    case("URGENT_WAIT_BREACH", False, [{"assigned_priority": "urgent", "received_date": date(2022, 8, 25)}], SEEN),
    case("URGENT_WAIT_BREACH", False, [{"assigned_priority": "routine", "received_date": date(2022, 1, 1)}]),
    case("AWAITING_INJECTION", True, [{"awaiting_injection": True}], SEEN),
    case("AWAITING_INJECTION", True, [{"awaiting_injection": True}]),
    case("AWAITING_INJECTION", False, [{"awaiting_injection": True, **CLOSED}]),
    case("AWAITING_INJECTION", False, [{"awaiting_injection": None}]),
    case("OUT_OF_SCOPE", True, [{"body_site": "lump"}]),
    case("OUT_OF_SCOPE", True, [{"reason_text": "GP asks for a hip intra-articular injection"}], SEEN),
    case("OUT_OF_SCOPE", True, [{"body_site": "lump", "status": "closed", "closed_date": date(2022, 11, 1)}]),
    case("OUT_OF_SCOPE", False, [{"body_site": "lump", "status": "rejected"}]),
    case("OUT_OF_SCOPE", False, [{"body_site": "lump", **CLOSED}]),
    case("OUT_OF_SCOPE", False, [{"reason_text": "knee injection"}]),
    case("PIFU_EXPIRED", True, [{"pifu_expiry_date": date(2022, 9, 30), "transfer_list": "pifu"}], SEEN),
    case("PIFU_EXPIRED", False, [{"pifu_expiry_date": date(2022, 10, 1), "transfer_list": "pifu"}], SEEN),
    case("PIFU_EXPIRED", False, [{"pifu_expiry_date": date(2022, 9, 30), **CLOSED}], SEEN),
    case("WRONG_TRANSFER_LIST", True, [{"transfer_list": "transition"}], [("R1", "2022-09-01 09:00", "did_not_attend")]),
    case("WRONG_TRANSFER_LIST", True, [{"transfer_list": "pifu", "pifu_expiry_date": date(2023, 1, 1)}],
         SEEN + [("R1", "2022-11-01 09:00", "booked")]),
    case("WRONG_TRANSFER_LIST", True, [{"transfer_list": "backlog", **CLOSED}]),
    case("WRONG_TRANSFER_LIST", True, [{"transfer_list": "backlog", "pifu_expiry_date": date(2022, 9, 1)}], SEEN),
    case("WRONG_TRANSFER_LIST", False, [{"transfer_list": "pifu", "pifu_expiry_date": date(2022, 9, 1)}], SEEN),
    case("WRONG_TRANSFER_LIST", False, [{"transfer_list": "transition"}], SEEN),
    case("WRONG_TRANSFER_LIST", False, [{"transfer_list": None}], SEEN),
    case("ON_TWO_LISTS", True, [{"transfer_list": "transition"}, {"referral_key": "R2", "transfer_list": "backlog"}],
         subject="P1"),
    case("ON_TWO_LISTS", False, [{"transfer_list": "backlog"}, {"referral_key": "R2", "transfer_list": "backlog"}],
         subject="P1"),
    case("ON_TWO_LISTS", False, [{"transfer_list": "backlog"}, {"referral_key": "R2", "transfer_list": None}],
         subject="P1"),
    case("SHARING_BLOCK", True, [{}], codes=DISSENT, subject="P1"),
    case("SHARING_BLOCK", True, [{**CLOSED}], codes=DISSENT, subject="P1"),
    case("SHARING_BLOCK", False, [{}], codes=DISSENT + [("read2", "9Nd7", date(2022, 1, 1))], subject="P1"),
    case("SHARING_BLOCK", False, [{}], codes=[("read2", "9Nu0", date(2022, 1, 1))], subject="P1"),
    case("SHARING_BLOCK_ACTIVE_CARE", True, [{}], SEEN, codes=DISSENT, subject="P1"),
    case("SHARING_BLOCK_ACTIVE_CARE", True, [{"assigned_priority": "urgent"}], codes=DISSENT, subject="P1"),
    case("SHARING_BLOCK_ACTIVE_CARE", False, [{"pifu_expiry_date": date(2023, 1, 1)}], SEEN, codes=DISSENT,
         subject="P1"),
    case("SHARING_BLOCK_ACTIVE_CARE", False, [{"assigned_priority": "urgent", **CLOSED}], codes=DISSENT,
         subject="P1"),
    case("SHARING_BLOCK_ACTIVE_CARE", False, [{}], SEEN, codes=DISSENT + [("read2", "9Nd7", date(2022, 1, 1))],
         subject="P1"),
    # Implausible dates (issue #12): "_birth_date" is the patient's, the rest the referral's.
    case("IMPLAUSIBLE_BIRTH_DATE", True, [{"_birth_date": date(1879, 12, 31)}], subject="P1"),
    case("IMPLAUSIBLE_BIRTH_DATE", True, [{"_birth_date": date(2022, 10, 2)}], subject="P1"),
    case("IMPLAUSIBLE_BIRTH_DATE", True, [{"_birth_date": date(1900, 1, 1)}], subject="P1"),
    case("IMPLAUSIBLE_BIRTH_DATE", True, [{"_birth_date": date(9999, 12, 31)}], subject="P1"),
    case("IMPLAUSIBLE_BIRTH_DATE", False, [{"_birth_date": date(1880, 1, 1)}], subject="P1"),
    case("IMPLAUSIBLE_BIRTH_DATE", False, [{"_birth_date": date(2022, 10, 1)}], subject="P1"),
    case("IMPLAUSIBLE_BIRTH_DATE", False, [{"_birth_date": None}], subject="P1"),
    case("IMPLAUSIBLE_REFERRAL_DATE", True, [{"received_date": date(2022, 10, 2)}]),
    case("IMPLAUSIBLE_REFERRAL_DATE", True, [{"received_date": date(1900, 1, 1)}]),
    case("IMPLAUSIBLE_REFERRAL_DATE", True, [{"closed_date": date(9999, 12, 31)}]),
    case("IMPLAUSIBLE_REFERRAL_DATE", True, [{"pifu_expiry_date": date(9999, 12, 31)}], SEEN),
    case("IMPLAUSIBLE_REFERRAL_DATE", True, [{"post_op_date": date(1900, 1, 1)}]),
    case("IMPLAUSIBLE_REFERRAL_DATE", False, [{"received_date": date(2022, 10, 1), "closed_date": date(2023, 1, 1)}]),
]


@pytest.mark.parametrize(("flag", "raised", "referrals", "contacts", "codes", "subject"), CASES)
def test_flag(rc: ModuleType, flag: str, raised: bool, referrals: list[dict[str, Any]],
              contacts: list[tuple[str, str, str]], codes: list[tuple[str, str, date]], subject: str) -> None:
    patients = None
    if "_birth_date" in referrals[0]:
        patients = [{"patient_key": "P1", "source_patient_id": "P1", "birth_date": referrals[0]["_birth_date"],
                     "sex": "female"}]
        referrals = [{k: v for k, v in r.items() if k != "_birth_date"} for r in referrals]
    frames = rc.tables([rc.referral(**r) for r in referrals],
                       [rc.contact(k, when=w, attendance=a) for k, w, a in contacts],
                       [rc.code("P1", s, c, d) for s, c, d in codes], patients)
    assert ((subject, flag) in rc.flags(rc.run(frames))) is raised


def test_every_default_flag_has_a_raising_case_and_a_near_miss() -> None:
    covered = {(p.values[0], p.values[1]) for p in CASES}
    for rule in load_pack(None).flag_rules():
        assert {(rule.flag, True), (rule.flag, False)} <= covered, rule.flag


def test_exception_rows_carry_rule_severity_action_and_readable_evidence(rc: ModuleType) -> None:
    frames = rc.tables([rc.referral(history_of_cancer=True, body_site="lumbar_spine", red_flags=["night_pain", "fever"],
                                    reason_text="Mrs Example, lump on back")])
    ex = rc.run(frames)["exceptions"]
    assert ex.schema == pl.Schema(EXCEPTIONS_SCHEMA)
    row = ex.filter(pl.col("flag_code") == "UNDER_PRIORITISED").row(0, named=True)
    assert row == {
        "flag_code": "UNDER_PRIORITISED", "severity": "critical", "subject_type": "referral", "subject_key": "R1",
        "patient_key": "P1", "rule_id": "under-prioritised",
        "evidence": "red_flags = night_pain, fever; history_of_cancer = true; body_site = lumbar_spine; "
                    "assigned_priority = routine; cohort = backlog",
        "action": "clinician review; rebook urgently",
    }
    assert ex.filter(pl.col("evidence").str.contains("Example")).is_empty()


def test_a_site_pack_threshold_changes_exactly_the_expected_flags(rc: ModuleType, tmp_path: Path) -> None:
    frames = rc.tables([
        rc.referral("R1", "P1", post_op_date=date(2022, 9, 10)),  # 21 days before T, routine
        rc.referral("R2", "P2", post_op_date=date(2022, 9, 25)),  # 6 days before T, routine
        rc.referral("R3", "P3", post_op_date=date(2022, 9, 10), assigned_priority="urgent"),  # justified by surgery
        rc.referral("R4", "P4", history_of_cancer=None, transfer_list="transition"),
        rc.referral("R5", "P5", assigned_priority="urgent", received_date=date(2022, 8, 1)),
    ])
    site = tmp_path / "site.yaml"
    site.write_text("extends: default\nname: site\nthresholds:\n  post_op_window_days: 14\n", encoding="utf-8")
    default, narrower = rc.flags(rc.run(frames)), rc.flags(rc.run(frames, load_pack(site)))
    assert default - narrower == {("R1", "POST_OP_NOT_PRIORITISED")}
    assert narrower - default == {("R3", "OVER_PRIORITISED")}
    assert {("R2", "POST_OP_NOT_PRIORITISED"), ("R4", "CANCER_HISTORY_NOT_RECORDED"), ("R4", "WRONG_TRANSFER_LIST"),
            ("R5", "URGENT_WAIT_BREACH"), ("R5", "OVER_PRIORITISED")} <= default & narrower


def test_one_row_per_subject_and_flag_most_severe_rule_kept(rc: ModuleType, tmp_path: Path) -> None:
    site = tmp_path / "site.yaml"
    site.write_text("""extends: default
name: site
rules:
  - id: cancer-history-any-open
    title: History of cancer blank on any open referral
    applies_to: referral
    flag: CANCER_HISTORY_NOT_RECORDED
    severity: high
    condition: open_at_cutover AND history_of_cancer IS NULL
    evidence: [history_of_cancer]
    action: complete it
""", encoding="utf-8")
    frames = rc.tables([rc.referral("R1", history_of_cancer=None),
                        rc.referral("R2", "P2", history_of_cancer=None, body_site="lump")])
    ex = rc.run(frames, load_pack(site))["exceptions"].filter(pl.col("flag_code") == "CANCER_HISTORY_NOT_RECORDED")
    assert ex.select("subject_key", "rule_id", "severity").rows() == [
        ("R1", "cancer-history-any-open", "high"), ("R2", "cancer-history-any-open", "high")]


def test_exceptions_are_in_key_order_and_other_stages_can_be_appended(rc: ModuleType) -> None:
    referrals = [rc.referral(f"R{i}", f"P{i % 3}", history_of_cancer=None if i % 2 else True,
                             body_site="lumbar_spine", assigned_priority="urgent" if i % 4 == 0 else "routine")
                 for i in range(12)]
    codes = [rc.code(f"P{i}", "read2", "93C1", date(2021, 1, 1)) for i in range(3)]
    ex = rc.run(rc.tables(referrals, codes=codes))["exceptions"]
    assert ex.equals(ex.sort(*SORT_KEYS))
    identity = exception_rows(
        pl.LazyFrame({"patient_key": ["P1"]}), flag_code="NHS_NUMBER_MISSING", severity="medium",
        subject_type="patient", rule_id="identity.nhs-number", evidence=pl.lit("nhs_number = blank"),
        action="trace (PDS) before load")
    combined = combine_exceptions([ex.lazy(), identity]).collect()
    assert combined.height == ex.height + 1
    assert combined.equals(combined.sort(*SORT_KEYS))
    assert combined.filter(pl.col("flag_code") == "NHS_NUMBER_MISSING").row(0)[2:4] == ("patient", "P1")


def test_severity_uses_the_canonical_enum(rc: ModuleType) -> None:
    ex = rc.run(rc.tables([rc.referral(history_of_cancer=None)]))["exceptions"]
    assert ex.schema["severity"] == pl.Enum(canonical.SEVERITIES)


def test_an_unrecognised_red_flag_shows_the_value_as_written_and_stops_once_a_site_lists_it(
        rc: ModuleType, tmp_path: Path) -> None:
    frames = rc.tables([rc.referral("R1", red_flags=["CES", "fever"]), rc.referral("R2", red_flags=["Knee swelling"])])
    ex = rc.run(frames)["exceptions"].filter(pl.col("flag_code") == "UNRECOGNISED_RED_FLAG")
    assert ex.select("subject_key", "severity", "evidence").rows() == [
        ("R1", "critical", "unrecognised_red_flags = CES; assigned_priority = routine; cohort = backlog"),
        ("R2", "critical", "unrecognised_red_flags = Knee swelling; assigned_priority = routine; cohort = backlog"),
    ]
    assert "red_flag_codes" in ex["action"][0] and "not_red_flag_codes" in ex["action"][0]
    site = load_pack(rc.write_pack(tmp_path / "site.yaml", """extends: default
name: site
codelists:
  red_flag_codes: [cauda_equina, fever, ces]
  not_red_flag_codes: [knee_swelling]
"""))
    results = rc.run(frames, site)
    assert {f for f in rc.flags(results) if f[1] in ("UNRECOGNISED_RED_FLAG", "UNDER_PRIORITISED")} == {
        ("R1", "UNDER_PRIORITISED")}


def test_a_value_cannot_be_both_a_red_flag_and_not_one(rc: ModuleType, tmp_path: Path) -> None:
    problems = rc.site_pack_problems(tmp_path, "codelists:\n  not_red_flag_codes: [Night Pain]\n")
    assert any("red_flag_codes and not_red_flag_codes both list night_pain" in p for p in problems)
