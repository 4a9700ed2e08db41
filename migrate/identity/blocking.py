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

Pairs grow faster than the records (blocks fill as the extract grows), so they are never
needed all at once: ``block_layout`` lays the rules out over the records once, and
``Blocking.pairs`` gives the pairs of one span of records (``Blocking.spans``) — the spans'
pairs, concatenated, are exactly ``candidate_pairs``'s, in the same order.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

import numpy as np
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
# Pairs generated at a time (before the union over rules, counting each rule's): bounds
# blocking's memory whatever the extract's size — the pairs grow faster than the records.
CHUNK_PAIRS = 4_000_000


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


@dataclass(frozen=True)
class _Direction:
    """One way of a rule, over row positions: the left ``rows`` (ascending) whose block has
    a partner, each row's ``block``, and the right rows grouped by block
    (``partners[start[b]:start[b] + size[b]]`` are block b's right rows)."""

    rows: np.ndarray
    block: np.ndarray
    partners: np.ndarray
    start: np.ndarray
    size: np.ndarray

    def reach(self, n: int) -> np.ndarray:
        """Per left row (``n`` of them): the right rows of its block (0 outside any block)."""
        return np.bincount(self.rows, weights=self.size[self.block], minlength=n).astype(np.int64)

    def expand(self, lo: int, hi: int) -> tuple[np.ndarray, np.ndarray]:
        """(x, y): every left row x in [lo, hi) beside every right row y of its block."""
        first, last = np.searchsorted(self.rows, [lo, hi])
        block = self.block[first:last]
        count = self.size[block].astype(np.int64)
        ends = np.cumsum(count)
        offset = np.arange(int(ends[-1]) if ends.size else 0, dtype=np.int64) - np.repeat(ends - count, count)
        y = self.partners[np.repeat(self.start[block], count) + offset]
        return np.repeat(self.rows[first:last], count), y


def _keys(frame: pl.DataFrame, cols: tuple[str, ...], names: list[str]) -> pl.DataFrame:
    """``pos`` and ``cols`` named ``names``, the rows with every key part present; categorical
    parts as their codes (each part's two sides share a vocabulary: ``prepare``)."""
    return frame.select("pos", *[(pl.col(c).to_physical() if isinstance(frame.schema[c], pl.Categorical)
                                  else pl.col(c)).alias(k) for c, k in zip(cols, names)]).drop_nulls(names)


def _direction(left: pl.DataFrame, right: pl.DataFrame | None, lcols: tuple[str, ...], rcols: tuple[str, ...],
               max_block: int) -> tuple[_Direction, int, int]:
    """The blocks of one way of a rule (left rows keyed by ``lcols``, right rows by
    ``rcols``; ``right`` None: the left rows among themselves), the blocks the cap skipped
    and the records in them (each side's blocks counted on their own).

    ``left`` and ``right`` carry ``pos``, the row position. A side's block holding more
    than ``max_block`` records is left out; a block only one side holds makes no pair."""
    names = [f"k{n}" for n in range(len(lcols))]
    among = right is None and lcols == rcols
    a = _keys(left, lcols, names)
    if among:
        both = a.with_columns(pl.lit(True).alias("_a"))
    else:
        b = _keys(left if right is None else right, rcols, names)
        both = pl.concat([a.with_columns(pl.lit(True).alias("_a")), b.with_columns(pl.lit(False).alias("_a"))])
    del a
    # memory: the rows sorted by key and cut where the key changes (numpy over a few columns
    # a row), not a group_by: its hash table and a list of positions per block, over every
    # record and rule way, were block_layout's peak (+~0.5 GB at 5M patients).
    both = both.sort(names)
    starts = both.select(pl.any_horizontal([pl.col(k) != pl.col(k).shift(1) for k in names]).fill_null(True)
                         ).to_series().to_numpy()
    pos, side = both.get_column("pos").to_numpy(), both.get_column("_a").to_numpy()
    del both
    block = np.cumsum(starts, dtype=np.int64) - 1
    blocks = int(block[-1]) + 1 if block.size else 0
    na = np.bincount(block[side], minlength=blocks)
    if among:
        nb, over = na, [na > max_block]
        kept = (na >= 2) & (na <= max_block)  # among themselves a block of one pairs with nobody
    else:
        nb = np.bincount(block[~side], minlength=blocks)
        over = [na > max_block, nb > max_block]
        kept = (na >= 1) & (na <= max_block) & (nb >= 1) & (nb <= max_block)
    skipped_blocks = sum(int(o.sum()) for o in over)
    skipped_records = sum(int(n[o].sum()) for n, o in zip((na, nb), over))
    renumbered = np.cumsum(kept, dtype=np.int64) - 1
    in_kept = kept[block]
    on_right = in_kept if among else in_kept & ~side
    partners = pos[on_right].astype(np.int32)  # sorted by key: grouped by block, blocks in order
    size = nb[kept].astype(np.int32)
    start = np.cumsum(size, dtype=np.int64) - size
    on_left = in_kept & side
    rows, row_block = pos[on_left].astype(np.int32), renumbered[block[on_left]].astype(np.int32)
    order = np.argsort(rows, kind="stable")
    made = _Direction(rows[order], row_block[order], partners, start, size)
    return made, skipped_blocks, skipped_records


@dataclass(frozen=True)
class Blocking:
    """The blocking rules laid out over ``left`` (and ``right``, or ``left`` itself): what
    ``pairs`` draws a range of left rows' candidate pairs from, one range at a time.

    ``spans`` cuts the left rows into ranges of at most about ``chunk`` generated pairs;
    the pairs of all the spans, concatenated, are exactly ``candidate_pairs``'s — each pair
    once, in the span of its first record, sorted by (i, j)."""

    left_idx: np.ndarray
    right_idx: np.ndarray
    among_themselves: bool
    rules: tuple[tuple[_Direction, ...], ...]
    skipped: tuple[tuple[int, int], ...]
    names: tuple[str, ...]

    def spans(self, chunk: int | None = None) -> list[tuple[int, int]]:
        """Ranges [lo, hi) of left rows, together every row once and in order, each
        generating at most ``chunk`` (default ``CHUNK_PAIRS``) pairs before the union over
        rules, unless one row alone generates more; at least one range."""
        chunk = CHUNK_PAIRS if chunk is None else chunk
        n = self.left_idx.size
        reach = np.zeros(n, dtype=np.int64)
        for directions in self.rules:
            for d in directions:
                reach += d.reach(n)
        total = np.cumsum(reach)
        cuts = [0]
        while cuts[-1] < n:
            done = total[cuts[-1] - 1] if cuts[-1] else 0
            nxt = int(np.searchsorted(total, done + max(chunk, 1), side="right"))
            cuts.append(min(n, max(nxt, cuts[-1] + 1)))
        return list(zip(cuts[:-1], cuts[1:])) or [(0, 0)]

    def pairs(self, lo: int, hi: int) -> pl.DataFrame:
        """The candidate pairs whose left record is row ``lo`` .. ``hi - 1`` of left (with
        the records paired among themselves: whose first record is), ``PAIR_SCHEMA``,
        sorted by (i, j)."""
        packed: list[np.ndarray] = []
        bits: list[np.ndarray] = []
        for r, directions in enumerate(self.rules):
            for d in directions:
                x, y = d.expand(lo, hi)
                if self.among_themselves:
                    later = y > x
                    x, y = x[later], y[later]
                p = (self.left_idx[x].astype(np.uint64) << np.uint64(32)) | self.right_idx[y].astype(np.uint64)
                packed.append(p)
                bits.append(np.full(p.size, 1 << r, dtype=np.uint64))
        if not packed:
            return pl.DataFrame(schema=PAIR_SCHEMA)
        p = np.concatenate(packed)
        order = np.argsort(p)
        p, b = p[order], np.concatenate(bits)[order]
        first = np.flatnonzero(np.r_[True, p[1:] != p[:-1]]) if p.size else np.zeros(0, dtype=np.int64)
        mask = np.bitwise_or.reduceat(b, first) if p.size else np.zeros(0, dtype=np.uint64)
        p = p[first]
        return pl.DataFrame({"i": (p >> np.uint64(32)).astype(np.uint32), "j": (p & np.uint64(0xFFFFFFFF))
                             .astype(np.uint32), "rules": mask.astype(np.uint64)}, schema=PAIR_SCHEMA)

    def reports(self, counts: RuleCounts) -> list[RuleReport]:
        """What each rule did, from the ``counts`` of every span's pairs."""
        return [RuleReport(name, counts.pairs[r], counts.only[r], *self.skipped[r]) for r, name in enumerate(self.names)]


@dataclass
class RuleCounts:
    """Per rule: the candidate pairs it produced and those no other rule did, summed over
    spans (``add`` each span's pairs)."""

    pairs: list[int]
    only: list[int]
    total: int = 0

    @classmethod
    def of(cls, rules: int) -> RuleCounts:
        return cls([0] * rules, [0] * rules)

    def add(self, pairs: pl.DataFrame) -> None:
        mask = pairs.get_column("rules").to_numpy()
        self.total += mask.size
        for r in range(len(self.pairs)):
            bit = np.uint64(1 << r)
            self.pairs[r] += int(((mask & bit) != 0).sum())
            self.only[r] += int((mask == bit).sum())


class SpilledPairs:
    """Every span's candidate pairs of a ``Blocking``, generated once, counted per rule
    (``counts``) and written to a temporary folder (Arrow IPC, one file a span); iterating
    reads them back a span at a time, in order, as often as needed (EM's draw, then the
    scoring), so the layout can be let go once they are written.

    # memory: one span's pairs (at most about ``CHUNK_PAIRS`` generated); the rest are on
    # disk, 16 bytes a pair before compression (~58M pairs at 5M synthetic patients), lz4.
    """

    def __init__(self, layout: Blocking, chunk: int | None = None) -> None:
        self._folder = tempfile.TemporaryDirectory(prefix="handover-pairs-")
        self.paths: list[Path] = []
        self.counts = RuleCounts.of(len(layout.names))
        for lo, hi in layout.spans(chunk):
            pairs = layout.pairs(lo, hi)
            self.counts.add(pairs)
            path = Path(self._folder.name) / f"{len(self.paths):06d}.arrow"
            pairs.write_ipc(path, compression="lz4")
            self.paths.append(path)

    def __iter__(self) -> Iterator[pl.DataFrame]:
        for path in self.paths:
            yield pl.read_ipc(path)

    def close(self) -> None:
        self._folder.cleanup()

    def __enter__(self) -> SpilledPairs:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        self.close()


def block_layout(left: pl.DataFrame, right: pl.DataFrame | None, settings: IdentitySettings) -> Blocking:
    """The rules of ``settings`` laid out over ``left`` and ``right`` (None: ``left`` paired
    among itself, i < j); ``left``'s ``idx`` ascending (``prepare``'s order, or a subset of it)."""
    # memory: whole, as identity's patient table: per rule way, each record's block and each
    # block's partners (int32, records that can pair only), ~10 bytes a record a way. Global
    # because a block may join any two records of the table; identity lets it go once the
    # pairs are spilled (``SpilledPairs``).
    among = right is None
    other = left if right is None else right
    positions = [frame.with_columns(pl.int_range(pl.len(), dtype=pl.UInt32).alias("pos"))
                 for frame in ((left,) if right is None else (left, right))]
    rules: list[tuple[_Direction, ...]] = []
    skipped: list[tuple[int, int]] = []
    for rule in settings.blocking_rules:
        lcols = tuple(c for part in rule for c in PART_COLUMNS[part][0])
        rcols = tuple(c for part in rule for c in PART_COLUMNS[part][1])
        # Among themselves, a rule whose two sides differ pairs x with y both ways round
        # (x's left key is y's right key, or y's is x's): each way a direction from x.
        directions = [(lcols, rcols)] if lcols == rcols else [(lcols, rcols), (rcols, lcols)]
        made: list[_Direction] = []
        blocks = records_skipped = 0
        for lc, rc in directions:
            way, sb, sr = _direction(positions[0], None if among else positions[1], lc, rc, settings.max_block_size)
            blocks, records_skipped = max(blocks, sb), max(records_skipped, sr)
            made.append(way)
        rules.append(tuple(made))
        skipped.append((blocks, records_skipped))
    idx = left.get_column("idx").to_numpy()
    return Blocking(idx, other.get_column("idx").to_numpy(), among, tuple(rules), tuple(skipped),
                    tuple(rule_name(rule) for rule in settings.blocking_rules))


def candidate_pairs(left: pl.DataFrame, right: pl.DataFrame | None, settings: IdentitySettings,
                    chunk: int | None = None) -> tuple[pl.DataFrame, list[RuleReport]]:
    """Distinct candidate pairs (``i`` left idx, ``j`` right idx, ``rules`` bit mask),
    sorted by (i, j), and what each rule did: every span of ``block_layout`` at once.

    With ``right`` None the records are paired among themselves (i < j); otherwise every
    pair links a left record to a right one.
    """
    layout = block_layout(left, right, settings)
    counts = RuleCounts.of(len(layout.names))
    found = []
    for lo, hi in layout.spans(chunk):
        pairs = layout.pairs(lo, hi)
        counts.add(pairs)
        found.append(pairs)
    return pl.concat(found), layout.reports(counts)


__all__ = ["CHUNK_PAIRS", "PAIR_SCHEMA", "PART_COLUMNS", "PART_COVERS", "Blocking", "RuleCounts", "RuleReport",
           "SpilledPairs", "block_layout", "candidate_pairs", "covered", "rule_name"]
