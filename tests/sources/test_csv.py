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
