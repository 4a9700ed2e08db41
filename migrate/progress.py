"""Progress reporting from the engine to whoever is watching.

The engine calls a ``Progress`` object; the default does nothing. ``cli.py`` passes one
that draws rich progress bars on a terminal, so no stage imports rich.
"""

from __future__ import annotations


class Progress:
    """Receives stage progress; every method is a no-op here."""

    def start(self, task: str, total: int | None = None) -> None:
        """A stage named ``task`` begins, with ``total`` steps if known."""

    def advance(self, task: str, steps: int = 1, note: str = "") -> None:
        """``steps`` more steps of ``task`` are done; ``note`` says what (no patient data)."""

    def finish(self, task: str) -> None:
        """``task`` is complete."""


NULL_PROGRESS = Progress()
