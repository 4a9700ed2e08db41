"""The hazard log (rules/hazards.yaml) covers everything handover can do, and its evidence exists.

What must be covered is read from handover itself — the loaded rule pack's flags and rules,
the identity flags, the dispositions, the quarantine reasons and the named behaviours — so
a new flag or rule fails here until a hazard covers it. Every test a control cites must
exist in this repository.
"""

from __future__ import annotations

import ast
import json
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

import cli
from migrate.errors import ConfigError
from migrate.hazards import coverage, default_hazards_path, hazards_path, load_hazards, required
from migrate.rules import load_pack

REPO = Path(__file__).resolve().parents[1]
WORKED = Path(__file__).parent / "cases" / "worked-example"
SITE_FLAG = """extends: default
name: site
rules:
  - id: site-long-wait
    title: Routine referral waiting over a year
    applies_to: referral
    flag: SITE_LONG_WAIT
    severity: medium
    condition: in_active_care AND days_waiting > 365
    evidence: [days_waiting]
    action: review
"""


def missing_tests(node_ids: list[str], root: Path = REPO) -> list[str]:
    """The node ids (``path::function`` or ``path::Class::method``) naming no test in ``root``."""
    missing: list[str] = []
    trees: dict[Path, ast.Module] = {}
    for node_id in node_ids:
        path, *names = node_id.split("::")
        file = root / path
        if not file.is_file() or not names or not path.startswith("tests/"):
            missing.append(node_id)
            continue
        tree = trees.setdefault(file, ast.parse(file.read_text(encoding="utf-8")))
        scope: list[ast.stmt] = tree.body
        for name in names:
            found = next((n for n in scope if isinstance(n, (ast.FunctionDef, ast.ClassDef)) and n.name == name), None)
            if found is None:
                missing.append(node_id)
                break
            scope = found.body
        else:
            if not names[-1].startswith("test"):
                missing.append(node_id)
    return missing


def _cited(path: Path | None = None) -> list[str]:
    return sorted({t for h in load_hazards(path).hazards for c in h.controls for t in c.tests})


def test_every_flag_rule_disposition_reason_and_behaviour_has_a_hazard() -> None:
    assert coverage(load_hazards(), load_pack(None)) == []


def test_every_test_a_control_cites_exists() -> None:
    assert missing_tests(_cited()) == []


def test_the_test_check_catches_a_test_that_does_not_exist() -> None:
    cited = _cited()
    assert missing_tests([*cited[:2], "tests/test_hazards.py::test_that_was_never_written",
                          "tests/absent.py::test_x", "tests/test_hazards.py::missing_tests"]) == [
        "tests/test_hazards.py::test_that_was_never_written", "tests/absent.py::test_x",
        "tests/test_hazards.py::missing_tests"]


def test_a_new_flag_in_a_site_pack_needs_a_hazard(tmp_path: Path) -> None:
    pack = tmp_path / "site.yaml"
    pack.write_text(SITE_FLAG, encoding="utf-8")
    gaps = coverage(load_hazards(), load_pack(pack))
    assert gaps == ["flag SITE_LONG_WAIT: no hazard covers it; add it to hazards.yaml",
                    "rule site-long-wait: no hazard covers it; add it to hazards.yaml"]
    assert set(required(load_pack(pack))["flags"]) >= {"SITE_LONG_WAIT", "NHS_NUMBER_INVALID", "UNDER_PRIORITISED"}


def test_a_hazard_naming_what_does_not_exist_is_reported(tmp_path: Path) -> None:
    text = default_hazards_path().read_text(encoding="utf-8")
    stale = tmp_path / "hazards.yaml"
    stale.write_text(text.replace("flags: [OVER_PRIORITISED]", "flags: [OVER_PRIORITISED, NO_SUCH_FLAG]")
                     .replace("- rule: awaiting-injection", "- rule: no-such-rule"), encoding="utf-8")
    gaps = coverage(load_hazards(stale), load_pack(None))
    assert "flag NO_SUCH_FLAG: named by a hazard but handover has no such flag" in gaps
    assert "rule no-such-rule: named by a hazard but handover has no such rule" in gaps
    assert "rule awaiting-injection: no hazard covers it; add it to hazards.yaml" in gaps


def test_every_problem_of_a_broken_log_is_reported_at_once(tmp_path: Path) -> None:
    broken = tmp_path / "hazards.yaml"
    broken.write_text("""name: broken
colour: red
risk_matrix:
  severities: [minor, major]
  likelihoods: [low, high]
  ratings: {low: [1, 2], high: [2]}
  acceptability: {"1": fine}
hazards:
  - id: H1
    title: Something
    effect: Harm
    severity: huge
    likelihood: low
    residual_likelihood: low
    controls:
      - rule: cohort
      - check: a check
        rule: cohort
        tests: [tests/test_x.py::test_y]
  - id: H1
    title: Again
    cause: c
    effect: e
    severity: minor
    likelihood: low
    residual_likelihood: low
    controls: []
""", encoding="utf-8")
    with pytest.raises(ConfigError) as caught:
        load_hazards(broken)
    problems = caught.value.problems
    for expected in ("unknown key 'colour'", "ratings.high: one whole number per severity",
                     "say what rating 2 means", "hazard H1: cause: say it in words", "severity: 'huge' is not one of",
                     "controls[0]: tests: name the tests", "controls[1]: give exactly one of rule",
                     "hazard H1: duplicate id", "controls: name at least one rule or check"):
        assert any(expected in p for p in problems), (expected, problems)


def test_a_site_pack_folder_brings_its_own_hazard_log(tmp_path: Path) -> None:
    (tmp_path / "default.yaml").write_text(SITE_FLAG, encoding="utf-8")
    assert hazards_path(tmp_path / "default.yaml") == default_hazards_path()
    shutil.copyfile(default_hazards_path(), tmp_path / "hazards.yaml")
    assert hazards_path(tmp_path / "default.yaml") == tmp_path / "hazards.yaml"


def test_a_broken_hazard_log_stops_the_run_before_reading_data(tmp_path: Path) -> None:
    (tmp_path / "rules").mkdir()
    (tmp_path / "rules" / "default.yaml").write_text("extends: default\nname: site\n", encoding="utf-8")
    (tmp_path / "rules" / "hazards.yaml").write_text("name: x\nhazards: []\n", encoding="utf-8")
    result = CliRunner().invoke(cli.main, ["run", "--input", str(WORKED / "input"), "--mapping",
                                           str(WORKED / "mapping.yaml"), "--cutover", "2022-10-01", "--out",
                                           str(tmp_path / "run"), "--rules", str(tmp_path / "rules")])
    assert result.exit_code == 2 and "hazard log" in result.stderr
    assert not (tmp_path / "run").exists()


def test_the_audit_pack_shows_the_log_with_the_runs_figures(tmp_path: Path) -> None:
    run = tmp_path / "run"
    result = CliRunner().invoke(cli.main, ["run", "--input", str(WORKED / "input"), "--mapping",
                                           str(WORKED / "mapping.yaml"), "--cutover", "2022-10-01", "--out", str(run),
                                           "-q"])
    assert result.exit_code == 0, result.output
    assert (run / "config" / "hazards.yaml").read_bytes() == default_hazards_path().read_bytes()
    summary = json.loads((run / "reports" / "reconciliation.json").read_text(encoding="utf-8"))
    view = summary["hazard_log"]
    assert view["flags_without_hazard"] == [] and view["source"].startswith("kept with the run")
    raised = {f: n for h in view["hazards"] for f, n in h["this_run"]["flags"].items()}
    assert raised == {code: summary["flags"]["by_code"].get(code, 0) for code in raised}
    assert raised["UNDER_PRIORITISED"] == 2  # R13 and R14 of the worked example
    withheld = next(h for h in view["hazards"] if "withheld" in h["dispositions"])
    assert withheld["this_run"]["dispositions"]["withheld"] == summary["invariant"]["dispositions"]["withheld"]
    page = (run / "reports" / "hazard-log.html").read_text(encoding="utf-8")
    for hazard in load_hazards().hazards:
        assert f'id="{hazard.id}"' in page
    manifest = json.loads((run / "manifest.json").read_text(encoding="utf-8"))
    assert {"config/hazards.yaml", "reports/hazard-log.html"} <= {o["path"] for o in manifest["outputs"]}
    assert CliRunner().invoke(cli.main, ["verify", str(run)]).exit_code == 0


def test_rules_hazards_lists_the_log_and_exits_2_on_a_gap(tmp_path: Path) -> None:
    shipped = CliRunner().invoke(cli.main, ["rules", "hazards", "--json"])
    assert shipped.exit_code == 0
    assert [h["hazard"] for h in json.loads(shipped.stdout)["hazards"]] == [h.id for h in load_hazards().hazards]
    pack = tmp_path / "site.yaml"
    pack.write_text(SITE_FLAG, encoding="utf-8")
    site = CliRunner().invoke(cli.main, ["rules", "hazards", "--rules", str(pack)])
    assert site.exit_code == 2
    assert "flag SITE_LONG_WAIT: no hazard covers it" in site.stderr and "HAZ-01" in site.stdout


def test_a_repeated_key_in_the_hazard_log_is_a_configuration_error(tmp_path: Path) -> None:
    text = default_hazards_path().read_text(encoding="utf-8")
    repeated = tmp_path / "hazards.yaml"
    repeated.write_text(text.replace("    severity: catastrophic\n", "    severity: catastrophic\n    severity: minor\n",
                                     1), encoding="utf-8")
    with pytest.raises(ConfigError, match="hazard log"):
        load_hazards(repeated)
