"""Coded entries: sharing dissent and consent (domain.md §4) and a few benign clinical codes.

The latest sharing entry wins, so every person's sharing entries fall on distinct days:
a later consent lifts an earlier dissent, a later dissent re-imposes it. Type 1 / Type 2
opt-out codes are written only for people with no other sharing entry, so whether a rule
pack treats them as "entries" cannot change the answer. The clinical codes are chosen to
mean nothing to any rule (no cancer, osteoporosis, steroid or inflammatory codes).
"""

from __future__ import annotations

import numpy as np
import polars as pl

# Sharing groups, drawn per person independently of every other role. About 30% carry a
# dissent; 5% of people see it lifted by a later consent, so ~25% are blocked.
SHARING_GROUPS: tuple[str, ...] = (
    "none", "dissent", "consent_then_dissent", "dissent_then_consent", "opt_out_only", "consent_only")
SHARING_RATES: tuple[float, ...] = (0.64, 0.20, 0.05, 0.05, 0.04, 0.02)
BLOCKED_GROUPS = (1, 2)

DISSENT: tuple[tuple[str, str, str], ...] = (
    ("snomed", "416409005", "Refused consent for upload to local shared electronic record"),
    ("snomed", "416308001", "Refused consent for upload to national shared electronic record"),
    ("snomed", "320011000000108", "Declined consent to share patient data with specified third party"),
    ("read2", "93C1", "Refused consent for upload to local shared electronic record"),
    ("read2", "93C3", "Refused consent for upload to national shared electronic record"),
    ("read2", "9Nd1", "No consent for electronic record sharing"),
    ("read2", "9NdH", "Declined consent to share patient data with specified third party"),
    ("read2", "9NdJ", "Consent withdrawn to share patient data with specified third party"),
    ("read2", "9Ndo", "Express dissent for Summary Care Record dataset upload"),
)
CONSENT: tuple[tuple[str, str, str], ...] = (
    ("snomed", "425691002", "Consent given for electronic record sharing"),
    ("snomed", "417528008", "Consent given for upload to local shared electronic record"),
    ("snomed", "417370002", "Consent given for upload to national shared electronic record"),
    ("snomed", "319951000000105", "Consent given to share patient data with specified third party"),
    ("read2", "9Nd7", "Consent for electronic record sharing"),
)
OPT_OUT: tuple[tuple[str, str, str], ...] = (
    ("read2", "9Nu0", "Dissent from secondary use of GP patient identifiable data"),
    ("read2", "9Nu4", "Dissent from disclosure of personal confidential data by HSCIC"),
    ("snomed", "881561000000100", "Registration of opt-out from disclosure of confidential patient information"),
)
CLINICAL: tuple[tuple[str, str, str], ...] = (
    ("snomed", "279039007", "Low back pain"),
    ("snomed", "239873007", "Osteoarthritis of knee"),
    ("snomed", "202882003", "Plantar fasciitis"),
    ("snomed", "57406009", "Carpal tunnel syndrome"),
    ("snomed", "202855006", "Lateral epicondylitis"),
    ("snomed", "81680005", "Neck pain"),
    ("snomed", "45326000", "Shoulder pain"),
    ("snomed", "38341003", "Hypertensive disorder"),
)
CLINICAL_CODES_MEAN = 0.8
ALL_CODES = DISSENT + CONSENT + OPT_OUT + CLINICAL

def _draw(rng: np.random.Generator, group: tuple[tuple[str, str, str], ...], size: int) -> np.ndarray:
    """Indices into ALL_CODES of ``size`` codes drawn from ``group``."""
    start = ALL_CODES.index(group[0])
    return start + rng.integers(0, len(group), size=size)


def sharing_groups(rng: np.random.Generator, n: int) -> np.ndarray:
    """A sharing group (index into SHARING_GROUPS) for each of ``n`` people, at SHARING_RATES."""
    return np.asarray(rng.choice(len(SHARING_GROUPS), size=n, p=np.array(SHARING_RATES)), dtype=np.int8)


def build_codes(rng: np.random.Generator, sharing: np.ndarray, T: int) -> pl.DataFrame:
    """Coded entries for people 1..N (``sharing[i]`` indexes SHARING_GROUPS), sorted by
    (pid, recorded date). Columns: pid, code_system, code, display, recorded_date, value."""
    n = sharing.size
    pid = np.arange(1, n + 1)
    parts: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
    g = {name: np.flatnonzero(sharing == i) for i, name in enumerate(SHARING_GROUPS)}
    dissent_day = T - rng.integers(30, 3_000, size=n)  # at least 30 days before T: room for a later consent

    def add(who: np.ndarray, code: np.ndarray, day: np.ndarray) -> None:
        parts.append((pid[who], code, day))

    for name in ("dissent", "consent_then_dissent", "dissent_then_consent"):
        add(g[name], _draw(rng, DISSENT, g[name].size), dissent_day[g[name]])
    who = g["consent_then_dissent"]
    add(who, _draw(rng, CONSENT, who.size), dissent_day[who] - rng.integers(1, 1_000, size=who.size))
    who = g["dissent_then_consent"]
    gap = T - 1 - dissent_day[who]
    add(who, _draw(rng, CONSENT, who.size), dissent_day[who] + 1 + (rng.random(who.size) * gap).astype(np.int64))
    who = g["opt_out_only"]
    add(who, _draw(rng, OPT_OUT, who.size), dissent_day[who])
    who = g["consent_only"]
    add(who, _draw(rng, CONSENT, who.size), dissent_day[who])
    clinical = np.repeat(np.arange(n), rng.poisson(CLINICAL_CODES_MEAN, size=n))
    add(clinical, _draw(rng, CLINICAL, clinical.size), T - rng.integers(1, 4_000, size=clinical.size))
    p, code, day = (np.concatenate([part[j] for part in parts]) for j in range(3))
    order = np.lexsort((code, day, p))
    table = pl.DataFrame({"pid": p[order], "code_ix": code[order], "day": day[order]})
    column = {name: dict(enumerate(c[j] for c in ALL_CODES)) for j, name in enumerate(("code_system", "code", "display"))}
    return table.select(
        "pid",
        *(pl.col("code_ix").replace_strict(m, return_dtype=pl.String).alias(name) for name, m in column.items()),
        pl.col("day").cast(pl.Date).alias("recorded_date"),
        pl.lit(None, dtype=pl.String).alias("value"),
    )


# --- where the extract keeps the sharing wish (``handover synth --sharing-as``) ----------------
SHARING_AS = ("codes", "column", "practice")
SETTING_COLUMNS = ("sharing_out", "sharing_out_date")  # patients.csv: the patient's own setting
# Practices that do not share out, for --sharing-as practice: the blocked people (and those
# whose own later consent lifts the block) are registered there. They stopped sharing before
# any synthetic entry (entries fall 30 to 3,000 days before T).
NON_SHARING_PRACTICES = tuple(f"Y99{n:03d}" for n in range(1, 9))
PRACTICE_STOPPED_DAYS = 3_100


def is_sharing(kinds: tuple[tuple[str, str, str], ...]) -> pl.Expr:
    """True for codes rows whose (system, code) is one of ``kinds``."""
    return pl.concat_str(["code_system", "code"], separator=":").is_in([f"{s}:{c}" for s, c, _ in kinds])


def sharing_elsewhere(sharing_as: str, sharing: np.ndarray, codes: pl.DataFrame, patients: pl.DataFrame,
                      practices: tuple[str, ...], T: int) -> tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame | None]:
    """(codes, patients, practice settings) with each person's sharing wish kept where
    ``sharing_as`` says, deciding the same block as the coded entries ``build_codes`` wrote:

    - ``codes``: as built; patients' setting columns blank; no practice file;
    - ``column``: each person's latest dissent or consent becomes their own ``sharing_out``
      (No / Yes) with its date (``sharing_out_date``); the dissent and consent codes go
      (opt-out codes stay: the opt-out only person keeps one, evidence only);
    - ``practice``: people whose block stands, or was lifted by a later consent, are
      registered at a practice that stopped sharing out before any of their entries; their
      dissent codes go, and so does the earlier consent of those whose dissent came later
      (the practice's setting is later still); a later consent stays a coded entry and lifts
      the practice's block. The practice file lists every practice, sharing or not.

    ``patients`` has ``pid`` 1..N for the people (extra rows, duplicates, follow them);
    ``sharing[i]`` is person i+1's group (SHARING_GROUPS).
    """
    blank = pl.lit(None, dtype=pl.String)
    patients = patients.with_columns(blank.alias(SETTING_COLUMNS[0]), pl.lit(None, dtype=pl.Date)
                                     .alias(SETTING_COLUMNS[1]))
    if sharing_as == "codes":
        return codes, patients, None
    dissent, consent = is_sharing(DISSENT), is_sharing(CONSENT)
    person_group = pl.DataFrame({"pid": np.arange(1, sharing.size + 1),
                                 "group": pl.Series(SHARING_GROUPS).gather(sharing.astype(np.int64))})
    if sharing_as == "column":
        latest = (codes.filter(dissent | consent).sort("pid", "recorded_date").group_by("pid").agg(
            pl.col("code_system").last(), pl.col("code").last(), pl.col("recorded_date").last()))
        latest = latest.with_columns(pl.when(is_sharing(DISSENT)).then(pl.lit("No")).otherwise(pl.lit("Yes"))
                                     .alias("_value"))
        patients = patients.drop(*SETTING_COLUMNS).join(
            latest.select("pid", pl.col("_value").alias(SETTING_COLUMNS[0]),
                          pl.col("recorded_date").alias(SETTING_COLUMNS[1])), on="pid", how="left",
            maintain_order="left")
        return codes.filter(~(dissent | consent)), patients, None
    if sharing_as != "practice":
        raise ValueError(f"sharing_as must be one of {', '.join(SHARING_AS)}, not {sharing_as!r}")
    moved = person_group.filter(pl.col("group").is_in(["dissent", "consent_then_dissent", "dissent_then_consent"]))
    moved = moved.with_columns(pl.Series("practice", [NON_SHARING_PRACTICES[i % len(NON_SHARING_PRACTICES)]
                                                      for i in range(moved.height)], dtype=pl.String))
    patients = patients.join(moved.select("pid", "practice"), on="pid", how="left", maintain_order="left").with_columns(
        pl.coalesce("practice", "gp_practice").alias("gp_practice")).drop("practice")
    earlier_consent = consent & pl.col("pid").is_in(
        person_group.filter(pl.col("group") == "consent_then_dissent")["pid"].implode())
    stopped = T - PRACTICE_STOPPED_DAYS
    settings = pl.DataFrame({
        "ods_code": [*practices, *NON_SHARING_PRACTICES],
        "shares_out": ["Y"] * len(practices) + ["N"] * len(NON_SHARING_PRACTICES),
        "set_on": [stopped - 365 * (1 + i % 5) for i in range(len(practices))] + [stopped] * len(NON_SHARING_PRACTICES),
    }).with_columns(pl.col("set_on").cast(pl.Date))
    return codes.filter(~(dissent | earlier_consent)), patients, settings
