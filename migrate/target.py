"""``handover reconcile-target``: what the receiving FHIR server holds against what the run sent.

    result = reconcile_target(run_dir, export_dir=Path("export/"))          # a Bulk Data export
    result = reconcile_target(run_dir, fhir_base="https://…/fhir", token=…)  # read by id

The target side is either a FHIR Bulk Data export (a folder of NDJSON, one or more files
per type, as ``$export`` writes them) or, for a small batch, the server itself: every
resource the run sent is read by id (batch Bundles of GETs), and resources carrying the
run's local identifier systems are searched for (``identifier=<system>|``) to find extras.

Both sides go through the same inverse mapping as the round trip
(``migrate.fhir.inverse``), and every field it reads is compared, so "changed" means a
canonical field the receiving system would show differently; server-assigned ``meta``
(versionId, lastUpdated, …) is never read. Types the inverse does not read (Provenance)
are compared as whole resources without ``meta``. Per patient (by local id) the report
lists resources **missing** at the target, **changed** (type/id and the fields), and
**extra** (at the target with the run's identifiers, or about the run's patients, but
not sent by this run — an earlier batch's resources show here too).

Writes ``reports/target.json`` and re-renders the reports (HTML section ``target``);
``holds`` is false (exit 1) when anything is missing or changed.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import polars as pl

from migrate.errors import ConfigError, InputError
from migrate.fhir.inverse import READ_TYPES, Systems, ndjson_files, read_back
from migrate.fhir.ndjson import check_readable, read_text
from migrate.outputs import write_json
from migrate.progress import NULL_PROGRESS, Progress
from migrate.reports.fidelity import TARGET
from migrate.reports.rundata import RunFolder

BATCH = 100  # GETs per batch Bundle when reading by id
IGNORED = ("meta", "text")


def _ids(files: list[Path]) -> pl.DataFrame:
    """resourceType, id of every line of ``files``."""
    if not files:
        return pl.DataFrame(schema={"fhir_type": pl.String, "fhir_id": pl.String})
    lines = pl.concat([pl.scan_csv(f, has_header=False, new_columns=["json"], schema={"json": pl.String()},
                                   separator="\x01", quote_char=None) for f in files])
    decoded = lines.filter(pl.col("json").str.strip_chars() != "").select(
        pl.col("json").str.json_decode(pl.Struct({"resourceType": pl.String, "id": pl.String})).struct.unnest())
    # memory: whole: every (type, id) of one side's files (``handover reconcile-target``): sent and held are joined in
    # full
    return decoded.select(pl.col("resourceType").alias("fhir_type"), pl.col("id").alias("fhir_id")).collect()


def _flat(frame: pl.LazyFrame) -> pl.LazyFrame:
    """List columns as text, so two sides compare with one equality."""
    schema = frame.collect_schema()
    return frame.with_columns(pl.col(c).list.join("\x1f") for c, t in schema.items() if isinstance(t, pl.List))


def _whole(files: list[Path]) -> dict[str, str]:
    """id -> the resource as canonical JSON without ``meta``/``text`` (for types the inverse skips)."""
    out = {}
    for path in files:
        for line in read_text(path).splitlines():
            if line.strip():
                resource = json.loads(line)
                out[str(resource.get("id"))] = json.dumps({k: v for k, v in resource.items() if k not in IGNORED},
                                                          sort_keys=True)
    return out


Sides = dict[str, pl.LazyFrame]  # resource type -> the inverse mapping's fields, read once


def _read(files: dict[str, list[Path]], systems: Systems) -> Sides:
    # memory: whole: one side's resources through the inverse mapping, read once for the comparisons below (``handover
    # reconcile-target``, after a run)
    return {t: f.collect(engine="streaming").lazy() for t, f in read_back(files, systems).items()}


def _compare(mine: Sides, target: Sides, ours: dict[str, list[Path]], theirs: dict[str, list[Path]]) -> pl.DataFrame:
    """fhir_type, fhir_id, changed (list of fields) for every resource present on both sides."""
    parts = []
    for t in READ_TYPES:
        a, b = _flat(mine[t]), _flat(target[t])
        fields = [c for c in a.collect_schema().names() if c not in ("fhir_type", "fhir_id")]
        joined = a.join(b, on="fhir_id", how="inner", suffix="_t")
        differs = [pl.when(~pl.col(f).eq_missing(pl.col(f"{f}_t"))).then(pl.lit(f)) for f in fields]
        # memory: one type's resources present on both sides, with the fields that differ
        parts.append(joined.select(pl.lit(t).alias("fhir_type"), "fhir_id",
                                   pl.concat_list(differs).list.drop_nulls().alias("changed")).collect())
    for t in sorted(set(ours) - set(READ_TYPES)):
        mine_whole, theirs_whole = _whole(ours[t]), _whole(theirs.get(t, []))
        rows = [(t, i, [] if mine_whole[i] == theirs_whole[i] else ["(resource content)"])
                for i in sorted(set(mine_whole) & set(theirs_whole))]
        parts.append(pl.DataFrame(rows, schema={"fhir_type": pl.String, "fhir_id": pl.String,
                                                "changed": pl.List(pl.String)}, orient="row"))
    return pl.concat(parts)


def _patients(mine: Sides, target: Sides) -> pl.DataFrame:
    """fhir_type, fhir_id, patient_fhir_id for both sides' resources (ours first)."""
    frames = []
    for back in (mine, target):
        for t in READ_TYPES:
            names = back[t].collect_schema().names()
            who = pl.col("fhir_id") if t == "Patient" else (pl.col("patient_id") if "patient_id" in names
                                                            else pl.lit(None, dtype=pl.String))
            # memory: one type's (type, id, patient id) of one side (``_read``'s frames, narrowed)
            frames.append(back[t].select("fhir_type", "fhir_id", who.alias("patient_fhir_id")).collect())
    return pl.concat(frames).unique(["fhir_type", "fhir_id"], keep="first", maintain_order=True)


def _our_identifier(back: Sides) -> pl.DataFrame:
    """fhir_type, fhir_id of target resources carrying one of the run's local identifier systems."""
    found = []
    for t, column in (("Patient", "source_patient_id"), ("ServiceRequest", "source_referral_id"),
                      ("Encounter", "contact_key"), ("Appointment", "contact_key")):
        # memory: the target's resources carrying our identifiers
        found.append(back[t].filter(pl.col(column).is_not_null()).select("fhir_type", "fhir_id").collect())
    return pl.concat(found)


def reconcile_files(run: RunFolder, theirs: dict[str, list[Path]], source: str) -> dict[str, Any]:
    """The comparison itself, given the target's NDJSON files per type."""
    systems = Systems.for_run(run.manifest)
    ours = ndjson_files(run.path / "fhir" / "ndjson")
    if not ours:
        raise InputError(f"{run.path}: no FHIR output (fhir/ndjson) to compare with the target")
    # A damaged .ndjson.gz named before the lazy scans below read it (they could not name it).
    check_readable([p for files in (ours, theirs) for ps in files.values() for p in ps])
    sent = _ids([p for ps in ours.values() for p in ps]).with_columns(pl.lit(True).alias("sent"))
    held = _ids([p for ps in theirs.values() for p in ps]).unique().with_columns(pl.lit(True).alias("held"))
    both = sent.join(held, on=["fhir_type", "fhir_id"], how="full", coalesce=True).with_columns(
        pl.col("sent").fill_null(False), pl.col("held").fill_null(False))
    mine, target = _read(ours, systems), _read(theirs, systems)
    changed = _compare(mine, target, ours, theirs).filter(pl.col("changed").list.len() > 0)
    who = _patients(mine, target)
    # memory: our Patients' two ids
    local = mine["Patient"].select(pl.col("fhir_id").alias("patient_fhir_id"), "source_patient_id").collect()
    ours_patients = set(local["patient_fhir_id"].to_list())
    flagged = _our_identifier(target).with_columns(pl.lit(True).alias("ours"))
    rows = (both.join(changed, on=["fhir_type", "fhir_id"], how="left")
            .join(who, on=["fhir_type", "fhir_id"], how="left")
            .join(flagged, on=["fhir_type", "fhir_id"], how="left")
            .join(local, on="patient_fhir_id", how="left")
            .with_columns(
                (pl.col("sent") & ~pl.col("held")).alias("missing"),
                (~pl.col("sent") & pl.col("held") & (pl.col("ours").fill_null(False)
                                                      | pl.col("patient_fhir_id").is_in(list(ours_patients))))
                .alias("extra"),
                pl.col("changed").fill_null([]))
            .filter(pl.col("missing") | pl.col("extra") | (pl.col("changed").list.len() > 0))
            .sort("source_patient_id", "fhir_type", "fhir_id", nulls_last=True))
    by_type = {}
    for t in sorted(set(sent["fhir_type"].to_list()) | set(held["fhir_type"].to_list())):
        r = rows.filter(pl.col("fhir_type") == t)
        by_type[t] = {"sent": sent.filter(pl.col("fhir_type") == t).height,
                      "found": both.filter((pl.col("fhir_type") == t) & pl.col("sent") & pl.col("held")).height,
                      "missing": int(r["missing"].sum()), "extra": int(r["extra"].sum()),
                      "changed": r.filter(pl.col("changed").list.len() > 0).height}
    totals = {k: sum(v[k] for v in by_type.values()) for k in ("sent", "found", "missing", "changed", "extra")}
    patients = []
    for (local_id,), group in rows.group_by("source_patient_id", maintain_order=True):
        patients.append({
            "patient_ids": [local_id] if local_id is not None else [],
            "missing": [{"type": t, "id": i} for t, i in group.filter("missing").select("fhir_type", "fhir_id")
                        .iter_rows()],
            "changed": [{"type": t, "id": i, "fields": list(f)} for t, i, f in
                        group.filter(pl.col("changed").list.len() > 0).select("fhir_type", "fhir_id", "changed")
                        .iter_rows()],
            "extra": [{"type": t, "id": i} for t, i in group.filter("extra").select("fhir_type", "fhir_id")
                      .iter_rows()],
        })
    return {"source": source, "holds": totals["missing"] == 0 and totals["changed"] == 0, "totals": totals,
            "by_type": by_type, "ignored": "server-assigned meta (versionId, lastUpdated, …) and narrative text",
            "patients": patients}


# --- reading the target ---------------------------------------------------------------------
def _client(fhir_base: str, token: str | None) -> httpx.Client:
    headers = {"Accept": "application/fhir+json", "Content-Type": "application/fhir+json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    return httpx.Client(base_url=fhir_base.rstrip("/"), headers=headers, timeout=120)


def _chunks(items: list[tuple[str, str]], size: int) -> Iterator[list[tuple[str, str]]]:
    for i in range(0, len(items), size):
        yield items[i:i + size]


def read_by_id(run: RunFolder, fhir_base: str, token: str | None, out: Path, progress: Progress) -> None:
    """Every resource the run sent, read back from the server by id (batch Bundles of GETs),
    plus the resources carrying the run's local identifiers, into ``out/<Type>.ndjson``."""
    systems = Systems.for_run(run.manifest)
    ours = [p for ps in ndjson_files(run.path / "fhir" / "ndjson").values() for p in ps]
    check_readable(ours)
    wanted = [(t, i) for t, i in _ids(ours).iter_rows()]
    found: dict[str, dict[str, str]] = {}
    progress.start("target", total=len(wanted))
    with _client(fhir_base, token) as client:
        for chunk in _chunks(wanted, BATCH):
            bundle = {"resourceType": "Bundle", "type": "batch",
                      "entry": [{"request": {"method": "GET", "url": f"{t}/{i}"}} for t, i in chunk]}
            response = client.post("", json=bundle)
            if response.status_code in (401, 403):
                raise ConfigError(f"{fhir_base}: credentials refused (HTTP {response.status_code})")
            response.raise_for_status()
            for entry in response.json().get("entry") or []:
                resource = entry.get("resource")
                if resource and str((entry.get("response") or {}).get("status", "200")).startswith("2"):
                    found.setdefault(resource["resourceType"], {})[resource["id"]] = json.dumps(resource)
            progress.advance("target", len(chunk))
        for t, kind in (("Patient", "patient"), ("ServiceRequest", "referral"), ("Encounter", "contact"),
                        ("Appointment", "contact")):
            url: str | None = f"{t}?identifier={systems.local_id(kind)}|&_count=1000"
            while url:
                page = client.get(url).raise_for_status().json()
                for entry in page.get("entry") or []:
                    resource = entry["resource"]
                    found.setdefault(t, {}).setdefault(resource["id"], json.dumps(resource))
                url = next((link["url"] for link in page.get("link") or [] if link.get("relation") == "next"), None)
    progress.finish("target")
    for t, resources in found.items():
        (out / f"{t}.ndjson").write_text("".join(f"{r}\n" for _, r in sorted(resources.items())), encoding="utf-8")


def reconcile_target(run_dir: Path, fhir_base: str | None = None, export_dir: Path | None = None,
                     token: str | None = None, progress: Progress = NULL_PROGRESS,
                     key: bytes | None = None) -> dict[str, Any]:
    """Compare the target with the run (module docstring); write ``reports/target.json``,
    re-render the reports and return the result. A sealed run needs its ``key``
    (ConfigError before anything is read or written)."""
    from migrate.reports import write_reports
    from migrate.reports.chain import check_sealable

    if (fhir_base is None) == (export_dir is None):
        raise ConfigError("give exactly one of --fhir-base URL or --export DIR")
    run = RunFolder.open(run_dir)
    check_sealable(run_dir, key)
    if export_dir is not None:
        if not export_dir.is_dir() or not ndjson_files(export_dir):
            raise InputError(f"--export {export_dir}: no NDJSON files (<Type>.ndjson or <Type>.ndjson.gz) in it")
        result = reconcile_files(run, ndjson_files(export_dir), f"Bulk Data export {export_dir.name}")
    else:
        assert fhir_base is not None
        with tempfile.TemporaryDirectory(prefix="handover-target-") as tmp:
            read_by_id(run, fhir_base, token, Path(tmp), progress)
            result = reconcile_files(run, ndjson_files(Path(tmp)), f"{fhir_base} (read by id)")
    from migrate.reports.chain import seal_outputs

    write_json(result, run_dir / TARGET)
    write_reports(run_dir, key=key)  # the HTML gains the target section
    seal_outputs(run_dir, [run_dir / TARGET], key)
    return result
