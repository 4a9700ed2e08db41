"""Where the shipped data folders (mappings/, rules/, reports/) are.

In a source checkout or an editable install they sit at the repository root beside
``migrate/``; an installed wheel puts them in ``<prefix>/share/handover/<name>``.
"""

from __future__ import annotations

import sys
from pathlib import Path

_PACKAGE = Path(__file__).resolve().parent


def data_dir(name: str) -> Path:
    """The folder holding shipped ``name`` data (mappings, rules or reports)."""
    for candidate in (_PACKAGE.parent / name, Path(sys.prefix) / "share" / "handover" / name):
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError(f"shipped data folder '{name}' is missing from the installation")


def mappings_dir() -> Path:
    """Shipped mapping profiles."""
    return data_dir("mappings")


def rules_dir() -> Path:
    """Shipped rule packs."""
    return data_dir("rules")


def reports_dir() -> Path:
    """Shipped report templates."""
    return data_dir("reports")
