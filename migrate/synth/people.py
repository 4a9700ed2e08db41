"""Synthetic people: Faker-built pools sampled by numpy, NHS numbers with valid check digits.

Faker is slow per call and its output depends on call order, so it is used only once, to
build small pools (surnames, given names, streets, towns, postcodes, clinic sites); every
per-person value is then drawn by numpy from those pools. That keeps a million people to a
few seconds and makes the output a function of (N, seed, cut-over) alone.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date

import numpy as np
import polars as pl
from faker import Faker

from migrate.synth.plan import IDENTITY_KINDS, NHS_NUMBER_SPACED_RATE, Roles

EPOCH = date(1970, 1, 1)
NO_DATE = -1_000_000  # day number standing for "no date" in integer date arrays
# Real-format UK postcode (outward code, space, inward code); Faker's en_GB sometimes
# produces formats no postcode has, so pool entries are filtered by it.
POSTCODE_FORMAT = re.compile(r"^[A-Z]{1,2}[0-9][A-Z0-9]? [0-9][A-Z]{2}$")
SEX_CODES = ("M", "F", "I", "U")
SEX_RATES = (0.47, 0.52, 0.003, 0.007)
STATUS_CODES = ("01", "02", "03")
STATUS_RATES = (0.80, 0.18, 0.02)
MIDDLE_NAME_RATE = 0.15
DOUBLE_BARRELLED_RATE = 0.05
PHONE_RATE = 0.85
SPINE_AGE_LIMIT_DAYS = int(48 * 365.25)  # see extract.py: routine spinal referrals stay under 50


def day_number(d: date) -> int:
    """Days since 1970-01-01 (polars' Date representation)."""
    return (d - EPOCH).days


def as_date(days: pl.Expr) -> pl.Expr:
    """Integer day numbers to a polars Date, NO_DATE becoming null."""
    return pl.when(days == NO_DATE).then(None).otherwise(days).cast(pl.Date)


@dataclass(frozen=True)
class Pools:
    """Everything Faker contributes: small pools numpy samples from."""

    surnames: tuple[str, ...]
    male_names: tuple[str, ...]
    female_names: tuple[str, ...]
    streets: tuple[str, ...]  # address units: street, town and postcode aligned
    towns: tuple[str, ...]
    postcodes: tuple[str, ...]
    practices: tuple[str, ...]
    sites: tuple[str, ...]


def _distinct(draw: Callable[[], str], want: int, tries: int) -> list[str]:
    seen: dict[str, None] = {}  # a dict, not a set: first-seen order keeps the pool deterministic
    for _ in range(tries):
        seen.setdefault(draw(), None)
        if len(seen) >= want:
            break
    return list(seen)


def build_pools(seed: int, addresses: int = 5_000) -> Pools:
    """Pools from Faker (en_GB) seeded with ``seed``; about 1,000 surnames (en_GB has 500
    plus double-barrelled pairs), 360 given names, ``addresses`` street/town/postcode units."""
    fake = Faker("en_GB")
    fake.seed_instance(seed)
    surnames = _distinct(fake.last_name, 3_000, 12_000)
    male = _distinct(fake.first_name_male, 1_000, 6_000)
    female = _distinct(fake.first_name_female, 1_000, 6_000)
    rng = np.random.default_rng(seed)
    a, b = rng.integers(0, len(surnames), size=(2, len(surnames)))
    doubles = [f"{surnames[i]}-{surnames[j]}" for i, j in zip(a, b) if i != j]
    streets: list[str] = []
    towns: list[str] = []
    postcodes: list[str] = []
    while len(streets) < addresses:
        postcode = fake.postcode()
        if POSTCODE_FORMAT.match(postcode):
            streets.append(fake.street_name())
            towns.append(fake.city())
            postcodes.append(postcode)
    practices = sorted(f"K84{n:03d}" for n in rng.choice(np.arange(1, 100), size=60, replace=False))
    site_towns = _distinct(fake.city, 12, 200)
    kinds = ("Community Hospital", "Health Centre", "MSK Clinic")
    sites = [f"{town} {kinds[i % 3]}" for i, town in enumerate(site_towns)]
    return Pools(tuple(surnames + sorted(set(doubles))), tuple(male), tuple(female), tuple(streets),
                 tuple(towns), tuple(postcodes), tuple(practices), tuple(sites))


def nhs_check_digits(base9: np.ndarray) -> np.ndarray:
    """Modulus-11 check digit of each 9-digit base (domain.md §6); 10 where none is valid."""
    digits = (base9[:, None] // 10 ** np.arange(8, -1, -1, dtype=np.int64)) % 10
    check = 11 - (digits @ np.arange(10, 1, -1, dtype=np.int64)) % 11
    return np.where(check == 11, 0, check)


def nhs_number_valid(text: str) -> bool:
    """True when ``text`` (spaces and dashes ignored) is 10 digits with a valid check digit."""
    digits = re.sub(r"[ -]", "", text)
    if not re.fullmatch(r"\d{10}", digits):
        return False
    check = int(nhs_check_digits(np.array([int(digits[:9])], dtype=np.int64))[0])
    return check != 10 and check == int(digits[9])


def unique_nhs_numbers(rng: np.random.Generator, count: int) -> np.ndarray:
    """``count`` distinct valid NHS numbers from the never-issued range (int64, in random order).

    The 999 block holds ~909,000 valid numbers; beyond that the next blocks down (998, 997,
    ...) are used, still in the 900-999 range that is never issued to a person.
    """
    blocks = max(1, -(-int(count * 1.25) // 1_000_000))
    space = blocks * 1_000_000
    picks = rng.choice(space, size=min(space, int(count * 1.2) + 64), replace=False)
    base9 = (999 - picks // 1_000_000) * 1_000_000 + picks % 1_000_000
    check = nhs_check_digits(base9)
    valid = check != 10
    numbers = (base9 * 10 + check)[valid][:count]
    if numbers.size < count:
        raise ValueError(f"could not draw {count} distinct NHS numbers")
    return np.asarray(numbers, dtype=np.int64)


def wrong_check_digit(rng: np.random.Generator, numbers: np.ndarray) -> np.ndarray:
    """The same numbers with the check digit replaced by a different digit (so invalid)."""
    shift = rng.integers(1, 10, size=numbers.size)
    return np.asarray(numbers - numbers % 10 + (numbers % 10 + shift) % 10, dtype=np.int64)


def demographics(rng: np.random.Generator, pools: Pools, n: int, cutover_day: int) -> pl.DataFrame:
    """``n`` people's demographics; (given_names, family_name, birth_day) is unique among them.

    Columns: family_name, given_names, birth_day (int), sex, address, postcode,
    gp_practice, phone, nhs_number_status. Uniqueness matters: two unrelated people who
    share name and birth date would be a probable duplicate nobody planted.
    """
    sex = rng.choice(4, size=n, p=np.array(SEX_RATES))
    male = rng.integers(0, len(pools.male_names), size=n)
    female = rng.integers(0, len(pools.female_names), size=n)
    use_male = (sex == 0) | ((sex >= 2) & (rng.random(n) < 0.5))
    names = np.concatenate([np.array(pools.male_names, dtype=object), np.array(pools.female_names, dtype=object)])
    first = np.where(use_male, male, len(pools.male_names) + female)
    middle = np.where(rng.random(n) < MIDDLE_NAME_RATE, rng.integers(0, len(names), size=n), -1)
    n_single = sum(1 for s in pools.surnames if "-" not in s)
    surname = np.where(rng.random(n) < DOUBLE_BARRELLED_RATE,
                       rng.integers(n_single, len(pools.surnames), size=n), rng.integers(0, n_single, size=n))
    unit = rng.integers(0, len(pools.streets), size=n)
    name_pool = pl.Series(names.tolist(), dtype=pl.String)
    frame = pl.DataFrame({
        "family_name": pl.Series(pools.surnames).gather(surname),
        "given_names": name_pool.gather(first),
        "middle": name_pool.gather(np.maximum(middle, 0)),
        "has_middle": middle >= 0,
        "birth_day": cutover_day - _ages(rng, n),
        "sex": pl.Series(SEX_CODES).gather(sex),
        "house": rng.integers(1, 200, size=n),
        "street": pl.Series(pools.streets).gather(unit),
        "town": pl.Series(pools.towns).gather(unit),
        "postcode": pl.Series(pools.postcodes).gather(unit),
        "gp_practice": pl.Series(pools.practices).gather(rng.integers(0, len(pools.practices), size=n)),
        "phone_n": rng.integers(0, 1000, size=n),
        "phone_kind": rng.choice(3, size=n, p=np.array([PHONE_RATE * 0.6, PHONE_RATE * 0.4, 1 - PHONE_RATE])),
        "nhs_number_status": pl.Series(STATUS_CODES).gather(rng.choice(3, size=n, p=np.array(STATUS_RATES))),
    })
    frame = frame.with_columns(
        pl.when(pl.col("has_middle")).then(pl.concat_str([pl.col("given_names"), pl.col("middle")], separator=" "))
        .otherwise(pl.col("given_names")).alias("given_names"),
        pl.concat_str([pl.col("house").cast(pl.String), pl.lit(" "), pl.col("street"), pl.lit(", "), pl.col("town")])
        .alias("address"),
        # Ofcom's reserved drama ranges: numbers that can never ring a real person.
        pl.when(pl.col("phone_kind") == 0).then(pl.format("07700 900{}", pl.col("phone_n").cast(pl.String).str.zfill(3)))
        .when(pl.col("phone_kind") == 1).then(pl.format("01632 960{}", pl.col("phone_n").cast(pl.String).str.zfill(3)))
        .otherwise(None).alias("phone"),
    )
    key = ["given_names", "family_name", "birth_day"]
    while True:
        clash = ~frame.select(pl.struct(key).is_first_distinct()).to_series()
        if not clash.any():
            break
        shift = pl.Series(rng.integers(1, 400, size=n))
        frame = frame.with_columns(pl.when(clash).then(pl.col("birth_day") - shift).otherwise(pl.col("birth_day")))
    return frame.select("family_name", "given_names", "birth_day", "sex", "address", "postcode", "gp_practice",
                        "phone", "nhs_number_status")


def _ages(rng: np.random.Generator, n: int) -> np.ndarray:
    """Age at the cut-over in days: 18 to 95, weighted to the middle-aged and older."""
    return ((18 + 77 * rng.beta(2.0, 1.8, size=n)) * 365.25).astype(np.int64)


def swappable_birth_date(birth_day: np.ndarray) -> np.ndarray:
    """Birth dates whose day and month can be swapped into a different valid date."""
    d = (np.datetime64("1970-01-01") + birth_day.astype("timedelta64[D]"))
    month = d.astype("datetime64[M]").astype(np.int64) % 12 + 1
    day = (d - d.astype("datetime64[M]")).astype(np.int64) + 1
    return np.asarray((day <= 12) & (day != month), dtype=bool)


def swap_day_month(birth_day: np.ndarray) -> np.ndarray:
    """Birth day numbers with day and month swapped (callers pass swappable dates only)."""
    d = (np.datetime64("1970-01-01") + birth_day.astype("timedelta64[D]"))
    year = d.astype("datetime64[Y]").astype(np.int64) + 1970
    month = d.astype("datetime64[M]").astype(np.int64) % 12 + 1
    day = (d - d.astype("datetime64[M]")).astype(np.int64) + 1
    swapped = [date(int(y), int(dd), int(m)) for y, m, dd in zip(year, month, day)]
    return np.array([day_number(s) for s in swapped], dtype=np.int64)


def surname_typo(rng: np.random.Generator, names: list[str]) -> list[str]:
    """Each name with two adjacent different letters swapped (or a letter doubled)."""
    out = []
    for name in names:
        spots = [i for i in range(1, len(name) - 1) if name[i] != name[i + 1] and name[i].isalpha()
                 and name[i + 1].isalpha()]
        if spots:
            i = spots[int(rng.integers(0, len(spots)))]
            out.append(name[:i] + name[i + 1] + name[i] + name[i + 2:])
        else:
            out.append(name + name[-1])
    return out


@dataclass(frozen=True)
class PatientTable:
    """The clean source patient rows and what identity must make of them.

    ``frame`` holds one row per source patient row (pid = patient number; people are
    1..N, extra duplicate rows follow); ``survivor[pid]`` is the patient an exact duplicate
    merges into (itself otherwise); ``duplicates`` lists (a, b, match_type) pairs.
    """

    frame: pl.DataFrame
    survivor: np.ndarray
    duplicates: pl.DataFrame
    extra_of: dict[str, np.ndarray]  # duplicate kind -> the people (pids) the extra rows copy
    target: pl.DataFrame
    newline_pid: int


def build_patients(rng: np.random.Generator, roles: Roles, demo: pl.DataFrame, nhs: np.ndarray,
                   target_extra: int) -> PatientTable:
    """Patient rows for N people plus the planted duplicate rows, and the target index.

    ``demo``/``nhs`` hold at least N + ``target_extra`` people; rows past N that are not
    used for the target index are left to the caller (malformed junk patients).
    """
    n = roles.primary.size
    people = demo.slice(0, n).with_columns(pl.Series("pid", np.arange(1, n + 1)), pl.Series("nhs", nhs[:n]))
    kind = {k: np.flatnonzero(roles.identity == i) for i, k in enumerate(IDENTITY_KINDS)}
    written = pl.col("nhs").cast(pl.String)
    spaced = pl.Series(rng.random(n) < NHS_NUMBER_SPACED_RATE)
    invalid = np.zeros(n, dtype=bool)
    invalid[kind["nhs_number_invalid"]] = True
    missing = np.zeros(n, dtype=bool)
    missing[kind["nhs_number_missing"]] = True
    bad = pl.Series(wrong_check_digit(rng, nhs[:n])).cast(pl.String)
    people = people.with_columns(
        pl.when(pl.Series(missing)).then(None)
        .when(pl.Series(invalid)).then(bad)
        .when(spaced).then(pl.concat_str([written.str.slice(0, 3), written.str.slice(3, 3), written.str.slice(6)],
                                         separator=" "))
        .otherwise(written).alias("nhs_number"),
        pl.when(pl.Series(missing)).then(pl.lit("03")).otherwise(pl.col("nhs_number_status")).alias("nhs_number_status"),
    )
    # One clean person (no identity role) gets a two-line address: a quoted embedded newline.
    plain = np.flatnonzero((roles.identity < 0) & ~roles.at_target)
    newline_pid = int(plain[rng.integers(0, plain.size)]) + 1
    people = people.with_columns(
        pl.when(pl.col("pid") == newline_pid).then(pl.concat_str([pl.lit("Flat 2\n"), pl.col("address")]))
        .otherwise(pl.col("address")).alias("address"))

    exact, probable, conflict = kind["duplicate_exact"], kind["duplicate_probable"], kind["duplicate_conflict"]
    copies = people[np.concatenate([exact, probable, conflict])]
    pb = np.arange(n + 1, n + 1 + copies.height)
    is_probable = np.zeros(copies.height, dtype=bool)
    is_probable[exact.size:exact.size + probable.size] = True
    is_conflict = np.zeros(copies.height, dtype=bool)
    is_conflict[exact.size + probable.size:] = True
    swap = roles.swap_birth_date[probable]
    family = copies["family_name"].to_list()
    births = copies["birth_day"].to_numpy().copy()
    typo_rows = exact.size + np.flatnonzero(~swap)
    for row, name in zip(typo_rows, surname_typo(rng, [family[i] for i in typo_rows])):
        family[row] = name
    swap_rows = exact.size + np.flatnonzero(swap)
    births[swap_rows] = swap_day_month(births[swap_rows])
    conflict_rows = np.flatnonzero(is_conflict)
    births[conflict_rows] -= rng.integers(2 * 365, 15 * 365, size=conflict_rows.size)
    copies = copies.with_columns(
        pl.Series("pid", pb), pl.Series("family_name", family, dtype=pl.String), pl.Series("birth_day", births),
        # the exact copy repeats the number as plain digits (same number, as another system wrote it)
        pl.when(pl.Series(is_probable)).then(None).otherwise(pl.col("nhs").cast(pl.String)).alias("nhs_number"),
        pl.when(pl.Series(is_probable)).then(pl.lit("03")).otherwise(pl.col("nhs_number_status"))
        .alias("nhs_number_status"),
    )
    frame = pl.concat([people, copies]).with_columns(pl.col("birth_day").cast(pl.Date).alias("birth_date")).select(
        "pid", "nhs_number", "nhs_number_status", "family_name", "given_names", "birth_date", "sex", "address",
        "postcode", "gp_practice", "phone")
    survivor = np.arange(n + copies.height + 1)
    survivor[pb[:exact.size]] = exact + 1
    duplicates = pl.DataFrame({
        "a": np.concatenate([exact, probable, conflict]) + 1, "b": pb,
        "match_type": ["exact_nhs_number"] * exact.size + ["probable"] * probable.size + ["conflict"] * conflict.size,
    })
    target = _target_index(rng, people.filter(pl.Series(roles.at_target)), demo.slice(n, target_extra),
                           nhs[n:n + target_extra])
    extra_of = {"duplicate_exact": exact + 1, "duplicate_probable": probable + 1, "duplicate_conflict": conflict + 1}
    return PatientTable(frame, survivor, duplicates, extra_of, target, newline_pid)


def _target_index(rng: np.random.Generator, accepted: pl.DataFrame, others: pl.DataFrame,
                  other_nhs: np.ndarray) -> pl.DataFrame:
    """The new provider's index: the backlog people accepted before go-live, plus people the
    new provider holds who are not in the extract (they must match nothing)."""
    cols = ["nhs_number", "family_name", "given_names", "birth_day", "sex", "postcode"]
    rows = pl.concat([
        accepted.with_columns(pl.col("nhs").cast(pl.String).alias("nhs_number")).select(cols),
        others.with_columns(pl.Series("nhs_number", other_nhs).cast(pl.String)).select(cols),
    ])
    rows = rows[rng.permutation(rows.height)]
    return rows.with_columns(
        pl.format("NP{}", pl.int_range(1, pl.len() + 1).cast(pl.String).str.zfill(7)).alias("local_id"),
        pl.col("birth_day").cast(pl.Date).alias("birth_date"),
    ).select("local_id", "nhs_number", "family_name", "given_names", "birth_date", "sex", "postcode")
