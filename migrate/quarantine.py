"""Quarantine: the reason codes, and how a rejected row becomes a ``quarantine.parquet`` row.

Rows are rejected in four places, each keeping its own logic: the readers (a record that
cannot be split or decoded: ``sources``), the mapping (a value that does not parse:
``mapping``), the table-level checks (duplicate keys, unknown or quarantined parents:
``integrity``) and ingest's routing (an HL7 event no table takes). They all name their
reason with a code of ``REASON_CODES`` and hand their rows here to be shaped the one way
quarantine is written (``QUARANTINE_SCHEMA``, docs/architecture.md):

- ``mark``: a table-level check's failing rows, marked with reason, field and message;
- ``from_mapping``: rows the mapping or a check marked (``__reason``, ``__field``,
  ``__message``, ``__raw``);
- ``from_reader``: records a reader rejected (``reason_code``, ``message``, ``raw``; no field);
- ``unhandled_events``: valid HL7 messages of an event no table of the profile takes.

Codes are stable: reports and tests group by them, and a test holds every code the
modules above use to this list.
"""

from __future__ import annotations

import polars as pl

from migrate.canonical import typed
from migrate.staging import compact

QUARANTINE_SCHEMA: dict[str, pl.DataType] = {
    "source_file": pl.String(),
    "source_row": pl.Int64(),
    "table": pl.String(),
    "reason_code": pl.String(),
    "field": pl.String(),
    "message": pl.String(),
    "raw": pl.String(),
}

# Why a source row was quarantined.
REASON_CODES: dict[str, str] = {
    "wrong_field_count": "the record has more or fewer fields than the header",
    "malformed_record": "the record cannot be split into fields (a stray quote, a bare carriage return)",
    "invalid_encoding": "the record contains bytes that are not valid in the file's declared encoding",
    "missing_required": "a field the profile marks required is blank",
    "unparseable_date": "a date or date-time matches none of the profile's formats",
    "invalid_value": "a value is not of the field's type (boolean, number, pattern)",
    "conflicting_value": "a field's value contradicts the value another column implies (implied_by), e.g. an HL7 "
                         "S15 cancellation whose SCH-25 says Booked",
    "unmapped_code": "a coded value has no mapping to the canonical values",
    "duplicate_key": "the primary key repeats an earlier row of the same table",
    "unknown_patient": "the row refers to a patient that is not in the extract",
    "unknown_referral": "the row refers to a referral that is not in the extract",
    "parent_quarantined": "the row's patient or referral was itself quarantined",
    "patient_mismatch": "the contact's patient differs from its referral's patient",
    "hl7_malformed": "an HL7 v2 message with no usable MSH segment, or that cannot be split",
    "hl7_unsupported": "an HL7 v2 version or message event that is not supported",
    "hl7_structure": "an HL7 v2 message whose segments break its message structure (missing or misplaced)",
    "hl7_datatype": "an HL7 v2 field whose value violates its datatype (e.g. a timestamp that is not one)",
    "hl7_unhandled": "a valid HL7 v2 message of an event that no table of the profile takes",
    "duplicate_control_id": "an HL7 v2 message whose control id (MSH-10) an earlier message from the same sending "
                            "application and facility used, with different content",
    "merge_conflict": "a patient merge (HL7 A40) that contradicts an earlier one: a patient into itself, a prior "
                      "patient merged twice, or a cycle",
}


def mark(frame: pl.DataFrame, reason: str, field: str, message: pl.Expr) -> pl.DataFrame:
    """``frame``'s rows marked for quarantine: ``__reason`` (a ``REASON_CODES`` code),
    ``__field`` and ``__message`` (prefixed with ``<file> row <n>: ``)."""
    if reason not in REASON_CODES:
        raise ValueError(f"unknown quarantine reason code {reason!r}")
    where = pl.concat_str([pl.col("source_file"), pl.lit(" row "), pl.col("source_row").cast(pl.String), pl.lit(": ")])
    return frame.with_columns(
        pl.lit(reason).alias("__reason"), pl.lit(field).alias("__field"), pl.concat_str([where, message]).alias("__message")
    )


def from_mapping(frame: pl.DataFrame, table: str) -> pl.DataFrame:
    """Quarantine rows of ``table`` from rows the mapping or a check marked."""
    return frame.select(
        "source_file", "source_row", pl.lit(table).alias("table"), pl.col("__reason").alias("reason_code"),
        pl.col("__field").alias("field"), pl.col("__message").alias("message"), pl.col("__raw").alias("raw"),
    )


def from_reader(rejected: pl.DataFrame, table: str) -> pl.DataFrame:
    """Quarantine rows of ``table`` from records a reader rejected (no field: the record
    could not be split into fields)."""
    return rejected.select(
        "source_file", "source_row", pl.lit(table).alias("table"), "reason_code",
        pl.lit(None, dtype=pl.String).alias("field"), "message", "raw",
    )


def unhandled_events(messages: pl.LazyFrame, routed: list[str], table: str, profile: str) -> pl.DataFrame:
    """Quarantine rows for valid HL7 messages whose event no table of ``profile`` takes
    (compacted: held to the end of ingest, see ``staging.compact``)."""
    return compact(messages.filter(~pl.col("event").is_in(routed)).select(
        "source_file", "source_row", pl.lit(table).alias("table"), pl.lit("hl7_unhandled").alias("reason_code"),
        pl.lit(None, dtype=pl.String).alias("field"),
        pl.format("{} message {}: {}^{} (control id {}) is not an event any table of profile {} takes",
                  "source_file", "source_row", "message_type", "event", "control_id", pl.lit(profile))
        .alias("message"),
        pl.concat_str([pl.col("message_type"), pl.col("event")], separator="^").alias("raw"),
    ).collect())  # memory: the unhandled messages' rows only


def table(parts: list[pl.DataFrame]) -> pl.DataFrame:
    """``quarantine.parquet``: every part, typed and in file and row order."""
    # memory: held: the rows set aside (each with its raw record) are collected as each file is
    # read and written once as quarantine.parquet: sized by the extract's faults, not its rows
    # (a wholly bad file is the worst case).
    frame = pl.concat(parts, how="vertical") if parts else pl.DataFrame(schema=QUARANTINE_SCHEMA)
    return frame.select(typed(QUARANTINE_SCHEMA)).sort("source_file", "source_row")
