"""Settings of polars that the pipeline's memory bounds rely on, set once per process.

Each is one of polars' own environment settings, set unless the user set it; a test per
setting (``tests/test_engine.py``) reads polars' log to show it takes effect, so a polars
that renamed one fails the suite instead of silently ignoring it.

Applied when ``migrate`` is imported: the ``handover`` command, the local executor's worker
processes and Dask's workers all import it before their first query.
"""

from __future__ import annotations

import json
import os

import polars as pl

JOIN_SAMPLE_LIMIT = "POLARS_JOIN_SAMPLE_LIMIT"
# memory: polars' streaming equi-join reads both of its inputs before choosing the side it
# builds, holding what it read: up to 10M rows of each side by default, so a join of two
# large inputs held a share of a large extract whatever the query's own bound: at 5M patients
# each part of the round trip's referral links (~1M keys) could hold 10M lineage rows, 1.9 GB
# (1.5 GB with this setting, 0.85 GB a part at 1M; benchmarks/roundtrip.md). A million rows
# still shows which side is the smaller (the pipeline's parts are about a million keys:
# expected.LINK_ROWS, roundtrip_lookups.KEY_ROWS); no sampling at all (0) built the wrong side.
SAMPLE_ROWS = 1_000_000

ROW_GROUP_PREFETCH = "POLARS_ROW_GROUP_PREFETCH_SIZE"
# memory: polars' streaming Parquet reader reads up to 512 row groups ahead of the query that
# consumes them (polars 2.1's default), i.e. every row group of any file handover stages (at most
# ~200 of 262,144 rows: the 53M contacts at 5M patients), so a streamed scan held a share of the
# file that grew with it: a plain scan of the 14.3M referrals at 5M, joined with the merges and
# sunk, +1,336 MB (2.86M at 1M: +770 MB); two row groups ahead, +863 MB, and one +599 (1M: +556)
# — flat. Measured in the FHIR stage's staging at 5M: the referrals' split +1,183 -> +391 MB, the
# contacts' +810 -> +228 (benchmarks/README.md, fourteenth session). Two keep the reader a row
# group ahead of the decoding threads.
PREFETCH_ROW_GROUPS = 2
SETTINGS = {JOIN_SAMPLE_LIMIT: str(SAMPLE_ROWS), ROW_GROUP_PREFETCH: str(PREFETCH_ROW_GROUPS)}


def configure() -> None:
    """Bound the streaming joins' sampling and the Parquet reader's read-ahead (``SETTINGS``),
    each unless the user set it."""
    mine = {name: value for name, value in SETTINGS.items() if name not in os.environ}
    if mine:  # the user's own values are kept (polars read them when it started)
        # polars reads its settings from the environment once; Config.load sets and re-reads them
        pl.Config.load(json.dumps({"environment": mine}))
