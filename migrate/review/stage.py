"""The review stage of a batch: decisions read, judged and applied, in two steps.

    rows = decision_rows(files, previous)          # --decisions files and --previous RUN
    identified, early = before_rules(rows, identified, tables, settings, pack)
    review = after_rules(rows, early, classified, tables, pack)

Identity's decisions (a pair is or is not one person) act before the rules, because the
rules see one patient per person; every other flag is raised by the rules and is judged
against their exceptions. ``Review`` then holds every decision row with its status
(``decisions.parquet``) and every raised item with its review state (``review.parquet``),
and gives the later stages what the applied decisions change (``effects``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import polars as pl

from migrate.errors import InputError
from migrate.identity import FLAGS as IDENTITY_FLAGS
from migrate.identity import survivorship_frame
from migrate.identity.settings import IdentitySettings
from migrate.identity.stage import Identified
from migrate.review import effects
from migrate.review.evidence import items as evidence_items
from migrate.review.files import DECISION_ROW_SCHEMA, DecisionFile
from migrate.review.validate import DECISIONS_SCHEMA, validate
from migrate.review.vocabulary import ReviewVocabulary
from migrate.rules.model import RulePack
from migrate.rules.stage import Classified
from migrate.staging import sink

DECISIONS = "decisions.parquet"
REVIEW = "review.parquet"
REVIEW_SCHEMA: dict[str, pl.DataType] = {
    "flag_code": pl.String(), "severity": pl.String(), "subject_type": pl.String(), "subject_key": pl.String(),
    "patient_key": pl.String(), "rule_id": pl.String(), "family": pl.String(), "evidence_id": pl.String(),
    "state": pl.String(), "decision": pl.String(), "decision_id": pl.String(), "reviewer": pl.String(),
    "decided_on": pl.Date(),
}
CHANGED_SCHEMA: dict[str, pl.DataType] = {"decision_id": pl.String(), "source_file": pl.String(),
                                          "source_row": pl.Int64()}


def decision_rows(files: Sequence[DecisionFile], previous: Path | None) -> pl.DataFrame:
    """Every decision row to judge: each file's rows (in ``--decisions`` order, then file
    order) and the previous run's applied decisions (``origin`` previous)."""
    parts = [f.rows.with_columns(pl.lit("file").alias("origin"), pl.lit(f.sha256).alias("source_sha256"))
             for f in files]
    frame = pl.concat(parts, how="diagonal_relaxed") if parts else None
    carried = previous_decisions(previous)
    if carried is not None:
        frame = carried if frame is None else pl.concat([frame, carried], how="diagonal_relaxed")
    return frame if frame is not None else pl.DataFrame(
        schema={**DECISION_ROW_SCHEMA, "origin": pl.String(), "source_sha256": pl.String()})


def previous_decisions(previous: Path | None) -> pl.DataFrame | None:
    """The previous run's applied decisions (``origin`` previous), None when it has none;
    InputError (exit 3) naming the file when it cannot be read."""
    prior = Path(previous) / DECISIONS if previous is not None else None
    if prior is None or not prior.is_file():
        return None
    try:
        # memory: the previous run's decisions (reviewers' rows: few)
        frame = pl.read_parquet(prior)
        missing = sorted(set(DECISIONS_SCHEMA) - set(frame.columns))
    except (OSError, pl.exceptions.PolarsError) as exc:
        raise InputError(f"previous run {previous}: {DECISIONS} is not readable ({type(exc).__name__})") from None
    if missing:
        raise InputError(f"previous run {previous}: {DECISIONS} lacks {', '.join(missing)}")
    return frame.filter(pl.col("status") == "applied").with_columns(pl.lit("previous").alias("origin"))


def _subjects(tables: Mapping[str, pl.LazyFrame], rows: pl.DataFrame) -> set[str]:
    """The patient and referral keys among those ``rows`` name (a pair's subject names two):
    what ``validate`` looks a subject up in. Only the named keys are collected, never the
    tables' whole key columns (2.5M keys at a million patients)."""
    named = rows.select(pl.col("subject_key").cast(pl.String).str.split("+").explode().drop_nulls().unique())
    wanted = named.get_column("subject_key").implode()
    # memory: the keys the rows name only (above)
    keys = tables["patients"].select(pl.col("patient_key").cast(pl.String).alias("k")).filter(
        pl.col("k").is_in(wanted)).collect().to_series().to_list()
    keys += tables["referrals"].select(pl.col("referral_key").cast(pl.String).alias("k")).filter(
        pl.col("k").is_in(wanted)).collect().to_series().to_list()
    return set(keys)


def _judge(rows: pl.DataFrame, found: pl.DataFrame, tables: Mapping[str, pl.LazyFrame],
           vocabulary: ReviewVocabulary) -> pl.DataFrame:
    """``rows`` judged against the raised items ``found`` (``evidence.items``)."""
    if rows.height == 0:
        return pl.DataFrame(schema=DECISIONS_SCHEMA)
    return validate(rows, found, _subjects(tables, rows), vocabulary)


def _is_identity(rows: pl.DataFrame) -> pl.Expr:
    return pl.col("flag_code").is_in(list(IDENTITY_FLAGS)).fill_null(False)


def before_rules(rows: pl.DataFrame, identified: Identified, tables: Mapping[str, pl.LazyFrame],
                 settings: IdentitySettings, pack: RulePack) -> tuple[Identified, pl.DataFrame]:
    """Judge identity's decisions against identity's flags; apply the merges (``same_person``)."""
    mine = rows.filter(_is_identity(rows))
    # memory: identity's flags (one per flagged record or pair), only when a reviewer decided one
    found = evidence_items(identified.exceptions.collect(), tables["patients"], pack.review) if mine.height else None
    judged = pl.DataFrame(schema=DECISIONS_SCHEMA) if found is None else _judge(mine, found, tables, pack.review)
    if effects.applied(judged, "merge").height:
        annotated = survivorship_frame(tables["patients"], tables["referrals"], settings)
        identified = effects.merge_pairs(identified, judged, tables, annotated, settings)
    return identified, judged


@dataclass(frozen=True)
class Review:
    """Every decision row with its status, every raised item with its review state, and
    (once dispositions are decided) the canonical rows each applied decision changed."""

    decisions: pl.DataFrame
    items: pl.DataFrame
    given: bool  # decisions were given (files or a previous run's): decisions.parquet is written
    changed: pl.DataFrame = field(default_factory=lambda: pl.DataFrame(schema=CHANGED_SCHEMA))

    def tables(self) -> dict[str, pl.DataFrame]:
        """The run-folder files of the review: ``review.parquet`` always, ``decisions.parquet`` when given."""
        decisions = self.decisions if "resources" in self.decisions.columns else self.decisions.with_columns(
            pl.lit(None, dtype=pl.List(pl.String)).alias("resources"))  # a run without FHIR changed none
        return {REVIEW: self.items, **({DECISIONS: decisions} if self.given else {})}

    def dispositions(self, decide: Callable[[pl.LazyFrame], pl.LazyFrame], sharing: pl.LazyFrame,
                     cohorts: pl.LazyFrame, referrals: pl.LazyFrame, work: Path) -> tuple[pl.LazyFrame, Review]:
        """Every row's disposition with the decisions applied (``decide`` given the sharing
        state to read: a plan), its reason naming the decision that changed it, as a scan
        of ``work/dispositions.parquet``; and this review with those rows recorded
        (``changed``: what FHIR Provenance targets).

        One row per canonical row (15M at a million patients), so never collected: each
        plan is sunk to ``work`` with the streaming engine. Without an applied decision
        (every first batch) it is decided once. With some, the dispositions without
        (``before``, only when an override changes the sharing state) and with them
        (``after``) are staged, ``changed`` is the few rows the decisions touched (joins
        over the scans) and the annotated rows are sunk from ``after``.
        """
        final = work / "dispositions.parquet"
        after = decide(effects.sharing_for_dispositions(sharing, self.decisions))
        if effects.applied(self.decisions).height == 0:
            return pl.scan_parquet(sink(after, final)), self
        after = pl.scan_parquet(sink(after, work / "dispositions-after.parquet"))
        overridden = effects.applied(self.decisions, "override_sharing").height > 0
        before = pl.scan_parquet(sink(decide(sharing), work / "dispositions-before.parquet")) if overridden else after
        changed = effects.changed_rows(self.decisions, before, after, referrals,
                                       effects.list_moves(self.decisions, _moved_cohorts(self.decisions, cohorts)))
        if changed.height == 0:
            return after, self
        annotated = pl.scan_parquet(sink(effects.annotate(after, self.decisions, changed), final))
        return annotated, replace(self, changed=changed)


def after_rules(rows: pl.DataFrame, early: pl.DataFrame, classified: Classified,
                tables: Mapping[str, pl.LazyFrame], pack: RulePack) -> tuple[Review, Classified]:
    """Judge the other decisions against the rules' exceptions; the review state of every
    item; the rules' lists with the applied ``move`` decisions."""
    rest = rows.filter(~_is_identity(rows))
    # memory: collected: every raised item is fingerprinted once (``review.parquet`` holds one
    # row per item, written with the run's tables): the exceptions' identifying columns and
    # evidence, one row per flag raised (grows with the extract).
    found = evidence_items(classified.exceptions.collect(), tables["patients"], pack.review)
    judged = pl.concat([early, _judge(rest, found, tables, pack.review)]).sort(
        "origin", "source_file", "source_sheet", "source_row", "decision_id", nulls_last=True)
    review = Review(judged, review_items(found, judged, pack.review), rows.height > 0)
    if effects.applied(judged, "move").height == 0:  # every first batch: the rules' lists as they are
        return review, classified
    # memory: held: the lists with a reviewer's moves applied (one row per referral and per
    # survivor, for the rest of the run), only in a batch whose decisions move a list.
    cohorts, patient_cohorts = effects.move_lists(classified.cohorts.collect(), classified.patient_cohorts.collect(),
                                                  judged, pack.cohort_precedence)
    return review, replace(classified, cohorts=cohorts.lazy(), patient_cohorts=patient_cohorts.lazy())


def _moved_cohorts(decisions: pl.DataFrame, cohorts: pl.LazyFrame) -> pl.DataFrame:
    """The rows of ``cohorts`` that ``effects.list_moves`` reads: those of the patients and
    referrals the applied ``move`` decisions name (a few; never the whole table)."""
    named = effects.applied(decisions, "move").get_column("subject_key").cast(pl.String).implode()
    # memory: the moved subjects' rows only (above)
    return cohorts.lazy().filter(pl.col("patient_key").is_in(named) | pl.col("referral_key").is_in(named)).collect()


def review_items(found: pl.DataFrame, decisions: pl.DataFrame, vocabulary: ReviewVocabulary) -> pl.DataFrame:
    """One row per raised item (``REVIEW_SCHEMA``; ``found``: ``evidence.items``): its
    fingerprint, and ``decided`` with the applied decision or ``outstanding``; sorted as
    ``exceptions.parquet``."""
    done = effects.applied(decisions).select("flag_code", "subject_key", "decision", "decision_id", "reviewer",
                                             "decided_on")
    codes = found.get_column("flag_code").unique().to_list()
    family = pl.col("flag_code").replace_strict({c: vocabulary.family_of(c) for c in codes}, return_dtype=pl.String)
    return (found.join(done, on=["flag_code", "subject_key"], how="left", maintain_order="left")
            .with_columns(family.alias("family"),
                          pl.when(pl.col("decision_id").is_null()).then(pl.lit("outstanding"))
                          .otherwise(pl.lit("decided")).alias("state"))
            .select(list(REVIEW_SCHEMA)).cast(REVIEW_SCHEMA)  # type: ignore[arg-type]
            .sort("subject_type", "subject_key", "flag_code", "rule_id"))


def decided_survivors(patients: pl.DataFrame, recorded: pl.DataFrame, tables: Mapping[str, pl.LazyFrame],
                      decisions: pl.DataFrame, settings: IdentitySettings) -> pl.DataFrame:
    """``patients`` (identity re-derived from the canonical rows) with the survivors of the
    run's applied same_person merges carrying their merged records' fields again, as the
    run had them (``handover fhir RUN``); ``recorded``: ``patients.parquet``."""
    pairs = effects.applied(decisions, "merge").select(pl.col("subject_key").str.split("+").list.first().alias("k"))
    survivor = dict(recorded.select("patient_key", "survivor_key").iter_rows())
    winners = sorted({survivor.get(k, k) for k in pairs["k"].to_list()})
    if not winners:
        return patients
    annotated = survivorship_frame(tables["patients"], tables["referrals"], settings)
    merged = patients.drop("survivor_key", strict=False).join(recorded.select("patient_key", "survivor_key"),
                                                              on="patient_key", how="left", maintain_order="left")
    return effects.survivor_fields(merged, winners, annotated, settings).select(patients.columns)
