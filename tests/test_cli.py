"""The command line: every exit code, the summary, JSON output, and check."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import polars as pl
import pytest
from click.testing import CliRunner

import cli
from migrate import pipeline

CASE = Path(__file__).parent / "cases" / "worked-example"
MAPPING = str(CASE / "mapping.yaml")


def invoke(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli.main, list(args))
    return result.exit_code, result.stdout, result.stderr


def test_run_succeeds_and_prints_the_invariant(tmp_path: Path) -> None:
    code, out, _ = invoke("run", "--input", str(CASE / "input"), "--mapping", MAPPING, "--cutover", "2022-10-01",
                          "--out", str(tmp_path / "run"))
    assert code == 0
    assert "Invariant 1 holds: 79 source rows read" in out
    assert "Invariant 2 holds" in out
    assert (tmp_path / "run" / "manifest.json").is_file()


def test_run_json_summary(tmp_path: Path) -> None:
    code, out, _ = invoke("run", "--input", str(CASE / "input"), "--mapping", MAPPING, "--cutover", "2022-10-01",
                          "--out", str(tmp_path / "run"), "--json")
    assert code == 0
    summary = json.loads(out)
    assert summary["invariant"]["holds"] is True
    # 4 inactive patients, their 4 referrals and 2 contacts are out of scope, and so is R11's
    # e-RS dummy slot; the 2 contacts of the sharing-blocked P21 and P23 are withheld; P28
    # (P01's NHS number) is merged into P01.
    assert summary["invariant"]["dispositions"] == {
        "migrated": 65, "merged": 1, "already_at_target": 0, "withheld": 2, "out_of_scope": 11, "quarantined": 0}
    assert summary["cohorts"]["patients"]["transition"] == 6  # P02 P09 P12 P17 P21 P25
    assert summary["flags"]["by_severity"]["critical"] == 3


def test_missing_input_folder_exits_3_naming_it(tmp_path: Path) -> None:
    code, _, err = invoke("run", "--input", str(tmp_path / "absent"), "--mapping", MAPPING, "--cutover", "2022-10-01",
                          "--out", str(tmp_path / "run"))
    assert code == 3 and "absent" in err


def test_missing_input_file_exits_3(tmp_path: Path) -> None:
    shutil.copytree(CASE / "input", tmp_path / "in")
    (tmp_path / "in" / "codes.csv").unlink()
    code, _, err = invoke("run", "--input", str(tmp_path / "in"), "--mapping", MAPPING, "--cutover", "2022-10-01",
                          "--out", str(tmp_path / "run"))
    assert code == 3 and "codes.csv" in err


def test_file_missing_a_required_column_exits_2_naming_file_and_column(tmp_path: Path) -> None:
    shutil.copytree(CASE / "input", tmp_path / "in")
    frame = pl.read_csv(tmp_path / "in" / "referrals.csv", infer_schema=False).drop("received_date")
    frame.write_csv(tmp_path / "in" / "referrals.csv")
    code, _, err = invoke("run", "--input", str(tmp_path / "in"), "--mapping", MAPPING, "--cutover", "2022-10-01",
                          "--out", str(tmp_path / "run"))
    assert code == 2
    assert "referrals.csv" in err and "received_date" in err
    assert not (tmp_path / "run").exists(), "nothing is written when the configuration is wrong"


def test_bad_profile_exits_2_listing_every_problem(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("profile: bad\nformat_version: 1\ntables:\n  patients:\n    files: p.csv\n    fields:\n"
                   "      source_patient_id: id\n      shoe_size: s\n      birth_date: {column: d, formats: ['%Q']}\n")
    code, _, err = invoke("run", "--input", str(CASE / "input"), "--mapping", str(bad), "--cutover", "2022-10-01",
                          "--out", str(tmp_path / "run"))
    assert code == 2
    assert "shoe_size" in err and "'%Q' is not a valid date format" in err


def test_bad_option_exits_2_before_reading(tmp_path: Path) -> None:
    code, _, err = invoke("run", "--input", str(CASE / "input"), "--mapping", MAPPING, "--cutover", "01/10/2022",
                          "--out", str(tmp_path / "run"))
    assert code == 2 and "YYYY-MM-DD" in err


def test_broken_invariant_exits_1(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real = pipeline.build_lineage

    def drop_a_row(ingested: object, dispositions: object) -> pl.LazyFrame:
        lost = (pl.col("source_file") == "codes.csv") & (pl.col("source_row") == 1)
        return real(ingested, dispositions).filter(~lost)  # type: ignore[arg-type]

    monkeypatch.setattr(pipeline, "build_lineage", drop_a_row)
    code, out, err = invoke("run", "--input", str(CASE / "input"), "--mapping", MAPPING, "--cutover", "2022-10-01",
                            "--out", str(tmp_path / "run"))
    assert code == 1
    assert "Invariant 1 BROKEN" in out and "reconciliation failed" in err
    # The message names the invariant, the file and the first row it lost.
    assert "Invariant 1 (rows read = Σ dispositions) fails for codes.csv" in err
    assert "row 1 without a disposition" in err
    assert "Traceback" not in err
    report = json.loads((tmp_path / "run" / "reports" / "reconciliation.json").read_text())
    assert report["invariant"]["holds"] is False
    assert report["invariant"]["examples"]["rows_without_disposition"] == [{"file": "codes.csv", "row": 1}]


def test_check_lists_problems_without_writing(tmp_path: Path) -> None:
    shutil.copytree(CASE / "input", tmp_path / "in")
    with (tmp_path / "in" / "contacts.csv").open("a") as fh:
        fh.write("C90,R02,P02,2022-09-01 10:00,9,initial,\nC91,R02,P02,2022-09-01 10:00,8,initial,\n")
    code, out, _ = invoke("check", "--input", str(tmp_path / "in"), "--mapping", MAPPING, "--json")
    assert code == 0
    report = json.loads(out)
    [problem] = report["row_problems"]
    assert (problem["field"], problem["reason_code"], problem["rows"]) == ("attendance", "unmapped_code", 2)
    assert problem["example_values"] == ["9", "8"]
    assert sorted(p.name for p in (tmp_path / "in").iterdir()) == ["codes.csv", "contacts.csv", "patients.csv",
                                                                   "referrals.csv"]


def test_check_reports_missing_columns_of_every_file_and_exits_2(tmp_path: Path) -> None:
    shutil.copytree(CASE / "input", tmp_path / "in")
    for name, column in (("referrals.csv", "status"), ("contacts.csv", "attendance_code")):
        pl.read_csv(tmp_path / "in" / name, infer_schema=False).drop(column).write_csv(tmp_path / "in" / name)
    code, _, err = invoke("check", "--input", str(tmp_path / "in"), "--mapping", MAPPING)
    assert code == 2
    assert "referrals.csv (referrals): missing column(s) status" in err
    assert "contacts.csv (contacts): missing column(s) attendance_code" in err


def test_rules_list_and_explain() -> None:
    code, out, _ = invoke("rules", "list", "--json")
    assert code == 0
    flags = {r.get("flag") for r in json.loads(out)}
    assert {"UNDER_PRIORITISED", "SHARING_BLOCK", "PIFU_EXPIRED", "ON_TWO_LISTS"} <= flags
    code, out, _ = invoke("rules", "explain", "POST_OP_NOT_PRIORITISED")
    assert code == 0 and "post_op_window_days = 84" in out
    code, _, err = invoke("rules", "explain", "NO_SUCH_FLAG")
    assert code == 2 and "NO_SUCH_FLAG" in err


def test_site_rule_pack_and_sharing_policy(tmp_path: Path) -> None:
    site = tmp_path / "site"
    site.mkdir()
    (site / "default.yaml").write_text("extends: default\nname: site\nthresholds: {post_op_window_days: 14}\n")
    code, out, _ = invoke("run", "--input", str(CASE / "input"), "--mapping", MAPPING, "--cutover", "2022-10-01",
                          "--out", str(tmp_path / "run"), "--rules", str(site), "--sharing-policy", "include", "--json")
    assert code == 0
    summary = json.loads(out)
    assert summary["rules"]["name"] == "site"
    # R16's surgery was 21 days before the cut-over: outside a 14-day window
    assert "POST_OP_NOT_PRIORITISED" not in summary["flags"]["by_code"]
    assert summary["invariant"]["dispositions"]["withheld"] == 0
    assert summary["sharing_policy"] == "include"


def test_broken_rule_pack_exits_2_before_reading(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("extends: default\nname: bad\nthresholds: {post_op_window_days: soon}\n")
    code, _, err = invoke("run", "--input", str(tmp_path / "nowhere"), "--mapping", MAPPING, "--cutover", "2022-10-01",
                          "--out", str(tmp_path / "run"), "--rules", str(bad))
    assert code == 2 and "post_op_window_days" in err


def test_dedupe_one_patient_file(tmp_path: Path) -> None:
    code, out, _ = invoke("dedupe", "--input", str(CASE / "input" / "patients.csv"), "--mapping", MAPPING,
                          "--out", str(tmp_path / "dd"), "--json")
    assert code == 0
    summary = json.loads(out)
    assert summary["patients"] == 28
    pairs = pl.read_parquet(tmp_path / "dd" / "duplicates.parquet")
    assert ("P01", "P28", "exact_nhs_number") in set(pairs.select("patient_key_a", "patient_key_b", "match_type").rows())
    assert summary["pairs"]["exact_nhs_number"] == 1
    model = json.loads((tmp_path / "dd" / "identity-model.json").read_text())
    assert model["records"] == 28 and "blocking" in model and "em" in model


def test_missing_target_index_exits_3(tmp_path: Path) -> None:
    code, _, err = invoke("run", "--input", str(CASE / "input"), "--mapping", MAPPING, "--cutover", "2022-10-01",
                          "--out", str(tmp_path / "run"), "--target-index", str(tmp_path / "none.csv"))
    assert code == 3 and "none.csv" in err


def test_fhir_re_emitted_from_a_finished_run_is_identical(tmp_path: Path) -> None:
    run = tmp_path / "run"
    code, _, _ = invoke("run", "--input", str(CASE / "input"), "--mapping", MAPPING, "--cutover", "2022-10-01",
                        "--out", str(run), "--quiet")
    assert code == 0
    before = {p.name: p.read_bytes() for p in (run / "fhir" / "ndjson").glob("*.ndjson")}
    bundle = (run / "fhir" / "bundles" / "bundle-00001.json").read_bytes()
    code, out, _ = invoke("fhir", str(run), "--json")
    assert code == 0 and json.loads(out)["errors"] == 0
    assert {p.name: p.read_bytes() for p in (run / "fhir" / "ndjson").glob("*.ndjson")} == before
    assert (run / "fhir" / "bundles" / "bundle-00001.json").read_bytes() == bundle
    assert {"Patient.ndjson", "ServiceRequest.ndjson", "Provenance.ndjson"} <= set(before)


def test_no_fhir_skips_the_output(tmp_path: Path) -> None:
    code, out, _ = invoke("run", "--input", str(CASE / "input"), "--mapping", MAPPING, "--cutover", "2022-10-01",
                          "--out", str(tmp_path / "run"), "--no-fhir", "--json")
    assert code == 0 and not (tmp_path / "run" / "fhir").exists()
    summary = json.loads(out)
    assert summary["invariant_fhir"]["applicable"] is False and summary["fhir"] is None


def test_synth_with_an_hl7_feed_runs_with_both_profiles(tmp_path: Path) -> None:
    code, _, _ = invoke("synth", "--out", str(tmp_path / "x"), "--patients", "300", "--hl7", "400", "--quiet")
    assert code == 0 and (tmp_path / "x" / "feed.hl7").is_file()
    code, out, _ = invoke("run", "--input", str(tmp_path / "x"), "--mapping", "generic-csv", "--mapping", "hl7v2",
                          "--cutover", "2022-10-01", "--out", str(tmp_path / "run"), "--json", "--no-fhir")
    assert code == 0
    files = {f["file"]: f for f in json.loads(out)["invariant"]["files"]}
    assert files["feed.hl7"]["rows_read"] == 400 and files["feed.hl7"]["holds"]


def test_verify_report_and_diff_commands(tmp_path: Path) -> None:
    run = tmp_path / "run"
    code, _, _ = invoke("run", "--input", str(CASE / "input"), "--mapping", MAPPING, "--cutover", "2022-10-01",
                        "--out", str(run), "--quiet")
    assert code == 0 and (run / "reports" / "reconciliation.html").is_file()
    assert (run / "reports" / "exceptions.xlsx").is_file()
    code, out, _ = invoke("verify", str(run), "--json")
    assert code == 0 and json.loads(out)["ok"] is True
    code, out, _ = invoke("diff", str(run), str(run), "--json")
    assert code == 0
    code, _, err = invoke("report", str(run), "--pseudonymise", "--out", str(tmp_path / "pack"))
    assert code == 2  # no key file: refuses rather than inventing a key
    target = run / "cohorts.parquet"
    data = bytearray(target.read_bytes())
    data[-20] ^= 0xFF
    target.write_bytes(bytes(data))
    code, out, _ = invoke("verify", str(run))
    assert code == 1 and "cohorts.parquet" in out


def test_the_summary_is_written_once_and_is_what_the_cli_prints(tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """reconciliation.json was written by the pipeline, then overwritten by the reports,
    and the CLI printed the pipeline's copy; now one summary, written once, printed as is."""
    from migrate import outputs

    written: list[str] = []
    real = outputs.write_json

    def counting(data: object, path: Path) -> Path:
        # the run is written in a hidden sibling of --out, renamed into place when complete
        written.append(Path(*path.relative_to(tmp_path).parts[1:]).as_posix())
        return real(data, path)

    for module in ("migrate.outputs", "migrate.reports.reconciliation", "migrate.pipeline"):
        monkeypatch.setattr(f"{module}.write_json", counting)
    code, out, _ = invoke("run", "--input", str(CASE / "input"), "--mapping", MAPPING, "--cutover", "2022-10-01",
                          "--out", str(tmp_path / "run"), "--json")
    assert code == 0
    assert written.count("reports/reconciliation.json") == 1
    saved = json.loads((tmp_path / "run" / "reports" / "reconciliation.json").read_text())
    assert json.loads(out) == saved
    assert not {"fhir_invariant"} & set(saved)  # one key per invariant, plus the verdict


def test_exit_codes_come_only_from_the_exception_tree() -> None:
    """cli.py chooses no exit code itself: the one sys.exit is _guard's, with the error's code."""
    import ast
    import inspect

    tree = ast.parse(inspect.getsource(cli))
    exits = [node for node in ast.walk(tree) if isinstance(node, ast.Call)
             and ast.unparse(node.func) in ("sys.exit", "exit", "ctx.exit", "SystemExit")]
    assert [ast.unparse(e) for e in exits] == ["sys.exit(exc.exit_code)"]


def test_check_with_a_site_pack_shows_unknown_values_disappear(tmp_path: Path) -> None:
    """Iterate on a site's configuration: check, edit the pack, check again (issue #10, item 6)."""
    shutil.copytree(CASE / "input", tmp_path / "in")
    refs = pl.read_csv(tmp_path / "in" / "referrals.csv", infer_schema=False)
    refs.with_columns(pl.when(pl.col("referral_id") == "R01").then(pl.lit("CES;Night-Pain"))
                      .otherwise(pl.col("red_flags")).alias("red_flags")).write_csv(tmp_path / "in" / "referrals.csv")

    def red_flags(*extra: str) -> dict[str, str | None]:
        code, out, _ = invoke("check", "--input", str(tmp_path / "in"), "--mapping", MAPPING, "--json", *extra)
        assert code == 0
        return {v["value"]: v["codelist"] for v in json.loads(out)["vocabulary"]["red_flags"]}

    assert red_flags() == {"CES": None, "Night-Pain": "red_flag_codes", "cauda_equina": "red_flag_codes"}
    code, out, _ = invoke("check", "--input", str(tmp_path / "in"), "--mapping", MAPPING)
    assert code == 0 and "Vocabulary" in out and "CES" in out and "none" in out
    site = tmp_path / "site.yaml"
    site.write_text("extends: default\nname: site\ncodelists:\n  red_flag_codes: [cauda_equina, night_pain, CES]\n")
    assert red_flags("--rules", str(site)) == {"CES": "red_flag_codes", "Night-Pain": "red_flag_codes",
                                               "cauda_equina": "red_flag_codes"}
    site.write_text("extends: default\nname: site\ncodelists:\n  red_flag_codes: [cauda_equina]\n"
                    "  not_red_flag_codes: [cauda equina]\n")
    code, _, err = invoke("check", "--input", str(tmp_path / "in"), "--mapping", MAPPING, "--rules", str(site))
    assert code == 2 and "both list cauda_equina" in err

def test_a_sealed_chain_verified_end_to_end(tmp_path: Path) -> None:
    """run --key-file seals; verify --key-file checks it; verify --chain re-verifies the batch before."""
    key = tmp_path / "key"
    key.write_text("a-secret-of-at-least-16-bytes\n")
    base = ["--input", str(CASE / "input"), "--mapping", MAPPING, "--cutover", "2022-10-01", "--quiet"]
    first, second = tmp_path / "batches" / "b1", tmp_path / "batches" / "b2"
    assert invoke("run", *base, "--out", str(first), "--key-file", str(key))[0] == 0
    assert invoke("run", *base, "--out", str(second), "--previous", str(first), "--key-file", str(key))[0] == 0
    code, out, _ = invoke("verify", str(second), "--key-file", str(key), "--chain", "--json")
    result = json.loads(out)
    assert code == 0 and result["seal"] == "matches the key" and result["runs_checked"] == 2
    code, _, err = invoke("report", str(second))
    assert code == 2 and "sealed" in err
    other = tmp_path / "other"
    other.write_text("another-secret-of-16-bytes-or-more")
    code, out, _ = invoke("verify", str(second), "--key-file", str(other))
    assert code == 1 and "seal" in out


def test_a_sealed_run_is_changed_only_with_its_key(tmp_path: Path) -> None:
    """fhir, load and reconcile-target add to a finished run: on a sealed run, without its key
    each refuses (exit 2) before it writes or sends anything; with it, the run is re-sealed
    and still verifies under the key."""
    key = tmp_path / "key"
    key.write_text("a-secret-of-at-least-16-bytes\n")
    run = tmp_path / "run"
    assert invoke("run", "--input", str(CASE / "input"), "--mapping", MAPPING, "--cutover", "2022-10-01", "--quiet",
                  "--out", str(run), "--key-file", str(key))[0] == 0
    export = tmp_path / "export"
    shutil.copytree(run / "fhir" / "ndjson", export)
    before = {p.relative_to(run): p.read_bytes() for p in run.rglob("*") if p.is_file()}
    refused = {
        "fhir": ["fhir", str(run), "--bundle-size", "3"],
        # a closed loopback port: refused before any connection is tried
        "load": ["load", str(run), "--fhir-base", "http://127.0.0.1:9/fhir", "--quiet"],
        "reconcile-target": ["reconcile-target", str(run), "--export", str(export), "--quiet"],
    }
    for name, args in refused.items():
        code, _, err = invoke(*args)
        assert code == 2 and "sealed" in err, (name, code, err)
        assert {p.relative_to(run): p.read_bytes() for p in run.rglob("*") if p.is_file()} == before, name
    code, _, err = invoke("reconcile-target", str(run), "--export", str(export), "--quiet", "--key-file", str(key))
    assert code == 0, err
    assert (run / "reports" / "target.json").is_file()
    code, _, err = invoke("fhir", str(run), "--bundle-size", "3", "--key-file", str(key))
    assert code == 0, err
    code, out, _ = invoke("verify", str(run), "--key-file", str(key), "--json")
    assert code == 0 and json.loads(out)["seal"] == "matches the key"
