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

import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl

from migrate import canonical, quarantine
from migrate.errors import ConfigError, ProfileError
from migrate.mapping import apply_mapping, compile_table, explain_failures, missing_columns
from migrate.profile import Profile, load_profile
from migrate.sources import InputFile, read_columns, read_file

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
    spec = profile.tables[TABLE]
    source = InputFile(path, path.name, profile, (TABLE,))
    present = read_columns(source) or ()
    absent = missing_columns(spec, present) if present else list(spec.source_columns)
    if absent:
        raise ProfileError(f"the target index does not fit mapping profile {profile.name}",
                           [f"{path.name} ({TABLE}): missing column(s) {', '.join(absent)}; "
                            f"columns present: {', '.join(present) or 'none'}"])
    with tempfile.TemporaryDirectory(prefix="handover-target-") as work:
        result = read_file(source, Path(work))
        compiled = compile_table(spec, result.frame.collect_schema(), profile)
        mapped = apply_mapping(result.frame, compiled).collect()
        ok = mapped["__reason"].is_null()
        failing = mapped.filter(~ok)
        details = explain_failures(result.frame.join(failing.select("source_row").lazy(), on="source_row",
                                                     how="semi"), compiled).collect()
        rejected = quarantine.from_reader(result.rejected, TABLE)
    mapped_out = quarantine.from_mapping(failing.join(details, on=["source_file", "source_row"], how="left"), TABLE)
    frame = mapped.filter(ok).select(canonical.TARGET_INDEX.field_names)
    return TargetIndex(path.name, profile.name, frame, quarantine.table([rejected, mapped_out]), result.rows_read)


def _by_column_names(path: Path) -> TargetIndex:
    """A target index already in canonical column names, every column as text."""
    if path.suffix.lower() in (".parquet", ".pq"):
        frame = pl.read_parquet(path).select(pl.all().cast(pl.String))
    else:
        frame = pl.read_csv(path, infer_schema=False, encoding="utf8-lossy")
    return TargetIndex(path.name, None, frame, quarantine.table([]), frame.height)
