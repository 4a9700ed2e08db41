"""Identity on whole extracts: the worked example's expected flags and the synthetic ground truth."""

from __future__ import annotations

import csv
import re
from pathlib import Path

import polars as pl
import pytest

from migrate.rules.flags import EXCEPTIONS_SCHEMA
from migrate.identity import (
    DUPLICATES_SCHEMA,
    IdentityResult,
    resolve_identity,
)
from migrate.ingest import ingest
from migrate.profile import load_profile
from migrate.synth import synthesise

CASES = Path(__file__).resolve().parents[1] / "cases"
IDENTITY_FLAGS = {"NHS_NUMBER_INVALID", "NHS_NUMBER_MISSING", "DUPLICATE_NHS_NUMBER", "NHS_NUMBER_CONFLICT",
                  "PROBABLE_DUPLICATE", "ALREADY_AT_TARGET"}


def rows(path: Path) -> list[dict[str, str]]:
    with path.open(encoding="utf-8", newline="") as fh:
        return list(csv.DictReader(fh))


@pytest.fixture(scope="module")
def worked(tmp_path_factory: pytest.TempPathFactory) -> IdentityResult:
    case = CASES / "worked-example"
    tables = ingest(case / "input", load_profile(case / "mapping.yaml"), tmp_path_factory.mktemp("we") / "work").tables
    from migrate.identity import load_identity_settings
    return resolve_identity(tables["patients"], tables["referrals"], load_identity_settings(None))


def test_worked_example_identity_flags(worked: IdentityResult) -> None:
    expected = {(r["subject"], r["flag"]) for r in rows(CASES / "worked-example" / "expected" / "flags.csv")
                if r["flag"] in IDENTITY_FLAGS}
    assert expected == {("P26", "NHS_NUMBER_INVALID"), ("P27", "NHS_NUMBER_MISSING"),
                        ("P01+P28", "DUPLICATE_NHS_NUMBER")}
    got = set(worked.exceptions.select("subject_key", "flag_code").iter_rows())
    # Exactly the domain.md section 3 identity flags expected; the other shared numbers are conflicts.
    assert {g for g in got if g[1] != "NHS_NUMBER_CONFLICT"} == expected
    conflicts = {k for k, code in got if code == "NHS_NUMBER_CONFLICT"}
    assert conflicts == {"P05+P06", "P08+P09", "P11+P12", "P15+P16", "P18+P19", "P23+P24"}
    assert worked.merges.rows() == [("P28", "P01")]
    assert worked.exceptions.filter(pl.col("flag_code") == "DUPLICATE_NHS_NUMBER").item(0, "patient_key") == "P01"


def test_worked_example_patients(worked: IdentityResult) -> None:
    p = worked.patients
    assert p.height == 28 and p.get_column("patient_key").is_unique().all()
    verification = dict(p.select("patient_key", "nhs_number_verification").iter_rows())
    assert verification["P26"] == verification["P27"] == "03" and verification["P01"] == "02"
    assert dict(p.select("patient_key", "nhs_number_valid").iter_rows())["P26"] is False
    assert worked.exceptions.schema == EXCEPTIONS_SCHEMA
    assert list(worked.exceptions.columns) == ["flag_code", "severity", "subject_type", "subject_key", "patient_key",
                                               "rule_id", "evidence", "action"]
    assert worked.duplicates.schema == DUPLICATES_SCHEMA


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, IdentityResult]:
    out = tmp_path_factory.mktemp("synth") / "extract"
    synthesise(out, patients=2_000)
    tables = ingest(out, load_profile("generic-csv"), out.parent / "work").tables
    from migrate.identity import load_identity_settings
    result = resolve_identity(tables["patients"], tables["referrals"], load_identity_settings(None),
                              pl.scan_csv(out / "target-index.csv", infer_schema=False))
    return out, result


def test_synthetic_duplicates_found_with_their_match_type(synthetic: tuple[Path, IdentityResult]) -> None:
    out, result = synthetic
    planted = {(r["patient_id_a"], r["patient_id_b"]): r["match_type"] for r in rows(out / "truth" / "duplicates.csv")}
    assert set(planted.values()) == {"exact_nhs_number", "probable", "conflict"}
    found = {(a, b): t for a, b, t in result.duplicates.select("patient_key_a", "patient_key_b", "match_type")
             .iter_rows()}
    assert {pair: found.get(pair) for pair in planted} == planted
    # nothing else reaches probable or is merged
    assert {p: t for p, t in found.items() if t != "possible"} == planted
    merged = {(b, a) for (a, b), t in planted.items() if t == "exact_nhs_number"}
    assert set(result.merges.iter_rows()) == merged


def test_synthetic_identity_flags_are_the_truth(synthetic: tuple[Path, IdentityResult]) -> None:
    out, result = synthetic
    truth = {(r["subject_id"], r["flag_code"]) for r in rows(out / "truth" / "flags.csv")
             if r["flag_code"] in IDENTITY_FLAGS}
    assert {code for _, code in truth} == IDENTITY_FLAGS
    assert set(result.exceptions.select("subject_key", "flag_code").iter_rows()) == truth


def test_synthetic_target_matches_are_the_planted_ones(synthetic: tuple[Path, IdentityResult]) -> None:
    out, result = synthetic
    planted = {r["subject_id"] for r in rows(out / "truth" / "flags.csv") if r["flag_code"] == "ALREADY_AT_TARGET"}
    assert set(result.at_target.get_column("patient_key").to_list()) == planted
    assert set(result.at_target.get_column("match_method").to_list()) == {"nhs_number"}
    index = pl.read_csv(out / "target-index.csv", infer_schema=False)
    local = dict(result.at_target.select("patient_key", "at_target_id").iter_rows())
    patients = pl.read_csv(out / "patients.csv", infer_schema=False, truncate_ragged_lines=True,
                           encoding="utf8-lossy").select("patient_id", pl.col("nhs_number").str.replace_all(" ", ""))
    expected = dict(patients.join(index, on="nhs_number").select("patient_id", "local_id").iter_rows())
    assert local == {k: v for k, v in expected.items() if k in planted}


def test_synthetic_evidence_has_no_identifying_values(synthetic: tuple[Path, IdentityResult]) -> None:
    _, result = synthetic
    text = "\n".join(result.exceptions.get_column("evidence").to_list()).lower()
    people = result.patients
    for col in ("family_name", "nhs_number", "postcode", "phone"):
        values = [v.lower() for v in people.get_column(col).drop_nulls().unique().to_list() if len(v) > 3]
        assert not [v for v in values if re.search(rf"\b{re.escape(v)}\b", text)], col
    dates = people.get_column("birth_date").drop_nulls().dt.strftime("%Y-%m-%d").unique().to_list()
    assert not [d for d in dates if d in text]
