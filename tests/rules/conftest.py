"""Literal canonical rows for rule tests: build frames, run the rules stage, read results.

Tests reach the helpers through the ``rc`` fixture (this module), because the suite runs
with ``--import-mode=importlib``, where test folders are not importable. Each helper fills the canonical columns a test does not care about with neutral values
(an open, routine, in-scope knee referral received on 2022-07-01; no contacts, no codes),
so a test states only the rows and fields that make its point.
"""

from __future__ import annotations

import sys
from datetime import date, datetime
from pathlib import Path
from types import ModuleType
from typing import Any

import polars as pl
import pytest

from migrate import canonical
from migrate.rules import RulePack, evaluate, load_pack

T = date(2022, 10, 1)
_DEFAULT: RulePack | None = None


@pytest.fixture
def rc() -> ModuleType:
    """These helpers: ``rc.referral(...)``, ``rc.tables(...)``, ``rc.run(...)``, ``rc.flags(...)``."""
    return sys.modules[__name__]


def default_pack() -> RulePack:
    """The shipped pack, loaded once per test session."""
    global _DEFAULT
    if _DEFAULT is None:
        _DEFAULT = load_pack(None)
    return _DEFAULT


def referral(key: str = "R1", patient: str = "P1", **fields: Any) -> dict[str, Any]:
    row: dict[str, Any] = {
        "referral_key": key, "source_referral_id": key, "patient_key": patient, "received_date": date(2022, 7, 1),
        "service_line": "physio", "assigned_priority": "routine", "transfer_list": None, "status": "open",
        "history_of_cancer": False, "red_flags": [], "body_site": "knee", "awaiting_injection": False,
    }
    row.update(fields)
    return row


def contact(referral_key: str = "R1", when: str = "2022-09-01 09:00", attendance: str = "attended",
            patient: str = "P1", **fields: Any) -> dict[str, Any]:
    row: dict[str, Any] = {
        "contact_key": f"{referral_key}-{when}", "referral_key": referral_key, "patient_key": patient,
        "contact_datetime": datetime.fromisoformat(when), "attendance": attendance, "contact_type": "initial",
    }
    row.update(fields)
    return row


def code(patient: str, system: str, value: str, recorded: date | None) -> dict[str, Any]:
    return {"patient_key": patient, "code_system": system, "code": value, "recorded_date": recorded}


def frame(table: str, rows: list[dict[str, Any]]) -> pl.LazyFrame:
    """A canonical table from ``rows``; absent fields are null, dtypes are canonical."""
    schema = canonical.TABLES[table].schema
    for row in rows:
        unknown = set(row) - set(schema)
        assert not unknown, f"not canonical {table} columns: {unknown}"
    return pl.DataFrame([{c: row.get(c) for c in schema} for row in rows], schema=schema, orient="row").lazy()


def tables(referrals: list[dict[str, Any]], contacts: list[dict[str, Any]] = (),  # type: ignore[assignment]
           codes: list[dict[str, Any]] = (), patients: list[dict[str, Any]] | None = None,  # type: ignore[assignment]
           ) -> dict[str, pl.LazyFrame]:
    if patients is None:
        keys = sorted({r["patient_key"] for r in referrals} | {c["patient_key"] for c in codes})
        patients = [{"patient_key": k, "source_patient_id": k, "birth_date": date(1960, 1, 1), "sex": "female"}
                    for k in keys]
    return {"patients": frame("patients", patients), "referrals": frame("referrals", list(referrals)),
            "contacts": frame("contacts", list(contacts)), "codes": frame("codes", list(codes))}


def run(frames: dict[str, pl.LazyFrame], pack: RulePack | None = None, cutover: date = T) -> dict[str, pl.DataFrame]:
    return evaluate(frames, pack or default_pack(), cutover).collect()


def cohort_of(results: dict[str, pl.DataFrame], referral_key: str = "R1") -> str:
    row = results["cohorts"].filter(pl.col("referral_key") == referral_key)
    assert row.height == 1
    return str(row["cohort"][0])


def flags(results: dict[str, pl.DataFrame]) -> set[tuple[str, str]]:
    """(subject_key, flag_code) of every exception raised."""
    ex = results["exceptions"]
    return set(zip(ex["subject_key"].to_list(), ex["flag_code"].to_list(), strict=True))


def write_pack(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def site_pack_problems(folder: Path, body: str) -> list[str]:
    """The problems (exit 2) of a site pack that extends the default with ``body``."""
    from migrate.errors import ConfigError

    path = write_pack(folder / "site.yaml", "extends: default\nname: site\n" + body)
    with pytest.raises(ConfigError) as caught:
        load_pack(path)
    assert caught.value.exit_code == 2
    return caught.value.problems
