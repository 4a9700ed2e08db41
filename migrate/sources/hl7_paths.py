"""HL7 v2 field paths: the ``column:`` values of a mapping profile's HL7 tables.

Grammar, numbers 1-based as the HL7 standard counts; ``[n]``, ``[selector]``, ``.C`` and
``.S`` are optional::

    SEG[n]-F[selector].C.S

    PID-7                  field 7, first repetition, components joined as in the message
    PID-5.1                component 1 of the first repetition
    PID-11.1.1             subcomponent 1 of component 1
    PID-3[type=NH].1       the first repetition whose CX.5 (identifier type) is NH
    PID-3[authority=NHS].1 the first repetition whose CX.4.1 (assigning authority) is NHS
    PID-3[5=MR].1          the first repetition whose component 5 equals MR (any component)
    PID-3[*]               every repetition, joined with ";" (list fields), blank ones left
                           out; PID-3[*].1 joins component 1 of every repetition
    AIL[2]-3.1             the second AIL segment of the message (default: the first)

MSH is numbered as the standard does: MSH-1 is the field separator and MSH-2 the encoding
characters (neither has components), so MSH-9 is the eighth ``|``-separated item after the
segment name. Selector values are compared with the component as written (before escape
decoding); identifier types and authorities never contain escapes.

A value is then escape-decoded with the message's own encoding characters (``\\F\\ \\S\\
\\T\\ \\R\\ \\E\\``; other escapes such as ``\\.br\\`` or ``\\X..\\`` are left as written). An
empty value (field, component or segment not sent) becomes null; HL7's explicit null ``""``
stays ``""``, and a field sent as ``""`` gives ``""`` for every path into it (its
components and repetitions are deleted with it). In an update the two differ: not sent
keeps the current value, ``""`` deletes it (``migrate.updates``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache

__all__ = ["Encoding", "Hl7Path", "Selector", "STANDARD", "decode_escapes", "extract", "is_blank", "parse_path"]

_PATH = re.compile(
    r"^(?P<seg>[A-Z][A-Z0-9]{2})(?:\[(?P<occ>[^\]]*)\])?-(?P<field>\d+)(?:\[(?P<sel>[^\]]*)\])?"
    r"(?:\.(?P<comp>\d+)(?:\.(?P<sub>\d+))?)?$"
)
_MATCH = re.compile(r"^(?P<key>type|authority|\d+)=(?P<value>[^\]=]+)$")
HL7_NULL = '""'


@dataclass(frozen=True)
class Encoding:
    """A message's delimiters (MSH-1 and MSH-2)."""

    field: str = "|"
    component: str = "^"
    repetition: str = "~"
    escape: str = "\\"
    subcomponent: str = "&"

    @property
    def msh_2(self) -> str:
        return self.component + self.repetition + self.escape + self.subcomponent


STANDARD = Encoding()


@dataclass(frozen=True)
class Selector:
    """Which repetitions of a field a path takes: all of them, or the first that matches."""

    all: bool = False
    component: int = 0  # 1-based component compared (match selectors)
    subcomponent: int | None = None  # compare only this subcomponent of it
    value: str = ""


@dataclass(frozen=True)
class Hl7Path:
    """One parsed path; ``text`` is the profile's string (the output column's name)."""

    text: str
    segment: str
    occurrence: int  # 1-based occurrence of the segment in the message
    field: int
    selector: Selector | None
    component: int | None
    subcomponent: int | None

    @property
    def field_index(self) -> int:
        """Index of the field in the segment line split on the field separator."""
        return self.field - 1 if self.segment == "MSH" else self.field


@lru_cache(maxsize=4096)
def parse_path(text: str) -> Hl7Path:
    """Parse a profile's HL7 path; ValueError saying what is wrong and what is expected."""
    m = _PATH.match(text.strip()) if isinstance(text, str) else None
    if m is None:
        raise ValueError(
            "expected SEG-F, SEG-F.C or SEG-F.C.S (e.g. PID-5.1), optionally SEG[n]-F for the n-th segment and "
            "a selector after the field: [type=NH], [authority=NHS], [N=value] or [*]")
    seg, occ_text, sel_text = m["seg"], m["occ"], m["sel"]
    occurrence = 1
    if occ_text is not None:
        if not occ_text.isdigit() or int(occ_text) < 1:
            raise ValueError(f"segment occurrence [{occ_text}] must be a number from 1 (e.g. AIL[2]-3)")
        occurrence = int(occ_text)
    field = int(m["field"])
    comp = int(m["comp"]) if m["comp"] else None
    sub = int(m["sub"]) if m["sub"] else None
    if field < 1 or (comp is not None and comp < 1) or (sub is not None and sub < 1):
        raise ValueError("field, component and subcomponent numbers start at 1")
    if seg == "MSH" and field <= 2 and (sel_text is not None or comp is not None):
        raise ValueError("MSH-1 and MSH-2 are the separators: they have no repetitions or components")
    selector = _selector(sel_text) if sel_text is not None else None
    return Hl7Path(text, seg, occurrence, field, selector, comp, sub)


def _selector(text: str) -> Selector:
    if text == "*":
        return Selector(all=True)
    m = _MATCH.match(text)
    if m is None:
        raise ValueError(f"selector [{text}] must be [*], [type=CODE], [authority=CODE] or [N=value]")
    key, value = m["key"], m["value"]
    if key == "type":
        return Selector(component=5, value=value)
    if key == "authority":
        return Selector(component=4, subcomponent=1, value=value)
    if int(key) < 1:
        raise ValueError(f"selector [{text}]: component numbers start at 1")
    return Selector(component=int(key), value=value)


def is_blank(value: str | None) -> bool:
    """True for a missing, empty or explicit-null (``""``) value."""
    return value is None or value == "" or value == HL7_NULL


@lru_cache(maxsize=64)
def _escape_pattern(enc: Encoding) -> re.Pattern[str]:
    e = re.escape(enc.escape)
    return re.compile(f"{e}([FSTRE]){e}")


def decode_escapes(value: str, enc: Encoding = STANDARD) -> str:
    """Decode the delimiter escapes \\F\\ \\S\\ \\T\\ \\R\\ \\E\\ (left to right, as HL7 reads them)."""
    if enc.escape not in value:
        return value
    table = {"F": enc.field, "S": enc.component, "T": enc.subcomponent, "R": enc.repetition, "E": enc.escape}
    return _escape_pattern(enc).sub(lambda m: table[m.group(1)], value)


def _item(parts: list[str], index: int) -> str | None:
    """The 1-based ``index``-th item of ``parts`` or None."""
    return parts[index - 1] if 0 < index <= len(parts) else None


def _narrow(rep: str, path: Hl7Path, enc: Encoding) -> str | None:
    if path.component is None:
        return rep
    comp = _item(rep.split(enc.component), path.component)
    if comp is None or path.subcomponent is None:
        return comp
    return _item(comp.split(enc.subcomponent), path.subcomponent)


def _matches(rep: str, sel: Selector, enc: Encoding) -> bool:
    comp = _item(rep.split(enc.component), sel.component)
    if comp is not None and sel.subcomponent is not None:
        comp = _item(comp.split(enc.subcomponent), sel.subcomponent)
    return comp == sel.value


def extract(segments: list[list[str]], path: Hl7Path, enc: Encoding = STANDARD) -> str | None:
    """The value of ``path`` in one message (the reference, per-message implementation).

    ``segments`` are the message's segment lines split on the field separator, in order,
    with MSH as written (its item 1 is MSH-2). Returns the decoded value, ``""`` when it is
    HL7's explicit null, or None when it was not sent.
    """
    seen = 0
    fields: list[str] | None = None
    for seg in segments:
        if seg[0] == path.segment:
            seen += 1
            if seen == path.occurrence:
                fields = seg
                break
    if fields is None:
        return None
    if path.segment == "MSH" and path.field == 1:
        return enc.field
    index = path.field_index
    if index >= len(fields):
        return None
    raw = fields[index]
    if path.segment == "MSH" and path.field == 2:
        return None if is_blank(raw) else raw
    if raw == HL7_NULL:
        return HL7_NULL  # the whole field deleted: every component and repetition with it
    reps = raw.split(enc.repetition)
    sel = path.selector
    value: str | None
    if sel is not None and sel.all:
        parts = [_narrow(r, path, enc) for r in reps]
        kept = [p for p in parts if p is not None and not is_blank(p)]
        value = ";".join(kept) if kept else None
    elif sel is not None:
        chosen = next((r for r in reps if _matches(r, sel, enc)), None)
        value = None if chosen is None else _narrow(chosen, path, enc)
    else:
        value = _narrow(reps[0], path, enc)
    if value is None or value == "":
        return None
    return decode_escapes(value, enc)
