"""The hazard log in a run's audit pack: ``reports/hazard-log.html`` and reconciliation.json ``hazard_log``.

The run keeps the hazard log it was made under as ``config/hazards.yaml`` (frozen with the
rest of its configuration by ``handover run``, ``migrate.frozen``), so a re-render shows the same log; a run made before the log was kept
shows the shipped one and says so. The page lists each hazard with its risk before and
after its controls, the controls with the tests that evidence them, and how often the
hazard's causes were found in this run (flags raised, rows quarantined, withheld, merged).
No identifiers: the page is the same in the pseudonymised pack.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from migrate.frozen import HAZARDS
from migrate.hazards import default_hazards_path, load_hazards, run_view
from migrate.reports import html
from migrate.reports.rundata import RunFolder

STORED = HAZARDS  # the run's copy of the hazard log it was made under, frozen with its configuration
TEMPLATE = "hazard-log.html.j2"
PAGE = "hazard-log.html"


def section(run: RunFolder, summary: Mapping[str, Any]) -> dict[str, Any]:
    """reconciliation.json's ``hazard_log``: the run's hazard log with the run's figures."""
    stored = run.has(STORED)
    log = load_hazards(run.path / STORED if stored else default_hazards_path())
    view = run_view(log, summary)
    view["source"] = "kept with the run (config/hazards.yaml)" if stored else \
        "the shipped hazard log: this run did not keep the one it was made under"
    return view


def render_page(summary: Mapping[str, Any]) -> str:
    """The hazard-log page of ``summary`` (as in reconciliation.json): self-contained, offline."""
    return html.environment().get_template(TEMPLATE).render(s=summary, h=summary["hazard_log"])
