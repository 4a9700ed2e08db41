"""NHS number checks (docs/domain.md section 6) as polars expressions.

A valid NHS number is 10 digits whose tenth is the Modulus 11 check digit of the first
nine (weights 10..2; check = 11 - sum mod 11, 11 -> 0, 10 -> no valid number) and whose
first three digits fall in one of the configured ranges (0000000000 passes the checksum,
not the range). Numbers are only read, never altered: the mapping already removed spaces
and dashes into ``nhs_number`` and kept the text as written in ``nhs_number_raw``.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import reduce

import polars as pl

from migrate.identity.settings import IdentitySettings

# Why a number is not valid; null when it is. Stable codes: evidence text is built from them.
NOT_TEN_DIGITS = "not_ten_digits"
CHECK_DIGIT = "check_digit"
RANGE = "range"
MISSING = "missing"

PROBLEM_TEXT = {
    NOT_TEN_DIGITS: "NHS number as written is not 10 digits",
    CHECK_DIGIT: "NHS number fails the Modulus 11 check digit",
    RANGE: "NHS number starts outside the valid number ranges",
    MISSING: "no NHS number in the extract",
}


def _blank(col: str) -> pl.Expr:
    return pl.col(col).is_null() | (pl.col(col).str.strip_chars() == "")


def modulus11(text: pl.Expr, ranges: Sequence[tuple[int, int]]) -> tuple[pl.Expr, pl.Expr, pl.Expr]:
    """(is ten digits, check digit agrees, prefix in ``ranges``) for NHS numbers as text.

    Digits 1-9 weighted 10..2, summed; check = 11 - (sum mod 11), 11 -> 0, 10 -> invalid;
    it must equal digit 10 (docs/domain.md section 6). Vectorised; never alters a number.
    """
    ten = text.str.contains(r"^[0-9]{10}$").fill_null(False)  # ASCII: \d would take full-width digits
    n = pl.when(ten).then(text.cast(pl.Int64, strict=False))
    digits = [(n // 10 ** (9 - k)) % 10 for k in range(10)]
    total = reduce(lambda a, b: a + b, [d * (10 - k) for k, d in enumerate(digits[:9])])
    check = 11 - total % 11
    check = pl.when(check == 11).then(0).otherwise(check)
    agrees = ((check != 10) & (check == digits[9])).fill_null(False)
    prefix = n // 10**7
    in_range = reduce(lambda a, b: a | b, [prefix.is_between(lo, hi) for lo, hi in ranges], pl.lit(False))
    return ten, agrees, in_range.fill_null(False)


def nhs_number_problem(settings: IdentitySettings, number: str = "nhs_number", raw: str = "nhs_number_raw") -> pl.Expr:
    """Null for a valid number, else why not: missing, not_ten_digits, check_digit or range.

    ``number`` holds the 10-digit canonical value (or null); ``raw`` the text as written,
    so a value the mapping could not read as 10 digits counts as invalid, not missing.
    """
    ten, agrees, in_range = modulus11(pl.col(number), settings.prefix_ranges)
    return (
        pl.when(_blank(number) & _blank(raw)).then(pl.lit(MISSING))
        .when(~ten).then(pl.lit(NOT_TEN_DIGITS))
        .when(~agrees).then(pl.lit(CHECK_DIGIT))
        .when(~in_range).then(pl.lit(RANGE))
        .otherwise(pl.lit(None, dtype=pl.String))
    )


def verification_status(settings: IdentitySettings, valid: pl.Expr, status: str = "nhs_number_status") -> pl.Expr:
    """UK Core England NHS number verification code: 01 when valid and the extract says it is
    verified, 02 when valid otherwise, 03 (trace required) when invalid or missing."""
    said = pl.col(status).cast(pl.String).str.strip_chars().str.to_lowercase()
    verified = said.is_in(list(settings.verified_statuses)).fill_null(False)
    return pl.when(~valid).then(pl.lit("03")).when(verified).then(pl.lit("01")).otherwise(pl.lit("02"))


def is_valid(settings: IdentitySettings, number: str = "nhs_number") -> pl.Expr:
    """True where ``number`` is a valid NHS number (no raw column needed)."""
    return nhs_number_problem(settings, number, number).is_null()
