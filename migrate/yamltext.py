"""The one YAML reader for everything handover reads: mapping profiles, rule packs,
identity settings, declared files, report layouts and the hazard log.

Configuration is full of codes, and YAML 1.1 (what PyYAML implements) silently turns
some of them into something else: ``0123`` into the octal number 83, ``1:30`` into the
sexagesimal 90, ``yes``/``no``/``on``/``off`` into booleans, ``1e3`` into 1000.0,
``2022-10-01`` into a date. Here every scalar stays the text written, except ``true``
and ``false`` (booleans) and ``null``/``~``/blank (None). A file that needs a number
(a threshold, a weight, a count) converts the text itself with ``number`` or
``whole_number``, and says so when it is not one.

A key repeated in one mapping is an error rather than "the last one wins": a profile
mapping ``"1": routine`` and later ``"1": urgent`` must not pass silently.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from migrate.errors import ConfigError

__all__ = ["load_yaml", "number", "read_yaml", "whole_number"]

_KEPT = ("tag:yaml.org,2002:null",)  # implicit types kept besides true/false: null, ~ and blank
_BOOL = re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$")
_NUMBER = re.compile(r"^[+-]?(?:\d+(?:\.\d*)?|\.\d+)$")


class _TextLoader(yaml.SafeLoader):
    """A SafeLoader whose only implicit types are null and true/false; no repeated keys."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, yaml.Node] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if isinstance(key, str | bool | int | float) or key is None:
                if key in seen:
                    raise yaml.constructor.ConstructorError(
                        "while reading a mapping", node.start_mark,
                        f"the key '{key}' appears twice (first {seen[key].start_mark}); keep one", key_node.start_mark)
                seen[key] = key_node
        return super().construct_mapping(node, deep=deep)


_TextLoader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag in _KEPT]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_TextLoader.add_implicit_resolver("tag:yaml.org,2002:bool", _BOOL, list("tTfF"))


def read_yaml(data: bytes | str) -> Any:
    """Parse YAML text with scalars kept as text (module docstring); ``yaml.YAMLError`` on
    bad syntax or a repeated key. A UTF-8 byte-order mark is tolerated."""
    if isinstance(data, bytes):
        data = data.decode("utf-8-sig")
    return yaml.load(data, Loader=_TextLoader)  # noqa: S506 - a SafeLoader subclass


def load_yaml(path: Path, what: str) -> Any:
    """Read and parse the YAML file ``path``; ``ConfigError`` (exit 2) naming ``what`` and the
    file when it cannot be read, is not UTF-8 or is not valid YAML."""
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        raise ConfigError(f"{what} {path}: cannot be read (not found)") from None
    except OSError as exc:
        raise ConfigError(f"{what} {path}: cannot be read ({exc.strerror or exc})") from None
    try:
        return read_yaml(data)
    except UnicodeDecodeError:
        raise ConfigError(f"{what} {path}: not UTF-8 text") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{what} {path} is not valid YAML", [f"{path}: {' '.join(str(exc).split())}"]) from None


def number(value: Any) -> int | float | None:
    """A plain decimal written in the file (``84``, ``-14``, ``0.95``) as a number; None for
    anything else (words, ``1e3``, ``1:30``, booleans), so the caller can say what it expected."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return value
    if isinstance(value, str) and _NUMBER.match(value.strip()):
        text = value.strip()
        return float(text) if "." in text else int(text)
    return None


def whole_number(value: Any) -> int | None:
    """A whole number written in the file (``18942``), or None."""
    found = number(value)
    return found if isinstance(found, int) else None
