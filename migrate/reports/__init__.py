"""Reconciliation and reports of a finished run.

    from migrate.reports import write_reports, verify, diff_runs, pseudonymise
    result = write_reports(run_dir, previous=None, declared=None)   # reports/*, manifest sealed
    check = verify(run_dir)                                         # re-hash outputs, check the chain
    delta = diff_runs(run_a, run_b)                                 # new, gone, changed patients
    pseudonymise(run_dir, load_key(key_file), out_dir)              # the audit pack with tokens

Modules, one per concept: ``rundata`` (the run folder), ``totals`` (control totals),
``invariants`` (FHIR traceability), ``declared`` (declared vs found), ``waits``,
``worklist``, ``worklist_summary``, ``split`` (per service line), ``xlsx`` and ``textfit``
(row heights) (exception worklists), ``display`` (NHS numbers 3-3-4, dates dd/mm/yyyy for
people), ``charts`` and ``html`` (the page),
``chain`` (manifest chaining, verify), ``diff`` (delta between runs), ``pseudonymise``,
``terminal`` (rich summary) and ``reconciliation`` (``write_reports``, which chains them).
Every reader takes the run folder; nothing here opens the input extract.
"""

from __future__ import annotations

from migrate.reports.chain import (
    Failure,
    VerifyResult,
    manifest_sha256,
    record_previous,
    seal_outputs,
    verify,
)
from migrate.reports.declared import Declaration, DeclaredList, load_declared
from migrate.reports.diff import RunDiff, diff_renderables, diff_runs
from migrate.reports.pseudonymise import load_key, pseudonymise
from migrate.reports.reconciliation import ReportResult, write_reports
from migrate.reports.terminal import summary_renderables

__all__ = [
    "Declaration",
    "DeclaredList",
    "Failure",
    "ReportResult",
    "RunDiff",
    "VerifyResult",
    "diff_renderables",
    "diff_runs",
    "load_declared",
    "load_key",
    "manifest_sha256",
    "pseudonymise",
    "record_previous",
    "seal_outputs",
    "summary_renderables",
    "verify",
    "write_reports",
]
