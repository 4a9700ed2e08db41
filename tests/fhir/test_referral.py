"""ServiceRequest and EpisodeOfCare: status, priority (incl. rule-raised), source, episodes."""

from __future__ import annotations

from types import ModuleType
from typing import Any

import polars as pl
import pytest

from migrate.fhir.options import (
    PRIORITY_REASON_EXTENSION,
    SNOMED,
    SOURCE_OF_REQUEST_EXTENSION,
    UBRN,
)


def _one(fx: ModuleType, case: Any, resource_type: str) -> dict[str, Any]:
    built = case.build()
    assert built.errors.height == 0, built.errors
    [resource] = fx.resources_of(built, resource_type)
    return dict(resource)


@pytest.mark.parametrize(("assigned", "expected"), [
    ("routine", "routine"), ("urgent", "urgent"), ("two_week_wait", "asap"), ("unknown", None)])
def test_priority_mapping(fx: ModuleType, assigned: str, expected: str | None) -> None:
    sr = _one(fx, fx.literal_case([fx.patient()], [fx.referral(assigned_priority=assigned)]), "ServiceRequest")
    assert sr.get("priority") == expected
    assert "_priority" not in sr
    if expected is None:
        assert any("unknown" in n["text"] for n in sr["note"])


def test_rule_raised_priority(fx: ModuleType) -> None:
    case = fx.literal_case([fx.patient()], [fx.referral(red_flags=["cauda_equina"])],
                           derived=[("R1", "urgent", "cauda equina red flag on a routine list")])
    sr = _one(fx, case, "ServiceRequest")
    assert sr["priority"] == "urgent"
    [ext] = sr["_priority"]["extension"]
    assert ext["url"] == PRIORITY_REASON_EXTENSION
    assert ext["valueCodeableConcept"]["text"] == "cauda equina red flag on a routine list"
    notes = [n["text"] for n in sr["note"]]
    assert any(n.startswith("Priority on the outgoing provider's list: routine; raised to urgent") for n in notes)
    assert "Red-flag indicators recorded: cauda_equina" in notes


def test_golden_raised_to_two_week_wait_is_asap(fx: ModuleType, golden_built: Any) -> None:
    [r14] = fx.find(golden_built, "ServiceRequest", lambda r: fx.local_id(r, "referral") == "R14")
    assert r14["priority"] == "asap" and "_priority" in r14


def test_derived_priority_that_is_not_higher_is_not_a_raise(fx: ModuleType) -> None:
    case = fx.literal_case([fx.patient()], [fx.referral(assigned_priority="urgent")],
                           derived=[("R1", "urgent", "same")])
    sr = _one(fx, case, "ServiceRequest")
    assert sr["priority"] == "urgent" and "_priority" not in sr


def test_unknown_derived_priority_is_an_error(fx: ModuleType) -> None:
    case = fx.literal_case([fx.patient()], [fx.referral()], derived=[("R1", "emergency", "?")])
    built = case.build()
    assert built.resources.filter(pl.col("fhir_type") == "ServiceRequest").height == 0
    assert built.errors.filter(pl.col("problem").str.contains("derived priority")).height == 1


@pytest.mark.parametrize(("cohort", "status", "episode"), [
    ("backlog", "active", "waitlist"), ("transition", "active", "active"), ("pifu", "active", "onhold"),
    ("pifu_expired", "active", "onhold"), ("closed", "completed", None), ("rejected", "revoked", None)])
def test_status_and_episode_by_cohort(fx: ModuleType, cohort: str, status: str, episode: str | None) -> None:
    from datetime import date

    case = fx.literal_case([fx.patient()], [fx.referral(pifu_expiry_date=date(2023, 2, 1))], cohorts={"R1": cohort})
    built = case.build()
    [sr] = fx.resources_of(built, "ServiceRequest")
    assert sr["status"] == status and sr["intent"] == "order"
    episodes = fx.resources_of(built, "EpisodeOfCare")
    if episode is None:
        assert episodes == []
        return
    [eoc] = episodes
    assert eoc["status"] == episode
    assert eoc["type"][0]["coding"][0]["code"] == cohort
    assert eoc["referralRequest"] == [{"reference": f"ServiceRequest/{sr['id']}"}]
    assert eoc["period"].get("end") == ("2023-02-01" if cohort.startswith("pifu") else None)


def test_identifiers_source_and_service_line(fx: ModuleType) -> None:
    sr = _one(fx, fx.literal_case([fx.patient()], [fx.referral(ubrn="123456789012", referral_source="self",
                                                               reason_text="Knee pain")]), "ServiceRequest")
    assert fx.local_id(sr, "referral") == "R1"
    assert {"system": UBRN, "value": "123456789012"} in sr["identifier"]
    [source] = sr["extension"]
    assert source["url"] == SOURCE_OF_REQUEST_EXTENSION
    assert source["valueCodeableConcept"]["coding"] == [{"system": SNOMED, "code": "760081000000107"}]
    assert sr["code"]["coding"][0]["code"] == "physio"
    assert sr["reasonCode"] == [{"text": "Knee pain"}]
    assert sr["authoredOn"] == "2022-07-01"


def test_unknown_referral_source_is_kept_as_text(fx: ModuleType) -> None:
    sr = _one(fx, fx.literal_case([fx.patient()], [fx.referral(referral_source="walk-in")]), "ServiceRequest")
    assert sr["extension"][0]["valueCodeableConcept"] == {"text": "walk-in"}
