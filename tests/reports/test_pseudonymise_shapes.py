"""The pseudonymised pack tokenises identifiers of any shape, wherever they appear (issue #12,
item 8): source patient and referral ids and the target system's ids are generated with
spaces, punctuation and non-ASCII letters around a distinctive core, the worked example is
run with them (duplicates, a target index, flags whose evidence names them), and no core
may survive anywhere in the pack — JSON, HTML, CSV, or the XML inside the XLSX."""

from __future__ import annotations

import csv
import io
import os
import shutil
import zipfile
from datetime import date
from pathlib import Path

import polars as pl
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from migrate.pipeline import RunConfig, run_batch
from migrate.reports import pseudonymise

WORKED = Path(__file__).resolve().parents[1] / "cases" / "worked-example"
KEY = b"a test key that is long enough"
# Letters, digits, separators a PAS might put in an id, markup and CSV specials, accents, CJK.
ODD = "abXY09 -_/.:#&'()[]+;,\"<>éÑøß漢"
EXAMPLES = int(os.environ.get("HANDOVER_FUZZ_EXAMPLES", "6"))


def _shaped(core: str) -> st.SearchStrategy[str]:
    return st.tuples(st.text(ODD, max_size=4), st.text(ODD, max_size=4)).map(
        lambda parts: f"{parts[0]}{core}{parts[1]}".strip())


def _rewrite(path: Path, columns: dict[str, dict[str, str]]) -> None:
    with path.open(encoding="utf-8", newline="") as fh:
        rows = list(csv.DictReader(fh))
    for row in rows:
        for column, mapping in columns.items():
            row[column] = mapping.get(row[column], row[column])
    with path.open("w", encoding="utf-8", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]), lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)


def _pack_text(folder: Path) -> str:
    parts = []
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as zf:
                parts += [zf.read(n).decode("utf-8", "replace") for n in zf.namelist()]
        else:
            parts.append(path.read_text(encoding="utf-8", errors="replace"))
    return "\n".join(parts)


@settings(max_examples=EXAMPLES, deadline=None, derandomize="HANDOVER_FUZZ_EXAMPLES" not in os.environ,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(st.data())
def test_identifiers_of_any_shape_never_reach_the_pack(tmp_path: Path, data: st.DataObject) -> None:
    patients = pl.read_csv(WORKED / "input" / "patients.csv", infer_schema=False)
    referral_ids = pl.read_csv(WORKED / "input" / "referrals.csv", infer_schema=False)["referral_id"].to_list()
    pids = {p: data.draw(_shaped(f"zp{i:02d}"), label=p) for i, p in enumerate(patients["patient_id"])}
    rids = {r: data.draw(_shaped(f"zr{i:02d}"), label=r) for i, r in enumerate(referral_ids)}
    targets = [data.draw(_shaped(f"zt{i:02d}"), label=f"target {i}") for i in range(4)]
    if len(set(pids.values())) < len(pids) or len(set(rids.values())) < len(rids):
        return  # two ids stripped to the same text: not an extract
    extract = tmp_path / "in"
    shutil.rmtree(extract, ignore_errors=True)
    shutil.copytree(WORKED / "input", extract)
    _rewrite(extract / "patients.csv", {"patient_id": pids})
    _rewrite(extract / "referrals.csv", {"patient_id": pids, "referral_id": rids})
    _rewrite(extract / "contacts.csv", {"patient_id": pids, "referral_id": rids})
    _rewrite(extract / "codes.csv", {"patient_id": pids})
    # The new provider already holds four of the patients, under its own (odd) ids.
    held = patients.filter(pl.col("nhs_number").str.len_chars() == 10).head(4)
    index = io.StringIO()
    writer = csv.writer(index, lineterminator="\n")
    writer.writerow(["local_id", "nhs_number", "family_name", "given_names", "birth_date", "sex"])
    for target, row in zip(targets, held.iter_rows(named=True), strict=False):
        writer.writerow([target, row["nhs_number"], row["family_name"], row["given_name"], row["birth_date"], "F"])
    (tmp_path / "target.csv").write_text(index.getvalue(), encoding="utf-8")
    run, pack = tmp_path / "run", tmp_path / "pack"
    shutil.rmtree(run, ignore_errors=True)
    shutil.rmtree(pack, ignore_errors=True)
    run_batch(RunConfig.load(extract, WORKED / "mapping.yaml", date(2022, 10, 1), run,
                             target_index=tmp_path / "target.csv"))
    evidence = " ".join(pl.read_parquet(run / "exceptions.parquet")["evidence"].drop_nulls().to_list())
    assert "zt0" in evidence and "zp" in evidence  # the flags do name the odd ids: the test has teeth
    pseudonymise(run, KEY, pack)
    text = _pack_text(pack)
    cores = [f"zp{i:02d}" for i in range(len(pids))] + [f"zr{i:02d}" for i in range(len(rids))] + \
        [f"zt{i:02d}" for i in range(len(targets))]
    leaked = [c for c in cores if c in text]
    assert not leaked, f"identifiers left in the pack: {leaked}"
