"""``handover profile draft`` on every layout the project tests, pinned and round-tripped.

For the generic synthetic layout (``handover synth``), tests/cases/second-layout,
tests/cases/worked-example and the new-provider layout of tests/test_new_provider.py:

- the draft is pinned (tests/cases/draft/<layout>.yaml; HANDOVER_REGEN_GOLDEN=1 rewrites);
- the draft loads as a profile without edits, and the extract read through it gives the
  same canonical rows and the same quarantine (file, row, reason, field) as the profile
  written by hand for that layout;
- the draft never quotes a value of a field that identifies a person;
- a whole batch run on the draft holds and decides every row as the run on the profile
  written by hand.
"""

from __future__ import annotations

import importlib.util
import json
import os
import random
import shutil
from datetime import date
from pathlib import Path

import polars as pl
import pytest
from click.testing import CliRunner

import cli
from migrate import canonical
from migrate.draft import draft_profile
from migrate.ingest import ingest
from migrate.pipeline import RunConfig, run_batch
from migrate.profile import load_profile
from migrate.sources import discover, read_file
from migrate.synth import synthesise

CASES = Path(__file__).parent.parent / "cases"
GOLDEN = CASES / "draft"
LAYOUTS = ("generic", "second-layout", "worked-example", "new-provider")


def _new_provider_module() -> object:
    spec = importlib.util.spec_from_file_location("new_provider_case", CASES.parent / "test_new_provider.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def layouts(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, str]]:
    """layout -> (input folder, the profile written by hand for it)."""
    root = tmp_path_factory.mktemp("layouts")
    synthesise(root / "generic", patients=300)
    np = _new_provider_module()
    synthesise(root / "np-generic", patients=600, seed=11)
    np._plant(root / "np-generic", random.Random(10))  # type: ignore[attr-defined]
    np._convert(root / "np-generic", root / "new-provider")  # type: ignore[attr-defined]
    return {
        "generic": (root / "generic", "generic-csv"),
        "second-layout": (CASES / "second-layout" / "input", str(CASES / "second-layout" / "mapping.yaml")),
        "worked-example": (CASES / "worked-example" / "input", str(CASES / "worked-example" / "mapping.yaml")),
        "new-provider": (root / "new-provider", str(CASES / "new-provider" / "mapping.yaml")),
    }


def _draft_file(layouts: dict[str, tuple[Path, str]], layout: str, tmp_path: Path) -> tuple[Path, str]:
    text = draft_profile(layouts[layout][0]).text
    path = tmp_path / f"{layout}.yaml"
    path.write_text(text, encoding="utf-8")
    return path, text


@pytest.mark.parametrize("layout", LAYOUTS)
def test_the_draft_is_pinned(layouts: dict[str, tuple[Path, str]], layout: str, tmp_path: Path) -> None:
    _, text = _draft_file(layouts, layout, tmp_path)
    golden = GOLDEN / f"{layout}.yaml"
    if os.environ.get("HANDOVER_REGEN_GOLDEN"):
        golden.parent.mkdir(parents=True, exist_ok=True)
        golden.write_text(text, encoding="utf-8")
    assert text == golden.read_text(encoding="utf-8")


def _canonical(input_dir: Path, profile: str | Path, work: Path) -> tuple[dict[str, pl.DataFrame], pl.DataFrame]:
    ingested = ingest(input_dir, load_profile(profile), work)
    tables = {t: ingested.tables[t].collect().sort("source_file", "source_row") for t in canonical.TABLE_ORDER}
    quarantine = ingested.quarantine.select("source_file", "source_row", "table", "reason_code", "field")
    return tables, quarantine.sort("source_file", "source_row", "reason_code")


@pytest.mark.parametrize("layout", LAYOUTS)
def test_the_draft_reads_the_extract_as_the_hand_written_profile_does(
        layouts: dict[str, tuple[Path, str]], layout: str, tmp_path: Path) -> None:
    input_dir, hand = layouts[layout]
    drafted, _ = _draft_file(layouts, layout, tmp_path)
    by_hand, q_hand = _canonical(input_dir, hand, tmp_path / "hand")
    by_draft, q_draft = _canonical(input_dir, drafted, tmp_path / "draft")
    for table in canonical.TABLE_ORDER:
        assert by_draft[table].height > 0
        assert by_draft[table].equals(by_hand[table]), table
    assert q_draft.equals(q_hand)


def _pii_values(input_dir: Path, hand: str, work: Path) -> set[str]:
    """Every value of a source column the hand-written profile maps to a patient-identifying field."""
    profile = load_profile(hand)
    values: set[str] = set()
    for f in discover(input_dir, profile):
        columns = {c for spec in f.spec().fields if canonical.TABLES[f.table].field(spec.name).pii
                   for c in spec.source_columns}
        frame = read_file(f, work).frame.collect()  # its re-encoded copies go here, never into tests/cases
        for column in columns:
            for value in frame[column].drop_nulls().to_list():
                values |= {value.strip(), *(part.strip() for part in value.split(","))}
    return {v for v in values if len(v) >= 5}


@pytest.mark.parametrize("layout", LAYOUTS)
def test_the_draft_quotes_no_value_of_a_patient_identifying_field(
        layouts: dict[str, tuple[Path, str]], layout: str, tmp_path: Path) -> None:
    input_dir, hand = layouts[layout]
    _, text = _draft_file(layouts, layout, tmp_path)
    pii = _pii_values(input_dir, hand, tmp_path / "work")
    assert len(pii) > 20
    assert sorted(v for v in pii if v in text) == []


def test_the_cli_writes_a_draft_that_check_passes_and_never_overwrites_one(
        layouts: dict[str, tuple[Path, str]], tmp_path: Path) -> None:
    input_dir = layouts["second-layout"][0]
    out = tmp_path / "acme.yaml"
    runner = CliRunner()
    result = runner.invoke(cli.main, ["profile", "draft", "--input", str(input_dir), "--out", str(out)])
    assert result.exit_code == 0, result.stderr
    assert "patients: PATIENT_EXTRACT.txt" in result.stderr and "marked CHECK" in result.stderr
    checked = runner.invoke(cli.main, ["check", "--input", str(input_dir), "--mapping", str(out), "--json"])
    assert checked.exit_code == 0 and '"row_problems": []' in checked.stdout
    out.write_text("# edited by a person\n", encoding="utf-8")
    again = runner.invoke(cli.main, ["profile", "draft", "--input", str(input_dir), "--out", str(out)])
    assert again.exit_code == 2 and "exists" in again.stderr
    assert out.read_text(encoding="utf-8") == "# edited by a person\n"
    forced = runner.invoke(cli.main, ["profile", "draft", "--input", str(input_dir), "--out", str(out), "--force"])
    assert forced.exit_code == 0 and out.read_text(encoding="utf-8").startswith("# Drafted by")
    stdout = runner.invoke(cli.main, ["profile", "draft", "--input", str(input_dir), "--quiet"])
    assert stdout.exit_code == 0 and stdout.stdout == out.read_text(encoding="utf-8")


@pytest.mark.parametrize("layout", LAYOUTS)
def test_a_batch_run_with_the_draft_holds_and_decides_as_the_hand_written_profile(
        layouts: dict[str, tuple[Path, str]], layout: str, tmp_path: Path) -> None:
    """"Runs without edits": the whole batch (identity, rules, dispositions, FHIR, the
    invariant) on the draft holds, and decides every row as the run on the hand-written
    profile does."""
    input_dir, hand = layouts[layout]
    drafted, _ = _draft_file(layouts, layout, tmp_path)
    runs = {}
    for name, profile in (("hand", hand), ("draft", drafted)):
        result = run_batch(RunConfig.load(input_dir, profile, date(2022, 10, 1), tmp_path / name))
        assert result.ok, (name, result)
        runs[name] = tmp_path / name
    for output in ("lineage.parquet", "cohorts.parquet", "patients.parquet", "exceptions.parquet"):
        # FHIR ids are namespaced by the profile's source_system, which the draft names after the folder
        a, b = (pl.read_parquet(runs[n] / output).drop("fhir_id", strict=False) for n in ("hand", "draft"))
        assert a.height > 0 and a.equals(b), output


def test_the_draft_json_names_the_tables_the_checks_and_the_files_not_drafted(tmp_path: Path) -> None:
    input_dir = tmp_path / "extract"
    shutil.copytree(CASES / "worked-example" / "input", input_dir)
    (input_dir / "notes.csv").write_text("Colour,Weight\nred,3\nblue,4\n", encoding="utf-8")
    result = CliRunner().invoke(cli.main, ["profile", "draft", "--input", str(input_dir), "--json"])
    assert result.exit_code == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["tables"] == {t: f"{t}.csv" for t in ("patients", "referrals", "contacts", "codes")}
    assert report["not_drafted"] == ["notes.csv"] and report["problems"] == []
    assert report["checks"] == report["profile"].count("CHECK") > 0
    assert "CHECK: not drafted: notes.csv" in report["profile"]
    out = tmp_path / "draft.yaml"
    written = CliRunner().invoke(cli.main, ["profile", "draft", "--input", str(input_dir), "--out", str(out), "--json"])
    assert "profile" not in json.loads(written.stdout) and out.read_text(encoding="utf-8") == report["profile"]


def test_a_folder_name_with_spaces_drafts_a_source_system_fhir_ids_can_carry(tmp_path: Path) -> None:
    """The draft names the source system after the folder, made safe for FHIR ids, and asks
    a person to set it (it namespaces every id, so it must not change between batches)."""
    folder = tmp_path / "Acme PAS export (Nov)"
    shutil.copytree(CASES / "worked-example" / "input", folder)
    text = draft_profile(folder).text
    path = tmp_path / "draft.yaml"
    path.write_text(text, encoding="utf-8")
    assert load_profile(path).source_system == "acme-pas-export-nov"
    assert "CHECK: source_system names the outgoing system" in text
