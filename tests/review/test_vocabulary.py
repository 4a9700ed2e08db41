"""Decisions as data: the rule pack's ``decisions:`` section, validated with the rest of the pack."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pytest
from click.testing import CliRunner

from migrate.errors import ConfigError
from migrate.frozen import load_pack as frozen_pack
from migrate.rules import load_pack
from migrate.review.vocabulary import normalise

CASE = Path(__file__).parents[1] / "cases" / "worked-example"


# A site whose sharing blocks can only be upheld (no override).
UPHOLD_ONLY = """
decisions:
  families:
    sharing:
      flags: [SHARING_BLOCK, SHARING_BLOCK_ACTIVE_CARE]
      decisions:
        uphold: {effect: close}
"""


def _site(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "site.yaml"
    path.write_text("extends: default\nname: site\n" + body, encoding="utf-8")
    return path


def test_the_default_pack_declares_the_issue_vocabulary() -> None:
    review = load_pack(None).review
    assert set(review.allowed("PROBABLE_DUPLICATE")) == {"same_person", "not_same_person", "acknowledged"}
    assert set(review.allowed("NHS_NUMBER_CONFLICT")) == {"same_person", "not_same_person", "acknowledged"}
    assert set(review.allowed("SHARING_BLOCK_ACTIVE_CARE")) == {"override", "uphold", "acknowledged"}
    for flag in ("UNDER_PRIORITISED", "POST_OP_NOT_PRIORITISED", "URGENT_WAIT_BREACH"):
        assert set(review.allowed(flag)) == {"upgrade_urgent", "keep", "acknowledged"}
        assert review.allowed(flag)["keep"].note_required
    for flag in ("WRONG_TRANSFER_LIST", "ON_TWO_LISTS"):
        assert set(review.allowed(flag)) == {"move_backlog", "move_transition", "move_pifu", "keep", "acknowledged"}
    # Any other flag takes acknowledged only.
    assert set(review.allowed("AWAITING_INJECTION")) == {"acknowledged"}
    assert review.allowed("SHARING_BLOCK")["override"].note_required
    assert review.allowed("SHARING_BLOCK")["override"].second_reviewer
    assert review.allowed("PROBABLE_DUPLICATE")["same_person"].effect == "merge"
    assert review.binds_to("PROBABLE_DUPLICATE") == "records"
    assert review.binds_to("SHARING_BLOCK") == "evidence"


def test_a_typed_decision_is_read_in_any_case_and_spacing() -> None:
    assert normalise("  Same Person ") == "same_person"
    assert normalise("move-backlog") == "move_backlog"
    assert normalise("overide") == "overide"  # a misspelling stays a misspelling


def test_a_broken_vocabulary_reports_every_problem_at_once(tmp_path: Path) -> None:
    site = _site(tmp_path, """
decisions:
  families:
    priority:
      flags: [UNDER_PRIORITISED, NOT_A_FLAG]
      decisions:
        upgrade_urgent: {effect: raise_priority, to: emergency}
        keep: {effect: close, note: perhaps}
    extra:
      flags: [UNDER_PRIORITISED, SHARING_BLOCK]
      decisions:
        bump: {effect: raise_priority, to: urgent}
        Wipe: {effect: delete}
      colour: red
""")
    with pytest.raises(ConfigError) as caught:
        load_pack(site)
    assert caught.value.exit_code == 2
    text = "\n".join(caught.value.problems)
    assert "NOT_A_FLAG is raised by no rule" in text
    assert "needs 'to:' one of urgent, two_week_wait (got 'emergency')" in text
    assert "keep.note: 'perhaps' is not 'required' or 'optional'" in text
    assert "flag UNDER_PRIORITISED is already decided by family priority" in text
    assert "effect raise_priority cannot act on the patient subjects" in text  # SHARING_BLOCK is a patient flag
    assert "decision 'Wipe' must be a lower-case word" in text
    assert "unknown key 'colour'" in text
    assert all(str(site) in p for p in caught.value.problems)


def test_a_site_pack_replaces_one_family_and_inherits_the_rest(tmp_path: Path) -> None:
    site = _site(tmp_path, UPHOLD_ONLY)
    review = load_pack(site).review
    assert set(review.allowed("SHARING_BLOCK")) == {"uphold", "acknowledged"}
    assert "same_person" in review.allowed("PROBABLE_DUPLICATE")


def test_the_run_freezes_the_vocabulary_with_the_pack(tmp_path: Path) -> None:
    from migrate.pipeline import RunConfig, run_batch

    site = _site(tmp_path, UPHOLD_ONLY)
    out = tmp_path / "run"
    run_batch(RunConfig.load(CASE / "input", CASE / "mapping.yaml", date(2022, 10, 1), out, rules=site))
    assert set(frozen_pack(out).review.allowed("SHARING_BLOCK")) == {"uphold", "acknowledged"}


def test_run_with_a_broken_vocabulary_exits_2_before_reading(tmp_path: Path) -> None:
    from cli import main

    site = _site(tmp_path, "decisions:\n  families:\n    x:\n      flags: [NOPE]\n      decisions: {a: {effect: zap}}\n")
    out = tmp_path / "run"
    result = CliRunner().invoke(main, ["run", "--input", str(CASE / "input"), "--mapping", str(CASE / "mapping.yaml"),
                                       "--cutover", "2022-10-01", "--out", str(out), "--rules", str(site), "--quiet"])
    assert result.exit_code == 2, result.output
    assert "NOPE" in result.output and "effect 'zap'" in result.output
    assert not (out / "canonical").exists()
