"""Reading a file of HL7 v2 messages into one row per valid message, the rest quarantined.

A file holds messages of versions 2.3 to 2.5.1, with CR-, LF- or CRLF-separated segments,
separated by blank lines or MLLP framing (0x0B ... 0x1C 0x0D), optionally inside FHS/BHS
batch envelopes (not messages, not rows). A message starts at each MSH segment and after
each blank line; a block of lines that does not start with MSH is a malformed message.
Bytes that are not UTF-8 are read as cp1252, line by line (never a crash).

hl7apy parses about 120 messages a second, so it judges but does not parse each message
(``hl7_validate`` says what valid means):

1. the file is read in chunks of about ``CHUNK_BYTES`` cut just before an MSH line, so
   memory stays flat in the size of the feed; each chunk's valid messages are written to a
   Parquet part in ``work_dir`` and ``messages`` scans the parts;
2. a chunk becomes one row per segment line (message index, segment name, text) in polars;
   fields, repetitions, components and subcomponents are split with polars string
   operations, for messages using the standard delimiters ``|^~\\&``;
3. each distinct (version, type, event, MSH-9.3) is resolved to an hl7apy structure once,
   and each distinct (version, structure, segment sequence) judged once by hl7apy and the
   structure grammar (``judge_structure``);
4. the datatype checks run vectorised over the non-blank checked fields only;
5. a message with other delimiters (or an unusable MSH) is judged by ``validate_full``, the
   slow per-message judge, and its values read by ``hl7_paths.extract``.

The test suite proves the fast path and ``validate_full`` give the same verdict, reason
code and reason on every message of the corpus, and that polars and ``extract`` read the
same values.
"""

from __future__ import annotations

import hashlib
import re
import shutil
from collections import deque
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from migrate.errors import ConfigError, InputError
from migrate.sources.hl7_paths import HL7_NULL, Hl7Path, Selector, decode_escapes, extract, parse_path
from migrate.sources.hl7_validate import (
    BLANK_CHARS,
    ENVELOPES,
    Check,
    datatype_checks,
    judge_structure,
    normalise,
    parse_msh,
    resolve_structure,
    ts_expr,
    ts_to_datetime,
    valid_expr,
    validate_full,
)
from migrate.staging import write_part

__all__ = ["CHUNK_BYTES", "Hl7Read", "MESSAGE_COLUMNS", "decode_bytes", "parse_path", "read_hl7", "validate_full"]

CHUNK_BYTES = 4 << 20  # per chunk in flight: ~100-150 MB of polars frames (benchmarks/hl7.md)
WORKERS = 2  # chunks in flight at once
STANDARD_MSH = "MSH|^~\\&|"
MESSAGE_COLUMNS: dict[str, pl.DataType] = {
    "source_file": pl.String(), "source_row": pl.Int64(), "control_id": pl.String(), "message_type": pl.String(),
    "event": pl.String(), "version": pl.String(), "sent_at": pl.Datetime("us"),
    # MSH-3 and MSH-4 as written, and a hash of the message's text: a control id is unique
    # per sending application and facility, and a repeat with the same text is a re-delivery
    "sending_app": pl.String(), "sending_facility": pl.String(), "content_hash": pl.UInt64(),
}
REJECTED_SCHEMA: dict[str, pl.DataType] = {
    "source_file": pl.String(), "source_row": pl.Int64(), "reason_code": pl.String(), "message": pl.String(),
    "raw": pl.String(),
}
_MARK = "\ufdd0"  # a Unicode noncharacter: never in text, marks a decoded escape for a moment
_SEGMENT_LINE = r"^[A-Z][A-Z0-9]{2}(?:\||$)"
_SURROGATES = re.compile(r"[^\n\r\x0b\x1c]*[\udc80-\udcff][^\n\r\x0b\x1c]*")


Rejected = tuple[int, str, str, "str | None", str]  # message index, reason code, reason, control id, raw


@dataclass(frozen=True)
class Hl7Read:
    """One HL7 file read: its valid messages (file order) and its rejected ones."""

    messages: pl.LazyFrame  # MESSAGE_COLUMNS + one String column per requested path
    rejected: pl.DataFrame  # source_file, source_row, reason_code, message, raw
    rows_read: int  # messages in the file, valid + rejected


# --- bytes to text chunks -----------------------------------------------------------------------

def decode_bytes(data: bytes) -> str:
    """Bytes as text: UTF-8, and any line that is not valid UTF-8 read as cp1252 (never fails)."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        text = data.decode("utf-8", "surrogateescape")
        return _SURROGATES.sub(lambda m: m.group(0).encode("utf-8", "surrogateescape").decode("cp1252", "replace"),
                               text)


def _cut(buf: bytes) -> int:
    """The start of the last MSH line in ``buf`` (0 when there is none after the first byte)."""
    return max(buf.rfind(b"\rMSH"), buf.rfind(b"\nMSH"), buf.rfind(b"\x0bMSH")) + 1


def _chunks(path: Path, size: int) -> Iterator[str]:
    """The file as normalised text chunks that each end where a message ends."""
    buf = b""
    first = True
    with path.open("rb") as fh:
        while True:
            data = fh.read(size)
            buf += data
            cut = _cut(buf) if data else len(buf)
            if cut > 0:
                text = decode_bytes(buf[:cut])
                buf = buf[cut:]
                yield normalise(text.removeprefix("\ufeff") if first else text)
                first = False
            if not data:
                return


# --- polars expressions -------------------------------------------------------------------------

def decode_expr(value: pl.Expr) -> pl.Expr:
    """Vectorised ``decode_escapes`` for the standard delimiters."""
    out = value.str.replace_all(r"\\([FSTRE])\\", _MARK + "$1")
    for code, char in (("F", "|"), ("S", "^"), ("T", "&"), ("R", "~"), ("E", "\\")):
        out = out.str.replace_all(_MARK + code, char, literal=True)
    return out


def _blank(value: pl.Expr) -> pl.Expr:
    return value.is_null() | (value == "") | (value == HL7_NULL)


def _nth(value: pl.Expr, sep: str, n: int) -> pl.Expr:
    """The 1-based ``n``-th ``sep``-separated part of ``value`` (null when there are fewer)."""
    return value.str.splitn(sep, n + 1).struct.field(f"field_{n - 1}")


def _narrow(rep: pl.Expr, component: int | None, subcomponent: int | None) -> pl.Expr:
    if component is None:
        return rep
    comp = _nth(rep, "^", component)
    return comp if subcomponent is None else _nth(comp, "&", subcomponent)


def _selected(field: pl.Expr, sel: Selector) -> pl.Expr:
    """The first repetition whose component (or its subcomponent) equals the selector's value.

    One regular expression instead of splitting every repetition: a repetition starts at the
    field's start or after ``~``, and ``[^~^]`` keeps a component inside its repetition.
    """
    before = r"(?:[^~^]*\^)" + "{" + str(sel.component - 1) + "}"
    comp = re.escape(sel.value)
    if sel.subcomponent is not None:
        comp = r"(?:[^~^&]*&)" + "{" + str(sel.subcomponent - 1) + "}" + comp + r"(?:&[^~^]*)?"
    return field.str.extract(r"(?:^|~)(" + before + comp + r"(?:\^[^~]*)?)(?:~|$)", 1)


def path_expr(fields: pl.Expr, path: Hl7Path) -> pl.Expr:
    """The value of ``path`` as written (escapes not decoded) from a segment's fields (a list
    column split on ``|``); ``finish_expr`` of it is the column's value."""
    if path.segment == "MSH" and path.field == 1:
        return pl.lit("|", dtype=pl.String)
    field = fields.list.get(path.field_index, null_on_oob=True)
    if path.segment == "MSH" and path.field == 2:
        return field
    sel = path.selector
    if sel is not None and sel.all:
        parts = field.str.split("~").list.eval(_narrow(pl.element(), path.component, path.subcomponent))
        value = parts.list.eval(pl.element().filter(~_blank(pl.element()))).list.join(";")
    elif sel is not None:
        value = _narrow(_selected(field, sel), path.component, path.subcomponent)
    else:
        value = _narrow(_nth(field, "~", 1), path.component, path.subcomponent)
    # A field sent as "" deletes the whole field: every component and repetition of it.
    return pl.when(field == HL7_NULL).then(pl.lit(HL7_NULL)).otherwise(value)


def finish_expr(value: pl.Expr) -> pl.Expr:
    """Empty (not sent) to null, escapes decoded; the explicit null ``""`` stays ``""``.
    Apply it to a materialised column: eager polars does not share the repeated
    sub-expression."""
    return pl.when(value.is_null() | (value == "")).then(None).otherwise(decode_expr(value))


# --- one chunk ----------------------------------------------------------------------------------

def _segments(text: str, offset: int) -> pl.DataFrame:
    """One row per segment line: msg (global 1-based message index), pos (line in message), seg, line."""
    lines = pl.DataFrame({"line": pl.Series([text], dtype=pl.String).str.split("\n").explode()})
    keep = ~((pl.col("line").str.strip_chars(BLANK_CHARS) == "") | pl.col("line").str.slice(0, 3).is_in(ENVELOPES))
    start = pl.col("keep") & (pl.col("line").str.starts_with("MSH") | ~pl.col("keep").shift(1, fill_value=False))
    idx = pl.int_range(pl.len(), dtype=pl.Int64)
    return (
        lines.with_columns(keep.alias("keep"))
        .with_columns(start.alias("start"))
        .filter(pl.col("keep"))
        .select((pl.col("start").cast(pl.Int64).cum_sum() + offset).alias("msg"),
                (idx - pl.when(pl.col("start")).then(idx).forward_fill() + 1).alias("pos"),
                pl.col("line").str.slice(0, 3).alias("seg"), pl.col("line").str.strip_chars_end(" \t"))
    )


def _heads(segs: pl.DataFrame) -> pl.DataFrame:
    """Per message: MSH values (standard delimiters only), the first non-segment line, names."""
    first = segs.filter(pl.col("pos") == 1).select("msg", "line")
    fields = pl.col("line").str.split("|")
    msh9 = fields.list.get(8, null_on_oob=True).str.split("^")

    def part(i: int) -> pl.Expr:
        return msh9.list.get(i, null_on_oob=True).str.strip_chars().fill_null("")

    heads = first.select(
        "msg",
        pl.col("line").str.starts_with(STANDARD_MSH).alias("fast"),
        part(0).alias("message_type"),
        part(1).alias("event"),
        pl.when(part(2) == "").then(None).otherwise(part(2)).alias("given"),
        fields.list.get(11, null_on_oob=True).str.split("^").list.first().str.strip_chars().fill_null("")
        .alias("version"),
        fields.list.get(9, null_on_oob=True).alias("control_raw"),
        fields.list.get(6, null_on_oob=True).str.split("^").list.first().alias("msh7"),
        _written(fields.list.get(2, null_on_oob=True)).alias("sending_app"),
        _written(fields.list.get(3, null_on_oob=True)).alias("sending_facility"),
    )
    bad_line = (segs.filter((pl.col("pos") > 1) & ~pl.col("line").str.contains(_SEGMENT_LINE))
                .group_by("msg").agg(pl.col("pos").min().alias("bad_line")))
    names = segs.group_by("msg").agg(pl.col("seg").str.join(",").alias("names"))  # rows are in line order
    return heads.join(bad_line, on="msg", how="left").join(names, on="msg", how="left")


def _written(value: pl.Expr) -> pl.Expr:
    """A header field as written, blank (empty or ``""``) as null."""
    return pl.when(_blank(value)).then(None).otherwise(value)


def _resolve(heads: pl.DataFrame) -> pl.DataFrame:
    """Adds ``structure`` and the verdict of the MSH, line, version/event and structure checks."""
    keys = heads.filter(pl.col("fast")).select("version", "message_type", "event", "given").unique()
    resolved = []
    for version, mtype, event, given in keys.iter_rows():
        r = resolve_structure(version, mtype, event, given) if mtype and event and version else None
        resolved.append((version, mtype, event, given, r if isinstance(r, str) else None,
                         r[0] if isinstance(r, tuple) else None, r[1] if isinstance(r, tuple) else None))
    rs = pl.DataFrame(resolved, orient="row", schema={
        "version": pl.String, "message_type": pl.String, "event": pl.String, "given": pl.String,
        "structure": pl.String, "u_code": pl.String, "u_reason": pl.String})
    heads = heads.join(rs, on=["version", "message_type", "event", "given"], how="left", nulls_equal=True)
    skeys = heads.filter(pl.col("fast") & pl.col("structure").is_not_null() & pl.col("bad_line").is_null()).select(
        "version", "structure", "names").unique()
    judged = [(v, s, n, judge_structure(v, s, tuple(n.split(",")))) for v, s, n in skeys.iter_rows()]
    js = pl.DataFrame(judged, orient="row", schema={"version": pl.String, "structure": pl.String,
                                                    "names": pl.String, "s_reason": pl.String})
    heads = heads.join(js, on=["version", "structure", "names"], how="left")
    malformed = pl.lit("hl7_malformed")
    return heads.with_columns(
        pl.when((pl.col("message_type") == "") | (pl.col("event") == "")).then(malformed)
        .when(pl.col("version") == "").then(malformed)
        .when(pl.col("bad_line").is_not_null()).then(malformed)
        .when(pl.col("u_code").is_not_null()).then(pl.col("u_code"))
        .when(pl.col("s_reason").is_not_null()).then(pl.lit("hl7_structure"))
        .alias("reason_code"),
        pl.when((pl.col("message_type") == "") | (pl.col("event") == ""))
        .then(pl.lit("MSH-9 has no message type and trigger event"))
        .when(pl.col("version") == "").then(pl.lit("MSH-12 (version) is empty"))
        .when(pl.col("bad_line").is_not_null())
        .then(pl.format("line {} of the message does not begin with a segment name", "bad_line"))
        .when(pl.col("u_code").is_not_null()).then(pl.col("u_reason"))
        .otherwise(pl.col("s_reason"))
        .alias("reason"),
    )


def _all_checks(versions: Sequence[str]) -> list[tuple[Check, tuple[str, ...]]]:
    """The union of the versions' checks in precedence order, each with the versions it applies to."""
    order: dict[Check, list[str]] = {}
    for v in versions:
        for c in datatype_checks(v):
            order.setdefault(c, []).append(v)
    seg_rank = {s: i for i, s in enumerate(("MSH", "EVN", "PID", "PD1", "MRG", "PV1", "RF1", "PRD", "SCH", "TQ1",
                                             "AIS", "AIG", "AIL", "AIP"))}
    ranked = sorted(order, key=lambda c: (seg_rank[c.segment], c.field, c.component or 0))
    return [(c, tuple(order[c])) for c in ranked]


def _datatype_failures(segs: pl.DataFrame, heads: pl.DataFrame) -> pl.DataFrame:
    """msg, reason of the first failing datatype check of each fast, so-far valid message."""
    candidates = heads.filter(pl.col("fast") & pl.col("reason_code").is_null()).select("msg", "version")
    versions = sorted(candidates["version"].unique().to_list())
    checks = _all_checks(versions)
    if not checks:
        return pl.DataFrame(schema={"msg": pl.Int64, "reason": pl.String})
    rows = segs.join(candidates.select("msg"), on="msg", how="semi")
    parts = []
    for seg in dict.fromkeys(c.segment for c, _ in checks):
        sub = rows.filter(pl.col("seg") == seg).select("msg", pl.col("line").str.split("|").alias("f"))
        if sub.height == 0:
            continue
        seg_checks = [(i, c) for i, (c, _) in enumerate(checks) if c.segment == seg]
        wide = sub.select("msg", *[pl.col("f").list.get(c.field - 1 if seg == "MSH" else c.field, null_on_oob=True)
                                   .alias(str(i)) for i, c in seg_checks])
        long = wide.unpivot(index="msg", variable_name="check", value_name="text").filter(
            ~_blank(pl.col("text")) & (pl.col("text").str.strip_chars() != ""))
        parts.append(long.with_columns(pl.col("check").cast(pl.Int64)))
    if not parts:
        return pl.DataFrame(schema={"msg": pl.Int64, "reason": pl.String})
    values = pl.concat(parts).with_columns(pl.col("text").str.split("~")).explode("text")
    kinds = pl.DataFrame({"check": list(range(len(checks))), "datatype": [c.datatype for c, _ in checks],
                          "component": [c.component for c, _ in checks]},
                         schema={"check": pl.Int64, "datatype": pl.String, "component": pl.Int64})
    values = values.join(kinds, on="check", how="left")
    comp = pl.col("text").str.split("^")
    value = (pl.when(pl.col("component").is_not_null())
             .then(comp.list.get(pl.col("component") - 1, null_on_oob=True).fill_null("").str.split("&").list.first())
             .when(pl.col("datatype") == "TS").then(comp.list.first())
             .otherwise(pl.col("text")))
    values = values.with_columns(value.alias("value"))
    ok = (pl.when(pl.col("datatype") == "TS").then(valid_expr(pl.col("value"), "TS"))
          .when(pl.col("datatype") == "DT").then(valid_expr(pl.col("value"), "DT"))
          .otherwise(valid_expr(pl.col("value"), "NM")))
    bad = values.filter(~ok).select("msg", "check").unique()
    if bad.height == 0:
        return pl.DataFrame(schema={"msg": pl.Int64, "reason": pl.String})
    applies = pl.DataFrame([(i, v) for i, (_, vs) in enumerate(checks) for v in vs], orient="row",
                           schema={"check": pl.Int64, "version": pl.String})
    reasons = pl.DataFrame({"check": list(range(len(checks))), "reason": [c.reason for c, _ in checks]},
                           schema={"check": pl.Int64, "reason": pl.String})
    return (bad.join(candidates, on="msg").join(applies, on=["check", "version"], how="semi")
            .group_by("msg").agg(pl.col("check").min()).join(reasons, on="check").select("msg", "reason"))


def _slow(messages: list[tuple[int, list[str]]], paths: list[Hl7Path]
          ) -> tuple[list[dict[str, object]], list[Rejected]]:
    """Messages outside the fast path: ``validate_full`` and ``extract``, one by one."""
    valid: list[dict[str, object]] = []
    rejected: list[Rejected] = []
    for msg, lines in messages:
        text = "\r".join(lines)
        verdict = validate_full(text)
        msh = parse_msh(lines[0])
        control = None
        if not isinstance(msh, tuple) and msh.control_id is not None:
            control = decode_escapes(msh.control_id, msh.encoding)
        elif isinstance(msh, tuple) and lines[0].startswith("MSH") and len(lines[0]) > 3:
            # an unusable MSH may still name its message: MSH-10, as written, for the report
            items = lines[0].split(lines[0][3])
            control = items[9] if len(items) > 9 and items[9] not in ("", HL7_NULL) else None
        if verdict is not None or isinstance(msh, tuple):
            code, reason = verdict or ("hl7_malformed", "unusable MSH")
            rejected.append((msg, code, reason, control, text))
            continue
        segments = [line.split(msh.encoding.field) for line in lines]
        row: dict[str, object] = {
            "source_row": msg, "control_id": control, "message_type": msh.message_type, "event": msh.event,
            "version": msh.version, "sent_at": ts_to_datetime(msh.field(7).split(msh.encoding.component)[0]),
            "sending_app": msh.field(3) or None, "sending_facility": msh.field(4) or None,
        }
        for p in paths:
            row[p.text] = extract(segments, p, msh.encoding)
        valid.append(row)
    return valid, rejected


def _chunk(text: str, offset: int, paths: list[Hl7Path], source_file: str
           ) -> tuple[pl.DataFrame, list[Rejected], int]:
    """(valid rows, rejected (msg, code, reason, control id, raw), messages) of one chunk."""
    segs = _segments(text, offset)
    if segs.height == 0:
        return pl.DataFrame(schema=_schema(paths)), [], 0
    count = int(segs["msg"].max()) - offset  # type: ignore[arg-type]
    heads = _resolve(_heads(segs))
    fast = heads.filter(pl.col("fast"))
    failures = _datatype_failures(segs, fast)
    fast = fast.join(failures.rename({"reason": "d_reason"}), on="msg", how="left").with_columns(
        pl.when(pl.col("reason_code").is_null() & pl.col("d_reason").is_not_null()).then(pl.lit("hl7_datatype"))
        .otherwise(pl.col("reason_code")).alias("reason_code"),
        pl.coalesce("reason", "d_reason").alias("reason"),
        pl.when(_blank(pl.col("control_raw"))).then(None).otherwise(decode_expr(pl.col("control_raw")))
        .alias("control_id"),
    )
    good = fast.filter(pl.col("reason_code").is_null()).select(
        "msg", "control_id", "message_type", "event", "version", ts_expr(pl.col("msh7")).alias("sent_at"),
        "sending_app", "sending_facility")
    good = _extract(segs, good, paths)
    bad = fast.filter(pl.col("reason_code").is_not_null()).select("msg", "reason_code", "reason", "control_id")
    rejected: list[Rejected] = []
    if bad.height:
        raws = (segs.join(bad.select("msg"), on="msg", how="semi").group_by("msg")
                .agg(pl.col("line").str.join("\r").alias("raw")))
        rejected = [(m, c, r, cid, raw) for m, c, r, cid, raw in
                    bad.join(raws, on="msg").select("msg", "reason_code", "reason", "control_id", "raw").iter_rows()]
    slow_ids = heads.filter(~pl.col("fast")).select("msg")
    if slow_ids.height:
        grouped = (segs.join(slow_ids, on="msg", how="semi").group_by("msg", maintain_order=True)
                   .agg(pl.col("line")))
        slow_valid, slow_rejected = _slow(list(grouped.iter_rows()), paths)
        rejected += slow_rejected
        if slow_valid:
            extra = pl.DataFrame(slow_valid, schema={"source_row": pl.Int64, **{
                k: v for k, v in _schema(paths).items() if k not in ("source_file", "source_row")}})
            good = pl.concat([good, extra.rename({"source_row": "msg"})], how="diagonal_relaxed")
    hashes = (segs.join(good.select("msg"), on="msg", how="semi").group_by("msg")
              .agg(pl.col("line").str.join("\r").hash().alias("content_hash")))
    out = good.drop("content_hash", strict=False).join(hashes, on="msg", how="left").sort("msg").select(
        pl.lit(source_file, dtype=pl.String).alias("source_file"), pl.col("msg").cast(pl.Int64).alias("source_row"),
        *[pl.col(c).cast(t) for c, t in MESSAGE_COLUMNS.items() if c not in ("source_file", "source_row")],
        *[pl.col(p.text).cast(pl.String) for p in paths])
    return out, rejected, count


def _extract(segs: pl.DataFrame, good: pl.DataFrame, paths: list[Hl7Path]) -> pl.DataFrame:
    """Adds one column per path to the valid fast messages."""
    wanted: dict[tuple[str, int], list[Hl7Path]] = {}
    for p in paths:
        wanted.setdefault((p.segment, p.occurrence), []).append(p)
    rows = segs.join(good.select("msg"), on="msg", how="semi")
    for (seg, occ), group in wanted.items():
        sub = rows.filter(pl.col("seg") == seg)
        # rows are sorted by message: a segment's occurrence is its place in the run of its message
        idx = pl.int_range(pl.len(), dtype=pl.Int64)
        first = pl.col("msg") != pl.col("msg").shift(1, fill_value=-1)
        sub = sub.filter(idx - pl.when(first).then(idx).forward_fill() == occ - 1)
        values = (sub.select("msg", pl.col("line").str.split("|").alias("f"))
                  .select("msg", *[path_expr(pl.col("f"), p).alias(p.text) for p in group])
                  .with_columns(*[finish_expr(pl.col(p.text)).alias(p.text) for p in group]))
        good = good.join(values, on="msg", how="left")
    return good


def _schema(paths: list[Hl7Path]) -> dict[str, pl.DataType]:
    return {**MESSAGE_COLUMNS, **{p.text: pl.String() for p in paths}}


def _parts_dir(work_dir: Path, source_file: str) -> Path:
    slug = re.sub(r"[^A-Za-z0-9._-]+", "_", source_file)[-60:]
    digest = hashlib.sha1(source_file.encode("utf-8")).hexdigest()[:8]
    return work_dir / f"hl7-{slug}-{digest}"


def read_hl7(path: Path, source_file: str, paths: Sequence[str], work_dir: Path,
             chunk_bytes: int = CHUNK_BYTES, workers: int = WORKERS) -> Hl7Read:
    """Read one HL7 v2 file: each valid message a row (file order) with the requested paths'
    values, each invalid message a rejected row with its reason code.

    ``source_file`` is the name rows carry; ``paths`` are HL7 paths (``hl7_paths``), each
    becoming a String column named as written. Invariant: rows_read == valid + rejected.
    Raises InputError when the file cannot be read, ConfigError for a bad path.
    """
    if not path.is_file():
        raise InputError(f"input file not found: {path}")
    parsed: list[Hl7Path] = []
    problems = []
    for text in dict.fromkeys(paths):
        try:
            parsed.append(parse_path(text))
        except ValueError as exc:
            problems.append(f"'{text}' is not an HL7 path: {exc}")
    if problems:
        raise ConfigError(f"{source_file}: bad HL7 paths", problems)
    out_dir = _parts_dir(work_dir, source_file)
    shutil.rmtree(out_dir, ignore_errors=True)
    out_dir.mkdir(parents=True)
    parts: list[Path] = []
    rejected: list[Rejected] = []
    offset = 0

    def finish(i: int, done: Future[tuple[pl.DataFrame, list[Rejected], int]]) -> None:
        # chunks are numbered from message 1 in the workers; their place in the file is added here
        nonlocal offset
        frame, bad, count = done.result()
        rejected.extend((m + offset, code, reason, control, raw) for m, code, reason, control, raw in bad)
        if frame.height:
            part = out_dir / f"part-{i:06d}.parquet"
            write_part(frame.with_columns(pl.col("source_row") + offset), part)
            parts.append(part)
        offset += count

    # Workers overlap chunks: most of a chunk's time is polars work that runs without the GIL.
    pending: deque[tuple[int, Future[tuple[pl.DataFrame, list[Rejected], int]]]] = deque()
    try:
        with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
            for i, text in enumerate(_chunks(path, chunk_bytes)):
                pending.append((i, pool.submit(_chunk, text, 0, parsed, source_file)))
                while len(pending) > max(1, workers):
                    finish(*pending.popleft())
            while pending:
                finish(*pending.popleft())
    except OSError as exc:
        raise InputError(f"cannot read {path}: {exc}") from exc
    messages = pl.scan_parquet(parts) if parts else pl.LazyFrame(schema=_schema(parsed))
    rejected.sort(key=lambda r: r[0])
    frame = pl.DataFrame(
        {"source_file": [source_file] * len(rejected), "source_row": [r[0] for r in rejected],
         "reason_code": [r[1] for r in rejected],
         "message": [f"{source_file} message {r[0]} ({_control(r[3])}): {r[2]}" for r in rejected],
         "raw": [r[4] for r in rejected]},
        schema=REJECTED_SCHEMA)
    return Hl7Read(messages, frame, offset)


def _control(control_id: str | None) -> str:
    return "no control id" if control_id is None else f"control id {control_id}"
