"""NHS number checks: Modulus 11 and range vectors (domain.md section 6), verification status."""

from __future__ import annotations

import dataclasses

import polars as pl
import pytest

from migrate.identity import IdentitySettings, nhs_number


def problems(settings: IdentitySettings, numbers: list[str | None],
             raws: list[str | None] | None = None) -> list[str | None]:
    frame = pl.DataFrame({"nhs_number": numbers, "nhs_number_raw": raws if raws is not None else numbers},
                         schema={"nhs_number": pl.String, "nhs_number_raw": pl.String})
    return frame.select(nhs_number.nhs_number_problem(settings)).to_series().to_list()


@pytest.mark.parametrize("number", ["9434765919", "9912003888", "4010232137", "9991000003", "6000000006"])
def test_valid_numbers(settings: IdentitySettings, number: str) -> None:
    assert problems(settings, [number]) == [None]


@pytest.mark.parametrize(("number", "why"), [
    ("1234567890", nhs_number.CHECK_DIGIT),   # check digit would be 10: no valid number
    ("9434765918", nhs_number.CHECK_DIGIT),   # wrong check digit
    ("0000000000", nhs_number.RANGE),         # passes Modulus 11, outside every range
    ("5000000005", nhs_number.RANGE),         # 500-599 is not in the ranges
    ("943476591", nhs_number.NOT_TEN_DIGITS),
    ("94347659190", nhs_number.NOT_TEN_DIGITS),
    ("９４３４７６５９１９", nhs_number.NOT_TEN_DIGITS),  # full-width digits: \d would take them
    ("٩٤٣٤٧٦٥٩١٩", nhs_number.NOT_TEN_DIGITS),  # Arabic-Indic digits
])
def test_invalid_numbers(settings: IdentitySettings, number: str, why: str) -> None:
    assert problems(settings, [number]) == [why]


def test_zero_passes_the_checksum_so_only_the_range_rejects_it(settings: IdentitySettings) -> None:
    everything = dataclasses.replace(settings, prefix_ranges=((0, 999),))
    assert problems(everything, ["0000000000", "1234567890"]) == [None, nhs_number.CHECK_DIGIT]


def test_missing_versus_unreadable(settings: IdentitySettings) -> None:
    # The mapping nulls a value it cannot read as 10 digits but keeps the text in nhs_number_raw:
    # that is an invalid number, not a missing one.
    got = problems(settings, [None, None, None, ""], [None, "  ", "943 476 591X", None])
    assert got == [nhs_number.MISSING, nhs_number.MISSING, nhs_number.NOT_TEN_DIGITS, nhs_number.MISSING]


def test_ranges_come_from_settings(settings: IdentitySettings) -> None:
    england_only = dataclasses.replace(settings, prefix_ranges=((400, 499), (600, 799)))
    assert problems(england_only, ["9434765919", "4010232137"]) == [nhs_number.RANGE, None]


@pytest.mark.parametrize(("status", "valid", "code"), [
    ("01", True, "01"), ("1", True, "01"), ("NSTS01", True, "01"), (" Verified ", True, "01"), ("nsts01", True, "01"),
    ("02", True, "02"), ("NSTS02", True, "02"), ("03", True, "02"), ("04", True, "02"), (None, True, "02"),
    ("01", False, "03"), (None, False, "03"),
])
def test_verification_status(settings: IdentitySettings, status: str | None, valid: bool, code: str) -> None:
    frame = pl.DataFrame({"nhs_number_status": [status], "ok": [valid]}, schema={"nhs_number_status": pl.String,
                                                                              "ok": pl.Boolean})
    assert frame.select(nhs_number.verification_status(settings, pl.col("ok"))).item() == code


def test_numbers_are_never_altered(settings: IdentitySettings) -> None:
    frame = pl.DataFrame({"nhs_number": ["9434765918"], "nhs_number_raw": ["943 476 5918"]})
    out = frame.with_columns(nhs_number.nhs_number_problem(settings).alias("problem"))
    assert out.select("nhs_number", "nhs_number_raw").row(0) == ("9434765918", "943 476 5918")
