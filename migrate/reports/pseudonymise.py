"""The pseudonymised audit pack (``handover report RUN --pseudonymise --key-file F``).

The same reports, with every NHS number, name, date of birth and local id (patient key,
source patient and referral ids, referral and contact keys, UBRN) replaced by a token:
the first 16 hex digits of HMAC-SHA256(key, value). The key is the user's; none is ever
invented. The same value gives the same token in every file (and in every pack made with
that key), so an auditor can follow one patient across the JSON, HTML, XLSX and CSV
without learning who they are; without the key a token cannot be reversed or confirmed.

Identifier columns are mapped whole. Free text (flag evidence, the details of declared vs
found) has every occurrence of a known identifier of the run replaced by its token, whatever
the identifier's shape (spaces, punctuation, accents: ``P 0001``, ``ID/77-b``, ``Ñ-12``),
wherever it is not part of a longer word; so are local-id shapes the run does not know
(1-4 letters and 4+ digits) and 10-digit numbers written with or without spaces. The
known identifiers are the canonical tables' (patient, referral and contact keys, source
ids, NHS numbers as written and as read, names, birth dates, postcodes, phones and
UBRNs) and the target system's ids of ``patients.parquet``. Finding them streams the
millions of identifiers past the texts' few words (``Pseudonymiser.known_in``): one-word
identifiers are matched whole, the others kept only when every run of letters and digits
they hold is a word of the texts and then found by Aho-Corasick, so the cost follows the
size of the text. Only the texts that hold one are rewritten (one regular-expression pass
each, longest identifiers first).
"""

from __future__ import annotations

import hashlib
import hmac
import re
from pathlib import Path
from typing import Any, cast

import polars as pl

from migrate.errors import ConfigError
from migrate.outputs import write_json
from migrate.reports.rundata import RunFolder, reading
from migrate.reports.worklist import Rows
from migrate.summary import RunSummary

TOKEN_HEX = 16
MIN_KEY_BYTES = 16
# Worklist columns that hold one identifier each, and those holding text with identifiers.
ID_COLUMNS = ("nhs_number", "local_patient_id", "patient_key", "referral")
KEY_COLUMNS = ("subject_key",)  # a key, or two joined by "+"
TEXT_COLUMNS = ("evidence",)
# Summary sections whose free text may name patients (the rest are counts and codes).
TEXT_SECTIONS = ("declared_vs_found", "delta", "invariant_fhir")
_WORD = r"[0-9A-Za-z][0-9A-Za-z'./_-]*[0-9A-Za-z]|[0-9A-Za-z]"  # an identifier-like word of a text
_SPACED_NHS = r"\b\d{3}[ -]\d{3}[ -]\d{4}\b"
_RUN = r"[\p{L}\p{N}]+"  # polars: a run of letters and digits
# Python: identifiers the run does not know but whose shape says they are one.
_SHAPES = r"\d{3}[ -]\d{3}[ -]\d{4}|\d{10}|[A-Za-z]{1,4}\d{4,}"
_SHAPES_POLARS = r"(?:^|[^\p{L}\p{N}])(?:\d{3}[ -]\d{3}[ -]\d{4}|\d{10}|[A-Za-z]{1,4}\d{4,})(?:$|[^\p{L}\p{N}])"
_ALONE = ("(?<![^\\W_])", "(?![^\\W_])")  # not inside a longer run of letters and digits
_IDENTIFIERS: dict[str, tuple[str, ...]] = {
    "patients": ("patient_key", "source_patient_id", "nhs_number", "nhs_number_raw", "family_name", "given_names",
                 "birth_date", "postcode", "phone"),
    "referrals": ("referral_key", "source_referral_id", "ubrn"),
    "contacts": ("contact_key",),
}
# Identifiers the run adds beside the canonical tables: the target system's ids, survivors.
_RUN_IDENTIFIERS: dict[str, tuple[str, ...]] = {"patients.parquet": ("at_target_id", "survivor_key")}


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
        self._values = (identifiers if identifiers is not None
                        else pl.LazyFrame({"value": []}, schema={"value": pl.String})).select(pl.col("value").cast(pl.String))

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

    def known_in(self, texts: pl.Series) -> dict[str, list[str]]:
        """For each text holding known identifiers: those identifiers.

        Two passes, each a streaming filter of the millions of identifiers against the
        texts' few words. Identifiers that are one word (letters and digits, with ``'./_-``
        inside: ``P0001234``, ``1950-02-01``) are matched whole against the texts' words.
        The others (``P 0001``, ``Ñ-12``, ``OX1 1AA``) are kept only when every run of
        letters and digits they hold is a word of the texts, then found in the texts by
        Aho-Corasick (``str.extract_many``); ``_scrub`` checks where each one stands.
        """
        # memory: the distinct words of ``texts`` (a report's texts) and the run's values among them
        frame = pl.DataFrame({"text": texts.drop_nulls().unique()}, schema={"text": pl.String})
        words = (frame.lazy().with_columns(pl.col("text").str.extract_all(f"{_SPACED_NHS}|{_WORD}").alias("value"))
                 .explode("value").drop_nulls("value").unique().collect())
        whole = words.join(self._values.join(words.lazy().select("value").unique(), on="value", how="semi")
                           .unique().collect(engine="streaming"), on="value")
        runs = frame.select(pl.col("text").str.extract_all(_RUN).explode().drop_nulls().unique().alias("run"))
        odd = (
            self._values.drop_nulls().filter(~pl.col("value").str.contains(f"^(?:{_WORD})$"))
            .unique()
            .with_columns(pl.col("value").str.extract_all(_RUN).alias("run"))
            .filter(pl.col("run").list.len() > 0)
            .with_columns(pl.col("run").list.len().alias("runs"))
            .explode("run")
            .join(runs.lazy(), on="run", how="semi")
            .group_by("value", "runs").agg(pl.len().alias("found"))
            .filter(pl.col("found") == pl.col("runs"))
            # memory: the run's values whose every run of letters and digits is a word of ``texts``
            .select("value").collect(engine="streaming")["value"].sort().to_list()
        )
        found: dict[str, set[str]] = {}
        for text, value in whole.iter_rows():
            found.setdefault(text, set()).add(value)
        if odd:
            hits = frame.with_columns(pl.col("text").str.extract_many(odd, overlapping=True).alias("value"))
            for text, values in hits.filter(pl.col("value").list.len() > 0).iter_rows():
                found.setdefault(text, set()).update(values)
        return {t: sorted(v) for t, v in found.items()}

    def texts(self, series: pl.Series) -> pl.Series:
        """Free text with every identifier in it replaced by its token (module docstring)."""
        text = series.cast(pl.String)
        uniques = text.drop_nulls().unique()
        if uniques.len() == 0:
            return text
        known = self.known_in(uniques)
        shaped = uniques.filter(uniques.str.contains(_SHAPES_POLARS)).to_list()
        mapping = {v: self._scrub(v, known.get(v, [])) for v in sorted(set(known) | set(shaped))}
        mapping = {k: v for k, v in mapping.items() if k != v}
        return text.replace(mapping).alias(series.name) if mapping else text

    def _scrub(self, text: str, values: list[str]) -> str:
        """``text`` with ``values`` (known identifiers, longest first) and identifier shapes
        replaced in one pass, each only where it is not part of a longer word."""
        known = set(values)
        alternatives = [re.escape(v) for v in sorted(known, key=lambda v: (-len(v), v))] + [_SHAPES]
        pattern = re.compile(f"{_ALONE[0]}(?:{'|'.join(alternatives)}){_ALONE[1]}")

        def token(match: re.Match[str]) -> str:
            word = match.group(0)
            if word in known:
                return self.token(word)
            if re.fullmatch(r"\d{3}[ -]\d{3}[ -]\d{4}", word):  # a spaced NHS number: the digits' token
                return self.token(re.sub(r"[ -]", "", word))
            return self.token(word)

        return pattern.sub(token, text)

    def keys(self, series: pl.Series, separator: str = "+") -> pl.Series:
        """Keys joined by ``separator`` (a duplicate pair's subject, ``P1+P2``), each tokenised;
        a key that itself holds the separator is kept whole when the run knows it."""
        text = series.cast(pl.String)
        uniques = text.drop_nulls().unique().to_list()
        pieces = {separator.join(parts[i:j]) for v in uniques for parts in [v.split(separator)]
                  for i in range(len(parts)) for j in range(i + 1, len(parts) + 1)}
        # memory: the run's values among the keys' pieces
        known = set(self._values.filter(pl.col("value").is_in(sorted(pieces))).unique()
                    .collect(engine="streaming")["value"].to_list()) if pieces else set()
        mapping = {v: separator.join(self.token(k) for k in _split_keys(v, separator, known)) for v in uniques}
        return text.replace_strict(mapping, default=None, return_dtype=pl.String).alias(series.name)


def _split_keys(value: str, separator: str, known: set[str]) -> list[str]:
    """``value`` split into keys at ``separator``, preferring splits whose parts the run knows."""
    if value in known or separator not in value:
        return [value]
    parts = value.split(separator)
    for cut in range(1, len(parts)):
        left, right = separator.join(parts[:cut]), separator.join(parts[cut:])
        if left in known and right in known:
            return [left, right]
    return parts


def run_identifiers(run: RunFolder) -> pl.LazyFrame:
    """Every identifier value of the run, one column ``value``: the canonical tables'
    (dates of birth as ISO and as dd/mm/yyyy, as both appear in extracts) and the target
    system's ids; lazy, with repeats and nulls."""
    sources = [(run.canonical(t), columns) for t, columns in _IDENTIFIERS.items()]
    sources += [(run.scan(rel), columns) for rel, columns in _RUN_IDENTIFIERS.items() if run.has(rel)]
    parts: list[pl.LazyFrame] = []
    for frame, columns in sources:
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


def worklist(rows: Rows, p: Pseudonymiser) -> pl.DataFrame:
    """The worklist with identifier columns tokenised and evidence scrubbed (in memory:
    the pack is built from ``build`` without a staging folder)."""
    frame = rows if isinstance(rows, pl.DataFrame) else rows.collect()
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
            "identifier_columns": {**{t: list(c) for t, c in _IDENTIFIERS.items()},
                                   **{t: list(c) for t, c in _RUN_IDENTIFIERS.items()}},
            "worklist_columns": {"tokenised": [*ID_COLUMNS, *KEY_COLUMNS], "scrubbed": list(TEXT_COLUMNS)}}
    return [*files, write_json(note, out_dir / "pseudonymisation.json")]
