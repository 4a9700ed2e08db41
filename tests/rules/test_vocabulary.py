"""Vocabulary coverage: every value a rule reads as vocabulary, its rows, and the codelist it
matched or none (``migrate.vocabulary``). The end-to-end checks (check, reconciliation.json,
HTML) are in tests/test_new_provider.py."""

from __future__ import annotations

from datetime import date
from pathlib import Path
from types import ModuleType

from migrate.rules import load_pack
from migrate.vocabulary import FIELDS, bindings, looks_like_placeholder, unmatched, vocabulary


def test_every_value_is_listed_with_rows_and_codelist_or_none(rc: ModuleType) -> None:
    frames = rc.tables(
        [rc.referral("R1", red_flags=["CES", "Night pain", "CES"], body_site="LUMBAR SPINE"),
         rc.referral("R2", red_flags=["night_pain"], body_site="knee", service_line="MSK Physio"),
         rc.referral("R3", red_flags=[], body_site=None)],
        [rc.contact("R1", slot_name="DO-NOT-ATTEND"), rc.contact("R2", slot_name="Clinic 3")],
        [rc.code("P1", "read2", "9Nd1.", date(2021, 1, 1)), rc.code("P1", "snomed", "279039007", date(2021, 1, 1))])
    vocab = vocabulary(frames, rc.default_pack())
    assert list(vocab) == list(FIELDS)
    assert vocab["red_flags"] == [  # CES twice on R1 counts one row
        {"value": "CES", "rows": 1, "codelist": None},
        {"value": "Night pain", "rows": 1, "codelist": "red_flag_codes"},
        {"value": "night_pain", "rows": 1, "codelist": "red_flag_codes"},
    ]
    assert vocab["body_site"] == [{"value": "LUMBAR SPINE", "rows": 1, "codelist": "spinal_body_sites"},
                                  {"value": "knee", "rows": 1, "codelist": None}]
    assert {v["value"]: v["codelist"] for v in vocab["slot_name"]} == {"DO-NOT-ATTEND": "dummy_slot_names",
                                                                       "Clinic 3": None}
    assert vocab["service_line"] == [{"value": "physio", "rows": 2, "codelist": None},
                                     {"value": "MSK Physio", "rows": 1, "codelist": None}]
    assert {v["value"]: v["codelist"] for v in vocab["code"]} == {"read2:9Nd1.": "sharing_dissent_codes",
                                                                  "snomed:279039007": None}
    assert vocab["closure_reason"] == [] and vocab["referral_source"] == []
    assert unmatched(vocab)["red_flags"] == 1


def test_a_site_rule_over_a_field_binds_its_codelist_without_code(rc: ModuleType, tmp_path: Path) -> None:
    pack = load_pack(rc.write_pack(tmp_path / "site.yaml", """extends: default
name: site
codelists:
  msk_lines: [MSK Physio]
  not_red_flag_codes: [knee swelling]
rules:
  - {id: msk, title: MSK line, applies_to: referral, derive: is_msk, condition: "service_line IN {codelists.msk_lines}"}
"""))
    assert bindings(pack)["service_line"] == ("msk_lines",)
    assert bindings(pack)["red_flags"] == ("red_flag_codes", "not_red_flag_codes")
    frames = rc.tables([rc.referral(service_line="msk-physio", red_flags=["Knee Swelling"])])
    vocab = vocabulary(frames, pack)
    assert vocab["service_line"] == [{"value": "msk-physio", "rows": 1, "codelist": "msk_lines"}]
    assert vocab["red_flags"] == [{"value": "Knee Swelling", "rows": 1, "codelist": "not_red_flag_codes"}]


def test_absent_tables_and_unmapped_fields_have_no_values(rc: ModuleType) -> None:
    vocab = vocabulary({"referrals": rc.frame("referrals", [rc.referral()]).drop("body_site")}, rc.default_pack())
    assert vocab["body_site"] == [] and vocab["slot_name"] == [] and vocab["code"] == []


def test_placeholder_hint_heuristic() -> None:
    placeholders = ["DUMMY SLOT", "Admin hold", "XXXX", "----", "Do not book", "RESERVED 2", "tbc"]
    clinics = ["Clinic 3", "Physio Room 2", "Banbury MSK", "Dr Khan Tuesday am", "Hand therapy"]
    assert all(looks_like_placeholder(s) for s in placeholders)
    assert not any(looks_like_placeholder(s) for s in clinics)
