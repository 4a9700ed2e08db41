"""Messages delivered more than once: the same MSH-10 from the same sender.

A message control id (MSH-10) identifies a message for its sending application and
facility (MSH-3, MSH-4). Feeds are re-sent — an interface engine replays a day, an MLLP
sender retries after a lost acknowledgement — so the same message arrives again, in the
same file or another. Over every valid message of every HL7 file of a run, in message
order (MSH-7, then file and position), the first message of each (sender, control id) is
the one that applies:

- a later message with the same text is a re-delivery: it applies nothing and its
  disposition is ``merged`` (``again``);
- a later message with other text reuses the control id for something else: it is
  quarantined as ``duplicate_control_id`` (``conflicting``), since either could be the
  real one and applying both would apply an event twice.

Messages without a control id are not compared. Pure: frames in, frames out.
"""

from __future__ import annotations

import polars as pl

__all__ = ["HEADER_COLUMNS", "repeated_deliveries"]

HEADER_COLUMNS = ("source_file", "source_row", "sending_app", "sending_facility", "control_id", "sent_at",
                  "content_hash", "message_type", "event")
_SENDER = ["sending_app", "sending_facility", "control_id"]


def repeated_deliveries(headers: pl.DataFrame) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(again, conflicting) among ``headers`` (``HEADER_COLUMNS``, one row per valid message).

    Each result has ``source_file``, ``source_row``, ``first_file`` and ``first_row`` (the
    message that applies), ``control_id``, ``sending_app``, ``sending_facility``,
    ``message_type`` and ``event``.
    """
    schema = {"source_file": pl.String, "source_row": pl.Int64, "first_file": pl.String, "first_row": pl.Int64,
              "control_id": pl.String, "sending_app": pl.String, "sending_facility": pl.String,
              "message_type": pl.String, "event": pl.String}
    known = headers.filter(pl.col("control_id").is_not_null())
    repeated = known.filter(pl.len().over(_SENDER) > 1)
    if repeated.height == 0:
        return pl.DataFrame(schema=schema), pl.DataFrame(schema=schema)
    ordered = repeated.sort("sent_at", "source_file", "source_row", nulls_last=False, maintain_order=True)
    first = pl.int_range(pl.len()).over(_SENDER) == 0
    marked = ordered.with_columns(
        pl.col("source_file").filter(first).first().over(_SENDER).alias("first_file"),
        pl.col("source_row").filter(first).first().over(_SENDER).alias("first_row"),
        pl.col("content_hash").filter(first).first().over(_SENDER).alias("first_hash"),
        first.alias("first"),
    ).filter(~pl.col("first"))
    same = pl.col("content_hash").eq_missing(pl.col("first_hash"))
    again = marked.filter(same).select(list(schema)).cast(schema)  # type: ignore[arg-type]
    conflicting = marked.filter(~same).select(list(schema)).cast(schema)  # type: ignore[arg-type]
    return again.sort("source_file", "source_row"), conflicting.sort("source_file", "source_row")
