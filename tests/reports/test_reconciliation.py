"""write_reports: the enriched reconciliation.json, both invariants, determinism, sealing."""

from __future__ import annotations

import json
import shutil
from html.parser import HTMLParser
from pathlib import Path
from types import ModuleType

import polars as pl
import pytest

from migrate.reports import verify, write_reports
from migrate.reports.invariants import NOT_APPLICABLE

# Every key of the run summary (migrate.summary.RunSummary), each computed from the folder.
SUMMARY_KEYS = ("run_id", "cutover_date", "mapping", "rules", "sharing_policy", "invariant", "quarantine", "tables",
                "cohorts", "flags", "identity", "updates", "fhir", "target_index", "vocabulary", "sharing", "control_totals",
                "invariant_fhir", "invariants", "declared_vs_found", "waits", "delta", "run", "inputs", "outputs",
                "report_files", "report_format_version", "roundtrip", "hazard_log", "review")  # "target" once reconcile-target ran
REPORTS = ("reconciliation.json", "reconciliation.html", "exceptions.xlsx", "exceptions.csv", "hazard-log.html",
           "outreach.xlsx")


class _FirstElement(HTMLParser):
    """The first element inside <body>: its attributes and text."""

    def __init__(self) -> None:
        super().__init__()
        self.in_body = False
        self.first: dict[str, str | None] | None = None
        self.depth = 0
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "body":
            self.in_body = True
        elif self.in_body and self.first is None:
            self.first = dict(attrs) | {"tag": tag}
            self.depth = 1
        elif self.first is not None and self.depth:
            self.depth += 1

    def handle_endtag(self, tag: str) -> None:
        if self.first is not None and self.depth:
            self.depth -= 1

    def handle_data(self, data: str) -> None:
        if self.depth:
            self.text.append(data)


def first_element(html: str) -> tuple[dict[str, str | None], str]:
    parser = _FirstElement()
    parser.feed(html)
    assert parser.first is not None
    return parser.first, " ".join("".join(parser.text).split())


def test_a_re_render_gives_the_summary_the_run_wrote(worked_run: Path, rh: ModuleType, tmp_path: Path) -> None:
    """reconciliation.json is written once per command, by the reports, from the folder:
    re-rendering an untouched run gives the same summary, key for key."""
    from typing import get_type_hints

    from migrate.summary import RunSummary

    run = rh.copy_run(worked_run, tmp_path / "run")
    before = json.loads((run / "reports" / "reconciliation.json").read_text())
    result = write_reports(run)
    after = json.loads((run / "reports" / "reconciliation.json").read_text())
    assert after == before
    assert set(after) == set(SUMMARY_KEYS) == set(get_type_hints(RunSummary)) - {"target"}
    assert after["identity"]["patients"] == 28 and after["identity"]["merged"] == 1  # recorded by the pipeline
    assert result.holds and result.ok
    assert [p.name for p in result.files] == list(REPORTS)
    if (run / "fhir" / "ndjson").is_dir():
        assert after["invariant_fhir"]["applicable"] and after["invariant_fhir"]["holds"]
        assert after["invariant_fhir"]["resources"] == sum(
            len(p.read_text().splitlines()) for p in (run / "fhir" / "ndjson").glob("*.ndjson"))
    else:
        assert after["invariant_fhir"] == {"applicable": False, "holds": None, "status": NOT_APPLICABLE}
    assert after["invariants"] == {"holds": True, "failures": []}


def test_without_fhir_output_invariant_2_is_not_applicable(worked_run: Path, rh: ModuleType,
                                                           tmp_path: Path) -> None:
    run = rh.copy_run(worked_run, tmp_path / "run")
    shutil.rmtree(run / "fhir", ignore_errors=True)
    summary = write_reports(run).summary
    assert summary["invariant_fhir"] == {"applicable": False, "holds": None, "status": NOT_APPLICABLE}
    assert summary["invariants"]["holds"] is True  # not applicable is not a failure
    assert summary["control_totals"]["fhir"] == {"present": False, "resources": {}, "total": 0}
    assert "Not applicable: no FHIR output" in (run / "reports" / "reconciliation.html").read_text()


def test_control_totals_add_up_at_every_stage(synth_run: Path, rh: ModuleType, tmp_path: Path) -> None:
    run = rh.copy_run(synth_run, tmp_path / "run")
    totals = write_reports(run).summary["control_totals"]
    stages = {s["stage"]: s["rows"] for s in totals["stages"]}
    assert stages["read"] == stages["quarantined"] + stages["mapped"] > 0
    assert stages["quarantined"] > 0  # the synthetic extract plants malformed rows
    final = ("merged", "already_at_target", "out_of_scope", "withheld", "migrated", "quarantined")
    assert sum(stages[s] for s in final) == stages["read"]
    quarantine = pl.read_parquet(run / "quarantine.parquet")
    for f in totals["files"]:
        q = quarantine.filter(pl.col("source_file") == f["file"])
        assert f["quarantined"]["total"] == q.height
        assert f["quarantined"]["by_reason"] == dict(sorted(q.group_by("reason_code").len().iter_rows()))
        assert f["read_equals_mapped_plus_quarantined"]
    exceptions = pl.read_parquet(run / "exceptions.parquet")
    by_code = totals["exceptions"]["by_code"]
    assert sum(c["total"] for c in by_code.values()) == exceptions.height
    assert sum(f["total"] for f in totals["exceptions"]["by_family"].values()) == exceptions.height
    ndjson = sorted((run / "fhir" / "ndjson").glob("*.ndjson"))
    assert totals["fhir"]["present"] is bool(ndjson)
    assert totals["fhir"]["resources"] == {p.stem: len(p.read_text().splitlines()) for p in ndjson}


def test_same_run_gives_byte_identical_reports_wherever_it_sits(worked_run: Path, rh: ModuleType,
                                                                tmp_path: Path) -> None:
    one = rh.copy_run(worked_run, tmp_path / "one")
    two = rh.copy_run(worked_run, tmp_path / "elsewhere" / "two")
    write_reports(one)
    first = {n: (one / "reports" / n).read_bytes() for n in REPORTS}
    manifest = (one / "manifest.json").read_bytes()
    write_reports(one)  # a re-render changes nothing, manifest included
    write_reports(two)
    for name in REPORTS:
        assert (one / "reports" / name).read_bytes() == first[name], name
        assert (two / "reports" / name).read_bytes() == first[name], name
    assert (one / "manifest.json").read_bytes() == manifest


def test_report_files_are_sealed_into_the_manifest(worked_run: Path, rh: ModuleType, tmp_path: Path) -> None:
    run = rh.copy_run(worked_run, tmp_path / "run")
    write_reports(run)
    listed = {e["path"] for e in json.loads((run / "manifest.json").read_text())["outputs"]}
    assert {f"reports/{n}" for n in REPORTS} <= listed
    assert verify(run).ok


def test_a_row_dropped_from_lineage_fails_and_the_page_opens_in_red(worked_run: Path, rh: ModuleType,
                                                                    tmp_path: Path) -> None:
    run = rh.copy_run(worked_run, tmp_path / "run")
    lineage = pl.read_parquet(run / "lineage.parquet")
    victim = lineage.filter(pl.col("source_file") == "referrals.csv").row(3, named=True)
    rh.rewrite(run / "lineage.parquet", lineage.filter(
        ~((pl.col("source_file") == victim["source_file"]) & (pl.col("source_row") == victim["source_row"]))))
    result = write_reports(run)
    assert not result.holds
    inv = result.summary["invariant"]
    assert not inv["holds"]
    bad = [f for f in inv["files"] if not f["holds"]]
    assert [f["file"] for f in bad] == ["referrals.csv"]
    assert bad[0]["rows_read"] - bad[0]["total"] == 1
    failures = result.summary["invariants"]["failures"]
    assert failures[0] == (
        f"Invariant 1 (rows read = Σ dispositions) fails for referrals.csv: 29 rows read, 28 with a disposition; "
        f"1 row unaccounted for; first examples: row {victim['source_row']} without a disposition")
    # With FHIR output, the dropped row's resources now trace to nothing either.
    assert all(f.startswith("Invariant 2 (FHIR traceability) fails: ") and "traces to no row" in f
               for f in failures[1:])
    saved = json.loads((run / "reports" / "reconciliation.json").read_text())
    assert saved["invariants"]["holds"] is False
    page = (run / "reports" / "reconciliation.html").read_text()
    first, text = first_element(page)
    assert first["id"] == "verdict" and "fail" in (first.get("class") or "")
    assert text.startswith("RECONCILIATION FAILED") and "referrals.csv" in text


def _with_fhir(run: Path, rh: ModuleType) -> pl.DataFrame:
    """Replace the run's FHIR output by a known one: one resource per carried source row."""
    lineage = pl.read_parquet(run / "lineage.parquet").unique(["source_file", "source_row"], keep="first").sort(
        "source_file", "source_row")
    types = {"patients": "Patient", "referrals": "ServiceRequest", "contacts": "Encounter", "codes": "Observation"}
    carried = pl.col("disposition").cast(pl.String).is_in(["migrated", "already_at_target"])
    lineage = lineage.with_columns(
        pl.when(carried).then(pl.col("table").replace_strict(types)).alias("fhir_type"),
        pl.when(carried).then(pl.format("{}-{}", "source_file", "source_row")).alias("fhir_id"))
    rh.rewrite(run / "lineage.parquet", lineage)
    folder = run / "fhir" / "ndjson"
    shutil.rmtree(run / "fhir", ignore_errors=True)  # replace whatever FHIR output the run has
    folder.mkdir(parents=True)
    resources = lineage.filter(pl.col("fhir_id").is_not_null())
    for (kind,), part in resources.group_by("fhir_type"):
        lines = [json.dumps({"resourceType": kind, "id": i}) for i in part["fhir_id"].to_list()]
        (folder / f"{kind}.ndjson").write_text("\n".join(lines) + "\n")
    return resources


def test_fhir_invariant_holds_when_rows_and_resources_trace_both_ways(worked_run: Path, rh: ModuleType,
                                                                      tmp_path: Path) -> None:
    run = rh.copy_run(worked_run, tmp_path / "run")
    resources = _with_fhir(run, rh)
    summary = write_reports(run).summary
    fhir = summary["invariant_fhir"]
    assert fhir["applicable"] and fhir["holds"], fhir["status"]
    assert fhir["resources"] == fhir["migrated_rows"] == resources.height
    counts = summary["control_totals"]["fhir"]
    assert counts["total"] == resources.height
    assert counts["resources"] == dict(sorted(resources.group_by("fhir_type").len().iter_rows()))


def test_fhir_invariant_names_untraced_resources_and_rows_without_one(worked_run: Path, rh: ModuleType,
                                                                      tmp_path: Path) -> None:
    run = rh.copy_run(worked_run, tmp_path / "run")
    _with_fhir(run, rh)
    with (run / "fhir" / "ndjson" / "Patient.ndjson").open("a") as fh:
        fh.write(json.dumps({"resourceType": "Patient", "id": "orphan"}) + "\n")
    lineage = pl.read_parquet(run / "lineage.parquet")
    row = lineage.filter(pl.col("fhir_id") == "referrals.csv-1")
    assert row.height == 1
    ghost = lineage.filter(pl.col("table") == "codes").row(0, named=True)["fhir_id"]
    rh.rewrite(run / "lineage.parquet", lineage.with_columns(
        pl.when(pl.col("fhir_id") == "referrals.csv-1").then(None)
        .when(pl.col("fhir_id") == ghost).then(pl.lit("ghost"))  # names a resource never written
        .otherwise(pl.col("fhir_id")).alias("fhir_id")))
    result = write_reports(run)
    fhir = result.summary["invariant_fhir"]
    assert not result.holds and fhir["holds"] is False
    assert fhir["migrated_rows_without_resource"] == 1
    assert fhir["examples"]["rows_without_resource"] == [{"file": "referrals.csv", "row": 1}]
    # The resources of both edited rows are now named by no lineage row, as is the orphan.
    assert {(e["type"], e["id"]) for e in fhir["examples"]["resources_without_source"]} == {
        ("Patient", "orphan"), ("ServiceRequest", "referrals.csv-1"), ("Observation", ghost)}
    assert fhir["examples"]["lineage_resources_missing"] == [{"type": "Observation", "id": "ghost"}]
    [line] = result.summary["invariants"]["failures"]
    assert line.startswith("Invariant 2 (FHIR traceability) fails") and "referrals.csv row 1 has no resource" in line
    assert result.summary["invariant"]["holds"]  # invariant 1 is untouched
    first, text = first_element((run / "reports" / "reconciliation.html").read_text())
    assert "fail" in (first.get("class") or "") and "Invariant 2 (FHIR traceability) fails" in text


def test_fhir_invariant_names_a_resource_written_twice(worked_run: Path, rh: ModuleType, tmp_path: Path) -> None:
    """Two partitions both writing one patient would leave every row traced: the copy is
    what fails the invariant, named by type and id."""
    run = rh.copy_run(worked_run, tmp_path / "run")
    _with_fhir(run, rh)
    path = run / "fhir" / "ndjson" / "Patient.ndjson"
    first = path.read_text().splitlines()[0]
    with path.open("a") as fh:
        fh.write(first + "\n")
    result = write_reports(run)
    fhir = result.summary["invariant_fhir"]
    assert fhir["holds"] is False and fhir["resources_written_more_than_once"] == 1
    assert fhir["migrated_rows_without_resource"] == fhir["resources_without_source"] == 0
    assert fhir["examples"]["resources_written_more_than_once"] == [
        {"type": "Patient", "id": json.loads(first)["id"]}]
    [line] = result.summary["invariants"]["failures"]
    assert "1 extra copies of resources written more than once" in line and "is written more than once" in line


def test_worklist_orders_by_severity_then_longest_wait(synth_run: Path, rh: ModuleType, tmp_path: Path) -> None:
    run = rh.copy_run(synth_run, tmp_path / "run")
    write_reports(run)
    rows = pl.read_csv(run / "reports" / "exceptions.csv", infer_schema=False)
    assert rows.height == pl.read_parquet(run / "exceptions.parquet").height
    severity = {"critical": 0, "high": 1, "medium": 2, "low": 3}
    for _family, part in rows.group_by("family", maintain_order=True):
        keys = [(severity[s], -(int(d) if d is not None else -1)) for s, d in
                part.select("severity", "days_waiting").iter_rows()]
        assert keys == sorted(keys)
    assert "reason_text" not in rows.columns
    assert rows.filter(pl.col("nhs_number").is_not_null()).height > 0


@pytest.mark.parametrize("name", ["lineage.parquet", "exceptions.parquet"])
def test_a_missing_run_file_is_an_input_error(worked_run: Path, rh: ModuleType, tmp_path: Path, name: str) -> None:
    from migrate.errors import InputError

    run = rh.copy_run(worked_run, tmp_path / "run")
    (run / name).unlink()
    with pytest.raises(InputError, match=name) as caught:
        write_reports(run)
    assert caught.value.exit_code == 3


@pytest.mark.parametrize("damage", ["none", "drop", "repeat", "repeat_other_disposition", "unknown_file",
                                    "text_dispositions", "row_beyond_read"])
def test_invariant_1_names_what_an_edited_lineage_breaks(worked_run: Path, rh: ModuleType, tmp_path: Path,
                                                        damage: str) -> None:
    from migrate.reconcile import rows_invariant
    from migrate.reports.rundata import RunFolder
    from migrate.reports.totals import file_counts

    run = rh.copy_run(worked_run, tmp_path / "run")
    lineage = pl.read_parquet(run / "lineage.parquet")
    one = lineage.filter(pl.col("source_file") == "contacts.csv").head(2)
    changed = {
        "none": lineage,
        "drop": lineage.slice(1),
        "repeat": pl.concat([lineage, one]),
        "repeat_other_disposition": pl.concat([lineage, one.with_columns(pl.lit("withheld").cast(
            lineage.schema["disposition"]).alias("disposition"))]),
        "unknown_file": pl.concat([lineage, one.with_columns(pl.lit("stray.csv").alias("source_file"))]),
        "text_dispositions": pl.concat([lineage.with_columns(pl.col("disposition").cast(pl.String)),
                                        one.with_columns(pl.lit("lost").alias("disposition"))]),
        # contacts.csv row 1 renumbered past the rows read: the total still matches, a row is still lost
        "row_beyond_read": lineage.with_columns(pl.when((pl.col("source_file") == "contacts.csv")
                                                        & (pl.col("source_row") == 1)).then(999)
                                                .otherwise(pl.col("source_row")).alias("source_row")),
    }[damage]
    rh.rewrite(run / "lineage.parquet", changed)
    result = rows_invariant(pl.scan_parquet(run / "lineage.parquet"), file_counts(RunFolder.open(run)))
    # A source row may appear once per FHIR resource it became: a repeat with the same
    # disposition is allowed; a second disposition, a lost row or a stray file is not.
    assert result["holds"] is (damage in ("none", "repeat"))
    examples = result["examples"]
    expected = {
        "none": {}, "repeat": {},
        "drop": {"rows_without_disposition": [{"file": "codes.csv", "row": 1}]},
        "repeat_other_disposition": {"rows_with_several_dispositions": [
            {"file": "contacts.csv", "row": r, "dispositions": sorted(["withheld", d])}
            for r, d in one.select("source_row", pl.col("disposition").cast(pl.String)).unique().sort("source_row").rows()
            if d != "withheld"]},
        "unknown_file": {"rows_not_read": [{"file": "stray.csv", "row": r} for r in sorted(set(one["source_row"]))]},
        "text_dispositions": {"rows_with_unknown_disposition": [
            {"file": "contacts.csv", "row": r, "dispositions": ["lost"]} for r in sorted(set(one["source_row"]))]},
        "row_beyond_read": {"rows_without_disposition": [{"file": "contacts.csv", "row": 1}],
                            "rows_not_read": [{"file": "contacts.csv", "row": 999}]},
    }[damage]
    got = {k: [e | ({"dispositions": sorted(e["dispositions"])} if "dispositions" in e else {}) for e in v]
           for k, v in examples.items() if v}
    assert got == expected


@pytest.mark.parametrize("style", ["compact", "spaced", "reordered", "blank_lines"])
def test_resource_ids_are_read_from_any_ndjson_layout(tmp_path: Path, style: str) -> None:
    from migrate.reports.invariants import _first_named, _pair_keys

    resources = [{"resourceType": "Patient", "id": f"p-{i}", "name": [{"family": "x"}]} for i in range(5)]
    lines = {
        "compact": [json.dumps(r, separators=(",", ":")) for r in resources],
        "spaced": [json.dumps(r) for r in resources],
        "reordered": [json.dumps({"id": r["id"], "resourceType": r["resourceType"]}) for r in resources],
        "blank_lines": [json.dumps(r, separators=(",", ":")) + "\n" for r in resources],
    }[style]
    path = tmp_path / "Patient.ndjson"
    path.write_text("\n".join(lines))  # no final newline: the last line still counts
    every = pl.DataFrame({"fhir_type": ["Patient"] * 5, "fhir_id": [f"p-{i}" for i in range(5)]}).select(_pair_keys())
    [named] = _first_named(path, [every])
    assert named.rows() == [("Patient", f"p-{i}") for i in range(5)]


@pytest.mark.parametrize("layout", ["heads", "parsed"])
def test_examples_are_the_first_names_whatever_the_batches(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                           layout: str) -> None:
    """The failing resources are named as the first EXAMPLES (type, id) of those with the failing
    hashes, distinct, though the file streams by in batches: the smallest names in the last
    batches, copies across batches and repeats of one name all count once."""
    from migrate.reports import invariants
    from migrate.reports.invariants import EXAMPLES, _first_named, _pair_keys

    monkeypatch.setattr(invariants, "SPILL_ROWS", 7)
    ids = [f"r-{i:03d}" for i in range(100)]
    written = ids[::-1] + ids[:30]  # the smallest ids last, and each of those twice, 70 lines apart
    separators = (",", ":") if layout == "heads" else (", ", ": ")  # the latter is read by a JSON parse
    path = tmp_path / "Observation.ndjson"
    path.write_text("".join(json.dumps({"resourceType": "Observation", "id": i, "status": "final"},
                                       separators=separators) + "\n" for i in written))
    odd = [i for n, i in enumerate(ids) if n % 2]
    wanted = pl.DataFrame({"fhir_type": ["Observation"] * len(odd), "fhir_id": odd}).select(_pair_keys())
    nothing = wanted.head(0)
    named, none = _first_named(path, [wanted, nothing])
    assert named.rows() == [("Observation", i) for i in odd[:EXAMPLES]]
    assert none.height == 0


def test_the_pipelines_fhir_output_passes_invariant_2(worked_run: Path, rh: ModuleType, tmp_path: Path) -> None:
    run = rh.copy_run(worked_run, tmp_path / "run")
    assert (run / "fhir" / "ndjson").is_dir(), "a run with FHIR on writes fhir/ndjson"
    fhir = write_reports(run).summary["invariant_fhir"]
    assert fhir["applicable"] and fhir["holds"], fhir["status"]
    assert fhir["resources_not_traced_by_design"] == sum(
        len((run / "fhir" / "ndjson" / f"{t}.ndjson").read_text().splitlines())
        for t in ("Organization", "Provenance") if (run / "fhir" / "ndjson" / f"{t}.ndjson").exists())
