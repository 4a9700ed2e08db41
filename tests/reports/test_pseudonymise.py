"""The pseudonymised pack: no original identifier anywhere, the same token everywhere."""

from __future__ import annotations

import csv
import hashlib
import hmac
import io
import json
import re
from pathlib import Path
from types import ModuleType
from typing import Any

import openpyxl
import polars as pl
import pytest

from migrate.errors import ConfigError
from migrate.outputs import write_json
from migrate.reports import load_key, pseudonymise, record_previous, write_reports

KEY = b"a test key that is long enough"


def token(value: str) -> str:
    return hmac.new(KEY, value.encode(), hashlib.sha256).hexdigest()[:16]


def plant_identifiers(run: Path, rh: ModuleType) -> list[str]:
    """Write identifiers into flag evidence, as identity rules do; return what was planted."""
    patients = pl.read_parquet(run / "canonical" / "patients.parquet").filter(pl.col("nhs_number").is_not_null())
    exceptions = pl.read_parquet(run / "exceptions.parquet")
    planted: list[str] = []
    evidence = exceptions["evidence"].to_list()
    for i, p in enumerate(patients.head(5).iter_rows(named=True)):
        nhs = p["nhs_number"]
        spaced = f"{nhs[:3]} {nhs[3:6]} {nhs[6:]}"
        target = f"NP{4000 + i:07d}"
        evidence[i] = (f"same NHS number on {p['source_patient_id']}+{p['patient_key']}; number {nhs} "
                       f"(as given: {spaced}); born {p['birth_date']:%Y-%m-%d}; target record {target}")
        planted += [nhs, spaced, target]
    rh.rewrite(run / "exceptions.parquet", exceptions.with_columns(pl.Series("evidence", evidence)))
    return planted


@pytest.fixture(scope="module")
def pack(synth_run: Path, rh: ModuleType, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A run with ids in every report section, its plain reports and its pseudonymised pack."""
    root = tmp_path_factory.mktemp("pseudo")
    run = rh.copy_run(synth_run, root / "runs" / "b")
    previous = rh.copy_run(synth_run, root / "runs" / "a")
    # The previous batch lacked three patients and had one in another cohort: ids in the delta.
    patients = pl.read_parquet(previous / "canonical" / "patients.parquet")
    gone = patients["patient_key"].sort().to_list()[10:13]
    rh.rewrite(previous / "canonical" / "patients.parquet", patients.filter(~pl.col("patient_key").is_in(gone)))
    planted = plant_identifiers(run, rh)
    declared = root / "declared.yaml"
    declared.write_text("lists:\n  backlog: {count: 3, ids: [P9999999, P0000003, P0000112]}\n")
    manifest = json.loads((run / "manifest.json").read_text())
    write_json(record_previous(manifest, previous, run), run / "manifest.json")
    write_reports(run, declared=declared)
    out = root / "pack"
    files = pseudonymise(run, KEY, out)
    return {"run": run, "out": out, "files": files, "planted": planted, "gone": gone}


def identifiers(run: Path) -> tuple[set[str], set[str]]:
    """Every identifying value of the run's canonical tables, in the forms a report could show:
    (values searched as substrings, name words searched as whole words — "Chan" is a surname
    and the start of "Changed")."""
    p = pl.read_parquet(run / "canonical" / "patients.parquet")
    r = pl.read_parquet(run / "canonical" / "referrals.parquet")
    exact: set[str] = set()
    for frame, columns in ((p, ("patient_key", "source_patient_id", "nhs_number", "nhs_number_raw", "postcode",
                                "phone")),
                           (r, ("referral_key", "source_referral_id", "ubrn"))):
        for column in columns:
            exact |= {str(v) for v in frame[column].drop_nulls().to_list() if len(str(v)) >= 4}
    for d in p["birth_date"].drop_nulls().to_list():
        exact |= {d.isoformat(), d.strftime("%d/%m/%Y")}
    names = {w for column in ("family_name", "given_names") for v in p[column].drop_nulls().to_list()
             for w in re.findall(r"[A-Za-z]+", v) if len(w) >= 3}
    return exact, names


def leaks(data: bytes, exact: list[str], names: set[str]) -> set[str]:
    """Identifiers found in ``data``: one Aho-Corasick pass for values, a word set for names."""
    text = data.decode("latin-1")  # byte for byte
    found = set(pl.Series([text]).str.extract_many(exact, overlapping=True).explode().drop_nulls().to_list())
    return found | (set(re.findall(r"[A-Za-z]+", text)) & names)


def test_the_pack_holds_the_same_reports(pack: dict[str, Any]) -> None:
    assert sorted(f.name for f in pack["files"]) == ["exceptions.csv", "exceptions.xlsx", "hazard-log.html",
                                                      "pseudonymisation.json", "reconciliation.html",
                                                      "reconciliation.json"]
    plain = json.loads((pack["run"] / "reports" / "reconciliation.json").read_text())
    pseudo = json.loads((pack["out"] / "reconciliation.json").read_text())
    assert pseudo["invariant"] == plain["invariant"] and pseudo["cohorts"] == plain["cohorts"]
    assert pseudo["hazard_log"] == plain["hazard_log"]  # the hazard log names no one: unchanged
    assert pseudo["delta"]["available"] and pseudo["delta"]["patients"]["new"]["count"] == 3


def test_no_original_identifier_is_in_any_byte_of_the_pack(pack: dict[str, Any], rh: ModuleType) -> None:
    exact, names = identifiers(pack["run"])
    secrets = sorted(exact | set(pack["planted"]) | {"P9999999"})
    # The plain reports do carry identifiers (worklists are for clinicians): the search finds them.
    plain = rh.all_bytes(pack["run"] / "reports")
    assert set(pack["planted"]) <= set().union(*(leaks(d, secrets, names) for d in plain.values()))
    found = {(name, s) for name, data in rh.all_bytes(pack["out"]).items() for s in leaks(data, secrets, names)}
    assert not found, sorted(found)[:10]


def test_the_same_patient_has_the_same_token_in_every_file(pack: dict[str, Any]) -> None:
    def rows(path: Path) -> list[dict[str, str]]:
        return list(csv.DictReader(io.StringIO(path.read_bytes().decode("utf-8-sig"), newline="")))

    plain, pseudo = rows(pack["run"] / "reports" / "exceptions.csv"), rows(pack["out"] / "exceptions.csv")
    assert len(plain) == len(pseudo) > 0
    for a, b in zip(plain, pseudo, strict=True):
        assert b["patient_key"] == token(a["patient_key"])
        assert b["local_patient_id"] == token(a["local_patient_id"])
        assert b["nhs_number"] == (token(a["nhs_number"]) if a["nhs_number"] else "")
        assert b["referral"] == (token(a["referral"]) if a["referral"] else "")
        assert b["subject_key"] == "+".join(token(k) for k in a["subject_key"].split("+"))
        assert (b["severity"], b["flag_code"], b["days_waiting"]) == (a["severity"], a["flag_code"], a["days_waiting"])
    book = openpyxl.load_workbook(pack["out"] / "exceptions.xlsx")
    in_xlsx = {row[5] for sheet in book.worksheets[1:] for row in sheet.iter_rows(min_row=2, values_only=True)}
    assert in_xlsx == {r["patient_key"] for r in pseudo}
    report = json.loads((pack["out"] / "reconciliation.json").read_text())
    dvf = report["declared_vs_found"]
    two = dvf["two_lists"]["found"][0]["id"]
    assert two == token("P0000112")
    absent = {a["id"] for a in dvf["lists"][0]["absent"]}
    assert token("P9999999") in absent <= {token(k) for k in ("P9999999", "P0000003", "P0000112")}
    assert sorted(report["delta"]["patients"]["new"]["ids"]) == sorted(token(k) for k in pack["gone"])
    page = (pack["out"] / "reconciliation.html").read_text()
    assert f"<code>{two}</code>" in page and f"<code>{token(pack['gone'][0])}</code>" in page


def test_identifiers_inside_evidence_become_their_tokens(pack: dict[str, Any]) -> None:
    text = (pack["out"] / "exceptions.csv").read_bytes().decode("utf-8-sig")
    nhs, _spaced, target = pack["planted"][:3]
    assert token(nhs) in text and token(target) in text
    assert f"(as given: {token(nhs)})" in text  # a spaced number is the same number, the same token
    assert "same NHS number on" in text  # the words around them stay readable


def test_a_missing_or_short_key_is_a_configuration_error(tmp_path: Path) -> None:
    for path in (None, tmp_path / "absent.key"):
        with pytest.raises(ConfigError) as caught:
            load_key(path)
        assert caught.value.exit_code == 2
    short = tmp_path / "short.key"
    short.write_bytes(b"abc\n")
    with pytest.raises(ConfigError, match="at least 16"):
        load_key(short)
    good = tmp_path / "good.key"
    good.write_bytes(KEY + b"\n")
    assert load_key(good) == KEY  # the trailing newline of `echo` is not part of the key


def test_the_pack_must_not_be_written_inside_the_run(pack: dict[str, Any]) -> None:
    with pytest.raises(ConfigError, match="outside the run folder"):
        pseudonymise(pack["run"], KEY, pack["run"] / "pseudonymised")
    with pytest.raises(ConfigError):
        pseudonymise(pack["run"], b"", pack["out"].parent / "other")
