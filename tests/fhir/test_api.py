"""Options and input checks fail up front, every problem at once; the public API is complete."""

from __future__ import annotations

from datetime import UTC, date, datetime
from types import ModuleType
from typing import Any

import polars as pl
import pytest

import migrate.fhir
from migrate.errors import ConfigError
from migrate.fhir import FhirOptions, build_resources


def test_bad_options_are_all_reported() -> None:
    with pytest.raises(ConfigError) as err:
        FhirOptions(source_system="bad system/", run_id="", cutover=date(2022, 10, 1), bundle_size=0,
                    sharing_policy="share-all", organisation_ods="R-X")  # type: ignore[arg-type]
    assert err.value.exit_code == 2
    text = err.value.render()
    for word in ("source_system", "bundle_size", "sharing_policy", "organisation_ods", "run_id"):
        assert word in text


def test_missing_columns_are_all_reported(fx: ModuleType) -> None:
    case = fx.literal_case([fx.patient()])
    with pytest.raises(ConfigError) as err:
        build_resources(case.tables, case.cohorts.drop("cohort"), case.patient_cohorts,
                        case.exceptions.drop("evidence", "action"), case.sharing.drop("blocked"), case.options)
    assert err.value.problems == ["cohorts: missing column(s) cohort",
                                  "exceptions: missing column(s) evidence, action",
                                  "sharing: missing column(s) blocked"]


def test_recorded_is_the_cutover_unless_given() -> None:
    opts = FhirOptions(source_system="s", run_id="r", cutover=date(2022, 10, 1))
    assert opts.recorded_instant == "2022-10-01T00:00:00Z"
    later = FhirOptions(source_system="s", run_id="r", cutover=date(2022, 10, 1),
                        recorded=datetime(2022, 10, 2, 9, 30, tzinfo=UTC))
    assert later.recorded_instant == "2022-10-02T09:30:00Z"


def test_source_system_names_the_local_identifier_systems(fx: ModuleType) -> None:
    built: Any = fx.literal_case([fx.patient()]).build()
    [patient] = fx.resources_of(built, "Patient")
    assert {"system": "https://fhir.handover.example/Id/test-system/patient", "value": "P1"} in patient["identifier"]


def test_public_api_is_complete() -> None:
    exported = {name for name in dir(migrate.fhir) if not name.startswith("_")}
    modules = {"batches", "bundle", "care", "flags", "ids", "inputs", "options", "patient", "provenance", "referral",
               "resources", "stage", "template", "validate", "annotations", "expected", "inverse", "roundtrip",
               "roundtrip_buckets", "roundtrip_lookups",
               "partitions", "ndjson", "carried"}
    assert exported - modules == set(migrate.fhir.__all__)


def test_empty_extract_writes_empty_outputs(fx: ModuleType, tmp_path: Any) -> None:
    from migrate.fhir import write_fhir

    case = fx.literal_case([], referrals=[])
    result = write_fhir(*case.args(), tmp_path)
    assert result.ok and result.bundles == 0 and result.counts == {}
    assert result.lineage.collect().height == 0
    # Rows set aside are no concern of this stage: their dispositions (lineage.parquet of the run) say why.
    assert sorted(p.name for p in (tmp_path / "fhir").iterdir()) == ["bundles", "errors.parquet", "lineage.parquet"]
    assert pl.read_parquet(tmp_path / "fhir" / "lineage.parquet").columns == [
        "source_file", "source_row", "table", "patient_key", "disposition", "fhir_type", "fhir_id"]
