"""The configuration of one batch, validated before any data is read and then frozen.

``RunConfig.load`` checks the options and loads every configuration file (mapping
profiles, rule pack, identity settings, target-index columns, declaration, previous run)
and reports **every** problem of every file at once: a ``ConfigError`` (exit 2) listing
them all, or, when the only problems are missing inputs, an ``InputError`` (exit 3).
Nothing is read from the extract before that.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import date
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

import polars as pl

from migrate import __version__, canonical, policies, summary
from migrate.errors import ConfigError, HandoverError, InputError, ProfileError
from migrate.policies import InactivePatients, Policy, SharingPolicy
from migrate.summary import FhirCompression, FhirForm
from migrate.identity import IdentitySettings, load_identity_settings
from migrate.manifest import run_id, sha256_file
from migrate.profile import Profile, load_profile
from migrate.rules import RulePack, load_pack

if TYPE_CHECKING:
    from migrate.reports.declared import Declaration
    from migrate.review.files import DecisionFile

T = TypeVar("T")


class Problems:
    """Every configuration problem found while loading, reported together (Splink's
    ErrorLogger, pandera's lazy validation): ``config`` ones exit 2, ``inputs`` ones (a
    file or folder that is missing or unreadable) exit 3 when they are all there is."""

    def __init__(self) -> None:
        self.config: list[str] = []
        self.inputs: list[str] = []
        self.errors: list[HandoverError] = []

    def attempt(self, load: Callable[[], T]) -> T | None:
        """``load()``, or None with its problems recorded (each names its file)."""
        try:
            return load()
        except InputError as exc:
            self.inputs += exc.problems or [str(exc)]
            self.errors.append(exc)
        except ConfigError as exc:
            self.config += exc.problems or [str(exc)]
            self.errors.append(exc)
        return None

    def raise_any(self) -> None:
        """ConfigError listing every problem (inputs' too), else InputError, else nothing.
        When one loader failed and nothing else, its own error is raised as it was."""
        every = self.config + self.inputs
        if len(self.errors) == 1 and len(every) == len(self.errors[0].problems or [None]):
            raise self.errors[0]
        one = len(every) == 1  # one problem: one line
        if self.config:
            raise ConfigError(every[0]) if one else ConfigError(
                f"{len(every)} configuration problem(s); nothing was read", every)
        if self.inputs:
            raise InputError(every[0]) if one else InputError(
                f"{len(every)} input(s) missing or unreadable; nothing was read", every)


def load_profiles(mapping: str | Path | Sequence[str | Path], found: Problems | None = None) -> tuple[Profile, ...]:
    """Every profile of ``--mapping`` (one or several), with every problem of every one
    reported together; one of them must map the patients table."""
    problems = found if found is not None else Problems()
    names = [mapping] if isinstance(mapping, (str, Path)) else list(mapping)
    loaded = [problems.attempt(partial(load_profile, m)) for m in names]
    profiles = tuple(p for p in loaded if p is not None)
    if len(profiles) == len(names) and not any("patients" in p.tables for p in profiles):
        problems.config.append("no mapping profile maps the patients table")
    if found is None:
        problems.raise_any()
    return profiles


def check_target_index(path: Path, profile: Profile | None) -> None:
    """The target index exists and its header has the columns it is read by (its header
    only): the ``target_index`` table's columns of ``profile``, or without one the
    canonical ``local_id`` and ``nhs_number`` identity matches on."""
    from migrate.identity.target import REQUIRED
    from migrate.target_index import TABLE

    if profile is not None:
        return check_reference(path, profile, TABLE)
    if not path.is_file():
        raise InputError(f"target index not found: {path}")
    try:
        scan = pl.scan_parquet(path) if path.suffix.lower() in (".parquet", ".pq") else pl.scan_csv(
            path, infer_schema=False, encoding="utf8-lossy")
        names = scan.collect_schema().names()
    except (OSError, pl.exceptions.PolarsError) as exc:
        raise InputError(f"target index {path}: not readable ({type(exc).__name__})") from None
    absent = [c for c in REQUIRED if c not in names]
    if absent:  # the message the target-index reader gives (migrate.target_index)
        raise ProfileError("the target index does not fit handover",
                           [f"{path.name} ({TABLE}): missing column(s) {', '.join(absent)}; "
                            f"columns present: {', '.join(names) or 'none'}"])


def check_reference(path: Path, profile: Profile, table: str) -> None:
    """A reference file (``--target-index``, ``--practice-sharing``) exists and its header
    has every column ``profile``'s ``table`` table reads (its header only); the messages
    the reader itself gives (``migrate.reference``)."""
    from migrate.mapping import missing_columns
    from migrate.reference import WHAT
    from migrate.sources import InputFile, read_columns

    if not path.is_file():
        raise InputError(f"{WHAT[table]} not found: {path}")
    try:
        names = list(read_columns(InputFile(path, path.name, profile, (table,))) or ())
    except (OSError, pl.exceptions.PolarsError) as exc:
        raise InputError(f"{WHAT[table]} {path}: not readable ({type(exc).__name__})") from None
    absent = missing_columns(profile.tables[table], tuple(names)) if names else list(
        profile.tables[table].source_columns)
    if absent:
        raise ProfileError(f"the {WHAT[table]} does not fit mapping profile {profile.name}",
                           [f"{path.name} ({table}): missing column(s) {', '.join(absent)}; "
                            f"columns present: {', '.join(names) or 'none'}"])


def practice_mapping(profiles: Sequence[Profile], practice_sharing: Path | None) -> Profile | None:
    """The profile whose ``practice_sharing`` table reads ``--practice-sharing`` (the first
    ``--mapping`` profile with one), checked against the file's header; None without a
    file. ConfigError (exit 2) when no profile has the table."""
    from migrate.reference import reference_profile

    if practice_sharing is None:
        return None
    profile = reference_profile(canonical.PRACTICE_TABLE, profiles, practice_sharing)
    if profile is not None:
        check_reference(practice_sharing, profile, canonical.PRACTICE_TABLE)
    return profile


def resolve_rules_path(rules: str | Path | None) -> Path | None:
    """``--rules`` takes a pack file or a folder holding ``default.yaml``."""
    if rules is None:
        return None
    path = Path(rules)
    if path.is_dir():
        path = path / "default.yaml"
    if not path.is_file():
        raise ConfigError(f"rule pack not found: {rules} (give a YAML file or a folder with default.yaml)")
    return path


def identity_path(pack_path: Path | None) -> Path:
    """A site pack folder may hold its own identity.yaml; otherwise the shipped one."""
    from migrate.identity.settings import default_path

    if pack_path is not None and (pack_path.parent / "identity.yaml").is_file():
        return pack_path.parent / "identity.yaml"
    return default_path()


@dataclass(frozen=True)
class RunConfig:
    """Everything one batch depends on; frozen once validated."""

    input_dir: Path
    profiles: tuple[Profile, ...]
    cutover: date
    out_dir: Path
    rules: RulePack
    identity_settings: IdentitySettings
    identity_path: Path
    identity_sha256: str
    sharing_policy: SharingPolicy = "withhold-clinical"
    inactive_patients: InactivePatients = "exclude"
    target_index: Path | None = None
    rules_path: Path | None = None
    emit_fhir: bool = True
    bundle_size: int = 500
    fhir_form: FhirForm = "both"  # --fhir-form: bundles and NDJSON, or NDJSON alone
    fhir_compression: FhirCompression = "none"  # --fhir-compression: of the NDJSON (gzip: .ndjson.gz)
    previous: Path | None = None
    declaration: Declaration | None = None
    target_mapping: Profile | None = None  # reads the target index (None: canonical column names)
    hazards: Path | None = None  # the clinical-safety hazard log that goes with the pack (None: the shipped one)
    seal_key: bytes | None = field(default=None, repr=False)  # HMAC key sealing the manifest (--key-file)
    practice_sharing: Path | None = None  # GP practices' sharing settings (--practice-sharing)
    practice_mapping: Profile | None = None  # the profile whose practice_sharing table reads them
    decisions: tuple[DecisionFile, ...] = ()  # the filled-in worklists of --decisions, read (rows not yet judged)
    # Where the FHIR output's partitions run (migrate.executor); the outputs do not depend on them.
    executor: str = "local"
    scheduler: str | None = None
    partitions: int | None = None
    # An fsspec URL (memory://, s3://…) the extract is copied from into the run's work area
    # first (migrate.locations); input_dir is then that copy. None: input_dir is read in place.
    input_url: str | None = None

    @classmethod
    def load(cls, input_dir: Path | str, mapping: str | Path | Sequence[str | Path], cutover: date,
             out_dir: Path | str,
             rules: str | Path | None = None, sharing_policy: str = "withhold-clinical",
             target_index: Path | None = None, emit_fhir: bool = True, bundle_size: int = 500,
             previous: Path | None = None, declared: Path | None = None,
             inactive_patients: str = "exclude", target_mapping_profile: str | Path | None = None,
             key_file: Path | None = None, practice_sharing: Path | None = None,
             decisions: Sequence[Path] = (), executor: str = "local", scheduler: str | None = None,
             partitions: int | None = None, fhir_form: str = "both", fhir_compression: str = "none") -> RunConfig:
        """Validate options and configuration (exit 2 on any problem) without reading data.

        ``mapping`` is one profile or several (e.g. the CSV extract's and the HL7 feed's),
        in the order their rows apply: for a key found in several, the latest wins.
        """
        found = Problems()
        policy = policies.sharing_policy(sharing_policy)
        if policy is None:
            found.config.append(f"--sharing-policy: unknown policy '{sharing_policy}'; use one of "
                                f"{', '.join(policies.SHARING_POLICIES)}")
        inactive = policies.inactive_patients(inactive_patients)
        if inactive is None:
            found.config.append(f"--inactive-patients: unknown policy '{inactive_patients}'; use one of "
                                f"{', '.join(policies.INACTIVE_PATIENTS)}")
        if bundle_size < 1:
            found.config.append(f"--bundle-size: at least 1 patient (got {bundle_size})")
        form = next((f for f in summary.FHIR_FORMS if f == fhir_form), None)
        if form is None:
            found.config.append(f"--fhir-form: unknown form '{fhir_form}'; use one of {', '.join(summary.FHIR_FORMS)}")
        elif not emit_fhir and form != "both":
            found.config.append(f"--fhir-form {form} chooses the form of the FHIR output; with --no-fhir there is "
                                "none (drop one of them)")
        compression = next((c for c in summary.FHIR_COMPRESSIONS if c == fhir_compression), None)
        if compression is None:
            found.config.append(f"--fhir-compression: unknown compression '{fhir_compression}'; use one of "
                                f"{', '.join(summary.FHIR_COMPRESSIONS)}")
        elif not emit_fhir and compression != "none":
            found.config.append(f"--fhir-compression {compression} compresses the FHIR NDJSON; with --no-fhir there "
                                "is none (drop one of them)")
        from migrate.executor import check_options

        if not emit_fhir and (executor != "local" or partitions is not None):
            found.config.append("--executor and --partitions split the FHIR output; with --no-fhir there is "
                                "nothing to split (drop them or the --no-fhir)")
        from migrate.locations import resolve

        source, problems = resolve("--input", input_dir, remote=True)  # a path, file:// or an fsspec URL
        found.inputs += [p for p in problems if p.startswith("input folder not found")]
        found.config += [p for p in problems if not p.startswith("input folder not found")]
        if source.path is not None and not source.path.is_dir():
            found.inputs.append(f"input folder not found: {input_dir}")
        target, problems = resolve("--out", out_dir, remote=False)  # the run folder: a path on this machine
        found.config += problems
        out_dir = target.path or Path(target.given)
        # with --scheduler: its workers see the run folder's filesystem (after --out is known)
        found.config += check_options(executor, scheduler, partitions, target.path)
        profiles = load_profiles(mapping, found)
        pack_path = found.attempt(lambda: resolve_rules_path(rules))
        pack = found.attempt(lambda: load_pack(pack_path))
        id_path = identity_path(pack_path)
        settings = found.attempt(lambda: load_identity_settings(id_path))
        from migrate.target_index import target_mapping

        target_profile = found.attempt(lambda: target_mapping(target_mapping_profile, profiles, target_index))
        if target_index is not None and (target_mapping_profile is None or target_profile is not None):
            found.attempt(lambda: check_target_index(Path(target_index), target_profile))
        practice_path = None if practice_sharing is None else Path(practice_sharing)
        practice_profile = found.attempt(lambda: practice_mapping(profiles, practice_path))
        if previous is not None and Path(previous).resolve() == Path(out_dir).resolve():
            found.config.append(f"--previous {previous} is the --out folder: the run would replace the batch it "
                                "chains to")
        from migrate.runfolder import check_target

        if target.path is not None:
            found.attempt(lambda: check_target(Path(out_dir)))
        if previous is not None:
            from migrate.reports.rundata import RunFolder

            found.attempt(lambda: RunFolder.open(Path(previous), check_tables=False))
            from migrate.review.stage import previous_decisions

            found.attempt(lambda: previous_decisions(Path(previous)))  # the decisions it carries forward
        from migrate.hazards import hazards_path, load_hazards

        hazards = hazards_path(pack_path)
        found.attempt(lambda: load_hazards(hazards))  # a broken hazard log is a configuration problem too
        declaration = None
        if declared is not None:
            from migrate.reports import load_declared

            declaration = found.attempt(lambda: load_declared(Path(declared)))
        seal_key = None
        if key_file is not None:
            from migrate.reports.pseudonymise import load_key

            seal_key = found.attempt(lambda: load_key(Path(key_file)))
        from migrate.review.files import read_decisions

        read = [found.attempt(partial(read_decisions, Path(p))) for p in decisions]
        found.raise_any()
        if policy is None or inactive is None or pack is None or settings is None or form is None or compression is None:  # recorded above
            raise ConfigError("configuration could not be loaded", found.config)
        return cls(input_dir=source.path or Path(source.given), input_url=source.url, profiles=profiles,
                   cutover=cutover, out_dir=out_dir, rules=pack,
                   identity_settings=settings, identity_path=id_path, identity_sha256=sha256_file(id_path),
                   sharing_policy=policy, inactive_patients=inactive,
                   target_index=None if target_index is None else Path(target_index),
                   rules_path=pack_path, emit_fhir=emit_fhir, bundle_size=bundle_size, fhir_form=form,
                   fhir_compression=compression,
                   previous=None if previous is None else Path(previous), declaration=declaration,
                   target_mapping=target_profile, hazards=hazards, seal_key=seal_key,
                   practice_sharing=practice_path, practice_mapping=practice_profile,
                   decisions=tuple(d for d in read if d is not None), executor=executor,
                   scheduler=scheduler, partitions=partitions)

    @property
    def policy(self) -> Policy:
        """The choices that decide dispositions (never the output options)."""
        return Policy(self.sharing_policy, self.inactive_patients)

    @property
    def mappings(self) -> list[summary.Profile]:
        """Name, source system and sha256 of each profile, for the manifest and the report."""
        return [{"name": p.name, "sha256": p.sha256, "source_system": p.source_system} for p in self.profiles]

    def run_id(self, input_hashes: list[str]) -> str:
        """The deterministic run id of this configuration over these inputs."""
        target = sha256_file(self.target_index) if self.target_index else ""
        own = [self.target_mapping.sha256] if self.target_mapping and self.target_mapping not in self.profiles else []
        # The previous run's decisions are carried forward into this one: they change it as a file would.
        carried = self.previous / "decisions.parquet" if self.previous is not None else None
        prior = [f"previous-decisions:{sha256_file(carried)}"] if carried is not None and carried.is_file() else []
        return run_id([__version__, *(p.sha256 for p in self.profiles), self.rules.sha256, self.identity_sha256,
                       self.cutover.isoformat(), self.sharing_policy, self.inactive_patients, target, *own,
                       *sorted(input_hashes), *(f"decisions:{d.sha256}" for d in self.decisions), *prior])
