"""``handover check``: a dry run of a mapping profile against an extract.

Lists every problem at once — files missing columns, values that do not parse, codes with
no mapping, broken references — with counts and examples, and writes nothing. Beside each
problem it suggests the fix that would work (``migrate.suggest``): the format that parses
the dates, the distinct unmapped codes with what they may mean, the closest columns to a
missing one, the delimiter or encoding that reads a file. Examples
quote values only for fields that are not patient-identifying; for the others they give
row numbers.

It also lists the vocabulary (``migrate.vocabulary``): every value a rule reads as
vocabulary, with its rows and the codelist of the rule pack (the default, or a site's
``--rules``) it matched, or none; and hints where a slot name that matched no codelist
looks like a placeholder rather than a clinic. A site edits its pack, runs ``check``
again and watches unknown values disappear.

And the sharing blocks (``migrate.sharing``): how many patients each source — coded
entries, patient settings, practice settings (``--practice-sharing``) — blocks, by the
entry that decides, before identity merges records; and a warning for every sharing
setting value the profile lists neither as dissent nor consent (it would block: fail safe).
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import polars as pl

from migrate import canonical, sharing
from migrate.draft.catalogue import load_catalogue
from migrate.errors import InputError, ProfileError
from migrate.ingest import ingest, repeated_columns
from migrate.mapping import VALUE_IN_MESSAGE, missing_columns
from migrate.practices import read_practice_sharing
from migrate.profile import Profile
from migrate.reference import reference_profile
from migrate.rules import RulePack, load_pack
from migrate.sources import discover, read_columns
from migrate.suggest import dialect_suggestion, layout_suggestions, suggest
from migrate.vocabulary import bindings, looks_like_placeholder, vocabulary


@dataclass(frozen=True)
class CheckReport:
    """Problems found in an extract: layout problems (exit 2) and row problems (counted)."""

    layout: tuple[str, ...]
    rows_read: int
    problems: tuple[dict[str, Any], ...]
    vocabulary: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    hints: tuple[str, ...] = ()
    fixes: tuple[str, ...] = ()  # for layout problems: the closest columns, a dialect that reads the header
    codelists: dict[str, tuple[str, ...]] = field(default_factory=dict)  # what each vocabulary field is matched against
    sharing: dict[str, Any] = field(default_factory=dict)  # migrate.sharing.summary: blocks by source

    @property
    def fits(self) -> bool:
        """True when every file has the columns the profile reads."""
        return not self.layout

    def raise_on_failure(self) -> None:
        """``ProfileError`` (exit 2) listing every file that lacks columns the profile reads,
        then the fix suggested for each (so ``--quiet`` and ``--json`` users see them too)."""
        if self.layout:
            raise ProfileError("the extract does not fit the mapping profile: files lack columns it reads",
                               list(self.layout) + [f"suggestion: {fix}" for fix in self.fixes])

    def asdict(self) -> dict[str, Any]:
        return {"layout_problems": list(self.layout), "rows_read": self.rows_read, "row_problems": list(self.problems),
                "vocabulary": self.vocabulary, "vocabulary_codelists": {k: list(v) for k, v in self.codelists.items()},
                "hints": list(self.hints), "layout_suggestions": list(self.fixes), "sharing": self.sharing,
                "warnings": list(self.warnings)}

    @property
    def warnings(self) -> tuple[str, ...]:
        """Sharing setting values the profile does not list: each would block its patients."""
        return tuple(
            f"{u['source'].replace('_', ' ')} value '{u['value']}' in column {u['column']} ({u['patients']:,} "
            "patients) is neither a dissent nor a consent value of the profile: it is treated as a dissent "
            "(SHARING_BLOCK, sharing_state unrecognised); add it to dissent_values or consent_values"
            for u in self.sharing.get("unrecognised", []))


def _summarise(quarantine: pl.DataFrame) -> list[dict[str, Any]]:
    grouped = (
        quarantine.with_columns(pl.col("message").str.extract(VALUE_IN_MESSAGE, 1).alias("value"))
        .sort("source_file", "source_row")
        .group_by("source_file", "table", "field", "reason_code", maintain_order=True)
        .agg(
            pl.len().alias("rows"),
            pl.col("source_row").head(3).alias("example_rows"),
            pl.col("value").drop_nulls().unique(maintain_order=True).head(3).alias("example_values"),
            pl.col("message").first().alias("first_message"),
        )
        .sort("source_file", "field", "reason_code", nulls_last=True)
    )
    return grouped.to_dicts()


def _hints(vocab: dict[str, list[dict[str, Any]]]) -> tuple[str, ...]:
    """Slot names no codelist knows that read like placeholders (a hint, never a decision)."""
    return tuple(
        f"slot name '{v['value']}' ({v['rows']:,} contacts) looks like a placeholder, not a clinic: if these are "
        "not real appointments, add it to dummy_slot_names in the site's rule pack"
        for v in vocab.get("slot_name", []) if v["codelist"] is None and looks_like_placeholder(str(v["value"])))


def check_extract(input_dir: Path, profiles: Profile | Sequence[Profile], pack: RulePack | None = None,
                  practice_sharing: Path | None = None) -> CheckReport:
    """Check ``input_dir`` against one or more profiles without writing a run; the
    vocabulary is matched against ``pack`` (default: the shipped rule pack). With
    ``practice_sharing``, the practice file is read by a profile's practice_sharing table
    and its problems and blocks are reported too."""
    profile_list = [profiles] if isinstance(profiles, Profile) else list(profiles)
    practice_profile = reference_profile(canonical.PRACTICE_TABLE, profile_list, practice_sharing)
    if practice_sharing is not None and not practice_sharing.is_file():
        raise InputError(f"practice sharing settings not found: {practice_sharing}")
    files = discover(input_dir, profiles)
    layout: list[str] = []
    fixes: list[str] = []
    unfit: set[str] = set()
    catalogue = load_catalogue()
    for f in files:
        try:
            present = read_columns(f)
        except InputError as exc:  # a header the profile's dialect cannot split: a layout problem
            if isinstance(exc.__context__, OSError):
                raise  # an unreadable file is an input error (exit 3), not a layout to fix
            layout.append(f"{f.table}: {exc}")
            fixes += dialect_suggestion(f)
            unfit.add(f.table)
            continue
        absent = missing_columns(f.spec(), present) if present else []
        if absent and present is not None:
            layout.append(f"{f.name} ({f.table}): missing column(s) {', '.join(absent)}")
            fixes += layout_suggestions(f, present, absent, catalogue)
        repeated = repeated_columns(f, present) if present else []
        layout += repeated
        if absent or repeated:
            unfit.add(f.table)
    pack = pack if pack is not None else load_pack(None)
    practices = None
    if practice_sharing is not None and practice_profile is not None:
        try:
            practices = read_practice_sharing(practice_sharing, practice_profile)
        except ProfileError as exc:  # a layout problem, reported with the others
            layout += exc.problems
    work = Path(tempfile.mkdtemp(prefix="handover-check-"))
    try:
        tables = [t for t in canonical.TABLES if t not in unfit]
        ingested = ingest(input_dir, profiles, work, only_tables=tables, files=files)
        found = {**ingested.tables, **({} if practices is None else {"practice_sharing": practices.frame.lazy()})}
        vocab = vocabulary(found, pack)
        entries = sharing.entries(ingested.tables, pack, None if practices is None else practices.frame.lazy())
        # memory: whole: every sharing entry of the extract (``handover check``, before a run): ``summary`` counts
        # them and lists every unrecognised value with its entries
        blocks = sharing.summary(sharing.deciding(entries, sharing.state(entries)).collect())
    finally:
        shutil.rmtree(work, ignore_errors=True)
    quarantine = ingested.quarantine if practices is None else pl.concat([ingested.quarantine, practices.quarantine])
    rows_read = {f.name: f.rows_read for f in ingested.files}
    if practices is not None:
        rows_read[practices.file.name] = practices.file.rows_read
    problems = _summarise(quarantine)
    suggest(problems, quarantine, files, rows_read, catalogue)
    return CheckReport(tuple(layout), sum(rows_read.values()), tuple(problems), vocab, _hints(vocab), tuple(fixes),
                       bindings(pack), blocks)
