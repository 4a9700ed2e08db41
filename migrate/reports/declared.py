"""Declared vs found: the outgoing provider's transfer lists beside what the extract holds.

The declaration is a small YAML file (format in docs/reports.md): a count per transfer
list, optionally the patients' ids per list. Without one, the extract's own
``transfer_list`` labels serve as the declaration, which still shows list entries against
distinct patients (the seed's 18,945 entries for 18,942 patients) and who is on two lists.

Every difference is explained by name. A declared id missing from a list is absent
because its rows were quarantined, it was merged into a duplicate, it sits on another
list, it has no list label, or it is not in the extract at all; a found id not declared
on a list was declared on another or on none. Figures are distinct patients per list,
after merges (a merged record counts as its survivor).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl

from migrate import canonical
from migrate.errors import ConfigError
from migrate.yamltext import load_yaml, whole_number
from migrate.reports.rundata import RunFolder

FORMAT_VERSION = 1
ID_TYPES = ("source_patient_id", "nhs_number")
_TOP_KEYS = {"format_version", "source", "id_type", "patients", "lists"}
_LIST_KEYS = {"count", "ids", "ids_file"}
LABELS_SOURCE = "the extract's transfer_list labels (no declared file given)"
# Separators of a quarantined record's raw text, whether CSV, JSON or HL7.
_TOKEN = r"[^\s,;|\"'{}\[\]:^~&\\]+"


@dataclass(frozen=True)
class DeclaredList:
    """One transfer list as declared: its patient count and, when given, their ids."""

    name: str
    count: int
    ids: tuple[str, ...] | None = None


@dataclass(frozen=True)
class Declaration:
    """What the outgoing provider says it hands over."""

    source: str
    id_type: str
    lists: tuple[DeclaredList, ...]
    patients: int | None = None
    from_labels: bool = False

    def asdict(self) -> dict[str, Any]:
        """Plain data, as kept in the run folder (``config/declared.json``)."""
        return {"format_version": FORMAT_VERSION, "source": self.source, "id_type": self.id_type,
                "patients": self.patients, "from_labels": self.from_labels,
                "lists": {d.name: {"count": d.count, "ids": list(d.ids) if d.ids is not None else None}
                          for d in self.lists}}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Declaration:
        """The inverse of ``asdict`` (lists back in canonical order: JSON keys are sorted)."""
        lists = tuple(DeclaredList(name, int(d["count"]), tuple(d["ids"]) if d.get("ids") is not None else None)
                      for name, d in sorted(data["lists"].items(), key=lambda item: _list_rank(item[0])))
        return cls(str(data["source"]), str(data["id_type"]), lists, data.get("patients"),
                   bool(data.get("from_labels")))


def _list_rank(name: str) -> int:
    order = canonical.TRANSFER_LIST
    return order.index(name) if name in order else len(order)


def _count(value: Any) -> bool:
    found = whole_number(value)  # the file is read as text (migrate.yamltext)
    return found is not None and found >= 0


def load_declared(path: Path) -> Declaration:
    """Read and validate a declared YAML file; ConfigError listing every problem at once."""
    doc: Any = load_yaml(path, "declared file")
    if not isinstance(doc, dict):
        raise ConfigError(f"{path}: expected a mapping with 'lists' (see docs/reports.md)")
    problems = [f"{path}: unknown key '{k}' (use {', '.join(sorted(_TOP_KEYS))})" for k in doc if k not in _TOP_KEYS]
    if whole_number(doc.get("format_version", FORMAT_VERSION)) != FORMAT_VERSION:
        problems.append(f"{path}: format_version {doc.get('format_version')} is not supported (use 1)")
    id_type = doc.get("id_type", "source_patient_id")
    if id_type not in ID_TYPES:
        problems.append(f"{path}: id_type '{id_type}' is not one of {', '.join(ID_TYPES)}")
    if "patients" in doc and not _count(doc["patients"]):
        problems.append(f"{path}: patients must be a whole number ≥ 0")
    lists: list[DeclaredList] = []
    raw_lists = doc.get("lists")
    if not isinstance(raw_lists, dict) or not raw_lists:
        problems.append(f"{path}: lists must map list names ({', '.join(canonical.TRANSFER_LIST)}) to counts")
        raw_lists = {}
    for name, spec in raw_lists.items():
        where = f"{path}: lists.{name}"
        if name not in canonical.TRANSFER_LIST:
            problems.append(f"{where}: unknown list (use {', '.join(canonical.TRANSFER_LIST)})")
        spec = {"count": spec} if not isinstance(spec, dict) else spec
        problems += [f"{where}: unknown key '{k}' (use {', '.join(sorted(_LIST_KEYS))})" for k in spec
                     if k not in _LIST_KEYS]
        if not _count(spec.get("count")):
            problems.append(f"{where}.count: give the number of patients declared (a whole number ≥ 0)")
        ids: list[str] | None = None
        if "ids" in spec and "ids_file" in spec:
            problems.append(f"{where}: give ids or ids_file, not both")
        elif "ids" in spec:
            if not isinstance(spec["ids"], list) or any(isinstance(i, (dict, list)) or i is None for i in spec["ids"]):
                problems.append(f"{where}.ids: expected a list of ids")
            else:
                ids = [str(i).strip() for i in spec["ids"]]
        elif "ids_file" in spec:
            ids_path = path.parent / str(spec["ids_file"])
            try:
                lines = ids_path.read_text(encoding="utf-8-sig").splitlines()
                ids = [s for s in (line.strip() for line in lines) if s and not s.startswith("#")]
            except (OSError, UnicodeDecodeError):
                problems.append(f"{where}.ids_file: cannot read {ids_path}")
        if _count(spec.get("count")):
            lists.append(DeclaredList(str(name), whole_number(spec["count"]) or 0, tuple(ids) if ids is not None else None))
    if problems:
        raise ConfigError(f"{path}: the declared file has {len(problems)} problem(s)", problems)
    return Declaration(str(doc.get("source") or path.name), str(id_type),
                       tuple(sorted(lists, key=lambda d: _list_rank(d.name))), whole_number(doc.get("patients")))


def _survivors(run: RunFolder) -> pl.LazyFrame:
    """patient_key -> survivor_key: a merged record counts as the patient it was merged into.

    From ``patients.parquet``'s ``survivor_key`` when the pipeline records it; else from the
    merged dispositions and the exact-NHS-number pairs of ``duplicates.parquet``.
    """
    keys = run.canonical("patients").select("patient_key", pl.col("patient_key").alias("survivor_key"))
    if "survivor_key" in run.scan("patients.parquet").collect_schema():
        recorded = run.scan("patients.parquet").select("patient_key", pl.col("survivor_key").alias("s"))
        return keys.join(recorded, on="patient_key", how="left").select(
            "patient_key", pl.coalesce("s", "survivor_key").alias("survivor_key"))
    if not run.has("duplicates.parquet"):
        return keys
    merged = run.scan("patients.parquet").filter(pl.col("disposition").cast(pl.String) == "merged").select(
        "patient_key")
    pairs = run.scan("duplicates.parquet").filter(pl.col("match_type") == "exact_nhs_number")
    both = pl.concat([pairs.select(pl.col("patient_key_a").alias("patient_key"), pl.col("patient_key_b").alias("s")),
                      pairs.select(pl.col("patient_key_b").alias("patient_key"), pl.col("patient_key_a").alias("s"))])
    survivor = both.join(merged, on="patient_key", how="semi").join(
        merged.rename({"patient_key": "s"}), on="s", how="anti").group_by("patient_key").agg(pl.col("s").min())
    return keys.join(survivor, on="patient_key", how="left").select(
        "patient_key", pl.coalesce("s", "survivor_key").alias("survivor_key"))


def labels_declaration(run: RunFolder) -> Declaration:
    """The extract's own list labels as a declaration (counts only; ids are what was found)."""
    found = _found(run, "source_patient_id")
    counts = dict(found.group_by("list").agg(pl.col("survivor_key").n_unique()).iter_rows())
    lists = tuple(DeclaredList(n, int(counts.get(n, 0))) for n in canonical.TRANSFER_LIST)
    return Declaration(LABELS_SOURCE, "source_patient_id", lists, None, from_labels=True)


def _found(run: RunFolder, id_type: str) -> pl.DataFrame:
    """Distinct (survivor_key, list, id) of every referral with a list label in the extract."""
    ids = run.canonical("patients").select("patient_key", pl.col(id_type).alias("id"))
    return (
        run.scan("cohorts.parquet").filter(pl.col("transfer_list").is_not_null())
        .select("patient_key", pl.col("transfer_list").cast(pl.String).alias("list"))
        .join(_survivors(run), on="patient_key").join(ids.rename({"patient_key": "survivor_key"}), on="survivor_key",
                                                      how="left")
        # memory: grows with the extract: the distinct (survivor, list, id) of every referral on a transfer list (at
        # most one per referral); the declared lists are compared with it whole
        .select("survivor_key", "list", "id").unique().sort("list", "survivor_key").collect(engine="streaming")
    )


def _quarantined_at(run: RunFolder, ids: list[str], id_type: str) -> dict[str, str]:
    """Id -> "file row N (reason)" of the first quarantined patient/referral row naming it."""
    if not ids:
        return {}
    raw = pl.col("raw").fill_null("")
    if id_type == "nhs_number":  # numbers are often written with spaces or dashes
        raw = raw.str.replace_all(r"[ -]", "")
    # memory: the quarantined patient/referral rows naming a declared id, one per id
    rows = (
        run.scan("quarantine.parquet").filter(pl.col("table").is_in(["patients", "referrals"]))
        .select("source_file", "source_row", "reason_code", raw.str.extract_all(_TOKEN).alias("token"))
        .explode("token").join(pl.LazyFrame({"token": ids}), on="token", how="semi")
        .sort("token", "source_file", "source_row").group_by("token", maintain_order=True).first().collect()
    )
    return {t: f"{f} row {r} ({why})" for f, r, why, t in rows.select(
        "source_file", "source_row", "reason_code", "token").iter_rows()}


def _declared_ids(run: RunFolder, declaration: Declaration) -> pl.DataFrame:
    """Every declared (list, id) with the survivor it resolves to (null when not in the extract)."""
    rows = [(d.name, i) for d in declaration.lists if d.ids is not None for i in dict.fromkeys(d.ids)]
    declared = pl.DataFrame(rows, schema={"list": pl.String, "id": pl.String}, orient="row")
    lookup = (
        run.canonical("patients").select("patient_key", pl.col(declaration.id_type).alias("id"))
        .filter(pl.col("id").is_not_null()).join(declared.lazy().select("id").unique(), on="id", how="semi")
        .join(_survivors(run), on="patient_key")
        # One NHS number may sit on several records: prefer the record that survived.
        .sort(pl.col("patient_key") != pl.col("survivor_key"), "patient_key")
        # memory: the patients carrying a declared id only (the semi join), one row per id
        .group_by("id", maintain_order=True).first().collect(engine="streaming")
    )
    return declared.join(lookup, on="id", how="left")


def _explain_list(name: str, declared: pl.DataFrame, per_patient: pl.DataFrame, quarantined: dict[str, str],
                  declared_on: dict[str, list[str]]) -> tuple[list[Any], list[Any]]:
    """(absent, extra) entries of list ``name``, each with its id, reason and detail.

    ``per_patient`` has one row per found survivor: ``survivor_key``, ``id`` and ``lists``.
    Only the declared ids of the list and the found patients missing from them are visited
    in Python; the comparison itself is joins.
    """
    mine = declared.filter(pl.col("list") == name).join(
        per_patient.select("survivor_key", pl.col("lists").alias("found_lists")), on="survivor_key", how="left"
    ).sort(pl.col("patient_key") != pl.col("survivor_key"), "id", nulls_last=True)
    absent: list[dict[str, Any]] = []
    claimed: dict[str, str] = {}
    for ident, survivor, lists in mine.select("id", "survivor_key", "found_lists").iter_rows():
        if survivor is None:
            reason, detail = (("quarantined", quarantined[ident]) if ident in quarantined
                              else ("not_in_extract", "no patient with this id in the extract"))
        elif survivor in claimed:
            reason, detail = "merged", f"same patient as {claimed[survivor]} (merged)"
        elif lists is not None and name in lists:
            claimed[survivor] = ident
            continue
        elif lists is not None:
            reason, detail = "on_other_list", "labelled " + ", ".join(lists) + " in the extract"
        else:
            reason, detail = "unlabelled", "in the extract, but no referral carries a list label"
        absent.append({"id": ident, "reason": reason, "detail": detail})
    unclaimed = (per_patient.filter(pl.col("lists").list.contains(name))
                 .filter(~pl.col("survivor_key").is_in(list(claimed))).sort("id"))
    extra: list[dict[str, Any]] = []
    for ident in unclaimed["id"].to_list():
        others = [n for n in declared_on.get(ident, []) if n != name]
        extra.append({"id": ident, "reason": "declared_on_other_list" if others else "not_declared",
                      "detail": f"declared on {', '.join(others)}" if others else "not on any declared list"})
    return absent, extra


def declared_vs_found(run: RunFolder, declaration: Declaration) -> dict[str, Any]:
    """Each declared list beside the extract's, with every difference named (docs/reports.md)."""
    found = _found(run, declaration.id_type)
    rank = {n: i for i, n in enumerate(canonical.TRANSFER_LIST)}
    # One row per found patient: the id it is named by (its key when it has no such id) and its lists.
    per_patient = found.group_by("survivor_key").agg(
        pl.col("id").first(), pl.col("list").sort_by(pl.col("list").replace_strict(rank)).alias("lists")
    ).with_columns(pl.coalesce("id", "survivor_key").alias("id"))
    with_ids = any(d.ids is not None for d in declaration.lists)
    declared = _declared_ids(run, declaration) if with_ids else pl.DataFrame()
    declared_on: dict[str, list[str]] = {}
    if with_ids:
        for label, ident in declared.select("list", "id").iter_rows():
            declared_on.setdefault(ident, []).append(label)
    missing = declared.filter(pl.col("survivor_key").is_null())["id"].to_list() if with_ids else []
    quarantined = _quarantined_at(run, missing, declaration.id_type)
    lists: list[dict[str, Any]] = []
    for d in declaration.lists:
        n_found = found.filter(pl.col("list") == d.name)["survivor_key"].n_unique()
        entry: dict[str, Any] = {"list": d.name, "declared": d.count, "found": n_found,
                                 "difference": n_found - d.count, "declared_ids": None, "absent": None, "extra": None,
                                 "note": None}
        explained = 0
        if d.ids is not None:
            absent, extra = _explain_list(d.name, declared, per_patient, quarantined, declared_on)
            distinct = len(dict.fromkeys(d.ids))
            entry |= {"declared_ids": distinct, "absent": absent, "extra": extra}
            explained = len(extra) - len(absent) + (distinct - d.count)
            if distinct != d.count:
                entry["note"] = f"count {d.count:,} but {distinct:,} distinct ids listed"
        entry["unexplained"] = entry["difference"] - explained
        lists.append(entry)

    two = per_patient.filter(pl.col("lists").list.len() > 1).sort("id")
    two_found = [{"id": i, "lists": ls} for i, ls in two.select("id", "lists").iter_rows()]
    two_declared = sorted(({"id": i, "lists": ls} for i, ls in declared_on.items() if len(ls) > 1),
                          key=lambda e: str(e["id"]))
    # memory: one row per table
    q = run.scan("quarantine.parquet").group_by("table").len().collect()
    q_rows = dict(q.iter_rows())
    declared_patients = declaration.patients
    if declared_patients is None and with_ids and all(d.ids is not None for d in declaration.lists):
        declared_patients = len(declared_on)
    found_entries = sum(e["found"] for e in lists)
    return {
        "source": declaration.source,
        "from_labels": declaration.from_labels,
        "id_type": declaration.id_type,
        "lists": lists,
        "totals": {
            "declared_entries": sum(d.count for d in declaration.lists),
            "declared_patients": declared_patients,
            "found_entries": found_entries,
            "found_patients": found["survivor_key"].n_unique(),
            "entries_on_a_second_list": found_entries - found["survivor_key"].n_unique(),
        },
        "two_lists": {"found": two_found, "declared": two_declared},
        "quarantined_rows": {t: int(q_rows.get(t, 0)) for t in ("patients", "referrals")},
        "explained": all(e["unexplained"] == 0 for e in lists),
    }
