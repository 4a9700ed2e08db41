"""What applied decisions change in the batch, each change naming its decision.

Only ``applied`` rows of ``decisions`` (``validate.DECISIONS_SCHEMA``) act; each effect
(``vocabulary.EFFECTS``) is a pure function of frames:

- ``merge`` (same_person): ``merge_pairs`` joins the pair's records into one person,
  the survivor chosen, and its demographics taken, as for exact NHS-number duplicates
  (the identity settings' survivorship and recency orders); the other records'
  disposition becomes ``merged``.
- ``override_sharing``: ``sharing_for_dispositions`` lets the patient's clinical rows be
  sent (under ``withhold-clinical``); the FHIR output gains a Consent (permit) with the
  note as its basis (``review.fhir``). The dissent itself stays on record (its Consent,
  deny, is still sent) and so does the flag.
- ``raise_priority``: ``raised_priorities`` — the ServiceRequest's priority, with the
  decision as its reason (through ``fhir.stage.derived_priority``).
- ``move``: ``move_lists`` sets the derived list (``cohort``) of the referral, or of each
  open referral of the patient, and re-derives the patient's cohort.
- ``close`` and ``keep_apart``: nothing changes but the item's review state.

``label`` is how lineage names a decision: decision, reviewer, date and id.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace

import polars as pl

from migrate.identity.exact import sort_columns, survivor_demographics
from migrate.identity.merges import people
from migrate.identity.settings import IdentitySettings
from migrate.identity.stage import Identified

OPEN_LISTS = ("backlog", "transition", "pifu")


def applied(decisions: pl.DataFrame, effect: str | None = None) -> pl.DataFrame:
    """The applied rows (of one effect)."""
    keep = pl.col("status") == "applied"
    return decisions.filter(keep if effect is None else keep & (pl.col("effect") == effect))


def label() -> pl.Expr:
    """'decision same_person by Dr A on 2022-10-03 (id 1a2b…)' for each decision row."""
    second = pl.when(pl.col("second_reviewer").is_not_null()).then(
        pl.format(" and {}", "second_reviewer")).otherwise(pl.lit(""))
    return pl.format("decision {} by {}{} on {} ({})", "decision", "reviewer", second,
                     pl.col("decided_on").cast(pl.String), "decision_id")


def _components(edges: pl.DataFrame) -> pl.DataFrame:
    """node -> component (its smallest node) over undirected ``edges`` (a, b), by label propagation."""
    pairs = pl.concat([edges.select(pl.col("a").alias("n"), pl.col("b").alias("m")),
                       edges.select(pl.col("b").alias("n"), pl.col("a").alias("m"))])
    labels = pairs.select(pl.col("n")).unique().with_columns(pl.col("n").alias("c"))
    while True:  # each pass lowers a label by one hop; ends when nothing moves
        lowest = pairs.join(labels.rename({"n": "m", "c": "cm"}), on="m").group_by("n").agg(pl.col("cm").min())
        moved = labels.join(lowest, on="n", how="left").with_columns(
            pl.min_horizontal("c", pl.col("cm").fill_null(pl.col("c"))).alias("c2"))
        if moved.filter(pl.col("c2") != pl.col("c")).height == 0:
            return labels.sort("n").rename({"n": "node", "c": "component"})
        labels = moved.select("n", pl.col("c2").alias("c"))


def merge_pairs(identified: Identified, decisions: pl.DataFrame, tables: Mapping[str, pl.LazyFrame],
                annotated: pl.DataFrame, settings: IdentitySettings) -> Identified:
    """``identified`` with every applied ``merge`` decision's pair made one person.

    ``annotated``: identity's survivorship view of every canonical patient (``identity.
    survivorship_frame``). The pairs' current survivors (after exact and source merges)
    form components; each keeps the first by the settings' survivorship order, and its
    demographics become the most recent non-blank of all its records. The pair's flag
    stays raised (decided); nothing else of identity is recomputed.
    """
    merges = applied(decisions, "merge")
    if merges.height == 0:
        return identified
    current = identified.merges
    pairs = merges.select(pl.col("subject_key").str.split_exact("+", 1).struct.rename_fields(["a", "b"])).unnest(
        "subject_key")
    alive = pl.concat([pairs.select(pl.col("a").alias("patient_key")), pairs.select(pl.col("b").alias("patient_key"))])
    to_survivor = alive.unique().join(current, on="patient_key", how="left").with_columns(
        pl.coalesce("survivor_key", "patient_key").alias("survivor_key"))
    edges = pairs.join(to_survivor.rename({"patient_key": "a", "survivor_key": "sa"}), on="a").join(
        to_survivor.rename({"patient_key": "b", "survivor_key": "sb"}), on="b").select(
        pl.col("sa").alias("a"), pl.col("sb").alias("b")).filter(pl.col("a") != pl.col("b"))
    if edges.height == 0:
        return identified
    groups = _components(edges)
    cols, desc = sort_columns(settings.survivor_order)
    winners = (annotated.join(groups.rename({"node": "patient_key"}), on="patient_key")
               .sort(cols, descending=desc, nulls_last=True)
               .group_by("component", maintain_order=True).agg(pl.col("patient_key").first().alias("winner")))
    # memory: whole, as identity: the patient table, read back from identity's staged scan only
    # when a same_person decision is applied (then held, as the batch's patients, to the end).
    current_patients = identified.patients.collect()
    old = current_patients.select("patient_key", pl.coalesce(
        pl.col("patient_key").replace_strict(dict(current.iter_rows()), default=None), "patient_key").alias("was"))
    remap = groups.join(winners, on="component").select(pl.col("node").alias("was"), "winner")
    final = old.join(remap, on="was", how="left").select(
        "patient_key", pl.coalesce("winner", "was").alias("survivor_key"))
    new_merges = final.filter(pl.col("patient_key") != pl.col("survivor_key")).sort("patient_key")
    patients = survivor_fields(current_patients.drop("survivor_key").join(
        final, on="patient_key", how="left", maintain_order="left"), remap["winner"].unique().to_list(), annotated,
        settings).select(current_patients.columns)
    del current_patients
    # Identity's own merges: every merge but those only the extract's merge messages made.
    source_only = current.join(identified.identity_merges, on="patient_key", how="anti").select("patient_key")
    identity_merges = new_merges.join(source_only, on="patient_key", how="anti")
    return replace(identified, patients=patients.lazy(), identity_merges=identity_merges.cast(
        identified.identity_merges.schema), merges=new_merges.cast(current.schema),
        people=people(patients, tables, new_merges))


def survivor_fields(patients: pl.DataFrame, winners: list[str], annotated: pl.DataFrame,
                    settings: IdentitySettings) -> pl.DataFrame:
    """``patients`` (with ``survivor_key``) whose ``winners`` carry, field by field, the most
    recent non-blank value of every record merged into them (``exact.survivor_demographics``)."""
    cluster = patients.filter(pl.col("survivor_key").is_in(winners)).select("patient_key", "survivor_key")
    best = survivor_demographics(annotated, cluster, settings).filter(pl.col("patient_key").is_in(winners))
    fields = [c for c in settings.survivorship_fields if c in patients.columns]
    best = best.select("patient_key", *(pl.col(f).alias(f"_{f}") for f in fields))
    return patients.join(best, on="patient_key", how="left", maintain_order="left").with_columns(
        pl.coalesce(f"_{f}", f).alias(f) for f in fields).drop(*(f"_{f}" for f in fields))


def overridden_keys(decisions: pl.DataFrame) -> list[str]:
    """The patients whose sharing block an applied ``override`` lifted (sorted)."""
    return sorted(applied(decisions, "override_sharing").get_column("patient_key").unique().to_list())


def sharing_for_dispositions(sharing: pl.LazyFrame, decisions: pl.DataFrame) -> pl.LazyFrame:
    """The sharing state dispositions read: a patient whose block was overridden is not withheld."""
    keys = overridden_keys(decisions)
    if not keys:
        return sharing
    return sharing.with_columns(pl.when(pl.col("patient_key").is_in(keys)).then(False)
                                .otherwise(pl.col("blocked")).alias("blocked"))


def raised_priorities(decisions: pl.DataFrame) -> pl.DataFrame:
    """referral_key, priority, reason: each applied ``raise_priority`` decision (as
    ``fhir.stage.derived_priority`` gives them)."""
    raised = applied(decisions, "raise_priority")
    return raised.select(pl.col("subject_key").alias("referral_key"), pl.col("effect_to").alias("priority"),
                         pl.format("{} on {}: {}", label(), "flag_code", pl.col("note").fill_null("")).alias(
                             "reason"))


def list_moves(decisions: pl.DataFrame, cohorts: pl.DataFrame) -> pl.DataFrame:
    """referral_key, cohort (the list it moves to), decision_id, label: a referral's own
    ``move`` decision, else its patient's (for each of their referrals on an open list)."""
    moves = applied(decisions, "move").with_columns(label().alias("label"))
    own = moves.filter(pl.col("subject_type") == "referral").select(
        pl.col("subject_key").alias("referral_key"), pl.col("effect_to").alias("to"), "decision_id", "label")
    by_patient = moves.filter(pl.col("subject_type") == "patient").select(
        pl.col("subject_key").alias("patient_key"), pl.col("effect_to").alias("to"), "decision_id", "label")
    open_refs = cohorts.filter(pl.col("cohort").cast(pl.String).is_in(OPEN_LISTS)).select("referral_key",
                                                                                            "patient_key")
    inherited = open_refs.join(by_patient, on="patient_key").drop("patient_key").join(own, on="referral_key",
                                                                                      how="anti")
    return pl.concat([own, inherited]).sort("referral_key")


def move_lists(cohorts: pl.DataFrame, patient_cohorts: pl.DataFrame, decisions: pl.DataFrame,
               precedence: tuple[str, ...]) -> tuple[pl.DataFrame, pl.DataFrame]:
    """``cohorts`` and ``patient_cohorts`` with every applied ``move``: the referral's cohort
    set, its reason naming the decision and the list it was on; the patient's cohort
    re-derived (most active by the pack's ``precedence``)."""
    moved = list_moves(decisions, cohorts)
    if moved.height == 0:
        return cohorts, patient_cohorts
    dtype = cohorts.schema["cohort"]
    out = cohorts.join(moved.select("referral_key", "to", "label"), on="referral_key", how="left",
                       maintain_order="left").with_columns(
        pl.when(pl.col("to").is_not_null()).then(pl.format("{} (derived {}: {})", "label", pl.col("cohort").cast(
            pl.String), "cohort_reason")).otherwise(pl.col("cohort_reason")).alias("cohort_reason"),
        pl.coalesce(pl.col("to"), pl.col("cohort").cast(pl.String)).cast(dtype).alias("cohort"),
    ).with_columns(
        (pl.col("transfer_list").is_not_null() & (pl.col("transfer_list").cast(pl.String) != pl.col("cohort").cast(
            pl.String))).alias("list_mismatch")).select(cohorts.columns)
    rank = pl.col("cohort").cast(pl.String).replace_strict(list(precedence), list(range(len(precedence))),
                                                           return_dtype=pl.Int64)
    touched = out.join(moved.select("referral_key"), on="referral_key", how="semi").select("patient_key").unique()
    best = (out.join(touched, on="patient_key", how="semi").with_columns(rank.alias("_rank"))
            .sort("_rank").group_by("patient_key", maintain_order=True).agg(pl.col("cohort").first().alias("_new")))
    patients = patient_cohorts.join(best, on="patient_key", how="left", maintain_order="left").with_columns(
        pl.coalesce(pl.col("_new").cast(pl.String), pl.col("patient_cohort").cast(pl.String))
        .cast(patient_cohorts.schema["patient_cohort"]).alias("patient_cohort")).select(patient_cohorts.columns)
    return out, patients


def changed_rows(decisions: pl.DataFrame, before: pl.LazyFrame, after: pl.LazyFrame,
                 referrals: pl.LazyFrame, moves: pl.DataFrame) -> pl.DataFrame:
    """decision_id, source_file, source_row: the canonical rows each applied decision changed.

    ``before``/``after``: every row's disposition without and with the decisions'
    dispositions (merges, overrides), as scans (one row per canonical row: staged on
    disk, never collected whole); ``referrals``: canonical referral rows (their keys);
    ``moves``: ``list_moves``. A merge changed its pair's patient rows; an override the
    rows no longer withheld; a priority or a move the referral's rows. Each part joins a
    scan with the few keys the decisions name, so only the changed rows are collected.
    """
    rows = ("source_file", "source_row")
    parts = []
    merged = applied(decisions, "merge").select("decision_id", pl.col("subject_key").str.split("+").alias(
        "patient_key")).explode("patient_key")
    parts.append(after.filter(pl.col("table") == "patients").join(merged.lazy(), on="patient_key").select(
        "decision_id", *rows))
    overrides = applied(decisions, "override_sharing").select("decision_id", "patient_key")
    # An override acts on its patient's rows only: both sides narrowed to them before the row join.
    theirs = pl.col("patient_key").is_in(overrides.get_column("patient_key").unique().implode())
    released = after.filter(theirs).join(before.filter(theirs).select(*rows, pl.col("disposition").alias("_was")),
                                         on=list(rows)).filter(
        (pl.col("_was") == "withheld") & (pl.col("disposition") != "withheld"))
    parts.append(released.join(overrides.lazy(), on="patient_key").select("decision_id", *rows))
    raised = applied(decisions, "raise_priority").select("decision_id", pl.col("subject_key").alias("referral_key"))
    touched = pl.concat([raised, moves.select("decision_id", "referral_key")])
    parts.append(referrals.select("referral_key", *rows).join(touched.lazy(), on="referral_key")
                 .select("decision_id", *rows))
    found = pl.collect_all([p.cast({"source_row": pl.Int64}) for p in parts])
    return pl.concat(found).unique().sort("decision_id", *rows)


def annotate(dispositions: pl.LazyFrame, decisions: pl.DataFrame, changed: pl.DataFrame) -> pl.LazyFrame:
    """Dispositions whose ``reason`` also names the decision(s) that changed the row (lineage);
    a plan over ``dispositions`` (a scan: it streams), joined with the few changed rows."""
    if changed.height == 0:
        return dispositions
    labels = changed.join(decisions.select("decision_id", label().alias("_label")), on="decision_id").group_by(
        "source_file", "source_row").agg(pl.col("_label").sort().str.join("; "))
    return dispositions.join(labels.lazy(), on=["source_file", "source_row"], how="left",
                             maintain_order="left").with_columns(
        pl.when(pl.col("_label").is_null()).then(pl.col("reason"))
        .when(pl.col("reason").is_null()).then(pl.format("changed by {}", "_label"))
        .otherwise(pl.format("{}; {}", "reason", "_label")).alias("reason")).drop("_label")
