"""read_hl7 at the edges: empty and odd files, bytes, framing, work folder, errors."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import polars as pl
import pytest

from migrate.errors import ConfigError, InputError
from migrate.sources.hl7 import Hl7Read, read_hl7

A08 = ["MSH|^~\\&|PAS|RXX|HANDOVER|RYY|{ts}||ADT^A08^ADT_A01|{cid}|P|2.4", "EVN|A08|20230105093000",
       "PID|1||P0000001^^^RXX^MR~9990001375^^^NHS^NH||{name}^ALICE||19580214|F", "PV1|1|N"]


def message(cid: str = "C1", ts: str = "20230105093000", name: str = "ABBOTT", sep: str = "\r") -> str:
    return sep.join(line.format(cid=cid, ts=ts, name=name) for line in A08)


def read(tmp_path: Path, data: str | bytes, paths: tuple[str, ...] = ("PID-5.1",), **kw: int) -> Hl7Read:
    path = tmp_path / "in.hl7"
    path.write_bytes(data if isinstance(data, bytes) else data.encode("utf-8"))
    return read_hl7(path, "in.hl7", list(paths), tmp_path / "work", **kw)


def test_missing_file_is_an_input_error(tmp_path: Path) -> None:
    with pytest.raises(InputError):
        read_hl7(tmp_path / "nope.hl7", "nope.hl7", [], tmp_path)


def test_bad_paths_are_a_config_error_listing_each(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as err:
        read(tmp_path, message(), ("PID-5.1", "PID5", "PID-3[kind=NH]"))
    assert len(err.value.problems) == 2 and "'PID5'" in err.value.problems[0]


@pytest.mark.parametrize("data", ["", "\n\n\r\n", "FHS|^~\\&\rBHS|^~\\&\rBTS|0\rFTS|1\r", "\x0b\x1c\r"])
def test_files_without_messages_have_no_rows(tmp_path: Path, data: str) -> None:
    result = read(tmp_path, data)
    assert result.rows_read == 0 and result.rejected.height == 0
    assert result.messages.collect().height == 0
    assert "PID-5.1" in result.messages.collect_schema()


def test_text_that_is_not_hl7_is_one_malformed_row_not_a_crash(tmp_path: Path) -> None:
    result = read(tmp_path, "patient_id,name\nP1,Alice\n")
    assert result.rows_read == 1
    assert result.rejected.select("source_row", "reason_code").rows() == [(1, "hl7_malformed")]
    assert result.rejected["raw"][0] == "patient_id,name\rP1,Alice"


def test_bom_mllp_without_final_cr_and_duplicate_paths(tmp_path: Path) -> None:
    data = "\ufeff" + "\x0b" + message("C1") + "\x1c\r" + "\x0b" + message("C2", name="BAKER") + "\x1c"
    result = read(tmp_path, data, ("PID-5.1", "PID-5.1"))
    frame = result.messages.collect()
    assert frame.select("control_id", "PID-5.1").rows() == [("C1", "ABBOTT"), ("C2", "BAKER")]
    assert frame.columns.count("PID-5.1") == 1


def test_non_utf8_lines_are_read_as_cp1252(tmp_path: Path) -> None:
    data = message("C1", name="REN\xc9E").encode("cp1252") + b"\r\n" + message("C2", name="B\x81").encode(
        "latin-1") + b"\r\n" + message("C3", name="ZO\u00cbL").encode("utf-8")
    frame = read(tmp_path, data).messages.collect()
    assert frame["PID-5.1"].to_list() == ["REN\u00c9E", "B\ufffd", "ZO\u00cbL"]


def test_sent_at_reads_msh_7_with_offsets_as_utc(tmp_path: Path) -> None:
    data = "\n".join([message("C1", "20230105093000+0100", sep="\n"), message("C2", "202301050930", sep="\n"),
                      message("C3", "", sep="\n")])
    frame = read(tmp_path, data).messages.collect()
    assert frame["sent_at"].to_list() == [datetime(2023, 1, 5, 8, 30), datetime(2023, 1, 5, 9, 30), None]


def test_a_message_larger_than_a_chunk(tmp_path: Path) -> None:
    big = message("C1").replace("PV1|1|N", "PV1|1|N\r" + "\r".join(f"ZU1|{i}|{'x' * 50}" for i in range(200)))
    data = big + "\r" + message("C2")
    small = read(tmp_path, data, chunk_bytes=16)
    assert small.rows_read == 2 and small.messages.collect()["control_id"].to_list() == ["C1", "C2"]


def test_rereading_replaces_the_parts_and_files_do_not_collide(tmp_path: Path) -> None:
    first = read(tmp_path, "\r".join([message("C1"), message("C2")]))
    assert first.messages.collect().height == 2
    second = read(tmp_path, message("C9"))
    assert second.messages.collect()["control_id"].to_list() == ["C9"]
    other = tmp_path / "other.hl7"
    other.write_text(message("X1"), encoding="utf-8")
    third = read_hl7(other, "sub/other.hl7", [], tmp_path / "work")
    assert third.messages.collect()["control_id"].to_list() == ["X1"]
    assert second.messages.collect()["control_id"].to_list() == ["C9"]


def test_rows_read_is_valid_plus_rejected(tmp_path: Path) -> None:
    bad = message("C2").replace("19580214", "19581314")
    result = read(tmp_path, "\n\n".join([message("C1"), bad, "junk", message("C4")]))
    frame = result.messages.collect()
    assert result.rows_read == 4 == frame.height + result.rejected.height
    assert frame["source_row"].to_list() == [1, 4]
    assert result.rejected.select("source_row", "reason_code").rows() == [(2, "hl7_datatype"), (3, "hl7_malformed")]
    assert result.rejected["message"][0] == "in.hl7 message 2 (control id C2): PID-7 is not a valid TS (timestamp)"
    assert pl.Series(result.rejected["message"]).str.contains("1958").sum() == 0
