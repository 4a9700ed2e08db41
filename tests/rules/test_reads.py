"""FEATURE_READS says truthfully which canonical fields each feature is computed from.

The Documented Data Extract tells an outgoing supplier which rules each source column can
change; it follows features through ``migrate.rules.reads.FEATURE_READS``. Held to the code
by shuffling, blanking or moving one canonical column at a time over a synthetic extract the tests did not
design: every feature that changes must list that column, and every listed column must
change its feature.
"""

from __future__ import annotations

from datetime import date
from pathlib import Path

import polars as pl
import pytest

from migrate import canonical, sharing
from migrate.rules.cohorts import PATIENT_ROLLUPS
from migrate.rules.features import PATIENT_FEATURES, REFERRAL_FEATURES
from migrate.pipeline import RunConfig, run_batch
from migrate.rules import evaluate, load_pack
from migrate.rules.reads import FEATURE_READS, canonical_reads, feature_fields, rules_by_field
from migrate.synth import synthesise

CUTOVER = date(2022, 10, 1)
# The subject's own key identifies the row compared; shuffling it compares other rows.
OWN_KEYS = {("patients", "patient_key"), ("referrals", "referral_key")}


@pytest.fixture(scope="module")
def tables(tmp_path_factory: pytest.TempPathFactory) -> dict[str, pl.DataFrame]:
    root = tmp_path_factory.mktemp("reads")
    synthesise(root / "extract", patients=1000, seed=7)
    run_batch(RunConfig.load(root / "extract", "generic-csv", CUTOVER, root / "run", emit_fhir=False))
    frames = {t: pl.read_parquet(root / "run" / "canonical" / f"{t}.parquet") for t in canonical.TABLE_ORDER}
    # Sharing entries of every source: a quarter of the patients carry their own setting
    # (a dissent, a consent or an opt-out in turn), and the first practices do not share out.
    i = pl.int_range(pl.len())
    kind = pl.when(i % 12 == 0).then(pl.lit("dissent")).when(i % 12 == 4).then(pl.lit("consent")) \
        .otherwise(pl.lit("opt_out"))
    setting = pl.struct(kind.alias("kind"),
                        pl.lit("X").alias("value"), (pl.lit(date(2015, 1, 1)) + pl.duration(days=i)).alias("date"),
                        pl.lit("Sharing").alias("column"))
    frames["patients"] = frames["patients"].with_columns(
        pl.when(i % 4 == 0).then(setting).cast(canonical.SHARING_SETTING).alias("sharing_out"))
    practices = frames["patients"]["gp_ods_code"].drop_nulls().unique().sort().head(6)
    frames["practice_sharing"] = pl.DataFrame({"ods_code": practices}).with_columns(
        pl.struct(pl.lit("dissent").alias("kind"), pl.lit("N").alias("value"),
                  (pl.lit(date(2016, 1, 1)) + pl.duration(days=pl.int_range(pl.len()) * 400)).alias("date"),
                  pl.lit("Shares").alias("column")).cast(canonical.SHARING_SETTING).alias("sharing_out"),
        pl.lit("practices.csv").alias("source_file"), pl.int_range(1, pl.len() + 1).alias("source_row"))
    return frames


def _features(tables: dict[str, pl.DataFrame]) -> dict[str, pl.DataFrame]:
    pack = load_pack(None)
    frames = {t: f.lazy() for t, f in tables.items() if t in canonical.TABLE_ORDER}
    frames["sharing"] = sharing.entries(frames, pack, tables["practice_sharing"].lazy())
    out = evaluate(frames, pack, CUTOVER).collect(features=True)
    return {"referral": out["referral_features"], "patient": out["patient_features"]}


def _changed(tables: dict[str, pl.DataFrame], baseline: dict[str, pl.DataFrame], table: str,
             column: str) -> set[tuple[str, str]]:
    """Features that differ from ``baseline`` when ``column`` is shuffled, or blanked on every
    third row (a shuffle keeps how often each value occurs: a count would never move)."""
    found: set[tuple[str, str]] = set()
    for perturbed in (pl.col(column).shuffle(seed=7),
                      pl.when(pl.int_range(pl.len()) % 3 == 0).then(None).otherwise(pl.col(column)).alias(column),
                      *_moved(column, tables[table].schema[column])):
        changed = dict(tables)
        changed[table] = tables[table].with_columns(perturbed)
        after = _features(changed)
        found |= {(level, name) for level, names in FEATURE_READS.items() for name in names
                  if not after[level][name].equals(baseline[level][name])}
    return found


def _moved(column: str, dtype: pl.DataType) -> list[pl.Expr]:
    """Every value changed (dates moved 400 days later, truth values negated, an unknown value added
    to a list), where the type allows."""
    col = pl.col(column)
    if dtype.is_temporal():
        return [col.dt.offset_by("400d")]
    if dtype == pl.Boolean:
        return [~col]
    if dtype == pl.List(pl.String):  # a value no codelist lists, beside the ones there
        return [col.list.concat(pl.lit(["zz-not-in-any-codelist"]))]
    return []


def test_every_feature_says_what_it_reads() -> None:
    features = {"referral": set(REFERRAL_FEATURES), "patient": set(PATIENT_FEATURES) | set(PATIENT_ROLLUPS)}
    for level, names in features.items():
        assert names == set(FEATURE_READS[level]), level


def test_a_shuffled_column_changes_exactly_the_features_that_list_it(tables: dict[str, pl.DataFrame]) -> None:
    baseline = _features(tables)
    pack = load_pack(None)
    claimed: dict[tuple[str, str], set[tuple[str, str]]] = {}
    for level, names in FEATURE_READS.items():
        for name in names:
            for field in feature_fields(pack, level, name):  # through derived columns (referrals.cohort)
                claimed.setdefault(field, set()).add((level, name))
    for table in canonical.TABLE_ORDER:
        for column in canonical.TABLES[table].field_names:
            if (table, column) in OWN_KEYS:
                continue
            changed = _changed(tables, baseline, table, column)
            expected = claimed.get((table, column), set())
            assert changed <= expected, f"{table}.{column} changes {changed - expected} but they do not list it"
            assert expected <= changed, f"{table}.{column} is listed by {expected - changed} but changes nothing"


def test_rules_reach_the_canonical_fields_behind_their_features() -> None:
    pack = load_pack(None)
    by_id = {r.id: r for r in pack.rules}
    cohort = canonical_reads(pack, by_id["cohort"])
    assert ("contacts", "attendance") in cohort.fields  # attended_before_cutover
    assert ("referrals", "status") in cohort.fields  # open_at_cutover
    assert cohort.undeclared == ()
    # A patient rule reads a roll-up of the referral cohort: the cohort rule's fields count.
    two_lists = canonical_reads(pack, by_id["on-two-lists"])
    assert ("referrals", "transfer_list") in two_lists.fields
    fields = rules_by_field(pack)
    assert "sharing-block" in fields[("codes", "code")]
    # a patient's own sharing setting, and their practice's, decide a block too
    for field in (("patients", "sharing_out"), ("patients", "gp_ods_code"), ("practice_sharing", "sharing_out")):
        assert "sharing-block" in fields[field], field
    assert "under-prioritised" in fields[("referrals", "red_flags")]
    assert all(not canonical_reads(pack, r).undeclared for r in pack.rules)

