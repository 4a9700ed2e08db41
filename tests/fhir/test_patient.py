"""Patient: NHS number identifier and verification status, local ids, merges, demographics."""

from __future__ import annotations

from types import ModuleType
from typing import Any

import pytest

from migrate.fhir.options import NHS_NUMBER, VERIFICATION_EXTENSION


def _patient(fx: ModuleType, case: Any) -> dict[str, Any]:
    built = case.build()
    assert built.errors.height == 0, built.errors
    patients = fx.resources_of(built, "Patient")
    assert len(patients) == 1
    return dict(patients[0])


def _nhs(patient: dict[str, Any]) -> list[dict[str, Any]]:
    return [i for i in patient["identifier"] if i.get("system") == NHS_NUMBER]


def _status(identifier: dict[str, Any]) -> str:
    [ext] = [e for e in identifier["extension"] if e["url"] == VERIFICATION_EXTENSION]
    return str(ext["valueCodeableConcept"]["coding"][0]["code"])


@pytest.mark.parametrize(("number", "said", "expected"), [
    ("9434765919", "01", "01"),     # valid, extract says verified
    ("9434765919", "02", "02"),     # valid, not traced
    ("9434765919", None, "02"),     # valid, status not given: default 02
    ("9434765919", "NSTS01", "01"), # PID-32 style
    ("9434765919", "03", "02"),     # valid: only 01/02 are taken from the extract
    ("9434765918", "01", "03"),     # wrong check digit: trace required, number still sent
    ("1234567890", None, "03"),     # check digit would be 10
    ("0000000000", "01", "03"),     # passes the checksum, fails the range
])
def test_verification_status_computed(fx: ModuleType, number: str, said: str | None, expected: str) -> None:
    p = _patient(fx, fx.literal_case([fx.patient(nhs_number=number, nhs_number_status=said)]))
    [nhs] = _nhs(p)
    assert nhs["value"] == number
    assert _status(nhs) == expected


def test_missing_nhs_number_has_no_nhs_identifier(fx: ModuleType) -> None:
    p = _patient(fx, fx.literal_case([fx.patient(nhs_number=None, nhs_number_raw=None)]))
    assert _nhs(p) == []
    assert fx.local_id(p, "patient") == "P1"


def test_identity_columns_take_precedence(fx: ModuleType) -> None:
    import polars as pl

    case = fx.literal_case([fx.patient(nhs_number="9434765918", nhs_number_verification="05")],
                           patient_extra={"nhs_number_verification": pl.String})
    [nhs] = _nhs(_patient(fx, case))
    assert _status(nhs) == "05"
    case = fx.literal_case([fx.patient(nhs_number="9434765918", nhs_number_valid=True, nhs_number_status="01")],
                           patient_extra={"nhs_number_valid": pl.Boolean})
    [nhs] = _nhs(_patient(fx, case))
    assert _status(nhs) == "01"


def test_unknown_verification_code_is_an_error_not_a_crash(fx: ModuleType) -> None:
    import polars as pl

    case = fx.literal_case([fx.patient(nhs_number_verification="09")],
                           patient_extra={"nhs_number_verification": pl.String})
    built = case.build()
    assert built.resources.filter(pl.col("fhir_type") == "Patient").height == 0
    assert "value not in the mapping" in built.errors.filter(pl.col("fhir_type") == "Patient")["problem"][0]
    assert set(built.errors["table"].drop_nulls()) >= {"patients", "referrals"}


def test_demographics_and_gp(fx: ModuleType) -> None:
    p = _patient(fx, fx.literal_case([fx.patient(given_names="Mary  Anne", address="1 High St, Oxford",
                                                 phone="01632 960000", sex="male")]))
    assert p["name"] == [{"use": "official", "family": "Test", "given": ["Mary", "Anne"]}]
    assert p["gender"] == "male" and p["birthDate"] == "1960-01-01"
    assert p["address"] == [{"use": "home", "text": "1 High St, Oxford", "postalCode": "OX1 1AA"}]
    assert p["telecom"] == [{"system": "phone", "value": "01632 960000", "use": "home"}]
    [gp] = p["generalPractitioner"]
    assert gp["reference"].startswith("Organization/")
    assert gp["identifier"]["value"] == "K84001"
    assert p["meta"]["profile"] == ["https://fhir.hl7.org.uk/StructureDefinition/UKCore-Patient"]


def test_merged_patient_maps_to_the_survivor(fx: ModuleType, golden_built: Any) -> None:
    import polars as pl

    [p01] = fx.find(golden_built, "Patient", lambda r: fx.local_id(r, "patient") == "P01")
    locals_ = [i["value"] for i in p01["identifier"] if i["system"].endswith("/patient")]
    assert locals_ == ["P01", "P28"]
    assert not fx.find(golden_built, "Patient", lambda r: fx.local_id(r, "patient") == "P28")
    [r28] = fx.find(golden_built, "ServiceRequest", lambda r: fx.local_id(r, "referral") == "R28")
    assert r28["subject"]["reference"] == f"Patient/{p01['id']}"
    merged = golden_built.lineage.filter(pl.col("patient_key") == "P28", pl.col("table") == "patients")
    assert merged.select("disposition", "fhir_type", "fhir_id").rows() == [("merged", "Patient", p01["id"])]


def test_one_organization_per_practice(fx: ModuleType, golden_built: Any) -> None:
    orgs = fx.resources_of(golden_built, "Organization")
    assert [o["identifier"] for o in orgs] == [[{"system": "https://fhir.nhs.uk/Id/ods-organization-code",
                                                "value": "K84001"}]]
