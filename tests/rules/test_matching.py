"""Codelist matching, defined once (``migrate.matching``) and the same everywhere it is used.

Text codelists match after one normalisation (lower case; runs of spaces and punctuation
become ``_``): ``CES``, ``ces``, ``Night pain``, ``NIGHT-PAIN`` and ``night_pain`` behave
alike for red flags, body sites, dummy slots and reason phrases. Clinical code lists match
exactly per code system; Read codes with or without their padding dots.
"""

from __future__ import annotations

import string
from datetime import date
from pathlib import Path
from types import ModuleType

import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from migrate.errors import ConfigError
from migrate.fhir.inputs import labelled_codes
from migrate.fhir.options import SharingCodes
from migrate.rules.features import referral_features
from migrate.matching import (
    code_labels,
    in_codelist,
    keys_of,
    list_keys,
    phrase_pattern,
    text_key,
    text_keys,
    unmatched_elements,
)
from migrate.reports.waits import dummy_slot_names
from migrate.rules import load_pack

SPELLINGS = ["CES", "ces", " Ces ", "cEs"]
NIGHT_PAIN = ["Night pain", "NIGHT-PAIN", "night_pain", "  night   pain!", "Night/Pain"]


def test_the_issue_examples_share_one_key() -> None:
    assert set(text_keys(SPELLINGS)) == {"ces"}
    assert set(text_keys(NIGHT_PAIN)) == {"night_pain"}
    assert text_keys(["DO NOT ATTEND", "do-not-attend", "Do Not Attend."]) == ("do_not_attend",) * 3


_WORDS = st.lists(st.text(alphabet=string.ascii_letters + string.digits, min_size=1, max_size=8), min_size=1,
                  max_size=4)
_GAPS = st.text(alphabet=" -_/.,;:!?()'\t", min_size=1, max_size=3)


@settings(deadline=None)  # results, not speed: the machine is shared
@given(_WORDS, st.lists(_GAPS, min_size=5, max_size=5), st.lists(_GAPS, min_size=5, max_size=5))
def test_case_and_separators_never_change_the_key(words: list[str], gaps_a: list[str], gaps_b: list[str]) -> None:
    a = gaps_a[0] + "".join(w + g for w, g in zip(words, gaps_a[1:] + gaps_a[:1], strict=False))
    b = "".join(w.swapcase() + g for w, g in zip(words, gaps_b, strict=False))
    assert text_keys([a]) == text_keys([b]) == ("_".join(words).lower(),)


@settings(deadline=None)  # results, not speed: the machine is shared
@given(st.text(max_size=30))
def test_the_key_is_idempotent_and_python_agrees_with_the_expression(value: str) -> None:
    (key,) = text_keys([value])
    assert text_keys([key]) == (key,)
    frame = pl.DataFrame({"v": [value]}, schema={"v": pl.String})
    assert frame.select(text_key(pl.col("v"))).item() == key
    assert not key.startswith("_") and not key.endswith("_") and "__" not in key


_VALUES = st.text(alphabet=string.ascii_letters + " -_.é!", max_size=10)


@settings(deadline=None)  # results, not speed: the machine is shared
@given(st.lists(st.one_of(st.none(), st.lists(_VALUES, max_size=4)), max_size=12), st.lists(_VALUES, max_size=4))
def test_keys_computed_per_distinct_value_equal_the_definition_row_by_row(
        lists: list[list[str] | None], known: list[str]) -> None:
    frame = pl.DataFrame({"v": lists}, schema={"v": pl.List(pl.String)})
    out = frame.select(list_keys(pl.col("v")).alias("keys"), unmatched_elements(pl.col("v"), text_keys(known))
                       .alias("unknown"), keys_of(pl.col("v").list.first()).alias("first"))
    for row, keys, unknown, first in zip(lists, out["keys"].to_list(), out["unknown"].to_list(),
                                         out["first"].to_list(), strict=True):
        expected = list(text_keys(row)) if row is not None else None
        assert keys == expected
        assert unknown == [v for v, k in zip(row or [], expected or [], strict=True) if k not in text_keys(known)]
        assert first == (expected[0] if expected else None)


@settings(deadline=None)  # results, not speed: the machine is shared
@given(st.text(alphabet=string.ascii_letters + " -_.,!é", max_size=40),
       st.lists(st.text(alphabet=string.ascii_letters + " -", min_size=1, max_size=12), min_size=1, max_size=3))
def test_a_phrase_is_found_exactly_when_its_key_stands_as_whole_words_in_the_texts_key(text: str,
                                                                                        phrases: list[str]) -> None:
    keys = [k for k in text_keys(phrases) if k]
    if not keys:
        return
    found = pl.select(pl.lit(text.lower()).str.extract(phrase_pattern(keys), 1)).item()
    (text_as_key,) = text_keys([text])
    expected = any(f"_{k}_" in f"_{text_as_key}_" for k in keys)
    assert (found is not None) == expected


def test_read_codes_match_with_or_without_padding_dots_but_never_across_systems_or_case() -> None:
    assert code_labels("read2", ["9Nd1", "9Nd1.", " 9Nd1.. "]) == ("read2:9Nd1",) * 3
    assert code_labels("ctv3", ["XaKRw", "XaKRw."]) == ("ctv3:XaKRw",) * 2
    assert code_labels("read2", ["9ND1"]) != code_labels("read2", ["9Nd1"])  # Read codes are case-sensitive
    assert code_labels("snomed", ["416409005."]) == ("snomed:416409005.",)  # SNOMED ids have no padding


@pytest.mark.parametrize(("system", "code", "blocked"), [
    ("read2", "9Nd1.", True), ("read2", "9Nd1", True), ("read2", "9ND1", False), ("ctv3", "9Nd1", False),
    ("snomed", " 416409005 ", True),
])
def test_sharing_codes_match_exactly_per_system_in_rules_and_fhir(rc: ModuleType, system: str, code: str,
                                                                   blocked: bool) -> None:
    frames = rc.tables([rc.referral()], codes=[rc.code("P1", system, code, date(2021, 1, 1))])
    results = rc.run(frames)
    assert (("P1", "SHARING_BLOCK") in rc.flags(results)) is blocked
    codes = pl.DataFrame({"code_system": [system], "code": [code]})
    kind = labelled_codes(codes, SharingCodes.from_pack(rc.default_pack()))["kind"][0]
    assert (kind == "dissent") is blocked


@pytest.mark.parametrize("flags", [["CES"], ["Cauda Equina"], ["CAUDA-EQUINA"], ["  cauda_equina "], ["Night pain"],
                                   ["NIGHT-PAIN"]])
def test_red_flags_match_in_any_spelling(rc: ModuleType, tmp_path: Path, flags: list[str]) -> None:
    pack = load_pack(rc.write_pack(tmp_path / "site.yaml", "extends: default\nname: site\ncodelists:\n"
                                   "  red_flag_codes: [cauda_equina, night_pain, ces]\n"))
    results = rc.run(rc.tables([rc.referral(red_flags=flags)]), pack)
    assert ("R1", "UNDER_PRIORITISED") in rc.flags(results)


@pytest.mark.parametrize("site", ["LUMBAR SPINE", "Lumbar-Spine", "lumbar_spine", "lumbar spine."])
def test_body_sites_match_in_any_spelling_even_when_the_pack_writes_words(rc: ModuleType, tmp_path: Path,
                                                                           site: str) -> None:
    pack = load_pack(rc.write_pack(tmp_path / "site.yaml", "extends: default\nname: site\ncodelists:\n"
                                   "  spinal_body_sites: [Lumbar Spine]\n"))
    results = rc.run(rc.tables([rc.referral(history_of_cancer=True, body_site=site)]), pack)
    assert ("R1", "UNDER_PRIORITISED") in rc.flags(results)


def test_a_literal_that_can_never_match_a_vocabulary_column_is_a_pack_error(rc: ModuleType, tmp_path: Path) -> None:
    path = rc.write_pack(tmp_path / "site.yaml", """extends: default
name: site
rules:
  - {id: knees, title: knees, applies_to: referral, derive: is_knee, condition: "body_site = 'Left Knee'"}
""")
    with pytest.raises(ConfigError) as caught:
        load_pack(path)
    assert any("rule knees" in p and "write 'left_knee'" in p for p in caught.value.problems)


@pytest.mark.parametrize("slot", ["DO NOT ATTEND", "do-not-attend", " Do Not Attend. ", "ADMIN_APPOINTMENT_ONLY"])
def test_dummy_slots_are_recognised_alike_by_rules_fhir_and_the_waits_report(rc: ModuleType, slot: str) -> None:
    row = referral_features(rc.tables([rc.referral()], [rc.contact(slot_name=slot)]), rc.default_pack(),
                            rc.T).collect().row(0, named=True)
    assert row["dummy_slot_contacts"] == 1 and not row["attended_before_cutover"]
    slots = pl.DataFrame({"slot_name": [slot]})
    assert slots.select(in_codelist(pl.col("slot_name"), SharingCodes.from_pack(rc.default_pack()).dummy_slot_names)).item()
    assert slots.select(in_codelist(pl.col("slot_name"), dummy_slot_names(rc.default_pack()))).item()


@pytest.mark.parametrize(("text", "phrase"), [
    ("Lumps-and-bumps clinic please", "lumps and bumps"),
    ("HIP INTRA ARTICULAR INJECTION", "hip intra-articular injection"),
    ("request: soft_tissue_lump", "soft tissue lump"),
    ("lumpsandbumps", None),
])
def test_reason_phrases_match_in_any_spelling_as_whole_words(rc: ModuleType, text: str, phrase: str | None) -> None:
    row = referral_features(rc.tables([rc.referral(reason_text=text)]), rc.default_pack(), rc.T).collect()
    assert row["out_of_scope_phrase"][0] == phrase


def test_a_codelist_entry_with_no_letter_or_digit_is_a_pack_error(rc: ModuleType, tmp_path: Path) -> None:
    problems = rc.site_pack_problems(tmp_path, "codelists:\n  red_flag_codes: [cauda_equina, '--']\n")
    assert any("codelists.red_flag_codes: '--' has no letter or digit" in p for p in problems)
