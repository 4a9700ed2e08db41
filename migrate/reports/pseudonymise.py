"""The pseudonymised audit pack (``handover report RUN --pseudonymise --key-file F``).

The same reports, with every NHS number, name, date of birth and local id (patient key,
source patient and referral ids, referral and contact keys, UBRN) replaced by a token:
the first 16 hex digits of HMAC-SHA256(key, value). The key is the user's; none is ever
invented. The same value gives the same token in every file (and in every pack made with
that key), so an auditor can follow one patient across the JSON, HTML, XLSX and CSV
without learning who they are; without the key a token cannot be reversed or confirmed.

Identifier columns are mapped whole. Free text (flag evidence, the details of declared vs
found) is scrubbed word by word: a word that is a known identifier of the run, a local-id
shape (1-4 letters and 4+ digits, such as a target system's id) or a 10-digit number
(written with or without spaces) becomes its token. Candidate words are matched against
the run's identifiers with a polars join, so the cost follows the size of the text, not
the millions of identifiers.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any, cast

import polars as pl

from migrate.errors import ConfigError
from migrate.outputs import write_json
from migrate.reports.rundata import RunFolder, reading
from migrate.summary import RunSummary

TOKEN_HEX = 16
MIN_KEY_BYTES = 16
# Worklist columns that hold one identifier each, and those holding text with identifiers.
ID_COLUMNS = ("nhs_number", "local_patient_id", "patient_key", "referral")
KEY_COLUMNS = ("subject_key",)  # a key, or two joined by "+"
TEXT_COLUMNS = ("evidence",)
# Summary sections whose free text may name patients (the rest are counts and codes).
TEXT_SECTIONS = ("declared_vs_found", "delta", "invariant_fhir")
_WORD = r"[0-9A-Za-z][0-9A-Za-z'./_-]*[0-9A-Za-z]|[0-9A-Za-z]"
_SPACED_NHS = r"\b\d{3}[ -]\d{3}[ -]\d{4}\b"
_ID_SHAPE = re.compile(r"^(?:[A-Za-z]{1,4}\d{4,}|\d{10})$")
_CANDIDATES = f"{_SPACED_NHS}|{_WORD}"
_IDENTIFIERS: dict[str, tuple[str, ...]] = {
    "patients": ("patient_key", "source_patient_id", "nhs_number", "nhs_number_raw", "family_name", "given_names",
                 "birth_date", "postcode", "phone"),
    "referrals": ("referral_key", "source_referral_id", "ubrn"),
    "contacts": ("contact_key",),
}


def load_key(path: Path | None) -> bytes:
    """The pseudonymisation key from ``path`` (surrounding whitespace ignored, so a trailing
    newline does not change it); ConfigError (exit 2) when missing, unreadable or short."""
    if path is None:
        raise ConfigError("--pseudonymise needs --key-file F: handover never invents a key")
    try:
        key = path.read_bytes().strip()
    except OSError:
        raise ConfigError(f"key file not found or unreadable: {path}") from None
    check_key(key, str(path))
    return key


def check_key(key: bytes, where: str = "key") -> None:
    """ConfigError unless ``key`` has at least MIN_KEY_BYTES bytes."""
    if len(key) < MIN_KEY_BYTES:
        raise ConfigError(f"{where}: the key has {len(key)} bytes; use at least {MIN_KEY_BYTES} "
                          "(e.g. head -c 32 /dev/urandom | base64 > key)")


class Pseudonymiser:
    """Tokens of one key, with the run's identifiers to recognise in free text."""

    def __init__(self, key: bytes, identifiers: pl.LazyFrame | None = None) -> None:
        check_key(key)
        # HMAC's padded key state, computed once and copied per value.
        self._base = hmac.new(key, digestmod=hashlib.sha256)
        self._cache: dict[str, str] = {}
        self._identifiers = identifiers if identifiers is not None else pl.LazyFrame({"value": []},
                                                                                    schema={"value": pl.String})

    def token(self, value: str) -> str:
        """The token of ``value``: the first 16 hex digits of HMAC-SHA256(key, value)."""
        found = self._cache.get(value)
        if found is None:
            h = self._base.copy()
            h.update(value.encode("utf-8"))
            found = self._cache[value] = h.hexdigest()[:TOKEN_HEX]
        return found

    def column(self, series: pl.Series) -> pl.Series:
        """Each value of ``series`` (as text) replaced by its token; nulls stay null."""
        text = series.cast(pl.String)
        uniques = text.drop_nulls().unique().to_list()
        mapping = {v: self.token(v) for v in uniques}
        return text.replace_strict(mapping, default=None, return_dtype=pl.String).alias(series.name)

    def _hits(self, words: Iterable[str]) -> dict[str, str]:
        """Word -> token for the words that are identifiers (known, or identifier-shaped)."""
        candidates = sorted(set(words))
        # Stream the run's identifiers past the (few) candidate words, not the other way round.
        known = set(self._identifiers.filter(pl.col("value").is_in(candidates)).unique()
                    .collect(engine="streaming")["value"].to_list()) if candidates else set()
        hits: dict[str, str] = {}
        for word in candidates:
            if re.fullmatch(_SPACED_NHS, word):
                hits[word] = self.token(re.sub(r"[ -]", "", word))
            elif word in known or _ID_SHAPE.match(word):
                hits[word] = self.token(word)
        return hits

    def texts(self, series: pl.Series) -> pl.Series:
        """Free text with every identifier word replaced by its token."""
        text = series.cast(pl.String)
        words = text.str.extract_all(_CANDIDATES).explode().drop_nulls().unique().to_list()
        hits = self._hits(words)
        if not hits:
            return text
        pattern = re.compile(_CANDIDATES)
        uniques = text.drop_nulls().unique()
        # Only texts holding a hit need rewriting (a substring test in Rust picks them).
        uniques = uniques.filter(uniques.str.contains_any(list(hits)))
        mapping = {v: pattern.sub(lambda m: hits.get(m.group(0), m.group(0)), v) for v in uniques.to_list()}
        return text.replace(mapping).alias(series.name)

    def keys(self, series: pl.Series, separator: str = "+") -> pl.Series:
        """Keys joined by ``separator`` (a duplicate pair's subject, ``P1+P2``), each tokenised."""
        text = series.cast(pl.String)
        mapping = {v: separator.join(self.token(k) for k in v.split(separator))
                   for v in text.drop_nulls().unique().to_list()}
        return text.replace_strict(mapping, default=None, return_dtype=pl.String).alias(series.name)


def run_identifiers(run: RunFolder) -> pl.LazyFrame:
    """Every identifier value of the run's canonical tables, one column ``value`` (dates of birth
    as ISO and as dd/mm/yyyy, as both appear in extracts); lazy, with repeats and nulls."""
    parts: list[pl.LazyFrame] = []
    for table, columns in _IDENTIFIERS.items():
        frame = run.canonical(table)
        have = frame.collect_schema()
        for c in columns:
            if c not in have:
                continue
            col = pl.col(c)
            if c == "birth_date":
                parts.append(frame.select(col.dt.strftime("%d/%m/%Y").alias("value")))
            parts.append(frame.select(col.cast(pl.String).alias("value")))
    return pl.concat(parts)


def _is_id_key(key: str) -> bool:
    return key in ("id", "ids") or key.endswith("_ids")


def _texts(data: Any, key: str, scrub: bool, out: set[str]) -> None:
    """Collect the free-text strings of ``data`` that need scrubbing."""
    if isinstance(data, dict):
        for k, v in data.items():
            _texts(v, str(k), scrub or k in TEXT_SECTIONS, out)
    elif isinstance(data, list):
        for v in data:
            _texts(v, key, scrub, out)
    elif isinstance(data, str) and scrub and not _is_id_key(key):
        out.add(data)


def _apply(data: Any, p: Pseudonymiser, texts: dict[str, str], key: str = "") -> Any:
    if isinstance(data, dict):
        return {k: _apply(v, p, texts, str(k)) for k, v in data.items()}
    if isinstance(data, list):
        return [_apply(v, p, texts, key) for v in data]
    if isinstance(data, str):
        return p.token(data) if _is_id_key(key) else texts.get(data, data)
    return data


def summary(data: RunSummary, p: Pseudonymiser) -> RunSummary:
    """The report summary with every id (keys ``id``, ``ids``, ``*_ids``) tokenised and the free
    text of TEXT_SECTIONS scrubbed; the rest (counts, codes, file names) is unchanged."""
    found: set[str] = set()
    _texts(dict(data), "", False, found)
    originals = sorted(found)
    scrubbed = p.texts(pl.Series(originals, dtype=pl.String)).to_list() if originals else []
    # Only strings change (ids tokenised, texts scrubbed): the summary keeps its shape.
    return cast(RunSummary, _apply(dict(data), p, dict(zip(originals, scrubbed, strict=True))))


def worklist(frame: pl.DataFrame, p: Pseudonymiser) -> pl.DataFrame:
    """The worklist with identifier columns tokenised and evidence scrubbed."""
    return frame.with_columns(
        *(p.column(frame[c]) for c in ID_COLUMNS if c in frame.columns),
        *(p.keys(frame[c]) for c in KEY_COLUMNS if c in frame.columns),
        *(p.texts(frame[c]) for c in TEXT_COLUMNS if c in frame.columns),
    )


def pseudonymise(run_dir: Path, key: bytes, out_dir: Path) -> list[Path]:
    """Write the pseudonymised pack of ``run_dir`` into ``out_dir`` and return its files.

    The pack is reconciliation.json, reconciliation.html, exceptions.xlsx, exceptions.csv
    and pseudonymisation.json (the method, never the key). It must live outside the run
    folder, which ``handover verify`` keeps exactly as the manifest lists it: ConfigError
    otherwise, and when the key is shorter than MIN_KEY_BYTES.
    """
    from migrate.reports.reconciliation import (  # the pack renders the same reports
        build,
        render,
    )

    check_key(key)
    if out_dir.resolve().is_relative_to(run_dir.resolve()):
        raise ConfigError(f"{out_dir}: write the pseudonymised pack outside the run folder {run_dir} "
                          "(files added to a run fail handover verify)")
    run = RunFolder.open(run_dir)
    with reading(run_dir):
        model = build(run)
    p = Pseudonymiser(key, run_identifiers(run))
    model.summary = summary(model.summary, p)
    model.worklist = worklist(model.worklist, p)
    files = render(model, out_dir)
    note = {"run_id": run.run_id, "method": "HMAC-SHA256 with the user's key; token = first 16 hex digits",
            "identifier_columns": {t: list(c) for t, c in _IDENTIFIERS.items()},
            "worklist_columns": {"tokenised": [*ID_COLUMNS, *KEY_COLUMNS], "scrubbed": list(TEXT_COLUMNS)}}
    return [*files, write_json(note, out_dir / "pseudonymisation.json")]
