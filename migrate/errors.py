"""The one exception tree of handover; exit codes live on the classes.

    HandoverError                 exit 1 unless a subclass says otherwise
    ├── ConfigError               exit 2: bad option, mapping profile or rule pack
    │   └── ProfileError          every problem of a profile, listed at once
    ├── InputError                exit 3: an input folder or file cannot be read (and any
    │                             I/O error: ``InputError.from_os_error``)
    └── ReconciliationError       exit 1: an invariant or a verification failed

``cli.py`` catches ``HandoverError`` once and exits with ``exit_code``. Messages carry
identifiers (file, row, field, rule id, run id), never a patient's name, date of birth
or NHS number.
"""

from __future__ import annotations


class HandoverError(Exception):
    """Base of every error handover raises on purpose."""

    exit_code = 1

    def __init__(self, message: str, problems: list[str] | None = None) -> None:
        self.problems = list(problems or [])
        super().__init__(message)

    def render(self) -> str:
        """The message followed by each problem on its own line."""
        lines = [str(self)]
        lines += [f"  - {p}" for p in self.problems]
        return "\n".join(lines)


class ConfigError(HandoverError):
    """A bad option, mapping profile or rule pack: nothing was read."""

    exit_code = 2


class ProfileError(ConfigError):
    """A mapping profile (or its fit to the extract) is wrong; ``problems`` lists them all."""


class InputError(HandoverError):
    """An input folder or file is missing or unreadable."""

    exit_code = 3

    @classmethod
    def from_os_error(cls, exc: OSError) -> InputError:
        """An I/O error (permission, missing, disk full, read-only folder) as one line naming
        the path: ``<path>: <what the system said>``."""
        where = " -> ".join(str(p) for p in (exc.filename, exc.filename2) if p is not None) or "(no path given)"
        return cls(f"{where}: {exc.strerror or type(exc).__name__}")


class ReconciliationError(HandoverError):
    """An invariant of the run, or a verification of a finished run, failed."""

    exit_code = 1
