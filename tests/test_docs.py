"""The docs a user and the next engineer read stay true: every command is in the README
with help text, and the module map names every package and module (after sqlite-utils'
tests/test_docs.py)."""

from __future__ import annotations

import re
from pathlib import Path

import click
import pytest

import cli

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")
ARCHITECTURE = (ROOT / "docs" / "architecture.md").read_text(encoding="utf-8")


def _commands(group: click.Group, prefix: str = "handover") -> list[tuple[str, click.Command]]:
    found: list[tuple[str, click.Command]] = []
    for name, command in sorted(group.commands.items()):
        path = f"{prefix} {name}"
        if isinstance(command, click.Group):
            found += _commands(command, path)
        else:
            found.append((path, command))
    return found


COMMANDS = _commands(cli.main)


def test_the_command_tree_is_found() -> None:
    assert {"handover run", "handover report", "handover rules explain"} <= {p for p, _ in COMMANDS}


@pytest.mark.parametrize(("path", "command"), COMMANDS, ids=[p for p, _ in COMMANDS])
def test_every_command_has_help_and_every_option_too(path: str, command: click.Command) -> None:
    assert command.help and command.help.strip(), f"{path} has no help text"
    for param in command.params:
        if isinstance(param, click.Option) and param.name != "help":
            assert param.help and param.help.strip(), f"{path} {'/'.join(param.opts)} has no help text"


@pytest.mark.parametrize("path", [p for p, _ in COMMANDS])
def test_every_command_is_in_the_readme(path: str) -> None:
    table = README[README.index("## The command line"):]
    assert f"`{path}" in table or f"/ `{path}" in table, f"{path} is not in the README's command table"


def _module_map() -> str:
    start = ARCHITECTURE.index("## Module map")
    end = ARCHITECTURE.find("\n## ", start + 1)
    return ARCHITECTURE[start:end if end > 0 else None]


def test_the_module_map_names_every_package_and_module() -> None:
    section = _module_map()
    named = set(re.findall(r"`(migrate(?:/[a-z0-9_]+)*(?:\.py|/)?)`", section))
    migrate = ROOT / "migrate"
    packages = {f"migrate/{p.relative_to(migrate).as_posix()}/" for p in migrate.rglob("__init__.py")
                if p.parent != migrate for p in [p.parent]}
    modules = {f"migrate/{p.relative_to(migrate).as_posix()}" for p in migrate.glob("*.py") if p.name != "__init__.py"}
    missing = sorted((packages | modules) - named)
    assert not missing, f"docs/architecture.md's module map does not name {missing}"
    stale = sorted(n for n in named if not (ROOT / n).exists())
    assert not stale, f"the module map names what does not exist: {stale}"
