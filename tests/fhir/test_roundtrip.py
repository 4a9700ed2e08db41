"""The round trip: FHIR read back by the inverse mapping equals the source, field by field.

A clean run holds on every field; each damage to one resource (as a faulty mapping or a
faulty writer would do) is reported on the field it touches, with the record's local id;
a deliberately broken forward mapping is caught, which shows the inverse is its own code.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from datetime import date
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from cli import main
from migrate.executor import LocalExecutor
from migrate.fhir import roundtrip
from migrate.fhir.roundtrip import ROUNDTRIP, check_roundtrip
from migrate.pipeline import RunConfig, run_batch
from migrate.synth import synthesise

CASES = Path(__file__).resolve().parents[1] / "cases"
WORKED = CASES / "worked-example"
CUTOVER = date(2022, 10, 1)


def _run(input_dir: Path, mapping: str | Path, out: Path) -> Path:
    result = run_batch(RunConfig.load(input_dir, mapping, CUTOVER, out))
    assert result.ok, result.summary.get("roundtrip")
    return out


@pytest.fixture(scope="module")
def worked(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _run(WORKED / "input", WORKED / "mapping.yaml", tmp_path_factory.mktemp("rt") / "run")


@pytest.fixture(scope="module")
def synth(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """600 synthetic patients: merges, sharing blocks, opt-outs, coded entries, every cohort."""
    root = tmp_path_factory.mktemp("rt-synth")
    synthesise(root / "extract", patients=600, seed=11)
    return _run(root / "extract", "generic-csv", root / "run")


def _copy(run: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(run, tmp_path / "run"))


def _edit(run: Path, resource_type: str, change: Callable[[dict[str, Any]], bool]) -> None:
    """Apply ``change`` to the first resource of the type it accepts (returns True)."""
    path = run / "fhir" / "ndjson" / f"{resource_type}.ndjson"
    lines = path.read_text(encoding="utf-8").splitlines()
    for i, line in enumerate(lines):
        resource = json.loads(line)
        if change(resource):
            lines[i] = json.dumps(resource, separators=(",", ":"))
            path.write_text("\n".join(lines) + "\n", encoding="utf-8")
            return
    raise AssertionError(f"no {resource_type} to change")


def _field(result: dict[str, Any], name: str) -> dict[str, Any]:
    return next(f for f in result["fields"] if f["field"] == name)


def test_clean_runs_hold_on_every_field(worked: Path, synth: Path) -> None:
    for run in (worked, synth):
        result = json.loads((run / ROUNDTRIP).read_text(encoding="utf-8"))
        assert result["holds"] is True and result["mismatches"] == 0
        assert result["fields_compared"] == sum(f["compared"] for f in result["fields"]) > 0
    synth_result = json.loads((synth / ROUNDTRIP).read_text(encoding="utf-8"))
    # Every field the issue lists is compared on real records, not vacuously.
    for name in ("patients.nhs_number", "patients.nhs_number_verification", "patients.source_patient_id",
                 "patients.family_name", "patients.given_names", "patients.birth_date", "patients.sex",
                 "patients.postcode", "patients.gp_practice", "referrals.received_date",
                 "referrals.assigned_priority", "referrals.raised_priority", "referrals.status_at_cutover",
                 "referrals.cohort", "referrals.transfer_list", "referrals.service_line", "referrals.ubrn",
                 "contacts.contact_datetime", "contacts.attendance", "contacts.contact_type", "codes.code_system",
                 "codes.code", "codes.recorded_date", "codes (consent).decision", "codes (consent).entry",
                 "patients.source_patient_id (merged record)"):
        assert _field(synth_result, name)["compared"] > 0, name
    # Every table's records are covered, and the run's summary says so.
    assert set(synth_result["records"]) == {"patients", "referrals", "contacts", "codes"}
    assert synth_result["not_carried"] and all(f["reason"] for f in synth_result["not_carried"])


def _birth(r: dict[str, Any]) -> bool:
    r["birthDate"] = "1900-01-01"
    return True


def _priority(r: dict[str, Any]) -> bool:
    if r.get("priority") == "routine" and "_priority" not in r:
        r["priority"] = "asap"
        return True
    return False


def _unraise(r: dict[str, Any]) -> bool:
    return r.pop("_priority", None) is not None


def _cohort(r: dict[str, Any]) -> bool:
    for c in r["category"]:
        if c["coding"][0]["system"].endswith("/CodeSystem/cohort") and c["coding"][0]["code"] == "backlog":
            c["coding"][0]["code"] = "transition"
            return True
    return False


def _shift(r: dict[str, Any]) -> bool:
    r["period"]["start"] = r["period"]["start"].replace("T10:", "T11:").replace("T09:", "T10:")
    return True


def _dna(r: dict[str, Any]) -> bool:
    if r["status"] == "booked":
        r["status"] = "noshow"
        return True
    return False


def _permit(r: dict[str, Any]) -> bool:
    if r["provision"]["type"] == "deny" and "purpose" not in r["provision"]:
        r["provision"]["type"] = "permit"
        return True
    return False


def _flag(r: dict[str, Any]) -> bool:
    r["code"]["coding"][0]["code"] = "AWAITING_INJECTION" if r["code"]["coding"][0]["code"] != \
        "AWAITING_INJECTION" else "URGENT_WAIT_BREACH"
    return True


def _subject(r: dict[str, Any]) -> bool:
    r["subject"]["reference"] = "Patient/00000000-0000-5000-8000-000000000000"
    return True


def _code(r: dict[str, Any]) -> bool:
    if "clinicalStatus" in r:  # the cancer-history Condition
        return False
    r["code"]["coding"][0]["code"] = "X" + r["code"]["coding"][0]["code"]
    return True


@pytest.mark.parametrize("resource_type, change, field, shows_values", [
    ("Patient", _birth, "patients.birth_date", False),
    ("ServiceRequest", _priority, "referrals.assigned_priority", True),
    # without the raise, the priority reads as the list's own: both readings differ
    ("ServiceRequest", _unraise, "referrals.raised_priority,referrals.assigned_priority", True),
    ("ServiceRequest", _cohort, "referrals.cohort", True),
    ("ServiceRequest", _subject, "referrals.patient_id", True),
    ("Encounter", _shift, "contacts.contact_datetime", True),
    ("Appointment", _dna, "contacts.attendance", True),
    ("Consent", _permit, "codes (consent).decision", True),
    ("Flag", _flag, "flags.flag_codes", True),
])
def test_damage_is_reported_on_its_field(worked: Path, tmp_path: Path, resource_type: str,
                                         change: Callable[[dict[str, Any]], bool], field: str,
                                         shows_values: bool) -> None:
    run = _copy(worked, tmp_path)
    _edit(run, resource_type, change)
    result = check_roundtrip(run)
    assert result["holds"] is False
    assert sorted(result["mismatched_fields"]) == sorted(field.split(","))
    entry = _field(result, field.split(",")[0])
    assert entry["mismatches"] == 1
    example = entry["examples"][0]
    assert example["patient_ids"][0].startswith("P") and example["file"].endswith(".csv")
    assert ("expected" in example) is shows_values  # names, dates of birth, NHS numbers never shown


def test_coded_entry_damage_on_synthetic_run(synth: Path, tmp_path: Path) -> None:
    run = _copy(synth, tmp_path)
    _edit(run, "Condition", _code)
    result = check_roundtrip(run)
    assert result["mismatched_fields"] == ["codes.code"]


def test_missing_resource_is_named(worked: Path, tmp_path: Path) -> None:
    run = _copy(worked, tmp_path)
    path = run / "fhir" / "ndjson" / "Encounter.ndjson"
    lines = path.read_text(encoding="utf-8").splitlines()
    path.write_text("\n".join(lines[1:]) + "\n", encoding="utf-8")
    result = check_roundtrip(run)
    assert result["mismatched_fields"] == ["Encounter / Appointment (resource present)"]
    assert _field(result, "Encounter / Appointment (resource present)")["mismatches"] == 1


def test_extra_resource_is_read_and_named(worked: Path, tmp_path: Path) -> None:
    """A resource no source row became (a copy of a Patient under a new id): the round trip
    reads and counts it, what it compares is unchanged, and invariant 2 names it."""
    from migrate.reports.invariants import fhir_output
    from migrate.reports.rundata import RunFolder

    clean = check_roundtrip(worked, write=False)
    run = _copy(worked, tmp_path)
    path = run / "fhir" / "ndjson" / "Patient.ndjson"
    extra = json.loads(path.read_text(encoding="utf-8").splitlines()[0]) | {"id": "extra-patient"}
    with path.open("a", encoding="utf-8") as fh:
        fh.write(json.dumps(extra, separators=(",", ":")) + "\n")
    result = check_roundtrip(run, write=False)
    assert result["resources_read"]["Patient"] == clean["resources_read"]["Patient"] + 1
    assert result["fields"] == clean["fields"]  # lineage names no row for it: nothing more compared
    _, invariant = fhir_output(RunFolder.open(run))
    assert invariant["holds"] is False
    assert {"type": "Patient", "id": "extra-patient"} in invariant["examples"]["resources_without_source"]


def test_verify_fields_exits_1_naming_the_field(worked: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    ok = runner.invoke(main, ["verify", str(worked), "--fields"])
    assert ok.exit_code == 0, ok.output
    run = _copy(worked, tmp_path)
    _edit(run, "Patient", _birth)
    before = {p: p.read_bytes() for p in run.rglob("*") if p.is_file()}
    bad = runner.invoke(main, ["verify", str(run), "--fields"])
    assert bad.exit_code == 1
    assert "patients.birth_date" in bad.output and "1900" not in bad.output
    assert before == {p: p.read_bytes() for p in run.rglob("*") if p.is_file()}  # read-only


def test_a_broken_forward_mapping_is_caught(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Swap two priorities and two genders in the forward mapping: the inverse, written
    separately, does not follow, so the run fails its round trip (exit 1 from the CLI)."""
    from migrate.fhir import patient, referral

    monkeypatch.setattr(referral, "PRIORITY_MAP", {"routine": "urgent", "urgent": "routine", "two_week_wait": "asap"})
    monkeypatch.setattr(patient, "GENDERS", {"male": "female", "female": "male", "other": "other",
                                             "unknown": "unknown"})
    result = run_batch(RunConfig.load(WORKED / "input", WORKED / "mapping.yaml", CUTOVER, tmp_path / "run"))
    assert not result.ok
    assert {"referrals.assigned_priority", "patients.sex"} <= set(result.summary["roundtrip"]["mismatched_fields"])
    page = (tmp_path / "run" / "reports" / "reconciliation.html").read_text(encoding="utf-8")
    assert "Round trip:" in page and "patients.sex" in page


def test_roundtrip_in_report_and_verified(worked: Path) -> None:
    summary = json.loads((worked / "reports" / "reconciliation.json").read_text(encoding="utf-8"))
    assert summary["roundtrip"]["holds"] is True
    assert "roundtrip" in (worked / "reports" / "reconciliation.html").read_text(encoding="utf-8")
    manifest = json.loads((worked / "manifest.json").read_text(encoding="utf-8"))
    assert ROUNDTRIP in {o["path"] for o in manifest["outputs"]}  # sealed: verify covers it
    assert CliRunner().invoke(main, ["verify", str(worked)]).exit_code == 0


# --- property: whatever text the extract holds, the FHIR carries it back unchanged ---------------
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

# Text of any script, with the characters JSON and CSV must escape. Left out: what a FHIR
# string cannot hold (control characters, whitespace other than the space: FHIR's string
# pattern is [ \r\n\t\S]+, so a no-break space is rejected by the FHIR stage's validation,
# reported there), unassigned and private-use code points; the mapping trims outer spaces.
_TEXT = st.text(st.characters(exclude_categories=("Cc", "Cs", "Zl", "Zp", "Zs", "Co", "Cn"),
                              include_characters=" ", exclude_characters="\ufeff"),
                min_size=1, max_size=12).map(str.strip).filter(bool)


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(values=st.lists(st.tuples(_TEXT, _TEXT, _TEXT), min_size=3, max_size=3))
def test_any_text_round_trips(tmp_path_factory: pytest.TempPathFactory, values: list[tuple[str, str, str]]) -> None:
    import csv

    root = tmp_path_factory.mktemp("prop")
    shutil.copytree(WORKED / "input", root / "input")
    path = root / "input" / "patients.csv"
    with path.open(encoding="utf-8", newline="") as fh:
        rows = list(csv.DictReader(fh))
    # P02, P03, P07: patients in active care (one with nothing active is sent no resource)
    for row, (family, given_name, postcode) in zip([rows[1], rows[2], rows[6]], values, strict=True):
        row["family_name"], row["given_name"], row["postcode"] = family, given_name, postcode
    with path.open("w", encoding="utf-8", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    result = run_batch(RunConfig.load(root / "input", WORKED / "mapping.yaml", CUTOVER, root / "run"))
    roundtrip = result.summary["roundtrip"]
    assert roundtrip["holds"] is True, roundtrip
    assert result.summary["fhir"]["errors"] == 0  # every value reached the FHIR output
    fields = {f["field"]: f for f in json.loads((root / "run" / ROUNDTRIP).read_text(encoding="utf-8"))["fields"]}
    assert fields["patients.family_name"]["compared"] >= 23  # 27 people less the 4 with nothing active


def _damage_every(run: Path, resource_type: str, change: Callable[[dict[str, Any]], bool], step: int,
                  drop: bool = False) -> int:
    """Apply ``change`` to every ``step``-th resource of the type (or drop it): how many changed."""
    path = run / "fhir" / "ndjson" / f"{resource_type}.ndjson"
    out, changed = [], 0
    for i, line in enumerate(path.read_text(encoding="utf-8").splitlines()):
        resource = json.loads(line)
        if i % step == 0 and (drop or change(resource)):
            changed += 1
            if drop:
                continue
        out.append(json.dumps(resource, separators=(",", ":")))
    path.write_text("\n".join(out) + "\n", encoding="utf-8")
    return changed


def test_buckets_give_the_result_of_one(synth: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The round trip compares in hash buckets of the resource id (roundtrip_buckets): with
    many mismatches of several groups — more than the examples shown, Flags aggregated per
    source row across buckets, dropped resources — the result is the one of a single bucket,
    whether canonical rows meet lineage in one (file, row) range or in many, and whether
    the resources are decoded in one batch or in many."""
    from migrate.fhir import inverse, roundtrip_buckets, roundtrip_lookups

    run = _copy(synth, tmp_path)
    assert _damage_every(run, "ServiceRequest", _cohort, 3) > 10
    assert _damage_every(run, "Encounter", _shift, 4) > 10
    assert _damage_every(run, "Appointment", _dna, 1, drop=True) > 0
    assert _damage_every(run, "Flag", _flag, 5) > 5
    assert _damage_every(run, "Consent", _permit, 1) > 0
    assert _damage_every(run, "Patient", _birth, 7) > 10
    whole = check_roundtrip(run, write=False, bucket_rows=10**9)
    assert whole["holds"] is False and len(whole["mismatched_fields"]) >= 6
    assert any(len(f["examples"]) == 5 and f["mismatches"] > 5 for f in whole["fields"])
    for rows in (97, 1_000):
        assert check_roundtrip(run, write=False, bucket_rows=rows) == whole
    monkeypatch.setattr(roundtrip_buckets, "RANGE_ROWS", 41)
    monkeypatch.setattr(inverse, "BATCH_ROWS", 53)
    assert check_roundtrip(run, write=False, bucket_rows=500) == whole
    # each bucket's own rows of the lookups (roundtrip_lookups: split by key, in several hash
    # parts), every bucket's many parts merged into one file, or neither
    max_parts = roundtrip_buckets.MAX_PARTS
    monkeypatch.setattr(roundtrip_lookups, "SPLIT_FROM_BUCKETS", 2)
    monkeypatch.setattr(roundtrip_lookups, "KEY_ROWS", 2_000)
    monkeypatch.setattr(roundtrip_buckets, "MAX_PARTS", 1)
    assert check_roundtrip(run, write=False, bucket_rows=400) == whole
    monkeypatch.setattr(roundtrip_lookups, "SPLIT_FROM_BUCKETS", 10**9)
    monkeypatch.setattr(roundtrip_buckets, "MAX_PARTS", 10**9)
    assert check_roundtrip(run, write=False, bucket_rows=400) == whole
    monkeypatch.setattr(roundtrip_lookups, "SPLIT_FROM_BUCKETS", 2)
    monkeypatch.setattr(roundtrip_buckets, "MAX_PARTS", max_parts)
    # and on two worker processes (spawned), buckets compared out of order
    result, ran = roundtrip._check(run, False, 300, LocalExecutor(workers=2))
    assert result == whole
    assert ran is not None and ran["buckets"] > 1 and ran["in_this_process"] is False and ran["processes"] == 2


def test_each_bucket_has_the_survivors_of_its_patients(synth: Path, tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """Split by bucket (roundtrip_lookups), a bucket's patient lookups hold the survivor of
    every merged patient its rows name, not only the patients themselves: a merged record's
    coded consent is compared with its survivor's Patient, sharing entries and block, and a
    merged Patient with its survivor's cluster values. The survivors wanted here are ones the
    bucket's own rows do not name, so a split that dropped them would fail."""
    import polars as pl

    from migrate.fhir import expected as ex
    from migrate.fhir import roundtrip_lookups
    from migrate.fhir.inverse import Systems, ndjson_files
    from migrate.fhir.roundtrip_buckets import TABLES, Staged
    from migrate.fhir.roundtrip_lookups import Lookups
    from migrate.reports.rundata import RunFolder

    monkeypatch.setattr(roundtrip_lookups, "KEY_ROWS", 500)  # several hash parts of the keys
    run = RunFolder.open(synth)
    links = ex.Links.of(run)
    staged = Staged.build(run, links.lineage, ndjson_files(synth / "fhir" / "ndjson"),
                          Systems.for_run(run.manifest), tmp_path / "buckets", bucket_rows=200)
    assert staged.count > 4
    links = links.staged(run, tmp_path / "links")
    clusters = tmp_path / "clusters.parquet"
    ex.survivor_values(run).sink_parquet(clusters)
    lookups = Lookups.build(run, links, staged, clusters, tmp_path / "lookups")
    merged = (run.scan("patients.parquet").filter(pl.col("survivor_key") != pl.col("patient_key"))
              .select("patient_key", "survivor_key").collect())
    assert merged.height > 0
    sharing = set(run.scan("sharing.parquet").select("patient_key").collect()["patient_key"])
    survivors_elsewhere = 0
    for b in range(staged.count):
        rows = staged.rows_of([b])
        named = pl.concat([rows[t].select("patient_key") for t in TABLES]).unique().collect()
        wanted = set(merged.join(named, on="patient_key")["survivor_key"])
        survivors_elsewhere += len(wanted - set(named["patient_key"]))
        own = lookups.links_of(links, b)
        assert wanted <= set(own.patients.select("patient_key").collect()["patient_key"]), b
        assert wanted <= set(lookups.clusters_of(b).select("survivor_key").collect()["survivor_key"]), b
        assert wanted & sharing <= set(own.scans["sharing.parquet"].select("patient_key").collect()["patient_key"]), b
    lookups.close()
    staged.close()
    assert survivors_elsewhere > 0  # the case the survivors are split for occurs


def test_both_decoders_give_the_same_resources(synth: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The round trip decodes NDJSON with Arrow's JSON reader (inverse.decode_batches): the
    same rows, order and columns as polars' decoder (scan_resources) for every type, in any
    batch size; a file Arrow cannot read to the end (a value of another JSON type than the
    schema's) is read on by polars from the first resource Arrow did not give."""
    import polars as pl
    from polars.testing import assert_frame_equal

    from migrate.fhir import inverse
    from migrate.fhir.inverse import READ_TYPES, decode_batches, ndjson_files, scan_resources

    monkeypatch.setattr(inverse, "_BLOCK_BYTES", 1 << 15)  # Arrow's reader in many blocks

    files = ndjson_files(synth / "fhir" / "ndjson")
    for resource_type in READ_TYPES:
        expected = scan_resources(files[resource_type], resource_type).collect()
        for rows in (37, 10**6):
            batches = list(decode_batches(files[resource_type], resource_type, rows))
            assert_frame_equal(pl.concat(batches), expected)
            assert all(b.height >= rows for b in batches[:-1])
    # Arrow's reader stops at the number where the schema says text (its later blocks): polars reads on.
    path = tmp_path / "Patient.ndjson"
    lines = files["Patient"][0].read_text(encoding="utf-8").splitlines()[:300]
    odd = json.loads(lines[250]) | {"birthDate": 19000101}
    path.write_text("\n".join(lines[:250] + [json.dumps(odd)] + lines[251:]) + "\n", encoding="utf-8")
    expected = scan_resources([path], "Patient").collect()
    assert_frame_equal(pl.concat(list(decode_batches([path], "Patient", 100))), expected)
    assert expected.height == 300
