"""The new provider's existing patients (``--target-index``), read in the target's own layout.

A new provider's export has its own column names, date formats and sex codes, so the file
is mapped like any extract file: by the ``target_index`` table of a mapping profile (given
with ``--target-mapping``, or found among the ``--mapping`` profiles), with the same
validation (exit 2 for a profile problem or a missing column, before any row is read) and
the same quarantine (a row whose values fail is set aside with a reason code and a message
naming file, row and field; the rest are matched). Its canonical columns are
``canonical.TARGET_INDEX``'s: ``local_id``, ``nhs_number``, ``family_name``,
``given_names``, ``birth_date``, ``sex``, ``postcode``.

Without a ``target_index`` table the file must already use those column names (the
layout ``handover synth`` writes); every column is then read as text, as before.

Output: ``TargetIndex`` — the usable rows (for ``migrate.identity.match_target``), the
quarantined ones (``quarantine.QUARANTINE_SCHEMA``, table ``target_index``, written to the
run folder as ``target-quarantine.parquet``) and a summary for ``reconciliation.json``.
Every row read is either usable or quarantined.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl

from migrate import canonical, quarantine
from migrate.errors import ConfigError
from migrate.profile import Profile, load_profile
from migrate.reference import read_reference

TABLE = canonical.TARGET_TABLE


@dataclass(frozen=True)
class TargetIndex:
    """The target index as read: usable rows, quarantined rows, and where they came from."""

    file: str
    mapping: str | None  # the profile whose target_index table read it; None: canonical column names
    frame: pl.DataFrame
    quarantine: pl.DataFrame
    rows_read: int

    def summary(self) -> dict[str, Any]:
        """What ``reconciliation.json`` records under ``target_index``."""
        by_reason = self.quarantine.group_by("reason_code").agg(pl.len()).sort("reason_code").rows()
        return {"file": self.file, "mapping": self.mapping, "rows_read": self.rows_read,
                "rows_used": self.frame.height, "quarantined": self.quarantine.height,
                "quarantined_by_reason": {str(reason): int(n) for reason, n in by_reason}}


def target_mapping(given: str | Path | None, profiles: Sequence[Profile], target_index: Path | None) -> Profile | None:
    """The profile that reads the target index: ``given`` (``--target-mapping``), else the
    first ``--mapping`` profile with a ``target_index`` table, else None. ConfigError
    (exit 2) when ``given`` has no such table or there is no target index to read."""
    if given is None:
        return next((p for p in profiles if TABLE in p.tables), None)
    if target_index is None:
        raise ConfigError("--target-mapping describes the target index: give the file with --target-index")
    profile = load_profile(given)
    if TABLE not in profile.tables:
        raise ConfigError(f"mapping profile {profile.path} has no target_index table to read the target index with",
                          [f"{profile.path.name}: tables: add target_index: {{fields: {{local_id: ..., "
                           "nhs_number: ...}}} (docs/mapping-profiles.md)"])
    return profile


def read_target_index(path: Path, profile: Profile | None = None) -> TargetIndex:
    """Read and map the target index at ``path`` (module docstring)."""
    if profile is None:
        return _by_column_names(path)
    # memory: held (read_reference): as _by_column_names below.
    read = read_reference(path, profile, TABLE)
    return TargetIndex(read.file, profile.name, read.frame.select(canonical.TARGET_INDEX.field_names),
                       read.quarantine, read.rows_read)


def _by_column_names(path: Path) -> TargetIndex:
    """A target index already in canonical column names, every column as text."""
    # memory: held: the target index is the new provider's patient list (one row per patient it
    # holds), read whole like identity's patient table, which it is matched against.
    if path.suffix.lower() in (".parquet", ".pq"):
        frame = pl.read_parquet(path).select(pl.all().cast(pl.String))
    else:
        frame = pl.read_csv(path, infer_schema=False, encoding="utf8-lossy")
    return TargetIndex(path.name, None, frame, quarantine.table([]), frame.height)
