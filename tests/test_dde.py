"""handover describe: the Documented Data Extract, generated from profiles and the rule pack.

The DDE of each shipped profile lives in docs/dde/ and must equal a fresh rendering, so a
profile or pack change that is not re-described fails here (regenerate with the command in
the failure message).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from click.testing import CliRunner

import cli
from migrate import canonical
from migrate.dde import SHARING_MEANINGS, describe, render_html, render_markdown
from migrate.profile import load_profile
from migrate.resources import mappings_dir
from migrate.rules import load_pack

REPO = Path(__file__).resolve().parents[1]
CASES = Path(__file__).parent / "cases"
SHIPPED = sorted(p.stem for p in mappings_dir().glob("*.yaml"))
LAYOUTS = [*SHIPPED, *(str(CASES / case / "mapping.yaml") for case in ("worked-example", "second-layout", "new-provider"))]


@pytest.mark.parametrize("name", SHIPPED)
def test_the_dde_of_each_shipped_profile_in_docs_is_current(name: str) -> None:
    dde = describe([load_profile(name)], load_pack(None))
    for suffix, fresh in ((".md", render_markdown(dde)), (".html", render_html(dde))):
        stored = REPO / "docs" / "dde" / f"{name}{suffix}"
        assert stored.is_file() and stored.read_text(encoding="utf-8") == fresh, (
            f"docs/dde/{name}{suffix} is stale: run `make docs` (handover describe -m {name} --out docs/dde)")


@pytest.mark.parametrize("layout", LAYOUTS)
def test_every_column_the_profile_reads_is_described_with_its_codes(layout: str) -> None:
    profile = load_profile(layout)
    dde = describe([profile], load_pack(None))
    text = render_markdown(dde)
    page = render_html(dde)
    (described,) = dde["profiles"]
    for spec in profile.tables.values():
        (entry,) = [f for f in described["files"] if f["table"] == spec.name]
        assert [c["field"] for c in entry["columns"]] == [f.name for f in spec.fields]
        for field, column in zip(spec.fields, entry["columns"], strict=True):
            assert column["source_columns"] == list(field.source_columns)
            assert column["required"] is field.required
            # a sharing setting's values are its value map: what each means (dissent, consent, opt-out)
            settings = [(v, SHARING_MEANINGS[k]) for values, k in ((field.dissent_values, "dissent"),
                                                                   (field.consent_values, "consent"),
                                                                   (field.opt_out_values, "opt_out")) for v in values]
            assert [(m["code"], m["meaning"]) for m in column["value_map"]] == list(field.map) + settings
            for code, meaning in (*field.map, *settings):
                assert f"`{code}` → {meaning}" in text
                assert f"<code>{code}</code> → {meaning}" in page
            for source in field.source_columns:
                assert source in text
            if field.implied_by is not None:  # the value another column implies, each pair
                assert column["implied_by"]["column"] == field.implied_by.column
                for code, raw in field.implied_by.map:
                    assert f"`{code}` → `{raw}`" in text and f"<code>{code}</code> → <code>{raw}</code>" in page
        if spec.name in canonical.REFERENCE_TABLES:
            assert entry["files"] == list(spec.files)
            assert f"{spec.name}: the file given by {canonical.REFERENCE_TABLES[spec.name]}" in text
        mapped = {f.name for f in spec.fields} | {"patient_key", "referral_key"}
        if spec.name == "contacts" and "patient_key" not in {f.name for f in spec.fields}:
            assert entry["filled"] == [{"field": "patient_key", "from": "its referral's patient"}]
        blank = {n["field"] for n in entry["not_mapped"]}
        assert blank == {f for f in canonical.TABLES[spec.name].field_names if f not in mapped}


def test_the_business_rules_and_codelists_are_all_there() -> None:
    pack = load_pack(None)
    dde = describe([load_profile("generic-csv")], pack)
    text = render_markdown(dde)
    for rule in pack.rules:
        assert f"### `{rule.id}`" in text
        assert rule.title in text
    for name, codelist in pack.codelists.items():
        for code in codelist.values:
            assert f"`{code}`" in text, (name, code)
        for system in codelist.by_system or {}:
            assert any(s["system"] == system for c in dde["codelists"] if c["name"] == name for s in c["systems"])
    sharing = next(c for c in dde["codelists"] if c["name"] == "sharing_dissent_codes")
    assert "sharing-block" in sharing["used_by"]
    # generic-csv also maps the --practice-sharing file
    assert {t["name"] for t in dde["logical_model"]["tables"]} == {*canonical.TABLE_ORDER, canonical.PRACTICE_TABLE}
    contacts = next(t for t in dde["logical_model"]["tables"] if t["name"] == "contacts")
    assert {"column": "referral_key", "table": "referrals", "key": "referral_key"} in contacts["references"]


def test_a_column_lists_the_rules_its_values_can_change() -> None:
    dde = describe([load_profile("generic-csv")], load_pack(None))
    columns = {(f["table"], c["field"]): c for f in dde["profiles"][0]["files"] for c in f["columns"]}
    assert columns[("referrals", "assigned_priority")]["rules"] == ["urgent-priority"]
    assert "under-prioritised" in columns[("referrals", "assigned_priority")]["through"]
    # attended contacts decide the cohort (a feature of the contacts file)
    assert "cohort" in columns[("contacts", "attendance")]["rules"]
    assert columns[("contacts", "procedure")]["rules"] == [] and columns[("contacts", "procedure")]["through"] == []
    assert "sharing-block" in columns[("codes", "code")]["rules"]


def test_changing_the_profile_or_the_pack_changes_the_dde(tmp_path: Path) -> None:
    source = (CASES / "worked-example" / "mapping.yaml").read_text(encoding="utf-8")
    changed = tmp_path / "mapping.yaml"
    changed.write_text(source.replace('"7": did_not_attend', '"7": attended'), encoding="utf-8")
    site = tmp_path / "site.yaml"
    site.write_text("extends: default\nname: site\nrules:\n  - id: site-injection-wait\n    title: Waiting for an "
                    "injection, routine\n    applies_to: referral\n    flag: SITE_INJECTION\n    severity: low\n"
                    "    condition: awaiting_injection AND NOT is_urgent\n    evidence: [awaiting_injection]\n"
                    "    action: review\n", encoding="utf-8")
    before = render_markdown(describe([load_profile(CASES / "worked-example" / "mapping.yaml")], load_pack(None)))
    after = render_markdown(describe([load_profile(changed)], load_pack(site)))
    assert "`7` → did_not_attend" in before and "`7` → attended" in after
    injection = next(line for line in after.splitlines() if line.startswith("| awaiting_injection |"))
    assert "site-injection-wait" in injection
    assert "### `site-injection-wait`" in after and "site-injection-wait" not in before


def test_the_dde_is_deterministic_and_names_no_local_path() -> None:
    profiles = [load_profile("generic-csv"), load_profile("hl7v2")]
    first = describe(profiles, load_pack(None))
    assert render_markdown(first) == render_markdown(describe(profiles, load_pack(None)))
    for text in (render_markdown(first), render_html(first)):
        assert str(REPO) not in text
        assert not re.search(r"\b20\d\d-\d\d-\d\dT", text)  # no generation timestamp


def test_describe_writes_markdown_and_html(tmp_path: Path) -> None:
    result = CliRunner().invoke(cli.main, ["describe", "-m", "generic-csv", "-m", "hl7v2", "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["generic-csv+hl7v2.html", "generic-csv+hl7v2.md"]
    page = (tmp_path / "generic-csv+hl7v2.html").read_text(encoding="utf-8")
    assert "Physical model: profile <code>hl7v2</code>" in page and "<script" not in page


def test_describe_with_a_bad_profile_exits_2_and_writes_nothing(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("profile: bad\nformat_version: 1\ntables: {patients: {files: x.csv, fields: {nope: a}}}\n")
    result = CliRunner().invoke(cli.main, ["describe", "-m", str(bad), "--out", str(tmp_path / "out")])
    assert result.exit_code == 2 and "nope" in result.stderr
    assert not (tmp_path / "out").exists()
