"""How a delimited file is written: its encoding (by decoding it) and its dialect (sniffed).

Encoding: a UTF-8 byte-order mark says UTF-8; otherwise the whole file is decoded as UTF-8
(streamed). No invalid byte: UTF-8. Invalid bytes and no valid multi-byte UTF-8 character:
Windows-1252 (or Latin-1 where a byte cp1252 leaves undefined occurs). Both: the file mixes
encodings, and the draft says so rather than choosing silently. UTF-16 (a BOM) is not read
by handover: the draft says to re-export.

Dialect: Python's ``csv.Sniffer`` proposes a delimiter among the single-byte delimiters
the reader supports; then the candidates (the sniffed one first, then every other one that
splits the header) are tried with the project's own reader (``migrate.sources.csv``) on
the head of the file, and the one that reads every record with the header's field count
wins. The same for quoting: ``"`` unless it splits fewer records than no quoting at all.
(``clevercsv`` was measured against ``csv.Sniffer`` on every test layout and a set of
adversarial samples: the same answers, so the standard library's sniffer stays.)
"""

from __future__ import annotations

import codecs
import csv as pycsv
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from migrate.sources.csv import CsvOptions, read_csv, read_header

DELIMITERS = (",", ";", "|", "\t")
HEAD_BYTES = 1 << 20  # the head of the file the dialect is judged on
_CHUNK = 1 << 24
FEW_BYTES = 20  # fewer non-UTF-8 bytes than this could be a UTF-8 file's stray bytes: the draft asks
_CP1252_UNDEFINED = frozenset(b"\x81\x8d\x8f\x90\x9d")


@dataclass(frozen=True)
class EncodingGuess:
    """An encoding for the profile, and why."""

    encoding: str  # utf-8, utf-8-sig, cp1252 or latin-1 (profile spellings)
    certain: bool
    why: str
    unsupported: bool = False


@dataclass(frozen=True)
class DialectGuess:
    """A delimiter and quote character for the profile, and how well they read the head."""

    delimiter: str
    quote_char: str | None
    fields: int  # columns in the header
    records: int  # records read from the head
    misfits: int  # of them, records the reader could not split into the header's fields
    certain: bool
    why: str
    line_ending: str  # LF, CRLF or CR, for the comment


def detect_encoding(path: Path) -> EncodingGuess:
    """Decide a file's encoding by decoding it (module docstring)."""
    with path.open("rb") as fh:
        head = fh.read(4)
    if head.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        return EncodingGuess("utf-8", False, "the file starts with a UTF-16 byte-order mark, which handover does not "
                             "read: re-export it as UTF-8 or Windows-1252", unsupported=True)
    bom = head.startswith(codecs.BOM_UTF8)
    decoder = codecs.getincrementaldecoder("utf-8")("replace")
    invalid = multibyte = 0
    undefined = False
    with path.open("rb") as fh:
        while chunk := fh.read(_CHUNK):
            text = decoder.decode(chunk)
            if not chunk.isascii():
                bad = text.count("\ufffd")
                invalid += bad
                multibyte += sum(1 for c in text if ord(c) > 127) - bad
                undefined = undefined or any(b in _CP1252_UNDEFINED for b in chunk if b > 127)
        invalid += decoder.decode(b"", final=True).count("\ufffd")
    if bom and not invalid:
        return EncodingGuess("utf-8-sig", True, "UTF-8 with a byte-order mark")
    if not invalid:
        return EncodingGuess("utf-8", True, "every byte decodes as UTF-8" + (
            f" ({multibyte:,} non-ASCII characters)" if multibyte else " (ASCII only: cp1252 would read it alike)"))
    if multibyte == 0 or (not bom and invalid > 10 * multibyte):
        name = "latin-1" if undefined else "cp1252"
        few = invalid < FEW_BYTES
        return EncodingGuess(name, not few, f"{invalid:,} {'byte is' if invalid == 1 else 'bytes are'} not UTF-8 and "
                             + ("no" if multibyte == 0 else f"only {multibyte:,}") + " UTF-8 multi-byte characters: "
                             + ("Latin-1 (bytes Windows-1252 leaves undefined occur)" if undefined else "Windows-1252")
                             + ("; so few could also be stray bytes in a UTF-8 file: if the provider says UTF-8, "
                                "set encoding: utf-8 and the rows holding them are quarantined (invalid_encoding)"
                                if few else ""))
    return EncodingGuess("utf-8", False, f"the file mixes encodings: {multibyte:,} UTF-8 characters beside {invalid:,} "
                         "bytes that are not UTF-8; rows holding those will be quarantined (invalid_encoding) — or "
                         "set on_encoding_error: replace to keep them with U+FFFD")


def _head_copy(path: Path, work: Path) -> Path:
    """The first ``HEAD_BYTES`` of ``path``, cut after a line end, as a file of its own."""
    with path.open("rb") as fh:
        data = fh.read(HEAD_BYTES)
        more = bool(fh.read(1))
    if more:
        cut = max(data.rfind(b"\n"), data.rfind(b"\r"))
        data = data[: cut + 1] if cut > 0 else data
    target = work / path.name
    target.write_bytes(data)
    return target


def _line_ending(data: bytes) -> str:
    if b"\r\n" in data:
        return "CRLF"
    return "CR" if b"\r" in data and b"\n" not in data else "LF"


# The reader's reasons for a record that does not split into the header's fields: a wrong
# field count, or quoting broken inside a record (a stray quote, text after a closing one).
MISFIT_REASONS = ("wrong_field_count", "malformed_record")


def _misfits(head: Path, opts: CsvOptions, work: Path) -> tuple[int, int, int]:
    """(header fields, records read, records not splitting into the header's fields)."""
    try:
        result = read_csv(head, head.name, opts, work / "read")
    except pl.exceptions.PolarsError:  # the reader gave up on this dialect: it fits nothing
        return len(read_header(head, opts)), 0, 1 << 30
    wrong = int(result.rejected["reason_code"].is_in(MISFIT_REASONS).sum())
    return len(result.columns), result.rows_read, wrong


def sniff_dialect(path: Path, encoding: str) -> DialectGuess:
    """Sniff the delimiter and quoting of ``path`` and confirm them with the reader."""
    work = Path(tempfile.mkdtemp(prefix="handover-sniff-"))
    try:
        head = _head_copy(path, work)
        raw = head.read_bytes()
        text = raw.decode("utf-8-sig" if encoding.startswith("utf") else encoding, errors="replace")
        first = text.splitlines()[0] if text else ""
        try:
            sniffed = pycsv.Sniffer().sniff(text[:65536], delimiters="".join(DELIMITERS)).delimiter
        except pycsv.Error:
            sniffed = None
        order = ([sniffed] if sniffed else []) + [d for d in DELIMITERS if d != sniffed and d in first]
        tried: list[tuple[tuple[int, int, int, int, bool], str, str | None, int, int, int]] = []
        for rank, delimiter in enumerate(order or [","]):
            for quote in ('"', None):
                fields, records, wrong = _misfits(head, CsvOptions(encoding, delimiter, quote, "replace"), work)
                # fewest misfits, then most records (quotes joining lines wrongly read fewer), most
                # columns, the sniffer's order, quoting before none
                tried.append(((wrong, -records, -fields, rank, quote is None), delimiter, quote, fields, records, wrong))
        _, delimiter, quote, fields, records, wrong = min(tried, key=lambda t: t[0])
    finally:
        shutil.rmtree(work, ignore_errors=True)
    name = {"\t": "tab", ",": "comma", ";": "semicolon", "|": "pipe"}[delimiter]
    if fields <= 1:
        why = "the header has one column: no delimiter of , ; | or tab splits it"
    elif wrong:
        why = f"{name}-delimited; {wrong:,} of the first {records:,} records do not split into the header's {fields} fields"
    else:
        why = f"{name}-delimited: every one of the first {records:,} records splits into the header's {fields} fields"
    if quote is None and '"' in text:
        why += '; double quotes occur inside values, so quoting is off'
    certain = fields > 1 and not wrong and (sniffed is None or sniffed == delimiter)
    return DialectGuess(delimiter, quote, fields, records, wrong, certain, why, _line_ending(raw))
