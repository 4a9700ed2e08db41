"""What a valid HL7 v2 message is, decided by hl7apy's message structures plus datatype checks.

hl7apy (1.3.5) is the judge of structure, but not wholesale: its strict level rejects real
NHS habits (an alphanumeric ODS code in XON.3, ``""`` in a telephone field, MSH-9 without
its structure component), and its ``validate()`` neither checks timestamp values nor
notices a segment in the wrong place (its parser silently drops a segment that does not
fit the structure). So a message is valid when, in this order of precedence:

1. ``hl7_malformed``: it starts with an MSH segment whose delimiters hl7apy accepts (and
   that are distinct, not letters, digits or spaces), MSH-9.1, MSH-9.2 and MSH-12 are
   present, and every line begins with a segment name;
2. ``hl7_unsupported``: MSH-12 is 2.3, 2.3.1, 2.4, 2.5 or 2.5.1, the message type and event
   are in that version's HL7 tables 0076/0003 (where hl7apy ships them) and resolve to a
   message structure hl7apy defines for the version: MSH-9.3 when given, else
   ``TYPE_EVENT`` when hl7apy has it, else the standard's table 0354 (``EVENT_STRUCTURES``);
3. ``hl7_structure``: hl7apy's ``validate()`` of the message parsed against that structure
   reports no missing required segment or group and no exceeded repetition (its words are
   the reason), and the segment sequence, Z-segments aside, matches the structure's
   grammar in order (an automaton built from hl7apy's reference tree);
4. ``hl7_datatype``: every TS, DT and NM field, and the TS components 4 and 5 (start, end)
   of TQ fields, of the segments the profiles map (``CHECKED_SEGMENTS``: MSH EVN PID PD1
   MRG PV1 RF1 PRD SCH TQ1 AIS AIG AIL AIP) holds a value of its type, in every occurrence
   and repetition; the datatypes come from hl7apy's field definitions for the version
   (``datatype_checks``). Empty and ``""`` are allowed. Required *fields* are not checked:
   the profile's ``required:`` says which ones the migration needs.

Structure verdicts depend only on (version, structure, segment names), so the bulk reader
judges each distinct sequence once (``judge_structure``, cached) on a skeleton of names;
``validate_full`` is the per-message judge: hl7apy parses the real text, finds the fields
it checks, and the test suite proves both give the same verdict on the whole corpus.
Reasons never quote field values, only field names, segment names and MSH codes.
"""

from __future__ import annotations

import importlib
import os
import re
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from types import ModuleType
from typing import Any
from zoneinfo import ZoneInfo

import polars as pl

from migrate.canonical import LOCAL_TIMEZONE
from migrate.sources.hl7_paths import HL7_NULL, Encoding

__all__ = [
    "CHECKED_SEGMENTS", "Check", "EVENT_STRUCTURES", "Msh", "SUPPORTED_VERSIONS", "Verdict", "datatype_checks",
    "is_valid_value", "judge_structure", "message_lines", "normalise", "parse_msh", "resolve_structure",
    "split_messages", "ts_expr", "ts_to_datetime", "valid_expr", "validate_full",
]

SUPPORTED_VERSIONS = ("2.3", "2.3.1", "2.4", "2.5", "2.5.1")
ENVELOPES = frozenset({"FHS", "BHS", "BTS", "FTS"})
BLANK_CHARS = " \t\x1a\x00"
CHECKED_SEGMENTS = ("MSH", "EVN", "PID", "PD1", "MRG", "PV1", "RF1", "PRD", "SCH", "TQ1", "AIS", "AIG", "AIL", "AIP")
CHECKED_TYPES = ("TS", "DT", "NM")

# Table 0354 (message structure per event) for the events hl7apy has no TYPE_EVENT structure
# of: candidates in order, the first hl7apy defines for the version wins (v2.3/2.3.1 have no
# ADT_A05, so A28/A31 fall back to ADT_A01 there, as those versions' table 0354 says).
EVENT_STRUCTURES: dict[tuple[str, str], tuple[str, ...]] = {
    **{("ADT", e): ("ADT_A01",) for e in ("A04", "A08", "A13")},
    **{("ADT", e): ("ADT_A05", "ADT_A01") for e in ("A05", "A14", "A28", "A31")},
    ("ADT", "A07"): ("ADT_A06",),
    **{("ADT", e): ("ADT_A09",) for e in ("A10", "A11")},
    ("ADT", "A12"): ("ADT_A12", "ADT_A09"),
    **{("ADT", e): ("ADT_A21",) for e in ("A22", "A23", "A25", "A26", "A27", "A29", "A32", "A33")},
    **{("ADT", e): ("ADT_A30",) for e in ("A34", "A35", "A36", "A46", "A47", "A48", "A49")},
    **{("ADT", e): ("ADT_A39",) for e in ("A40", "A41", "A42")},
    ("ADT", "A44"): ("ADT_A43",),
    ("ADT", "A51"): ("ADT_A50",),
    **{("ADT", e): ("ADT_A52",) for e in ("A53", "A55")},
    ("ADT", "A62"): ("ADT_A61",),
    **{("REF", e): ("REF_I12",) for e in ("I13", "I14", "I15")},
    **{("SIU", f"S{n}"): ("SIU_S12",) for n in (*range(13, 25), 26)},
}

_SEGMENT_START = re.compile(r"^[A-Z][A-Z0-9]{2}$")
_TS = (r"[1-9][0-9]{3}(?:(?:0[1-9]|1[0-2])(?:(?:0[1-9]|[12][0-9]|3[01])"  # YYYY[MM[DD
       r"(?:(?:[01][0-9]|2[0-3])(?:[0-5][0-9](?:[0-5][0-9](?:\.[0-9]+)?)?)?)?)?)?"  # [HH[MM[SS[.S+]]]]]]
       r"(?:[+-](?:[01][0-9]|2[0-3])[0-5][0-9])?")  # [+/-ZZZZ]
_DT = r"[1-9][0-9]{3}(?:(?:0[1-9]|1[0-2])(?:0[1-9]|[12][0-9]|3[01])?)?"
_NM = r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)"
PATTERNS = {"TS": f"^{_TS}$", "DT": f"^{_DT}$", "NM": f"^{_NM}$"}
_COMPILED = {k: re.compile(v) for k, v in PATTERNS.items()}
TYPE_WORDS = {"TS": "timestamp", "DT": "date", "NM": "number"}

Verdict = tuple[str, str]  # (reason_code, reason)


# --- text into messages ------------------------------------------------------------------

def normalise(text: str) -> str:
    """One line per segment, ``\\n`` separated: MLLP block characters become blank lines,
    CR, LF and CRLF all end a segment (a CR-terminated file saved as text, ``\\r\\r\\n``,
    counts as one line end)."""
    return (text.replace("\x0b", "\n").replace("\x1c", "\n").replace("\r\r\n", "\n")
            .replace("\r\n", "\n").replace("\r", "\n"))


def split_messages(text: str) -> list[list[str]]:
    """The messages of a (normalised or raw) file text, each as its segment lines.

    A message starts at each MSH line and after each blank line (or MLLP frame edge); batch
    envelope lines (FHS, BHS, BTS, FTS) and blank lines belong to no message. A block of
    lines that does not start with MSH is returned too: it is a malformed message.
    """
    messages: list[list[str]] = []
    current: list[str] | None = None
    for line in normalise(text).split("\n"):
        if line.strip(BLANK_CHARS) == "" or line[:3] in ENVELOPES:
            current = None
            continue
        if current is None or line.startswith("MSH"):
            current = []
            messages.append(current)
        current.append(line.rstrip(" \t"))
    return messages


def message_lines(text: str) -> list[str]:
    """The segment lines of one message's text (MLLP characters, blank and envelope lines dropped)."""
    return [line.rstrip(" \t") for line in normalise(text).split("\n")
            if line.strip(BLANK_CHARS) != "" and line[:3] not in ENVELOPES]


# --- MSH -----------------------------------------------------------------------------------

@dataclass(frozen=True)
class Msh:
    """What the reader needs from MSH: delimiters, type, event, structure, version, control id."""

    encoding: Encoding
    fields: tuple[str, ...]  # the MSH line split on the field separator (item 1 is MSH-2)
    message_type: str
    event: str
    structure: str | None  # MSH-9.3, as given
    version: str
    control_id: str | None

    def field(self, n: int) -> str:
        """MSH-n as written (n >= 2)."""
        return self.fields[n - 1] if n - 1 < len(self.fields) else ""


def parse_msh(line: str) -> Msh | Verdict:
    """The MSH of a message, or the ``hl7_malformed`` verdict saying why it is unusable."""
    from hl7apy.exceptions import HL7apyException
    from hl7apy.parser import get_message_info

    if not line.startswith("MSH"):
        return "hl7_malformed", "the message does not start with an MSH segment"
    try:
        get_message_info(line)
    except HL7apyException as exc:
        return "hl7_malformed", f"MSH-1/MSH-2 delimiters: {exc or type(exc).__name__}"
    sep = line[3]
    msh2 = line[4:].split(sep, 1)[0]
    chars = sep + msh2
    if any(c.isalnum() or c.isspace() for c in chars) or len(set(chars)) != 5:
        return "hl7_malformed", "MSH-1/MSH-2 delimiters must be five distinct characters, not letters, digits or spaces"
    enc = Encoding(sep, msh2[0], msh2[1], msh2[2], msh2[3])
    fields = tuple(line.split(sep))
    msh9 = fields[8].split(enc.component) if len(fields) > 8 else [""]
    mtype = msh9[0].strip()
    event = msh9[1].strip() if len(msh9) > 1 else ""
    structure = msh9[2].strip() if len(msh9) > 2 and msh9[2].strip() else None
    version = fields[11].split(enc.component)[0].strip() if len(fields) > 11 else ""
    control = fields[9] if len(fields) > 9 and fields[9] not in ("", HL7_NULL) else None
    if not mtype or not event:
        return "hl7_malformed", "MSH-9 has no message type and trigger event"
    if not version:
        return "hl7_malformed", "MSH-12 (version) is empty"
    return Msh(enc, fields, mtype, event, structure, version, control)


# --- version, event and structure ------------------------------------------------------------

def _library(version: str) -> ModuleType:
    return importlib.import_module("hl7apy.v" + version.replace(".", "_"))


def _table(version: str, table: str) -> tuple[str, ...] | None:
    tables: dict[str, Any] = _library(version).ELEMENTS.get("Table") or {}
    entry = tables.get(table)
    return None if entry is None else tuple(entry[1])


@lru_cache(maxsize=1024)
def resolve_structure(version: str, message_type: str, event: str, given: str | None) -> str | Verdict:
    """The hl7apy message structure of (version, type, event[, MSH-9.3]), or ``hl7_unsupported``."""
    if version not in SUPPORTED_VERSIONS:
        return "hl7_unsupported", f"version {version!r} is not supported (2.3 to 2.5.1)"
    known = _library(version).MESSAGES
    types, events = _table(version, "HL70076"), _table(version, "HL70003")
    if types is not None and message_type not in types:
        return "hl7_unsupported", f"message type {message_type!r} is not in HL7 table 0076 of v{version}"
    if events is not None and event not in events:
        return "hl7_unsupported", f"event {event!r} is not in HL7 table 0003 of v{version}"
    if given is not None:
        if given in known:
            return given
        return "hl7_unsupported", f"message structure {given!r} (MSH-9.3) is not defined in v{version}"
    for candidate in (f"{message_type}_{event}", *EVENT_STRUCTURES.get((message_type, event), ())):
        if candidate in known:
            return candidate
    return "hl7_unsupported", f"no message structure of v{version} takes {message_type}^{event}"


# --- structure: hl7apy's validate() and the segment grammar --------------------------------

class _Grammar:
    """A Thompson automaton over segment names, built from an hl7apy reference tree.

    Backtracking regular expressions over nested optional groups (SIU resources) can take
    exponential time on a long sequence that fails; the automaton is linear.
    """

    def __init__(self, reference: tuple[Any, ...]) -> None:
        self.kind: list[str] = []  # "seg", "split" or "accept"
        self.name: list[str] = []
        self.next: list[list[int]] = []
        accept = self._state("accept")
        self.start = self._sequence(reference[0], reference[1], accept)

    def _state(self, kind: str, name: str = "", nxt: list[int] | None = None) -> int:
        self.kind.append(kind)
        self.name.append(name)
        self.next.append(nxt or [])
        return len(self.kind) - 1

    def _sequence(self, kind: str, children: Sequence[Any], out: int) -> int:
        if kind == "choice":
            return self._state("split", nxt=[self._repeat(c, out) for c in children])
        for child in reversed(children):
            out = self._repeat(child, out)
        return out

    def _once(self, child: Any, out: int) -> int:
        name, ref, _, kind = child
        if kind == "SEG":
            return self._state("seg", name, [out])
        return self._sequence(ref[0], ref[1], out)

    def _repeat(self, child: Any, out: int) -> int:
        low, high = child[2]
        start = out
        if high == -1:
            loop = self._state("split")
            self.next[loop] = [self._once(child, loop), out]
            start = loop
        else:
            for _ in range(high - low):
                start = self._state("split", nxt=[self._once(child, start), out])
        for _ in range(low):
            start = self._once(child, start)
        return start

    def _closure(self, states: set[int]) -> set[int]:
        todo, seen = list(states), set(states)
        while todo:
            s = todo.pop()
            if self.kind[s] == "split":
                for t in self.next[s]:
                    if t not in seen:
                        seen.add(t)
                        todo.append(t)
        return seen

    def mismatch(self, names: Sequence[str]) -> tuple[int, set[str]] | None:
        """None when ``names`` fit; else (0-based position of the first misfit, or len(names) when
        the message ends early, and the segment names that were expected there)."""
        current = self._closure({self.start})
        for i, name in enumerate(names):
            nxt = {self.next[s][0] for s in current if self.kind[s] == "seg" and self.name[s] == name}
            if not nxt:
                return i, {self.name[s] for s in current if self.kind[s] == "seg"}
            current = self._closure(nxt)
        if any(self.kind[s] == "accept" for s in current):
            return None
        return len(names), {self.name[s] for s in current if self.kind[s] == "seg"}


@lru_cache(maxsize=256)
def _grammar(version: str, structure: str) -> _Grammar:
    return _Grammar(_library(version).MESSAGES[structure])


def _hl7apy_encoding(enc: Encoding) -> dict[str, str]:
    return {"FIELD": enc.field, "COMPONENT": enc.component, "REPETITION": enc.repetition, "ESCAPE": enc.escape,
            "SUBCOMPONENT": enc.subcomponent, "SEGMENT": "\r", "GROUP": "\r"}


def _hl7apy_parse(version: str, structure: str, text: str, enc: Encoding) -> Any:
    from hl7apy.consts import VALIDATION_LEVEL
    from hl7apy.core import Message
    from hl7apy.parser import parse_segments

    level = VALIDATION_LEVEL.TOLERANT
    chars = _hl7apy_encoding(enc)
    msg = Message(name=structure, version=version, validation_level=level, encoding_chars=chars)
    msg.children = parse_segments(text, version, chars, level, msg.reference, find_groups=True)
    return msg


_STRUCTURAL = re.compile(r"^(Missing required child|Child limit exceeded) (\S+)\.(\S+)$")


def _hl7apy_structure_errors(version: str, structure: str, msg: Any) -> list[str]:
    """hl7apy's validate() errors about segments and groups (not fields, which NHS habits break)."""
    from hl7apy.validation import Validator

    groups = set(_library(version).GROUPS) | {structure}
    fd, report = tempfile.mkstemp(suffix=".txt")
    os.close(fd)
    try:
        try:
            Validator.validate(msg, report_file=report)
        except Exception:  # noqa: BLE001 - the report file lists every error; only some are ours
            pass
        with open(report, encoding="utf-8") as fh:
            lines = [line.rstrip("\n")[len("Error: "):] for line in fh if line.startswith("Error: ")]
    finally:
        os.unlink(report)
    kept = []
    for line in lines:
        m = _STRUCTURAL.match(line)
        if (m and m.group(2) in groups) or line.startswith(("Invalid children detected for <Message",
                                                            "Invalid children detected for <Group")):
            kept.append(line)
    return kept


def _grammar_reason(version: str, structure: str, names: Sequence[str]) -> str | None:
    where = [i for i, n in enumerate(names) if not n.startswith("Z")]  # Z-segments may go anywhere
    miss = _grammar(version, structure).mismatch([names[i] for i in where])
    if miss is None:
        return None
    at, expected = miss
    wanted = ", ".join(sorted(expected)) or "no further segment"
    if at == len(where):
        return f"{structure} (v{version}) needs one of {wanted} after the last segment"
    return (f"segment {where[at] + 1} ({names[where[at]]}) is out of place for {structure} "
            f"(v{version}): expected {wanted}")


@lru_cache(maxsize=4096)
def judge_structure(version: str, structure: str, names: tuple[str, ...]) -> str | None:
    """The structure reason for a sequence of segment names (None when it fits), judged on a
    skeleton message: hl7apy's validate() first, in its words, then the segment grammar."""
    skeleton = "\r".join(("MSH|^~\\&", *names[1:]))
    errors = _hl7apy_structure_errors(version, structure, _hl7apy_parse(version, structure, skeleton, Encoding()))
    if errors:
        return "hl7apy: " + errors[0]
    return _grammar_reason(version, structure, names)


# --- datatypes -----------------------------------------------------------------------------

@dataclass(frozen=True)
class Check:
    """One datatype check: every repetition of SEG-F (component C, first subcomponent, if set)."""

    segment: str
    field: int
    component: int | None
    datatype: str  # TS, DT or NM

    @property
    def label(self) -> str:
        return f"{self.segment}-{self.field}" + (f".{self.component}" if self.component else "")

    @property
    def reason(self) -> str:
        return f"{self.label} is not a valid {self.datatype} ({TYPE_WORDS[self.datatype]})"


@lru_cache(maxsize=8)
def datatype_checks(version: str) -> tuple[Check, ...]:
    """The checks for ``version``, in the order their reasons take precedence: every TS, DT and
    NM field of CHECKED_SEGMENTS per hl7apy's field definitions, and TQ components 4 and 5."""
    lib = _library(version)
    checks: list[Check] = []
    for seg in CHECKED_SEGMENTS:
        if seg not in lib.SEGMENTS:
            continue
        for i, child in enumerate(lib.SEGMENTS[seg][1], start=1):
            datatype = lib.FIELDS[child[0]][2]
            if datatype in CHECKED_TYPES:
                checks.append(Check(seg, i, None, datatype))
            elif datatype == "TQ":
                checks += [Check(seg, i, 4, "TS"), Check(seg, i, 5, "TS")]
    return tuple(checks)


def _calendar_ok(digits: str) -> bool:
    date = digits[:8] if len(digits) >= 8 else digits + ("0101" if len(digits) == 4 else "01")
    try:
        datetime.strptime(date, "%Y%m%d")
    except ValueError:
        return False
    return True


def is_valid_value(value: str | None, datatype: str) -> bool:
    """Whether one component value is a valid ``datatype`` (empty and ``""`` are)."""
    if value is None or value == "" or value == HL7_NULL:
        return True
    if not _COMPILED[datatype].match(value):
        return False
    digits = re.match(r"^[0-9]{4,8}", value)
    return datatype == "NM" or (digits is not None and _calendar_ok(digits.group(0)))


def valid_expr(value: pl.Expr, datatype: str) -> pl.Expr:
    """The vectorised ``is_valid_value`` of a String expression (null is valid)."""
    blank = value.is_null() | (value == "") | (value == HL7_NULL)
    shaped = value.str.contains(PATTERNS[datatype])
    if datatype == "NM":
        return blank | shaped.fill_null(False)
    digits = value.str.extract(r"^([0-9]{4,8})", 1)
    n = digits.str.len_bytes()
    date = (pl.when(n == 4).then(digits + "0101").when(n == 6).then(digits + "01").otherwise(digits.str.slice(0, 8)))
    calendar = date.str.strptime(pl.Date, "%Y%m%d", strict=False).is_not_null()
    return blank | (shaped & calendar).fill_null(False)


def ts_to_datetime(value: str | None) -> datetime | None:
    """An HL7 TS (already valid) as an instant: a naive datetime in UTC. A value with an
    offset is converted with it; one without is a wall-clock time in ``LOCAL_TIMEZONE``
    (an hour the clocks skip is read as UTC; an hour they repeat, as its first occurrence)."""
    if value is None or value == "" or value == HL7_NULL:
        return None
    m = re.match(r"^([0-9]{4,14})(?:\.([0-9]+))?(?:([+-])([0-9]{2})([0-9]{2}))?$", value)
    if m is None:
        return None
    digits = m.group(1)
    digits += "0101000000"[len(digits) - 4:] if len(digits) < 8 else "000000"[: 14 - len(digits)]
    at = datetime.strptime(digits[:14], "%Y%m%d%H%M%S")
    if m.group(2):
        at += timedelta(microseconds=int(m.group(2)[:6].ljust(6, "0")))
    if m.group(3):
        offset = timedelta(hours=int(m.group(4)), minutes=int(m.group(5)))
        return at - offset if m.group(3) == "+" else at + offset
    local = at.replace(tzinfo=ZoneInfo(LOCAL_TIMEZONE))
    if local.astimezone(UTC).astimezone(local.tzinfo).replace(tzinfo=None) != at:
        return at  # a wall-clock time that does not exist locally (clocks went forward)
    return local.astimezone(UTC).replace(tzinfo=None)


def ts_expr(value: pl.Expr) -> pl.Expr:
    """The vectorised ``ts_to_datetime`` (Datetime us, UTC; null where blank or invalid)."""
    parts = value.str.extract_groups(r"^([0-9]{4,14})(?:\.([0-9]+))?(?:([+-])([0-9]{2})([0-9]{2}))?$")
    digits = parts.struct.field("1")
    n = digits.str.len_bytes()
    padded = (pl.when(n == 4).then(digits + "0101000000").when(n == 6).then(digits + "01000000")
              .otherwise(digits.str.pad_end(14, "0")))
    at = padded.str.strptime(pl.Datetime("us"), "%Y%m%d%H%M%S", strict=False)
    micros = parts.struct.field("2").str.slice(0, 6).str.pad_end(6, "0").cast(pl.Int64, strict=False).fill_null(0)
    minutes = (parts.struct.field("4").cast(pl.Int64, strict=False) * 60
               + parts.struct.field("5").cast(pl.Int64, strict=False)).fill_null(0)
    sign = pl.when(parts.struct.field("3") == "-").then(-1).otherwise(1)
    at = at + pl.duration(microseconds=micros)
    local = (at.dt.replace_time_zone(LOCAL_TIMEZONE, ambiguous="earliest", non_existent="null")
             .dt.convert_time_zone("UTC").dt.replace_time_zone(None))
    return (pl.when(parts.struct.field("3").is_not_null()).then(at - pl.duration(minutes=sign * minutes))
            .otherwise(pl.coalesce(local, at)))


def _check_values(er7: str, check: Check, enc: Encoding) -> str:
    """The value a check tests in one field repetition: component 1 of a TS field (TS.1, the
    time; TS.2 is its precision), the whole of a DT or NM field, or the first subcomponent of
    a TQ component."""
    if check.component is not None:
        comps = er7.split(enc.component)
        comp = comps[check.component - 1] if check.component <= len(comps) else ""
        return comp.split(enc.subcomponent)[0]
    if check.datatype == "TS":
        return er7.split(enc.component)[0]
    return er7


# --- the per-message judge -------------------------------------------------------------------

def _segments_of(element: Any) -> Iterator[Any]:
    for child in element.children:
        if child.classname == "Segment":
            yield child
        else:
            yield from _segments_of(child)


def _repetitions(segment: Any, name: str) -> list[Any]:
    try:
        return list(segment.children.get(name))
    except Exception:  # noqa: BLE001 - hl7apy raises when a segment has no such child
        return []


def validate_full(text: str) -> Verdict | None:
    """Judge one message's text the slow way: hl7apy parses it whole. Returns (reason_code,
    reason) or None when valid. The bulk reader must agree with it on every message."""
    lines = message_lines(text)
    if not lines:
        return "hl7_malformed", "the message has no segments"
    msh = parse_msh(lines[0])
    if isinstance(msh, tuple):
        return msh
    names = [line[:3] for line in lines]
    for i, line in enumerate(lines[1:], start=2):
        if not _SEGMENT_START.match(line[:3]) or (len(line) > 3 and line[3] != msh.encoding.field):
            return "hl7_malformed", f"line {i} of the message does not begin with a segment name"
    structure = resolve_structure(msh.version, msh.message_type, msh.event, msh.structure)
    if isinstance(structure, tuple):
        return structure
    parsed = _hl7apy_parse(msh.version, structure, "\r".join(lines), msh.encoding)
    errors = _hl7apy_structure_errors(msh.version, structure, parsed)
    if errors:
        return "hl7_structure", "hl7apy: " + errors[0]
    reason = _grammar_reason(msh.version, structure, names)
    if reason is not None:
        return "hl7_structure", reason
    segments = list(_segments_of(parsed))
    for check in datatype_checks(msh.version):
        for seg in segments:
            if seg.name != check.segment:
                continue
            for rep in _repetitions(seg, f"{check.segment}_{check.field}"):
                if not is_valid_value(_check_values(rep.to_er7(), check, msh.encoding), check.datatype):
                    return "hl7_datatype", check.reason
    return None
