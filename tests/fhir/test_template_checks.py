"""The value checks of ``migrate.fhir.template`` after folding them for speed: the one
``string`` regex accepts exactly what the spec's regex and the control-character regex
accepted together, and a failing value still gets its message (only failing rows do)."""

from __future__ import annotations

import polars as pl
from hypothesis import given, settings
from hypothesis import strategies as st

from migrate.fhir.inputs import emit
from migrate.fhir.template import PATTERNS, resource, text

SPEC_STRING = r"^[ \r\n\t\S]+$"  # FHIR R4's string regex
CONTROL = r"[\x00-\x08\x0B\x0C\x0E-\x1F]"  # what a FHIR string SHALL NOT contain


def _two_regexes(values: pl.Series) -> list[bool | None]:
    return (values.str.contains(SPEC_STRING) & ~values.str.contains(CONTROL)).to_list()


@settings(max_examples=300, deadline=None)
@given(st.lists(st.text(alphabet=st.characters(max_codepoint=0x3100), max_size=6), min_size=1, max_size=40))
def test_one_string_regex_accepts_what_the_two_did(values: list[str]) -> None:
    series = pl.Series(values, dtype=pl.String)
    assert series.str.contains(PATTERNS["string"]).to_list() == _two_regexes(series)


def test_every_control_and_whitespace_character_is_judged_as_before() -> None:
    # each code point alone and inside a word: controls, Unicode spaces, NEL, NBSP, ...
    chars = [chr(c) for c in range(0x00, 0x3001) if not 0xD800 <= c <= 0xDFFF]
    series = pl.Series([*chars, *(f"a{c}b" for c in chars)], dtype=pl.String)
    ours = series.str.contains(PATTERNS["string"]).to_list()
    assert ours == _two_regexes(series)
    assert ours.count(False) > 0


def test_a_failing_value_gets_its_message_and_a_passing_one_none() -> None:
    frame = pl.DataFrame({"bundle_no": [1, 1, 1], "survivor_key": ["P1", "P2", "P3"], "id": ["a", "b", "c"],
                          "name": ["Pat", "Pat\x01", ""]})
    template = resource("Patient", pl.col("id"), ("name", text(pl.col("name"))))
    built = emit(frame, template, "id")
    assert built["problems"].to_list() == [None, "Patient.name: not a valid FHIR string",
                                           "Patient.name: not a valid FHIR string"]
    assert built["json"][0] == '{"resourceType":"Patient","id":"a","meta":{"profile":' \
        '["https://fhir.hl7.org.uk/StructureDefinition/UKCore-Patient"]},"name":"Pat"}'
