"""Small HL7 v2.4 messages for batch tests: the segments the shipped hl7v2 profile reads.

Every builder returns one message as text (segments CR-separated). ``None`` for an
optional value leaves the field empty ("not sent": an update keeps the current value);
``'""'`` sends HL7's explicit null (an update clears the value).
"""

from __future__ import annotations

from datetime import date
from pathlib import Path

import polars as pl

from migrate.pipeline import RunConfig, run_batch

CUTOVER = date(2022, 10, 1)
NULL = '""'


def msh(event: str, control: str, sent: str, structure: str | None = None, app: str = "PAS",
        facility: str = "RXX") -> str:
    kind = {"A": "ADT", "I": "REF", "S": "SIU"}[event[0]]
    nine = f"{kind}^{event}" + (f"^{structure}" if structure else "")
    return f"MSH|^~\\&|{app}|{facility}|HANDOVER|RYY|{sent}||{nine}|{control}|P|2.4"


def _f(value: str | None) -> str:
    return "" if value is None else value


def pid(patient: str, nhs: str | None = None, family: str | None = None, given: str | None = None,
        dob: str | None = None, sex: str | None = None, postcode: str | None = None, phone: str | None = None) -> str:
    ids = f"{nhs}^^^NHS^NH~{patient}^^^RXX^MR" if nhs else f"{patient}^^^RXX^MR"
    name = "" if family is None and given is None else f"{_f(family)}^{_f(given)}"
    address = "" if postcode is None else (NULL if postcode == NULL else f"^^^^{postcode}")
    return (f"PID|1||{ids}||{name}||{_f(dob).replace('-', '')}|{_f(sex)}|||{address}||{_f(phone)}")


def adt(event: str, control: str, sent: str, patient: str, nhs: str | None = None, family: str | None = None,
        given: str | None = None, dob: str | None = None, sex: str | None = None, postcode: str | None = None,
        practice: str | None = "K84001", phone: str | None = None) -> str:
    """A04/A08/A28/A31; ``practice=None`` leaves PD1 out."""
    structure = "ADT_A05" if event in ("A28", "A31") else "ADT_A01"
    segments = [msh(event, control, sent, structure), f"EVN|{event}|{sent}",
                pid(patient, nhs, family, given, dob, sex, postcode, phone)]
    if practice is not None:
        segments.append(f"PD1|||{NULL if practice == NULL else 'Practice^^' + practice}")
    segments.append("PV1|1|N")
    return "\r".join(segments)


def merge(control: str, sent: str, survivor: str, prior: str) -> str:
    """A40: ``prior`` merged into ``survivor``."""
    return "\r".join([msh("A40", control, sent, "ADT_A39"), f"EVN|A40|{sent}",
                      f"PID|1||{survivor}^^^RXX^MR||X^Y", f"MRG|{prior}^^^RXX^MR"])


def referral(control: str, sent: str, rid: str, patient: str, received: str, service: str, priority: str = "R",
             status: str = "A", event: str = "I12") -> str:
    return "\r".join([msh(event, control, sent, "REF_I12"),
                      f"RF1|{status}|{priority}|{service}^x|||{rid}^PAS|{received.replace('-', '')}",
                      "PRD|RP|PATEL^ANIL", f"PID|1||{patient}^^^RXX^MR||X^Y"])


def booking(event: str, control: str, sent: str, cid: str, rid: str | None, patient: str | None, when: str | None,
            status: str | None, kind: str | None = "NEW", reason: str | None = None) -> str:
    """SIU: SCH-2 filler id, SCH-6 event reason, SCH-7 appointment reason, SCH-11.4 start,
    SCH-25 filler status, SCH-26 placer order (the referral)."""
    start = "" if when is None else "^^^" + when.replace("-", "").replace(" ", "").replace(":", "")
    sch = ["SCH", "", f"{cid}^PAS", "", "", "", _f(reason), "" if kind is None else f"{kind}^x", "", "", "", start]
    sch += [""] * 13 + [_f(status), "" if rid is None else f"{rid}^PAS"]
    segments = [msh(event, control, sent, f"SIU_{event}"), "|".join(sch)]
    if patient is not None:
        segments.append(f"PID|1||{patient}^^^RXX^MR||X^Y")
    return "\r".join([*segments, "RGS|1", "AIL|1||OPD1^^^RXX"])


def write_feed(path: Path, messages: list[str]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(("\r\n".join(messages) + "\r\n").encode())
    return path


def run(inp: Path, out: Path, *mappings: str | Path, ok: bool = True) -> Path:
    result = run_batch(RunConfig.load(inp, list(mappings) or ["hl7v2"], CUTOVER, out))
    if ok:
        assert result.ok, result.summary
    return out


def dispositions(run_dir: Path) -> dict[tuple[str, int], str]:
    """(file, message) -> disposition."""
    lineage = pl.read_parquet(run_dir / "lineage.parquet").select(
        "source_file", "source_row", pl.col("disposition").cast(pl.String)).unique()
    return {(f, r): d for f, r, d in lineage.iter_rows()}


def quarantined(run_dir: Path) -> dict[tuple[str, int], str]:
    """(file, message) -> reason code."""
    q = pl.read_parquet(run_dir / "quarantine.parquet")
    return {(f, r): c for f, r, c in q.select("source_file", "source_row", "reason_code").iter_rows()}
