"""``handover dedupe``: identity alone on one patient file, before a batch.

Reads the file through the patients table of a mapping profile (quarantining what cannot
be mapped, as a run would) and writes ``duplicates.parquet`` (exact NHS-number duplicates,
conflicts, probable and possible matches, each with its match weight and the contribution
of every comparison) and ``identity-model.json`` (the parameters estimated from the file).
Nothing is merged.
"""

from __future__ import annotations

import dataclasses
import shutil
import tempfile
from functools import partial
from pathlib import Path
from typing import Any

from migrate.config import Problems
from migrate.errors import ConfigError
from migrate.identity import MATCH_TYPES, dedupe, load_identity_settings, write_model
from migrate.ingest import ingest
from migrate.outputs import write_parquet
from migrate.profile import load_profile


def dedupe_file(input_file: Path, mapping: str | Path, out_dir: Path, rules: Path | None = None) -> dict[str, Any]:
    """Duplicates among the patients of ``input_file``; writes ``out_dir/duplicates.parquet``
    and returns counts (patients read, quarantined, pairs per match type)."""
    found = Problems()  # every configuration problem at once, before the file is read
    profile = found.attempt(partial(load_profile, mapping))
    if profile is not None and "patients" not in profile.tables:
        found.config.append(f"mapping profile {profile.name} has no patients table")
    identity_file = None if rules is None else (Path(rules) if Path(rules).is_file() else Path(rules) / "identity.yaml")
    settings = found.attempt(partial(load_identity_settings, identity_file))
    if not input_file.is_file():
        found.inputs.append(f"input file not found: {input_file}")
    found.raise_any()
    if profile is None or settings is None:  # recorded above
        raise ConfigError("configuration could not be loaded", found.config)
    # The file stands alone: a profile with only its patients table, reading just this file.
    spec = dataclasses.replace(profile.tables["patients"], files=(input_file.name,))
    single = dataclasses.replace(profile, tables={"patients": spec})
    work = Path(tempfile.mkdtemp(prefix="handover-dedupe-"))
    try:
        folder = work / "input"
        folder.mkdir()
        (folder / input_file.name).symlink_to(input_file.resolve())
        ingested = ingest(folder, single, work / "tmp")
        pairs, model = dedupe(ingested.tables["patients"], settings)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    write_parquet(pairs, out_dir / "duplicates.parquet")
    write_model(model, out_dir)
    counts = dict(pairs.group_by("match_type").len().iter_rows())
    return {
        "patients": ingested.heights["patients"],
        "quarantined": ingested.quarantine.height,
        "pairs": {kind: int(counts.get(kind, 0)) for kind in MATCH_TYPES},
    }


__all__ = ["dedupe_file"]
