"""Compile a table's mapping profile into polars expressions and apply them.

``compile_table`` turns a ``TableSpec`` into one list of expressions, once, checked
against the source columns actually present; ``apply_mapping`` runs them over a source
LazyFrame. No Python runs per row.

The result has every canonical column of the table (typed) plus four bookkeeping columns:
``__reason`` (the first quarantine reason code, null for a good row) and ``__field`` (the
canonical field it concerns). ``explain_failures`` builds, for failing rows only,
``__message`` (every problem of the row, naming file, row and field; values are quoted
only for fields that are not patient-identifying) and ``__raw`` (the source record as
JSON, for quarantine).

A value that fails to parse never becomes null silently: it is a quarantine reason unless
the field says ``on_invalid: null``. A canonical field's own pattern (``nhs_number``: ten
ASCII digits) applies whatever the profile says.

Two-digit years (``%y``) are placed by the cut-over T (today when none is given, as in
``handover check``): a birth date in the 100 years up to T — never after it — and any other
date in the window from 80 years before T to 20 years after it.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import date, datetime, timedelta

import polars as pl

from migrate import canonical
from migrate.profile import FieldSpec, Profile, TableSpec

BOOKKEEPING = ("__reason", "__field", "__message", "__raw")
# Fields whose dates are in the past at the cut-over: a two-digit year is never placed after it.
PAST_ONLY = frozenset({"birth_date"})
_DERIVED_KEYS = {"patients": {"patient_key": "source_patient_id"}, "referrals": {"referral_key": "source_referral_id"}}
# HL7's explicit null, in any source: the field is deleted (an update clears it), where an
# empty value is "not sent" (an update under ``updates: merge`` keeps the current value).
EXPLICIT_NULL = '""'
# How a problem's message quotes the offending value (fields that identify no one only):
# ``handover check`` and its suggestions read the value back out with this pattern.
VALUE_IN_MESSAGE = r"\(value '(.*?)'\)"


@dataclass(frozen=True)
class CompiledTable:
    """The expressions that map one source frame to a canonical table."""

    table: str
    stages: tuple[tuple[pl.Expr, ...], ...]
    output: tuple[str, ...]
    detail: tuple[pl.Expr, ...]  # __message and __raw, computed only for failing rows


def _src(name: str) -> pl.Expr:
    """A source column, renamed on entry so it never collides with a canonical name."""
    return pl.col(f"__s_{name}")


def _source(spec: FieldSpec, source_schema: Mapping[str, pl.DataType]) -> pl.Expr:
    """The field's raw value as a string expression (before cleaning)."""
    def col(name: str) -> pl.Expr:
        dtype = source_schema.get(name, pl.String())
        return _src(name) if dtype == pl.String() else _src(name).cast(pl.String)

    if spec.constant is not None:
        return pl.lit(spec.constant, dtype=pl.String)
    if spec.column is not None:
        return col(spec.column)
    if spec.split is not None:
        parts = col(spec.split.column).str.strip_chars().str.split(spec.split.sep)
        if spec.split.rest:
            return parts.list.slice(spec.split.index).list.join(spec.split.sep)
        return parts.list.get(spec.split.index, null_on_oob=True)
    cleaned = [_blank_to_null(col(c).str.strip_chars()) for c in spec.columns]
    return pl.concat_str(cleaned, separator=spec.sep, ignore_nulls=True).replace("", None)


def _blank_to_null(expr: pl.Expr) -> pl.Expr:
    return pl.when(expr.is_in(["", EXPLICIT_NULL])).then(None).otherwise(expr)


def _cleared(spec: FieldSpec, source_schema: Mapping[str, pl.DataType]) -> pl.Expr:
    """True where a source column of the field holds the explicit null ``""``."""
    if spec.constant is not None or not spec.base_columns:
        return pl.lit(False)
    texts = [_src(c).cast(pl.String).str.strip_chars() == EXPLICIT_NULL for c in spec.base_columns
             if source_schema.get(c, pl.String()) == pl.String()]
    return pl.any_horizontal(texts).fill_null(False) if texts else pl.lit(False)


def _clean(spec: FieldSpec, expr: pl.Expr, null_values: tuple[str, ...], remove: bool = True) -> pl.Expr:
    """Trim, remove characters, and turn the profile's null markers into null.

    A list field is cleaned twice: as a whole without ``remove`` (which might delete the
    separator), then element by element with it (``_elements``).
    """
    if spec.trim:
        expr = expr.str.strip_chars()
    expr = pl.when(expr.str.strip_chars() == EXPLICIT_NULL).then(None).otherwise(expr)
    if spec.remove and remove:
        expr = expr.str.replace_all(f"[{re.escape(spec.remove)}]", "")
    if null_values:
        expr = pl.when(expr.is_in(list(null_values))).then(None).otherwise(expr)
    return expr


def _cased(spec: FieldSpec, expr: pl.Expr) -> pl.Expr:
    if spec.case == "upper":
        return expr.str.to_uppercase()
    if spec.case == "lower":
        return expr.str.to_lowercase()
    if spec.case == "title":
        return expr.str.to_titlecase()
    return expr


def _lookup(values: Mapping[str, str], v: pl.Expr) -> pl.Expr:
    """Case-insensitive value map; null where the value has no entry."""
    upper = {k.strip().upper(): t for k, t in values.items()}
    return v.str.to_uppercase().replace_strict(upper, default=None, return_dtype=pl.String)


def _text(spec: FieldSpec, v: pl.Expr) -> tuple[pl.Expr, pl.Expr, pl.Expr]:
    """(value, unmapped, mismatched) of one text value: a text field's value or one element
    of a list field. Case, then the value map (matched on the value before case), then the
    pattern (on the result). ``unmapped``: ``map_only`` and no entry; ``mismatched``: the
    pattern does not match. Both are false where nothing can fail."""
    value = _cased(spec, v)
    unmapped = mismatched = pl.lit(False)
    if spec.map:
        mapped = _lookup(dict(spec.map), v)
        if spec.map_only:
            unmapped = mapped.is_null()
        value = pl.coalesce([mapped, value])
    if spec.pattern:
        mismatched = ~value.str.contains(spec.pattern)
    return value, unmapped, mismatched


def _elements(spec: FieldSpec, v: pl.Expr, null_values: tuple[str, ...]) -> tuple[pl.Expr, pl.Expr]:
    """(list value, error reason or null) of a list field: ``v`` split on the separator and
    every element cleaned (trim, remove, null markers; blanks dropped) and then treated as
    a text value (``_text``). An element that fails quarantines the row, or is dropped
    under ``on_invalid: null``."""
    e = pl.element()
    c = _clean(spec, e, null_values)
    cleaned = v.str.split(spec.separator).list.eval(c.filter(c.is_not_null() & (c != "")))
    value, unmapped, mismatched = _text(spec, e)
    checks = spec.map_only or spec.pattern is not None
    if not checks:
        out = cleaned.list.eval(value) if spec.case or spec.map else cleaned
        return out.fill_null(pl.lit([], dtype=pl.List(pl.String))), pl.lit(None, dtype=pl.String)
    if spec.on_invalid == "null":
        out = cleaned.list.eval(pl.when(unmapped | mismatched).then(None).otherwise(value).drop_nulls())
        return out.fill_null(pl.lit([], dtype=pl.List(pl.String))), pl.lit(None, dtype=pl.String)
    any_unmapped = cleaned.list.eval(unmapped).list.any()
    any_mismatched = cleaned.list.eval(mismatched).list.any()
    err = (pl.when(any_unmapped).then(pl.lit("unmapped_code"))
           .when(any_mismatched).then(pl.lit("invalid_value")).otherwise(None))
    return cleaned.list.eval(value).fill_null(pl.lit([], dtype=pl.List(pl.String))), err


def _years(day: date, years: int) -> date:
    """``day`` moved by whole ``years`` (29 February becomes the 28th in a common year)."""
    try:
        return day.replace(year=day.year + years)
    except ValueError:
        return day.replace(year=day.year + years, day=28)


def _two_digit_years(parsed: pl.Expr, name: str, kind: str, cutover: date | None) -> pl.Expr:
    """``parsed`` (read with a ``%y`` format) moved by a century into its field's window."""
    ref = cutover or date.today()
    lo, hi = (_years(ref, -100), ref) if name in PAST_ONLY else (_years(ref, -80), _years(ref, 20))
    if kind == "datetime":  # compare date-times against the end of the window's days
        lo_t, hi_t = (datetime.combine(d + timedelta(days=1), datetime.min.time()) for d in (lo, hi))
        return (pl.when(parsed >= hi_t).then(parsed.dt.offset_by("-100y"))
                .when(parsed < lo_t).then(parsed.dt.offset_by("100y")).otherwise(parsed))
    return (pl.when(parsed > hi).then(parsed.dt.offset_by("-100y"))
            .when(parsed <= lo).then(parsed.dt.offset_by("100y")).otherwise(parsed))


def _typed(spec: FieldSpec, field: canonical.Field, v: pl.Expr, source_dtype: pl.DataType | None,
           null_values: tuple[str, ...] = (), cutover: date | None = None) -> tuple[pl.Expr, pl.Expr]:
    """(typed value, error reason or null) for a cleaned string value ``v``."""
    kind = field.kind
    present = v.is_not_null()
    invalid_ok = spec.on_invalid == "null"
    if kind in ("date", "datetime") and source_dtype is not None and source_dtype.is_temporal():
        value = _src(spec.base_columns[0]).cast(field.dtype)
        return value, pl.lit(None, dtype=pl.String)

    def placed(parsed: pl.Expr, fmt: str) -> pl.Expr:
        return _two_digit_years(parsed, spec.name, kind, cutover) if "%y" in fmt else parsed

    if kind == "date":
        value = _parse_date(v, spec.formats, spec.name, cutover)
        reason = "unparseable_date"
    elif kind == "datetime":
        value = _first_format(v, spec.formats, lambda text, f: placed(
            _local(text, f) if _offset(f) else text.str.to_datetime(f, strict=False, time_unit="us"), f))
        reason = "unparseable_date"
    elif kind == "boolean":
        tv = [t.upper() for t in spec.true_values]
        fv = [f.upper() for f in spec.false_values]
        up = v.str.to_uppercase()
        value = pl.when(up.is_in(tv)).then(True).when(up.is_in(fv)).then(False).otherwise(None)
        reason = "invalid_value"
    elif kind == "list":
        return _elements(spec, v, null_values)
    elif kind == "sharing":
        return _sharing(spec, v)
    elif kind == "enum":
        text = _cased(spec, v)
        if spec.map:
            mapped = _lookup(dict(spec.map), v)
            text = mapped if spec.map_only else pl.coalesce([mapped, text])
        value = text.cast(field.dtype, strict=False)
        reason = "unmapped_code"
    else:
        value, unmapped, mismatched = _text(spec, v)
        if field.pattern:
            mismatched = mismatched | ~value.str.contains(field.pattern)
        failed = unmapped | mismatched
        if invalid_ok:
            value = pl.when(present & failed).then(None).otherwise(value)
            return value, pl.lit(None, dtype=pl.String)
        err = (pl.when(present & unmapped).then(pl.lit("unmapped_code"))
               .when(present & mismatched).then(pl.lit("invalid_value")).otherwise(None))
        return value, err
    if invalid_ok:
        return value, pl.lit(None, dtype=pl.String)
    return value, pl.when(present & value.is_null()).then(pl.lit(reason)).otherwise(None)


def _parse_date(v: pl.Expr, formats: tuple[str, ...], name: str, cutover: date | None) -> pl.Expr:
    """A text value as a date by the first of ``formats`` it matches (null if none); a
    two-digit year is placed in field ``name``'s window by ``cutover`` (``_two_digit_years``)."""
    def parsed_as(text: pl.Expr, f: str) -> pl.Expr:
        value = _local(text, f).dt.date() if _offset(f) else text.str.to_date(f, strict=False)
        return _two_digit_years(value, name, "date", cutover) if "%y" in f else value
    return _first_format(v, formats, lambda text, f: parsed_as(text, f))


def _first_format(v: pl.Expr, formats: tuple[str, ...], parse: Callable[[pl.Expr, str], pl.Expr]) -> pl.Expr:
    """``v`` read by the first of ``formats`` that reads it (null if none). Each later format
    is given only the values the earlier ones did not read (a null is not parsed): a column
    in its first format is parsed once, not once per format."""
    found = parse(v, formats[0])
    for f in formats[1:]:
        found = pl.coalesce([found, parse(pl.when(found.is_null()).then(v), f)])
    return found


def _sharing(spec: FieldSpec, v: pl.Expr) -> tuple[pl.Expr, pl.Expr]:
    """(setting, error reason or null) of a sharing setting (``canonical.SHARING_SETTING``).

    The value is matched, in any case, against the profile's dissent, consent and opt-out
    values; a value in none of them is kept as ``unrecognised`` — never an error and never
    dropped: the sharing stage treats it as a dissent and reports it (migrate/sharing.py).
    The date column (``date``), read with the field's formats, fails the row like any date
    (``unparseable_date``) unless ``on_invalid: null``. A blank value is no setting at all.
    """
    kind = v.str.strip_chars().str.to_uppercase().replace_strict(spec.sharing_values, default="unrecognised",
                                                                 return_dtype=pl.String)
    err: pl.Expr = pl.lit(None, dtype=pl.String)
    when: pl.Expr = pl.lit(None, dtype=pl.Date)
    if spec.date:
        text, when = pl.col(f"__d_{spec.name}"), pl.col(f"__t_{spec.name}")
        if spec.on_invalid != "null":
            err = pl.when(v.is_not_null() & text.is_not_null() & when.is_null()).then(pl.lit("unparseable_date"))
    column = ", ".join(spec.base_columns) or None
    setting = pl.struct(kind.alias("kind"), v.alias("value"), when.alias("date"),
                        pl.lit(column, dtype=pl.String).alias("column"))
    return pl.when(v.is_not_null()).then(setting), err


def _offset(fmt: str) -> bool:
    return "%z" in fmt or "%:z" in fmt


def _local(v: pl.Expr, fmt: str) -> pl.Expr:
    """A value with a UTC offset as the canonical local wall-clock time (``LOCAL_TIMEZONE``)."""
    return (v.str.to_datetime(fmt, strict=False, time_unit="us", time_zone="UTC")
            .dt.convert_time_zone(canonical.LOCAL_TIMEZONE).dt.replace_time_zone(None))


def _other(column: str, source_schema: Mapping[str, pl.DataType], null_values: tuple[str, ...]) -> pl.Expr:
    """A column a field reads beside its value (``refine``, ``implied_by``, a sharing setting's
    ``date``): trimmed, with blanks, the explicit null and null markers as null."""
    text = _src(column) if source_schema.get(column, pl.String()) == pl.String() else _src(column).cast(pl.String)
    text = _blank_to_null(text.str.strip_chars())
    return pl.when(text.is_in(list(null_values))).then(None).otherwise(text) if null_values else text


def _refine_source(spec: FieldSpec, source_schema: Mapping[str, pl.DataType], null_values: tuple[str, ...]) -> pl.Expr:
    """The refine column's value, trimmed, with blanks and null markers as null."""
    assert spec.refine is not None
    return _other(spec.refine.column, source_schema, null_values)


def _implied(spec: FieldSpec, source_schema: Mapping[str, pl.DataType], null_values: tuple[str, ...]) -> pl.Expr:
    """The raw value the ``implied_by`` column implies (null where its value is not in the map)."""
    assert spec.implied_by is not None
    return _lookup(dict(spec.implied_by.map), _other(spec.implied_by.column, source_schema, null_values))


def _with_implied(spec: FieldSpec, whole: pl.Expr, source_schema: Mapping[str, pl.DataType],
                  null_values: tuple[str, ...]) -> tuple[pl.Expr, list[pl.Expr]]:
    """(the field's cleaned value with the implied value where its own column was not sent,
    the stage-1 columns ``__o_`` (its own column sent a value) and ``__i_`` (the implied raw
    value, whether used or not)). The explicit null ``""`` is sent: it clears, never implies."""
    if spec.implied_by is None:
        return whole, []
    implied = _implied(spec, source_schema, null_values)
    own = whole.is_not_null()
    used = pl.when(own | _cleared(spec, source_schema)).then(whole).otherwise(implied)
    return used, [own.alias(f"__o_{spec.name}"), implied.alias(f"__i_{spec.name}")]


def _implied_check(spec: FieldSpec, field: canonical.Field, value: pl.Expr, err: pl.Expr,
                   source_dtype: pl.DataType | None, source_schema: Mapping[str, pl.DataType],
                   null_values: tuple[str, ...]) -> tuple[pl.Expr, pl.Expr, pl.Expr]:
    """(value, error reason, ``__iv_`` the implied value typed and refined) of a field with
    ``implied_by``, given its typed and refined ``value`` and ``err``.

    Where its own column sent a value that becomes something other than what the implied
    value becomes, the row is quarantined (``conflicting_value``): neither is believed. A
    temporal source (Parquet) is typed by its dtype, so where it was not sent the implied
    value (text) is typed here, by ``formats``.
    """
    implied, implied_err = _typed(spec, field, pl.col(f"__i_{spec.name}"), None, null_values)
    refined = _refined(spec, field, implied, source_schema, null_values)
    implied = (refined[0] if refined is not None else implied).cast(field.dtype)
    own = pl.col(f"__o_{spec.name}")
    if source_dtype is not None and source_dtype.is_temporal():
        value = pl.when(own).then(value).otherwise(implied)
        err = pl.when(own).then(err).otherwise(implied_err)
    conflict = own & value.is_not_null() & implied.is_not_null() & (value.cast(field.dtype) != implied)
    err = pl.when(err.is_null() & conflict).then(pl.lit("conflicting_value")).otherwise(err)
    return value, err, implied.alias(f"__iv_{spec.name}")


def _refined(spec: FieldSpec, field: canonical.Field, value: pl.Expr, source_schema: Mapping[str, pl.DataType],
             null_values: tuple[str, ...]) -> tuple[pl.Expr, pl.Expr] | None:
    """(value, refine failed) for a field with ``refine``: where the value is one of
    ``refine.when`` and the refine column is not blank, the column's mapped value."""
    if spec.refine is None:
        return None
    second = _refine_source(spec, source_schema, null_values)
    applies = value.cast(pl.String).is_in(list(spec.refine.when)).fill_null(False) & second.is_not_null()
    mapped = _lookup(dict(spec.refine.map), second)
    refined = pl.when(applies).then(mapped.cast(field.dtype)).otherwise(value)
    return refined, applies & mapped.is_null()


def _problem_text(spec: FieldSpec, field: canonical.Field, v: pl.Expr, source_schema: Mapping[str, pl.DataType],
                  null_values: tuple[str, ...], quotable: bool = True, alone: pl.Expr | None = None) -> pl.Expr:
    """Words for the field's problem, keyed on its reason column. The value is quoted only
    when ``quotable`` (the field is not identifying and none of its source columns feeds an
    identifying field) and the problem is the row's only one (``alone``): a row whose
    columns are misaligned fails several fields, and a surname or birth date that slid into
    a code column must not be quoted."""
    e = pl.col(f"__e_{spec.name}")
    alone = pl.lit(True) if alone is None else alone
    shown = (pl.when(alone).then(pl.concat_str([pl.lit(" (value '"), v, pl.lit("')")])).otherwise(pl.lit(""))
             if quotable and not field.pii else pl.lit(""))
    fmts = ", ".join(spec.formats)
    if field.kind == "sharing" and spec.date:  # only its date can fail to parse; quoted as any value
        shown_date = (pl.when(alone).then(pl.concat_str([pl.lit(" (value '"), pl.col(f"__d_{spec.name}"),
                                                         pl.lit("')")])).otherwise(pl.lit(""))
                      if quotable and not field.pii else pl.lit(""))
        return pl.when(e == "unparseable_date").then(pl.concat_str([
            pl.lit(f"{spec.name} (date column {spec.date}) matches none of the formats {fmts}"), shown_date])
        ).when(e == "missing_required").then(pl.lit(f"{spec.label} is required but blank"))
    allowed = ", ".join(field.enum_values or ())
    unmapped = f"{spec.label} has {'an element with ' if field.kind == 'list' else ''}no mapping"
    invalid = (f"{spec.label} has an element not matching {spec.pattern}" if field.kind == "list"
               else f"{spec.label} is not a valid {field.kind}"
               + (f" matching {spec.pattern or field.pattern}" if spec.pattern or field.pattern else ""))
    refine: pl.Expr = pl.lit(False)
    refine_text: pl.Expr = pl.lit(None, dtype=pl.String)
    if spec.refine is not None:
        second = _refine_source(spec, source_schema, null_values)
        base = _typed(spec, field, v, None)[0].cast(pl.String)
        refine = (base.is_in(list(spec.refine.when)).fill_null(False) & second.is_not_null()
                  & _lookup(dict(spec.refine.map), second).is_null())
        second_shown = (pl.when(alone).then(pl.concat_str([pl.lit(" (value '"), second, pl.lit("')")]))
                        .otherwise(pl.lit("")) if quotable and not field.pii else pl.lit(""))
        refine_text = pl.concat_str([
            pl.lit(f"{spec.name}: column {spec.refine.column} (which refines {', '.join(spec.refine.when)}) has no "
                   "mapping"), second_shown, pl.lit(f"; canonical values: {allowed}")])
    conflict = (_conflict_text(spec, field, v, source_schema, null_values, quotable, alone)
                if spec.implied_by is not None else pl.lit(None, dtype=pl.String))
    return (
        pl.when(e == "missing_required").then(pl.lit(f"{spec.label} is required but blank"))
        .when(e == "conflicting_value").then(conflict)
        .when((e == "unmapped_code") & refine).then(refine_text)
        .when(e == "unparseable_date").then(pl.concat_str([pl.lit(f"{spec.label} matches none of the formats {fmts}"), shown]))
        .when(e == "unmapped_code").then(pl.concat_str([pl.lit(unmapped), shown,
                                                       pl.lit(f"; canonical values: {allowed}" if allowed else "")]))
        .when(e == "invalid_value").then(pl.concat_str([pl.lit(invalid), shown]))
        .otherwise(None)
    )


def _conflict_text(spec: FieldSpec, field: canonical.Field, v: pl.Expr, source_schema: Mapping[str, pl.DataType],
                   null_values: tuple[str, ...], quotable: bool = True, alone: pl.Expr | None = None) -> pl.Expr:
    """Words for ``conflicting_value``: what was sent, and what the other column implies
    (values quoted only as ``_problem_text`` quotes them: a field that is not identifying,
    fed by no column that feeds one, and the row's only problem)."""
    assert spec.implied_by is not None  # only fields with implied_by can conflict
    own = ", ".join(spec.base_columns)
    other = spec.implied_by.column

    def text(column: str) -> pl.Expr:
        return pl.col(column).list.join(";") if field.kind == "list" else pl.col(column).cast(pl.String)

    plain = pl.lit(f"{spec.name}: column {own} contradicts the value column {other} implies; "
                   "the row is held rather than either believed")
    if field.pii or not quotable:
        return plain
    quoted = pl.concat_str([
        pl.lit(f"{spec.name}: column {own} sends '"), v, pl.lit("' ("), text(spec.name),
        pl.lit(f") but column {other} '"), _other(other, source_schema, null_values), pl.lit("' implies '"),
        pl.col(f"__i_{spec.name}"), pl.lit("' ("), text(f"__iv_{spec.name}"),
        pl.lit("); the row is held rather than either believed")])
    return quoted if alone is None else pl.when(alone).then(quoted).otherwise(plain)


def compile_table(spec: TableSpec, source_schema: Mapping[str, pl.DataType], profile: Profile,
                  cutover: date | None = None) -> CompiledTable:
    """Compile ``spec`` for a source frame with ``source_schema`` (columns must be present);
    ``cutover`` places two-digit years (module docstring)."""
    table = canonical.TABLES[spec.name]
    mapped = {f.name: f for f in spec.fields}
    merge = spec.updates == "merge" and table.key is not None
    keys = _key_fields(spec.name)
    clean_exprs: list[pl.Expr] = []
    typed_exprs: list[pl.Expr] = []
    problem_exprs: list[pl.Expr] = []
    reasons: list[str] = []
    identifying = {c for f in spec.fields if table.field(f.name).pii for c in f.source_columns}
    alone = pl.sum_horizontal([pl.col(f"__e_{f.name}").is_not_null() for f in spec.fields]) <= 1
    for fspec in spec.fields:
        field = table.field(fspec.name)
        v = pl.col(f"__v_{fspec.name}")
        whole = _clean(fspec, _source(fspec, source_schema), profile.null_values, remove=field.kind != "list")
        whole, implied = _with_implied(fspec, whole, source_schema, profile.null_values)
        clean_exprs += [whole.alias(f"__v_{fspec.name}"), *implied]
        if field.kind == "sharing" and fspec.date:
            clean_exprs += _setting_date(fspec, source_schema, profile.null_values, cutover)
        if merge:
            clean_exprs.append(_cleared(fspec, source_schema).alias(f"__k_{fspec.name}"))
        src_dtype = source_schema.get(fspec.base_columns[0]) if fspec.base_columns else None
        value, err = _typed(fspec, field, v, src_dtype, profile.null_values, cutover)
        refined = _refined(fspec, field, value, source_schema, profile.null_values)
        if refined is not None:
            value, failed = refined
            err = pl.when(err.is_null() & failed).then(pl.lit("unmapped_code")).otherwise(err)
        if fspec.implied_by is not None:
            value, err, implied_value = _implied_check(fspec, field, value, err, src_dtype, source_schema,
                                                       profile.null_values)
            typed_exprs.append(implied_value)
        if fspec.required and not (merge and fspec.name not in keys):
            err = pl.when(v.is_null()).then(pl.lit("missing_required")).otherwise(err)
        typed_exprs += [value.cast(field.dtype).alias(fspec.name), err.alias(f"__e_{fspec.name}")]
        quotable = not field.pii and not identifying & set(fspec.source_columns)
        problem_exprs.append(_problem_text(fspec, field, v, source_schema, profile.null_values, quotable, alone))
        reasons.append(fspec.name)
    # A table's key, where the profile does not map it, is the source id (required by the profile).
    derived = [pl.col(source).alias(key) for key, source in _DERIVED_KEYS.get(spec.name, {}).items() if key not in mapped]
    errs = [pl.col(f"__e_{n}") for n in reasons]
    verdict = [
        pl.coalesce(errs).alias("__reason") if errs else pl.lit(None, dtype=pl.String).alias("__reason"),
        pl.coalesce([pl.when(pl.col(f"__e_{n}").is_not_null()).then(pl.lit(n)) for n in reasons]).alias("__field")
        if reasons else pl.lit(None, dtype=pl.String).alias("__field"),
    ]
    detail = (
        pl.concat_str([pl.col("source_file"), pl.lit(" row "), pl.col("source_row").cast(pl.String), pl.lit(": "),
                       pl.concat_str(problem_exprs, separator="; ", ignore_nulls=True)]).alias("__message"),
        pl.struct([_src(c).cast(pl.String).alias(c) for c in spec.source_columns]).struct.json_encode().alias("__raw"),
    )
    missing = [pl.lit(None, dtype=f.dtype).alias(f.name) for f in table.fields
               if f.name not in mapped and f.name not in _derived_names(spec.name, mapped)]
    verdict += _update_bits(spec, table, merge, keys)
    output = (*table.field_names, "source_file", "source_row", "__reason", "__field", "__touched", "__required")
    return CompiledTable(spec.name, (tuple(clean_exprs), tuple(typed_exprs), tuple(derived + missing + verdict)),
                         output, detail)


def _setting_date(spec: FieldSpec, source_schema: Mapping[str, pl.DataType],
                  null_values: tuple[str, ...], cutover: date | None) -> list[pl.Expr]:
    """``__d_<field>``: the sharing setting's date column as cleaned text, and ``__t_<field>``
    the date it holds (by the field's formats; a column the source already types as a date,
    in Parquet, as it is)."""
    assert spec.date is not None
    text = _other(spec.date, source_schema, null_values)
    dtype = source_schema.get(spec.date, pl.String())
    when = _src(spec.date).cast(pl.Date) if dtype.is_temporal() else _parse_date(text, spec.formats, spec.name, cutover)
    return [text.alias(f"__d_{spec.name}"), when.alias(f"__t_{spec.name}")]


def _key_fields(table: str) -> set[str]:
    """The fields that identify a row: never deferred, always touched."""
    key = canonical.TABLES[table].key
    return set() if key is None else {key, *_DERIVED_KEYS.get(table, {}).values()}


def _update_bits(spec: TableSpec, table: canonical.Table, merge: bool, keys: set[str]) -> list[pl.Expr]:
    """``__touched`` (the fields the row changes when it applies as an update) and
    ``__required`` (required fields checked on the state after it, not on the row), one
    bit per field in canonical order (``migrate.updates``).

    ``updates: replace``: every field the profile maps is touched (a blank one clears), and
    required fields are checked here, on the row. ``updates: merge``: a field is touched
    when its source sent a value or the explicit null ``""``; a blank field keeps the
    current value, so a required one is checked on the state.
    """
    bit = {n: 1 << i for i, n in enumerate(table.field_names)}
    derived = _derived_names(spec.name, {f.name: f for f in spec.fields})
    if not merge:
        mapped = sum(bit[n] for n in {*(f.name for f in spec.fields), *derived})
        return [pl.lit(mapped, dtype=pl.UInt64).alias("__touched"), pl.lit(0, dtype=pl.UInt64).alias("__required")]
    always = sum(bit[n] for n in derived)
    touched = [(pl.col(f"__v_{f.name}").is_not_null() | pl.col(f"__k_{f.name}")).cast(pl.UInt64) * bit[f.name]
               for f in spec.fields]
    deferred = sum(bit[f.name] for f in spec.fields if f.required and f.name not in keys)
    return [(pl.sum_horizontal(touched) + always).cast(pl.UInt64).alias("__touched"),
            pl.lit(deferred, dtype=pl.UInt64).alias("__required")]


def _derived_names(table: str, mapped: Mapping[str, FieldSpec]) -> set[str]:
    return {key for key in _DERIVED_KEYS.get(table, {}) if key not in mapped}


# Columns that pass through the mapping untouched: where the row came from, and the
# position ingest gives it among all sources of its table.
PASSTHROUGH = ("source_file", "source_row", "__order")


def _staged(frame: pl.LazyFrame, compiled: CompiledTable) -> pl.LazyFrame:
    names = frame.collect_schema().names()
    frame = frame.rename({c: f"__s_{c}" for c in names if c not in PASSTHROUGH})
    for stage in compiled.stages:
        frame = frame.with_columns(stage)
    return frame


def apply_mapping(frame: pl.LazyFrame, compiled: CompiledTable) -> pl.LazyFrame:
    """Map a source frame (with source_file, source_row) to canonical columns plus
    ``__reason`` and ``__field`` (null for a row that maps cleanly)."""
    extra = [c for c in ("__order",) if c in frame.collect_schema().names()]
    return _staged(frame, compiled).select(*compiled.output, *extra)


def explain_failures(frame: pl.LazyFrame, compiled: CompiledTable) -> pl.LazyFrame:
    """For source rows that fail: source_file, source_row, ``__message`` and ``__raw``.

    Run over only the failing rows (a semi-join on source_row), so the text of messages
    and raw records is built for a handful of rows, not the whole extract.
    """
    return _staged(frame, compiled).select("source_file", "source_row", *compiled.detail)


def missing_columns(spec: TableSpec, present: tuple[str, ...]) -> list[str]:
    """Source columns the profile reads that the file does not have."""
    have = set(present)
    return [c for c in spec.source_columns if c not in have]


def cleaned_values(frame: pl.LazyFrame, table: str, spec: FieldSpec, profile: Profile) -> pl.LazyFrame:
    """``source_row`` and ``value``: field ``spec``'s source value after trim, remove and the
    null markers — the text its formats, map or pattern then read (``handover check`` tries
    other formats on it). The same expressions as ``compile_table``, not a copy."""
    schema = frame.collect_schema()
    names = [c for c in schema.names() if c not in PASSTHROUGH]
    kind = canonical.TABLES[table].field(spec.name).kind
    value = _clean(spec, _source(spec, {c: schema[c] for c in names}), profile.null_values, remove=kind != "list")
    return frame.rename({c: f"__s_{c}" for c in names}).select("source_row", value.alias("value"))
