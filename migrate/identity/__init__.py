"""Identity: NHS number checks, exact and probable duplicates, patients already at the target.

The stage between the canonical tables and the rules (docs/architecture.md). Pure
functions of polars frames; the only file read is the settings (``rules/identity.yaml``).

    resolve_identity(patients, referrals, settings, target_index=None) -> IdentityResult
    dedupe(patients, settings) -> (duplicates frame, Model)
    load_identity_settings(path=None) -> IdentitySettings
    write_model(model, folder) -> identity-model.json (the learned parameters of the run)

Decisions (docs/domain.md sections 3 and 6):
- NHS number invalid (not 10 digits, Modulus 11, range) -> NHS_NUMBER_INVALID (high); absent
  -> NHS_NUMBER_MISSING (medium). Numbers are never altered.
- One valid number on several source ids with the same birth date and sex -> merged into a
  survivor (disposition ``merged`` for the others), DUPLICATE_NHS_NUMBER (high). Same number,
  different birth date or sex -> NHS_NUMBER_CONFLICT (high), not merged.
- Demographic near-matches without NHS number agreement, scored by a Fellegi-Sunter model
  estimated from the extract (``model``) -> PROBABLE_DUPLICATE (medium), never merged;
  weaker ones listed as ``possible`` without a flag. Twins are never paired.
- Found in the target index -> ALREADY_AT_TARGET: low by NHS number, medium (for review)
  by demographics.
Evidence never shows a name, birth date or NHS number.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import polars as pl

from migrate.rules.flags import EXCEPTIONS_SCHEMA
from migrate.identity import nhs_number
from migrate.identity.blocking import RuleCounts, RuleReport, SpilledPairs, block_layout
from migrate.identity.compare import compare
from migrate.identity.exact import ExactResult, resolve_exact, survivor_values, with_survivor_values
from migrate.identity.model import MODEL_FILE, Model, em_draw, estimate, rule_shares, with_term_frequencies
from migrate.identity.prepare import prepare
from migrate.identity.probable import CONTRIBUTION, classify, score_levels, score_pairs
from migrate.identity.settings import IdentitySettings, load_identity_settings
from migrate.identity.target import AT_TARGET_SCHEMA, match_target
from migrate.outputs import write_json

__all__ = [
    "AT_TARGET_SCHEMA",
    "DUPLICATES_SCHEMA",
    "FLAGS",
    "MERGES_SCHEMA",
    "PAIR_FLAGS",
    "IdentityPlan",
    "IdentityResult",
    "IdentitySettings",
    "MODEL_FILE",
    "Model",
    "dedupe",
    "identity_plan",
    "load_identity_settings",
    "resolve_identity",
    "survivorship_frame",
    "write_model",
]

DUPLICATES_SCHEMA: dict[str, pl.DataType] = {"patient_key_a": pl.String(), "patient_key_b": pl.String(),
                                             "score": pl.Float64(), "match_type": pl.String(),
                                             "match_weight": pl.Float64(), "evidence": pl.String(),
                                             "contributions": pl.List(CONTRIBUTION)}
MERGES_SCHEMA: dict[str, pl.DataType] = {"patient_key": pl.String(), "survivor_key": pl.String()}
MATCH_TYPES = ("exact_nhs_number", "conflict", "probable", "possible")
# flag code -> (severity, action). ALREADY_AT_TARGET by demographics is raised "medium" with
# a review action (see _target_exceptions).
FLAGS: dict[str, tuple[str, str]] = {
    "NHS_NUMBER_INVALID": ("high", "trace (PDS) before load"),
    "NHS_NUMBER_MISSING": ("medium", "trace (PDS) before load"),
    "DUPLICATE_NHS_NUMBER": ("high", "merge is automatic; check the survivor"),
    "NHS_NUMBER_CONFLICT": ("high", "confirm identity (PDS trace) before load; not merged"),
    "PROBABLE_DUPLICATE": ("medium", "review; never merged automatically"),
    "ALREADY_AT_TARGET": ("low", "update, do not create"),
}
# Identity flags raised on a pair of records (subject_key "A+B").
PAIR_FLAGS = ("DUPLICATE_NHS_NUMBER", "NHS_NUMBER_CONFLICT", "PROBABLE_DUPLICATE")
TARGET_REVIEW_ACTION = "confirm it is the same person (PDS trace) before updating; do not create"
_DEMOGRAPHICS = ("family_name", "given_names", "birth_date", "sex", "address", "postcode", "gp_ods_code", "phone")
# The patient columns identity reads (the others are only handed on: ``identity_plan``).
_READ = ("patient_key", "nhs_number", "nhs_number_raw", "nhs_number_status", *_DEMOGRAPHICS, "source_file",
         "source_row")
_PREPARED = ("family_name", "given_names", "birth_date", "sex", "postcode", "phone", "address")  # ``prepare`` reads
_OPTIONAL: dict[str, pl.DataType] = {"nhs_number_raw": pl.String(), "nhs_number_status": pl.String(),
                                     "source_file": pl.String(), "source_row": pl.Int64(),
                                     **{c: pl.String() for c in _DEMOGRAPHICS if c != "birth_date"},
                                     "birth_date": pl.Date()}


@dataclass(frozen=True)
class _Verdicts:
    """What identity decided beside its patients (both forms of its result carry them)."""

    merges: pl.DataFrame
    duplicates: pl.DataFrame
    exceptions: pl.DataFrame
    at_target: pl.DataFrame
    model: Model

    def _verdicts(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(_Verdicts)}

    def _counts(self, patients: int) -> dict[str, int]:
        """Headline numbers for the reconciliation summary, for ``patients`` source patients."""
        flags = dict(self.exceptions.group_by("flag_code").len().iter_rows())
        return {
            "patients": patients,
            "merged": self.merges.height,
            "at_target": self.at_target.height,
            "candidate_pairs": int(self.model.report.get("candidate_pairs", 0)),
            "twins_not_paired": int(self.model.report.get("twins_not_paired", 0)),
            **{f"duplicates_{t}": self.duplicates.filter(pl.col("match_type") == t).height for t in MATCH_TYPES},
            **{f"flag_{code.lower()}": int(flags.get(code, 0)) for code in FLAGS},
        }


@dataclass(frozen=True)
class IdentityResult(_Verdicts):
    """What identity decided (all frames sorted by key; see the module docstring).

    ``patients``: every source patient (canonical columns, survivors carrying the
    survivorship values) with ``nhs_number_valid``, ``nhs_number_verification``,
    ``survivor_key`` and ``at_target_id``. ``merges``: merged patient_key -> survivor_key.
    ``duplicates``: candidate pairs (``DUPLICATES_SCHEMA``). ``exceptions``: identity flags
    (``EXCEPTIONS_SCHEMA``). ``at_target``: survivors found in the target index.
    """

    patients: pl.DataFrame

    def counts(self) -> dict[str, int]:
        """Headline numbers for the reconciliation summary."""
        return self._counts(self.patients.height)


@dataclass(frozen=True)
class IdentityPlan(_Verdicts):
    """``IdentityResult`` with ``patients`` a plan (over the canonical patients and identity's
    verdicts: ``identity_plan``) and ``rows`` its height."""

    patients: pl.LazyFrame
    rows: int

    def counts(self) -> dict[str, int]:
        """``IdentityResult.counts``."""
        return self._counts(self.rows)

    def collected(self) -> IdentityResult:
        """The ``IdentityResult`` (its patients collected)."""
        # memory: whole: ``resolve_identity`` returns the patient table as a frame (tests, ``handover
        # dedupe``, the round trip's re-run of identity); a batch sinks the plan instead (``identity.stage``)
        return IdentityResult(patients=self.patients.collect(), **self._verdicts())


def _checked(patients: pl.LazyFrame) -> pl.LazyFrame:
    """``patients`` with optional canonical columns added as nulls and typed."""
    columns = patients.collect_schema().names()
    if "patient_key" not in columns or "nhs_number" not in columns:
        raise ValueError("identity needs the canonical patients table (patient_key, nhs_number, ...)")
    missing = [pl.lit(None, dtype=t).alias(c) for c, t in _OPTIONAL.items() if c not in columns]
    frame = patients.with_columns(missing) if missing else patients
    return frame.with_columns(pl.col("patient_key").cast(pl.String), pl.col("nhs_number").cast(pl.String))


def _annotated(patients: pl.LazyFrame | pl.DataFrame, referrals: pl.LazyFrame | None,
               settings: IdentitySettings) -> pl.DataFrame:
    """Patients with the NHS number problem, validity, verification, the valid number
    (``nhs``), completeness and first/last referral dates."""
    frame = _checked(patients.lazy())
    if referrals is not None:
        # memory: streamed: one row per patient held, not the referrals' two columns (14M rows at 5M)
        dates = referrals.group_by("patient_key").agg(
            pl.col("received_date").min().alias("first_referral"),
            pl.col("received_date").max().alias("last_referral")).collect(engine="streaming")
        frame = frame.join(dates.lazy().with_columns(pl.col("patient_key").cast(pl.String)), on="patient_key",
                           how="left", maintain_order="left")
    else:
        frame = frame.with_columns(pl.lit(None, dtype=pl.Date).alias("first_referral"),
                                   pl.lit(None, dtype=pl.Date).alias("last_referral"))
    problem = nhs_number.nhs_number_problem(settings)
    filled = [(pl.col(c).cast(pl.String).str.strip_chars().fill_null("") != "") for c in _DEMOGRAPHICS]
    frame = frame.with_columns(problem.alias("nhs_problem")).with_columns(
        pl.col("nhs_problem").is_null().alias("nhs_number_valid"),
        pl.sum_horizontal(filled).alias("completeness"),
    )
    # memory: one plan, streamed: the patients read (or a frame's rows taken) a batch at a time;
    # only the annotated table is held, not each step's whole-column temporaries (+1.8 GB at 5M
    # patients when the steps ran one by one on the collected table).
    return frame.with_columns(
        nhs_number.verification_status(settings, pl.col("nhs_number_valid")).alias("nhs_number_verification"),
        pl.when(pl.col("nhs_number_valid")).then(pl.col("nhs_number")).alias("nhs"),
    ).with_columns((pl.col("nhs_number_verification") == "01").alias("verified")).collect(engine="streaming")


def _with_keyed(frame: pl.DataFrame, keyed: pl.DataFrame, on: str) -> pl.DataFrame:
    """``frame`` with ``keyed``'s other columns added by a left join on ``on`` (unique in
    ``keyed``): the same frame as ``frame.join(keyed, on=on, how="left", maintain_order="left")``,
    the join run over the key column alone."""
    joined = frame.select(on).join(keyed, on=on, how="left", maintain_order="left")
    return frame.with_columns(joined.drop(on).get_columns())


def survivorship_frame(patients: pl.LazyFrame, referrals: pl.LazyFrame, settings: IdentitySettings) -> pl.DataFrame:
    """Every canonical patient with the columns survivorship orders by (verification,
    completeness, first and last referral): what a reviewer's same_person merge is decided
    on, exactly as exact duplicates are (``migrate.review.effects.merge_pairs``)."""
    # memory: whole, as identity (the patient table only): built only when a same_person
    # decision is applied.
    return _annotated(patients, referrals, settings)


def _pair_rows(pairs: pl.DataFrame) -> pl.DataFrame:
    return pairs.select(pl.col("key_a").alias("patient_key_a"), pl.col("key_b").alias("patient_key_b"), "score",
                        "match_type", "match_weight", "evidence", "contributions")


def _exact_rows(frame: pl.DataFrame) -> pl.DataFrame:
    return frame.select("patient_key", "nhs", "birth_date", "sex", "source_file", "source_row", "verified",
                        "completeness", "first_referral", "last_referral")


def _duplicates(frame: pl.DataFrame, settings: IdentitySettings
                ) -> tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame, pl.DataFrame, Model]:
    """(survivor map, exact/conflict pairs with scores, probable/possible pairs, prepared
    records, the model estimated on every record)."""
    exact = resolve_exact(_exact_rows(frame), settings)
    # memory: whole (global): every record's comparison values and block keys; a pair (of any
    # two records, from any span) and the target index's pairs look them up by position.
    records = prepare(frame, "patient_key", "nhs")
    return _paired(frame.select("patient_key"), exact, records, settings)


def _paired(keys: pl.DataFrame, exact: ExactResult, records: pl.DataFrame, settings: IdentitySettings
            ) -> tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame, pl.DataFrame, Model]:
    """``_duplicates``' result from the patients' keys (``keys``, in the records' order), the
    exact duplicates and the prepared records."""
    # memory: span: the candidate pairs are never held all at once — they grow faster than
    # the records (a block of k records makes k(k-1)/2 pairs). They are generated a span of
    # records at a time (``blocking.Blocking``, at most CHUNK_PAIRS generated pairs each),
    # once: counted per rule and spilled to disk (``blocking.SpilledPairs``), then read back
    # a span at a time to draw EM's sample and to compare and score, keeping only the pairs
    # at or above the review score. The blocking layout (global: a block spans the table)
    # is let go as soon as the pairs are written.
    layout = block_layout(records, None, settings)
    with SpilledPairs(layout) as spilled:
        counts, reports = spilled.counts, layout.reports(spilled.counts)
        del layout
        return _scored(exact, keys, records, spilled, counts, reports, settings)


def _scored(exact: ExactResult, keys: pl.DataFrame, records: pl.DataFrame, spilled: SpilledPairs,
            counts: RuleCounts, reports: list[RuleReport], settings: IdentitySettings
            ) -> tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame, pl.DataFrame, Model]:
    """The model estimated on the candidate pairs ``spilled`` and the pairs scored by it:
    ``_duplicates``' result."""
    survivors = keys.join(exact.survivors, on="patient_key", how="left",
                                                 maintain_order="left").with_columns(
        pl.coalesce("survivor_key", "patient_key").alias("survivor_key"))
    shares = rule_shares(counts.pairs, settings)
    sample = pl.concat([em_draw(pairs, records, shares, settings) for pairs in spilled])
    trained = pl.concat([sample, compare(sample, records, records, settings)], how="horizontal")
    model = estimate(records, trained, reports, settings, candidates=counts.total, q_rule=shares)
    del sample, trained
    records = with_term_frequencies(model, records)
    # The exact and conflicting pairs are scored too, so a reviewer sees how alike they are.
    position = records.select("key", "idx")
    ids = exact.pairs.join(position.rename({"key": "key_a", "idx": "i"}), on="key_a").join(
        position.rename({"key": "key_b", "idx": "j"}), on="key_b")
    scores = score_pairs(ids.select("i", "j"), records, records, model, settings).select(
        "key_a", "key_b", "score", "match_weight", "contributions", pl.col("evidence").alias("scored"))
    decided = exact.pairs.join(scores, on=["key_a", "key_b"], how="left").with_columns(
        pl.format("{}; {}", "evidence", "scored").alias("evidence")).drop("scored")
    # Probable pairs: among survivors, never two records whose valid numbers agree (decided above).
    alive = survivors.select(pl.col("patient_key") == pl.col("survivor_key")).to_series()
    nhs = records.get_column("nhs")
    scored_spans = []
    for pairs in spilled:
        i, j = pairs.get_column("i"), pairs.get_column("j")
        same = (nhs.gather(i) == nhs.gather(j)).fill_null(False)
        # (No ``reachable`` pruning here: within blocks the names mostly agree, so the bound
        # keeps ~90% of the pairs and costs as much as it saves; measured at 1M patients.)
        candidates = pairs.filter(alive.gather(i) & alive.gather(j) & ~same)
        levels = pl.concat([candidates, compare(candidates, records, records, settings)], how="horizontal")
        scored_spans.append(score_levels(levels, records, records, model, settings,
                                         min_score=settings.review_threshold))
    scored = pl.concat(scored_spans)
    probable = classify(scored, settings)
    model.report["twins_not_paired"] = scored.filter(pl.col("twin")).height
    return survivors, decided, probable, records, model


def dedupe(patients: pl.LazyFrame, settings: IdentitySettings) -> tuple[pl.DataFrame, Model]:
    """Duplicate pairs among canonical ``patients`` (``DUPLICATES_SCHEMA``, sorted) —
    exact_nhs_number and conflict pairs by NHS number, probable and possible by score —
    and the model estimated on them."""
    # memory: whole by design: ``handover dedupe`` pairs the whole patient table (identity is global; see
    # ``identify``)
    frame = _annotated(patients, None, settings)
    _, decided, probable, _, model = _duplicates(frame, settings)
    pairs = pl.concat([_pair_rows(decided), _pair_rows(probable)]).cast(
        DUPLICATES_SCHEMA).sort("patient_key_a", "patient_key_b")  # type: ignore[arg-type]
    return pairs, model


def write_model(model: Model, folder: Path) -> Path:
    """The run's learned parameters as ``folder/identity-model.json`` (the hook the batch and
    ``handover dedupe`` call; the manifest lists it with its sha256)."""
    return write_json(model.asdict(), folder / MODEL_FILE)


def _exceptions(frame: pl.DataFrame, decided: pl.DataFrame, probable: pl.DataFrame,
                at_target: pl.DataFrame) -> pl.DataFrame:
    def rows(subjects: pl.DataFrame, code: str, subject: pl.Expr, patient: pl.Expr, evidence: pl.Expr,
             severity: str | None = None, action: str | None = None) -> pl.DataFrame:
        sev, act = FLAGS[code]
        return subjects.select(
            pl.lit(code).alias("flag_code"), pl.lit(severity or sev).alias("severity"),
            pl.lit("patient").alias("subject_type"), subject.alias("subject_key"), patient.alias("patient_key"),
            pl.lit(f"identity.{code.lower()}").alias("rule_id"), evidence.alias("evidence"),
            pl.lit(action or act).alias("action"))

    key = pl.col("patient_key")
    pair = pl.concat_str(["key_a", "key_b"], separator="+")
    problems = frame.filter(pl.col("nhs_problem").is_not_null()).with_columns(pl.col("nhs_problem").cast(pl.String))
    invalid = problems.filter(pl.col("nhs_problem") != nhs_number.MISSING)
    problem_text = pl.col("nhs_problem").replace_strict(nhs_number.PROBLEM_TEXT, return_dtype=pl.String)
    survivors = frame.filter(pl.col("patient_key") == pl.col("survivor_key")).select("patient_key")
    target = at_target.join(survivors, on="patient_key", how="semi")
    by_number = pl.col("match_method") == "nhs_number"
    parts = [
        rows(invalid, "NHS_NUMBER_INVALID", key, key, problem_text),
        rows(problems.filter(pl.col("nhs_problem") == nhs_number.MISSING), "NHS_NUMBER_MISSING", key, key,
             pl.lit(nhs_number.PROBLEM_TEXT[nhs_number.MISSING])),
        rows(decided.filter(pl.col("match_type") == "exact_nhs_number"), "DUPLICATE_NHS_NUMBER", pair, key,
             pl.col("evidence")),
        rows(decided.filter(pl.col("match_type") == "conflict"), "NHS_NUMBER_CONFLICT", pair, key,
             pl.col("evidence")),
        rows(probable.filter(pl.col("match_type") == "probable"), "PROBABLE_DUPLICATE", pair, pl.col("key_a"),
             pl.col("evidence")),
        rows(target.filter(by_number), "ALREADY_AT_TARGET", key, key, pl.col("evidence")),
        rows(target.filter(~by_number), "ALREADY_AT_TARGET", key, key, pl.col("evidence"), "medium",
             TARGET_REVIEW_ACTION),
    ]
    out = pl.concat(parts).cast(EXCEPTIONS_SCHEMA)  # type: ignore[arg-type]
    return out.sort("subject_type", "subject_key", "flag_code", "rule_id")


def resolve_identity(patients: pl.LazyFrame, referrals: pl.LazyFrame, settings: IdentitySettings,
                     target_index: pl.LazyFrame | None = None) -> IdentityResult:
    """Decide who is who: NHS number validity and verification, merges of exact duplicates,
    probable duplicates, and patients already at the target.

    Inputs are canonical ``patients`` and ``referrals`` (``received_date`` orders recency)
    and optionally the target index (``local_id``, ``nhs_number``, demographics).
    Invariants: one ``patients`` row per input row; every merged key maps to a survivor that
    is not itself merged; nothing but exact NHS-number duplicates is merged.
    """
    return identity_plan(patients, referrals, settings, target_index).collected()


def identity_plan(patients: pl.LazyFrame, referrals: pl.LazyFrame, settings: IdentitySettings,
                  target_index: pl.LazyFrame | None = None) -> IdentityPlan:
    """``resolve_identity`` with the patients left as a plan over ``patients`` (a batch sinks
    it to Parquet, ``identity.stage``): what identity decided about each patient is held
    (four columns), the patient table itself is not."""
    columns = patients.collect_schema().names()
    # memory: whole by design: identity is global (any two records may be one person: blocking
    # pairs span the table, EM learns from all of it); the patient table only, and only the
    # columns identity reads (key, NHS number, demographics, source position), held until the
    # records are prepared; then the key and four verdict columns a row (benchmarks/identity.md
    # section 6). The candidate pairs are not held whole (``_paired``); the patients handed on
    # are a plan over ``patients`` (read again, not held).
    frame = _annotated(patients.select([c for c in columns if c in _READ]), referrals, settings)
    exact = resolve_exact(_exact_rows(frame), settings)
    best = survivor_values(frame, exact.survivors, settings)  # a row per merged cluster
    # memory: whole (global): every record's comparison values and block keys; a pair (of any
    # two records, from any span) and the target index's pairs look them up by position.
    # memory: the NHS number's problem and verification status as codes (a few values: 4 bytes a
    # patient, not a 16-byte string view; ~0.1 GB at 5M patients), held to the end
    kept = frame.select("patient_key", "nhs", pl.col("nhs_problem").cast(pl.Categorical), "nhs_number_valid",
                        pl.col("nhs_number_verification").cast(pl.Categorical))
    frame = frame.select("patient_key", "nhs", *_PREPARED)  # what the records are made of, the rest let go
    records = prepare(frame, "patient_key", "nhs")
    frame = kept
    del kept
    survivors, decided, probable, records, model = _paired(frame.select("patient_key"), exact, records, settings)
    # memory: each step below adds columns to the one (narrow) frame (``_with_keyed``), never a
    # join of the whole table.
    frame = frame.with_columns(survivors.get_column("survivor_key"))  # row-aligned (``_scored``)
    merges = survivors.filter(pl.col("patient_key") != pl.col("survivor_key")).sort("patient_key")
    # match_target reads the records (row-aligned with ``frame``) and which of them survive.
    # memory: a mask (a bit a patient), not a copy of the survivors' keys and numbers.
    alive = frame.get_column("patient_key") == frame.get_column("survivor_key")
    if target_index is not None:
        at_target = match_target(records, alive, target_index, settings, model)
    else:
        at_target = pl.DataFrame(schema=AT_TARGET_SCHEMA)
    del alive, records  # the prepared records (global) are let go
    frame = _with_keyed(frame, at_target.select(pl.col("patient_key").alias("survivor_key"), "at_target_id"),
                        "survivor_key")
    exceptions = _exceptions(frame.select("patient_key", "nhs_problem", "survivor_key"), decided, probable,
                             at_target)
    verdicts = frame.select("nhs_number_valid", "nhs_number_verification", "survivor_key",
                            pl.col("at_target_id").cast(pl.String))
    ordered = frame.get_column("patient_key").is_sorted()
    del frame
    # The patients handed on: the canonical rows (read again) beside identity's verdicts (row-aligned:
    # both in ``patients``' order), survivors carrying the survivorship values. The canonical
    # patients come sorted by their (unique) key: a sort would hold the table.
    canonical = patients.select(columns).with_columns(pl.col("patient_key").cast(pl.String),
                                                      pl.col("nhs_number").cast(pl.String))
    plan = with_survivor_values(pl.concat([canonical, verdicts.lazy().with_columns(
        pl.col("nhs_number_verification").cast(pl.String))], how="horizontal"), best)
    duplicates = pl.concat([_pair_rows(decided), _pair_rows(probable)]).cast(
        DUPLICATES_SCHEMA).sort("patient_key_a", "patient_key_b")  # type: ignore[arg-type]
    return IdentityPlan(
        patients=plan if ordered else plan.sort("patient_key"),
        rows=verdicts.height,
        merges=merges.cast(MERGES_SCHEMA),  # type: ignore[arg-type]
        duplicates=duplicates,
        exceptions=exceptions,
        at_target=at_target.select("patient_key", "at_target_id", "match_method", "score"),
        model=model,
    )
