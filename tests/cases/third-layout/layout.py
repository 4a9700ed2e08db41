"""A third extract layout, written AFTER the drafter's synonyms (mappings/draft/synonyms.yaml)
to see how `handover profile draft` does on names and codes nobody tuned it for.

A synthetic extract (``handover synth``) re-written as a community EPR might export it:
tab-separated, Windows-1252 with accented names, columns in another order under other
names ("Client Number", "Born", "Gender Identity", "Episode Ref", "Body Area", ...),
month-first dates for births (an export made by a US-built system), yyyymmdd for the
rest, ISO date-times with a T, NHS numbers in 3-3-4 groups, 1/0 flags, words for
attendance, status and contact type, red flags joined by commas inside quoted fields.
"""

from __future__ import annotations

import csv
from datetime import datetime
from pathlib import Path
from typing import Any

ACCENTS = {"Renee": "Renée", "Zoe": "Zoë", "Sian": "Siân", "Chloe": "Chloë", "Noel": "Noël", "Jose": "José"}


def _day(value: str, fmt: str) -> str:
    try:
        return datetime.strptime(value, "%Y-%m-%d").strftime(fmt)
    except ValueError:
        return value


def _read(path: Path) -> tuple[list[str], list[list[str]]]:
    with path.open(newline="", encoding="utf-8", errors="replace") as fh:
        rows = list(csv.reader(fh))
    return rows[0], rows[1:]


def convert(extract: Path, out: Path) -> None:
    """Write ``extract`` (the generic layout) into ``out`` in the third layout."""
    out.mkdir(parents=True)

    def write(name: str, source: str, header: list[str], row_of: Any) -> None:
        h, rows = _read(extract / source)
        converted = [row_of(dict(zip(h, r, strict=True))) for r in rows if len(r) == len(h)]
        with (out / name).open("w", newline="", encoding="cp1252", errors="replace") as fh:
            csv.writer(fh, delimiter="\t", lineterminator="\r\n").writerows([header, *converted])

    flag = {"Y": "1", "N": "0"}
    write("clients.tsv", "patients.csv",
          ["Client Number", "Surname", "First Name", "Born", "Gender Identity", "NHS_NUMBER", "Home Address",
           "Postal Code", "Practice ODS", "Mobile Tel"],
          lambda r: [r["patient_id"], r["family_name"], ACCENTS.get(r["given_names"], r["given_names"] + "é"),
                     _day(r["birth_date"], "%m/%d/%Y"),
                     {"M": "Male", "F": "Female", "I": "Indeterminate", "U": "Not Known"}.get(r["sex"], r["sex"]),
                     f"{r['nhs_number'][:3]} {r['nhs_number'][3:6]} {r['nhs_number'][6:]}"
                     if len(r["nhs_number"]) == 10 else r["nhs_number"],
                     r["address"], r["postcode"], r["gp_practice"], r["phone"]])
    write("episodes.tsv", "referrals.csv",
          ["Episode Ref", "Client Number", "Referral Received", "Clinical Service", "Urgency", "Wait List",
           "Episode Status", "Discharged On", "Discharge Reason", "PIFU Review By", "Previous Malignancy",
           "Red Flag Indicators", "Body Area", "Operation Date", "Injection Pending", "Referral Reason", "UBRN",
           "Referrer"],
          lambda r: [r["referral_id"], r["patient_id"], _day(r["received_date"], "%Y%m%d"), r["service_line"],
                     {"1": "Routine", "2": "Urgent", "3": "2WW"}.get(r["priority"], r["priority"]),
                     {"backlog": "WL", "transition": "ACTIVE TREATMENT", "pifu": "PIFU"}.get(r["transfer_list"],
                                                                                            r["transfer_list"]),
                     {"open": "Open", "closed": "Discharged", "rejected": "Rejected"}.get(r["status"], r["status"]),
                     _day(r["closed_date"], "%Y%m%d"), r["closure_reason"], _day(r["pifu_expiry_date"], "%Y%m%d"),
                     flag.get(r["history_of_cancer"], r["history_of_cancer"]), r["red_flags"].replace(";", ","),
                     r["body_site"], _day(r["surgery_date"], "%Y%m%d"),
                     flag.get(r["awaiting_injection"], r["awaiting_injection"]), r["reason"], r["ubrn"],
                     r["referral_source"]])
    write("appointments.tsv", "contacts.csv",
          ["Appointment Ref", "Episode Ref", "Client Number", "Appointment Start", "Attendance Status",
           "Consultation Type", "Mode", "Clinic", "Venue", "Procedure"],
          lambda r: [r["contact_id"], r["referral_id"], r["patient_id"], r["contact_datetime"].replace(" ", "T") + ":00",
                     {"5": "Attended", "6": "Attended Late", "7": "Arrived Late - Not Seen", "3": "DNA",
                      "2": "Cancelled by Patient", "4": "Cancelled by Hospital", "0": "Booked"}.get(
                         r["attendance_code"], r["attendance_code"]),
                     {"initial": "New", "follow_up": "Review", "procedure": "Procedure"}.get(r["contact_type"],
                                                                                            r["contact_type"]),
                     {"F2F": "Face to Face", "TEL": "Telephone", "VID": "Video"}.get(r["medium"], r["medium"]),
                     r["slot_name"], r["site"], r["procedure"]])
    write("clinical_codes.tsv", "codes.csv",
          ["Client Number", "Coding Scheme", "Concept", "Rubric", "Date Coded", "Value"],
          lambda r: [r["patient_id"], {"snomed": "SNOMED CT", "read2": "Read v2"}.get(r["code_system"], r["code_system"]),
                     r["code"], r["display"], _day(r["recorded_date"], "%Y%m%d"), r["value"]])
