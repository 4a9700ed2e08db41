"""Sharing blocks from wherever the extract keeps them (issue #20): the worked example with its
coded sharing entries replaced by a patient column (in two layouts) and by a practice file, run
end to end: the same patients are blocked, the same FHIR is withheld, the evidence and the
Consent name the source, and every practice row has a disposition."""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from click.testing import CliRunner

import cli

from migrate.errors import ConfigError, InputError, ProfileError
from migrate.pipeline import RunConfig, run_batch
from tests.sharing_variants import PRACTICES, WORKED, codes_variant, column_variant, practice_variant

CUTOVER = date(2022, 10, 1)
SHARING_FLAGS = ("SHARING_BLOCK", "SHARING_BLOCK_ACTIVE_CARE")


def run(case: Path, **options: Any) -> Path:
    out = case / "run"
    result = run_batch(RunConfig.load(case / "input", case / "mapping.yaml", CUTOVER, out, **options))
    assert result.ok, result.summary.get("roundtrip", {}).get("mismatched_fields")
    return out


def flags(out: Path) -> set[tuple[str, str]]:
    ex = pl.read_parquet(out / "exceptions.parquet").filter(pl.col("flag_code").is_in(SHARING_FLAGS))
    return set(ex.select("flag_code", "subject_key").iter_rows())


def evidence(out: Path, patient: str, flag: str = "SHARING_BLOCK") -> str:
    ex = pl.read_parquet(out / "exceptions.parquet").filter(pl.col("subject_key") == patient,
                                                            pl.col("flag_code") == flag)
    return str(ex["evidence"].item())


def withheld(out: Path) -> set[tuple[str, int, str]]:
    """The source rows the run withheld (lineage's disposition), with their patient."""
    frame = pl.read_parquet(out / "lineage.parquet").filter(pl.col("disposition") == "withheld")
    return set(frame.select("source_file", "source_row", "patient_key").iter_rows())


def resource_types(out: Path) -> dict[str, set[str]]:
    """FHIR resource types each patient key got, from lineage."""
    lineage = pl.read_parquet(out / "lineage.parquet").filter(pl.col("fhir_type").is_not_null())
    found: dict[str, set[str]] = {}
    for key, kind in lineage.select("patient_key", "fhir_type").unique().iter_rows():
        if key is not None:
            found.setdefault(key, set()).add(kind)
    return found


def consents(out: Path) -> dict[str, tuple[str, str | None, str]]:
    """Local patient id -> (provision.type, dateTime, source extension) of the sharing Consent."""
    patients = {}
    for line in (out / "fhir" / "ndjson" / "Patient.ndjson").read_text().splitlines():
        r = json.loads(line)
        local = [i["value"] for i in r["identifier"] if i["system"].endswith("/patient")]
        patients[f"Patient/{r['id']}"] = local[0]
    found = {}
    for line in (out / "fhir" / "ndjson" / "Consent.ndjson").read_text().splitlines():
        r = json.loads(line)
        if r["provision"].get("purpose"):
            continue  # the opt-out Consent
        source = [e["valueCode"] for e in r.get("extension", []) if e["url"].endswith("/sharing-source")]
        found[patients[r["patient"]["reference"]]] = (r["provision"]["type"], r.get("dateTime"), source[0])
    return found


@pytest.fixture(scope="module")
def coded(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return run(codes_variant(tmp_path_factory.mktemp("coded")))


@pytest.mark.parametrize("layout", ["systmone", "status"])
def test_a_sharing_column_blocks_the_same_patients_and_withholds_the_same_fhir(
        coded: Path, tmp_path: Path, layout: str) -> None:
    out = run(column_variant(tmp_path / layout, layout))
    assert flags(out) == flags(coded) == {("SHARING_BLOCK", "P21"), ("SHARING_BLOCK", "P23"),
                                          ("SHARING_BLOCK_ACTIVE_CARE", "P21")}
    assert withheld(out) == withheld(coded) != set()
    assert resource_types(out) == resource_types(coded)
    assert consents(out) == {"P21": ("deny", "2021-05-01", "patient_setting"),
                             "P22": ("permit", "2022-01-01", "patient_setting"),
                             "P23": ("deny", "2022-06-01", "patient_setting")}
    assert {k: v[:2] for k, v in consents(coded).items()} == {k: v[:2] for k, v in consents(out).items()}
    assert {v[2] for v in consents(coded).values()} == {"coded_entry"}


def test_the_evidence_names_the_source_and_the_setting_as_written(coded: Path, tmp_path: Path) -> None:
    out = run(column_variant(tmp_path / "col"))
    assert evidence(out, "P21") == ("sharing_state = dissent; latest_sharing_source = patient_setting; "
                                    "latest_sharing_code = Sharing Out: No; latest_sharing_date = 2021-05-01; "
                                    "opt_out_codes = blank")
    assert "latest_sharing_source = patient_setting" in evidence(out, "P21", "SHARING_BLOCK_ACTIVE_CARE")
    assert "latest_sharing_source = coded_entry; latest_sharing_code = read2:93C1" in evidence(coded, "P21")
    entries = pl.read_parquet(out / "sharing.parquet").filter(pl.col("patient_key") == "P21")
    assert entries.select("source", "kind", "scope", "value", "source_file", "source_row", "source_column",
                          "decides").rows() == [
        ("patient_setting", "dissent", "record_sharing", "No", "patients.csv", 21, "Sharing Out", True)]


def test_a_column_dissent_lifted_by_a_later_coded_consent_is_not_blocked(tmp_path: Path) -> None:
    # P21: Sharing Out = No (2021-05-01) and a coded consent 9Nd7 (2022-01-01, copied from P22)
    case = column_variant(tmp_path / "lifted", keep_codes=("9Nu0", "9Nd7"))
    codes = pl.read_csv(case / "input" / "codes.csv", infer_schema=False)
    codes = pl.concat([codes, codes.filter(pl.col("code") == "9Nd7").with_columns(pl.lit("P21").alias("patient_id"))])
    codes.write_csv(case / "input" / "codes.csv")
    out = run(case)
    assert ("SHARING_BLOCK", "P21") not in flags(out)
    assert ("SHARING_BLOCK", "P23") in flags(out)
    assert consents(out)["P21"] == ("permit", "2022-01-01", "coded_entry")
    assert all(patient != "P21" for *_, patient in withheld(out))
    # P22's setting and coded consent fall on one day: the patient's own setting is named
    assert consents(out)["P22"] == ("permit", "2022-01-01", "patient_setting")


def test_a_value_the_profile_does_not_list_blocks_and_is_reported(tmp_path: Path) -> None:
    case = column_variant(tmp_path / "unknown", settings={"P21": ("Maybe", "2021-05-01"), "P22": ("yes", ""),
                                                          "P23": ("no", "2022-06-01")})
    out = run(case)
    assert ("SHARING_BLOCK", "P21") in flags(out)
    assert evidence(out, "P21").startswith("sharing_state = unrecognised; latest_sharing_source = patient_setting; "
                                           "latest_sharing_code = Sharing Out: Maybe")
    report = json.loads((out / "reports" / "reconciliation.json").read_text())
    assert report["sharing"]["unrecognised"] == [{"source": "patient_setting", "column": "Sharing Out",
                                                  "value": "Maybe", "entries": 1, "patients": 1}]
    assert report["sharing"]["blocked_unrecognised"] == 1
    assert report["sharing"]["blocked_by_source"] == {"coded_entry": 0, "patient_setting": 2, "practice_setting": 0}
    assert consents(out)["P21"] == ("deny", "2021-05-01", "patient_setting")
    assert consents(out)["P22"] == ("permit", None, "patient_setting")  # an undated consent still says so
    page = (out / "reports" / "reconciliation.html").read_text()
    section = page[page.index('id="sharing"'):page.index('id="vocabulary"')]
    assert "<code>Maybe</code>" in section and "treated as a dissent" in section


def practice_dispositions(out: Path) -> dict[int, str]:
    lineage = pl.read_parquet(out / "lineage.parquet").filter(pl.col("table") == "practice_sharing")
    return dict(lineage.select("source_row", pl.col("disposition").cast(pl.String)).unique().iter_rows())


def test_a_practice_file_blocks_the_same_patients_and_withholds_the_same_fhir(coded: Path, tmp_path: Path) -> None:
    case = practice_variant(tmp_path / "practice")
    out = run(case, practice_sharing=case / "practice-sharing.csv")
    assert flags(out) == flags(coded)
    assert withheld(out) == withheld(coded) != set()
    assert resource_types(out) == resource_types(coded)
    # P22's own consent (2022) came after the practice stopped sharing (2021): lifted
    assert consents(out) == {"P21": ("deny", "2021-05-01", "practice_setting"),
                             "P22": ("permit", "2022-01-01", "coded_entry"),
                             "P23": ("deny", "2022-06-01", "practice_setting")}
    assert evidence(out, "P23").startswith("sharing_state = dissent; latest_sharing_source = practice_setting; "
                                           "latest_sharing_code = practice Y00023, Shares Records Out: N;")
    # every practice row has a disposition: a practice that blocks handed-over patients is part of
    # their Consent; one that shares out, or has no such patient, is out of scope
    assert practice_dispositions(out) == {1: "out_of_scope", 2: "migrated", 3: "migrated", 4: "out_of_scope"}
    reasons = pl.read_parquet(out / "lineage.parquet").filter(pl.col("table") == "practice_sharing").select(
        "source_row", "reason").unique().sort("source_row")
    assert reasons["reason"].is_null().to_list() == [False, True, True, False]  # why set aside; none when migrated
    assert reasons["reason"][0].startswith("practice setting blocks no patient handed over")
    report = json.loads((out / "reports" / "reconciliation.json").read_text())
    [row] = [f for f in report["invariant"]["files"] if f["table"] == "practice_sharing"]
    assert row["holds"] and row["rows_read"] == 4
    assert report["sharing"]["blocked_by_source"] == {"coded_entry": 0, "patient_setting": 0, "practice_setting": 2}
    # the patient's story (handover explain) shows every entry and which decided
    from migrate.reports.story import patient_story

    story = patient_story(out, "P22")["sharing"]
    assert [(e["source"], e["kind"], e["decides"]) for e in story] == [
        ("coded_entry", "consent", True), ("practice_setting", "dissent", False)]
    manifest = json.loads((out / "manifest.json").read_text())
    assert "practice-sharing.csv" in {i["path"] for i in manifest["inputs"]}
    assert manifest["options"]["practice_sharing"]["mapping"] == "worked-example"


def test_practice_rows_that_cannot_be_used_are_quarantined_and_an_unknown_status_blocks(tmp_path: Path) -> None:
    case = practice_variant(tmp_path / "bad")
    (case / "practice-sharing.csv").write_text(
        "Practice Code;Shares Records Out;Set On\nK84001;Y;01/04/2015\nY00021;Unknown;01/05/2021\n"
        "Y00023;N;2022-06-01\nY00021;N;01/05/2021\n;N;01/01/2020\n", encoding="utf-8")
    out = run(case, practice_sharing=case / "practice-sharing.csv")
    q = pl.read_parquet(out / "quarantine.parquet").filter(pl.col("table") == "practice_sharing")
    assert q.select("source_row", "reason_code", "field").rows() == [
        (3, "unparseable_date", "sharing_out"), (4, "duplicate_key", "ods_code"), (5, "missing_required", "ods_code")]
    assert practice_dispositions(out) == {1: "out_of_scope", 2: "migrated", 3: "quarantined", 4: "quarantined",
                                          5: "quarantined"}
    # an unknown status is a block (fail safe) that says so; P22's later consent still lifts it
    assert ("SHARING_BLOCK", "P21") in flags(out) and ("SHARING_BLOCK", "P22") not in flags(out)
    assert ("SHARING_BLOCK", "P23") not in flags(out)  # its practice's row was quarantined: P23's own consent
    assert evidence(out, "P21").startswith("sharing_state = unrecognised; latest_sharing_source = practice_setting")
    report = json.loads((out / "reports" / "reconciliation.json").read_text())
    assert report["sharing"]["unrecognised"] == [{"source": "practice_setting", "column": "Shares Records Out",
                                                  "value": "Unknown", "entries": 2, "patients": 2}]
    assert all(f["holds"] for f in report["invariant"]["files"])


def test_a_practice_file_without_a_profile_table_or_columns_stops_before_anything_is_written(
        tmp_path: Path) -> None:
    case = practice_variant(tmp_path / "cfg")
    with pytest.raises(ConfigError) as exc:
        RunConfig.load(case / "input", WORKED / "mapping.yaml", CUTOVER, case / "run",
                       practice_sharing=case / "practice-sharing.csv")
    assert exc.value.exit_code == 2 and "practice_sharing table" in str(exc.value)
    with pytest.raises(InputError):
        RunConfig.load(case / "input", case / "mapping.yaml", CUTOVER, case / "run",
                       practice_sharing=case / "missing.csv")
    (case / "practice-sharing.csv").write_text("Practice;Shares Records Out;Set On\nK84001;Y;01/04/2015\n")
    with pytest.raises(ProfileError) as missing:  # the header is checked with the configuration
        RunConfig.load(case / "input", case / "mapping.yaml", CUTOVER, case / "run",
                       practice_sharing=case / "practice-sharing.csv")
    assert "missing column(s) Practice Code" in "\n".join(missing.value.problems)
    # every problem at once: the practice file's beside the other options'
    with pytest.raises(ConfigError) as both:
        RunConfig.load(case / "input", case / "mapping.yaml", CUTOVER, case / "run", bundle_size=0,
                       practice_sharing=case / "practice-sharing.csv")
    assert both.value.exit_code == 2
    assert any("--bundle-size" in p for p in both.value.problems)
    assert any("missing column(s) Practice Code" in p for p in both.value.problems)
    assert not (case / "run").exists()


def test_check_reports_how_many_patients_each_source_blocks(tmp_path: Path) -> None:
    column = column_variant(tmp_path / "column", settings={"P21": ("no", "2021-05-01"), "P22": ("Maybe", ""),
                                                           "P23": ("no", "2022-06-01")})
    practice = practice_variant(tmp_path / "practice")
    coded = codes_variant(tmp_path / "coded")

    def check(case: Path, *extra: str) -> dict[str, Any]:
        result = CliRunner().invoke(cli.main, ["check", "--input", str(case / "input"), "--mapping",
                                               str(case / "mapping.yaml"), "--json", *extra])
        assert result.exit_code == 0, result.output
        return dict(json.loads(result.stdout))

    assert check(coded)["sharing"]["blocked_by_source"] == {"coded_entry": 2, "patient_setting": 0,
                                                            "practice_setting": 0}
    found = check(column)
    assert found["sharing"]["blocked_by_source"] == {"coded_entry": 0, "patient_setting": 3, "practice_setting": 0}
    assert found["warnings"] == [
        "patient setting value 'Maybe' in column Sharing Out (1 patients) is neither a dissent nor a consent value "
        "of the profile: it is treated as a dissent (SHARING_BLOCK, sharing_state unrecognised); add it to "
        "dissent_values or consent_values"]
    assert {v["value"]: v["codelist"] for v in found["vocabulary"]["sharing_out"]} == {
        "No": "dissent_values", "Maybe": None}
    found = check(practice, "--practice-sharing", str(practice / "practice-sharing.csv"))
    assert found["sharing"]["blocked_by_source"] == {"coded_entry": 0, "patient_setting": 0, "practice_setting": 2}
    extract = sum(pl.read_csv(f, infer_schema=False).height for f in (practice / "input").glob("*.csv"))
    assert found["rows_read"] == extract + len(PRACTICES)  # the practice file's rows count too
    text = CliRunner().invoke(cli.main, ["check", "--input", str(column / "input"), "--mapping",
                                         str(column / "mapping.yaml")]).output
    assert "Sharing blocks: 3 patients blocked" in text and "warning: patient setting value 'Maybe'" in text


def test_an_opt_out_in_the_column_is_evidence_and_never_a_block(coded: Path, tmp_path: Path) -> None:
    # P24's Type 1 opt-out (coded 9Nu0 in the worked example) written in the sharing column instead
    case = column_variant(tmp_path / "opt-out", keep_codes=(), opt_out_values=("Type 1 opt-out",), settings={
        "P21": ("no", "2021-05-01"), "P22": ("yes", "2022-01-01"), "P23": ("no", "2022-06-01"),
        "P24": ("Type 1 opt-out", "2019-03-01")})
    out = run(case)
    assert flags(out) == flags(coded)  # P24: not a block, as with the code
    assert withheld(out) == withheld(coded)
    entries = pl.read_parquet(out / "sharing.parquet").filter(pl.col("patient_key") == "P24")
    assert entries.select("kind", "scope", "source", "label", "decides").rows() == [
        ("opt_out", "data_opt_out", "patient_setting", "Sharing Out: Type 1 opt-out", False)]
    # the opt-out Consent (research and planning only) carries the setting, as it carries the code
    opt_outs = [json.loads(line) for line in (out / "fhir" / "ndjson" / "Consent.ndjson").read_text().splitlines()
                if '"purpose"' in line]
    assert len(opt_outs) == 1 and opt_outs[0]["dateTime"] == "2019-03-01"
    [coding] = opt_outs[0]["provision"]["code"][0]["coding"]
    assert coding["code"] == "Type 1 opt-out" and coding["display"] == "Sharing Out"
    assert coding["system"].endswith("/sharing-setting")
    lineage = pl.read_parquet(out / "lineage.parquet").filter(pl.col("fhir_id") == opt_outs[0]["id"])
    assert lineage.select("table", "source_row").rows() == [("patients", 24)]


def test_the_practice_file_is_frozen_with_the_run_and_fhir_and_report_read_it_from_there(tmp_path: Path) -> None:
    """``handover fhir RUN`` and ``handover report RUN`` re-derive the sharing state from the
    run folder alone: the practice file kept in config/ (the original may be gone)."""
    from migrate.fhir.stage import reemit_fhir
    from migrate.reports import write_reports
    from migrate.reports.chain import verify

    case = practice_variant(tmp_path / "practice")
    out = run(case, practice_sharing=case / "practice-sharing.csv")
    manifest = json.loads((out / "manifest.json").read_text())
    kept = manifest["config"]["practice_sharing"]
    assert kept["path"] == "config/practice-sharing/practice-sharing.csv"
    assert (out / kept["path"]).read_bytes() == (case / "practice-sharing.csv").read_bytes()
    before = {p.relative_to(out): p.read_bytes() for p in (out / "fhir").rglob("*") if p.is_file()}
    report_before = json.loads((out / "reports" / "reconciliation.json").read_text())
    (case / "practice-sharing.csv").unlink()  # nothing outside the run folder is read again
    reemit_fhir(out)
    after = {p.relative_to(out): p.read_bytes() for p in (out / "fhir").rglob("*") if p.is_file()}
    assert after == before  # the practice settings' Consents and lineage re-derived as the run made them
    write_reports(out)
    report = json.loads((out / "reports" / "reconciliation.json").read_text())
    assert report["sharing"] == report_before["sharing"]
    assert report["sharing"]["blocked_by_source"]["practice_setting"] == 2
    assert [v["value"] for v in report["vocabulary"]["practice_sharing_out"]] == [
        v["value"] for v in report_before["vocabulary"]["practice_sharing_out"]] != []
    assert not verify(out).failures


def test_a_run_decides_the_sharing_state_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The rules' sharing features and the sharing state dispositions and FHIR read are one
    decision (``migrate.sharing.decide``), made once per run and read by both."""
    from migrate import sharing

    calls: list[int] = []
    real = sharing.decide

    def counted(entries: pl.LazyFrame) -> pl.LazyFrame:
        calls.append(1)
        return real(entries)

    monkeypatch.setattr(sharing, "decide", counted)
    out = run(codes_variant(tmp_path / "coded"))
    assert len(calls) == 1
    assert ("SHARING_BLOCK", "P21") in flags(out)  # and that decision reached the flags
