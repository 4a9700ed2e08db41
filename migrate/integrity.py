"""Table-level checks after mapping: duplicate keys and references to parents.

Pure functions of DataFrames. Each takes the mapped rows of one table and returns the rows
that pass and the rows to quarantine (with ``__reason``, ``__field`` and ``__message``
set), so the caller can keep the invariant: rows in = rows passed + rows quarantined.
"""

from __future__ import annotations

from dataclasses import dataclass

import polars as pl

from migrate import canonical

_UNKNOWN = {"patients": "unknown_patient", "referrals": "unknown_referral"}


@dataclass(frozen=True)
class Split:
    """Rows that passed a check, and rows it sent to quarantine."""

    passed: pl.DataFrame
    failed: pl.DataFrame


def _fail(frame: pl.DataFrame, reason: str, field: str, message: pl.Expr) -> pl.DataFrame:
    where = pl.concat_str([pl.col("source_file"), pl.lit(" row "), pl.col("source_row").cast(pl.String), pl.lit(": ")])
    return frame.with_columns(
        pl.lit(reason).alias("__reason"), pl.lit(field).alias("__field"), pl.concat_str([where, message]).alias("__message")
    )


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
    failed = _fail(marked, "duplicate_key", key, message).drop("__first_file", "__first_row")
    return Split(passed, failed)


def parent_references(frame: pl.DataFrame, column: str, parent: str, good: pl.Series, bad: pl.Series) -> Split:
    """Rows whose ``column`` names a kept ``parent`` row pass.

    A reference to a parent that was itself quarantined fails with ``parent_quarantined``;
    a reference to a parent the extract does not hold fails with ``unknown_patient`` or
    ``unknown_referral``. A null reference passes here (required fields are checked by the
    mapping).
    """
    refs = frame[column]
    passed, rest = _split(frame, refs.is_null() | refs.is_in(good.implode()))
    if rest.height == 0:
        return Split(passed, rest)
    value = pl.col(column)
    was_bad = value.is_in(bad.implode())
    noun = parent.rstrip("s")
    quarantined = _fail(rest.filter(was_bad), "parent_quarantined", column,
                        pl.concat_str([pl.lit(f"{noun} "), value, pl.lit(f" was quarantined (see its own {parent} row)")]))
    unknown = _fail(rest.filter(~was_bad), _UNKNOWN[parent], column,
                    pl.concat_str([pl.lit(f"{noun} "), value, pl.lit(f" is not in the {parent} extract")]))
    return Split(passed, pl.concat([quarantined, unknown]))


def contact_patients(contacts: pl.DataFrame, owners: pl.DataFrame) -> Split:
    """Fill a contact's missing patient from its referral; quarantine a contact whose
    stated patient differs from its referral's patient (``patient_mismatch``).

    ``owners`` has referral_key and patient_key of the kept referrals.
    """
    ref_patient = (
        contacts.select("referral_key")
        .join(owners.rename({"patient_key": "__ref_patient"}), on="referral_key", how="left", maintain_order="left")
        ["__ref_patient"]
    )
    stated = contacts["patient_key"]
    filled = contacts.with_columns(stated.fill_null(ref_patient).alias("patient_key"))
    passed, mismatched = _split(filled, stated.is_null() | (stated == ref_patient).fill_null(False) | ref_patient.is_null())
    if mismatched.height == 0:
        return Split(passed, mismatched)
    mismatched = mismatched.join(owners.rename({"patient_key": "__ref_patient"}), on="referral_key", how="left",
                                 maintain_order="left")
    failed = _fail(mismatched, "patient_mismatch", "patient_key",
                   pl.concat_str([pl.lit("patient "), pl.col("patient_key"), pl.lit(" differs from referral "),
                                  pl.col("referral_key"), pl.lit("'s patient "), pl.col("__ref_patient")]))
    return Split(passed, failed.drop("__ref_patient"))
