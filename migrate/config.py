"""The configuration of one batch, validated before any data is read and then frozen.

``RunConfig.load`` checks the options and loads every configuration file (mapping
profiles, rule pack, identity settings, declaration); a problem is a ``ConfigError``
(exit 2) or, for a missing input, an ``InputError`` (exit 3), raised before the extract is
opened.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING

from migrate import __version__, policies, summary
from migrate.errors import ConfigError, InputError
from migrate.policies import InactivePatients, Policy, SharingPolicy
from migrate.identity import IdentitySettings, load_identity_settings
from migrate.manifest import run_id, sha256_file
from migrate.profile import Profile, load_profile
from migrate.rules import RulePack, load_pack

if TYPE_CHECKING:
    from migrate.reports.declared import Declaration


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
    previous: Path | None = None
    declaration: Declaration | None = None

    @classmethod
    def load(cls, input_dir: Path, mapping: str | Path | Sequence[str | Path], cutover: date, out_dir: Path,
             rules: str | Path | None = None, sharing_policy: str = "withhold-clinical",
             target_index: Path | None = None, emit_fhir: bool = True, bundle_size: int = 500,
             previous: Path | None = None, declared: Path | None = None,
             inactive_patients: str = "exclude") -> RunConfig:
        """Validate options and configuration (exit 2 on any problem) without reading data.

        ``mapping`` is one profile or several (e.g. the CSV extract's and the HL7 feed's),
        in the order their rows apply: for a key found in several, the latest wins.
        """
        policy = policies.sharing_policy(sharing_policy)
        if policy is None:
            raise ConfigError(f"unknown sharing policy '{sharing_policy}': use one of "
                              f"{', '.join(policies.SHARING_POLICIES)}")
        inactive = policies.inactive_patients(inactive_patients)
        if inactive is None:
            raise ConfigError(f"unknown inactive-patients policy '{inactive_patients}': use one of "
                              f"{', '.join(policies.INACTIVE_PATIENTS)}")
        names = [mapping] if isinstance(mapping, (str, Path)) else list(mapping)
        profiles = tuple(load_profile(m) for m in names)
        if not any("patients" in p.tables for p in profiles):
            raise ConfigError("no mapping profile maps the patients table")
        pack_path = resolve_rules_path(rules)
        pack = load_pack(pack_path)
        id_path = identity_path(pack_path)
        settings = load_identity_settings(id_path)
        if target_index is not None and not Path(target_index).is_file():
            raise InputError(f"target index not found: {target_index}")
        if bundle_size < 1:
            raise ConfigError(f"bundle size must be at least 1 patient (got {bundle_size})")
        if previous is not None:
            from migrate.reports.rundata import RunFolder

            RunFolder.open(Path(previous), check_tables=False)  # exit 3 unless it is a run folder
        declaration = None
        if declared is not None:
            from migrate.reports import load_declared

            declaration = load_declared(Path(declared))  # exit 2 on a bad declaration, before any data is read
        return cls(input_dir=input_dir, profiles=profiles, cutover=cutover, out_dir=out_dir, rules=pack,
                   identity_settings=settings, identity_path=id_path, identity_sha256=sha256_file(id_path),
                   sharing_policy=policy, inactive_patients=inactive, target_index=None if target_index is None else Path(target_index),
                   rules_path=pack_path, emit_fhir=emit_fhir, bundle_size=bundle_size,
                   previous=None if previous is None else Path(previous), declaration=declaration)

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
        return run_id([__version__, *(p.sha256 for p in self.profiles), self.rules.sha256, self.identity_sha256,
                       self.cutover.isoformat(), self.sharing_policy, self.inactive_patients, target,
                       *sorted(input_hashes)])
