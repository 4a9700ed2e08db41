"""Blocking: candidate pairs as the union of the pairs each rule produces.

A rule (``rules/identity.yaml`` blocking.rules) is a list of parts; two records are a
candidate pair under it when they agree on every part (both present). The candidate pairs
are the union over the rules, each pair carrying ``rules``, a bit mask of the rules that
produced it (bit r = rule r), so that EM can train on one rule's pairs at a time and the
report can say what each rule contributed.

The cap: a rule's key value shared by more than ``max_block_size`` records is skipped for
that rule (its pairs grow with the square and do not discriminate: a placeholder postcode,
a default birth date). Skipped blocks and the records in them are reported per rule; the
other rules still reach those records.
"""

from __future__ import annotations

from dataclasses import dataclass

import polars as pl

from migrate.identity.settings import IdentitySettings

# Blocking part -> (columns on the left record, columns on the right record).
PART_COLUMNS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "nhs_number": (("nhs",), ("nhs",)),
    "birth_date": (("bd_key",), ("bd_key",)),
    "birth_date_swapped": (("bd_swap",), ("bd_key",)),
    "birth_year": (("by",), ("by",)),
    "family_name": (("fam",), ("fam",)),
    "family_initial": (("fam_init",), ("fam_init",)),
    "family_phonetic": (("fam_ph",), ("fam_ph",)),
    "given_name": (("giv1",), ("giv1",)),
    "given_initial": (("giv_init",), ("giv_init",)),
    "given_prefix": (("giv_pre",), ("giv_pre",)),
    "given_phonetic": (("giv_ph",), ("giv_ph",)),
    "postcode": (("pc",), ("pc",)),
    "postcode_district": (("pc_dist",), ("pc_dist",)),
    "phone": (("phone",), ("phone",)),
    "address_number": (("addr_num",), ("addr_num",)),
    "street": (("street",), ("street",)),
    "names_reversed": (("giv1", "fam"), ("fam", "giv1")),
    "crossed_phonetic": (("giv_ph",), ("fam_ph",)),
}
# Blocking part -> the comparisons whose levels it decides or correlates with: EM on a
# rule's pairs does not estimate their m (every pair of the rule agrees on them).
PART_COVERS: dict[str, tuple[str, ...]] = {
    "nhs_number": (),
    "birth_date": ("birth_date",), "birth_date_swapped": ("birth_date",), "birth_year": ("birth_date",),
    "family_name": ("family_name",), "family_initial": ("family_name",), "family_phonetic": ("family_name",),
    "given_name": ("given_names",), "given_initial": ("given_names",), "given_prefix": ("given_names",),
    "given_phonetic": ("given_names",),
    "postcode": ("postcode", "address"), "postcode_district": ("postcode", "address"),
    "phone": ("phone",), "address_number": ("address",), "street": ("address",),
    "names_reversed": ("family_name", "given_names", "names_reversed"),
    "crossed_phonetic": ("family_name", "given_names", "names_reversed"),
}
PAIR_SCHEMA: dict[str, pl.DataType] = {"i": pl.UInt32(), "j": pl.UInt32(), "rules": pl.UInt64()}
MAX_RULES = 64


@dataclass(frozen=True)
class RuleReport:
    """What one blocking rule did: the pairs it produced, those no other rule produced, and
    the blocks (and their records) the cap skipped."""

    rule: str
    pairs: int
    only_this_rule: int
    skipped_blocks: int
    skipped_records: int

    def asdict(self) -> dict[str, int | str]:
        return {"rule": self.rule, "pairs": self.pairs, "only_this_rule": self.only_this_rule,
                "skipped_blocks": self.skipped_blocks, "skipped_records": self.skipped_records}


def rule_name(rule: tuple[str, ...]) -> str:
    """A rule as written in reports: its parts joined with ``+``."""
    return "+".join(rule)


def covered(rule: tuple[str, ...]) -> set[str]:
    """The comparisons a rule's pairs all agree on (see ``PART_COVERS``)."""
    return {c for part in rule for c in PART_COVERS[part]}


def _key_frame(records: pl.DataFrame, columns: tuple[str, ...], max_block: int) -> tuple[pl.DataFrame, int, int]:
    """(idx with the rule's key columns for records whose block is within the cap,
    blocks skipped, records in them)."""
    names = [f"k{n}" for n in range(len(columns))]
    keys = records.select("idx", *[pl.col(c).alias(k) for c, k in zip(columns, names)]).drop_nulls(names)
    keys = keys.with_columns(pl.len().over(names).alias("_size"))
    big = keys.filter(pl.col("_size") > max_block)
    skipped = big.select(pl.struct(names).n_unique()).item() if big.height else 0
    return keys.filter(pl.col("_size") <= max_block).drop("_size"), int(skipped), big.height


def candidate_pairs(left: pl.DataFrame, right: pl.DataFrame | None, settings: IdentitySettings
                    ) -> tuple[pl.DataFrame, list[RuleReport]]:
    """Distinct candidate pairs (``i`` left idx, ``j`` right idx, ``rules`` bit mask),
    sorted by (i, j), and what each rule did.

    With ``right`` None the records are paired among themselves (i < j); otherwise every
    pair links a left record to a right one.
    """
    shift = 1 << 32
    parts: list[pl.DataFrame] = []
    skipped: list[tuple[int, int]] = []
    for r, rule in enumerate(settings.blocking_rules):
        lcols = tuple(c for part in rule for c in PART_COLUMNS[part][0])
        rcols = tuple(c for part in rule for c in PART_COLUMNS[part][1])
        names = [f"k{n}" for n in range(len(lcols))]
        directions = [(lcols, rcols)] if right is None or lcols == rcols else [(lcols, rcols), (rcols, lcols)]
        found: list[pl.DataFrame] = []
        blocks = records_skipped = 0
        for lc, rc in directions:
            a, sb, sr = _key_frame(left, lc, settings.max_block_size)
            b, sb2, sr2 = (a, 0, 0) if right is None and lc == rc else _key_frame(
                left if right is None else right, rc, settings.max_block_size)
            blocks, records_skipped = max(blocks, sb + sb2), max(records_skipped, sr + sr2)
            pairs = a.rename({"idx": "i"}).join(b.rename({"idx": "j"}), on=names, how="inner").select("i", "j")
            if right is None:
                pairs = pairs.filter(pl.col("i") != pl.col("j")).select(
                    pl.min_horizontal("i", "j").alias("i"), pl.max_horizontal("i", "j").alias("j"))
            found.append(pairs)
        # One u64 per pair: deduplicating one integer column is far cheaper than two.
        packed = pl.concat(found).select((pl.col("i").cast(pl.UInt64) * shift + pl.col("j")).alias("p")).unique()
        parts.append(packed.with_columns(pl.lit(1 << r, dtype=pl.UInt64).alias("rules")))
        skipped.append((blocks, records_skipped))
    if not parts:
        return pl.DataFrame(schema=PAIR_SCHEMA), []
    union = pl.concat(parts).group_by("p").agg(pl.col("rules").bitwise_or()).sort("p")
    reports = []
    for r, rule in enumerate(settings.blocking_rules):
        bit = pl.lit(1 << r, dtype=pl.UInt64)
        mine = union.filter((pl.col("rules") & bit) != 0)
        reports.append(RuleReport(rule_name(rule), mine.height, mine.filter(pl.col("rules") == bit).height,
                                  *skipped[r]))
    pairs = union.select((pl.col("p") // shift).cast(pl.UInt32).alias("i"), (pl.col("p") % shift).cast(pl.UInt32)
                         .alias("j"), "rules")
    return pairs, reports


__all__ = ["PAIR_SCHEMA", "PART_COLUMNS", "PART_COVERS", "RuleReport", "candidate_pairs", "covered", "rule_name"]
