"""Exception worklists for clinical leads: ``exceptions.xlsx`` (a Summary sheet, then a sheet
per flag family) and ``exceptions.csv`` (the same rows, flat); per service line on request.

Rows come from ``exceptions.parquet`` joined to the patient's NHS number and local id, the
referral's service line and cohort, and the days waiting at the cut-over. No free text
from the record (the referral's ``reason_text``) is ever included: the evidence column is
the rule's own text. Ordered by family, severity (critical first), then days waiting
(longest first), so the patient who most needs a call is at the top of each sheet.

The XLSX is for people: NHS numbers 3-3-4 and dates dd/mm/yyyy (``display``), printed one
page wide with the run on every page (``xlsx``). The CSV is for scripts too: raw values,
ISO dates. Both keep the reviewer's columns (``REVIEW_COLUMNS``) for decisions.

Formula injection: a cell beginning with ``=``, ``+``, ``-``, ``@``, tab or carriage return
would run as a formula when the CSV is opened in a spreadsheet. Every such CSV cell is
prefixed with a single quote; in the XLSX every string is an inline string (never a
formula) and such cells also carry Excel's ``quotePrefix`` style, so editing them cannot
turn them into formulas either.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import polars as pl
import yaml

from migrate import canonical
from migrate.errors import ConfigError
from migrate.outputs import write_atomic, write_parquet
from migrate.reports import display, xlsx
from migrate.reports.rundata import RunFolder
from migrate.reports.worklist_summary import RunInfo, Scope, summary_sheet
from migrate.resources import reports_dir
from migrate.review.vocabulary import EMPTY, ReviewVocabulary
from migrate.yamltext import read_yaml

DANGEROUS_PREFIXES = ("=", "+", "-", "@", "\t", "\r")
_DANGEROUS = r"^[=+\-@\t\r]"
# Cohorts of a referral still open at the cut-over: its wait is counted.
OPEN_COHORTS = ("backlog", "transition", "pifu", "pifu_expired")
REVIEW_COLUMNS = ("reviewer", "decision", "date", "note")
# Filled in by the second reviewer where the pack requires one (optional in a layout).
SECOND_REVIEWER = "second_reviewer"
# Every column a layout may show, as build_worklist makes them. ``evidence_id`` ties a
# decision to the evidence the reviewer saw (review.parquet); ``review_state`` and
# ``prior_decision`` show what earlier decisions settled (outstanding items come first).
WORKLIST_COLUMNS = ("severity", "flag_code", "days_waiting", "nhs_number", "local_patient_id", "patient_key",
                    "referral", "service_line", "cohort", "evidence", "action", "rule_id", "subject_key",
                    "evidence_id", "review_state", "prior_decision", *REVIEW_COLUMNS, SECOND_REVIEWER)
OTHER_FAMILY = "other"
SPLIT_COLUMNS = ("service_line",)  # what `handover report --split-by` accepts (split.py)
# Frame columns starting with "_" are internal (which worklists a row belongs to): never written.
SERVICE_LINES = "_service_lines"
CHOICES = "_choices"  # the decisions a row's flag takes (its Decision drop-down list)
REVIEW = "review.parquet"  # each item's evidence id and review state (migrate.review.stage)
_SHEET_ROWS = 1_048_575  # Excel's row limit less the header
PART_ROWS = 250_000  # worklist rows placed in review order at a time (stage_worklist)
SHARE_FLAGS = 400_000  # exceptions whose patients' worklist rows are built at a time (stage_worklist)
_SHARE_SEED = 18  # polars' hash of the patient key, seeded: the same share on every run
# A worklist as the writers take it: in memory, or lazy (a scan of the staged worklist,
# ``stage_worklist``), which they read in passes and chunks, never whole.
Rows = pl.DataFrame | pl.LazyFrame
_MAX_LIST_RUNS = 500  # drop-down cell ranges per sheet before one list serves the whole column


@dataclass(frozen=True)
class Family:
    """A worklist family: its sheet title, flag codes, and the Summary's line on it."""

    sheet: str
    flags: tuple[str, ...]
    means: str
    ask: str


@dataclass(frozen=True)
class Decisions:
    """How a reviewer records a decision: what each review column takes, the decision
    values with their meaning (the run's rule pack's, ``with_vocabulary``), and where the
    filled-in workbook goes next."""

    columns: dict[str, str]
    values: tuple[tuple[str, str], ...]
    next: str


@dataclass(frozen=True)
class Layout:
    """The worklist layout of ``reports/exceptions.yaml``: families, columns, decisions."""

    families: dict[str, Family]
    columns: tuple[xlsx.Column, ...]
    decisions: Decisions

    def family_of(self) -> dict[str, str]:
        """Flag code -> family name."""
        return {code: name for name, f in self.families.items() for code in f.flags}


def _layout_problems(columns: tuple[xlsx.Column, ...], decisions: Decisions) -> list[str]:
    names = [c.name for c in columns]
    problems = [f"columns: '{c.name}' is not a worklist column (one of {', '.join(WORKLIST_COLUMNS)})"
                for c in columns if c.name not in WORKLIST_COLUMNS]
    problems += [f"columns.{c.name}: format '{c.format}' is not one of {', '.join(xlsx.FORMATS)}"
                 for c in columns if c.format not in xlsx.FORMATS]
    problems += [f"columns: '{n}' appears more than once" for n in sorted({n for n in names if names.count(n) > 1})]
    # Decisions are read back from these columns: a layout without them would lose them.
    problems += [f"columns: the reviewer's column '{n}' is missing" for n in REVIEW_COLUMNS if n not in names]
    problems += [f"decisions.columns: '{n}' is not a reviewer's column ({', '.join(REVIEW_COLUMNS)})"
                 for n in decisions.columns if n not in (*REVIEW_COLUMNS, SECOND_REVIEWER)]
    problems += [f"decisions.columns: '{n}' is not explained" for n in REVIEW_COLUMNS if n not in decisions.columns]
    return problems


_KEYS = {"families": {"sheet", "flags", "means", "ask"}, "columns": {"name", "header", "width", "format"},
         "decisions.values": {"value", "meaning"}}


def _unknown_keys(doc: Any) -> list[str]:
    """Keys the layout does not know (a typo, or YAML read a comma as a new key): never ignored."""
    entries = [(f"families.{name}", "families", f) for name, f in doc["families"].items()]
    entries += [(f"columns[{i}]", "columns", c) for i, c in enumerate(doc["columns"])]
    entries += [(f"decisions.values[{i}]", "decisions.values", v)
                for i, v in enumerate(doc["decisions"].get("values") or ())]
    top = [f"'{k}' is not a layout key" for k in doc if k not in {"format_version", "families", "columns", "decisions"}]
    return top + [f"{where}: unknown key '{k}' (expected {', '.join(sorted(_KEYS[kind]))})"
                  for where, kind, entry in entries for k in entry if k not in _KEYS[kind]]


def load_layout(path: Path | None = None) -> Layout:
    """Read the worklist layout (default: the shipped ``reports/exceptions.yaml``).

    ConfigError (exit 2) listing every problem: an unknown column or format, a reviewer's
    column missing or unexplained, a decision value the drop-down list cannot hold.
    """
    path = path or reports_dir() / "exceptions.yaml"
    try:
        doc: Any = read_yaml(path.read_bytes())
        families = {str(name): Family(str(f["sheet"]), tuple(str(c) for c in f.get("flags") or ()),
                                      str(f.get("means") or ""), str(f.get("ask") or ""))
                    for name, f in doc["families"].items()}
        columns = tuple(xlsx.Column(str(c["name"]), str(c["header"]), float(c["width"]), str(c.get("format", "text")))
                        for c in doc["columns"])
        d = doc["decisions"]
        decisions = Decisions({str(k): str(v) for k, v in d["columns"].items()},
                              tuple((str(v["value"]), str(v["meaning"])) for v in d.get("values") or ()),
                              str(d["next"]))
    except (OSError, KeyError, TypeError, ValueError, AttributeError, yaml.YAMLError) as exc:
        raise ConfigError(f"{path}: not a valid worklist layout ({exc.__class__.__name__}: {exc})") from None
    problems = _unknown_keys(doc) + _layout_problems(columns, decisions)
    if problems:
        raise ConfigError(f"{path}: not a valid worklist layout:\n" + "\n".join(f"  - {p}" for p in problems))
    families.setdefault(OTHER_FAMILY, Family("Other", (), "Flags no family above lists.", "Act as recommended."))
    return Layout(families, columns, decisions)


def with_vocabulary(layout: Layout, vocabulary: ReviewVocabulary) -> Layout:
    """``layout`` whose decision values are the pack's (``decisions:``): each family's
    decisions, saying which flags take them and which need a note or a second reviewer."""
    values: list[tuple[str, str]] = []
    for family in vocabulary.families.values():
        for d in family.decisions.values():
            needs = [w for w, on in (("a note", d.note_required), ("a second reviewer", d.second_reviewer)) if on]
            values.append((d.name, f"{', '.join(family.flags)}: {d.meaning or d.effect}"
                           + (f" (needs {' and '.join(needs)})" if needs else "")))
    values += [(d.name, f"any flag: {d.meaning or d.effect}") for d in vocabulary.any_flag.values()]
    return replace(layout, decisions=replace(layout.decisions, values=tuple(values)))


def _review(run: RunFolder, vocabulary: ReviewVocabulary) -> pl.LazyFrame:
    """Per item: its evidence id, review state and prior decision (``review.parquet``), and
    the decisions its flag takes (``_choices``, for the drop-down list)."""
    if not run.has(REVIEW):
        return pl.LazyFrame(schema={"flag_code": pl.String, "subject_key": pl.String, "evidence_id": pl.String,
                                    "review_state": pl.String, "prior_decision": pl.String})
    prior = pl.format("{} by {} on {}", "decision", "reviewer", pl.col("decided_on").dt.strftime("%d/%m/%Y"))
    return run.scan(REVIEW).select("flag_code", "subject_key", "evidence_id", pl.col("state").alias("review_state"),
                                   pl.when(pl.col("decision").is_not_null()).then(prior).alias("prior_decision"))


def _waits(run: RunFolder, flagged: pl.LazyFrame, subjects: pl.LazyFrame) -> tuple[pl.LazyFrame, pl.LazyFrame]:
    """Per referral (days waiting at T when open) and per patient (their longest-waiting open
    referral's wait and service line, and the service lines of all their open referrals), of
    the patients in ``flagged`` and the referrals in ``subjects`` only (``patient_key``,
    ``referral_key``): the worklist's rows need no others."""
    cutover = pl.lit(run.cutover, dtype=pl.Date)
    cohorts = run.scan("cohorts.parquet").select("referral_key", "patient_key", pl.col("cohort").cast(pl.String))
    wanted = pl.concat([cohorts.join(flagged, on="patient_key", how="semi").select("referral_key"), subjects])
    refs = (
        run.canonical("referrals").join(wanted, on="referral_key", how="semi")
        .select("referral_key", "source_referral_id", "received_date", "service_line")
        .join(cohorts, on="referral_key", how="left")
    )
    days = (cutover - pl.col("received_date")).dt.total_days()
    # A referral received after the cut-over is not yet waiting at it: null, not negative.
    refs = refs.with_columns(
        pl.when(pl.col("cohort").is_in(OPEN_COHORTS) & (days >= 0)).then(days).alias("days_waiting"))
    open_refs = refs.filter(pl.col("cohort").is_in(OPEN_COHORTS) & pl.col("patient_key").is_not_null())
    longest = (
        open_refs.filter(pl.col("days_waiting").is_not_null())
        .sort("days_waiting", "referral_key", descending=[True, False])
        .group_by("patient_key", maintain_order=True).first()
        .select("patient_key", "days_waiting", "service_line")
    )
    lines = open_refs.group_by("patient_key").agg(pl.col("service_line").unique().sort().alias(SERVICE_LINES))
    return refs.drop("patient_key"), longest.join(lines, on="patient_key", how="full", coalesce=True)


# Review order: by family (the layout's order), outstanding before decided, severity
# (critical first), days waiting (longest first), then the flag's own keys.
REVIEW_ORDER = ("_family", "_decided", "_severity", "days_waiting", "flag_code", "patient_key", "subject_key",
                "rule_id")
_DESCENDING = (False, False, False, True, False, False, False, False)


def _unordered(run: RunFolder, layout: Layout, vocabulary: ReviewVocabulary,
               share: pl.Expr | None = None) -> pl.LazyFrame:
    """The worklist's rows (``worklist_plan``) with the columns of ``REVIEW_ORDER``, in no
    order; with ``share`` (a predicate on ``patient_key``), only the rows of the exceptions
    of the patients it selects (every figure of a row comes from its own patient's rows)."""
    # Every table below is cut to the flagged patients before it is joined or grouped: the
    # work is sized by the exceptions (of the share), not by the extract's patients and referrals.
    raised = run.scan("exceptions.parquet")
    raised = raised if share is None else raised.filter(share)
    flagged = raised.select("patient_key").unique()
    subjects = (raised.filter(pl.col("subject_type") == "referral")
                .select(pl.col("subject_key").alias("referral_key")))
    refs, by_patient = _waits(run, flagged, subjects)
    patients = run.canonical("patients").join(flagged, on="patient_key", how="semi").select(
        "patient_key", pl.col("source_patient_id").alias("local_patient_id"),
        # An invalid number is null in the canonical column; show what was given, to trace it.
        pl.coalesce("nhs_number", "nhs_number_raw").alias("nhs_number"))
    cohorts = run.scan("patients.parquet").join(flagged, on="patient_key", how="semi").select(
        "patient_key", pl.col("patient_cohort").cast(pl.String))
    family = layout.family_of()
    # memory: the distinct flag codes
    codes = run.scan("exceptions.parquet").select("flag_code").unique().collect().to_series().to_list()
    choices = {c: ",".join(vocabulary.choices(c)) for c in codes}
    exc = raised.with_columns(
        pl.col("severity").cast(pl.Enum(canonical.SEVERITIES)).alias("_severity"),
        pl.col("flag_code").replace_strict(family, default=OTHER_FAMILY, return_dtype=pl.String).alias("family"))
    is_ref = pl.col("subject_type") == "referral"
    frame = (
        exc.join(refs.rename({"referral_key": "subject_key"}), on="subject_key", how="left")
        .join(by_patient.rename({"days_waiting": "_p_days", "service_line": "_p_line", SERVICE_LINES: "_p_lines"}),
              on="patient_key", how="left")
        .join(patients, on="patient_key", how="left")
        .join(cohorts, on="patient_key", how="left")
        .join(_review(run, vocabulary).join(raised.select("flag_code", "subject_key"),
                                            on=["flag_code", "subject_key"], how="semi"),
              on=["flag_code", "subject_key"], how="left")
        .with_columns(
            pl.when(is_ref).then(pl.col("days_waiting")).otherwise(pl.col("_p_days")).alias("days_waiting"),
            pl.when(is_ref).then(pl.col("service_line")).otherwise(pl.col("_p_line")).alias("service_line"),
            pl.when(is_ref).then(pl.col("cohort")).otherwise(pl.col("patient_cohort")).alias("cohort"),
            pl.when(is_ref).then(pl.coalesce("source_referral_id", "subject_key")).alias("referral"),
            pl.col("severity").cast(pl.String),
            *(pl.lit(None, dtype=pl.String).alias(c) for c in (*REVIEW_COLUMNS, SECOND_REVIEWER)),
            pl.col("flag_code").replace_strict(choices, default=",".join(vocabulary.any_flag),
                                               return_dtype=pl.String).alias(CHOICES),
            (pl.col("review_state") == "decided").fill_null(False).alias("_decided"),
        )
        .with_columns(
            # A referral's row goes to its service line; a patient's (a sharing block, an
            # identity problem) to every service line where the patient has an open referral.
            pl.when(is_ref | pl.col("_p_lines").is_null()).then(pl.concat_list(pl.col("service_line")))
            .otherwise(pl.col("_p_lines")).alias(SERVICE_LINES),
            pl.col("family").replace_strict(
                {name: i for i, name in enumerate(layout.families)}, return_dtype=pl.Int64).alias("_family"))
    )
    return frame


def worklist_plan(run: RunFolder, layout: Layout, vocabulary: ReviewVocabulary = EMPTY) -> pl.LazyFrame:
    """One row per exception with ``family``, the layout's columns, ``_service_lines`` (the
    service lines whose worklist the row belongs to) and ``_choices`` (the decisions its
    flag takes, in ``vocabulary``), in review order: outstanding items before decided ones."""
    return (_unordered(run, layout, vocabulary)
            .sort(list(REVIEW_ORDER), descending=list(_DESCENDING), nulls_last=True)
            .select("family", *(c.name for c in layout.columns), SERVICE_LINES, CHOICES))


def build_worklist(run: RunFolder, layout: Layout, vocabulary: ReviewVocabulary = EMPTY) -> pl.DataFrame:
    """The worklist (``worklist_plan``) in memory."""
    # memory: grows with the flags: the worklist itself (one row per flag); the run's reports
    # stage it on disk instead (stage_worklist), only the pseudonymised pack holds it
    return worklist_plan(run, layout, vocabulary).collect(engine="streaming")


def stage_worklist(run: RunFolder, layout: Layout, vocabulary: ReviewVocabulary, folder: Path) -> pl.LazyFrame:
    """The worklist (``worklist_plan``) written to Parquet files in ``folder``, in review
    order, and returned as a scan of them: the writers read it in passes and chunks.

    Never whole in memory: the rows are built ``SHARE_FLAGS`` exceptions' patients at a time
    (a stable hash of the patient key) and sunk in no order; only their review-order keys are
    sorted (with their row index), and the rows are then placed ``PART_ROWS`` positions at a
    time (each part a pass over the unordered rows that keeps its own, sorted by position)."""
    folder.mkdir(parents=True, exist_ok=True)
    final = ["family", *(c.name for c in layout.columns), SERVICE_LINES, CHOICES]
    flags = int(run.scan("exceptions.parquet").select(pl.len()).collect().item())
    shares = max(1, -(-flags // SHARE_FLAGS))
    unordered: list[Path] = []
    for k in range(shares):
        share = None if shares == 1 else (pl.col("patient_key").hash(seed=_SHARE_SEED) % shares) == k
        # memory: the joins' built sides, cut to the share's flagged patients and their referrals,
        # and the streamed scans of the referrals and cohorts (at 5M, measured: 2.1 GB a share of
        # 400,000 flags, about the same for each share; 3.2 GB for all 1.93M flags at once)
        unordered.append(folder / f"unordered-{k:05d}.parquet")
        _unordered(run, layout, vocabulary, share).select(*final, *(c for c in REVIEW_ORDER if c not in final)) \
            .sink_parquet(unordered[-1], compression="zstd", engine="streaming")
    rows = pl.scan_parquet(unordered).with_row_index("_i")
    # memory: the review-order keys of every flag and their row index (~70 bytes a flag; +0.25 GB
    # sorted at 5M, measured), then a part's rows (PART_ROWS) at a time (+0.7 GB at 5M, measured)
    order = (rows.select("_i", *REVIEW_ORDER)
             .sort(list(REVIEW_ORDER), descending=list(_DESCENDING), nulls_last=True, maintain_order=True)
             .select("_i").collect().to_series())
    parts: list[Path] = []
    for k, start in enumerate(range(0, max(order.len(), 1), PART_ROWS)):
        index = order.slice(start, PART_ROWS)
        position = pl.DataFrame({"_i": index, "_pos": pl.int_range(start, start + index.len(), eager=True)})
        # memory: a part's rows (PART_ROWS), placed by their position
        part = (rows.join(position.lazy(), on="_i", how="inner").collect(engine="streaming")
                .sort("_pos").select(final))
        parts.append(write_parquet(part, folder / f"part-{k:05d}.parquet"))
        del part
    for path in unordered:
        path.unlink()
    return pl.scan_parquet(parts)


def neutralise(column: str) -> pl.Expr:
    """``column`` as text, with a single quote before any value a spreadsheet would run."""
    text = pl.col(column).cast(pl.String)
    return pl.when(text.str.contains(_DANGEROUS)).then(pl.lit("'") + text).otherwise(text).alias(column)


def _names(frame: Rows) -> list[str]:
    return frame.columns if isinstance(frame, pl.DataFrame) else frame.collect_schema().names()


def write_csv(frame: Rows, path: Path) -> Path:
    """``frame`` as UTF-8 CSV (with a BOM, which Excel needs to read UTF-8), every cell
    neutralised, values raw (ten-digit NHS numbers, ISO dates); internal columns left out."""
    # Streamed from the frame (or its file) a batch at a time: the neutralised copy is never whole.
    safe = frame.lazy().select(neutralise(c) for c in _names(frame) if not c.startswith("_"))
    return write_atomic(path, lambda tmp: safe.sink_csv(tmp, include_bom=True, check_extension=False))


def family_counts(frame: Rows, layout: Layout) -> pl.DataFrame:
    """Per family: its sheet, the number of flags and the count per severity."""
    # memory: a count per family and severity (one streamed pass)
    found = frame.lazy().group_by("family", pl.col("severity").cast(pl.String)).len().collect(engine="streaming")
    rows: list[dict[str, Any]] = []
    for name, fam in layout.families.items():
        counts = {s: int(n) for f, s, n in found.iter_rows() if f == name}
        rows.append({"family": name, "sheet": fam.sheet, "flags": sum(counts.values()),
                     **{s: int(counts.get(s, 0)) for s in canonical.SEVERITIES}})
    return pl.DataFrame(rows, schema={"family": pl.String, "sheet": pl.String, "flags": pl.Int64,
                                      **{s: pl.Int64 for s in canonical.SEVERITIES}})


def for_people(frame: Rows) -> Rows:
    """The worklist as the XLSX shows it: NHS numbers 3-3-4, dates in the rule's text dd/mm/yyyy."""
    names = _names(frame)
    return frame.with_columns(
        *([display.nhs_number_expr("nhs_number")] if "nhs_number" in names else []),
        *(display.dates_in_text_expr(c) for c in ("evidence", "action") if c in names))


def write_xlsx(frame: Rows, path: Path, layout: Layout, info: RunInfo, scope: Scope | None = None) -> Path:
    """The workbook: a Summary sheet, then one sheet per family (empty families included, so
    a reviewer sees that nothing was raised rather than a missing tab). ``scope`` says which
    part of the run's exceptions the workbook holds (None: all of them). A lazy ``frame``
    is read a sheet at a time, in passes (``xlsx``), never whole."""
    counts = family_counts(frame, layout)
    flags = dict(zip(counts.get_column("family"), counts.get_column("flags"), strict=True))
    columns = layout.columns
    sheets = [summary_sheet(counts, layout, info, scope)]
    for name, fam in layout.families.items():
        # A family's rows at a time shown for people (never a second copy of the whole worklist).
        rows = for_people(frame.filter(pl.col("family") == name)).select(
            *(c.name for c in columns), *([CHOICES] if CHOICES in _names(frame) else []))
        # Excel holds about a million rows a sheet; a larger family continues on "<title> (2)".
        for part, start in enumerate(range(0, max(flags[name], 1), _SHEET_ROWS)):
            suffix = f" ({part + 1})" if part else ""
            chunk = rows.slice(start, _SHEET_ROWS)
            sheets.append(xlsx.Sheet(f"{fam.sheet}{suffix}", chunk.drop(CHOICES, strict=False), columns,
                                     emphasis={"severity": {"critical": xlsx.STYLE_ALERT}},
                                     validations=_choices(chunk)))
    return write_atomic(path, lambda tmp: xlsx.write_workbook(tmp, sheets, info.page(scope)))


def _choices(sheet: Rows) -> tuple[xlsx.Validation, ...]:
    """One drop-down list per set of decisions, on the Decision cells of the rows whose flag takes them."""
    if CHOICES not in _names(sheet):
        return ()
    # memory: the sheet's decision lists, one short text a row (at most Excel's rows a sheet)
    rows = sheet.select(CHOICES) if isinstance(sheet, pl.DataFrame) else sheet.select(CHOICES).collect()
    numbered = rows.with_row_index("_i").group_by(CHOICES, maintain_order=True).agg(pl.col("_i"))
    lists = [(str(c), tuple(int(i) for i in index)) for c, index in numbered.iter_rows() if c]
    runs = rows.select((pl.col(CHOICES) != pl.col(CHOICES).shift(1)).fill_null(True).sum()).item()
    if runs > _MAX_LIST_RUNS:
        # Flags interleaved over a long sheet would need a very long cell list per drop-down:
        # one list for the column instead, every decision of the sheet's flags (each row's
        # decision is still checked against its own flag when it is read back).
        every = tuple(dict.fromkeys(d for c, _ in lists for d in c.split(",")))
        return (xlsx.Validation("decision", every, "Decisions for this sheet's flags (each flag takes some): "
                                + ", ".join(every)),)
    return tuple(xlsx.Validation("decision", tuple(c.split(",")), f"Decisions for this flag: {c}", index)
                 for c, index in lists)


def write_worklists(frame: Rows, folder: Path, layout: Layout, info: RunInfo,
                    scope: Scope | None = None) -> list[Path]:
    """Write ``exceptions.xlsx`` and ``exceptions.csv`` into ``folder``."""
    return [write_xlsx(frame, folder / "exceptions.xlsx", layout, info, scope),
            write_csv(frame, folder / "exceptions.csv")]

