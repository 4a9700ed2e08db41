"""Lineage: every migrated source row is accounted for, one row per (source row, resource)."""

from __future__ import annotations

from types import ModuleType
from typing import Any

import polars as pl


def _source_rows(case: Any) -> pl.DataFrame:
    return pl.concat([frame.select("source_file", "source_row").collect() for frame in case.tables.values()])


def _set_aside(case: Any) -> pl.DataFrame:
    """Rows their dispositions keep out of the FHIR output (withheld, out of scope)."""
    from migrate.dispositions import CARRIED

    return case.decided().filter(~pl.col("disposition").is_in([*CARRIED, "merged"])).select(
        "source_file", "source_row")


def _accounted(case: Any, built: Any) -> pl.DataFrame:
    return pl.concat([
        built.lineage.select("source_file", "source_row"),
        _set_aside(case),
        built.errors.select("source_file", "source_row").drop_nulls(),
    ]).unique()


def test_every_source_row_is_accounted_for(golden_case: Any, golden_built: Any) -> None:
    rows = _source_rows(golden_case)
    missing = rows.join(_accounted(golden_case, golden_built), on=["source_file", "source_row"], how="anti")
    assert missing.height == 0, missing
    # a row is either sent (has resources) or set aside by its disposition, never both
    migrated = golden_built.lineage.select("source_file", "source_row").unique()
    assert migrated.join(_set_aside(golden_case), on=["source_file", "source_row"], how="semi").height == 0
    # P04, P05, P06, P18 (nothing active): 4 patient, 4 referral and 2 contact rows; R11's
    # e-RS dummy slot; the contacts of the sharing-blocked P21 and P23.
    assert _set_aside(golden_case).height == 13


def test_patients_with_nothing_active_become_no_resource(golden_case: Any, golden_built: Any) -> None:
    decided = golden_case.decided()
    out = decided.filter(pl.col("disposition") == "out_of_scope")
    assert sorted(set(out["patient_key"])) == ["P04", "P05", "P06", "P11", "P18"]  # P11: its dummy slot only
    inactive = ["P04", "P05", "P06", "P18"]
    assert golden_built.resources.filter(pl.col("patient_key").is_in(inactive)).height == 0
    assert golden_built.lineage.filter(pl.col("patient_key").is_in(inactive)).height == 0


def test_lineage_points_at_resources_and_resources_at_sources(golden_built: Any) -> None:
    resources = golden_built.resources.select("fhir_type", "fhir_id")
    lineage = golden_built.lineage
    assert lineage.join(resources, on=["fhir_type", "fhir_id"], how="anti").height == 0
    untraced = resources.filter(pl.col("fhir_type") != "Provenance").join(
        lineage, on=["fhir_type", "fhir_id"], how="anti")
    assert untraced.height == 0, untraced
    assert lineage.is_duplicated().sum() == 0


def test_a_row_yields_several_resources(golden_built: Any) -> None:
    r13 = golden_built.lineage.filter(pl.col("table") == "referrals", pl.col("source_row") == 13)
    assert sorted(r13["fhir_type"]) == ["EpisodeOfCare", "Flag", "ServiceRequest"]
    p01 = golden_built.lineage.filter(pl.col("table") == "patients", pl.col("source_row") == 1)
    assert sorted(p01["fhir_type"]) == ["Organization", "Patient"]


def test_failed_patient_rows_are_errors_not_lineage(fx: ModuleType) -> None:
    case = fx.literal_case([fx.patient("P1"), fx.patient("P2", family_name="")],
                           [fx.referral("R1", "P1"), fx.referral("R2", "P2")],
                           contacts=[fx.contact("C2", "R2", "P2")], cohorts={"R2": "transition"})
    built = case.build()
    assert set(built.errors["patient_key"]) == {"P2"}
    assert built.errors.filter(pl.col("fhir_type") == "Patient")["problem"][0] == (
        "Patient.name[0].family: not a valid FHIR string")
    full = case.build(validation="full").errors.filter(pl.col("fhir_type") == "Patient")["problem"][0]
    assert full.startswith("Patient.name[0].family: not a valid FHIR string; R4B model: Patient.name.0.family:")
    held = built.errors.select("table", "source_row").unique().sort("table", "source_row").rows()
    assert held == [("contacts", 1), ("patients", 2), ("referrals", 2)]
    assert built.lineage.filter(pl.col("patient_key") == "P2").height == 0
    assert set(built.resources["patient_key"].drop_nulls()) == {"P1"}
    rows = _source_rows(case)
    assert rows.join(_accounted(case, built), on=["source_file", "source_row"], how="anti").height == 0


def test_validation_failures_are_written_to_the_run_folder(fx: ModuleType, tmp_path: Any) -> None:
    """A failing resource is listed in fhir/errors.parquet (problem and source row, never the
    value), so the run folder says what failed after the terminal is gone."""
    from migrate.fhir import write_fhir

    case = fx.literal_case([fx.patient("P1"), fx.patient("P2", family_name="")],
                           [fx.referral("R1", "P1"), fx.referral("R2", "P2")], cohorts={"R2": "transition"})
    result = write_fhir(*case.args(), tmp_path)
    written = pl.read_parquet(tmp_path / "fhir" / "errors.parquet")
    assert written.equals(result.errors.sort("source_file", "source_row", "fhir_type", "fhir_id", "problem",
                                             nulls_last=True))
    assert set(written["patient_key"]) == {"P2"} and written.height >= 2
    assert "Patient.name[0].family: not a valid FHIR string" in written["problem"].to_list()
