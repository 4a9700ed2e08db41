"""Mapping profiles: YAML that says how one provider's extract becomes canonical tables.

``load_profile`` reads a profile, checks every part of it against the canonical model and
returns one frozen ``Profile``; it never stops at the first problem: a ``ProfileError``
lists every problem with the file, the path inside it and what to do (exit 2).

The format (version 1) is documented in docs/mapping-profiles.md.
"""

from __future__ import annotations

import codecs
import hashlib
import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import yaml

from migrate import canonical, resources
from migrate.errors import ConfigError, ProfileError
from migrate.profile_checks import dialect_problems, glob_problem, regex_problem
from migrate.profile_options import format_problems, implied_option, option_problems, reference_table_problems
from migrate.yamltext import read_yaml

FORMAT_VERSION = 1
ENCODINGS = {"utf-8": "utf-8", "utf8": "utf-8", "utf-8-sig": "utf-8", "cp1252": "cp1252", "windows-1252": "cp1252",
             "latin-1": "latin-1", "iso-8859-1": "latin-1"}
FIELD_OPTIONS = {"column", "columns", "sep", "constant", "split", "remove", "trim", "case", "map", "map_only",
                 "pattern", "formats", "required", "on_invalid", "separator", "true_values", "false_values", "refine",
                 "implied_by", "dissent_values", "consent_values", "opt_out_values", "date"}
# A sharing setting's value lists, by the kind of entry each value means (canonical.SHARING_KINDS).
SHARING_VALUE_LISTS = {"dissent_values": "dissent", "consent_values": "consent", "opt_out_values": "opt_out"}
REFINE_OPTIONS = {"column", "when", "map"}
TABLE_OPTIONS = {"files", "fields", "encoding", "delimiter", "quote_char", "on_encoding_error", "format", "events",
                 "on_duplicate", "updates"}
UPDATES = ("merge", "replace")
FORMATS = ("auto", "delimited", "parquet", "hl7v2")
DEFAULT_OPTIONS = {"encoding", "delimiter", "quote_char", "on_encoding_error", "date_formats", "datetime_formats",
                   "null_values", "true_values", "false_values"}
TOP_LEVEL = {"profile", "format_version", "description", "source_system", "defaults", "tables"}
CASES = {"upper", "lower", "title"}
SPLIT_KEYS = {"column", "sep", "index", "rest"}
# Fields a table cannot be built without: without them a row cannot be keyed or linked.
NEEDED_FIELDS = {
    "patients": ("source_patient_id",),
    "referrals": ("source_referral_id", "patient_key"),
    "contacts": ("contact_key", "referral_key"),
    "codes": ("patient_key", "code_system", "code"),
    "merges": ("patient_key", "prior_patient_key"),
    "target_index": ("local_id", "nhs_number"),
    "practice_sharing": ("ods_code", "sharing_out"),
}


@dataclass(frozen=True)
class Split:
    """Take part of a column split on a separator (e.g. a full name)."""

    column: str
    sep: str
    index: int
    rest: bool = False  # join every part from ``index`` on, with ``on``


@dataclass(frozen=True)
class Refine:
    """A second column that decides between coded values: where the field's value is one of
    ``when`` and ``column`` is not blank, ``column`` mapped by ``map`` is the value (a value
    ``map`` has no entry for is ``unmapped_code``). E.g. HL7 SCH-25 says an appointment was
    cancelled and SCH-6 (event reason) by whom."""

    column: str
    when: tuple[str, ...]
    map: tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class Implied:
    """A value another column implies when the field's own column is not sent (blank, not
    the explicit null ``""``): ``column``'s value, looked up in ``map`` (any case), is the
    raw value the field then maps as if its own column had sent it. A sent value that maps
    to something else contradicts it (``conflicting_value``). E.g. an HL7 S15 (MSH-9.2)
    without SCH-25 is a cancellation."""

    column: str
    map: tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class FieldSpec:
    """How one canonical field is taken from the source row."""

    name: str
    column: str | None = None
    columns: tuple[str, ...] = ()
    sep: str = " "
    constant: str | None = None
    split: Split | None = None
    remove: str = ""
    trim: bool = True
    case: str | None = None
    map: tuple[tuple[str, str], ...] = ()
    map_only: bool = False
    pattern: str | None = None
    formats: tuple[str, ...] = ()
    required: bool = False
    on_invalid: str = "quarantine"  # or "null": a value that fails to parse becomes null
    separator: str = ";"
    true_values: tuple[str, ...] = ()
    false_values: tuple[str, ...] = ()
    refine: Refine | None = None
    implied_by: Implied | None = None
    # sharing settings: the values meaning each kind of entry, and the column of the date set
    dissent_values: tuple[str, ...] = ()
    consent_values: tuple[str, ...] = ()
    opt_out_values: tuple[str, ...] = ()
    date: str | None = None

    @property
    def base_columns(self) -> tuple[str, ...]:
        """The source columns the field's value is read from (``refine`` aside)."""
        if self.column:
            return (self.column,)
        if self.split:
            return (self.split.column,)
        return self.columns

    @property
    def source_columns(self) -> tuple[str, ...]:
        """Every source column this field reads."""
        return (self.base_columns + ((self.refine.column,) if self.refine else ())
                + ((self.implied_by.column,) if self.implied_by else ())
                + ((self.date,) if self.date else ()))

    @property
    def sharing_values(self) -> dict[str, str]:
        """A sharing setting's values (upper case) -> the kind of entry each means."""
        return {v.strip().upper(): kind for values, kind in ((self.dissent_values, "dissent"),
                                                             (self.consent_values, "consent"),
                                                             (self.opt_out_values, "opt_out")) for v in values}

    @property
    def label(self) -> str:
        """How messages name the field: canonical name and its source column(s)."""
        cols = ", ".join(self.source_columns)
        return f"{self.name} (column {cols})" if cols else self.name


@dataclass(frozen=True)
class TableSpec:
    """Which files feed one canonical table and how each field is mapped."""

    name: str
    files: tuple[str, ...]
    fields: tuple[FieldSpec, ...]
    encoding: str
    delimiter: str
    quote_char: str | None
    on_encoding_error: str
    format: str = "auto"  # auto (by file suffix), delimited, parquet or hl7v2
    events: tuple[str, ...] = ()  # hl7v2: the message events (e.g. A04, A08) this table takes
    on_duplicate: str = "quarantine"  # a repeated key: quarantine it, or let the latest row win
    # how a row updates an earlier row of its key: merge (a blank field keeps its value, the
    # explicit null "" clears it) or replace (every mapped field takes the row's value)
    updates: str = "replace"

    @property
    def source_columns(self) -> tuple[str, ...]:
        """Every source column the table reads, in first-use order."""
        seen: dict[str, None] = {}
        for f in self.fields:
            for c in f.source_columns:
                seen.setdefault(c, None)
        return tuple(seen)


@dataclass(frozen=True)
class Profile:
    """A validated mapping profile."""

    name: str
    path: Path
    sha256: str
    source_system: str
    description: str
    tables: dict[str, TableSpec] = field(hash=False)
    null_values: tuple[str, ...] = ("",)


def _is_valid_format(fmt: str, kind: str) -> bool:
    if "%" not in fmt:
        return False
    # aware, so a format with %z (a UTC offset, e.g. +0100) round-trips too
    sample = datetime(2021, 11, 23, 14, 5, 9, tzinfo=timezone(timedelta(hours=1)))
    try:
        text = sample.strftime(fmt)
        back = datetime.strptime(text, fmt)
    except ValueError:
        return False
    # A date format must carry day, month and year; a date-time format may stop at any
    # precision (minutes, seconds) but must at least carry the date.
    return back.date() == sample.date()


class _Problems:
    """Collects problems with their path inside the profile."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.items: list[str] = []

    def add(self, where: str, what: str) -> None:
        self.items.append(f"{self.path.name}: {where}: {what}")


def _str_list(value: Any, where: str, problems: _Problems) -> tuple[str, ...]:
    if isinstance(value, str):
        return (value,)
    if isinstance(value, list) and all(isinstance(v, (str, int)) and not isinstance(v, bool) for v in value):
        return tuple(str(v) for v in value)
    problems.add(where, "expected a string or a list of strings")
    return ()


def _field(table: str, name: str, raw: Any, defaults: dict[str, Any], problems: _Problems) -> FieldSpec | None:
    where = f"tables.{table}.fields.{name}"
    tdef = canonical.TABLES[table]
    if name not in tdef.field_names:
        problems.add(where, f"'{name}' is not a field of canonical table {table}; "
                            f"fields are: {', '.join(tdef.field_names)}")
        return None
    if isinstance(raw, str):
        raw = {"column": raw}
    if not isinstance(raw, dict):
        problems.add(where, "expected a mapping such as {column: SourceColumn}")
        return None
    for key in sorted(set(raw) - FIELD_OPTIONS):
        problems.add(f"{where}.{key}", f"unknown option; use one of {', '.join(sorted(FIELD_OPTIONS))}")
    cfield = tdef.field(name)
    kind = cfield.kind
    sources = [k for k in ("column", "columns", "constant", "split") if k in raw]
    if len(sources) != 1:
        problems.add(where, "give exactly one of column, columns, constant or split")
    kwargs: dict[str, Any] = {"name": name}
    for key in ("column", "sep", "remove", "pattern", "separator", "constant", "date"):
        if key in raw:
            if not isinstance(raw[key], (str, int)) or isinstance(raw[key], bool):
                problems.add(f"{where}.{key}", "expected a string")
            else:
                kwargs[key] = str(raw[key])
    if "columns" in raw:
        kwargs["columns"] = _str_list(raw["columns"], f"{where}.columns", problems)
    if "split" in raw:
        s = raw["split"]
        unknown = sorted(str(k) for k in set(s) - SPLIT_KEYS) if isinstance(s, dict) else []
        if not (isinstance(s, dict) and isinstance(s.get("column"), str) and isinstance(s.get("sep"), str)
                and str(s.get("index", 0)).lstrip("-").isdigit() and isinstance(s.get("rest", False), bool)
                and not unknown):
            problems.add(f"{where}.split", "expected {column: Name, sep: ' ', index: 0, rest: false}"
                         + (f"; unknown key(s) {', '.join(unknown)}" if unknown else ""))
        else:
            kwargs["split"] = Split(s["column"], s["sep"], int(s.get("index", 0)), s.get("rest", False) is True)
    for key in ("required", "trim", "map_only"):
        if key in raw:
            if not isinstance(raw[key], bool):
                problems.add(f"{where}.{key}", "expected true or false")
            else:
                kwargs[key] = raw[key]
    if "case" in raw:
        if raw["case"] not in CASES:
            problems.add(f"{where}.case", f"expected one of {', '.join(sorted(CASES))}")
        else:
            kwargs["case"] = raw["case"]
    if "on_invalid" in raw:
        if raw["on_invalid"] not in ("quarantine", "null"):
            problems.add(f"{where}.on_invalid", "expected 'quarantine' or 'null'")
        else:
            kwargs["on_invalid"] = raw["on_invalid"]
    if "pattern" in kwargs:
        why = regex_problem(kwargs["pattern"])
        if why:
            problems.add(f"{where}.pattern", why)
    if "map" in raw:
        m = raw["map"]
        if not isinstance(m, dict):
            problems.add(f"{where}.map", "expected a mapping of source value: canonical value")
        else:
            pairs = tuple((str(k), str(v)) for k, v in m.items())
            kwargs["map"] = pairs
            allowed = cfield.enum_values
            if allowed is not None:
                for k, v in pairs:
                    if v not in allowed:
                        problems.add(f"{where}.map.{k}", f"'{v}' is not a {name} value; use one of {', '.join(allowed)}")
    if "refine" in raw:
        kwargs["refine"] = _refine(raw["refine"], f"{where}.refine", cfield, problems)
    if "implied_by" in raw and (implied := implied_option(where, raw, cfield.enum_values, problems.add)):
        kwargs["implied_by"] = Implied(*implied)
    option_problems(where, name, kind, raw, problems.add)
    for key in SHARING_VALUE_LISTS:
        if key in raw:
            kwargs[key] = _str_list(raw[key], f"{where}.{key}", problems)
    if kind == "sharing":
        _sharing_problems(where, kwargs, problems)
        if "date" in raw:  # the date column is read with the date formats
            kwargs["formats"] = _formats(raw, "date", where, defaults, problems)
    if kind in ("date", "datetime"):
        kwargs["formats"] = _formats(raw, kind, where, defaults, problems)
    if kind == "boolean":
        tv = raw.get("true_values", defaults.get("true_values", ["Y", "true", "1"]))
        fv = raw.get("false_values", defaults.get("false_values", ["N", "false", "0"]))
        kwargs["true_values"] = _str_list(tv, f"{where}.true_values", problems)
        kwargs["false_values"] = _str_list(fv, f"{where}.false_values", problems)
    try:
        return FieldSpec(**kwargs)
    except TypeError:  # an earlier problem left a kwarg of the wrong shape
        return None


def _formats(raw: dict[str, Any], kind: str, where: str, defaults: dict[str, Any],
             problems: _Problems) -> tuple[str, ...]:
    """The field's ``formats`` (or the defaults) for a date or date-time, each checked."""
    fmts = _str_list(raw["formats"], f"{where}.formats", problems) if "formats" in raw else ()
    if not fmts:
        fmts = tuple(defaults.get(f"{kind}_formats", ()))
        if kind == "datetime":
            fmts += tuple(defaults.get("date_formats", ()))
    for i, fmt in enumerate(fmts):
        if not _is_valid_format(fmt, kind):
            problems.add(f"{where}.formats[{i}]", f"'{fmt}' is not a valid {kind} format; "
                                                 "use strftime codes such as %d/%m/%Y or %Y-%m-%d %H:%M")
    if not fmts:
        problems.add(where, f"no {kind} formats: set formats here or defaults.{kind}_formats")
    return fmts


def _sharing_problems(where: str, kwargs: dict[str, Any], problems: _Problems) -> None:
    """A sharing setting must say which values are a dissent, and a value may mean one kind only."""
    if not kwargs.get("dissent_values"):
        problems.add(where, "name the values that mean the patient dissents from sharing: "
                            "dissent_values: [No, N, …] (every other value would be unrecognised)")
    seen: dict[str, str] = {}
    for key in SHARING_VALUE_LISTS:
        for value in kwargs.get(key, ()):
            other = seen.setdefault(value.strip().upper(), key)
            if other != key:
                problems.add(f"{where}.{key}", f"'{value}' is also in {other}: a value can mean one kind of "
                                               "entry only (values are matched in any case)")


def _refine(raw: Any, where: str, cfield: canonical.Field, problems: _Problems) -> Refine | None:
    allowed = cfield.enum_values
    if allowed is None:
        problems.add(where, f"{cfield.name} is not a coded field: refine decides between coded values")
        return None
    if not isinstance(raw, dict) or not isinstance(raw.get("column"), str) or not isinstance(raw.get("map"), dict):
        problems.add(where, "expected {column: SourceColumn, when: [canonical values], map: {source: canonical}}")
        return None
    for key in sorted(set(raw) - REFINE_OPTIONS):
        problems.add(f"{where}.{key}", f"unknown option; use one of {', '.join(sorted(REFINE_OPTIONS))}")
    when = _str_list(raw.get("when", []), f"{where}.when", problems)
    if not when:
        problems.add(f"{where}.when", "name the canonical value(s) the second column refines")
    pairs = tuple((str(k), str(v)) for k, v in raw["map"].items())
    for value in when:
        if value not in allowed:
            problems.add(f"{where}.when", f"'{value}' is not a {cfield.name} value; use one of {', '.join(allowed)}")
    for k, v in pairs:
        if v not in allowed:
            problems.add(f"{where}.map.{k}", f"'{v}' is not a {cfield.name} value; use one of {', '.join(allowed)}")
    return Refine(raw["column"], when, pairs)


def _encoding(value: Any, where: str, problems: _Problems) -> str:
    text = str(value).lower()
    if text not in ENCODINGS:
        problems.add(where, f"unsupported encoding '{value}'; use one of utf-8, utf-8-sig, cp1252, latin-1")
        return "utf-8"
    codecs.lookup(ENCODINGS[text])
    return ENCODINGS[text]


def parse_profile(doc: Any, path: Path, digest: str = "") -> Profile:
    """Validate a loaded profile document; raise ``ProfileError`` listing every problem."""
    problems = _Problems(path)
    if not isinstance(doc, dict):
        raise ProfileError(f"mapping profile {path} is not a YAML mapping", [])
    for key in sorted(set(doc) - TOP_LEVEL):
        problems.add(key, f"unknown key; use one of {', '.join(sorted(TOP_LEVEL))}")
    if str(doc.get("format_version")) != str(FORMAT_VERSION):
        problems.add("format_version", f"expected {FORMAT_VERSION} (found {doc.get('format_version')!r})")
    name = doc.get("profile")
    if not isinstance(name, str) or not name:
        problems.add("profile", "give the profile a name")
        name = path.stem
    defaults = doc.get("defaults") or {}
    if not isinstance(defaults, dict):
        problems.add("defaults", "expected a mapping")
        defaults = {}
    for key in sorted(set(defaults) - DEFAULT_OPTIONS):
        problems.add(f"defaults.{key}", f"unknown option; use one of {', '.join(sorted(DEFAULT_OPTIONS))}")
    for kind in ("date", "datetime"):
        for i, fmt in enumerate(_str_list(defaults.get(f"{kind}_formats", []), f"defaults.{kind}_formats", problems)):
            if not _is_valid_format(fmt, kind):
                problems.add(f"defaults.{kind}_formats[{i}]", f"'{fmt}' is not a valid {kind} format")
    tables_doc = doc.get("tables")
    tables: dict[str, TableSpec] = {}
    if not isinstance(tables_doc, dict) or not tables_doc:
        problems.add("tables", "expected a mapping of canonical table name to its files and fields")
        tables_doc = {}
    for tname, tdoc in tables_doc.items():
        where = f"tables.{tname}"
        if tname not in canonical.TABLES:
            problems.add(where, f"unknown table; canonical tables are {', '.join(canonical.TABLE_ORDER)}")
            continue
        if not isinstance(tdoc, dict):
            problems.add(where, "expected a mapping with files and fields")
            continue
        for key in sorted(set(tdoc) - TABLE_OPTIONS):
            problems.add(f"{where}.{key}", f"unknown option; use one of {', '.join(sorted(TABLE_OPTIONS))}")
        files = _str_list(tdoc.get("files", []), f"{where}.files", problems)
        if tname in canonical.REFERENCE_TABLES:
            reference_table_problems(where, tname, tdoc, problems.add)
        elif not files:
            problems.add(f"{where}.files", "name the file(s) that feed this table, e.g. ['referrals*.csv']")
        for i, pattern in enumerate(files):
            why = glob_problem(pattern)
            if why:
                problems.add(f"{where}.files[{i}]", why)
        fields_doc = tdoc.get("fields")
        specs: list[FieldSpec] = []
        if not isinstance(fields_doc, dict) or not fields_doc:
            problems.add(f"{where}.fields", "expected a mapping of canonical field: source")
        else:
            for fname, fdoc in fields_doc.items():
                spec = _field(tname, str(fname), fdoc, defaults, problems)
                if spec is not None:
                    specs.append(spec)
            for needed in NEEDED_FIELDS[tname]:
                if needed not in fields_doc:
                    problems.add(f"{where}.fields", f"map '{needed}': a {tname} row cannot be keyed or linked without it")
        delimiter = str(tdoc.get("delimiter", defaults.get("delimiter", ",")))
        quote = tdoc.get("quote_char", defaults.get("quote_char", '"'))
        for key, why in dialect_problems(delimiter, None if quote is None else str(quote)):
            problems.add(f"{where}.{key}", why)
        on_enc = tdoc.get("on_encoding_error", defaults.get("on_encoding_error", "quarantine"))
        if on_enc not in ("quarantine", "replace"):
            problems.add(f"{where}.on_encoding_error", "expected 'quarantine' or 'replace'")
        enc = _encoding(tdoc.get("encoding", defaults.get("encoding", "utf-8")), f"{where}.encoding", problems)
        fmt = str(tdoc.get("format", "auto"))
        if fmt not in FORMATS:
            problems.add(f"{where}.format", f"expected one of {', '.join(FORMATS)}")
        events = _str_list(tdoc.get("events", []), f"{where}.events", problems)
        if fmt == "hl7v2" and not events:
            problems.add(f"{where}.events", "name the HL7 events this table takes, e.g. [A04, A08, A28, A31]")
        if fmt != "hl7v2" and events:
            problems.add(f"{where}.events", "events apply only to format: hl7v2")
        if fmt == "hl7v2":
            _check_hl7_paths(tname, specs, problems)
        format_problems(where, tdoc, fmt, files, problems.add)
        on_dup = str(tdoc.get("on_duplicate", "latest" if fmt == "hl7v2" else "quarantine"))
        if on_dup not in ("quarantine", "latest"):
            problems.add(f"{where}.on_duplicate", "expected 'quarantine' or 'latest'")
        updates = str(tdoc.get("updates", "merge" if fmt == "hl7v2" else "replace"))
        if updates not in UPDATES:
            problems.add(f"{where}.updates", "expected 'merge' (a blank field keeps its value, \"\" clears it) or "
                                             "'replace' (every mapped field takes the row's value)")
        elif "updates" in tdoc and canonical.TABLES[tname].key is None and tname not in canonical.REFERENCE_TABLES:
            problems.add(f"{where}.updates", f"{tname} rows have no key, so a row never updates another: remove it")
        tables[tname] = TableSpec(tname, files, tuple(specs), enc, delimiter, None if quote is None else str(quote),
                                  str(on_enc), fmt, events, on_dup, updates)
    system = str(doc.get("source_system", name))
    if not system or any(c.isspace() or c == "/" for c in system):  # as FhirOptions requires, but before any data
        problems.add("source_system", f"'{system}' names the system in FHIR identifiers and ids: no spaces or '/' "
                                      "(e.g. acme-pas)")
    if problems.items:
        raise ProfileError(f"mapping profile {path} has {len(problems.items)} problem(s)", problems.items)
    nulls = _str_list(defaults.get("null_values", [""]), "defaults.null_values", problems)
    return Profile(name=str(name), path=path, sha256=digest, source_system=system,
                   description=str(doc.get("description", "")), tables=tables, null_values=nulls)


def resolve_profile_path(name_or_path: str) -> Path:
    """A profile given by path, or by the name of one shipped in mappings/."""
    candidate = Path(name_or_path)
    if candidate.is_file():
        return candidate
    shipped = resources.mappings_dir() / f"{name_or_path}.yaml"
    if shipped.is_file():
        return shipped
    known = ", ".join(sorted(p.stem for p in resources.mappings_dir().glob("*.yaml")))
    raise ConfigError(f"mapping profile '{name_or_path}' not found: give a path to a YAML file "
                      f"or one of the shipped profiles ({known})")


def _check_hl7_paths(table: str, specs: list[FieldSpec], problems: _Problems) -> None:
    """Every column of an HL7 table must be a valid HL7 path such as PID-3[type=NH].1."""
    try:
        from migrate.sources.hl7 import parse_path
    except ImportError:  # pragma: no cover - the HL7 reader ships with handover
        return
    for spec in specs:
        for column in spec.source_columns:
            try:
                parse_path(column)
            except ValueError as exc:
                problems.add(f"tables.{table}.fields.{spec.name}", f"'{column}' is not an HL7 path: {exc}")


def load_profile(name_or_path: str | Path) -> Profile:
    """Load and validate a profile by path or shipped name; ``ProfileError`` lists every problem."""
    path = resolve_profile_path(str(name_or_path))
    data = path.read_bytes()
    try:
        doc = read_yaml(data)
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise ProfileError(f"mapping profile {path} is not valid YAML", [" ".join(str(exc).split())]) from None
    return parse_profile(doc, path, hashlib.sha256(data).hexdigest())
