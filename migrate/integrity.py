"""Table-level checks after mapping: duplicate keys and references to parents.

Pure functions of DataFrames. Each takes the mapped rows of one table and returns the rows
that pass and the rows to quarantine (marked by ``quarantine.mark``: ``__reason``,
``__field`` and ``__message``), so the caller can keep the invariant: rows in = rows passed
+ rows quarantined.
"""

from __future__ import annotations

from dataclasses import dataclass

import polars as pl

from migrate import canonical, quarantine
from migrate.staging import SortedKeys

_UNKNOWN = {"patients": "unknown_patient", "referrals": "unknown_referral"}


@dataclass(frozen=True)
class Split:
    """Rows that passed a check, and rows it sent to quarantine."""

    passed: pl.DataFrame
    failed: pl.DataFrame


def _split(frame: pl.DataFrame, ok: pl.Series) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(rows where ok, rows where not) — without copying the frame when all are ok."""
    if bool(ok.all()):
        return frame, frame.clear()
    return frame.filter(ok), frame.filter(~ok)


def duplicate_keys(frame: pl.DataFrame, table: str) -> Split:
    """The first row (in file order) of each primary key passes; later repeats are quarantined.

    ``frame`` must be in file order (as ingest produces it). The message names the row the
    key repeats, so a reviewer can compare the two records.
    """
    key = canonical.TABLES[table].key
    if key is None or frame.height == 0:
        return Split(frame, frame.clear())
    passed, repeats = _split(frame, frame[key].is_first_distinct() | frame[key].is_null())
    if repeats.height == 0:
        return Split(passed, repeats)
    first = passed.join(repeats.select(key).unique(), on=key, how="semi").select(
        key, pl.col("source_file").alias("__first_file"), pl.col("source_row").alias("__first_row"))
    marked = repeats.join(first, on=key, how="left", maintain_order="left")
    message = pl.concat_str([
        pl.lit(f"{key} "), pl.col(key), pl.lit(" repeats "), pl.col("__first_file"), pl.lit(" row "),
        pl.col("__first_row").cast(pl.String), pl.lit(" (the first row is kept)"),
    ])
    failed = quarantine.mark(marked, "duplicate_key", key, message).drop("__first_file", "__first_row")
    return Split(passed, failed)


def parent_references(frame: pl.DataFrame, column: str, parent: str, good: SortedKeys, bad: pl.Series) -> Split:
    """Rows whose ``column`` names a kept ``parent`` row pass.

    A reference to a parent that was itself quarantined fails with ``parent_quarantined``;
    a reference to a parent the extract does not hold fails with ``unknown_patient`` or
    ``unknown_referral``. A null reference passes here (required fields are checked by the
    mapping).
    """
    refs = frame[column]
    passed, rest = _split(frame, refs.is_null() | good.contains(refs))
    if rest.height == 0:
        return Split(passed, rest)
    value = pl.col(column)
    was_bad = value.is_in(bad.implode())
    noun = parent.rstrip("s")
    quarantined = quarantine.mark(rest.filter(was_bad), "parent_quarantined", column,
                        pl.concat_str([pl.lit(f"{noun} "), value, pl.lit(f" was quarantined (see its own {parent} row)")]))
    unknown = quarantine.mark(rest.filter(~was_bad), _UNKNOWN[parent], column,
                    pl.concat_str([pl.lit(f"{noun} "), value, pl.lit(f" is not in the {parent} extract")]))
    return Split(passed, pl.concat([quarantined, unknown]))


def contact_patients(contacts: pl.DataFrame, owners: SortedKeys) -> Split:
    """Fill a contact's missing patient from its referral; quarantine a contact whose
    stated patient differs from its referral's patient (``patient_mismatch``).

    ``owners``: the kept referrals' keys, each with its patient_key as value.
    """
    ref_patient = owners.lookup(contacts["referral_key"]).alias("__ref_patient")
    stated = contacts["patient_key"]
    filled = contacts.with_columns(stated.fill_null(ref_patient).alias("patient_key"))
    passed, mismatched = _split(filled, stated.is_null() | (stated == ref_patient).fill_null(False) | ref_patient.is_null())
    if mismatched.height == 0:
        return Split(passed, mismatched)
    mismatched = mismatched.with_columns(owners.lookup(mismatched["referral_key"]).alias("__ref_patient"))
    failed = quarantine.mark(mismatched, "patient_mismatch", "patient_key",
                   pl.concat_str([pl.lit("patient "), pl.col("patient_key"), pl.lit(" differs from referral "),
                                  pl.col("referral_key"), pl.lit("'s patient "), pl.col("__ref_patient")]))
    return Split(passed, failed.drop("__ref_patient"))


def patient_links(frame: pl.DataFrame, table: str) -> Split:
    """Rows that cannot reach a patient fail ``missing_required``: a referral or coded entry
    without its patient, a contact with neither its referral nor its patient. Such a row
    would be migrated yet become no FHIR resource (it hangs off no Patient)."""
    if table in ("referrals", "codes"):
        ok, field, what = frame["patient_key"].is_not_null(), "patient_key", f"a {table.rstrip('s')} needs its patient"
    elif table == "contacts":
        ok = frame["referral_key"].is_not_null() | frame["patient_key"].is_not_null()
        field, what = "referral_key", "a contact needs its referral or its patient"
    else:
        return Split(frame, frame.clear())
    passed, failed = _split(frame, ok)
    if failed.height == 0:
        return Split(passed, failed)
    return Split(passed, quarantine.mark(failed, "missing_required", field, pl.lit(f"{field} is blank: {what}")))


def deferred_required(frame: pl.DataFrame, table: str) -> Split:
    """Rows whose state lacks a field their profile marks required fail ``missing_required``.

    Under ``updates: merge`` a blank field of an update keeps the earlier value, so required
    fields are checked on the state after the update (``migrate.updates``), not on the row:
    ``__required`` holds, per row, the bits (field positions in the canonical table) of the
    required fields its profile left to this check.
    """
    if "__required" not in frame.columns or frame.height == 0 or not bool((frame["__required"] > 0).any()):
        return Split(frame, frame.clear())
    fields = canonical.TABLES[table].field_names
    missing = [pl.when((pl.col("__required") // (1 << i) % 2 == 1) & pl.col(f).is_null()).then(pl.lit(f))
               for i, f in enumerate(fields)]
    marked = frame.with_columns(pl.coalesce(missing).alias("__missing"))
    passed, failed = _split(marked, marked["__missing"].is_null())
    if failed.height == 0:
        return Split(passed.drop("__missing"), failed.drop("__missing"))
    failed = quarantine.mark(failed, "missing_required", "", pl.concat_str([
        pl.col("__missing"), pl.lit(" is required but blank, and no earlier message gave it")]))
    return Split(passed.drop("__missing"), failed.with_columns(pl.col("__missing").alias("__field")).drop("__missing"))


@dataclass(frozen=True)
class Merges:
    """The source's own patient merges (HL7 A40) once applied in order.

    ``accepted``: the merge rows that apply; ``failed``: rows that conflict with an earlier
    merge (``merge_conflict``); ``survivors``: patient_key -> survivor_key for every prior
    patient, chains followed (A into B, later B into C: A's survivor is C).
    """

    accepted: pl.DataFrame
    failed: pl.DataFrame
    survivors: pl.DataFrame


SURVIVORS_SCHEMA: dict[str, pl.DataType] = {"patient_key": pl.String(), "survivor_key": pl.String()}


def source_merges(frame: pl.DataFrame, order: list[pl.Expr]) -> Merges:
    """Apply merge rows (patient_key = survivor, prior_patient_key = prior) in ``order``.

    A merge is refused (``merge_conflict``) when it merges a patient into itself, when its
    prior was already merged into another patient, or when its survivor was already merged
    into its prior (a cycle): the first merge in message order stands. Merges are few (one
    message in fifty in a busy feed), so they are applied one by one in Python: each
    depends on the ones before it.
    """
    rows = frame.with_row_index("__m").sort(order, nulls_last=False, maintain_order=True)
    parent: dict[str, tuple[str, str, int]] = {}  # prior -> (survivor, file, row) of its merge

    def find(key: str) -> str:
        seen = 0
        while key in parent and seen <= len(parent):
            key, seen = parent[key][0], seen + 1
        return key

    refused: dict[int, str] = {}
    for m, survivor, prior, file, row in rows.select("__m", "patient_key", "prior_patient_key", "source_file",
                                                      "source_row").iter_rows():
        if survivor == prior:
            refused[m] = "merges a patient into itself"
        elif prior in parent:
            into, f, r = parent[prior]
            refused[m] = f"prior patient {prior} was already merged into {into} by {f} row {r}"
        elif find(survivor) == prior:
            refused[m] = f"survivor {survivor} was already merged into {prior}: the merge would make a cycle"
        else:
            parent[prior] = (survivor, file, row)
    marks = pl.DataFrame({"__m": list(refused), "__why": list(refused.values())},
                         schema={"__m": pl.UInt32, "__why": pl.String})
    marked = frame.with_row_index("__m").join(marks, on="__m", how="left", maintain_order="left")
    ok = marked["__why"].is_null()
    accepted = marked.filter(ok).drop("__m", "__why")
    failed = quarantine.mark(marked.filter(~ok), "merge_conflict", "prior_patient_key", pl.col("__why")).drop("__m", "__why")
    survivors = pl.DataFrame({"patient_key": list(parent), "survivor_key": [find(k) for k in parent]},
                             schema=SURVIVORS_SCHEMA).sort("patient_key")
    return Merges(accepted, failed, survivors)


def resolve_patients(frame: pl.DataFrame, survivors: pl.DataFrame) -> pl.DataFrame:
    """``frame`` with each merged patient_key replaced by its survivor's (the source's own
    merges re-point every row sent under a prior id, before or after the merge)."""
    if survivors.height == 0 or frame.height == 0:
        return frame
    return frame.join(survivors, on="patient_key", how="left", maintain_order="left").with_columns(
        pl.coalesce("survivor_key", "patient_key").alias("patient_key")).drop("survivor_key")
