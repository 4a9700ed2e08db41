"""Identity test helpers: the shipped settings and canonical patients built from a few literal rows."""

from __future__ import annotations

from datetime import date
from typing import Any

import polars as pl
import pytest

from migrate import canonical
from migrate.identity import IdentitySettings, load_identity_settings


@pytest.fixture(scope="session")
def settings() -> IdentitySettings:
    return load_identity_settings(None)


def patients(*rows: dict[str, Any]) -> pl.LazyFrame:
    """Canonical patients: each row names the columns it sets; ``key`` sets patient_key and
    source_patient_id; ``nhs`` sets nhs_number and nhs_number_raw; source_row is the position."""
    out = []
    for n, row in enumerate(rows, start=1):
        row = dict(row)
        key = row.pop("key")
        nhs = row.pop("nhs", None)
        born = row.pop("born", None)
        out.append({"patient_key": key, "source_patient_id": key, "nhs_number": nhs, "nhs_number_raw": nhs,
                    "birth_date": date.fromisoformat(born) if born else None, "source_file": "patients.csv",
                    "source_row": n, **row})
    return pl.DataFrame(out, schema=canonical.PATIENTS.schema).lazy()


def referrals(*rows: tuple[str, str]) -> pl.LazyFrame:
    """Canonical referrals of (patient_key, received_date) pairs."""
    out = [{"referral_key": f"R{n}", "patient_key": key, "received_date": date.fromisoformat(day),
            "source_row": n} for n, (key, day) in enumerate(rows, start=1)]
    return pl.DataFrame(out, schema=canonical.REFERRALS.schema).lazy()


PERSON: dict[str, Any] = {"family_name": "Ashby", "given_names": "Alice", "born": "1941-02-11", "sex": "female",
                          "postcode": "OX2 1AB", "address": "1 High Street, Oxford", "phone": "07700 900123"}
