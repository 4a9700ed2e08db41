"""The one sharing rule (migrate/sharing.py): the latest entry per patient wins across every
source; a same-day dissent beats a consent; an undated dissent is the latest entry, an
undated consent the earliest; an unrecognised value counts as a dissent; opt-outs never
decide. Held against a plain statement of the rule on entries hypothesis draws, in any order."""

from __future__ import annotations

from datetime import date, timedelta
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from migrate import sharing
from migrate.errors import ProfileError
from migrate.profile import parse_profile
from migrate.rules import load_pack

SOURCES = list(sharing.SOURCES)
KINDS = list(sharing.KINDS)


def entry(patient: str, kind: str, when: date | None, source: str = "coded_entry", row: int = 1,
          label: str | None = None) -> dict[str, Any]:
    return {"patient_key": patient, "kind": kind, "scope": sharing.SCOPE_OF_KIND[kind], "source": source,
            "label": label or f"{source}:{kind}:{row}", "system": None, "value": kind, "recorded_date": when,
            "table": "x", "source_file": f"{source}.csv", "source_row": row, "source_column": None}


def frame(rows: list[dict[str, Any]]) -> pl.LazyFrame:
    return pl.LazyFrame(rows, schema=sharing.ENTRY_SCHEMA)


def decided(rows: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    out = sharing.decide(frame(rows)).collect()
    return {r["patient_key"]: r for r in out.iter_rows(named=True)}


def reference(rows: list[dict[str, Any]]) -> dict[str, tuple[str | None, bool]]:
    """The rule in plain Python: (state, blocked) per patient."""
    out: dict[str, tuple[str | None, bool]] = {}
    for patient in {r["patient_key"] for r in rows}:
        own = [r for r in rows if r["patient_key"] == patient and r["kind"] != "opt_out"]
        if not own:
            out[patient] = (None, False)
            continue
        blocking = [r for r in own if r["kind"] in ("dissent", "unrecognised")]
        lifting = [r for r in own if r["kind"] == "consent"]

        def latest(rs: list[dict[str, Any]], undated: date) -> date | None:
            return max((r["recorded_date"] or undated for r in rs), default=None)

        b, c = latest(blocking, date.max), latest(lifting, date.min)
        if b is not None and (c is None or b >= c):
            kinds = {r["kind"] for r in blocking if (r["recorded_date"] or date.max) == b}
            out[patient] = ("dissent" if "dissent" in kinds and "unrecognised" not in kinds else None, True)
        else:
            out[patient] = ("consent", False)
    return out


def test_same_day_dissent_beats_consent_and_undated_entries_lean_to_blocking() -> None:
    d = date(2022, 1, 1)
    got = decided([
        entry("A", "consent", d, "patient_setting"), entry("A", "dissent", d, "practice_setting", 2),
        entry("B", "dissent", None, "practice_setting"), entry("B", "consent", date(2030, 1, 1), "coded_entry", 2),
        entry("C", "consent", None, "patient_setting"), entry("C", "dissent", date(1990, 1, 1), "coded_entry", 2),
        entry("D", "unrecognised", d, "patient_setting"), entry("D", "consent", d - timedelta(1), "coded_entry", 2),
        entry("E", "opt_out", d), entry("E", "consent", d - timedelta(1), "practice_setting", 2),
        entry("F", "opt_out", d),
    ])
    assert {k: (v["sharing_state"], v["sharing_blocked"], v["latest_sharing_source"]) for k, v in got.items()} == {
        "A": ("dissent", True, "practice_setting"), "B": ("dissent", True, "practice_setting"),
        "C": ("dissent", True, "coded_entry"), "D": ("unrecognised", True, "patient_setting"),
        "E": ("consent", False, "practice_setting"), "F": (None, False, None)}
    assert got["E"]["opt_out_codes"] == ["coded_entry:opt_out:1"] and got["A"]["opt_out_codes"] is None


def test_on_one_day_the_patients_own_entry_is_named_as_the_deciding_one() -> None:
    d = date(2022, 1, 1)
    got = decided([entry("A", "dissent", d, "practice_setting"), entry("A", "dissent", d, "coded_entry", 2),
                   entry("A", "dissent", d, "patient_setting", 3)])
    assert got["A"]["latest_sharing_source"] == "patient_setting" and got["A"]["latest_row"] == 3


_dates = st.one_of(st.none(), st.dates(date(2019, 1, 1), date(2019, 1, 10)))
_entries = st.lists(st.tuples(st.sampled_from(["A", "B", "C"]), st.sampled_from(KINDS), _dates,
                              st.sampled_from(SOURCES)), max_size=12)


@settings(max_examples=150, deadline=None)
@given(_entries, st.randoms())
def test_the_decision_is_the_rule_whatever_the_row_order(drawn: list[tuple[str, str, date | None, str]],
                                                         rnd: Any) -> None:
    rows = [entry(p, k, d, s, i) for i, (p, k, d, s) in enumerate(drawn)]
    want = reference(rows)
    got = decided(rows)
    shuffled = list(rows)
    rnd.shuffle(shuffled)
    assert decided(shuffled) == got
    assert set(got) == set(want)
    for patient, (state, blocked) in want.items():
        assert got[patient]["sharing_blocked"] is blocked
        if state is not None:
            assert got[patient]["sharing_state"] == state
        # the deciding entry is one of the patient's own, of the deciding kind
        if got[patient]["sharing_state"] is not None:
            mine = [r for r in rows if r["patient_key"] == patient and r["label"] == got[patient]["latest_sharing_code"]]
            assert mine and mine[0]["kind"] == got[patient]["sharing_state"]


def test_entries_keep_their_source_row_and_column() -> None:
    setting = {"kind": "dissent", "value": "No", "date": date(2021, 5, 1), "column": "Sharing Out"}
    patients = pl.LazyFrame({"patient_key": ["P1", "P2", "P3"], "gp_ods_code": ["y01 ", "K1", None],
                             "sharing_out": [setting, None, None], "source_file": ["p.csv"] * 3,
                             "source_row": [1, 2, 3]},
                            schema_overrides={"sharing_out": pl.Struct({"kind": pl.String, "value": pl.String,
                                                                        "date": pl.Date, "column": pl.String})})
    codes = pl.LazyFrame({"patient_key": ["P2"], "code_system": ["read2"], "code": ["9Nd1."],
                          "recorded_date": [date(2020, 1, 1)], "source_file": ["c.csv"], "source_row": [7]})
    practices = pl.LazyFrame({"ods_code": ["Y01", "K1"], "sharing_out": [
        {"kind": "dissent", "value": "N", "date": date(2018, 1, 1), "column": "Shares"},
        {"kind": "consent", "value": "Y", "date": date(2018, 1, 1), "column": "Shares"}],
        "source_file": ["practices.csv"] * 2, "source_row": [1, 2]})
    got = sharing.entries({"patients": patients, "codes": codes}, load_pack(None), practices).collect()
    assert got.sort("patient_key", "source").select(
        "patient_key", "source", "kind", "label", "table", "source_file", "source_row", "source_column").rows() == [
        ("P1", "patient_setting", "dissent", "Sharing Out: No", "patients", "p.csv", 1, "Sharing Out"),
        ("P1", "practice_setting", "dissent", "practice Y01, Shares: N", "practice_sharing", "practices.csv", 1,
         "Shares"),
        ("P2", "coded_entry", "dissent", "read2:9Nd1.", "codes", "c.csv", 7, None),
    ]  # a practice that shares out makes no entry


def _doc(field: dict[str, Any]) -> dict[str, Any]:
    return {"profile": "t", "format_version": 1, "defaults": {"date_formats": ["%Y-%m-%d"]},
            "tables": {"patients": {"files": "p.csv", "fields": {"source_patient_id": "id", "sharing_out": field}}}}


@pytest.mark.parametrize(("field", "problem"), [
    ({"column": "S", "consent_values": ["Y"]}, "sharing_out: name the values that mean the patient dissents"),
    ({"column": "S", "dissent_values": ["N", "no"], "consent_values": ["NO"]},
     "sharing_out.consent_values: 'NO' is also in dissent_values"),
    ({"column": "S", "dissent_values": ["N"], "date": "D", "formats": ["%Y"]}, "sharing_out.formats[0]: '%Y' is not"),
])
def test_a_sharing_setting_that_cannot_be_read_is_a_profile_error(field: dict[str, Any], problem: str) -> None:
    with pytest.raises(ProfileError) as exc:
        parse_profile(_doc(field), Path("t.yaml"))
    assert any(f"t.yaml: tables.patients.fields.{problem}" in p for p in exc.value.problems), exc.value.problems


@settings(max_examples=60, deadline=None)
@given(drawn=st.lists(st.tuples(st.sampled_from(["A", "B", "C", "D", "E", "F", "G"]), st.sampled_from(KINDS), _dates,
                                st.sampled_from(SOURCES)), max_size=30),
       per_range=st.integers(1, 4), rnd=st.randoms())
def test_sharing_parquet_a_range_of_patients_at_a_time_is_the_whole_sorted(
        drawn: list[tuple[str, str, date | None, str]], per_range: int, rnd: Any, tmp_path_factory: Any) -> None:
    """``sharing.parquet``'s rows marked and sorted a range of patients at a time are the rows,
    and the order, of one sort of every entry: each patient's deciding entry marked once."""
    rows = [entry(p, k, d, s, i) for i, (p, k, d, s) in enumerate(drawn)]
    rnd.shuffle(rows)
    entries = frame(rows)
    state = sharing.state(entries)
    whole = sharing.deciding(entries, state).collect()
    folder = Path(tmp_path_factory.mktemp("ranges")) / "parts"
    ranged = sharing.deciding_by_ranges(entries, state, folder, range_patients=per_range).collect()
    assert ranged.to_dicts() == whole.to_dicts()
    assert ranged.schema == whole.schema
    marked = ranged.filter(pl.col("decides"))
    assert marked["patient_key"].is_unique().all()
