"""Malformed source rows: one kind per quarantine reason code, spliced among the clean rows.

The clean rows of a file are written by polars ``write_csv`` a chunk at a time (never the
whole table as text at once); each junk line is written between chunks as raw bytes with
a plain file handle, so it can carry bytes no CSV writer would produce. The 1-based data
row number (``source_row``) of each junk line is counted as it is written: the header is
not a row, and a record is one row however many physical lines its quoted fields span.

Every junk row is EXTRA (the clean population's counts stay exact) and carries exactly one
defect, so its reason code is unambiguous. Rows are built as field lists and written with
Python's csv writer, except where the defect is in the bytes or the quoting itself (an
unquoted comma, a stray quote, a cp1252 byte, a truncated last line). Children of a malformed patient or
referral row are valid rows themselves and are quarantined as ``parent_quarantined``; a
row whose parent exists in no row at all is ``unknown_patient`` / ``unknown_referral``.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import polars as pl

from migrate.synth.people import EPOCH

CHUNK_ROWS = 250_000
DATE_FORMAT = "%Y-%m-%d"
DATETIME_FORMAT = "%Y-%m-%d %H:%M"
BAD_BYTE = "\ue000"  # stands for a raw cp1252 0xE9 ("é") in an otherwise UTF-8 line
PATIENT_KINDS = ("patient_extra_field", "patient_missing_field", "patient_invalid_encoding",
                 "patient_missing_birth_date", "patient_unparseable_birth_date", "patient_unmapped_sex")
REFERRAL_KINDS = ("referral_extra_field", "referral_missing_field", "referral_invalid_encoding",
                  "referral_missing_required", "referral_unparseable_date", "referral_invalid_value",
                  "referral_unmapped_priority", "referral_malformed_record")
REFERRAL_KINDS_CHILDLESS = ("referral_duplicate_key", "referral_unknown_patient")
CONTACT_KINDS = ("contact_extra_field", "contact_missing_field", "contact_invalid_encoding",
                 "contact_missing_required", "contact_unparseable_date", "contact_unmapped_code",
                 "contact_unknown_referral", "contact_patient_mismatch", "contact_duplicate_key")
CODE_KINDS = ("code_wrong_field_count", "code_invalid_encoding", "code_missing_required", "code_unparseable_date",
              "code_unmapped_system", "code_unknown_patient")
REASON = {
    "extra_field": "wrong_field_count", "missing_field": "wrong_field_count", "wrong_field_count": "wrong_field_count",
    "invalid_encoding": "invalid_encoding", "missing_birth_date": "missing_required",
    "missing_required": "missing_required", "unparseable_birth_date": "unparseable_date",
    "unparseable_date": "unparseable_date", "invalid_value": "invalid_value", "unmapped_sex": "unmapped_code",
    "unmapped_priority": "unmapped_code", "unmapped_code": "unmapped_code", "unmapped_system": "unmapped_code",
    "duplicate_key": "duplicate_key", "unknown_patient": "unknown_patient", "unknown_referral": "unknown_referral",
    "patient_mismatch": "patient_mismatch", "malformed_record": "malformed_record",
}


@dataclass(frozen=True)
class Junk:
    """One raw line to splice into a file after ``pos`` clean rows."""

    table: str
    pos: int
    line: bytes
    reason: str
    kind: str


def _reason(kind: str) -> str:
    return REASON[kind.split("_", 1)[1]]


def _line(fields: list[str], raw: bool = False, newline: bool = True) -> bytes:
    """A CSV record as bytes; ``raw`` joins without quoting (to plant an unquoted comma or a stray quote)."""
    if raw:
        text = ",".join(fields) + "\n"
    else:
        buf = io.StringIO()
        csv.writer(buf, lineterminator="\n").writerow(fields)
        text = buf.getvalue()
    data = text.encode("utf-8").replace(BAD_BYTE.encode("utf-8"), b"\xe9")
    return data if newline else data.rstrip(b"\n")


def _text(values: tuple[object, ...]) -> list[str]:
    """A rendered row's values as CSV text (dates ISO, date-times to the minute)."""
    out = []
    for v in values:
        if v is None:
            out.append("")
        elif isinstance(v, datetime):
            out.append(v.strftime("%Y-%m-%d %H:%M"))
        else:
            out.append(str(v))
    return out


def _day(d: int) -> str:
    return (EPOCH + timedelta(days=int(d))).isoformat()


def _pid(p: int) -> str:
    return f"P{p:07d}"


def _rid(r: int) -> str:
    return f"R{r:07d}"


def _cid(c: int) -> str:
    return f"C{c:08d}"


def _referral(rid: int, pid: int, received: int, label: str = "") -> list[str]:
    return [_rid(rid), _pid(pid), "", _day(received), "physio_tier1", "gp", "1", label, "open", "", "", "", "N", "",
            "knee", "", "N", "Knee pain"]


def _contact(cid: int, rid: int, pid: int, day: int, code: str = "5") -> list[str]:
    return [_cid(cid), _rid(rid), _pid(pid), f"{_day(day)} 10:30", code, "initial", "F2F", "", "", ""]


def _code(pid: int, day: int) -> list[str]:
    return [_pid(pid), "snomed", "279039007", "Low back pain", _day(day), ""]


class _Planter:
    """Builds the junk rows; ids continue after the clean ones so they never collide."""

    def __init__(self, rng: np.random.Generator, T: int, counts: dict[str, int], next_pid: int, next_rid: int,
                 next_cid: int) -> None:
        self.rng, self.T, self.counts = rng, T, counts
        self.next = {"pid": next_pid, "rid": next_rid, "cid": next_cid}
        self.junk: list[Junk] = []
        self.size: dict[str, int] = {}

    def new(self, key: str) -> int:
        self.next[key] += 1
        return self.next[key] - 1

    def put(self, table: str, line: bytes, kind: str, reason: str | None = None, pos: int | None = None) -> None:
        where = int(self.rng.integers(0, self.size[table] + 1)) if pos is None else pos
        self.junk.append(Junk(table, where, line, reason or _reason(kind), kind))

    def past(self, after: int) -> int:
        return int(self.rng.integers(after + 1, self.T))


def plant_malformed(rng: np.random.Generator, T: int, count: int, spare: pl.DataFrame, people: int,
                    patients: pl.DataFrame, refs: pl.DataFrame, contacts: pl.DataFrame, codes: int,
                    render_referral: Callable[[pl.DataFrame], pl.DataFrame],
                    render_contact: Callable[[pl.DataFrame], pl.DataFrame]) -> tuple[list[Junk], Junk, dict[str, int]]:
    """``count`` junk rows of every kind (plus their cascades), the truncated last contacts
    line, and the count per kind. ``spare`` holds unused demographics for junk patients (as
    patients.csv text columns, without patient_id); ``people`` is N (clean people 1..N)."""
    counts: dict[str, int] = {}
    p = _Planter(rng, T, counts, patients.height + 1, refs.height + 1, contacts.height + 1)
    p.size = {"patients": patients.height, "referrals": refs.height, "contacts": contacts.height, "codes": codes}
    unknown_pid = patients.height + count * len(PATIENT_KINDS) + 100_000
    unknown_rid = refs.height + count * 50 + 100_000
    rows = iter(spare.iter_rows())
    for kind in PATIENT_KINDS:
        counts[kind] = count
        for k in range(count):
            pid = p.new("pid")
            fields = [_pid(pid), *[("" if v is None else str(v)) for v in next(rows)]]
            variant = kind.split("_", 1)[1]
            if variant == "missing_field":
                fields = fields[:-1]
            elif variant == "invalid_encoding":
                fields[4] = "Ren" + BAD_BYTE + "e"
            elif variant == "missing_birth_date":
                fields[5] = ""
            elif variant == "unparseable_birth_date":
                y = fields[5][:4]
                fields[5] = f"31/02/{y}" if k % 2 == 0 else f"{y}-13-45"
            elif variant == "unmapped_sex":
                fields[6] = "X"
            p.put("patients", _line(fields, raw=variant == "extra_field"), kind)  # raw: unquoted comma in address
            rid, received = p.new("rid"), T - int(rng.integers(20, 300))
            p.put("referrals", _line(_referral(rid, pid, received, "backlog")), kind, "parent_quarantined")
            p.put("contacts", _line(_contact(p.new("cid"), rid, pid, p.past(received))), kind, "parent_quarantined")
            p.put("codes", _line(_code(pid, T - int(rng.integers(1, 900)))), kind, "parent_quarantined")
    seen = refs.filter(pl.col("received_date").cast(pl.Int64) <= T - 2).select(
        "rid", "pid", pl.col("received_date").cast(pl.Int64))
    for kind in REFERRAL_KINDS + REFERRAL_KINDS_CHILDLESS:
        counts[kind] = count
        for k in range(count):
            pid, received, variant = int(rng.integers(1, people + 1)), T - int(rng.integers(20, 300)), kind.split("_", 1)[1]
            if variant == "duplicate_key":  # a repeat of an earlier row: the later one is quarantined
                o = int(rng.integers(0, refs.height))
                text = render_referral(refs.slice(o, 1)).row(0)
                p.put("referrals", _line(_text(text)), kind,
                      pos=int(rng.integers(o + 1, refs.height + 1)))
                continue
            rid = p.new("rid")
            fields = _referral(rid, pid, received)
            if variant == "unknown_patient":
                fields[1] = _pid(unknown_pid + k)
                p.put("referrals", _line(fields), kind)
                continue
            if variant == "extra_field":
                fields.append("unexpected")
            elif variant == "missing_field":
                fields = fields[:-1]
            elif variant == "invalid_encoding":
                fields[17] = "Knee pain (caf" + BAD_BYTE + " worker)"
            elif variant == "missing_required":
                fields[(3, 4, 8)[k % 3]] = ""  # received_date, service_line, status
            elif variant == "unparseable_date":
                if k % 2 == 0:
                    fields[3] = f"{_day(received)[:4]}-13-45"
                else:
                    fields[8], fields[9] = "closed", f"31/02/{_day(received)[:4]}"
            elif variant == "invalid_value":
                if k % 2 == 0:
                    fields[12] = "maybe"
                else:
                    fields[16] = "perhaps"
            elif variant == "unmapped_priority":
                fields[6] = "9"
            elif variant == "malformed_record":  # a stray quote in an unquoted field, as a PAS writes it
                fields[17] = 'Knee gives way, 5 ft 11"'.replace(",", "") if k % 2 == 0 else '"Knee" pain'
            p.put("referrals", _line(fields, raw=variant == "malformed_record"), kind)
            p.put("contacts", _line(_contact(p.new("cid"), rid, pid, p.past(received))), kind, "parent_quarantined")
    for kind in CONTACT_KINDS:
        counts[kind] = count
        for k in range(count):
            o = int(rng.integers(0, seen.height))
            rid, pid, received = seen.row(o)
            variant = kind.split("_", 1)[1]
            if variant == "duplicate_key":
                c = int(rng.integers(0, contacts.height))
                text = render_contact(contacts.slice(c, 1)).row(0)
                p.put("contacts", _line(_text(text)), kind, pos=int(rng.integers(c + 1, contacts.height + 1)))
                continue
            fields = _contact(p.new("cid"), rid, pid, p.past(received))
            if variant == "extra_field":
                fields.append("unexpected")
            elif variant == "missing_field":
                fields = fields[:-1]
            elif variant == "invalid_encoding":
                fields[8] = "St Ren" + BAD_BYTE + "e Clinic"
            elif variant == "missing_required":
                fields[(3, 4)[k % 2]] = ""
            elif variant == "unparseable_date":
                fields[3] = f"31/02/{fields[3][:4]} 10:30" if k % 2 == 0 else f"{fields[3][:4]}-13-45 09:30"
            elif variant == "unmapped_code":
                if k % 2 == 0:
                    fields[4] = "8"
                else:
                    fields[6] = "FAX"
            elif variant == "unknown_referral":
                fields[1] = _rid(unknown_rid + k)
            elif variant == "patient_mismatch":
                other = int(rng.integers(1, people))
                fields[2] = _pid(other if other < pid else other + 1)
            p.put("contacts", _line(fields), kind)
    for kind in CODE_KINDS:
        counts[kind] = count
        for k in range(count):
            fields = _code(int(rng.integers(1, people + 1)), T - int(rng.integers(1, 2_000)))
            variant = kind.split("_", 1)[1]
            if variant == "wrong_field_count":
                fields = fields + ["unexpected"] if k % 2 == 0 else fields[:-1]
            elif variant == "invalid_encoding":
                fields[3] = "Low back pain (Ren" + BAD_BYTE + "e)"
            elif variant == "missing_required":
                fields[(2, 4)[k % 2]] = ""
            elif variant == "unparseable_date":
                fields[4] = f"31/02/{fields[4][:4]}" if k % 2 == 0 else f"{fields[4][:4]}-02-30"
            elif variant == "unmapped_system":
                fields[1] = "icd10"
            elif variant == "unknown_patient":
                fields[0] = _pid(unknown_pid + count + k)
            p.put("codes", _line(fields), kind)
    # The extract was cut off mid-row: the last contacts line has four fields and no newline.
    rid, pid, received = seen.row(int(rng.integers(0, seen.height)))
    cut = _contact(p.new("cid"), rid, pid, T - 1)
    tail = Junk("contacts", contacts.height, _line(cut[:3] + [cut[3][:7]], newline=False), "wrong_field_count",
                "contact_truncated_last_line")
    counts["contact_truncated_last_line"] = 1
    return p.junk, tail, counts


def write_table(path: Path, columns: tuple[str, ...], frame: pl.DataFrame,
                render: Callable[[pl.DataFrame], pl.DataFrame], junk: list[Junk], tail: bytes = b"",
                tail_is_row: bool = False) -> tuple[list[int], int]:
    """Write header, ``frame`` rendered by ``render``, and ``junk`` lines at their positions.

    ``tail`` is written last as raw bytes (blank lines, or a truncated record when
    ``tail_is_row``). Returns the source_row of each junk line (in ``junk``'s order) and
    the number of data rows in the file.
    """
    order = sorted(range(len(junk)), key=lambda i: junk[i].pos)  # stable: equal positions keep plan order
    rows = [0] * len(junk)
    written = 0  # records so far
    cursor = 0  # clean rows so far
    with path.open("wb") as fh:
        fh.write((",".join(columns) + "\n").encode("utf-8"))

        def clean_until(stop: int) -> None:
            nonlocal cursor, written
            while cursor < stop:
                end = min(stop, cursor + CHUNK_ROWS)
                chunk = render(frame.slice(cursor, end - cursor))
                if chunk.columns != list(columns):
                    raise ValueError(f"{path.name}: rendered columns {chunk.columns} differ from {list(columns)}")
                chunk.write_csv(fh, include_header=False, date_format=DATE_FORMAT, datetime_format=DATETIME_FORMAT)
                written += end - cursor
                cursor = end

        for i in order:
            clean_until(junk[i].pos)
            fh.write(junk[i].line)
            written += 1
            rows[i] = written
        clean_until(frame.height)
        fh.write(tail)
        if tail_is_row:
            written += 1
    return rows, written
