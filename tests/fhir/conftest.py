"""Fixtures for the FHIR stage: the golden case's inputs and helpers to read its output.

Tests reach the helpers through the ``fx`` fixture (this module), because the suite runs
with ``--import-mode=importlib``, where test folders are not importable.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import date
from pathlib import Path
from types import ModuleType
from typing import Any

import polars as pl
import pytest

from migrate.dispositions import carried, decide
from migrate.policies import Policy
from migrate.fhir import Built, FhirOptions, InputFile, build_resources
from migrate.identity.merges import repoint
from migrate.ingest import ingest
from migrate.profile import load_profile

CASES = Path(__file__).parent.parent / "cases"
GOLDEN = CASES / "fhir-golden"
WORKED = CASES / "worked-example"


@pytest.fixture
def fx() -> ModuleType:
    """These helpers: ``fx.resources_of(...)``, ``fx.find(...)``, ``fx.local_id(...)``."""
    return sys.modules[__name__]


@dataclass(frozen=True)
class Case:
    """Everything ``write_fhir`` / ``build_resources`` takes, for one test case."""

    tables: dict[str, pl.LazyFrame]
    cohorts: pl.LazyFrame
    patient_cohorts: pl.LazyFrame
    exceptions: pl.LazyFrame
    sharing: pl.LazyFrame
    derived_priority: pl.LazyFrame | None
    options: FhirOptions

    def decided(self, options: FhirOptions | None = None, inactive_patients: str = "exclude") -> pl.DataFrame:
        """Every row's disposition, decided as a run decides it (``migrate.dispositions``)."""
        opts = options or self.options
        patients = self.tables["patients"]
        if "survivor_key" in patients.collect_schema().names():
            merges = patients.filter(pl.col("survivor_key").is_not_null() & (pl.col("survivor_key") != pl.col(
                "patient_key"))).select("patient_key", "survivor_key").collect()
        else:
            merges = pl.DataFrame(schema={"patient_key": pl.String, "survivor_key": pl.String})
        people = {t: repoint(self.tables[t], merges) for t in ("referrals", "contacts", "codes")}
        return decide(patients, people, self.patient_cohorts, merges, self.sharing, opts.codes,
                      Policy(opts.sharing_policy, inactive_patients)).collect()

    def carried(self, options: FhirOptions | None = None, inactive_patients: str = "exclude") -> dict[str, pl.LazyFrame]:
        """The tables as the FHIR stage receives them: only the rows their dispositions carry."""
        patients = self.tables["patients"]
        if "survivor_key" not in patients.collect_schema().names():
            patients = patients.with_columns(pl.lit(None, dtype=pl.String).alias("survivor_key"))
        children = {t: self.tables[t] for t in ("referrals", "contacts", "codes")}
        return carried(patients, children, self.decided(options, inactive_patients).lazy())

    def args(self) -> tuple[Any, ...]:
        return (self.carried(), self.cohorts, self.patient_cohorts, self.exceptions, self.sharing, self.options)

    def build(self, inactive_patients: str = "exclude", **options: Any) -> Built:
        opts = replace(self.options, **options) if options else self.options
        return build_resources(self.carried(opts, inactive_patients), self.cohorts, self.patient_cohorts,
                               self.exceptions, self.sharing, opts, self.derived_priority)

    def with_tables(self, **frames: pl.LazyFrame) -> Case:
        return replace(self, tables={**self.tables, **frames})


def _csv(name: str, **schema: Any) -> pl.LazyFrame:
    return pl.read_csv(GOLDEN / name, schema_overrides=schema, infer_schema=False).lazy()


@pytest.fixture(scope="session")
def golden_case(tmp_path_factory: pytest.TempPathFactory) -> Case:
    """The worked example through ingest, with the literal stage outputs of fhir-golden/."""
    work = tmp_path_factory.mktemp("fhir-golden")
    profile = load_profile(WORKED / "mapping.yaml")
    ingested = ingest(WORKED / "input", profile, work / "work")
    tables = {name: frame.collect().lazy() for name, frame in ingested.tables.items()}
    survivors = _csv("survivors.csv")
    tables["patients"] = tables["patients"].join(survivors, on="patient_key", how="left")
    cohorts = _csv("cohorts.csv").with_columns(pl.col("list_mismatch") == "true")
    # The worked example's expected patient cohorts: P04, P05, P06 and P18 have nothing active.
    patient_cohorts = pl.read_csv(WORKED / "expected" / "patient_cohorts.csv").lazy().select(
        pl.col("patient_id").alias("patient_key"), pl.col("cohort").alias("patient_cohort"))
    sharing = _csv("sharing.csv").with_columns(pl.col("blocked") == "true", pl.col("latest_date").str.to_date())
    options = FhirOptions(
        source_system=profile.source_system, run_id="golden-run", cutover=date(2022, 10, 1), bundle_size=10,
        inputs=tuple(InputFile(f.name, f.sha256) for f in ingested.files),
    )
    return Case(tables, cohorts, patient_cohorts, _csv("exceptions.csv"), sharing, _csv("derived_priority.csv"),
                options)


@pytest.fixture(scope="session")
def golden_built(golden_case: Case) -> Built:
    return golden_case.build()


def resources_of(built: Built, resource_type: str) -> list[dict[str, Any]]:
    """The parsed resources of one type."""
    return [json.loads(t) for t in built.resources.filter(pl.col("fhir_type") == resource_type)["json"]]


def find(built: Built, resource_type: str, predicate: Callable[[dict[str, Any]], bool]) -> list[dict[str, Any]]:
    return [r for r in resources_of(built, resource_type) if predicate(r)]


def local_id(resource: dict[str, Any], kind: str) -> str | None:
    """The value of the resource's local identifier of ``kind`` (patient, referral, contact)."""
    for ident in resource.get("identifier", []):
        if ident.get("system", "").endswith(f"/{kind}"):
            return str(ident["value"])
    return None


# --- literal cases: a few rows, every other canonical column neutral ----------------------------
T = date(2022, 10, 1)


def patient(key: str = "P1", **fields: Any) -> dict[str, Any]:
    row: dict[str, Any] = {"patient_key": key, "source_patient_id": key, "nhs_number": "9434765919",
                           "nhs_number_raw": "9434765919", "nhs_number_status": "01", "family_name": "Test",
                           "given_names": "Pat", "birth_date": date(1960, 1, 1), "sex": "female",
                           "postcode": "OX1 1AA", "gp_ods_code": "K84001"}
    row.update(fields)
    return row


def referral(key: str = "R1", patient: str = "P1", **fields: Any) -> dict[str, Any]:
    row: dict[str, Any] = {"referral_key": key, "source_referral_id": key, "patient_key": patient,
                           "received_date": date(2022, 7, 1), "service_line": "physio", "referral_source": "gp",
                           "assigned_priority": "routine", "status": "open", "history_of_cancer": False,
                           "red_flags": [], "body_site": "knee"}
    row.update(fields)
    return row


def contact(key: str = "C1", referral_key: str = "R1", patient: str = "P1", when: str = "2022-09-01 09:00",
            attendance: str = "attended", **fields: Any) -> dict[str, Any]:
    from datetime import datetime

    row: dict[str, Any] = {"contact_key": key, "referral_key": referral_key, "patient_key": patient,
                           "contact_datetime": datetime.fromisoformat(when), "attendance": attendance,
                           "contact_type": "initial", "modality": "face_to_face"}
    row.update(fields)
    return row


def code(patient: str = "P1", system: str = "snomed", value: str = "279039007", **fields: Any) -> dict[str, Any]:
    row: dict[str, Any] = {"patient_key": patient, "code_system": system, "code": value, "display": "Low back pain",
                           "recorded_date": date(2022, 1, 1)}
    row.update(fields)
    return row


def frame(table: str, rows: list[dict[str, Any]], extra: dict[str, Any] | None = None) -> pl.LazyFrame:
    """A canonical table of ``rows`` (source_file/source_row filled in), plus ``extra`` columns."""
    from migrate import canonical

    schema = dict(canonical.TABLES[table].schema)
    schema.update(extra or {})
    full = [{**{c: None for c in schema}, "source_file": f"{table}.csv", "source_row": i + 1, **r}
            for i, r in enumerate(rows)]
    return pl.DataFrame(full, schema=schema, orient="row").lazy()


def literal_case(patients: list[dict[str, Any]], referrals: list[dict[str, Any]] | None = None,
                 contacts: list[dict[str, Any]] | None = None, codes: list[dict[str, Any]] | None = None,
                 cohorts: dict[str, str] | None = None, blocked: list[str] | None = None,
                 exceptions: list[dict[str, Any]] | None = None, derived: list[tuple[str, str, str]] | None = None,
                 patient_extra: dict[str, Any] | None = None, **options: Any) -> Case:
    """A case from literal rows; ``cohorts`` maps referral key → cohort (default backlog)."""
    referrals = referrals if referrals is not None else [referral()]
    tables = {"patients": frame("patients", patients, patient_extra), "referrals": frame("referrals", referrals),
              "contacts": frame("contacts", contacts or []), "codes": frame("codes", codes or [])}
    cohort_rows = [{"referral_key": r["referral_key"], "patient_key": r["patient_key"],
                    "cohort": (cohorts or {}).get(r["referral_key"], "backlog"), "cohort_reason": "test"}
                   for r in referrals]
    exc_schema = {"flag_code": pl.String, "severity": pl.String, "subject_type": pl.String, "subject_key": pl.String,
                  "patient_key": pl.String, "rule_id": pl.String, "evidence": pl.String, "action": pl.String}
    sharing = pl.LazyFrame({"patient_key": blocked or [], "blocked": [True] * len(blocked or []),
                            "latest_code": ["read2:93C1"] * len(blocked or []),
                            "latest_date": [date(2021, 5, 1)] * len(blocked or [])},
                           schema={"patient_key": pl.String, "blocked": pl.Boolean, "latest_code": pl.String,
                                   "latest_date": pl.Date})
    dp = None if derived is None else pl.LazyFrame(
        derived, schema={"referral_key": pl.String, "priority": pl.String, "reason": pl.String}, orient="row")
    opts = FhirOptions(source_system="test-system", run_id="test-run", cutover=T, **options)
    return Case(tables, pl.LazyFrame(cohort_rows, schema={"referral_key": pl.String, "patient_key": pl.String,
                                                          "cohort": pl.String, "cohort_reason": pl.String}),
                pl.LazyFrame({"patient_key": [], "patient_cohort": []}, schema={"patient_key": pl.String,
                                                                                 "patient_cohort": pl.String}),
                pl.LazyFrame(exceptions or [], schema=exc_schema), sharing, dp, opts)
