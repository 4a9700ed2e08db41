"""Encoding by decoding and dialect by sniffing, confirmed by the project's reader."""

from __future__ import annotations

import codecs
from pathlib import Path

import pytest

from migrate.draft.sniff import detect_encoding, sniff_dialect

ROWS = ["id,name,address,dob", '1,Ann,"1 High St, Oxford",01/02/1950', '2,Bob,"2 Low Rd, Leeds",03/04/1960']


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def test_utf8_with_and_without_a_byte_order_mark(tmp_path: Path) -> None:
    plain = detect_encoding(_write(tmp_path / "a.csv", "id,name\n1,Zoë\n".encode()))
    assert (plain.encoding, plain.certain) == ("utf-8", True) and "1 non-ASCII" in plain.why
    bom = detect_encoding(_write(tmp_path / "b.csv", codecs.BOM_UTF8 + b"id,name\n1,Ann\n"))
    assert bom.encoding == "utf-8-sig"
    ascii_only = detect_encoding(_write(tmp_path / "c.csv", b"id\n1\n"))
    assert ascii_only.encoding == "utf-8" and "ASCII only" in ascii_only.why


def test_windows_1252_is_told_from_utf8_by_decoding(tmp_path: Path) -> None:
    many = "\n".join(f"{i},Ren\u00e9e,Caf\u00e9" for i in range(30)).encode("cp1252")
    guess = detect_encoding(_write(tmp_path / "a.csv", b"id,name,place\n" + many + b"\n"))
    assert (guess.encoding, guess.certain) == ("cp1252", True)
    # one stray byte could be either: the draft asks rather than decides silently
    few = detect_encoding(_write(tmp_path / "b.csv", "id,name\n1,Ren\u00e9e\n".encode("cp1252")))
    assert few.encoding == "cp1252" and not few.certain and "encoding: utf-8" in few.why
    # 0x81 is undefined in Windows-1252: Latin-1 reads every byte
    latin = detect_encoding(_write(tmp_path / "c.csv", b"id,name\n" + b"1,A\x81\n" * 30))
    assert latin.encoding == "latin-1"


def test_a_file_mixing_encodings_is_flagged_not_chosen_silently(tmp_path: Path) -> None:
    data = "id,name\n1,Zoë\n".encode() + "2,Zoë\n".encode("cp1252")
    guess = detect_encoding(_write(tmp_path / "a.csv", data))
    assert guess.encoding == "utf-8" and not guess.certain and "mixes encodings" in guess.why


def test_utf16_is_reported_as_unsupported(tmp_path: Path) -> None:
    guess = detect_encoding(_write(tmp_path / "a.csv", "id,name\n1,Ann\n".encode("utf-16")))
    assert guess.unsupported and "UTF-16" in guess.why


@pytest.mark.parametrize(("delimiter", "name"), [(",", "comma"), (";", "semicolon"), ("|", "pipe"), ("\t", "tab")])
def test_the_delimiter_is_sniffed_and_every_record_fits(tmp_path: Path, delimiter: str, name: str) -> None:
    rows = ["id;name;address;dob".replace(";", delimiter),
            *[f"{i}{delimiter}Ann{delimiter}\"{i} High St, Oxford; OX1\"{delimiter}01/02/1950" for i in range(20)]]
    path = _write(tmp_path / "a.txt", ("\r\n".join(rows) + "\r\n").encode())
    d = sniff_dialect(path, "utf-8")
    assert (d.delimiter, d.quote_char, d.fields, d.records, d.misfits) == (delimiter, '"', 4, 20, 0)
    assert d.certain and name in d.why and d.line_ending == "CRLF"


def test_quotes_inside_unquoted_values_turn_quoting_off(tmp_path: Path) -> None:
    rows = ["id|note|dob", *[f'{i}|said "fine|01/02/1950' for i in range(10)]]
    d = sniff_dialect(_write(tmp_path / "a.txt", ("\n".join(rows) + "\n").encode()), "utf-8")
    assert (d.delimiter, d.quote_char, d.misfits) == ("|", None, 0) and "quoting is off" in d.why


def test_records_that_do_not_fit_are_counted_and_make_it_uncertain(tmp_path: Path) -> None:
    rows = [*ROWS, "3,Cy,no quotes, here,05/06/1970"]
    d = sniff_dialect(_write(tmp_path / "a.csv", ("\n".join(rows) + "\n").encode()), "utf-8")
    assert d.delimiter == "," and d.misfits == 1 and not d.certain and "1 of the first 3 records" in d.why
