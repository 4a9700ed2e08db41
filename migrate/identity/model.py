"""The Fellegi-Sunter model of the extract: parameters estimated from the data itself.

For each comparison level l (``rules/identity.yaml`` comparisons):

- **u** (how often two *different* people's records fall at l) is counted over random record
  pairs (``model.u_pairs``, drawn with ``model.seed`` in the order of the record keys, so the
  same extract gives the same pairs whatever its row order; every pair when there are
  fewer). Two random records are almost never one person.
- **Term frequencies**: at the ``exact`` level of a comparison with ``term_frequency``, u is
  the share of the *other* records holding the pair's value, (count - 1) / (records - 1):
  agreement on Smith weighs less than agreement on a rare name.
- **m** (how often one person's two records fall at l) is estimated by
  expectation-maximisation, once per blocking rule over the pairs that rule produced,
  for the comparisons the rule does not block on, with u held at its random-pair value;
  a comparison's m is the average over the rules that estimated it, weighted by the
  matches each expects. (Pairs agreeing on birth date by construction say nothing about
  how often one person's birth dates agree.)
- The **prior** (probability that two random records are one person) is 2d / (records - 1)
  where d, the duplicate pairs per record, is the expected number of matches among the
  candidate pairs (the sum of their match probabilities, found by fixed-point iteration)
  per record. Twins, never paired, count for nothing.

Every estimate is smoothed towards the pack's starting values, which weigh as
``model.strength`` pairs (or records): a small extract keeps close to them, a large one is
ruled by its own data. Estimates are rounded to 6 significant figures, and the rounded
values are both those used and those written (``identity-model.json``).

A level's match weight is log2(m / u); a pair's is the prior's log-odds plus the weight of
each comparison's level (a missing field adds nothing) plus ``model.nhs_number_disagree``
when both records carry valid NHS numbers that differ.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import polars as pl

from migrate.identity.blocking import RuleReport, covered, rule_name
from migrate.identity.compare import CHUNK, compare
from migrate.identity.settings import Comparison, IdentitySettings

# Comparison -> the prepared column its exact level compares (term frequencies are of it).
TF_VALUE = {"family_name": "fam", "given_names": "giv", "postcode": "pc", "address": "addr", "phone": "phone"}
PRIOR_ITERATIONS = 50
MODEL_FILE = "identity-model.json"  # the learned parameters, in the run folder beside duplicates.parquet
_TINY = 1e-12


def _round(x: float) -> float:
    return float(f"{x:.6g}")


@dataclass(frozen=True)
class LearnedComparison:
    """One comparison's estimated parameters (``m``, ``u`` per level, in level order)."""

    name: str
    labels: tuple[str, ...]
    m: tuple[float, ...]
    u: tuple[float, ...]
    m_estimated_by: tuple[str, ...]  # the blocking rules whose EM estimated m; () = starting values
    term_frequency: bool

    def weights(self) -> tuple[float, ...]:
        """log2(m / u) per level."""
        return tuple(math.log2(m / u) for m, u in zip(self.m, self.u))


@dataclass(frozen=True)
class Model:
    """The estimated model (module docstring) and how it was estimated (``report``).

    ``term_frequencies``: per comparison with term frequencies, the prepared value column
    and a frame of (value, u) for every value in the extract.
    """

    records: int
    prior: float
    duplicates_per_record: float
    comparisons: tuple[LearnedComparison, ...]
    nhs_number_disagree: float
    household: tuple[tuple[str, ...], ...] = ()
    term_frequencies: dict[str, tuple[str, pl.DataFrame]] = field(default_factory=dict)
    report: dict[str, Any] = field(default_factory=dict)

    @property
    def prior_weight(self) -> float:
        """The prior as a match weight: log2(prior / (1 - prior))."""
        return math.log2(self.prior / (1 - self.prior))

    def comparison(self, name: str) -> LearnedComparison:
        return next(c for c in self.comparisons if c.name == name)

    def with_prior(self, prior: float) -> Model:
        """The same parameters with another prior (linking to a target index)."""
        return Model(self.records, _round(prior), self.duplicates_per_record, self.comparisons,
                     self.nhs_number_disagree, self.household, self.term_frequencies, self.report)

    def summary(self) -> dict[str, Any]:
        """For the manifest: the file holding the parameters, the prior and every level's
        weight (same extract and rules, same weights)."""
        return {"file": MODEL_FILE, "records": self.records, "prior": self.prior,
                "weights": {c.name: dict(zip(c.labels, (round(w, 4) for w in c.weights()))) for c in self.comparisons}}

    def asdict(self) -> dict[str, Any]:
        """The learned parameters as written to ``identity-model.json`` (no patient values)."""
        return {
            "records": self.records,
            "prior": self.prior,
            "prior_weight": round(self.prior_weight, 4),
            "duplicates_per_record": self.duplicates_per_record,
            "nhs_number_disagree": self.nhs_number_disagree,
            "counted_once": [list(g) for g in self.household],
            "comparisons": {
                c.name: {
                    "term_frequency": c.term_frequency,
                    **({"distinct_values": self.term_frequencies[c.name][1].height} if c.term_frequency else {}),
                    "m_estimated_by": list(c.m_estimated_by) or "starting values (no rule could estimate it)",
                    "levels": [{"level": label, "m": m, "u": u, "weight": round(w, 4)}
                               for label, m, u, w in zip(c.labels, c.m, c.u, c.weights())],
                } for c in self.comparisons},
            **self.report,
        }


def _smoothed(counts: np.ndarray, start: tuple[float, ...], strength: float) -> np.ndarray:
    """Counts per level smoothed towards ``start`` weighing ``strength`` observations."""
    probs = (counts + strength * np.asarray(start)) / (counts.sum() + strength)
    return np.asarray(probs, dtype=np.float64)


def _random_pairs(records: pl.DataFrame, settings: IdentitySettings) -> tuple[pl.DataFrame, bool]:
    """Random distinct record pairs (``i``, ``j``) for u, and whether they are all pairs.

    Positions are drawn over the records sorted by key, so the draw does not depend on the
    row order of the extract."""
    n = records.height
    limit = settings.model.u_pairs
    if n * (n - 1) // 2 <= limit:
        i, j = np.triu_indices(n, k=1)
        order = np.arange(n)
        full = True
    else:
        rng = np.random.default_rng(settings.model.seed)
        i, j = rng.integers(0, n, size=limit), rng.integers(0, n, size=limit)
        keep = i != j
        i, j = i[keep], j[keep]
        order = records.select(pl.col("key").arg_sort()).to_series().to_numpy()
        full = False
    return pl.DataFrame({"i": order[i].astype(np.uint32), "j": order[j].astype(np.uint32)}), full


def _level_counts(levels: pl.DataFrame, comparison: Comparison) -> np.ndarray:
    col = f"l_{comparison.name}"
    counts = levels.get_column(col).drop_nulls().value_counts()
    out = np.zeros(len(comparison.levels))
    for level, n in counts.iter_rows():
        out[int(level)] = n
    return out


def _term_frequencies(records: pl.DataFrame, comparison: Comparison, u_exact: float, strength: float
                      ) -> tuple[str, pl.DataFrame]:
    column = TF_VALUE[comparison.name]
    values = records.get_column(column).drop_nulls()
    n = values.len()
    counts = values.value_counts(name="count").sort(column)
    u = ((pl.col("count") - 1 + strength * u_exact) / (n - 1 + strength)).clip(_TINY, 1.0)
    return column, counts.select(pl.col(column).alias("value"), u.round_sig_figs(6).alias("u"))


def _em(patterns: np.ndarray, counts: np.ndarray, m0: list[np.ndarray], u: list[np.ndarray],
        settings: IdentitySettings) -> tuple[list[np.ndarray], float, int, bool]:
    """EM over aggregated comparison patterns (rows of level indices, -1 = missing) with u
    fixed: returns (m per comparison, expected matches, iterations, converged)."""
    strength = settings.model.m_strength
    # index -1 (missing) -> the appended 1.0: log 1 = 0, the comparison adds nothing
    log_u = [np.log(np.append(x, 1.0)) for x in u]
    m = [x.copy() for x in m0]
    lam = 0.5
    total = counts.sum()
    expected = 0.0
    for iteration in range(1, settings.model.em_max_iterations + 1):
        log_m = [np.log(np.append(x, 1.0)) for x in m]
        lm = math.log(lam) + sum(log_m[c][patterns[:, c]] for c in range(len(m)))
        lu = math.log(1 - lam) + sum(log_u[c][patterns[:, c]] for c in range(len(m)))
        p = 1.0 / (1.0 + np.exp(np.clip(lu - lm, -700, 700)))
        w = p * counts
        expected = float(w.sum())
        new = []
        for c, start in enumerate(m0):
            col = patterns[:, c]
            seen = col >= 0
            sums = np.bincount(col[seen], weights=w[seen], minlength=len(start))
            new.append(_smoothed(sums, tuple(start), strength))
        new_lam = min(max(expected / total, 1e-9), 1 - 1e-9)
        change = max(max(float(np.abs(a - b).max()) for a, b in zip(new, m)), abs(new_lam - lam))
        m, lam = new, new_lam
        if change < settings.model.em_tolerance:
            return m, expected, iteration, True
    return m, expected, settings.model.em_max_iterations, False


def _estimate_m(levels: pl.DataFrame, u: dict[str, np.ndarray], settings: IdentitySettings,
                q_rule: tuple[float, ...]) -> tuple[dict[str, np.ndarray], dict[str, tuple[str, ...]],
                                                    list[dict[str, Any]]]:
    sums: dict[str, np.ndarray] = {}
    weight: dict[str, float] = {}
    by: dict[str, list[str]] = {c.name: [] for c in settings.comparisons}
    runs: list[dict[str, Any]] = []
    for r, rule in enumerate(settings.blocking_rules):
        est = [c for c in settings.comparisons if c.name not in covered(rule)]
        mine = levels.filter((pl.col("rules") & pl.lit(1 << r, dtype=pl.UInt64)) != 0)
        if "h" in mine.columns:  # the rule's own uniform sample among the drawn pairs
            mine = mine.filter(pl.col("h") < q_rule[r])
        run: dict[str, Any] = {"rule": rule_name(rule), "pairs": mine.height, "share": round(q_rule[r], 6),
                               "estimated": [c.name for c in est]}
        if mine.height == 0 or not est:
            runs.append(run | {"iterations": 0, "converged": False, "expected_matches": 0.0})
            continue
        cols = [f"l_{c.name}" for c in est]
        grouped = mine.group_by(cols).len().fill_null(-1).sort(cols)
        patterns = grouped.select(cols).to_numpy().astype(np.int64)
        counts = grouped.get_column("len").to_numpy().astype(np.float64)
        m, expected, iterations, converged = _em(
            patterns, counts, [np.asarray([lv.m for lv in c.levels]) for c in est], [u[c.name] for c in est], settings)
        runs.append(run | {"iterations": iterations, "converged": converged, "expected_matches": round(expected, 2)})
        for n, (c, mc) in enumerate(zip(est, m)):
            if not (patterns[:, n] >= 0).any():
                continue  # no pair of the rule has this field on both records: nothing learned
            sums[c.name] = sums.get(c.name, 0) + expected * mc
            weight[c.name] = weight.get(c.name, 0.0) + expected
            by[c.name].append(rule_name(rule))
    m_out = {}
    for c in settings.comparisons:
        if weight.get(c.name, 0.0) > 0:
            m_out[c.name] = sums[c.name] / weight[c.name]
        else:
            m_out[c.name] = np.asarray([lv.m for lv in c.levels])
            by[c.name] = []
    return m_out, {k: tuple(v) for k, v in by.items()}, runs


def match_weights(levels: pl.DataFrame, tf_u: dict[str, pl.Series], model: Model) -> pl.DataFrame:
    """Per pair: ``w_<comparison>`` (the weight its level adds; 0 when missing), ``w_nhs_number``
    and ``match_weight`` (prior log-odds + all of them). ``tf_u``: per comparison with term
    frequencies, the u of the first record's value for each pair."""
    cols = []
    for c in model.comparisons:
        level = pl.col(f"l_{c.name}")
        weights = c.weights()
        w = level.replace_strict(dict(enumerate(weights)), default=None, return_dtype=pl.Float64)
        if c.term_frequency and c.name in tf_u and c.labels[0] == "exact":
            w = pl.when(level == 0).then((c.m[0] / tf_u[c.name].clip(_TINY, 1.0)).log(2)).otherwise(w)
        cols.append(w.fill_null(0.0).alias(f"w_{c.name}"))
    frame = levels.with_columns(tf_u.values()).with_columns(cols) if tf_u else levels.with_columns(cols)
    frame = frame.with_columns(_counted_once(model))
    frame = frame.with_columns(
        pl.when(pl.col("nhs_differ")).then(model.nhs_number_disagree).otherwise(0.0).alias("w_nhs_number"))
    names = [f"w_{c.name}" for c in model.comparisons] + ["w_nhs_number"]
    return frame.with_columns(pl.sum_horizontal([pl.lit(model.prior_weight), *names]).alias("match_weight")).drop(
        [s.name for s in tf_u.values()])


def _counted_once(model: Model) -> list[pl.Expr]:
    """Within each group of ``household`` comparisons, only the strongest agreement counts
    (the others' positive weights become 0); disagreements all count. One household shares
    an address, a postcode and a phone: their agreements are one piece of evidence, not three."""
    out: list[pl.Expr] = []
    names = {c.name for c in model.comparisons}
    for group in model.household:
        members = [f"w_{g}" for g in group if g in names]
        if len(members) < 2:
            continue
        best = pl.max_horizontal([pl.col(m).clip(lower_bound=0.0) for m in members])
        taken: pl.Expr = pl.lit(False)
        for m in members:
            keep = (pl.col(m) > 0) & (pl.col(m) == best) & ~taken
            out.append(pl.when((pl.col(m) > 0) & ~keep).then(0.0).otherwise(pl.col(m)).alias(m))
            taken = taken | keep
    return out


def with_term_frequencies(model: Model, records: pl.DataFrame) -> pl.DataFrame:
    """``records`` with ``tfu_<comparison>``: the u of each record's value (its share of the
    extract; the comparison's exact u for a value not in it), looked up once per record."""
    cols = []
    for c in model.comparisons:
        if c.term_frequency and c.name in model.term_frequencies:
            column, table = model.term_frequencies[c.name]
            u = records.select(pl.col(column).alias("value")).join(table, on="value", how="left",
                                                                    maintain_order="left").get_column("u")
            cols.append(u.fill_null(c.u[0]).alias(f"tfu_{c.name}"))
    return records.with_columns(cols)


def tf_columns(model: Model, records: pl.DataFrame, idx: pl.Series) -> dict[str, pl.Series]:
    """Per comparison with term frequencies: the u of ``records``' value at positions
    ``idx`` (``with_term_frequencies``; looked up here when ``records`` lacks it)."""
    names = [c.name for c in model.comparisons if c.term_frequency and c.name in model.term_frequencies]
    if any(f"tfu_{n}" not in records.columns for n in names):
        records = with_term_frequencies(model, records)
    return {n: records.get_column(f"tfu_{n}").gather(idx) for n in names}


def rule_shares(counts: list[int], settings: IdentitySettings) -> tuple[float, ...]:
    """q_r per blocking rule, from the candidate pairs each rule produced (``em_sample``)."""
    used = max(1, sum(1 for n in counts if n))
    share = settings.model.em_pairs / used
    return tuple(min(1.0, share / n) if n else 1.0 for n in counts)


def em_draw(pairs: pl.DataFrame, records: pl.DataFrame, q_rule: tuple[float, ...], settings: IdentitySettings
            ) -> pl.DataFrame:
    """The ``pairs`` (any subset of the candidate pairs: each pair is drawn on its own)
    that ``em_sample`` keeps, given each rule's q_r, with ``h`` and ``q``."""
    if all(q == 1.0 for q in q_rule):
        return pairs.with_columns(pl.lit(1.0).alias("q"), pl.lit(0.0).alias("h"))
    # memory: CHUNK pairs at a time: each pair's two keys, joined and hashed, over a whole
    # span's pairs (~4M, ``blocking.CHUNK_PAIRS``) were ~0.3 GB at once
    return pl.concat([_drawn(pairs.slice(start, CHUNK), records, q_rule, settings)
                      for start in range(0, max(pairs.height, 1), CHUNK)])


def _drawn(pairs: pl.DataFrame, records: pl.DataFrame, q_rule: tuple[float, ...], settings: IdentitySettings
           ) -> pl.DataFrame:
    bits = [1 << r for r in range(len(settings.blocking_rules))]
    keys = records.get_column("key")
    a, b = keys.gather(pairs.get_column("i")), keys.gather(pairs.get_column("j"))
    h = pl.DataFrame({"a": a, "b": b}).select(
        (pl.concat_str([pl.min_horizontal("a", "b"), pl.max_horizontal("a", "b")], separator="\x1f")
         .hash(seed=settings.model.seed) // 2**11).cast(pl.Float64) / 2.0**53).to_series()
    q = pl.max_horizontal([pl.when((pl.col("rules") & pl.lit(bit, dtype=pl.UInt64)) != 0).then(pl.lit(qr))
                           .otherwise(pl.lit(0.0)) for bit, qr in zip(bits, q_rule)])
    drawn = pairs.with_columns(h.alias("h")).with_columns(q.alias("q"))
    return drawn.filter(pl.col("h") < pl.col("q"))


def em_sample(pairs: pl.DataFrame, records: pl.DataFrame, settings: IdentitySettings
              ) -> tuple[pl.DataFrame, tuple[float, ...]]:
    """The candidate pairs EM trains on, with ``q``, the chance each had of being drawn, and
    each rule's q_r.

    Each blocking rule keeps at most its share of ``model.em_pairs`` (the total over the
    rules that produced pairs, split evenly): rule r keeps the pairs whose hash of the two
    records' keys falls below q_r = min(1, share / its pairs) — so the same pairs whatever
    the row order, each rule's kept pairs a uniform sample of its own, and a pair kept
    with chance q = the largest q_r of its rules (what the prior's count is divided by).
    ``h`` is the pair's hash as a fraction in [0, 1). (The identity stage draws span by
    span: ``rule_shares`` of the counts, then ``em_draw`` of each span's pairs.)
    """
    bits = [1 << r for r in range(len(settings.blocking_rules))]
    counts = [pairs.filter((pl.col("rules") & pl.lit(b, dtype=pl.UInt64)) != 0).height for b in bits]
    q_rule = rule_shares(counts, settings)
    return em_draw(pairs, records, q_rule, settings), q_rule


def estimate(records: pl.DataFrame, levels: pl.DataFrame, blocking: list[RuleReport],
             settings: IdentitySettings, candidates: int | None = None,
             q_rule: tuple[float, ...] | None = None) -> Model:
    """Estimate the model from prepared ``records`` and the ``compare`` levels of their
    candidate pairs (with ``i``, ``j`` and the ``rules`` bit mask) — all of them, or those
    ``em_sample`` drew (with ``h`` and ``q``; ``q_rule`` each rule's share) from
    ``candidates`` pairs."""
    ms = settings.model
    n = records.height
    q_rule = q_rule or tuple(1.0 for _ in settings.blocking_rules)
    sample, full = _random_pairs(records, settings) if n >= 2 else (pl.DataFrame(
        schema={"i": pl.UInt32, "j": pl.UInt32}), True)
    random_levels = compare(sample, records, records, settings) if sample.height else None
    u: dict[str, np.ndarray] = {}
    for c in settings.comparisons:
        counts = _level_counts(random_levels, c) if random_levels is not None else np.zeros(len(c.levels))
        u[c.name] = np.asarray([_round(x) for x in _smoothed(counts, tuple(lv.u for lv in c.levels), ms.u_strength)])
    m, by, runs = _estimate_m(levels, u, settings, q_rule)
    comparisons = tuple(LearnedComparison(
        c.name, tuple(lv.label for lv in c.levels), tuple(_round(max(x, _TINY)) for x in m[c.name]),
        tuple(float(x) for x in u[c.name]), by[c.name], c.term_frequency) for c in settings.comparisons)
    tfs = {c.name: _term_frequencies(records, c, float(u[c.name][0]), ms.tf_strength)
           for c in settings.comparisons if c.term_frequency}
    draft = Model(n, 0.5, ms.duplicates_per_record, comparisons, ms.nhs_number_disagree, ms.counted_once, tfs)
    d = _duplicates_per_record(draft, records, levels, settings)
    prior = min(2 * d / max(n - 1, 1), 0.5)
    report = {
        "candidate_pairs": candidates or levels.height,
        "em_pairs": levels.height,
        "blocking": {"max_block_size": settings.max_block_size, "rules": [r.asdict() for r in blocking]},
        "u_sampling": {"pairs": sample.height, "all_pairs": full, "seed": ms.seed},
        "em": runs,
    }
    return Model(n, _round(prior), _round(d), comparisons, ms.nhs_number_disagree, ms.counted_once, tfs, report)


def _duplicates_per_record(model: Model, records: pl.DataFrame, levels: pl.DataFrame,
                           settings: IdentitySettings) -> float:
    """d: the expected matches among the candidate pairs per record (fixed point); a drawn
    pair counts 1 / q (Horvitz-Thompson: ``levels`` may be ``em_sample``'s draw)."""
    ms = settings.model
    n = records.height
    if n < 2 or levels.height == 0:
        return ms.duplicates_per_record
    weights = match_weights(levels, tf_columns(model, records, levels.get_column("i")), model)
    # Bayes factors without the prior (the draft's prior is 0.5: log-odds 0).
    log_bf = weights.get_column("match_weight").to_numpy()
    eligible = ~levels.get_column("twin").to_numpy()
    inverse = 1.0 / (levels.get_column("q").to_numpy()[eligible] if "q" in levels.columns else np.ones(eligible.sum()))
    d = ms.duplicates_per_record
    for _ in range(PRIOR_ITERATIONS):
        prior = min(2 * d / (n - 1), 0.5)
        logit = math.log2(prior / (1 - prior)) + log_bf[eligible]
        expected = float((inverse / (1.0 + np.exp2(-np.clip(logit, -1000, 1000)))).sum())
        new = (expected + ms.prior_strength * ms.duplicates_per_record) / (n + ms.prior_strength)
        if abs(new - d) <= 1e-9 * max(d, 1e-12):
            return new
        d = new
    return d


__all__ = ["MODEL_FILE", "Model", "em_draw", "em_sample", "rule_shares", "with_term_frequencies", "LearnedComparison", "estimate", "match_weights", "tf_columns"]
