"""Stable resource ids: UUIDv5 of (source system, kind, source key).

Every id is ``uuid5(namespace(identifier_base, source_system), f"{kind}/{key}")`` where
``kind`` names what the resource stands for (``patient``, ``referral``, ``episode``,
``contact``, ``flag``, …) and ``key`` is the outgoing provider's own key (never a row
number), so an id does not depend on row order, on the batch it arrives in or on the run:
a delta batch re-sends the same record under the same id and the receiving server updates
it (``PUT Type/id``). Different source systems get different namespaces, so two providers'
``P001`` never collide.

``fhir_ids`` computes many at once, in polars: each name's bytes after the namespace's, their
SHA-1 by the polars-hash plugin, the UUID formatted by string slices. At a million patients
the FHIR stage makes ~17M ids; a Python loop over hashlib took ~1.4 s a million (the SHA-1s
~1.0 of it), this ~0.5 (``benchmarks/fhir.md``). ``fhir_id`` is the scalar reference
implementation (``uuid.uuid5``); a property-based test keeps the two equal.
"""

from __future__ import annotations

import uuid

import polars as pl
import polars_hash as plh

# RFC 4122 variant bits: the 17th hex digit keeps its low two bits and gets 10 on top.
_VARIANT = {f"{i:x}": "89ab"[i & 3] for i in range(16)}


def namespace(identifier_base: str, source_system: str) -> uuid.UUID:
    """The UUIDv5 namespace of one source system."""
    return uuid.uuid5(uuid.NAMESPACE_URL, f"{identifier_base}/Id/{source_system}")


def fhir_id(ns: uuid.UUID, kind: str, key: str) -> str:
    """The id of the ``kind`` resource made from source key ``key``."""
    return str(uuid.uuid5(ns, f"{kind}/{key}"))


def fhir_ids(ns: uuid.UUID, kind: str, keys: pl.Series) -> pl.Series:
    """``fhir_id`` for every key of ``keys`` (nulls stay null), as a String Series."""
    name = keys.name
    prefix = pl.lit(ns.bytes + kind.encode("utf-8") + b"/", dtype=pl.Binary)
    h = pl.col(name)
    formatted = pl.concat_str([
        h.str.slice(0, 8), pl.lit("-"), h.str.slice(8, 4), pl.lit("-5"), h.str.slice(13, 3), pl.lit("-"),
        h.str.slice(16, 1).replace_strict(_VARIANT, return_dtype=pl.String), h.str.slice(17, 3), pl.lit("-"),
        h.str.slice(20, 12),
    ])
    # The name's UTF-8 bytes after the namespace's (binary: the namespace is 16 arbitrary bytes)
    digests = keys.cast(pl.String).to_frame().select((prefix + h.cast(pl.Binary)).alias(name))
    return digests.select(plh.col(name).nchash.sha1()).select(formatted.alias(name)).to_series()


def with_ids(frame: pl.DataFrame, ns: uuid.UUID, kind: str, key: str | pl.Expr, alias: str) -> pl.DataFrame:
    """``frame`` with column ``alias`` = the id of ``kind`` for each row's ``key``."""
    keys = frame.select((pl.col(key) if isinstance(key, str) else key).cast(pl.String).alias(alias)).to_series()
    return frame.with_columns(fhir_ids(ns, kind, keys))
