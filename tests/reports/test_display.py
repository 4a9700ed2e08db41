"""Identifiers for people: NHS numbers 3-3-4 and dates dd/mm/yyyy in what people read (the
XLSX worklists, the HTML page); raw values in what scripts read (CSV, JSON)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from types import ModuleType

import polars as pl
import yaml
from hypothesis import given
from hypothesis import strategies as st

from migrate.reports import display, write_reports

TEN_DIGITS = st.text(alphabet="0123456789", min_size=10, max_size=10)


@given(TEN_DIGITS)
def test_a_ten_digit_number_is_grouped_3_3_4_and_nothing_else_changes(number: str) -> None:
    shown = display.nhs_number(number)
    assert shown == f"{number[:3]} {number[3:6]} {number[6:]}"
    assert shown.replace(" ", "") == number
    frame = pl.DataFrame({"n": [number]}).select(display.nhs_number_expr("n"))
    assert frame["n"][0] == shown  # the expression (XLSX) and the function (HTML) agree


@given(st.text(max_size=20).filter(lambda t: not re.fullmatch(r"[0-9]{10}", t)))
def test_any_other_value_is_left_as_given(value: str) -> None:
    # A number kept "as given" (to trace it), a pseudonymised token, a local id: unchanged.
    assert display.nhs_number(value) == value
    assert pl.DataFrame({"n": [value]}).select(display.nhs_number_expr("n"))["n"][0] == value


@given(st.dates(), st.sampled_from(["", "; ", " = ", "("]), st.sampled_from(["", ";", ")", " next"]))
def test_iso_dates_in_text_read_day_first(day: object, before: str, after: str) -> None:
    iso = f"{day}"
    text = f"received_date{before}{iso}{after}, again {iso}"
    shown = pl.DataFrame({"e": [text]}).select(display.dates_in_text_expr("e"))["e"][0]
    dmy = display.day_first(iso)
    assert shown == f"received_date{before}{dmy}{after}, again {dmy}"


def test_timestamps_and_numbers_inside_longer_tokens_are_left_alone() -> None:
    frame = pl.DataFrame({"e": ["2022-10-01T10:00:00", "12022-10-011", "x2022-10-01-3", None]})
    assert frame.select(display.dates_in_text_expr("e"))["e"].to_list() == frame["e"].to_list()
    assert display.nhs_numbers_in_text("same patient as 9998102758 (merged), row 12345678901") == (
        "same patient as 999 810 2758 (merged), row 12345678901")
    assert display.timestamp("2026-11-24T10:00:05+00:00") == "24/11/2026 10:00 UTC"


def test_the_html_page_shows_declared_nhs_numbers_3_3_4_and_the_json_keeps_them_raw(
        synth_run: Path, rh: ModuleType, tmp_path: Path) -> None:
    run = rh.copy_run(synth_run, tmp_path / "run")
    patients = pl.read_parquet(run / "canonical" / "patients.parquet").filter(pl.col("nhs_number").is_not_null())
    cohorts = pl.read_parquet(run / "cohorts.parquet").filter(pl.col("transfer_list").cast(pl.String) == "backlog")
    backlog = patients.join(cohorts.select("patient_key").unique(), on="patient_key")["nhs_number"].sort().to_list()
    declared = backlog[1:] + ["9990000018"]  # one left out (found, not declared), one unknown (not in extract)
    path = tmp_path / "declared.yaml"
    path.write_text(yaml.safe_dump({"id_type": "nhs_number", "lists": {"backlog": {"count": len(declared),
                                                                                    "ids": declared}}}))
    write_reports(run, declared=path)
    page = (run / "reports" / "reconciliation.html").read_text()
    for number in (backlog[0], "9990000018"):
        assert f"<code>{number[:3]} {number[3:6]} {number[6:]}</code>" in page
        assert number not in page  # never the ten unbroken digits
    summary = json.loads((run / "reports" / "reconciliation.json").read_text())
    backlog_list = next(e for e in summary["declared_vs_found"]["lists"] if e["list"] == "backlog")
    assert {e["id"] for e in backlog_list["absent"]} == {"9990000018"}
    assert {e["id"] for e in backlog_list["extra"]} == {backlog[0]}
