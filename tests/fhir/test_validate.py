"""The fast validator is at least as strict as the R4B models on our resources.

Each scenario corrupts one input value the way an extract can (empty text, a code with a
double space, a local time that does not exist). The resources are built without
validation; then every resource goes through the R4B model (the reference) and through
the fast path (value checks + one model validation per shape). Whatever the model rejects,
the fast path must reject; some corruptions only the fast path catches (it is stricter).
"""

from __future__ import annotations

from datetime import datetime
from types import ModuleType
from typing import Any

import polars as pl
import pytest

from migrate.fhir.inputs import Context, gather, plan_patients
from migrate.fhir.resources import BUILDERS
from migrate.fhir.validate import ShapeCache, full_problems


def _unvalidated(case: Any) -> pl.DataFrame:
    ctx = Context.of(case.options)
    plan = plan_patients(case.tables["patients"], case.options.bundle_size)
    inputs = gather(case.tables, case.cohorts, case.exceptions, case.sharing, case.derived_priority, plan, ctx)
    return pl.concat([b(inputs, ctx).resources for b in BUILDERS])


def _verdicts(resources: pl.DataFrame) -> tuple[set[str], set[str]]:
    model = full_problems(resources)
    shape = ShapeCache().problems(resources)
    fast = resources.with_columns(shape.alias("s")).filter(
        pl.col("problems").is_not_null() | pl.col("s").is_not_null())
    rejected_by_model = set(resources.filter(model.is_not_null())["fhir_id"])
    return rejected_by_model, set(fast["fhir_id"])


def _case(fx: ModuleType, patient: dict[str, Any] | None = None, referral: dict[str, Any] | None = None,
          contact: dict[str, Any] | None = None, code: dict[str, Any] | None = None,
          derived: str | None = None) -> Any:
    # a clean twin patient first, so the corrupt one is not the shape's representative
    return fx.literal_case(
        [fx.patient("P0"), fx.patient("P1", **(patient or {}))],
        [fx.referral("R0", "P0"), fx.referral("R1", "P1", **(referral or {}))],
        cohorts={"R0": "transition", "R1": "transition"},
        contacts=[fx.contact("C0", "R0", "P0", site="Clinic", procedure="injection"),
                  fx.contact("C1", "R1", "P1", **{"site": "Clinic", "procedure": "injection", **(contact or {})}),
                  fx.contact("C2", "R1", "P1", when="2022-10-20 09:00", attendance="booked",
                             **{"site": "Clinic", **(contact or {})})],
        codes=[fx.code("P0"), fx.code("P1", **(code or {}))],
        derived=[("R0", "urgent", "red flag"), ("R1", "urgent", derived if derived is not None else "red flag")],
    )


BOTH = {  # the model rejects these; so must the fast path
    "empty family name": {"patient": {"family_name": ""}},
    "empty local patient id": {"patient": {"source_patient_id": ""}},
    "empty postcode": {"patient": {"postcode": ""}},
    "empty phone": {"patient": {"phone": ""}},
    "empty address": {"patient": {"address": ""}},
    "empty referral id": {"referral": {"source_referral_id": ""}},
    "empty UBRN": {"referral": {"ubrn": ""}},
    "empty reason text": {"referral": {"reason_text": ""}},
    "empty service line": {"referral": {"service_line": ""}},
    "service line with a double space": {"referral": {"service_line": "physio  tier"}},
    "body site with a trailing space": {"referral": {"body_site": "knee "}},
    "empty referral source": {"referral": {"referral_source": ""}},
    "empty contact id": {"contact": {"contact_key": ""}},
    "empty site": {"contact": {"site": ""}},
    "empty procedure": {"contact": {"procedure": ""}},
    "empty display": {"code": {"display": ""}},
    "code with a double space": {"code": {"code": "279  039007"}},
    "empty priority reason": {"derived": ""},
}
FAST_ONLY = {  # the model accepts these; the fast path is stricter
    "control character in a name": {"patient": {"given_names": "Pat\x01"}},
    "clock-change gap (no such local time)": {"contact": {"contact_datetime": datetime(2022, 3, 27, 1, 30)}},
}


@pytest.mark.parametrize("name", sorted(BOTH))
def test_fast_path_rejects_whatever_the_model_rejects(fx: ModuleType, name: str) -> None:
    scenario = {k: v for k, v in BOTH[name].items() if k != "model_accepts"}
    resources = _unvalidated(_case(fx, **scenario))
    by_model, by_fast = _verdicts(resources)
    assert by_model <= by_fast, f"{name}: the model rejects resources the fast path accepts"
    assert by_fast, f"{name}: nothing rejected (the scenario does not corrupt anything)"
    if not BOTH[name].get("model_accepts"):
        assert by_model, f"{name}: the R4B model accepts it (move it to FAST_ONLY)"
    clean = resources.filter(pl.col("patient_key") == "P0")
    assert not set(clean["fhir_id"]) & by_fast, "the clean twin was rejected"


@pytest.mark.parametrize("name", sorted(FAST_ONLY))
def test_fast_path_is_stricter_where_the_model_is_lax(fx: ModuleType, name: str) -> None:
    by_model, by_fast = _verdicts(_unvalidated(_case(fx, **FAST_ONLY[name])))
    assert by_fast and not by_model


def test_full_and_fast_agree_on_the_golden_case(golden_case: Any) -> None:
    resources = _unvalidated(golden_case)
    by_model, by_fast = _verdicts(resources)
    assert by_model == by_fast == set()
    assert resources.height > 100


def test_the_model_path_is_used_for_every_resource_in_full_mode(fx: ModuleType) -> None:
    from migrate.fhir import write_fhir

    case = _case(fx, patient={"family_name": ""})
    built = case.build(validation="full")
    assert set(built.errors["patient_key"]) == {"P1"}
    assert built.errors.filter(pl.col("fhir_type") == "Patient")["problem"][0].count("R4B model") == 1
    assert write_fhir  # imported for the public API
