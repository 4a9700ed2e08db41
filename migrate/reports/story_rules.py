"""The rule path behind a patient's cohort and flags, from the rule pack the run used.

A referral's cohort is the first case of the pack's ``cohort`` rule whose condition holds;
its path is the cases before it (which did not hold) and the one that did. The pack is the
one kept with the run (``config/rules.yaml``) or, for a run that did not keep it, the
shipped pack when its sha256 is the one the manifest records. Otherwise the path is not
shown (the recorded ``cohort_reason`` still is), and ``note`` says why: a pack that may
differ is never presented as the one that decided.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from migrate.errors import ConfigError
from migrate.frozen import RULES
from migrate.reports.rundata import RunFolder
from migrate.rules import RulePack, load_pack
from migrate.rules.explain import producer

FROZEN_PACK = RULES  # config/rules.yaml, frozen by the run (migrate.frozen)


@dataclass(frozen=True)
class RulePath:
    """The run's rule pack (or None) and a sentence saying where it came from."""

    pack: RulePack | None
    note: str

    @classmethod
    def of(cls, run: RunFolder) -> RulePath:
        """The pack ``run`` was made with, if it can be known from the run folder."""
        if run.has(FROZEN_PACK):
            try:
                return cls(load_pack(run.path / FROZEN_PACK), f"the rule pack kept with the run ({FROZEN_PACK})")
            except ConfigError:
                return cls(None, f"the rule pack kept with the run ({FROZEN_PACK}) does not load: no rule path shown")
        recorded = (run.manifest.get("rules") or {}).get("sha256")
        shipped = load_pack(None)
        if recorded and recorded == shipped.sha256:
            return cls(shipped, "the shipped rule pack, the one the run used (its sha256 is the manifest's)")
        return cls(None, "the run's rule pack is not in its folder and is not the shipped one: "
                         "the rule path is not shown, only the reasons recorded at the run")

    def cohort(self, cohort: str | None, reason: str | None) -> list[dict[str, Any]]:
        """The cases of the cohort rule up to the one that gave ``cohort``: value, condition, held."""
        rule = producer(self.pack, "referral", "cohort") if self.pack is not None else None
        if rule is None or cohort is None:
            return []
        chosen = [i for i, case in enumerate(rule.cases) if case.value == cohort]
        if len(chosen) > 1 and reason:  # several cases give this cohort: the recorded reason tells which
            chosen = [i for i in chosen if reason.startswith(rule.cases[i].reason.split("{", 1)[0])] or chosen
        if not chosen:
            return []
        return [{"rule": rule.id, "value": case.value, "condition": " ".join(case.condition.split()),
                 "held": i == chosen[0]} for i, case in enumerate(rule.cases[:chosen[0] + 1])]

    def condition(self, rule_id: str) -> str | None:
        """The condition of the rule ``rule_id`` as written in the pack (None: not a pack rule)."""
        if self.pack is None:
            return None
        rule = next((r for r in self.pack.rules if r.id == rule_id), None)
        return None if rule is None or rule.condition is None else " ".join(rule.condition.split())
