"""The record index built a range of lines at a time (``records.record_ranges``) is the
whole file's index: the same records, numbers, line spans, field counts and flags, for any
range size — records with line ends inside quotes that straddle a range edge, records
longer than a range, an unclosed quote running to the end of the file included."""

from __future__ import annotations

import re
from pathlib import Path

import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from migrate.errors import InputError
from migrate.sources import records as record_index
from migrate.sources.csv import CsvOptions, read_csv
from migrate.sources.records import Dialect, line_separator, record_ranges, records

# Fields as a messy extract has them: plain, quoted with line ends and doubled quotes
# inside, a stray quote, a bare CR, empty; lines blank or cut short.
_FIELD = st.one_of(
    st.text(alphabet="ab1 ", max_size=4),
    st.text(alphabet='ab,\n"\r', max_size=6).map(lambda t: '"' + t.replace('"', '""') + '"'),
    st.sampled_from(['x"y', '"open', '"a"b', "c\rd", "", '""', '"\n\n\n"']),
)
_LINE = st.one_of(st.lists(_FIELD, min_size=1, max_size=4).map(",".join), st.just(""), st.just('"unclosed'))


def _write(tmp: Path, body: list[str], eol: str) -> Path:
    path = tmp / "t.csv"
    path.write_bytes(("a,b,c" + eol + eol.join(body) + eol).encode())
    return path


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=st.lists(_LINE, max_size=25), eol=st.sampled_from(["\n", "\r\n"]), size=st.integers(1, 12))
def test_a_ranged_index_gives_exactly_the_whole_index(tmp_path: Path, body: list[str], eol: str, size: int) -> None:
    path = _write(tmp_path, body, eol)
    dialect = Dialect()
    whole, separator = records(path, dialect)
    ranges = list(record_ranges(path, dialect, separator, size))
    assert all(r.columns == whole.columns for r in ranges)
    assert pl.concat(ranges).equals(whole)


def test_a_record_longer_than_several_ranges_is_one_record(tmp_path: Path) -> None:
    value = "\n".join(f"line {i}" for i in range(40))
    path = tmp_path / "t.csv"
    path.write_text(f'a,b\n1,x\n2,"{value}"\n3,y\n4,"never closed\n5,z\n')
    for size in (1, 2, 3, 7, 100):
        recs = pl.concat(list(record_ranges(path, Dialect(), line_separator(path), size)))
        assert recs.select("rec", "first_line", "nlines", "nfields", "unterminated").rows() == [
            (1, 1, 1, 2, False), (2, 2, 40, 2, False), (3, 42, 1, 2, False), (4, 43, 2, 2, True)]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=st.lists(_LINE, max_size=25), size=st.integers(1, 6))
def test_reading_a_file_a_range_at_a_time_reads_what_reading_it_whole_reads(
        tmp_path: Path, body: list[str], size: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """The reader over small ranges gives the rows, row numbers and quarantined records
    (with their messages and raw text) it gives over one range."""
    path = _write(tmp_path, body, "\n")
    monkeypatch.setattr(record_index, "RANGE_LINES", None)
    try:
        whole = read_csv(path, "t.csv", CsvOptions(), tmp_path / "work")
    except InputError as exc:  # more bare CRs than LFs: read as a CR file, whose header breaks
        monkeypatch.setattr(record_index, "RANGE_LINES", size)
        with pytest.raises(InputError, match=re.escape(str(exc))):
            read_csv(path, "t.csv", CsvOptions(), tmp_path / "work")
        return
    monkeypatch.setattr(record_index, "RANGE_LINES", size)
    ranged = read_csv(path, "t.csv", CsvOptions(), tmp_path / "work")
    rows = ranged.frame.collect()
    assert rows.equals(whole.frame.collect()) and ranged.rejected.equals(whole.rejected)
    assert ranged.rows_read == whole.rows_read == rows.height + ranged.rejected.height


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=st.lists(_LINE, max_size=25), eol=st.sampled_from(["\n", "\r\n"]), size=st.integers(1, 6))
def test_raw_texts_read_a_few_lines_at_a_time_are_the_records_lines(tmp_path: Path, body: list[str], eol: str,
                                                                     size: int) -> None:
    """``record_texts`` streams the file ``size`` lines at a time: each record's text is its
    own physical lines (line ends dropped, joined by LF), as in the file, whatever the batch."""
    path = _write(tmp_path, body, eol)
    recs, separator = records(path, Dialect())
    wanted = recs.filter(pl.col("rec") % 2 == 1)  # every other record, multi-line ones included
    lines = path.read_bytes().decode().split("\n")
    expected = {rec: "\n".join(line.removesuffix("\r") for line in lines[first:first + n])
                for rec, first, n in wanted.select("rec", "first_line", "nlines").iter_rows()}
    assert record_index.record_texts(path, separator, wanted, batch_lines=size) == expected
    assert record_index.record_texts(path, separator, wanted, batch_lines=1 << 20) == expected
