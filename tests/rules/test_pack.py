"""Loading rule packs: the default pack, site packs that extend it, and broken packs.

A broken pack must fail before any data is read, with a ConfigError (exit 2) listing every
problem at once, each naming the file, the rule and what to do.
"""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest

from migrate import canonical
from migrate.errors import ConfigError
from migrate.rules import default_pack_path, load_pack


def _problems(path: Path) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        load_pack(path)
    assert caught.value.exit_code == 2
    return caught.value.problems


def _site(tmp_path: Path, body: str, name: str = "site.yaml") -> Path:
    path = tmp_path / name
    path.write_text("extends: default\nname: site\n" + body, encoding="utf-8")
    return path


def test_default_pack_loads_from_the_shipped_rules_folder() -> None:
    pack = load_pack(None)
    assert pack.path == default_pack_path()
    assert default_pack_path().parent.name == "rules"
    assert pack.thresholds["post_op_window_days"].value == 84
    assert pack.thresholds["urgent_target_days"].value == 14
    assert pack.coded("sharing_dissent_codes")["read2"][0] == "93C1"
    assert len(pack.sha256) == 64


def test_default_pack_raises_every_non_identity_flag_of_domain_section_3() -> None:
    flags = {r.flag for r in load_pack(None).flag_rules()}
    assert flags == {
        "SHARING_BLOCK", "SHARING_BLOCK_ACTIVE_CARE", "UNDER_PRIORITISED", "UNRECOGNISED_RED_FLAG", "OVER_PRIORITISED",
        "CANCER_HISTORY_NOT_RECORDED", "POST_OP_NOT_PRIORITISED", "URGENT_WAIT_BREACH", "AWAITING_INJECTION",
        "OUT_OF_SCOPE", "PIFU_EXPIRED", "WRONG_TRANSFER_LIST", "ON_TWO_LISTS",
        "IMPLAUSIBLE_BIRTH_DATE", "IMPLAUSIBLE_REFERRAL_DATE",
    }


def test_placeholders_become_quoted_lists_and_numbers() -> None:
    pack = load_pack(None)
    (rule,) = pack.find("post-op-recent")
    assert rule.sql == "days_since_post_op BETWEEN 0 AND 84"
    (rule,) = pack.find("urgent-priority")
    assert rule.sql == "assigned_priority IN ('urgent', 'two_week_wait')"
    assert rule.uses == ("codelists.urgent_priorities",)


def test_codelist_values_cannot_break_out_of_their_quotes(tmp_path: Path) -> None:
    site = _site(tmp_path, """
codelists:
  odd_ubrns: ["000') OR TRUE OR ('x"]
  spinal_body_sites: ["lumbar_spine') OR TRUE OR ('x"]
rules:
  - {id: odd-ubrn, title: odd, applies_to: referral, derive: odd_ubrn, condition: "ubrn IN {codelists.odd_ubrns}"}
""")
    pack = load_pack(site)
    (rule,) = pack.find("odd-ubrn")
    frame = pl.DataFrame({"ubrn": ["knee", "000') OR TRUE OR ('x"]})
    assert frame.select(pl.sql_expr(rule.sql or "")).to_series().to_list() == [False, True]
    assert "'000'') OR TRUE OR (''x'" in (rule.sql or "")
    # A vocabulary column is compared in matching form: the key has no quote left to escape.
    (rule,) = pack.find("red-flag-indicator")
    assert "body_site IN ('lumbar_spine_or_true_or_x')" in (rule.sql or "")


def test_a_site_pack_overrides_one_threshold_and_inherits_everything_else(tmp_path: Path) -> None:
    site = _site(tmp_path, "thresholds:\n  post_op_window_days: 56\n")
    pack, default = load_pack(site), load_pack(None)
    assert pack.thresholds["post_op_window_days"].value == 56
    assert pack.thresholds["urgent_target_days"].value == 14
    assert [r.id for r in pack.rules] == [r.id for r in default.rules]
    assert [p.name for p, _ in pack.files] == ["default.yaml", "site.yaml"]
    assert pack.sha256 != default.sha256


def test_a_site_pack_replaces_a_rule_by_id_and_disables_another(tmp_path: Path) -> None:
    site = _site(tmp_path, """
disable: [on-two-lists]
rules:
  - id: awaiting-injection
    title: Waiting for an injection (any cohort)
    applies_to: referral
    flag: AWAITING_INJECTION
    severity: high
    condition: awaiting_injection
    evidence: [awaiting_injection]
    action: injection clinic list
""")
    pack = load_pack(site)
    (rule,) = pack.find("awaiting-injection")
    assert rule.severity == "high" and rule.source == str(site)
    assert not pack.find("ON_TWO_LISTS")


def test_every_problem_is_listed_at_once_with_file_rule_and_fix(tmp_path: Path) -> None:
    site = _site(tmp_path, """
rules:
  - id: bad-column
    title: Unknown column
    applies_to: referral
    flag: X_ONE
    severity: low
    condition: body_sight = 'knee'
    evidence: [body_site]
    action: fix
  - id: bad-sql
    title: SQL that does not parse
    applies_to: referral
    flag: X_TWO
    severity: low
    condition: body_site = 'knee' AND
    evidence: [body_site]
    action: fix
  - id: twice
    title: First
    applies_to: referral
    flag: X_THREE
    severity: low
    condition: awaiting_injection
    evidence: [body_site]
    action: fix
  - id: twice
    title: Second
    applies_to: referral
    flag: X_THREE
    severity: low
    condition: awaiting_injection
    evidence: [body_site]
    action: fix
  - id: bad-severity
    title: Severity
    applies_to: referral
    flag: X_FOUR
    severity: urgent
    condition: awaiting_injection
    evidence: [body_site]
    action: fix
  - id: bad-placeholder
    title: Placeholder
    applies_to: referral
    flag: X_FIVE
    severity: low
    condition: body_site IN {codelists.spinal_sites}
    evidence: [body_site]
    action: fix
  - id: no-title
    applies_to: referral
    flag: X_SIX
    severity: low
    condition: awaiting_injection
    evidence: [body_site]
    action: fix
""")
    problems = _problems(site)
    expected = {
        "bad-column": "unknown column 'body_sight' (did you mean 'body_site'?)",
        "bad-sql": "SQL does not parse",
        "twice": "duplicate id",
        "bad-severity": "severity 'urgent' is unknown; use one of critical, high, medium, low",
        "bad-placeholder": "unknown placeholder {codelists.spinal_sites}",
        "no-title": "missing key 'title'",
    }
    for rule_id, text in expected.items():
        assert [p for p in problems if p.startswith(f"{site}: rule {rule_id}:") and text in p], (rule_id, problems)
    assert len(problems) == len(expected)


@pytest.mark.parametrize(("rule", "message"), [
    ("condition: SUM(days_waiting) > 3", "aggregates over all rows"),
    ("condition: body_site > 5", "type error"),
    ("condition: days_waiting", "not true/false"),
    ("condition: assigned_priority = 'urgnet'", "assigned_priority is never 'urgnet' (did you mean 'urgent'?)"),
    ("condition: cohort IN ('backlog', 'pifu-expired')", "cohort is never 'pifu-expired'"),
    ("condition: sharing_blocked", "unknown column 'sharing_blocked'"),
    ("condition: awaiting_injection AND days_waiting > {thresholds.urgent_days}", "no threshold 'urgent_days'"),
    ("condition: body_site IN {codelists.sharing_dissent_codes.emis}", "has no code system 'emis'"),
])
def test_condition_problems_are_caught_before_any_data(tmp_path: Path, rule: str, message: str) -> None:
    site = _site(tmp_path, f"""
rules:
  - id: probe
    title: Probe
    applies_to: referral
    flag: PROBE
    severity: low
    {rule}
    evidence: [body_site]
    action: look
""")
    problems = _problems(site)
    assert len(problems) == 1 and problems[0].startswith(f"{site}: rule probe:") and message in problems[0], problems


def test_evidence_may_never_show_identifying_columns(tmp_path: Path) -> None:
    site = _site(tmp_path, """
rules:
  - id: birth-year
    title: Birth year, derived
    applies_to: patient
    derive: birth_year
    value: EXTRACT(YEAR FROM birth_date)
  - id: leak
    title: Leaks identity
    applies_to: patient
    flag: LEAK
    severity: low
    condition: sharing_blocked
    evidence: [nhs_number, family_name, birth_year, age_at_cutover]
    action: none
""")
    problems = _problems(site)
    assert len(problems) == 3
    assert all("identifies the patient" in p for p in problems)
    assert {p.split("'")[1] for p in problems} == {"nhs_number", "family_name", "birth_year"}


def test_a_derived_column_must_be_derived_above_its_readers(tmp_path: Path) -> None:
    site = _site(tmp_path, """
rules:
  - id: early
    title: Reads a column derived below it
    applies_to: referral
    derive: early
    condition: late_column
  - id: late
    title: Derived late
    applies_to: referral
    derive: late_column
    condition: awaiting_injection
""")
    (problem,) = _problems(site)
    assert "column 'late_column' is derived by rule late, which comes later; move that rule above" in problem


def test_structure_problems_of_the_pack_itself(tmp_path: Path) -> None:
    pack = tmp_path / "pack.yaml"
    pack.write_text("""
name: broken
colour: blue
thresholds: {post_op_window_days: twelve weeks}
codelists:
  dummy_slot_names: [DO NOT ATTEND]
  sharing_dissent_codes: {emis: ["93C1"]}
cohort_precedence: [transition, backlog]
rules: []
""", encoding="utf-8")
    problems = _problems(pack)
    for text in ("unknown key 'colour'", "thresholds.post_op_window_days: 'twelve weeks' is not a number",
                 "unknown code system 'emis'", "missing codelist 'red_flag_codes'",
                 "missing codelist 'sharing_consent_codes'", "cohort_precedence must list each cohort once",
                 "no referral rule derives 'cohort'", "no referral rule derives 'list_mismatch'"):
        assert [p for p in problems if text in p], (text, problems)


def test_cohort_values_must_be_the_canonical_cohorts(tmp_path: Path) -> None:
    text = default_pack_path().read_text(encoding="utf-8").replace("- value: pifu_expired", "- value: expired_pifu")
    pack = tmp_path / "pack.yaml"
    pack.write_text(text, encoding="utf-8")
    problems = _problems(pack)
    assert [p for p in problems if "cohort value 'expired_pifu'" in p and "is not one of" in p]
    # The misspelt value is also caught where a rule compares with it.
    assert [p for p in problems if "rule pifu-expired" in p and "cohort is never 'pifu_expired'" in p]


def test_sharing_codes_must_not_both_block_and_lift(tmp_path: Path) -> None:
    site = _site(tmp_path, "codelists:\n  sharing_consent_codes: {read2: ['9Nd7', '93C1']}\n")
    (problem,) = _problems(site)
    assert "sharing_dissent_codes and sharing_consent_codes both list read2:93C1" in problem


def test_unreadable_packs(tmp_path: Path) -> None:
    (missing,) = _problems(tmp_path / "nope.yaml")
    assert "cannot read the rule pack" in missing
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nrules: [\n", encoding="utf-8")
    (syntax,) = _problems(bad)
    assert syntax.startswith(f"{bad}: not valid YAML")
    loop = tmp_path / "loop.yaml"
    loop.write_text("extends: loop.yaml\nname: loop\n", encoding="utf-8")
    (circle,) = _problems(loop)
    assert "goes round in a circle" in circle


def test_known_columns_cover_canonical_features_and_derived() -> None:
    pack = load_pack(None)
    referral = pack.columns["referral"]
    assert set(canonical.REFERRALS.field_names) <= set(referral)
    assert referral["attended_before_cutover"] == pl.Boolean
    assert referral["cohort"] == pl.String and referral["list_mismatch"] == pl.Boolean
    assert pack.columns["patient"]["any_urgent_in_care"] == pl.Boolean
