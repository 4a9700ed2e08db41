"""Provenance: one per bundle, targeting every resource in it.

``recorded`` is the run-level instant from the options (by default the cut-over date at
00:00 UTC), never the wall clock, so a re-run writes the same bytes. Agents: the migrating
organisation (ODS code; ``performer``) and the tool (``assembler``, on behalf of the
organisation). Entities: every input file by name and sha256, and the run id (its
manifest lists the rest). ``policy`` records the sharing-block policy the bundle was
built under. The id is a UUIDv5 of the run id and the bundle number.
"""

from __future__ import annotations

import polars as pl

from migrate.fhir.ids import with_ids
from migrate.fhir.inputs import Context, emit
from migrate.fhir.options import ODS
from migrate.fhir.template import const, raw, resource

PARTICIPANT = "http://terminology.hl7.org/CodeSystem/provenance-participant-type"


def provenances(bundles: pl.DataFrame, ctx: Context) -> pl.DataFrame:
    """Provenance resources of ``bundles`` (bundle_no, targets: list of ``Type/id`` in entry order)."""
    opts = ctx.options
    organisation = {"identifier": {"system": ODS, "value": opts.organisation_ods}}
    agents = [
        {"type": {"coding": [{"system": PARTICIPANT, "code": "performer", "display": "Performer"}]},
         "who": organisation},
        {"type": {"coding": [{"system": PARTICIPANT, "code": "assembler", "display": "Assembler"}]},
         "who": {"type": "Device", "display": opts.tool}, "onBehalfOf": organisation},
    ]
    entities = [
        {"role": "source", "what": {"identifier": {"system": f"{opts.identifier_base}/Id/file-sha256",
                                                   "value": f.sha256}, "display": f.path}}
        for f in sorted(opts.inputs, key=lambda f: (f.path, f.sha256))
    ]
    entities.append({"role": "source", "what": {"identifier": {"system": f"{opts.identifier_base}/Id/run",
                                                               "value": opts.run_id},
                                                "display": "handover migration run (see its manifest.json)"}})
    frame = bundles.with_columns(
        pl.lit(None, dtype=pl.String).alias("survivor_key"),
        pl.format("{}/{}", pl.lit(opts.run_id), pl.col("bundle_no").cast(pl.String).str.zfill(5)).alias("key"),
        pl.concat_str([pl.lit("["),
                       pl.col("targets").list.eval(pl.concat_str([pl.lit('{"reference":"'), pl.element(),
                                                                  pl.lit('"}')])).list.join(","),
                       pl.lit("]")]).alias("target_json"),
    )
    frame = with_ids(frame, ctx.ns, "provenance", "key", "provenance_id")
    template = resource(
        "Provenance", pl.col("provenance_id"),
        ("target", raw(pl.col("target_json"))),
        ("recorded", const(opts.recorded_instant)),
        ("policy", const([opts.policy_uri])),
        ("activity", const({"text": f"migration of the {opts.source_system} caseload to the receiving provider"})),
        ("agent", const(agents)),
        ("entity", const(entities)),
    )
    return emit(frame, template, "provenance_id")
