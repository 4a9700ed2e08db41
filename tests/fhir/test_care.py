"""Encounters, Appointments, Conditions, Consents and Flags."""

from __future__ import annotations

from types import ModuleType
from typing import Any

import polars as pl
import pytest


def test_attended_is_an_encounter_and_booked_an_appointment(fx: ModuleType) -> None:
    case = fx.literal_case([fx.patient()], [fx.referral()], cohorts={"R1": "transition"}, contacts=[
        fx.contact("C1", when="2022-09-01 09:00", attendance="attended", site="Clinic A", modality="telephone"),
        fx.contact("C2", when="2022-10-15 10:00", attendance="booked"),
        fx.contact("C3", when="2022-08-01 10:00", attendance="did_not_attend"),
        fx.contact("C4", when="2022-01-10 10:00", attendance="cancelled_by_patient"),
    ])
    built = case.build()
    [enc] = fx.resources_of(built, "Encounter")
    assert enc["status"] == "finished" and enc["class"]["code"] == "VR"
    assert enc["period"] == {"start": "2022-09-01T09:00:00+01:00"}  # BST
    assert enc["location"] == [{"location": {"display": "Clinic A"}}]
    assert enc["episodeOfCare"][0]["reference"].startswith("EpisodeOfCare/")
    appointments = {fx.local_id(a, "contact"): a for a in fx.resources_of(built, "Appointment")}
    assert appointments["C2"]["status"] == "booked"
    assert appointments["C2"]["start"] == "2022-10-15T10:00:00+01:00"
    assert appointments["C2"]["end"] == "2022-10-15T10:30:00+01:00"
    assert appointments["C3"]["status"] == "noshow"
    assert appointments["C4"]["status"] == "cancelled"
    assert appointments["C4"]["cancelationReason"]["coding"][0]["code"] == "pat"
    assert appointments["C4"]["start"] == "2022-01-10T10:00:00Z"  # GMT
    assert appointments["C4"]["participant"][0]["status"] == "declined"


@pytest.mark.parametrize("cohort", ["closed", "rejected"])
def test_contacts_of_a_closed_or_rejected_referral_are_history_sent(fx: ModuleType, cohort: str) -> None:
    """A patient in active care (R1 in transition) keeps their history: R2's contacts are an
    Encounter and an Appointment based on R2's ServiceRequest, with no EpisodeOfCare (R2 has none)."""
    case = fx.literal_case([fx.patient()], [fx.referral("R1"), fx.referral("R2")],
                           cohorts={"R1": "transition", "R2": cohort},
                           contacts=[fx.contact("C1", "R2"), fx.contact("C2", "R2", when="2022-03-15 10:00",
                                                                         attendance="cancelled_by_provider")])
    built = case.build()
    assert set(case.decided()["disposition"]) == {"migrated"}
    [enc] = fx.resources_of(built, "Encounter")
    [appointment] = fx.resources_of(built, "Appointment")
    [r2] = fx.find(built, "ServiceRequest", lambda r: fx.local_id(r, "referral") == "R2")
    assert r2["status"] == {"closed": "completed", "rejected": "revoked"}[cohort]
    assert enc["basedOn"] == [{"reference": f"ServiceRequest/{r2['id']}"}] == appointment["basedOn"]
    assert "episodeOfCare" not in enc
    assert [e["id"] for e in fx.resources_of(built, "EpisodeOfCare")] != []  # R1's only
    assert built.errors.height == 0  # every reference resolves


def test_dummy_slot_is_not_an_appointment(fx: ModuleType) -> None:
    from migrate.dispositions import DUMMY_SLOT

    case = fx.literal_case([fx.patient()], [fx.referral()],
                           contacts=[fx.contact("C1", slot_name=" Admin Appointment Only ")])
    built = case.build()
    assert fx.resources_of(built, "Encounter") == []
    contact = case.decided().filter(pl.col("table") == "contacts")
    assert contact.select("disposition", "reason").rows() == [("out_of_scope", DUMMY_SLOT)]


def test_clinical_codes_are_conditions_and_duplicates_merge(fx: ModuleType) -> None:
    case = fx.literal_case([fx.patient()], codes=[fx.code(), fx.code(), fx.code(value="9Nu0", system="read2",
                                                                                  display="Type 1 opt-out")])
    built = case.build()
    [cond] = fx.resources_of(built, "Condition")
    assert cond["code"]["coding"] == [{"system": "http://snomed.info/sct", "code": "279039007",
                                       "display": "Low back pain"}]
    assert cond["recordedDate"] == "2022-01-01"
    lines = built.lineage.filter(pl.col("table") == "codes")
    assert lines.filter(pl.col("fhir_type") == "Condition")["fhir_id"].to_list() == [cond["id"], cond["id"]]
    [opt_out] = fx.resources_of(built, "Consent")
    assert opt_out["provision"]["type"] == "deny"
    assert {p["code"] for p in opt_out["provision"]["purpose"]} == {"HRESCH", "HOPERAT"}


def test_cancer_history_condition(fx: ModuleType, golden_built: Any) -> None:
    [cond] = fx.resources_of(golden_built, "Condition")
    assert cond["code"]["coding"][0]["code"] == "266987004"
    assert "verify" in cond["note"][0]["text"]
    [p14] = fx.find(golden_built, "Patient", lambda r: fx.local_id(r, "patient") == "P14")
    assert cond["subject"]["reference"] == f"Patient/{p14['id']}"


def test_sharing_consents(fx: ModuleType, golden_built: Any) -> None:
    by_patient = {c["patient"]["reference"]: c for c in fx.resources_of(golden_built, "Consent")}
    ids = {fx.local_id(p, "patient"): p["id"] for p in fx.resources_of(golden_built, "Patient")}
    p21 = by_patient[f"Patient/{ids['P21']}"]
    assert p21["scope"]["coding"][0]["code"] == "patient-privacy"
    assert p21["provision"]["type"] == "deny"
    assert p21["provision"]["code"][0]["coding"][0]["code"] == "93C1"
    assert by_patient[f"Patient/{ids['P22']}"]["provision"]["type"] == "permit"  # later consent lifted it
    assert by_patient[f"Patient/{ids['P23']}"]["provision"]["type"] == "deny"


def test_flags_for_clinician_facing_exceptions_only(fx: ModuleType, golden_built: Any) -> None:
    flags = fx.resources_of(golden_built, "Flag")
    codes = sorted(f["code"]["coding"][0]["code"] for f in flags)
    assert codes == sorted(["UNDER_PRIORITISED", "UNDER_PRIORITISED", "POST_OP_NOT_PRIORITISED",
                            "AWAITING_INJECTION", "URGENT_WAIT_BREACH", "SHARING_BLOCK", "SHARING_BLOCK_ACTIVE_CARE",
                            "SHARING_BLOCK"])
    [r13] = fx.find(golden_built, "ServiceRequest", lambda r: fx.local_id(r, "referral") == "R13")
    [flag] = [f for f in flags if f.get("extension", [{}])[0].get("valueReference", {}).get("reference")
              == f"ServiceRequest/{r13['id']}"]
    assert flag["code"]["text"].startswith("UNDER_PRIORITISED (critical, rule under-prioritised): red_flags")
    assert flag["subject"] == {"reference": r13["subject"]["reference"]}
