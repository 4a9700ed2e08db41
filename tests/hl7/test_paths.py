"""HL7 paths: what the profile may write, what each reads, escapes and blanks."""

from __future__ import annotations

import polars as pl
import pytest

from migrate.sources.hl7 import decode_expr, finish_expr, path_expr
from migrate.sources.hl7_paths import STANDARD, Encoding, Selector, decode_escapes, extract, parse_path

PID = ("PID|1||9434765919^^^NHS^NH~12345^^^RXX^MR~^^^NHS&2.16.840.1.113883.2.1.4.1^NH||O\\T\\NEIL^ANNE\\R\\MARIE||"
       "19580214|F|||Flat 2\\S\\3 Mill Lane^^Leeds^^LS6 2AB||\"\"|||||||||||||||||||NSTS01")
MSH = "MSH|^~\\&|PAS|RXX|HANDOVER|RYY|20230105093000||ADT^A04^ADT_A01|ADT0001|P|2.4"
MESSAGE = [MSH, "EVN|A04|20230105093000", PID, "AIL|1||OPD1^^^RXX", "AIL|2||OPD2^^^RXX", "PV1|1|N"]


@pytest.mark.parametrize(("text", "want"), [
    ("PID-3", ("PID", 1, 3, None, None, None)),
    ("PID-5.1", ("PID", 1, 5, None, 1, None)),
    ("PID-11.1.2", ("PID", 1, 11, None, 1, 2)),
    ("PID-3[type=NH].1", ("PID", 1, 3, Selector(component=5, value="NH"), 1, None)),
    ("PID-3[authority=NHS].1", ("PID", 1, 3, Selector(component=4, subcomponent=1, value="NHS"), 1, None)),
    ("PID-3[4=RXX]", ("PID", 1, 3, Selector(component=4, value="RXX"), None, None)),
    ("PID-3[*]", ("PID", 1, 3, Selector(all=True), None, None)),
    ("AIL[2]-3.1", ("AIL", 2, 3, None, 1, None)),
    ("MSH-9.2", ("MSH", 1, 9, None, 2, None)),
])
def test_parse_path(text: str, want: tuple[object, ...]) -> None:
    p = parse_path(text)
    assert (p.segment, p.occurrence, p.field, p.selector, p.component, p.subcomponent) == want
    assert p.text == text


@pytest.mark.parametrize(("text", "says"), [
    ("PID", "expected SEG-F"), ("pid-3", "expected SEG-F"), ("PID-3.", "expected SEG-F"),
    ("PID-0", "start at 1"), ("PID-3.0", "start at 1"), ("AIL[0]-3", "occurrence"), ("AIL[x]-3", "occurrence"),
    ("PID-3[kind=NH]", "selector"), ("PID-3[type=]", "selector"), ("PID-3[0=NH]", "start at 1"),
    ("MSH-2.1", "separators"), ("MSH-1[*]", "separators"), ("PID-3[type=NH].1.2.3", "expected SEG-F"),
])
def test_bad_paths_say_what_is_wrong(text: str, says: str) -> None:
    with pytest.raises(ValueError, match=says.replace("[", r"\[")):
        parse_path(text)


def test_msh_is_numbered_as_the_standard() -> None:
    segs = [line.split("|") for line in MESSAGE]
    get = lambda p: extract(segs, parse_path(p))  # noqa: E731
    assert (get("MSH-1"), get("MSH-2"), get("MSH-3"), get("MSH-7")) == ("|", "^~\\&", "PAS", "20230105093000")
    assert (get("MSH-9"), get("MSH-9.1"), get("MSH-9.2"), get("MSH-9.3")) == ("ADT^A04^ADT_A01", "ADT", "A04",
                                                                             "ADT_A01")
    assert (get("MSH-10"), get("MSH-12"), get("MSH-13")) == ("ADT0001", "2.4", None)


def test_selectors_lists_occurrences_escapes_and_blanks() -> None:
    segs = [line.split("|") for line in MESSAGE]
    get = lambda p: extract(segs, parse_path(p))  # noqa: E731
    assert get("PID-3") == "9434765919^^^NHS^NH"
    assert get("PID-3[type=NH].1") == "9434765919"
    assert get("PID-3[type=MR].1") == "12345"
    assert get("PID-3[authority=NHS].1") == "9434765919"
    assert get("PID-3[4=RXX].1") == "12345"
    assert get("PID-3[type=XX].1") is None
    assert get("PID-3[*].1") == "9434765919;12345"  # the empty CX.1 of the third is left out
    assert get("PID-3[*].5") == "NH;MR;NH"
    assert get("PID-3.4.1") == "NHS" and get("PID-3.4.2") is None
    assert get("PID-5.1") == "O&NEIL" and get("PID-5.2") == "ANNE~MARIE"
    assert get("PID-11.1") == "Flat 2^3 Mill Lane"
    assert get("PID-13") == '""' and get("PID-13.1") == '""'  # HL7's explicit null: kept, unlike empty
    assert get("PID-9") is None  # empty: not sent
    assert get("PID-9") is None and get("PID-99") is None
    assert get("PID-32") == "NSTS01"
    assert (get("AIL-3.1"), get("AIL[2]-3.1"), get("AIL[3]-3.1")) == ("OPD1", "OPD2", None)
    assert get("PD1-3.3") is None


def test_escapes_decode_left_to_right() -> None:
    assert decode_escapes("\\E\\F\\E\\") == "\\F\\"  # an escaped "\F\" is text, not a field separator
    assert decode_escapes("\\F\\E\\") == "|E\\"
    assert decode_escapes("a\\S\\b\\T\\c\\R\\d") == "a^b&c~d"
    assert decode_escapes("\\.br\\ and \\X0D\\") == "\\.br\\ and \\X0D\\"  # other escapes stay as written
    odd = Encoding("#", "*", "~", "!", "&")
    assert decode_escapes("a!S!b!F!c", odd) == "a*b#c"
    values = ["\\E\\F\\E\\", "\\F\\E\\", "a\\S\\b\\T\\c\\R\\d", "\\.br\\", "plain", "\\E\\\\E\\"]
    assert pl.select(decode_expr(pl.lit(pl.Series(values)))).to_series().to_list() == [
        decode_escapes(v) for v in values]


def test_polars_paths_equal_extract_on_literal_rows() -> None:
    lines = [PID, "PID|1||^^^NHS^NH~~x^^^RXX^MR", "PID", "PID|||\"\"||\"\"^\"\"", "PID|1||a^^^\"\"^MR~\"\"||x^\"\""]
    paths = ["PID-3", "PID-3[type=NH].1", "PID-3[type=MR].1", "PID-3[authority=NHS].4.2", "PID-3[*]", "PID-3[*].1",
             "PID-5", "PID-5.1", "PID-5.2", "PID-7", "PID-11.1", "PID-13", "PID-32", "PID-3.4.1"]
    frame = pl.DataFrame({"f": [line.split("|") for line in lines]})
    raw = frame.select(*[path_expr(pl.col("f"), parse_path(p)).alias(p) for p in paths])
    got = raw.select(*[finish_expr(pl.col(p)).alias(p) for p in paths])
    for i, line in enumerate(lines):
        want = {p: extract([line.split("|")], parse_path(p), STANDARD) for p in paths}
        assert got.row(i, named=True) == want, line
