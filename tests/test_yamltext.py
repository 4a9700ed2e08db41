"""Codes stay text in every configuration file handover reads (issue #10, item 2).

YAML 1.1 reads an unquoted ``0123`` as the octal number 83, ``1:30`` as 90 (base 60), ``yes`` as
true and ``1e3`` as 1000.0. One loader (``migrate.yamltext``) keeps them as written, for
each kind of file: mapping profiles, rule packs, identity settings, declared files and
report layouts. Numbers a file needs (thresholds, weights, counts, widths) still read.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from migrate.errors import ConfigError, ProfileError
from migrate.identity import load_identity_settings
from migrate.identity.settings import default_path as identity_default
from migrate.profile import load_profile
from migrate.reports import load_declared
from migrate.reports.worklist import load_layout
from migrate.resources import reports_dir
from migrate.rules import load_pack
from migrate.yamltext import number, read_yaml

RISKY = ["0123", "1:30", "yes", "1e3", "on", "2022-10-01", "1.10", "0x1F", ".inf"]
UNQUOTED = "[" + ", ".join(RISKY) + "]"


def test_the_loader_keeps_every_risky_scalar_as_text() -> None:
    assert yaml.safe_load(f"v: {UNQUOTED}")["v"][:4] == [83, 90, True, "1e3"]  # what YAML 1.1 would do
    doc = read_yaml(f"v: {UNQUOTED}\nflag: true\nnone: ~\nkeys: {{0123: a, yes: b}}\n")
    assert doc == {"v": RISKY, "flag": True, "none": None, "keys": {"0123": "a", "yes": "b"}}


def test_a_repeated_key_is_an_error_not_last_one_wins() -> None:
    with pytest.raises(yaml.YAMLError, match="the key '1' appears twice"):
        read_yaml('map: {"1": routine, "1": urgent}')


def test_numbers_are_converted_only_where_a_file_needs_them() -> None:
    assert [number(v) for v in ("84", "-14", "0.95", "1e3", "1:30", "yes", True)] == [84, -14, 0.95] + [None] * 4


def test_profile_codes_stay_text(tmp_path: Path) -> None:
    path = tmp_path / "p.yaml"
    path.write_text(f"""profile: p
format_version: 1
tables:
  referrals:
    files: r.csv
    fields:
      source_referral_id: id
      patient_key: pid
      assigned_priority: {{column: pr, map: {{0123: routine, 1:30: urgent, yes: urgent, 1e3: routine}}}}
      red_flags: {{column: f, map: {{on: cauda_equina}}}}
      body_site: {{constant: 0123}}
""", encoding="utf-8")
    profile = load_profile(path)
    fields = {f.name: f for f in profile.tables["referrals"].fields}
    assert dict(fields["assigned_priority"].map) == {"0123": "routine", "1:30": "urgent", "yes": "urgent",
                                                     "1e3": "routine"}
    assert dict(fields["red_flags"].map) == {"on": "cauda_equina"}
    assert fields["body_site"].constant == "0123"


def test_rule_pack_codes_stay_text_and_thresholds_are_numbers(tmp_path: Path) -> None:
    path = tmp_path / "site.yaml"
    path.write_text(f"""extends: default
name: site
thresholds: {{post_op_window_days: 56}}
codelists:
  red_flag_codes: {UNQUOTED}
  sharing_dissent_codes: {{read2: [0123, 9Nd1]}}
""", encoding="utf-8")
    pack = load_pack(path)
    assert pack.codelist("red_flag_codes") == tuple(RISKY)
    assert pack.coded("sharing_dissent_codes")["read2"] == ("0123", "9Nd1")
    assert pack.thresholds["post_op_window_days"].value == 56


def test_rule_pack_threshold_that_is_not_a_number_is_reported(tmp_path: Path) -> None:
    path = tmp_path / "site.yaml"
    path.write_text("extends: default\nname: site\nthresholds: {post_op_window_days: 1e3}\n", encoding="utf-8")
    with pytest.raises(ConfigError) as caught:
        load_pack(path)
    assert any("thresholds.post_op_window_days: '1e3' is not a number" in p for p in caught.value.problems)


def test_identity_settings_codes_stay_text(tmp_path: Path) -> None:
    text = identity_default().read_text(encoding="utf-8")
    text = text.replace('verified_statuses: ["01", "1", "NSTS01", "verified", "present and verified", "Y", "yes", "true"]',
                        f"verified_statuses: {UNQUOTED}")
    text = text.replace('- ["010", "311"]', "- [010, 311]")
    path = tmp_path / "identity.yaml"
    path.write_text(text, encoding="utf-8")
    settings = load_identity_settings(path)
    assert settings.verified_statuses == tuple(v.lower() for v in RISKY)
    assert settings.prefix_ranges[0] == (10, 311)  # 010 read as octal would be 8
    assert settings.max_block_size == 50 and settings.probable_threshold == 0.5
    assert settings.model.nhs_number_disagree == -10 and settings.model.u_pairs == 200_000
    birth = settings.comparison("birth_date")
    assert birth is not None and birth.levels[0].u == 0.00005  # a decimal, as written


def test_declared_file_ids_stay_text_and_counts_are_numbers(tmp_path: Path) -> None:
    path = tmp_path / "declared.yaml"
    path.write_text(f"patients: 9\nlists:\n  backlog: {{count: 9, ids: {UNQUOTED}}}\n  pifu: 0\n", encoding="utf-8")
    declaration = load_declared(path)
    backlog = declaration.lists[0]
    assert (backlog.name, backlog.count, backlog.ids) == ("backlog", 9, tuple(RISKY))
    assert declaration.patients == 9 and declaration.lists[1].count == 0


def test_report_layout_codes_stay_text_and_widths_are_numbers(tmp_path: Path) -> None:
    text = (reports_dir() / "exceptions.yaml").read_text(encoding="utf-8")
    text = text.replace("flags: [OUT_OF_SCOPE]", f"flags: [OUT_OF_SCOPE, {', '.join(RISKY)}]")
    text = text.replace("sheet: Scope", "sheet: yes")
    path = tmp_path / "exceptions.yaml"
    path.write_text(text, encoding="utf-8")
    layout = load_layout(path)
    scope = layout.families["scope"]
    assert (scope.sheet, scope.flags) == ("yes", ("OUT_OF_SCOPE", *RISKY))
    assert layout.columns[0].width == 9.0


@pytest.mark.parametrize("kind", ["profile", "pack", "identity", "declared"])
def test_a_repeated_key_in_any_file_is_a_configuration_error(kind: str, tmp_path: Path) -> None:
    path = tmp_path / f"{kind}.yaml"
    path.write_text("name: a\nname: b\n", encoding="utf-8")
    loaders = {"profile": load_profile, "pack": load_pack, "identity": load_identity_settings,
               "declared": load_declared}
    with pytest.raises((ConfigError, ProfileError)) as caught:
        loaders[kind](path)
    assert caught.value.exit_code == 2
    assert "appears twice" in caught.value.render()
