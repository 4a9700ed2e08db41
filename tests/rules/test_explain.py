"""Explaining a pack to a clinical lead: the rule list and the text of one rule."""

from __future__ import annotations

from pathlib import Path

import pytest

from migrate.errors import ConfigError
from migrate.rules import columns, explain, list_rules, load_pack


def test_list_rules_names_kind_severity_and_title() -> None:
    rows = list_rules(load_pack(None))
    by_id = {r["id"]: r for r in rows}
    assert by_id["under-prioritised"] == {
        "id": "under-prioritised", "kind": "flag", "flag": "UNDER_PRIORITISED", "derive": None,
        "severity": "critical", "applies_to": "referral",
        "title": "Open referral with red-flag indicators on a routine list", "priority": "urgent",
    }
    assert by_id["cohort"]["kind"] == "derived" and by_id["cohort"]["severity"] is None
    assert [r["id"] for r in rows] == [r.id for r in load_pack(None).rules]


def test_explain_a_flag_shows_condition_meanings_values_and_action() -> None:
    text = explain(load_pack(None), "UNDER_PRIORITISED")
    assert text.startswith("UNDER_PRIORITISED — rule under-prioritised")
    for expected in (
        "Severity: critical",
        "Raised when: in_active_care AND red_flag_indicator AND NOT is_urgent",
        "red_flag_indicator: derived by rule red-flag-indicator — has_red_flag_code OR",
        "has_red_flag_code: one of the referral's red_flags is in the pack's red_flag_codes codelist",
        "codelists.urgent_priorities = urgent, two_week_wait",
        "codelists.spinal_body_sites = cervical_spine, thoracic_spine, lumbar_spine, spine",
        "codelists.red_flag_codes = cauda_equina, 192970008,",
        "Evidence shown: red_flags, history_of_cancer, body_site, assigned_priority, cohort",
        "Action: clinician review; rebook urgently",
    ):
        assert expected in text, expected


def test_explain_shows_the_pack_s_own_threshold_values(tmp_path: Path) -> None:
    site = tmp_path / "site.yaml"
    site.write_text("extends: default\nname: site\nthresholds: {urgent_target_days: 7}\n", encoding="utf-8")
    assert "thresholds.urgent_target_days = 14" in explain(load_pack(None), "urgent-wait-breach")
    assert "thresholds.urgent_target_days = 7" in explain(load_pack(site), "URGENT_WAIT_BREACH")


def test_explain_a_derived_cohort_lists_its_cases() -> None:
    text = explain(load_pack(None), "cohort")
    assert "pifu_expired when attended_before_cutover AND pifu_expiry_date < cutover_date" in text
    assert "reason given: discharged on or before the cut-over (closed {closed_date})" in text


def test_explain_an_unknown_code_is_a_config_error_with_suggestions() -> None:
    with pytest.raises(ConfigError) as caught:
        explain(load_pack(None), "UNDER_PRIORITIZED")
    assert caught.value.exit_code == 2
    assert "did you mean UNDER_PRIORITISED" in str(caught.value)


def test_columns_describe_every_readable_column() -> None:
    rows = columns(load_pack(None))
    by_name = {(r["level"], r["name"]): r for r in rows}
    assert by_name[("referral", "days_waiting")]["kind"] == "feature"
    assert by_name[("referral", "cohort")]["kind"] == "derived"
    assert by_name[("patient", "any_urgent_in_care")]["kind"] == "roll-up"
    assert by_name[("referral", "body_site")]["kind"] == "canonical"
