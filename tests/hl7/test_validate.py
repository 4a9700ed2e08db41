"""The judge: structures from hl7apy, the segment grammar, datatype checks in Python and polars."""

from __future__ import annotations

import importlib
import time
from datetime import datetime

import polars as pl
import pytest

from migrate.sources.hl7_validate import (
    CHECKED_SEGMENTS,
    Check,
    datatype_checks,
    is_valid_value,
    judge_structure,
    resolve_structure,
    split_messages,
    ts_expr,
    ts_to_datetime,
    valid_expr,
    validate_full,
)

ADT = ["MSH|^~\\&|PAS|RXX|HANDOVER|RYY|20230105093000||ADT^A04|C1|P|2.4", "EVN|A04|20230105093000",
       "PID|1||P0000001^^^RXX^MR||ABBOTT^ALICE||19580214|F", "PD1|||Practice^^B82005", "PV1|1|N"]


@pytest.mark.parametrize(("version", "mtype", "event", "given", "want"), [
    ("2.4", "ADT", "A04", None, "ADT_A01"),          # MSH-9 without its structure: an NHS habit
    ("2.4", "ADT", "A08", "ADT_A01", "ADT_A01"),
    ("2.4", "ADT", "A28", None, "ADT_A05"),
    ("2.4", "ADT", "A31", None, "ADT_A05"),
    ("2.3", "ADT", "A28", None, "ADT_A01"),          # v2.3 has no ADT_A05
    ("2.3.1", "ADT", "A31", None, "ADT_A01"),
    ("2.4", "ADT", "A40", None, "ADT_A39"),
    ("2.5.1", "ADT", "A40", None, "ADT_A39"),
    ("2.4", "REF", "I14", None, "REF_I12"),
    ("2.4", "SIU", "S26", None, "SIU_S26"),
    ("2.3", "SIU", "S15", None, "SIU_S12"),
    ("2.5", "SIU", "S14", None, "SIU_S14"),
])
def test_events_resolve_to_hl7apy_structures(version: str, mtype: str, event: str, given: str | None,
                                            want: str) -> None:
    assert resolve_structure(version, mtype, event, given) == want


@pytest.mark.parametrize(("version", "mtype", "event", "given", "says"), [
    ("2.6", "ADT", "A04", None, "version '2.6' is not supported"),
    ("2.2", "ADT", "A04", None, "version '2.2'"),
    ("2.4", "ADT", "A99", None, "table 0003"),
    ("2.4", "XYZ", "A04", None, "table 0076"),
    ("2.3", "ADT", "A28", "ADT_A05", "not defined in v2.3"),
    ("2.3", "ADT", "Z01", None, "no message structure"),
])
def test_unsupported(version: str, mtype: str, event: str, given: str | None, says: str) -> None:
    result = resolve_structure(version, mtype, event, given)
    assert isinstance(result, tuple) and result[0] == "hl7_unsupported" and says in result[1]


def test_structure_uses_hl7apy_words_then_the_grammar() -> None:
    names = ("MSH", "EVN", "PID", "PD1", "PV1")
    assert judge_structure("2.4", "ADT_A01", names) is None
    assert judge_structure("2.4", "ADT_A01", names[:4]) == "hl7apy: Missing required child ADT_A01.PV1"
    reason = judge_structure("2.4", "ADT_A01", ("MSH", "PID", "EVN", "PD1", "PV1"))
    assert reason is not None and reason.startswith("segment 2 (PID) is out of place for ADT_A01")
    # hl7apy's own parser drops a segment the structure does not have; the grammar does not
    reason = judge_structure("2.4", "ADT_A01", (*names, "RF1"))
    assert reason is not None and "segment 6 (RF1)" in reason
    assert judge_structure("2.4", "ADT_A01", ("MSH", "EVN", "ZU1", "PID", "PV1", "ZU2")) is None  # Z anywhere
    # ROL may come both after PD1 and after PV2
    assert judge_structure("2.4", "ADT_A01", ("MSH", "EVN", "PID", "ROL", "PV1", "PV2", "ROL")) is None


def test_grammar_is_linear_on_long_failing_sequences() -> None:
    names = ("MSH", "SCH", "PID", *(("RGS", "AIS", "AIG", "AIL", "AIP") * 400), "MRG")
    started = time.perf_counter()
    reason = judge_structure("2.4", "SIU_S12", names)
    assert reason is not None and "MRG" in reason
    assert time.perf_counter() - started < 5


def test_datatype_checks_come_from_hl7apy_field_types() -> None:
    for version in ("2.3", "2.3.1", "2.4", "2.5", "2.5.1"):
        lib = importlib.import_module("hl7apy.v" + version.replace(".", "_"))
        checks = datatype_checks(version)
        labels = {c.label for c in checks}
        assert {"MSH-7", "EVN-2", "PID-7", "PID-29", "RF1-7", "RF1-8", "RF1-9", "SCH-11.4", "SCH-11.5",
                "AIL-6", "AIG-8", "AIP-6"} <= labels
        for c in checks:
            assert c.segment in CHECKED_SEGMENTS
            declared = lib.FIELDS[f"{c.segment}_{c.field}"][2]
            assert declared == ("TQ" if c.component else c.datatype), (version, c.label)
    assert "PID-33" not in {c.label for c in datatype_checks("2.3")}


TRICKY = ["", '""', "2023", "202302", "20230228", "20230229", "20240229", "20230230", "20231301", "2023010124",
          "202301012359", "20230101235960", "20230101120000.1234", "20230101120000.", "20230101120000+0100",
          "20230101120000-2359", "20230101+2400", "2023-01-01", "0999", "19700101^D", " 20230101", "20230101 ",
          "12", "-3.5", "+.5", "1.", ".", "1e3", "1,5", "０１２３", "2023０１01", "20230101120000.1234567"]


@pytest.mark.parametrize("datatype", ["TS", "DT", "NM"])
def test_python_and_polars_datatype_checks_agree(datatype: str) -> None:
    got = pl.DataFrame({"v": TRICKY + [None]}).select(valid_expr(pl.col("v"), datatype)).to_series().to_list()
    assert got == [is_valid_value(v, datatype) for v in TRICKY] + [True]


def test_datatype_values() -> None:
    assert is_valid_value("20240229", "TS") and not is_valid_value("20230229", "TS")
    assert not is_valid_value("2023-01-01", "TS") and not is_valid_value("2023010124", "TS")
    assert is_valid_value("20230101120000.1234+0100", "TS") and not is_valid_value("2023-01", "NM")
    assert is_valid_value("-3.5", "NM") and not is_valid_value("two", "NM")
    assert is_valid_value("202302", "DT") and not is_valid_value("2023020112", "DT")


def test_timestamps_to_datetimes_in_python_and_polars() -> None:
    values = ["20230105093000", "20230105093000+0100", "20230105093000-0030", "2023", "202302", "2023020112",
              "20230201120000.5", "20230201120000.123456789", "", '""', None]
    want = [ts_to_datetime(v) for v in values]
    assert want[:3] == [datetime(2023, 1, 5, 9, 30), datetime(2023, 1, 5, 8, 30), datetime(2023, 1, 5, 10, 0)]
    assert want[3:8] == [datetime(2023, 1, 1), datetime(2023, 2, 1), datetime(2023, 2, 1, 12),
                         datetime(2023, 2, 1, 12, 0, 0, 500000), datetime(2023, 2, 1, 12, 0, 0, 123456)]
    got = pl.DataFrame({"v": values}, schema={"v": pl.String}).select(ts_expr(pl.col("v"))).to_series().to_list()
    assert got == want


def test_datatype_reasons_never_quote_the_value() -> None:
    text = "\r".join(ADT).replace("19580214", "19580230")
    verdict = validate_full(text)
    assert verdict == ("hl7_datatype", "PID-7 is not a valid TS (timestamp)")
    assert "1958" not in verdict[1]
    assert Check("PID", 7, None, "TS").reason == verdict[1]


def test_nhs_habits_are_valid() -> None:
    # alphanumeric ODS code in XON.3 (numeric in v2.4), "" in a telephone field, MSH-9 without structure
    text = "\r".join(ADT).replace("F", 'F|||1 Mill Lane||""', 1)
    assert validate_full(text) is None


def test_split_messages_by_msh_blank_lines_and_frames() -> None:
    text = ("FHS|^~\\&\rBHS|^~\\&\r\x0bMSH|a\rPID|1\r\x1c\rMSH|b\r\nPID|2\r\n\r\nnoise\nPID|3\nMSH|c\rPID|4\r\r\n"
            "PV1|1\r\r\nBTS|3\rFTS|1\r")
    assert split_messages(text) == [["MSH|a", "PID|1"], ["MSH|b", "PID|2"], ["noise", "PID|3"],
                                    ["MSH|c", "PID|4", "PV1|1"]]
