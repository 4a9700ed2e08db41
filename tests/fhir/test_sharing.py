"""The sharing-block policy: withhold-clinical (default) versus include."""

from __future__ import annotations

from datetime import date
from types import ModuleType
from typing import Any

import polars as pl

from migrate.fhir import sharing_from_codes, sharing_from_features

WITHHELD_TYPES = {"Encounter", "Appointment", "Condition"}
ALLOWED = {"Patient", "ServiceRequest", "EpisodeOfCare", "Consent", "Flag"}


def _blocked_case(fx: ModuleType, **options: Any) -> Any:
    return fx.literal_case(
        [fx.patient("P1"), fx.patient("P2")],
        [fx.referral("R1", "P1", history_of_cancer=True), fx.referral("R2", "P2")],
        cohorts={"R1": "transition", "R2": "transition"},
        contacts=[fx.contact("C1", "R1", "P1"), fx.contact("C2", "R2", "P2")],
        codes=[fx.code("P1"), fx.code("P1", "read2", "93C1", display="Refused consent"), fx.code("P2")],
        blocked=["P1"],
        exceptions=[{"flag_code": "SHARING_BLOCK", "severity": "high", "subject_type": "patient", "subject_key": "P1",
                     "patient_key": "P1", "rule_id": "sharing-block", "evidence": "x", "action": "y"}],
        **options,
    )


def _types_of(built: Any, patient_key: str) -> set[str]:
    return set(built.resources.filter(pl.col("patient_key") == patient_key)["fhir_type"])


def test_withhold_clinical_sends_only_the_allowed_types(fx: ModuleType) -> None:
    built = _blocked_case(fx).build()
    assert built.errors.height == 0
    assert _types_of(built, "P1") == ALLOWED
    assert _types_of(built, "P2") == {"Patient", "ServiceRequest", "EpisodeOfCare", "Encounter", "Condition"}
    decided = _blocked_case(fx).decided()
    withheld = decided.filter(pl.col("disposition") == "withheld").sort("table")
    assert withheld.select("table", "patient_key", "source_row").rows() == [("codes", "P1", 1), ("contacts", "P1", 1)]
    assert (withheld["reason"].str.contains("withhold-clinical")).all()
    [provenance] = fx.resources_of(built, "Provenance")
    assert provenance["policy"] == ["https://fhir.handover.example/policy/sharing-block/withhold-clinical"]
    # the blocked patient's referral row still migrates (ServiceRequest), so it is not withheld
    assert built.lineage.filter(pl.col("patient_key") == "P1", pl.col("table") == "referrals").height >= 2


def test_include_sends_everything(fx: ModuleType) -> None:
    built = _blocked_case(fx, sharing_policy="include").build()
    assert _types_of(built, "P1") == ALLOWED | {"Encounter", "Condition"}
    assert (_blocked_case(fx, sharing_policy="include").decided()["disposition"] == "migrated").all()
    [provenance] = fx.resources_of(built, "Provenance")
    assert provenance["policy"] == ["https://fhir.handover.example/policy/sharing-block/include"]
    assert len(fx.resources_of(built, "Condition")) == 3  # 2 coded entries + P1's cancer history


def test_golden_blocked_patients(fx: ModuleType, golden_case: Any, golden_built: Any) -> None:
    for key in ("P21", "P23"):
        assert len(fx.find(golden_built, "Patient", lambda r, key=key: fx.local_id(r, "patient") == key)) == 1
        types = set(golden_built.resources.filter(pl.col("patient_key") == key)["fhir_type"])
        assert types <= ALLOWED and {"Patient", "Consent", "Flag"} <= types, (key, types)
    from migrate.fhir import FhirOptions  # noqa: F401 - the golden case's options decide

    withheld = golden_case.decided().filter(pl.col("disposition") == "withheld")
    assert sorted(withheld["patient_key"]) == ["P21", "P23"]


def test_sharing_adapter_matches_the_rules_features(golden_case: Any) -> None:
    from migrate.rules.features import patient_features
    from migrate.rules import load_pack

    cutover = date(2022, 10, 1)
    columns = ["patient_key", "blocked", "latest_code", "latest_date", "latest_source"]
    direct = sharing_from_codes(golden_case.tables, cutover).collect().sort("patient_key")
    via = sharing_from_features(patient_features(golden_case.tables, load_pack(None), cutover)).collect()
    # the adapter lists the patients with an entry; the features every patient, the rest unblocked
    with_entries = via.filter(pl.col("patient_key").is_in(direct["patient_key"].implode()))
    assert direct.select(columns).equals(with_entries.select(columns).sort("patient_key"))
    assert not via.join(direct, on="patient_key", how="anti")["blocked"].any()
    assert direct["patient_key"].to_list() == ["P21", "P22", "P23", "P24"]
    assert direct.filter(pl.col("blocked"))["patient_key"].to_list() == ["P21", "P23"]
