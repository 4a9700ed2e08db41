"""The run's policies: the choices that decide dispositions (never its output options).

Defined once, read by the configuration (``handover run`` options), the dispositions
stage and the FHIR options (whose Provenance names the sharing policy).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

SharingPolicy = Literal["withhold-clinical", "include"]
SHARING_POLICIES: tuple[SharingPolicy, ...] = ("withhold-clinical", "include")
InactivePatients = Literal["exclude", "include"]
INACTIVE_PATIENTS: tuple[InactivePatients, ...] = ("exclude", "include")


@dataclass(frozen=True)
class Policy:
    """``sharing``: what a patient with an active sharing block gets (``withhold-clinical``:
    their contacts and clinical coded entries are withheld); ``inactive_patients``: whether
    a patient with nothing active at the cut-over is handed over (``exclude``: out of scope)."""

    sharing: SharingPolicy = "withhold-clinical"
    inactive_patients: InactivePatients = "exclude"


def sharing_policy(value: object) -> SharingPolicy | None:
    """``value`` as a sharing policy, or None when it is not one."""
    return next((p for p in SHARING_POLICIES if p == value), None)


def inactive_patients(value: object) -> InactivePatients | None:
    """``value`` as an inactive-patients policy, or None when it is not one."""
    return next((p for p in INACTIVE_PATIENTS if p == value), None)
