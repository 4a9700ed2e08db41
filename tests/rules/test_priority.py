"""Raised priorities are rule-pack data: a flag rule's ``priority:`` outcome, validated
with the pack, shown by ``rules explain`` and carried into the FHIR ServiceRequest."""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path

import pytest

from migrate.errors import ConfigError
from migrate.pipeline import RunConfig, run_batch
from migrate.rules import explain, load_pack

CASE = Path(__file__).resolve().parents[1] / "cases" / "worked-example"


def _site(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "site.yaml"
    path.write_text("extends: default\nname: site\n" + body, encoding="utf-8")
    return path


def _priorities(run: Path) -> dict[str, str]:
    out = {}
    for line in (run / "fhir" / "ndjson" / "ServiceRequest.ndjson").read_text().splitlines():
        resource = json.loads(line)
        key = next(i["value"] for i in resource["identifier"] if i["system"].endswith("/referral"))
        out[key] = resource.get("priority")
    return out


def test_the_default_pack_raises_under_prioritised_referrals_to_urgent() -> None:
    pack = load_pack(None)
    assert pack.raised_priorities() == {"under-prioritised": "urgent"}
    assert "Priority: raised to urgent in the FHIR output" in explain(pack, "UNDER_PRIORITISED")


@pytest.mark.parametrize(("rule", "message"), [
    ("  - {id: p1, title: t, applies_to: referral, flag: P1, severity: low, condition: is_urgent, "
     "evidence: [body_site], action: a, priority: stat}", "priority 'stat' is unknown"),
    ("  - {id: p2, title: t, applies_to: patient, flag: P2, severity: low, condition: sharing_blocked, "
     "evidence: [patient_cohort], action: a, priority: urgent}", "give it on a rule with applies_to: referral"),
    ("  - {id: p3, title: t, applies_to: referral, derive: x, condition: is_urgent, priority: urgent}",
     "priority: is an outcome of a flag rule"),
])
def test_a_wrong_priority_outcome_is_a_pack_problem(tmp_path: Path, rule: str, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_pack(_site(tmp_path, "rules:\n" + rule + "\n"))
    assert any(message in p for p in caught.value.problems), caught.value.problems


def test_a_site_pack_decides_which_flags_raise_a_priority(tmp_path: Path, worked_run: Path) -> None:
    """The site raises post-op patients to urgent and drops the red-flag raise: R16 becomes
    urgent in FHIR, R13 keeps its routine list (the default: the session's worked run)."""
    shipped = load_pack(None)
    [under] = [r for r in shipped.rules if r.id == "under-prioritised"]
    site = _site(tmp_path, (
        "rules:\n"
        "  - id: under-prioritised\n    title: Red flags on a routine list\n    applies_to: referral\n"
        "    flag: UNDER_PRIORITISED\n    severity: critical\n"
        f"    condition: {under.condition}\n    evidence: [red_flags, body_site]\n    action: review\n"
        "  - id: post-op-not-prioritised-site\n    title: Post-op, not prioritised\n    applies_to: referral\n"
        "    flag: POST_OP_SITE\n    severity: high\n    condition: in_active_care AND post_op_recent AND NOT is_urgent\n"
        "    evidence: [post_op_date, assigned_priority]\n    action: book an embargoed slot\n    priority: urgent\n"))
    result = run_batch(RunConfig.load(CASE / "input", CASE / "mapping.yaml", date(2022, 10, 1), tmp_path / "s",
                                      rules=site))
    assert result.ok, result.failures()
    before, after = _priorities(worked_run), _priorities(tmp_path / "s")
    assert (before["R13"], before["R16"]) == ("urgent", "routine")
    assert (after["R13"], after["R16"]) == ("routine", "urgent")
