"""The worked example with its sharing entries kept somewhere else (issue #20).

``tests/cases/worked-example`` records its sharing wishes as coded entries: P21 dissent
(2021-05-01), P22 dissent then a later consent (2022-01-01), P23 consent then a later
dissent (2022-06-01), P24 a Type 1 opt-out only. The builders here write the same extract
with those wishes as a patient column (``column``) or as GP practice settings
(``practice``), in layouts of their own, so a test can show that the same patients are
blocked and the same FHIR withheld whatever the source.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import polars as pl
import yaml

WORKED = Path(__file__).parent / "cases" / "worked-example"
DISSENT_CODES = {"93C1", "416409005"}
# The patient column each layout writes: (column, date column, dissent, consent, date format, values).
LAYOUTS: dict[str, dict[str, Any]] = {
    # SystmOne-like: a "Sharing Out" setting with the date it was set
    "systmone": {"column": "Sharing Out", "date": "Sharing Out Set", "dissent": ["No", "N", "Dissent"],
                 "consent": ["Yes", "Y"], "format": "%Y-%m-%d", "no": "No", "yes": "Yes"},
    # another system's words and dates: a status and a dd/mm/yyyy date, lower case values
    "status": {"column": "SHARE_STATUS", "date": "SHARE_STATUS_DT", "dissent": ["Express dissent"],
               "consent": ["Express consent"], "format": "%d/%m/%Y", "no": "express dissent",
               "yes": "express consent"},
}


def _profile(extra: dict[str, Any] | None = None, patients: dict[str, Any] | None = None) -> dict[str, Any]:
    doc: dict[str, Any] = yaml.safe_load((WORKED / "mapping.yaml").read_text(encoding="utf-8"))
    doc["tables"]["patients"]["fields"] |= patients or {}
    doc["tables"] |= extra or {}
    return doc


def _copy(out: Path) -> tuple[pl.DataFrame, pl.DataFrame]:
    shutil.rmtree(out, ignore_errors=True)
    (out / "input").mkdir(parents=True)
    for name in ("referrals.csv", "contacts.csv"):
        shutil.copy(WORKED / "input" / name, out / "input" / name)
    patients = pl.read_csv(WORKED / "input" / "patients.csv", infer_schema=False)
    codes = pl.read_csv(WORKED / "input" / "codes.csv", infer_schema=False)
    return patients, codes


def _write(out: Path, patients: pl.DataFrame, codes: pl.DataFrame, profile: dict[str, Any]) -> Path:
    patients.write_csv(out / "input" / "patients.csv")
    codes.write_csv(out / "input" / "codes.csv")
    (out / "mapping.yaml").write_text(yaml.safe_dump(profile, sort_keys=False), encoding="utf-8")
    return out


def codes_variant(out: Path) -> Path:
    """The worked example as it is (coded entries)."""
    patients, codes = _copy(out)
    return _write(out, patients, codes, _profile())


def column_variant(out: Path, layout: str = "systmone", settings: dict[str, tuple[str, str]] | None = None,
                   keep_codes: tuple[str, ...] = ("9Nu0",), opt_out_values: tuple[str, ...] = ()) -> Path:
    """Each patient's latest dissent/consent as their own setting (value, date in ISO);
    the coded entries kept are only those in ``keep_codes`` (default: P24's opt-out);
    ``opt_out_values`` are the column's values for a national data opt-out."""
    spec = LAYOUTS[layout]
    patients, codes = _copy(out)
    wanted = settings if settings is not None else {
        "P21": ("no", "2021-05-01"), "P22": ("yes", "2022-01-01"), "P23": ("no", "2022-06-01")}

    def written(value: str) -> str:
        return str(spec.get(value, value))

    def when(iso: str) -> str:
        return pl.Series([iso]).str.to_date().dt.strftime(spec["format"])[0] if iso else ""

    value = {k: written(v) for k, (v, _) in wanted.items()}
    dated = {k: when(d) for k, (_, d) in wanted.items()}
    patients = patients.with_columns(
        pl.col("patient_id").replace_strict(value, default="").alias(spec["column"]),
        pl.col("patient_id").replace_strict(dated, default="").alias(spec["date"]))
    field = {"column": spec["column"], "dissent_values": spec["dissent"], "consent_values": spec["consent"],
             "date": spec["date"], "formats": [spec["format"]]}
    if opt_out_values:
        field["opt_out_values"] = list(opt_out_values)
    return _write(out, patients, codes.filter(pl.col("code").is_in(list(keep_codes))),
                  _profile(patients={"sharing_out": field}))


# Practices that do not share out: Y00021 since 2021-05-01 (P21 and P22 registered there),
# Y00023 since 2022-06-01 (P23). P22's own later consent lifts the practice's block; P23's
# own consent (2020) came before the practice stopped sharing, so the practice's setting wins.
PRACTICES = [("K84001", "Y", "2015-04-01"), ("Y00021", "N", "2021-05-01"), ("Y00023", "N", "2022-06-01"),
             ("Y00099", "Y", "2019-01-01")]


def practice_variant(out: Path) -> Path:
    """The dissents as practice settings (``practice-sharing.csv``, its own layout); the
    patients' own consents stay coded entries."""
    patients, codes = _copy(out)
    moved = {"P21": "Y00021", "P22": "Y00021", "P23": "Y00023"}
    patients = patients.with_columns(pl.col("patient_id").replace_strict(moved, default=pl.col("gp_practice"))
                                     .alias("gp_practice"))
    (out / "practice-sharing.csv").write_text(
        "Practice Code;Shares Records Out;Set On\n" + "".join(f"{o};{s};{d[8:]}/{d[5:7]}/{d[:4]}\n"
                                                             for o, s, d in PRACTICES), encoding="utf-8")
    table = {"practice_sharing": {"delimiter": ";", "fields": {
        "ods_code": {"column": "Practice Code", "required": True},
        "sharing_out": {"column": "Shares Records Out", "dissent_values": ["N"], "consent_values": ["Y"],
                        "date": "Set On", "formats": ["%d/%m/%Y"], "required": True}}}}
    return _write(out, patients, codes.filter(~pl.col("code").is_in(list(DISSENT_CODES))), _profile(table))
