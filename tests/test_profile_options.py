"""Every field option × every field kind: the option either takes effect or the profile is
rejected (exit 2) with the file and YAML path. Nothing is silently ignored (issue #10:
``case: lower`` on a list field once did nothing and hid red flags).

The matrix below is this test's own statement of the product's behaviour, not a copy of
the code's table: each honoured pair has a probe (the option, a source value, what the
field must become) and a baseline without the option that must differ, so an option
that stopped working would fail here.
"""

from __future__ import annotations

from datetime import date, datetime
from pathlib import Path
from typing import Any

import polars as pl
import pytest

from migrate.errors import ProfileError
from migrate.mapping import apply_mapping, compile_table
from migrate.profile import FIELD_OPTIONS, parse_profile
from migrate.profile_options import KINDS

# A canonical field of each kind: (table, field).
FIELDS = {
    "string": ("referrals", "body_site"),
    "date": ("referrals", "received_date"),
    "datetime": ("contacts", "contact_datetime"),
    "boolean": ("referrals", "history_of_cancer"),
    "list": ("referrals", "red_flags"),
    "enum": ("referrals", "status"),
    "sharing": ("patients", "sharing_out"),
}
D, DT = date(2022, 1, 2), datetime(2022, 1, 2, 10, 30)
# Options every field of a kind carries in these probes (a sharing setting must say which
# values are a dissent); a probe's own options are written over them.
BASE: dict[str, dict[str, Any]] = {"sharing": {"dissent_values": ["No"]}}


def setting(kind: str | None, value: str | None, when: date | None = None, column: str | None = "x") -> Any:
    """A sharing setting as the mapping writes it (canonical.SHARING_SETTING)."""
    return {"kind": kind, "value": value, "date": when, "column": column}

# (option, kind) -> (field options, source columns, expected (value, reason), baseline options or None).
# A source column called "x" is what {column: x} reads. The baseline is mapped from the same
# row; it must give something else, which shows the option is what made the difference.
Probe = tuple[dict[str, Any], dict[str, str], tuple[Any, str | None], dict[str, Any] | None]
_SOURCE_VALUES = {"string": ("knee", "knee"), "date": ("2022-01-02", D), "datetime": ("2022-01-02 10:30", DT),
                  "boolean": ("Y", True), "list": ("a;b", ["a", "b"]), "enum": ("open", "open"),
                  "sharing": ("No", setting("dissent", "No"))}


def _source_probes() -> dict[tuple[str, str], Probe]:
    """column, columns, constant, split, sep: where a value comes from, for every kind."""
    probes: dict[tuple[str, str], Probe] = {}
    for kind, (raw, value) in _SOURCE_VALUES.items():
        columns = constant = value
        if kind == "sharing":  # the setting names the column(s) it came from
            columns, constant = setting("dissent", "No", column="x, y"), setting("dissent", "No", column=None)
        probes[("column", kind)] = ({"column": "x"}, {"x": raw}, (value, None), None)
        probes[("columns", kind)] = ({"columns": ["x", "y"]}, {"x": raw, "y": ""}, (columns, None), None)
        probes[("constant", kind)] = ({"constant": raw}, {"x": "ignored"}, (constant, None), None)
        probes[("split", kind)] = ({"split": {"column": "x", "sep": "|", "index": 1}}, {"x": f"other|{raw}"},
                                   (value, None), None)
    sep = {"string": ("left", "knee", "-", "left-knee"), "date": ("2022-01", "02", "-", D),
           "datetime": ("2022-01-02 10", "30", ":", DT), "boolean": ("tr", "ue", "", True),
           "list": ("a", "b", ";", ["a", "b"]), "enum": ("clo", "sed", "", "closed"),
           "sharing": ("N", "o", "", setting("dissent", "No", column="x, y"))}
    for kind, (a, b, s, value) in sep.items():
        probes[("sep", kind)] = ({"columns": ["x", "y"], "sep": s}, {"x": a, "y": b}, (value, None),
                                 {"columns": ["x", "y"]})
    return probes


BAD = {"date": "unparseable_date", "datetime": "unparseable_date", "boolean": "invalid_value", "enum": "unmapped_code"}
PROBES: dict[tuple[str, str], Probe] = {
    **_source_probes(),
    # trim: false keeps surrounding spaces (which then fail to parse, or stay in the value)
    ("trim", "string"): ({"column": "x", "trim": False}, {"x": " knee "}, (" knee ", None), {"column": "x"}),
    ("trim", "date"): ({"column": "x", "trim": False}, {"x": "2022-01-02 "}, (None, BAD["date"]), {"column": "x"}),
    ("trim", "datetime"): ({"column": "x", "trim": False}, {"x": "2022-01-02 10:30 "}, (None, BAD["datetime"]),
                           {"column": "x"}),
    ("trim", "boolean"): ({"column": "x", "trim": False}, {"x": " Y"}, (None, BAD["boolean"]), {"column": "x"}),
    ("trim", "list"): ({"column": "x", "trim": False}, {"x": "a; b"}, (["a", " b"], None), {"column": "x"}),
    ("trim", "enum"): ({"column": "x", "trim": False}, {"x": " open"}, (None, BAD["enum"]), {"column": "x"}),
    # remove: characters deleted anywhere (in each element of a list)
    ("remove", "string"): ({"column": "x", "remove": "-"}, {"x": "kn-ee"}, ("knee", None), {"column": "x"}),
    ("remove", "date"): ({"column": "x", "remove": "*"}, {"x": "2022-01-02*"}, (D, None), {"column": "x"}),
    ("remove", "datetime"): ({"column": "x", "remove": "*"}, {"x": "*2022-01-02 10:30"}, (DT, None), {"column": "x"}),
    ("remove", "boolean"): ({"column": "x", "remove": "*"}, {"x": "Y*"}, (True, None), {"column": "x"}),
    ("remove", "list"): ({"column": "x", "remove": "-"}, {"x": "a-1;b"}, (["a1", "b"], None), {"column": "x"}),
    ("remove", "enum"): ({"column": "x", "remove": "-"}, {"x": "op-en"}, ("open", None), {"column": "x"}),
    # case: text, coded values and each element of a list
    ("case", "string"): ({"column": "x", "case": "lower"}, {"x": "KNEE"}, ("knee", None), {"column": "x"}),
    ("case", "list"): ({"column": "x", "case": "lower"}, {"x": "CES;Night Pain"}, (["ces", "night pain"], None),
                       {"column": "x"}),
    ("case", "enum"): ({"column": "x", "case": "lower"}, {"x": "OPEN"}, ("open", None), {"column": "x"}),
    # map: source value -> canonical value (any case), unmapped values pass through
    ("map", "string"): ({"column": "x", "map": {"L-KNEE": "knee"}}, {"x": "l-knee"}, ("knee", None), {"column": "x"}),
    ("map", "list"): ({"column": "x", "map": {"CES": "cauda_equina"}}, {"x": "ces;fever"},
                      (["cauda_equina", "fever"], None), {"column": "x"}),
    ("map", "enum"): ({"column": "x", "map": {"O": "open"}}, {"x": "o"}, ("open", None), {"column": "x"}),
    # map_only: an unmapped value is an error
    ("map_only", "string"): ({"column": "x", "map": {"K": "knee"}, "map_only": True}, {"x": "hip"},
                             (None, "unmapped_code"), {"column": "x", "map": {"K": "knee"}}),
    ("map_only", "list"): ({"column": "x", "map": {"CES": "cauda_equina"}, "map_only": True}, {"x": "CES;fever"},
                           (None, "unmapped_code"), {"column": "x", "map": {"CES": "cauda_equina"}}),
    ("map_only", "enum"): ({"column": "x", "map": {"O": "open"}, "map_only": True}, {"x": "closed"},
                           (None, "unmapped_code"), {"column": "x", "map": {"O": "open"}}),
    # pattern: the value (each element) must match
    ("pattern", "string"): ({"column": "x", "pattern": "^[a-z]+$"}, {"x": "knee1"}, (None, "invalid_value"),
                            {"column": "x"}),
    ("pattern", "list"): ({"column": "x", "pattern": "^[a-z]+$"}, {"x": "a;b1"}, (None, "invalid_value"),
                          {"column": "x"}),
    # formats: dates and date-times
    ("formats", "date"): ({"column": "x", "formats": ["%d/%m/%Y"]}, {"x": "02/01/2022"}, (D, None), {"column": "x"}),
    ("formats", "datetime"): ({"column": "x", "formats": ["%d/%m/%Y %H:%M"]}, {"x": "02/01/2022 10:30"}, (DT, None),
                              {"column": "x"}),
    ("separator", "list"): ({"column": "x", "separator": "|"}, {"x": "a|b"}, (["a", "b"], None), {"column": "x"}),
    # refine: a second column decides between coded values
    ("refine", "enum"): ({"column": "x", "refine": {"column": "y", "when": ["closed"], "map": {"REJ": "rejected"}}},
                         {"x": "closed", "y": "REJ"}, ("rejected", None), {"column": "x"}),
    # implied_by: where x is not sent, the value y implies is read as x's would be (any kind)
    **{("implied_by", kind): ({"column": "x", "implied_by": {"column": "y", "map": {"E": raw}}}, {"x": "", "y": "e"},
                              (value, None), {"column": "x"})
       for kind, (raw, value) in {**_SOURCE_VALUES, "enum": ("closed", "closed")}.items()},
    ("true_values", "boolean"): ({"column": "x", "true_values": ["Ja"]}, {"x": "ja"}, (True, None), {"column": "x"}),
    ("false_values", "boolean"): ({"column": "x", "false_values": ["Nein"]}, {"x": "NEIN"}, (False, None),
                                  {"column": "x"}),
    # required: a blank value is an error
    **{("required", kind): ({"column": "x", "required": True}, {"x": ""}, (None, "missing_required"), {"column": "x"})
       for kind in KINDS},
    # on_invalid: null — a value that fails becomes null (text and lists: with pattern or map_only)
    ("on_invalid", "date"): ({"column": "x", "on_invalid": "null"}, {"x": "soon"}, (None, None), {"column": "x"}),
    ("on_invalid", "datetime"): ({"column": "x", "on_invalid": "null"}, {"x": "soon"}, (None, None), {"column": "x"}),
    ("on_invalid", "boolean"): ({"column": "x", "on_invalid": "null"}, {"x": "maybe"}, (None, None), {"column": "x"}),
    ("on_invalid", "enum"): ({"column": "x", "on_invalid": "null"}, {"x": "pending"}, (None, None), {"column": "x"}),
    ("on_invalid", "string"): ({"column": "x", "pattern": "^[a-z]+$", "on_invalid": "null"}, {"x": "knee1"},
                               (None, None), {"column": "x", "pattern": "^[a-z]+$"}),
    ("on_invalid", "list"): ({"column": "x", "pattern": "^[a-z]+$", "on_invalid": "null"}, {"x": "a;b1"},
                             (["a"], None), {"column": "x", "pattern": "^[a-z]+$"}),
    # a sharing setting: its value lists, its date column (with formats), and only the date can fail
    ("trim", "sharing"): ({"column": "x", "trim": False}, {"x": " No "}, (setting("dissent", " No "), None),
                          {"column": "x"}),
    ("remove", "sharing"): ({"column": "x", "remove": "*"}, {"x": "N*o"}, (setting("dissent", "No"), None),
                            {"column": "x"}),
    ("dissent_values", "sharing"): ({"column": "x", "dissent_values": ["Dissent", "N"]}, {"x": "n"},
                                    (setting("dissent", "n"), None), {"column": "x"}),
    ("consent_values", "sharing"): ({"column": "x", "consent_values": ["Yes", "Y"]}, {"x": "YES"},
                                    (setting("consent", "YES"), None), {"column": "x"}),
    ("opt_out_values", "sharing"): ({"column": "x", "opt_out_values": ["Type 1"]}, {"x": "type 1"},
                                    (setting("opt_out", "type 1"), None), {"column": "x"}),
    ("date", "sharing"): ({"column": "x", "date": "y"}, {"x": "No", "y": "2022-01-02"},
                          (setting("dissent", "No", D), None), {"column": "x"}),
    ("formats", "sharing"): ({"column": "x", "date": "y", "formats": ["%d/%m/%Y"]}, {"x": "No", "y": "02/01/2022"},
                             (setting("dissent", "No", D), None), {"column": "x", "date": "y"}),
    ("on_invalid", "sharing"): ({"column": "x", "date": "y", "on_invalid": "null"}, {"x": "No", "y": "soon"},
                                (setting("dissent", "No"), None), {"column": "x", "date": "y"}),
}

# Options given alone where they cannot take effect, and the value tried.
REJECTED: dict[tuple[str, str], dict[str, Any]] = {}
_TRY = {"case": "lower", "map": {"A": "b"}, "map_only": True, "pattern": "^x$", "formats": ["%d/%m/%Y"],
        "separator": "|", "true_values": ["Ja"], "false_values": ["Nein"], "on_invalid": "null",
        "refine": {"column": "y", "when": ["closed"], "map": {"REJ": "rejected"}},
        "dissent_values": ["No"], "consent_values": ["Yes"], "opt_out_values": ["T1"], "date": "y"}
for _option, _value in _TRY.items():
    for _kind in KINDS:
        if (_option, _kind) not in PROBES:
            REJECTED[(_option, _kind)] = {"column": "x", _option: _value}
# Pairs honoured only with another option are rejected without it.
REJECTED_ALONE = {
    ("on_invalid", "string"): {"column": "x", "on_invalid": "null"},
    ("on_invalid", "list"): {"column": "x", "on_invalid": "null"},
    ("sep", "string"): {"column": "x", "sep": "-"},
    ("map_only", "string"): {"column": "x", "map_only": True},
    ("implied_by", "string"): {"constant": "x", "implied_by": {"column": "y", "map": {"E": "knee"}}},
    # on a sharing setting, formats and on_invalid read its date column: without one, nothing
    ("formats", "sharing"): {"column": "x", "formats": ["%d/%m/%Y"]},
    ("on_invalid", "sharing"): {"column": "x", "on_invalid": "null"},
}


def test_the_matrix_decides_every_option_for_every_kind() -> None:
    """A new option or kind must be decided here (honoured with a probe, or rejected)."""
    pairs = {(o, k) for o in FIELD_OPTIONS for k in KINDS}
    assert set(PROBES) | set(REJECTED) == pairs
    assert not set(PROBES) & set(REJECTED)


def _profile(kind: str, options: dict[str, Any]) -> Any:
    table, field = FIELDS[kind]
    fields: dict[str, Any] = {field: BASE.get(kind, {}) | options}
    if table == "referrals":
        fields |= {"source_referral_id": "id", "patient_key": "id"}
    elif table == "contacts":
        fields |= {"contact_key": "id", "referral_key": "id"}
    else:
        fields |= {"source_patient_id": "id"}
    tables = {"patients": {"files": "p.csv", "fields": {"source_patient_id": "id"}}} | {
        table: {"files": "x.csv", "fields": fields}}
    doc = {"profile": "t", "format_version": 1,
           "defaults": {"date_formats": ["%Y-%m-%d"], "datetime_formats": ["%Y-%m-%d %H:%M"]}, "tables": tables}
    return parse_profile(doc, Path("t.yaml"))


def _mapped(kind: str, options: dict[str, Any], row: dict[str, str]) -> tuple[Any, str | None]:
    table, field = FIELDS[kind]
    profile = _profile(kind, options)
    source = pl.DataFrame([{"id": "1", "x": "", "y": "", **row}], schema={c: pl.String for c in ("id", "x", "y")})
    source = source.with_columns(pl.lit("x.csv").alias("source_file"), pl.lit(1, dtype=pl.Int64).alias("source_row"))
    out = apply_mapping(source.lazy(), compile_table(profile.tables[table], source.schema, profile)).collect()
    value = out[field][0]
    if isinstance(value, pl.Series):
        value = value.to_list()
    return value, out["__reason"][0]


@pytest.mark.parametrize(("option", "kind"), sorted(PROBES))
def test_an_option_takes_effect_where_it_can_mean_something(option: str, kind: str) -> None:
    options, row, expected, baseline = PROBES[(option, kind)]
    assert _outcome(_mapped(kind, options, row)) == _outcome(expected)
    if baseline is not None:
        assert _outcome(_mapped(kind, baseline, row)) != _outcome(expected), "the option made no difference"


def _outcome(mapped: tuple[Any, str | None]) -> tuple[Any, str | None]:
    """A row with a reason is quarantined: its reason is the outcome, whatever its value."""
    value, reason = mapped
    return (None, reason) if reason is not None else (value, None)


@pytest.mark.parametrize(("option", "kind"), sorted(REJECTED) + sorted(REJECTED_ALONE))
def test_an_option_that_cannot_apply_is_a_profile_error(option: str, kind: str) -> None:
    options = REJECTED.get((option, kind)) or REJECTED_ALONE[(option, kind)]
    with pytest.raises(ProfileError) as exc:
        _profile(kind, options)
    table, field = FIELDS[kind]
    assert exc.value.exit_code == 2
    assert any(p.startswith(f"t.yaml: tables.{table}.fields.{field}.{option}: ") for p in exc.value.problems), \
        exc.value.problems


def test_every_misplaced_option_is_reported_at_once() -> None:
    doc = {"profile": "t", "format_version": 1, "defaults": {"date_formats": ["%Y-%m-%d"]},
           "tables": {"patients": {"files": "p.csv", "fields": {
               "source_patient_id": "id",
               "birth_date": {"column": "dob", "case": "upper", "separator": ";"},
               "sex": {"column": "sex", "true_values": ["M"]},
               "family_name": {"column": "n", "formats": ["%Y"]},
           }}}}
    with pytest.raises(ProfileError) as exc:
        parse_profile(doc, Path("acme.yaml"))
    paths = sorted(p.split(": ")[1] for p in exc.value.problems)
    assert paths == ["tables.patients.fields.birth_date.case", "tables.patients.fields.birth_date.separator",
                     "tables.patients.fields.family_name.formats", "tables.patients.fields.sex.true_values"]
    assert "applies to list fields" in "\n".join(exc.value.problems)


@pytest.mark.parametrize(("table", "written"), [
    ({"format": "parquet", "files": "p.csv"}, "parquet"),
    ({"files": ["p*.parquet", "q.PQ"]}, "parquet"),
    ({"format": "hl7v2", "files": "*.hl7", "events": ["A04"]}, "hl7v2"),
])
@pytest.mark.parametrize("option", ["encoding", "delimiter", "quote_char", "on_encoding_error"])
def test_delimited_text_options_on_a_table_of_another_format_are_profile_errors(
        table: dict[str, Any], written: str, option: str) -> None:
    value = {"encoding": "cp1252", "delimiter": ";", "quote_char": "'", "on_encoding_error": "replace"}[option]
    fields = {"source_patient_id": "PID-3.1" if written == "hl7v2" else "id"}
    doc = {"profile": "t", "format_version": 1,
           "tables": {"patients": {**table, option: value, "fields": fields}}}
    with pytest.raises(ProfileError) as exc:
        parse_profile(doc, Path("t.yaml"))
    assert [p for p in exc.value.problems if p.startswith(f"t.yaml: tables.patients.{option}: does not apply to "
                                                          f"a {written} table")]
    # In defaults they apply where they can, and nowhere else: no error.
    parse_profile({**doc, "defaults": {option: value},
                   "tables": {"patients": {**table, "fields": fields}}}, Path("t.yaml"))


@pytest.mark.parametrize("split", [{"column": "n", "sep": ",", "index": 1, "rst": True},
                                   {"column": "n", "sep": ",", "index": 1, "rest": "yes"}])
def test_a_split_with_an_unknown_key_or_a_rest_that_is_not_true_or_false_is_rejected(split: dict[str, Any]) -> None:
    doc = {"profile": "t", "format_version": 1, "tables": {"patients": {"files": "p.csv", "fields": {
        "source_patient_id": "id", "given_names": {"split": split}}}}}
    with pytest.raises(ProfileError) as exc:
        parse_profile(doc, Path("t.yaml"))
    assert exc.value.problems[0].startswith("t.yaml: tables.patients.fields.given_names.split: expected")
