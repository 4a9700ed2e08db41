"""Expressions that stream, for plans over large tables.

polars 2.1's streaming engine runs ``replace_strict`` and ``replace`` as an "in-memory
engine fallback": the column is materialised whole, and the rows beside it wait for it, so
a streamed plan over millions of rows holds them all (``benchmarks/fallbacks.py`` lists the
plans of a batch that have such a node; benchmarks/rules.md, "In-memory fallbacks in
streamed plans"). For a small fixed mapping a ``when/then`` chain gives the same values
and streams: it is elementwise.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import polars as pl
from polars.expr.whenthen import ChainedThen, Then

__all__ = ["mapped"]


def mapped(expr: pl.Expr, mapping: Mapping[Any, Any], default: Any, dtype: pl.DataType) -> pl.Expr:
    """``expr.replace_strict(mapping, default=default, return_dtype=dtype)``, elementwise.

    The same values: a key maps to its value; a value not in ``mapping``, and null, to
    ``default`` (null when ``default`` is None). Meant for a few keys (one comparison each).
    """
    if not mapping:  # every value to the default, one per row of ``expr``
        return pl.when(expr.is_null()).then(pl.lit(default, dtype=dtype)).otherwise(pl.lit(default, dtype=dtype))
    (first, value), *rest = mapping.items()
    out: Then | ChainedThen = pl.when(expr == first).then(pl.lit(value, dtype=dtype))
    for key, value in rest:
        out = out.when(expr == key).then(pl.lit(value, dtype=dtype))
    return out.otherwise(pl.lit(default, dtype=dtype))
