"""The clinical review loop: decisions recorded on the worklists come back, are validated,
change the batch traceably and carry forward to the next one (issue #15).

Modules: ``vocabulary`` (the rule pack's ``decisions:`` section), ``files`` (reading a
filled-in worklist, XLSX or CSV), ``evidence`` (the fingerprint a decision binds to),
``validate`` (each row's status: applied, rejected with the reason, superseded),
``effects`` (what applied decisions change: merges, sharing overrides, priorities,
lists), ``stage`` (the steps the pipeline calls), ``fhir`` (the Consent and Provenance
they add), ``progress`` (raised, decided, outstanding) and ``outreach`` (the call list).
Kept free of imports at package level so the rule pack can read ``vocabulary`` alone.
"""
