"""Dispositions, decided once: what they say happened is what the outputs do, and no output
option changes them."""

from __future__ import annotations

import json
from datetime import date, datetime
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from migrate import canonical
from migrate.dispositions import CARRIED, DUMMY_SLOT, WITHHELD, decide
from migrate.fhir.options import SharingCodes
from migrate.pipeline import RunConfig, run_batch
from migrate.policies import Policy

CASE = Path(__file__).parent / "cases" / "worked-example"
# Labels and slot names in matching form (migrate.matching), as SharingCodes.from_pack gives them.
CODES = SharingCodes(dissent=frozenset({"read2:93C1"}), consent=frozenset({"read2:9Nd7"}),
                     opt_out=frozenset({"read2:9Nu0"}), dummy_slot_names=frozenset({"do_not_attend"}))


def _frame(table: str, rows: list[dict[str, Any]]) -> pl.LazyFrame:
    schema = canonical.TABLES[table].schema
    full = [{**{c: None for c in schema}, "source_file": f"{table}.csv", "source_row": i + 1, **r}
            for i, r in enumerate(rows)]
    return pl.DataFrame(full, schema=schema, orient="row").lazy()


def _decide(patients: list[str], cohorts: dict[str, str], referrals: list[tuple[str, str]] = (),  # type: ignore[assignment]
            contacts: list[tuple[str, str, str | None]] = (),  # type: ignore[assignment]
            codes: list[tuple[str, str, str]] = (),  # type: ignore[assignment]
            merges: dict[str, str] | None = None, blocked: tuple[str, ...] = (), at_target: tuple[str, ...] = (),
            policy: Policy = Policy()) -> dict[tuple[str, int], tuple[str, str | None]]:
    """{(table, row): (disposition, reason)} for literal rows; children name their survivor."""
    people = {
        "referrals": _frame("referrals", [{"referral_key": r, "patient_key": p} for r, p in referrals]),
        "contacts": _frame("contacts", [{"contact_key": f"C{i}", "referral_key": r, "patient_key": p,
                                         "slot_name": s} for i, (r, p, s) in enumerate(contacts)]),
        "codes": _frame("codes", [{"patient_key": p, "code_system": s, "code": c} for p, s, c in codes]),
    }
    merge_frame = pl.DataFrame({"patient_key": list(merges or {}), "survivor_key": list((merges or {}).values())},
                               schema={"patient_key": pl.String, "survivor_key": pl.String})
    decided = decide(
        _frame("patients", [{"patient_key": p} for p in patients]), people,
        pl.LazyFrame({"patient_key": list(cohorts), "patient_cohort": list(cohorts.values())},
                     schema={"patient_key": pl.String, "patient_cohort": pl.String}), merge_frame,
        pl.LazyFrame({"patient_key": list(blocked), "blocked": [True] * len(blocked)},
                     schema={"patient_key": pl.String, "blocked": pl.Boolean}),
        CODES, policy, pl.LazyFrame({"patient_key": list(at_target)}, schema={"patient_key": pl.String}),
    ).collect()
    return {(t, r): (d, why) for t, r, d, why in decided.select("table", "source_row", "disposition", "reason").rows()}


def test_the_history_of_a_patient_in_active_care_is_migrated() -> None:
    got = _decide(["P1"], {"P1": "transition"}, referrals=[("R1", "P1"), ("R2", "P1"), ("R3", "P1")],
                  contacts=[("R2", "P1", None), ("R3", "P1", None)], codes=[("P1", "snomed", "279039007")])
    assert set(got.values()) == {("migrated", None)}  # closed R2, rejected R3, past contacts, coded history


@pytest.mark.parametrize("cohort", ["closed", "rejected", "pifu_expired"])
def test_a_patient_with_nothing_active_is_out_of_scope_whole(cohort: str) -> None:
    rows = dict(referrals=[("R1", "P1")], contacts=[("R1", "P1", None)], codes=[("P1", "read2", "93C1")])
    got = _decide(["P1"], {"P1": cohort}, **rows)  # type: ignore[arg-type]
    assert {d for d, _ in got.values()} == {"out_of_scope"}
    assert got[("patients", 1)][1] == f"nothing active at the cut-over (patient cohort {cohort})"
    # The policy option hands them over too.
    included = _decide(["P1"], {"P1": cohort}, policy=Policy(inactive_patients="include"), **rows)  # type: ignore[arg-type]
    assert set(included.values()) == {("migrated", None)}


def test_withheld_rows_are_the_clinical_ones_of_a_blocked_patient() -> None:
    got = _decide(["P1"], {"P1": "backlog"}, referrals=[("R1", "P1")], contacts=[("R1", "P1", None)],
                  codes=[("P1", "read2", "93C1"), ("P1", "read2", "9Nu0"), ("P1", "snomed", "279039007")],
                  blocked=("P1",))
    assert got[("contacts", 1)] == ("withheld", WITHHELD)
    assert got[("codes", 3)] == ("withheld", WITHHELD)  # clinical
    assert got[("codes", 1)] == got[("codes", 2)] == ("migrated", None)  # dissent and opt-out: the Consents
    assert got[("referrals", 1)] == got[("patients", 1)] == ("migrated", None)
    include = _decide(["P1"], {"P1": "backlog"}, contacts=[("R1", "P1", None)], blocked=("P1",),
                      policy=Policy(sharing="include"))
    assert include[("contacts", 1)] == ("migrated", None)


def test_merged_at_target_and_dummy_slots() -> None:
    got = _decide(["P1", "P2", "P3", "P4"], {"P1": "backlog", "P3": "closed", "P4": "backlog"},
                  merges={"P2": "P1"}, at_target=("P1", "P3"),
                  contacts=[("R1", "P1", " Do Not Attend "), ("R1", "P1", "Clinic 4")])
    assert got[("patients", 1)][0] == "already_at_target"
    assert got[("patients", 2)] == ("merged", "merged into P1")
    assert got[("patients", 3)][0] == "out_of_scope"  # at the target, but nothing to hand over
    assert got[("patients", 4)] == ("migrated", None)
    assert got[("contacts", 1)] == ("out_of_scope", DUMMY_SLOT)
    assert got[("contacts", 2)] == ("migrated", None)


def test_a_patient_without_a_referral_fails_safe_as_migrated() -> None:
    assert _decide(["P1"], {}) == {("patients", 1): ("migrated", None)}


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 4), st.sampled_from(["backlog", "closed", "pifu_expired", None]),
                          st.booleans()), min_size=1, max_size=6, unique_by=lambda t: t[0]),
       st.lists(st.tuples(st.integers(0, 4), st.sampled_from([None, "do not attend", "x"])), max_size=8),
       st.sampled_from(["withhold-clinical", "include"]), st.sampled_from(["exclude", "include"]))
def test_every_row_gets_exactly_one_disposition_whatever_the_order(
        patients: list[tuple[int, str | None, bool]], contacts: list[tuple[int, str | None]], sharing: str,
        inactive: str) -> None:
    keys = [f"P{k}" for k, _, _ in patients]
    cohorts = {f"P{k}": c for k, c, _ in patients if c is not None}
    blocked = tuple(f"P{k}" for k, _, b in patients if b)
    rows = [(f"R{k}", f"P{k}", s) for k, s in contacts if f"P{k}" in keys]
    policy = Policy(sharing, inactive)  # type: ignore[arg-type]
    once = _decide(keys, cohorts, contacts=rows, blocked=blocked, policy=policy)
    again = _decide(list(reversed(keys)), dict(reversed(list(cohorts.items()))), contacts=rows, blocked=blocked,
                    policy=policy)
    assert len(once) == len(keys) + len(rows)  # one per row, no row twice
    by_key = {p: d for (t, r), (d, _) in once.items() if t == "patients" for p in [keys[r - 1]]}
    by_key_again = {p: d for (t, r), (d, _) in again.items() if t == "patients"
                    for p in [list(reversed(keys))[r - 1]]}
    assert by_key == by_key_again
    for (table, _), (d, why) in once.items():
        assert d in canonical.DISPOSITIONS and (why is None) == (d == "migrated")


# --- through a whole run -----------------------------------------------------------------------


def _run(out: Path, **options: Any) -> Path:
    result = run_batch(RunConfig.load(CASE / "input", CASE / "mapping.yaml", date(2022, 10, 1), out, **options))
    assert result.ok, result.failures()
    return out


def _dispositions(run: Path) -> pl.DataFrame:
    return pl.read_parquet(run / "lineage.parquet").select(
        "source_file", "source_row", "table", "patient_key", "disposition", "reason").unique().sort(
        "source_file", "source_row")


def test_no_fhir_gives_the_same_dispositions(tmp_path: Path) -> None:
    with_fhir = _dispositions(_run(tmp_path / "fhir"))
    without = _dispositions(_run(tmp_path / "nofhir", emit_fhir=False))
    assert with_fhir.equals(without)
    # The e-RS dummy slot (R11's C11a) is out of scope either way; it used to be so only with FHIR.
    assert with_fhir.filter(pl.col("reason") == DUMMY_SLOT).height == 1


def test_what_a_disposition_says_is_what_the_fhir_output_does(tmp_path: Path) -> None:
    run = _run(tmp_path / "run")
    lineage = pl.read_parquet(run / "lineage.parquet")
    sent = lineage.filter(pl.col("fhir_id").is_not_null())
    assert set(sent["disposition"].cast(pl.String)) <= {*CARRIED, "merged"}
    not_sent = lineage.filter(pl.col("disposition").cast(pl.String).is_in(["out_of_scope", "withheld",
                                                                           "quarantined"]))
    assert not_sent["fhir_id"].null_count() == not_sent.height
    patients = {json.loads(line)["identifier"][-1]["value"] for line in
                (run / "fhir" / "ndjson" / "Patient.ndjson").read_text().splitlines()}
    out = set(lineage.filter((pl.col("table") == "patients")
                             & (pl.col("disposition") == "out_of_scope"))["patient_key"])
    assert out == {"P04", "P05", "P06", "P18"} and not out & patients


def test_inactive_patients_can_be_included(tmp_path: Path) -> None:
    run = _run(tmp_path / "run", inactive_patients="include")
    lineage = pl.read_parquet(run / "lineage.parquet")
    p05 = lineage.filter(pl.col("patient_key") == "P05")
    assert set(p05["disposition"].cast(pl.String)) == {"migrated"}
    assert {"Patient", "ServiceRequest", "Encounter"} <= set(p05["fhir_type"].drop_nulls())
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["options"]["inactive_patients"] == "include"
