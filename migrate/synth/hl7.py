"""``synthesise_hl7``: a synthetic HL7 v2 feed from the outgoing PAS, with its quarantine truth.

Writes ``out/feed.hl7``: ADT A04/A08/A28/A31/A40, REF I12/I14 and SIU S12/S14/S15/S26
messages (v2.4; a fifth of SIU in v2.5.1), CR-separated segments, most messages followed by
CRLF and one in ten MLLP-framed, the whole inside an FHS/BHS ... BTS/FTS batch envelope;
and ``out/truth/hl7_quarantine.csv`` (source_file, source_row, reason_code): the planted
bad messages, ``PLANTED_RATE`` of all (at least one of each kind when there are 100
messages or more), spread over the four reasons:

* ``hl7_malformed``: MSH-2 cut to two encoding characters, or a line that is not a segment;
* ``hl7_unsupported``: MSH-12 says 2.6;
* ``hl7_structure``: the PID segment repeated at the end of the message;
* ``hl7_datatype``: MSH-7 on 30 February.

What a live feed does besides: an A08/A31 in ``PARTIAL_RATE`` leaves out PD1 and the
phone (not sent: the values stand) and one in ``DELETE_RATE`` sends the phone as ``""``
(deleted); SCH-7 carries HL7 table 0276 codes as well as local NEW/FU/PROC; an S15 says in
SCH-6 when the patient cancelled; an S15 or S26 in ``OMITTED_STATUS_RATE`` leaves SCH-25 out
(the event says what happened: docs/hl7v2.md); a fifth of appointment times carry their UTC offset; and
``REDELIVERY_RATE`` of the messages are sent again, byte for byte, a little later in the
file (same MSH-10: a re-delivery, disposition merged).

People are the generic-csv ``patients.csv`` of ``migrate.synth.synthesise`` when given
(its patient ids as PID-3 type MR with the sending facility as assigning authority, NHS
numbers as type NH, names, birth dates, sex, address, phone, GP practice), so a CSV and an
HL7 extract describe the same people; else a small built-in pool. Referral ids ``RH…``
(RF1-6, and SCH-26 of the appointments they lead to), appointment ids ``CH…`` (SCH-2): the
feed's own, apart from the extract's.
Everything is drawn by numpy's ``default_rng(seed)`` and rendered with polars string
templates, so a million messages take seconds; same arguments, byte-identical files.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from migrate.synth.people import unique_nhs_numbers

__all__ = ["EVENTS", "PLANTED_KINDS", "PLANTED_RATE", "REDELIVERY_RATE", "synthesise_hl7"]

FACILITY = "RXX"
FEED = "feed.hl7"
PLANTED_RATE = 0.004
PLANTED_KINDS = ("hl7_malformed", "hl7_unsupported", "hl7_structure", "hl7_datatype")
MLLP_RATE = 0.1
SIU_V251_RATE = 0.2
CHUNK = 100_000
# event -> (message type, structure, share of the feed)
EVENTS: dict[str, tuple[str, str, float]] = {
    "A04": ("ADT", "ADT_A01", 0.10), "A08": ("ADT", "ADT_A01", 0.20), "A28": ("ADT", "ADT_A05", 0.05),
    "A31": ("ADT", "ADT_A05", 0.05), "A40": ("ADT", "ADT_A39", 0.02), "I12": ("REF", "REF_I12", 0.12),
    "I14": ("REF", "REF_I12", 0.04), "S12": ("SIU", "SIU_S12", 0.25), "S14": ("SIU", "SIU_S14", 0.08),
    "S15": ("SIU", "SIU_S15", 0.05), "S26": ("SIU", "SIU_S26", 0.04),
}
_SURNAMES = ("Abbott", "Baker", "Carter", "Dixon", "Evans", "Foster", "Grant", "Hughes", "Irwin", "Jones", "King",
             "Lewis", "Morris", "Nash", "O'Neill", "Price", "Quinn", "Reid", "Shaw", "Todd", "Upton", "Vince", "Ward",
             "Yates", "Young-Smith")
_GIVEN = ("Alice", "Ben", "Clare", "David", "Emma", "Frank", "Grace", "Harry", "Ivy", "Jack", "Lily", "Max", "Nina",
          "Ollie", "Paul", "Rose", "Sam", "Tia", "Uma", "Vic")
_SITES = ("Leeds MSK Hub", "Pudsey Clinic", "Wharfedale Outpatients", "Seacroft Physio")
_STATUS = ("Booked", "Complete", "Noshow")
# SCH-7: local codes and HL7 table 0276
_REASONS = ("NEW^New patient", "FU^Follow up", "ROUTINE^Routine", "FOLLOWUP^Follow up", "CHECKUP^Check up",
            "WALKIN^Walk in", "EMERGENCY^Emergency", "PROC^Procedure")
PARTIAL_RATE = 0.3
DELETE_RATE = 0.05
OFFSET_RATE = 0.2
PATIENT_CANCEL_RATE = 0.5
OMITTED_STATUS_RATE = 0.3  # of S15/S26: SCH-25 not sent
REDELIVERY_RATE = 0.005


def _esc(col: str) -> pl.Expr:
    """A free-text column escaped for HL7 (the escape character first)."""
    out = pl.col(col).cast(pl.String).fill_null("")
    for char, code in (("\\", "\\E\\"), ("|", "\\F\\"), ("^", "\\S\\"), ("&", "\\T\\"), ("~", "\\R\\")):
        out = out.str.replace_all(char, code, literal=True)
    # A line break would end the segment: HL7 writes it as the formatting escape \.br\.
    return out.str.replace_all(r"\r\n|\r|\n", "\\.br\\", literal=False)


def _segment(name: str, fields: dict[int, pl.Expr | str]) -> pl.Expr:
    """``name|f1|f2...`` up to the highest field given (absent fields empty)."""
    parts: list[pl.Expr] = [pl.lit(name)]
    for i in range(1, max(fields) + 1):
        value = fields.get(i, "")
        parts += [pl.lit("|"), value if isinstance(value, pl.Expr) else pl.lit(value)]
    return pl.concat_str(parts)


def _people(rng: np.random.Generator, n: int, patients_csv: Path | None) -> pl.DataFrame:
    """patient_id, nhs, family, given, dob (YYYYMMDD), sex, addr1..3, postcode, phone, practice, nsts."""
    if patients_csv is not None:
        # the extract's planted junk rows (bad bytes, stray fields, bad dates) are left out
        raw = pl.read_csv(patients_csv, infer_schema=False, truncate_ragged_lines=True, encoding="utf8-lossy")
        frame = raw.filter(pl.col("patient_id").str.contains(r"^P[0-9]{7}$")
                           & pl.col("birth_date").str.contains(r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$")
                           & ~pl.any_horizontal(pl.all().fill_null("").str.contains("\ufffd", literal=True))
                           ).unique("patient_id", keep="first", maintain_order=True)
        parts = pl.col("address").fill_null("").str.split(", ")
        return frame.select(
            "patient_id", pl.col("nhs_number").alias("nhs"), pl.col("family_name").alias("family"),
            pl.col("given_names").alias("given"), pl.col("birth_date").str.replace_all("-", "").alias("dob"),
            pl.col("sex").replace({"I": "O"}).alias("sex"),
            *[parts.list.get(i, null_on_oob=True).alias(f"addr{i + 1}") for i in range(3)],
            "postcode", "phone", pl.col("gp_practice").alias("practice"),
            pl.col("nhs_number_status").alias("nsts"),
        )
    days = rng.integers(-20_000, 18_000, size=n)
    return pl.DataFrame({
        "patient_id": [f"P{i:07d}" for i in range(1, n + 1)],
        "nhs": unique_nhs_numbers(rng, n).astype(str),
        "family": np.array(_SURNAMES)[rng.integers(0, len(_SURNAMES), n)],
        "given": np.array(_GIVEN)[rng.integers(0, len(_GIVEN), n)],
        "dob": days, "sex": np.array(["M", "F"])[rng.integers(0, 2, n)],
        "addr1": [f"{k} Mill Lane" for k in rng.integers(1, 200, n)], "addr2": [None] * n, "addr3": ["Leeds"] * n,
        "postcode": [f"LS{k} {k % 9}AB" for k in rng.integers(1, 30, n)],
        "phone": [f"0113 496 {k:04d}" for k in rng.integers(0, 10_000, n)],
        "practice": [f"B82{k:03d}" for k in rng.integers(1, 60, n)],
        "nsts": np.array(["01", "02", "03"])[rng.integers(0, 3, n)],
    }).with_columns(pl.col("dob").cast(pl.Date).dt.strftime("%Y%m%d"))


def _plan(rng: np.random.Generator, messages: int, people: int) -> pl.DataFrame:
    """One row per message: event, times, patient, referral and appointment numbers, planted kind."""
    names = list(EVENTS)
    shares = np.array([EVENTS[e][2] for e in names])
    event = np.array(names)[rng.choice(len(names), size=messages, p=shares / shares.sum())]
    is_siu = np.char.startswith(event.astype(str), "S")
    event[is_siu & (np.cumsum(event == "S12") == 0)] = "S12"  # nothing to update before the first booking
    sent = np.datetime64("2023-01-01T08:00:00") + np.cumsum(rng.integers(1, 60, size=messages)).astype("timedelta64[s]")
    referrals = max(1, int(people * 1.5))
    referral_patient = rng.integers(0, people, size=referrals + 1)
    is_new = event == "S12"
    booked = np.cumsum(is_new)
    existing = np.floor(rng.random(messages) * np.maximum(booked, 1)).astype(np.int64) + 1
    appointment = np.where(is_new | (booked == 0), np.maximum(booked, 1), existing)
    ref_referral = rng.integers(1, referrals + 1, size=messages)
    # An appointment is booked against a referral the feed has already sent (an I12 before
    # it), so the feed is referentially whole on its own; its updates keep that referral.
    is_i12 = event == "I12"
    issued = ref_referral[is_i12]
    seen = np.cumsum(is_i12)
    event[is_new & (seen == 0)] = "I12"  # nothing to book against yet: send a referral instead
    is_i12 = event == "I12"
    issued, seen = ref_referral[is_i12], np.cumsum(is_i12)
    is_new = event == "S12"
    booked = np.cumsum(is_new)
    is_siu = np.char.startswith(event.astype(str), "S")
    existing = np.floor(rng.random(messages) * np.maximum(booked, 1)).astype(np.int64) + 1
    appointment = np.where(is_new | (booked == 0), np.maximum(booked, 1), existing)
    pick = np.floor(rng.random(messages) * np.maximum(seen, 1)).astype(np.int64)
    chosen = issued[np.minimum(pick, max(issued.size - 1, 0))] if issued.size else ref_referral
    ref_of_appointment = np.zeros(booked[-1] + 2 if messages else 2, dtype=np.int64)
    ref_of_appointment[appointment[is_new]] = chosen[is_new]
    appt_referral = ref_of_appointment[appointment]
    referral = np.where(is_siu & (appt_referral > 0), appt_referral, ref_referral)
    patient = np.where(np.char.startswith(event.astype(str), "A"), rng.integers(0, people, size=messages),
                       referral_patient[referral])
    planted = np.full(messages, "", dtype=object)
    count = max(len(PLANTED_KINDS) if messages >= 100 else 0, round(PLANTED_RATE * messages))
    if count:
        at = rng.choice(np.arange(1, messages), size=min(count, messages - 1), replace=False)
        planted[at] = np.array(PLANTED_KINDS)[np.arange(at.size) % len(PLANTED_KINDS)]
    return pl.DataFrame({
        "row": np.arange(1, messages + 1), "event": event, "sent": sent.astype("datetime64[ms]"), "patient": patient,
        "prior": rng.integers(0, people, size=messages), "referral": referral, "appointment": appointment,
        "start": (sent + (rng.integers(2, 60, size=messages) * 86_400).astype("timedelta64[s]")
                  ).astype("datetime64[ms]"),
        "v251": is_siu & (rng.random(messages) < SIU_V251_RATE), "mllp": rng.random(messages) < MLLP_RATE,
        "planted": planted.astype(str), "variant": rng.integers(0, 2, size=messages),
        "priority": rng.choice(np.array(["R", "S", "3"]), size=messages, p=[0.8, 0.15, 0.05]),
        "status": rng.integers(0, len(_STATUS), size=messages), "site": rng.integers(0, len(_SITES), size=messages),
        "reason": rng.integers(0, len(_REASONS), size=messages), "update": rng.random(messages),
        "offset": rng.random(messages) < OFFSET_RATE, "by_patient": rng.random(messages) < PATIENT_CANCEL_RATE,
    })


def _render(plan: pl.DataFrame, people: pl.DataFrame) -> pl.DataFrame:
    """One ``text`` per message (segments CR-separated, framing applied)."""
    frame = plan.join(people.with_row_index("patient").with_columns(pl.col("patient").cast(pl.Int64)),
                      on="patient", how="left")
    frame = frame.join(people.select(pl.col("patient_id").alias("prior_id")).with_row_index("prior")
                       .with_columns(pl.col("prior").cast(pl.Int64)), on="prior", how="left")
    ev = pl.col("event")
    mtype = ev.replace_strict({e: t for e, (t, _, _) in EVENTS.items()})
    structure = ev.replace_strict({e: s for e, (_, s, _) in EVENTS.items()})
    ts = pl.col("sent").dt.strftime("%Y%m%d%H%M%S")
    version = pl.when(pl.col("v251")).then(pl.lit("2.5.1")).otherwise(pl.lit("2.4"))
    # The feed's own referrals and appointments (new since the extract): an H in the id keeps
    # them apart from the CSV extract's R…/C… ids, which belong to other patients.
    rid = pl.format("RH{}", pl.col("referral").cast(pl.String).str.zfill(7))
    cid = pl.format("CH{}", pl.col("appointment").cast(pl.String).str.zfill(7))
    nhs = _esc("nhs")
    ids = pl.when(nhs == "").then(pl.lit("")).otherwise(pl.format("{}^^^NHS^NH~", nhs))
    msh = _segment("MSH", {1: "^~\\&", 2: "PAS", 3: FACILITY, 4: "HANDOVER", 5: "RYY", 6: ts, 8: pl.format(
        "{}^{}^{}", mtype, ev, structure), 9: pl.format("MSG{}", pl.col("row").cast(pl.String).str.zfill(8)),
        10: "P", 11: version})
    pid = _segment("PID", {
        1: "1", 3: pl.format("{}{}^^^{}^MR", ids, _esc("patient_id"), pl.lit(FACILITY)),
        5: pl.format("{}^{}", _esc("family"), _esc("given")), 7: pl.col("dob").fill_null(""),
        8: pl.col("sex").fill_null("U"),
        11: pl.format("{}^{}^{}^^{}", _esc("addr1"), _esc("addr2"), _esc("addr3"), _esc("postcode")),
        13: _esc("phone"), 32: pl.format("NSTS{}", pl.col("nsts").fill_null("01")),
    })
    evn = pl.format("EVN|{}|{}", ev, ts)
    # An update that leaves PD1 and the phone out (they stand), or deletes the phone ("").
    is_update = ev.is_in(["A08", "A31"])
    partial = is_update & (pl.col("update") < PARTIAL_RATE)
    deleted = is_update & (pl.col("update") >= PARTIAL_RATE) & (pl.col("update") < PARTIAL_RATE + DELETE_RATE)
    phone = pl.when(partial).then(pl.lit("")).when(deleted).then(pl.lit('""')).otherwise(_esc("phone"))
    pid_adt = _segment("PID", {
        1: "1", 3: pl.format("{}{}^^^{}^MR", ids, _esc("patient_id"), pl.lit(FACILITY)),
        5: pl.format("{}^{}", _esc("family"), _esc("given")), 7: pl.col("dob").fill_null(""),
        8: pl.col("sex").fill_null("U"),
        11: pl.format("{}^{}^{}^^{}", _esc("addr1"), _esc("addr2"), _esc("addr3"), _esc("postcode")),
        13: phone, 32: pl.format("NSTS{}", pl.col("nsts").fill_null("01")),
    })
    pd1 = pl.when(partial).then(pl.lit(None, dtype=pl.String)).otherwise(pl.format("PD1|||Practice^^{}",
                                                                                   _esc("practice")))
    adt = pl.concat_str([msh, evn, pid_adt, pd1, pl.lit("PV1|1|N")], separator="\r", ignore_nulls=True)
    merge = pl.concat_str([msh, evn, pid, pl.format("MRG|{}^^^{}^MR", pl.col("prior_id"), pl.lit(FACILITY))],
                          separator="\r")
    received = (pl.col("sent") - pl.duration(days=3)).dt.strftime("%Y%m%d")
    rf1 = _segment("RF1", {
        1: pl.when(ev == "I14").then(pl.lit("E^Expired")).otherwise(pl.lit("A^Accepted")),
        2: pl.col("priority"), 3: "MSK^Musculoskeletal", 6: pl.format("{}^PAS", rid), 7: received,
        8: pl.when(ev == "I14").then(pl.col("sent").dt.strftime("%Y%m%d")).otherwise(pl.lit("")),
        10: "GP^GP referral", 11: pl.format("{}", (pl.col("referral") * 7919 % 10**12).cast(pl.String).str.zfill(12)),
    })
    ref = pl.concat_str([msh, rf1, pl.lit("PRD|RP|PATEL^ANIL^^^DR|||||G1234567^GMC"), pid], separator="\r")
    # a fifth of the times carry their UTC offset (the same local time: +0000 in winter, +0100 in summer)
    zone = pl.when(pl.col("offset")).then(
        pl.col("start").dt.replace_time_zone("Europe/London", ambiguous="earliest", non_existent="null")
        .dt.strftime("%z").fill_null("")).otherwise(pl.lit(""))
    start = pl.col("start").dt.strftime("%Y%m%d%H%M") + zone
    end = (pl.col("start") + pl.duration(minutes=30)).dt.strftime("%Y%m%d%H%M") + zone
    # An S15/S26 may leave SCH-25 out (drawn from ``update``, which only ADT updates use otherwise)
    fstatus = (pl.when(ev.is_in(["S15", "S26"]) & (pl.col("update") < OMITTED_STATUS_RATE)).then(pl.lit(""))
               .when(ev == "S12").then(pl.lit("Booked")).when(ev == "S15").then(pl.lit("Cancelled"))
               .when(ev == "S26").then(pl.lit("Noshow"))
               .otherwise(pl.col("status").replace_strict(dict(enumerate(_STATUS)), return_dtype=pl.String)))
    sch = _segment("SCH", {
        1: pl.format("B{}^PAS", cid.str.slice(1)), 2: pl.format("{}^PAS", cid),
        6: pl.when((ev == "S15") & pl.col("by_patient")).then(pl.lit("PAT^Patient request")).otherwise(pl.lit("")),
        7: pl.col("reason").replace_strict(dict(enumerate(_REASONS)), return_dtype=pl.String),
        9: "30", 10: "min", 11: pl.format("^^^{}^{}", start, end), 25: fstatus, 26: pl.format("{}^PAS", rid),
    })
    site = pl.col("site").replace_strict(dict(enumerate(_SITES)), return_dtype=pl.String)
    siu = pl.concat_str([msh, sch, pid, pl.lit("RGS|1"), pl.lit("AIG|1||PHYSIO^Physiotherapist"),
                         pl.format("AIL|1||OPD{}^^^{}^^^^{}", pl.col("site"), pl.lit(FACILITY), site)], separator="\r")
    body = (pl.when(mtype == "SIU").then(siu).when(mtype == "REF").then(ref).when(ev == "A40").then(merge)
            .otherwise(adt))
    return frame.select("row", "planted", "mllp", body.alias("text"), pid.alias("pid"))


def _plant(frame: pl.DataFrame) -> pl.DataFrame:
    kind, text = pl.col("planted"), pl.col("text")
    broken = (
        pl.when((kind == "hl7_malformed") & (pl.col("row") % 2 == 0))
        .then(text.str.replace("MSH|^~\\&|", "MSH|^~|", literal=True))
        .when(kind == "hl7_malformed").then(text.str.replace("\r", "\rnot a segment\r", literal=True))
        .when(kind == "hl7_unsupported").then(text.str.replace(r"\|P\|2\.[0-9.]+", "|P|2.6"))
        .when(kind == "hl7_structure").then(pl.concat_str([text, pl.col("pid")], separator="\r"))
        .when(kind == "hl7_datatype").then(text.str.replace(r"^(MSH(?:\|[^|\r]*){5}\|)[0-9]{8}", "${1}20230230"))
        .otherwise(text)
    )
    framed = (pl.when(pl.col("mllp")).then(pl.concat_str([pl.lit("\x0b"), broken, pl.lit("\r\x1c\r")]))
              .otherwise(pl.concat_str([broken, pl.lit("\r\n")])))
    return frame.with_columns(framed.alias("text"))


def _redeliveries(rng: np.random.Generator, plan: pl.DataFrame, copies: int) -> pl.DataFrame:
    """The file's order: ``row`` (the plan's message) per line, with ``copies`` messages sent
    again a few lines after themselves (within their chunk, never a planted one)."""
    rows = plan["row"].to_numpy()
    order = pl.DataFrame({"row": rows, "anchor": rows, "copy": np.zeros(rows.size, dtype=np.int64)})
    good = rows[(plan["planted"] == "").to_numpy()]
    if copies == 0 or good.size == 0:
        return order.select("row")
    src = np.sort(rng.choice(good, size=min(copies, good.size), replace=False))
    chunk_end = np.minimum(((src - 1) // CHUNK + 1) * CHUNK, rows.size)
    after = np.minimum(src + rng.integers(0, 20, size=src.size), chunk_end)
    again = pl.DataFrame({"row": src, "anchor": after, "copy": np.arange(1, src.size + 1)})
    return pl.concat([order, again]).sort("anchor", "copy").select("row")


def synthesise_hl7(out: Path, messages: int = 10_000, seed: int = 1, patients_csv: Path | None = None
                   ) -> dict[str, Any]:
    """Write ``out/feed.hl7`` and ``out/truth/hl7_quarantine.csv``; return a summary
    (messages, events, planted per reason, MLLP-framed count, re-delivered copies).
    Deterministic in its arguments. ``messages`` counts every message in the file, the
    re-delivered copies included."""
    out = Path(out)
    (out / "truth").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    people = _people(rng, max(10, messages // 8), patients_csv)
    if people.height == 0:
        raise ValueError(f"{patients_csv}: no usable patients")
    copies = round(REDELIVERY_RATE * messages) if messages >= 200 else 0
    plan = _plan(rng, messages - copies, people.height)
    order = _redeliveries(rng, plan, copies).with_row_index("line", offset=1)
    stamp = "20230101080000"
    mllp = 0
    with (out / FEED).open("wb") as fh:
        fh.write(f"FHS|^~\\&|PAS|{FACILITY}|HANDOVER|RYY|{stamp}\rBHS|^~\\&|PAS|{FACILITY}|HANDOVER|RYY|{stamp}\r"
                 .encode())
        for lo in range(0, plan.height, CHUNK):
            rendered = _plant(_render(plan.slice(lo, CHUNK), people))
            lines = order.filter(pl.col("row").is_between(lo + 1, lo + CHUNK)).join(
                rendered.select("row", "mllp", "text"), on="row", how="left", maintain_order="left")
            mllp += int(lines["mllp"].sum())
            fh.write(lines.select(pl.col("text").str.join("")).item().encode("utf-8"))
        fh.write(f"BTS|{order.height}\rFTS|1\r".encode())
    truth = plan.filter(pl.col("planted") != "").join(order, on="row").select(
        pl.lit(FEED).alias("source_file"), pl.col("line").cast(pl.Int64).alias("source_row"),
        pl.col("planted").alias("reason_code")).sort("source_row")
    truth.write_csv(out / "truth" / "hl7_quarantine.csv")
    return {
        "out": str(out), "messages": order.height, "seed": seed, "people": people.height,
        "events": dict(sorted(plan.group_by("event").len().iter_rows())),
        "planted": dict(sorted(truth.group_by("reason_code").len().iter_rows())),
        "planted_rate": PLANTED_RATE, "mllp_framed": mllp, "redelivered": order.height - plan.height,
    }
