"""The configuration a run used, frozen into its folder (``config/``) and read back from there.

A run writes, before any data is read:

    config/mapping-1.yaml, mapping-2.yaml …   each mapping profile, byte for byte, in --mapping order
    config/rules.yaml                         the rule pack after ``extends:``: one self-contained document
    config/identity.yaml                      the identity settings, byte for byte
    config/declared.json                      the declaration (when one was given)
    config/hazards.yaml                       the clinical-safety hazard log, byte for byte
    config/practice-sharing/<name>            the GP practices' sharing settings (--practice-sharing),
                                              byte for byte under their own name (when given)

and records each with its sha256 in the manifest's ``config`` block (they are also
outputs, so ``handover verify`` covers them). ``handover fhir``, ``report`` and ``diff``
read the configuration from there, never from the shipped defaults: a run made with a
site's pack re-emits and re-renders with that pack. A run folder without ``config/`` is
refused (exit 3) rather than silently read with the shipped files.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import yaml

from migrate.errors import ConfigError, InputError
from migrate.manifest import DECLARED as DECLARED, sha256_file
from migrate.outputs import write_atomic, write_text
from migrate.summary import FrozenConfig, FrozenFile, FrozenMapping

if TYPE_CHECKING:
    from migrate.identity import IdentitySettings
    from migrate.practices import PracticeSettings
    from migrate.profile import Profile
    from migrate.reports.declared import Declaration
    from migrate.rules.model import RulePack

T = TypeVar("T")
CONFIG_DIR = "config"
RULES = f"{CONFIG_DIR}/rules.yaml"
IDENTITY = f"{CONFIG_DIR}/identity.yaml"
HAZARDS = f"{CONFIG_DIR}/hazards.yaml"
PRACTICE_SHARING = f"{CONFIG_DIR}/practice-sharing"


def mapping_path(position: int) -> str:
    """Where the ``position``-th (1-based) mapping profile of a run is kept."""
    return f"{CONFIG_DIR}/mapping-{position}.yaml"


def _copy(source: Path, expected_sha256: str, target: Path, what: str) -> None:
    """Copy ``source`` byte for byte, refusing if it changed since it was loaded."""
    data = source.read_bytes()
    write_atomic(target, lambda tmp: tmp.write_bytes(data))
    if sha256_file(target) != expected_sha256:
        raise ConfigError(f"{what} {source} changed while the run was starting; run again")


def _record(out: Path, rel: str) -> FrozenFile:
    return {"path": rel, "sha256": sha256_file(out / rel)}


def freeze(out: Path, profiles: Sequence[Profile], pack: RulePack, identity_path: Path, identity_sha256: str,
           declaration: Declaration | None, hazards: Path, practice_sharing: Path | None = None) -> FrozenConfig:
    """Write the run's configuration into ``out/config`` and return its manifest record."""
    mappings: list[FrozenMapping] = []
    for position, profile in enumerate(profiles, start=1):
        rel = mapping_path(position)
        _copy(profile.path, profile.sha256, out / rel, "mapping profile")
        mappings.append({"path": rel, "sha256": sha256_file(out / rel), "name": profile.name})
    header = (f"# The rule pack run used: {pack.name} {pack.version}, after extends:, frozen by handover.\n"
              f"# Source files: {', '.join(f'{p.name} ({h[:12]})' for p, h in pack.files)}\n")
    write_text(header + yaml.safe_dump(dict(pack.document), sort_keys=False, allow_unicode=True, width=100),
               out / RULES)
    _copy(identity_path, identity_sha256, out / IDENTITY, "identity settings")
    data = hazards.read_bytes()
    write_atomic(out / HAZARDS, lambda tmp: tmp.write_bytes(data))
    declared = None
    if declaration is not None:
        write_declaration(out, declaration)
        declared = _record(out, DECLARED)
    practices = None
    if practice_sharing is not None:
        rel = f"{PRACTICE_SHARING}/{practice_sharing.name}"
        _copy(practice_sharing, sha256_file(practice_sharing), out / rel, "practice sharing file")
        practices = _record(out, rel)
    return {"mappings": mappings, "rules": _record(out, RULES), "identity": _record(out, IDENTITY),
            "declared": declared, "hazards": _record(out, HAZARDS), "practice_sharing": practices}


def write_declaration(out: Path, declaration: Declaration) -> Path:
    """Keep ``declaration`` as the run's ``config/declared.json``."""
    text = json.dumps(declaration.asdict(), indent=2, sort_keys=True, ensure_ascii=False) + "\n"
    return write_text(text, out / DECLARED)


# --- reading a run's configuration back ------------------------------------------------


def _frozen(run_dir: Path, rel: str) -> Path:
    path = run_dir / rel
    if not path.is_file():
        raise InputError(f"{run_dir}: the run's configuration is not in its folder ({rel} missing); "
                         "a run made before handover froze its configuration must be run again")
    return path


def _load(run_dir: Path, rel: str, load: Callable[[Path], T]) -> T:
    """``load`` of the run's frozen ``rel``; InputError (exit 3, one line) when it is missing
    or no longer loads (the run folder was altered)."""
    path = _frozen(run_dir, rel)
    try:
        return load(path)
    except ConfigError as exc:
        first = exc.problems[0] if exc.problems else str(exc)
        more = f" (and {len(exc.problems) - 1} more)" if len(exc.problems) > 1 else ""
        raise InputError(f"{run_dir}: {rel} no longer loads, the run folder was altered: {first}{more}") from None


def load_pack(run_dir: Path) -> RulePack:
    """The rule pack the run used (``config/rules.yaml``)."""
    from migrate.rules import load_pack as load

    return _load(run_dir, RULES, load)


def load_identity(run_dir: Path) -> IdentitySettings:
    """The identity settings the run used (``config/identity.yaml``)."""
    from migrate.identity import load_identity_settings

    return _load(run_dir, IDENTITY, load_identity_settings)


def load_declaration(run_dir: Path) -> Declaration | None:
    """The declaration kept with the run, or None when none was given."""
    from migrate.reports.declared import Declaration
    from migrate.reports.rundata import read_json

    path = run_dir / DECLARED
    return Declaration.from_dict(read_json(path)) if path.is_file() else None


def load_practice_sharing(run_dir: Path, manifest: dict[str, Any]) -> PracticeSettings | None:
    """The GP practices' sharing settings the run read (``config/practice-sharing/<name>``,
    by the first of the run's frozen profiles with a ``practice_sharing`` table, as the run
    chose it), or None when the run was given none."""
    from migrate.practices import read_practice_sharing
    from migrate.profile import load_profile

    entry = manifest_config(manifest).get("practice_sharing")
    if not isinstance(entry, dict):
        return None
    path = _frozen(run_dir, str(entry["path"]))
    count = len(manifest_config(manifest).get("mappings") or [])
    profiles = [_load(run_dir, mapping_path(i), load_profile) for i in range(1, count + 1)]
    profile = next((p for p in profiles if "practice_sharing" in p.tables), None)
    if profile is None:
        raise InputError(f"{run_dir}: no frozen mapping profile reads {entry['path']}; the run folder was altered")
    return read_practice_sharing(path, profile)


def manifest_config(manifest: dict[str, Any]) -> dict[str, Any]:
    """The manifest's ``config`` block (empty for a run made before configuration was frozen)."""
    block = manifest.get("config")
    return dict(block) if isinstance(block, dict) else {}
