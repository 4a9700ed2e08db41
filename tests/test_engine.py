"""polars as every handover process runs it (``migrate.engine``): the streaming joins' sampling and the
Parquet reader's read-ahead bounded."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from migrate.engine import JOIN_SAMPLE_LIMIT, PREFETCH_ROW_GROUPS, ROW_GROUP_PREFETCH, SAMPLE_ROWS

# Two Parquet inputs of 3M and 1M rows joined by the streaming engine, with polars' log on:
# the join logs how many rows of each side it read (and held) before choosing its build side.
JOIN = """
import sys
from pathlib import Path
import polars as pl
import migrate  # what every handover process does first
folder = Path(sys.argv[1])
pl.DataFrame({"k": range(3_000_000)}).write_parquet(folder / "a.parquet")
pl.DataFrame({"k": range(0, 3_000_000, 3)}).write_parquet(folder / "b.parquet")
left, right = pl.scan_parquet(folder / "a.parquet"), pl.scan_parquet(folder / "b.parquet")
print(left.join(right, on="k").select(pl.len()).collect(engine="streaming").item())
"""


def _logged(script: str, tmp_path: Path, name: str, value: str | None, pattern: str) -> tuple[int, re.Match[str]]:
    """``script``'s printed number and the match of ``pattern`` in polars' log, run in a new
    process with the setting ``name`` given ``value`` (None: left to handover)."""
    env = {k: v for k, v in os.environ.items() if k != name} | {"POLARS_VERBOSE": "1"}
    if value is not None:
        env[name] = value
    done = subprocess.run([sys.executable, "-c", script, str(tmp_path)], env=env, capture_output=True, text=True,
                          check=True, cwd=Path(__file__).resolve().parent.parent)
    found = re.search(pattern, done.stderr)
    assert found, done.stderr[-2000:]
    return int(done.stdout.strip()), found


def _sampled(tmp_path: Path, limit: str | None) -> tuple[int, list[int]]:
    rows, found = _logged(JOIN, tmp_path, JOIN_SAMPLE_LIMIT, limit, r"sample lengths are: (\d+) vs\. (\d+)")
    return rows, [int(found.group(1)), int(found.group(2))]


def test_a_join_holds_about_a_million_rows_of_a_side_while_it_samples(tmp_path: Path) -> None:
    """polars' default read (and held) the 3M-row side whole before choosing; handover's
    processes stop each side at about ``SAMPLE_ROWS`` (a morsel past it at most), and the
    join's result is the same."""
    rows, sampled = _sampled(tmp_path, None)
    assert rows == 1_000_000
    assert max(sampled) < 2 * SAMPLE_ROWS < 3_000_000


def test_a_users_own_limit_is_kept(tmp_path: Path) -> None:
    rows, sampled = _sampled(tmp_path, "10000000")
    assert rows == 1_000_000
    assert max(sampled) == 3_000_000  # the whole side, as the user asked


# A Parquet file of eight row groups scanned by the streaming engine with polars' log on: the
# reader logs how many row groups it reads ahead of the query.
SCAN = """
import sys
from pathlib import Path
import polars as pl
import migrate  # what every handover process does first
path = Path(sys.argv[1]) / "t.parquet"
pl.DataFrame({"k": range(80_000)}).write_parquet(path, row_group_size=10_000)
print(pl.scan_parquet(path).with_columns(pl.col("k") + 1).select(pl.col("k").sum()).collect(engine="streaming").item())
"""


def _prefetched(tmp_path: Path, setting: str | None) -> tuple[int, int]:
    total, found = _logged(SCAN, tmp_path, ROW_GROUP_PREFETCH, setting, r"row_group_prefetch_size: (\d+)")
    return total, int(found.group(1))


def test_a_scan_reads_a_few_row_groups_ahead_not_the_whole_file(tmp_path: Path) -> None:
    """polars' default read up to 512 row groups ahead (all eight here); handover's processes
    read ``PREFETCH_ROW_GROUPS``, and the query's result is the same."""
    total, ahead = _prefetched(tmp_path, None)
    assert total == sum(range(1, 80_001))
    assert ahead == PREFETCH_ROW_GROUPS < 8


def test_a_users_own_read_ahead_is_kept(tmp_path: Path) -> None:
    total, ahead = _prefetched(tmp_path, "512")
    assert total == sum(range(1, 80_001))
    assert ahead == 8  # every row group of the file, as polars' default
