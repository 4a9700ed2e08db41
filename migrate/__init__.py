"""handover: migrate NHS community-service caseloads between providers and prove nothing was lost.

The engine behind the ``handover`` command, importable as a library. Stages are functions
of polars LazyFrames; I/O happens only in ``migrate.sources`` (reading) and the writers.
"""

from __future__ import annotations

__version__ = "0.1.0"

from migrate.engine import configure as _configure

_configure()
