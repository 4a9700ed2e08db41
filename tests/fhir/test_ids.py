"""UUIDv5 ids: the vectorised path equals uuid.uuid5, and ids depend on keys only."""

from __future__ import annotations

import uuid

import polars as pl
from hypothesis import given, settings
from hypothesis import strategies as st

from migrate.fhir import fhir_id, fhir_ids, namespace


def test_vectorised_ids_equal_uuid5() -> None:
    ns = namespace("https://fhir.handover.example", "sys")
    keys = ["P1", "P0000001", "é-ü/ß", "", "x" * 300]
    got = fhir_ids(ns, "patient", pl.Series("k", keys)).to_list()
    assert got == [str(uuid.uuid5(ns, f"patient/{k}")) for k in keys]
    assert all(uuid.UUID(g).version == 5 for g in got)
    assert got == [fhir_id(ns, "patient", k) for k in keys]


@settings(max_examples=200, deadline=None)
@given(keys=st.lists(st.one_of(st.none(), st.text()), max_size=30), kind=st.text(min_size=1, max_size=20),
       system=st.text(min_size=1, max_size=20))
def test_every_key_gets_its_uuid5_whatever_its_text(keys: list[str | None], kind: str, system: str) -> None:
    # any text (unicode, control characters, the empty string), any kind and namespace: byte for byte uuid5's
    ns = namespace("https://fhir.handover.example", system)
    got = fhir_ids(ns, kind, pl.Series("k", keys, dtype=pl.String)).to_list()
    assert got == [None if k is None else str(uuid.uuid5(ns, f"{kind}/{k}")) for k in keys]


def test_nulls_stay_null() -> None:
    ns = namespace("https://fhir.handover.example", "sys")
    assert fhir_ids(ns, "patient", pl.Series("k", ["P1", None])).to_list()[1] is None


def test_namespace_separates_source_systems_and_kinds() -> None:
    a, b = namespace("https://x", "system-a"), namespace("https://x", "system-b")
    assert fhir_id(a, "patient", "P1") != fhir_id(b, "patient", "P1")
    assert fhir_id(a, "referral", "P1") != fhir_id(a, "episode", "P1")
    assert fhir_id(a, "patient", "P1") == fhir_id(namespace("https://x", "system-a"), "patient", "P1")
