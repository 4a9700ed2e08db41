"""Settings of polars that the pipeline's memory bounds rely on, set once per process.

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


def configure() -> None:
    """Bound the streaming joins' sampling, unless the user set ``POLARS_JOIN_SAMPLE_LIMIT``."""
    if JOIN_SAMPLE_LIMIT in os.environ:
        return  # the user's own value, kept (polars read it when it started)
    # polars reads its settings from the environment once; Config.load sets and re-reads them
    pl.Config.load(json.dumps({"environment": {JOIN_SAMPLE_LIMIT: str(SAMPLE_ROWS)}}))
