"""The CSV reader: every record read once, structural problems quarantined, never a crash."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest

from migrate.errors import InputError
from migrate.sources.csv import CsvOptions, read_csv

from ..conftest import write  # type: ignore[import-not-found]


def _read(tmp_path: Path, content: str | bytes, **opts: object) -> tuple[pl.DataFrame, pl.DataFrame, int]:
    path = write(tmp_path / "f.csv", content)
    result = read_csv(path, "f.csv", CsvOptions(**opts), tmp_path / "work")  # type: ignore[arg-type]
    frame = result.frame.collect().sort("source_row")
    return frame, result.rejected.sort("source_row"), result.rows_read


def test_rows_carry_file_and_one_based_row(tmp_path: Path) -> None:
    frame, rejected, n = _read(tmp_path, "a,b\n1,2\n3,4\n")
    assert n == 2 and rejected.height == 0
    assert frame.select("a", "b", "source_file", "source_row").rows() == [("1", "2", "f.csv", 1), ("3", "4", "f.csv", 2)]


def test_quoted_embedded_newline_is_one_record(tmp_path: Path) -> None:
    frame, rejected, n = _read(tmp_path, 'a,b\n"line one\nline two",x\n3,"4,5"\n')
    assert n == 2 and rejected.height == 0
    assert frame["a"].to_list() == ["line one\nline two", "3"]
    assert frame["b"].to_list() == ["x", "4,5"]
    assert frame["source_row"].to_list() == [1, 2]


def test_blank_lines_are_not_rows(tmp_path: Path) -> None:
    frame, rejected, n = _read(tmp_path, "a,b\n1,2\n\n3,4\n\n\n")
    assert n == 2 and rejected.height == 0
    assert frame.select("a", "source_row").rows() == [("1", 1), ("3", 2)]


@pytest.mark.parametrize(("line", "fields"), [("1,2,3", 3), ("1", 1)])
def test_wrong_field_count_is_quarantined_with_raw_text(tmp_path: Path, line: str, fields: int) -> None:
    frame, rejected, n = _read(tmp_path, f"a,b\n1,2\n{line}\n5,6\n")
    assert n == 3
    assert frame["source_row"].to_list() == [1, 3]
    assert rejected.select("source_row", "reason_code", "raw").rows() == [(2, "wrong_field_count", line)]
    assert rejected["message"][0] == f"f.csv row 2: {fields} fields where the header has 2"


def test_truncated_last_line_is_quarantined_not_a_crash(tmp_path: Path) -> None:
    frame, rejected, n = _read(tmp_path, 'a,b\n1,2\n3,"unterminated')
    assert n == 2 and frame["a"].to_list() == ["1"]
    assert rejected.select("source_row", "reason_code").rows() == [(2, "wrong_field_count")]
    assert "unterminated" in rejected["message"][0]


def test_truncated_last_line_without_quote(tmp_path: Path) -> None:
    frame, rejected, n = _read(tmp_path, "a,b,c\n1,2,3\n4,5")
    assert n == 2 and frame.height == 1
    assert rejected["reason_code"].to_list() == ["wrong_field_count"]


def test_cp1252_byte_in_utf8_file_is_quarantined(tmp_path: Path) -> None:
    frame, rejected, n = _read(tmp_path, b"a,b\n1,caf\xe9\n2,ok\n")
    assert n == 2 and frame["a"].to_list() == ["2"]
    assert rejected.select("source_row", "reason_code").rows() == [(1, "invalid_encoding")]


def test_cp1252_byte_kept_when_profile_says_replace(tmp_path: Path) -> None:
    frame, rejected, _ = _read(tmp_path, b"a,b\n1,caf\xe9\n", on_encoding_error="replace")
    assert rejected.height == 0 and frame["b"].to_list() == ["caf\ufffd"]


def test_cp1252_file_is_decoded(tmp_path: Path) -> None:
    frame, rejected, _ = _read(tmp_path, "a;b\r\n1;Café\r\n".encode("cp1252"), encoding="cp1252", delimiter=";")
    assert rejected.height == 0 and frame["b"].to_list() == ["Café"]


def test_utf8_bom_is_ignored(tmp_path: Path) -> None:
    frame, _, _ = _read(tmp_path, "\ufeffa,b\r\n1,2\r\n".encode())
    assert frame.columns[:2] == ["a", "b"] or set(frame.columns) >= {"a", "b"}
    assert frame["a"].to_list() == ["1"]


def test_other_quote_character(tmp_path: Path) -> None:
    frame, rejected, _ = _read(tmp_path, "a|b\n'x|y'|z\n", delimiter="|", quote_char="'")
    assert rejected.height == 0 and frame["a"].to_list() == ["x|y"]


def test_empty_file_and_header_only_have_no_rows(tmp_path: Path) -> None:
    for content in ("", "a,b\n"):
        frame, rejected, n = _read(tmp_path, content)
        assert (n, frame.height, rejected.height) == (0, 0, 0)


def test_missing_file_is_an_input_error(tmp_path: Path) -> None:
    with pytest.raises(InputError) as exc:
        read_csv(tmp_path / "nope.csv", "nope.csv", CsvOptions(), tmp_path)
    assert exc.value.exit_code == 3 and "nope.csv" in str(exc.value)


def test_every_record_accounted_for_on_a_messy_file(tmp_path: Path) -> None:
    content = 'a,b\n1,2\n3\n"x\ny",z\n4,5,6\n\n7,"8"\n9,"open'
    frame, rejected, n = _read(tmp_path, content)
    assert n == 6
    assert frame.height + rejected.height == n
    assert sorted(frame["source_row"].to_list() + rejected["source_row"].to_list()) == list(range(1, 7))


def test_escaped_quotes_and_separators_inside_a_multiline_field(tmp_path: Path) -> None:
    content = 'a,b,c\n1,"say ""hi"",\nthen, ""bye""",x\n2,"",y\n3,"a\n\nb",z\n'
    frame, rejected, n = _read(tmp_path, content)
    assert rejected.height == 0 and n == 3
    assert frame["b"].to_list() == ['say "hi",\nthen, "bye"', "", "a\n\nb"]
    assert frame["c"].to_list() == ["x", "y", "z"]


def test_raw_text_of_a_multiline_bad_record(tmp_path: Path) -> None:
    _, rejected, n = _read(tmp_path, 'a,b\n1,2\n"x\ny",z,extra\n3,4\n')
    assert n == 3
    assert rejected.select("source_row", "raw").rows() == [(2, '"x\ny",z,extra')]


# --- every byte accounted for (issue #12, item 1) -----------------------------------------

@pytest.mark.parametrize("eol", ["\n", "\r\n", "\r"], ids=["LF", "CRLF", "CR"])
def test_every_line_ending_convention_is_read(tmp_path: Path, eol: str) -> None:
    content = eol.join(["a,b", "1,2", '"x', 'y",z', "3,4", ""])
    frame, rejected, n = _read(tmp_path, content)
    assert n == 3 and rejected.height == 0
    assert frame.select("a", "b").rows() == [("1", "2"), ("x\ny" if eol == "\r" else f"x{eol}y", "z"), ("3", "4")]


def test_a_cr_file_in_cp1252_is_read(tmp_path: Path) -> None:
    frame, rejected, n = _read(tmp_path, "a;b\r1;Café\r2;x\r".encode("cp1252"), encoding="cp1252", delimiter=";")
    assert (n, rejected.height) == (2, 0) and frame["b"].to_list() == ["Café", "x"]


@pytest.mark.parametrize("field", ['"Bob" Smith', '5 ft 11"', 'say "hi"', '"a"b"c'])
def test_a_stray_quote_is_a_malformed_record_and_the_rest_is_read(tmp_path: Path, field: str) -> None:
    frame, rejected, n = _read(tmp_path, f'a,b,c\n1,{field},x\n2,ok,y\n3,"q, r",z\n')
    assert n == 3
    assert frame.select("a", "b", "source_row").rows() == [("2", "ok", 2), ("3", "q, r", 3)]
    assert rejected.select("source_row", "reason_code", "raw").rows() == [(1, "malformed_record", f"1,{field},x")]
    assert "cannot be split" in rejected["message"][0] and "raw record is kept" in rejected["message"][0]


@pytest.mark.parametrize("line", ["1,no\rte,x", "1,no\rte,x,extra", "1,x,y\r\r"])
def test_a_bare_cr_outside_quotes_in_an_lf_file_is_malformed(tmp_path: Path, line: str) -> None:
    frame, rejected, n = _read(tmp_path, f"a,b,c\n{line}\n2,ok,y\n")
    assert n == 2 and frame["a"].to_list() == ["2"]
    assert rejected.select("source_row", "reason_code").rows() == [(1, "malformed_record")]
    assert "carriage return" in rejected["message"][0] and rejected["raw"][0].startswith("1,")


def test_a_bare_cr_inside_quotes_is_content(tmp_path: Path) -> None:
    frame, rejected, _ = _read(tmp_path, 'a,b,c\n1,"no\rte",x\n')
    assert rejected.height == 0 and frame["b"].to_list() == ["no\rte"]


@pytest.mark.parametrize("line", ["1,2,3,4", "1"])
def test_a_first_record_with_the_wrong_field_count_is_quarantined(tmp_path: Path, line: str) -> None:
    frame, rejected, n = _read(tmp_path, f"a,b,c\n{line}\n5,6,7\n")
    assert n == 2 and frame.select("a", "source_row").rows() == [("5", 2)]
    assert rejected.select("source_row", "reason_code").rows() == [(1, "wrong_field_count")]


@pytest.mark.parametrize("content", [b"", b"\xef\xbb\xbf", b"\n\n", b"\xef\xbb\xbf\r\n  \r\n"],
                         ids=["0-byte", "BOM", "blank lines", "BOM and blanks"])
def test_files_with_nothing_in_them_have_no_header_and_no_rows(tmp_path: Path, content: bytes) -> None:
    frame, rejected, n = _read(tmp_path, content)
    assert (n, frame.height, rejected.height) == (0, 0, 0)


@pytest.mark.parametrize(("content", "says"), [
    (b"\na,b\n1,2\n", "first line is blank"),
    (b'a,"b\n1,2\n', "header line cannot be split"),
    (b'a,b"x",c\n1,2,3\n', "header line cannot be split"),
])
def test_a_file_with_content_but_no_readable_header_is_an_input_error(tmp_path: Path, content: bytes,
                                                                       says: str) -> None:
    with pytest.raises(InputError) as caught:
        _read(tmp_path, content)
    assert caught.value.exit_code == 3 and "f.csv" in str(caught.value) and says in str(caught.value)
    assert "1,2" not in str(caught.value)  # names the file, never quotes it


def test_a_unit_separator_byte_in_the_data_is_just_a_character(tmp_path: Path) -> None:
    frame, rejected, n = _read(tmp_path, "a,b\n1,x\x1fy\n2,z\n")
    assert (n, rejected.height) == (2, 0) and frame["b"].to_list() == ["x\x1fy", "z"]


def test_a_last_line_of_one_unit_separator_is_a_record(tmp_path: Path) -> None:
    """Found by the fuzz test: polars read such a last line as blank, and the record vanished."""
    frame, rejected, n = _read(tmp_path, "a,b\n1,2\n\x1f")
    assert n == 2 and frame["a"].to_list() == ["1"]
    assert rejected.select("source_row", "reason_code", "raw").rows() == [(2, "wrong_field_count", "\x1f")]


def test_a_repeated_header_name_keeps_the_first_column(tmp_path: Path) -> None:
    path = write(tmp_path / "f.csv", "a,b,a\n1,2,3\n")
    result = read_csv(path, "f.csv", CsvOptions(), tmp_path / "work")
    assert result.columns == ("a", "b", "a")
    assert result.frame.collect().select("a", "b").rows() == [("1", "2")]


@pytest.mark.parametrize("byte", [b"\x81", b"\x8d", b"\x8f", b"\x90", b"\x9d"])
def test_a_byte_undefined_in_cp1252_is_quarantined(tmp_path: Path, byte: bytes) -> None:
    frame, rejected, n = _read(tmp_path, b"a;b\r\n1;ok\r\n2;x" + byte + b"y\r\n", encoding="cp1252", delimiter=";")
    assert n == 2 and frame["a"].to_list() == ["1"]
    assert rejected.select("source_row", "reason_code").rows() == [(2, "invalid_encoding")]
    frame, rejected, _ = _read(tmp_path, b"a;b\r\n2;x" + byte + b"y\r\n", encoding="cp1252", delimiter=";",
                               on_encoding_error="replace")
    assert rejected.height == 0 and frame["b"].to_list() == ["x\ufffdy"]
