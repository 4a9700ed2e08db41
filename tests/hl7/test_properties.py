"""Property: HL7 event semantics hold in every order (issue #11 item 8).

Hypothesis draws patient histories — registrations (A04/A28), field-level updates (A08/A31:
each field sent, left out or deleted with ""), merges (A40, chains included), referrals
and their updates (I12/I14), bookings and their modifications, cancellations and no-shows
(S12/S14/S15/S26; an S15 or S26 sends SCH-25 or leaves it out, when the event says what
happened), re-delivered messages and a few malformed ones — each message stamped with its
own MSH-7. The reference applies the history from one file in MSH-7 order; the
property is that any split of the messages across files, in any order within and across
them, gives the same canonical tables and the same FHIR, that no valid message is lost
(each ends migrated, merged or out of scope, only the malformed ones quarantined, and the
same message gets the same disposition), and that both invariants hold. Each appointment's
attendance is the one its last booking message in MSH-7 order gave, an S15 or S26 without
SCH-25 included.
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import polars as pl
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from migrate.ingest import ingest
from migrate.profile import load_profile
from tests.hl7.feed import NULL, adt, booking, merge, referral, run, write_feed

PROFILE = load_profile("hl7v2")
FILES = ("a.hl7", "b.hl7", "c.hl7")
NAMES = ("Abbott", "Baker", "Carter", "Dixon")
REASONS = ("ROUTINE", "FOLLOWUP", "CHECKUP", "WALKIN", "EMERGENCY")
PROPERTY = settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                            HealthCheck.data_too_large])


@dataclass
class History:
    """Messages in MSH-7 order, which of them are malformed, and each appointment's attendance
    after them all."""

    messages: list[str] = field(default_factory=list)
    malformed: set[int] = field(default_factory=set)
    attendance: dict[str, str] = field(default_factory=dict)
    clock: int = 0

    def stamp(self) -> tuple[str, str]:
        """A fresh control id and a later MSH-7."""
        self.clock += 1
        minutes = 9 * 60 + self.clock
        return f"c{self.clock:04d}", f"202210{1 + minutes // 1440:02d}{minutes % 1440 // 60:02d}{minutes % 60:02d}00"


def _maybe(draw: st.DrawFn, value: str) -> str | None:
    """A field in an update: sent, left out (keep) or deleted with ""."""
    return draw(st.sampled_from([value, None, NULL]))


@st.composite
def histories(draw: st.DrawFn) -> History:
    h = History()
    patients: list[str] = []
    survivor: dict[str, str] = {}  # prior -> survivor (direct)
    referrals: dict[str, str] = {}  # referral -> patient id it was sent under
    contacts: dict[str, str] = {}  # contact -> referral

    def root(p: str) -> str:
        while p in survivor:
            p = survivor[p]
        return p

    def register() -> None:
        p = f"P{len(patients) + 1}"
        patients.append(p)
        control, sent = h.stamp()
        h.messages.append(adt(draw(st.sampled_from(["A04", "A28"])), control, sent, p, nhs=None,
                              family=draw(st.sampled_from(NAMES)), given="Sam", dob=f"19{40 + len(patients)}-01-02",
                              sex=draw(st.sampled_from("MFU")), postcode="LS1 1AA",
                              practice=draw(st.sampled_from(["B82005", None])), phone="0113 496 0000"))

    for _ in range(draw(st.integers(1, 3))):
        register()
    for _ in range(draw(st.integers(4, 22))):
        actions = ["register", "update", "refer"]
        priors = [p for p in patients if p not in survivor]
        if len(patients) > 1 and priors:
            actions.append("merge")
        if referrals:
            actions += ["book", "modify_referral"]
        if contacts:
            actions += ["modify", "cancel", "noshow"]
        if h.messages:
            actions += ["again", "malformed"]
        action = draw(st.sampled_from(actions))
        control, sent = h.stamp()
        if action == "register":
            register()
        elif action == "update":
            p = draw(st.sampled_from(patients))
            h.messages.append(adt(draw(st.sampled_from(["A08", "A31"])), control, sent, p, nhs=None,
                                  family=_maybe(draw, draw(st.sampled_from(NAMES))), given=_maybe(draw, "Alex"),
                                  dob=draw(st.sampled_from(["1961-05-06", None])), sex=draw(st.sampled_from(["F", None])),
                                  postcode=_maybe(draw, "OX2 2BB"), practice=_maybe(draw, "B83010"),
                                  phone=_maybe(draw, "07700 900001")))
        elif action == "merge":
            prior = draw(st.sampled_from(priors))
            into = [p for p in patients if p != prior and root(p) != prior]
            if not into:
                continue
            target = draw(st.sampled_from(into))
            survivor[prior] = target
            h.messages.append(merge(control, sent, target, prior))
        elif action == "refer":
            r = f"R{len(referrals) + 1}"
            referrals[r] = draw(st.sampled_from(patients))
            h.messages.append(referral(control, sent, r, referrals[r], "2022-09-01", "physio",
                                       priority=draw(st.sampled_from("RS3"))))
        elif action == "modify_referral":
            r = draw(st.sampled_from(sorted(referrals)))
            h.messages.append(referral(control, sent, r, referrals[r], "2022-09-01", "physio",
                                       priority=draw(st.sampled_from("RS")), status=draw(st.sampled_from("AAE")),
                                       event="I14"))
        elif action == "book":
            c = f"C{len(contacts) + 1}"
            r = draw(st.sampled_from(sorted(referrals)))
            contacts[c] = r
            h.attendance[c] = "booked"
            # sent under the referral's patient, or under any id of the same person
            same = [p for p in patients if root(p) == root(referrals[r])]
            h.messages.append(booking("S12", control, sent, c, r, draw(st.sampled_from([*same, None])),
                                      f"2022-10-{draw(st.integers(3, 28)):02d} 09:00", "Booked",
                                      kind=draw(st.sampled_from(REASONS))))
        elif action in ("modify", "cancel", "noshow"):
            c = draw(st.sampled_from(sorted(contacts)))
            r = contacts[c]
            same = [p for p in patients if root(p) == root(referrals[r])]
            # SCH-25 sent or left out: an S15 or S26 says what happened either way
            event, status = {"modify": ("S14", draw(st.sampled_from(["Booked", None]))),
                             "cancel": ("S15", draw(st.sampled_from(["Cancelled", None]))),
                             "noshow": ("S26", draw(st.sampled_from(["Noshow", None])))}[action]
            reason = draw(st.sampled_from([None, "PAT"])) if action == "cancel" else None
            h.messages.append(booking(event, control, sent, c, draw(st.sampled_from([r, None])),
                                      draw(st.sampled_from([*same, None])),
                                      draw(st.sampled_from([None, "2022-11-02 10:30"])), status,
                                      kind=draw(st.sampled_from([None, *REASONS])), reason=reason))
            if action != "modify" or status is not None:
                h.attendance[c] = {"modify": "booked", "noshow": "did_not_attend",
                                   "cancel": "cancelled_by_patient" if reason else "cancelled_by_provider"}[action]
        elif action == "again":  # a re-delivery: the very same message once more, later in the feed
            index = draw(st.integers(0, len(h.messages) - 1))
            h.messages.append(h.messages[index])
            if index in h.malformed:
                h.malformed.add(len(h.messages) - 1)
        else:  # malformed: a version the reader does not support
            h.malformed.add(len(h.messages))
            h.messages.append(adt("A08", control, sent, "P1", family="X").replace("|P|2.4", "|P|2.6"))
    return h


@st.composite
def layouts(draw: st.DrawFn, n: int) -> list[tuple[str, list[int]]]:
    """The messages 0..n-1 split across up to three files, each in its own order."""
    order = draw(st.permutations(range(n)))
    where = draw(st.lists(st.integers(0, len(FILES) - 1), min_size=n, max_size=n))
    return [(name, [i for i in order if where[i] == k]) for k, name in enumerate(FILES)
            if any(where[i] == k for i in order)]


def _write(inp: Path, h: History, layout: list[tuple[str, list[int]]]) -> dict[tuple[str, int], int]:
    """Write the files; (file, message) -> index in the history."""
    at = {}
    for name, indexes in layout:
        write_feed(inp / name, [h.messages[i] for i in indexes])
        at.update({(name, row): i for row, i in enumerate(indexes, start=1)})
    return at


def _tables(tables: dict[str, pl.DataFrame]) -> dict[str, list[tuple[object, ...]]]:
    """Canonical rows without where they came from, in a stable order."""
    out = {}
    for name in ("patients", "referrals", "contacts"):
        frame = tables[name].drop("source_file", "source_row")
        out[name] = sorted(frame.select(pl.all().cast(pl.String)).rows(), key=str)
    out["attendance"] = sorted(tables["contacts"].select("contact_key", pl.col("attendance").cast(pl.String)).rows())
    return out


def _ingested(inp: Path, work: Path) -> tuple[dict[str, list[tuple[object, ...]]], dict[tuple[str, int], str]]:
    result = ingest(inp, PROFILE, work)
    tables = _tables({t: f.collect() for t, f in result.tables.items()})
    quarantined = {(f, r): c for f, r, c in result.quarantine.select("source_file", "source_row", "reason_code")
                   .iter_rows()}
    return tables, quarantined


def _by_message(per_row: dict[tuple[str, int], str], at: dict[tuple[str, int], int], h: History
                ) -> dict[str, list[str]]:
    """Outcome per message text (a re-delivered message's copies are one text)."""
    out: dict[str, list[str]] = {}
    for where, outcome in per_row.items():
        out.setdefault(h.messages[at[where]], []).append(outcome)
    return {k: sorted(v) for k, v in out.items()}


def _feeds(data: st.DataObject, root: Path) -> tuple[History, dict[tuple[str, int], int], dict[tuple[str, int], int]]:
    """A history written twice: ``root/ref`` one file in MSH-7 order, ``root/mix`` drawn
    across files; with (file, message) -> history index for each."""
    h = data.draw(histories())
    n = len(h.messages)
    ref_at = _write(root / "ref", h, [("feed.hl7", list(range(n)))])
    return h, ref_at, _write(root / "mix", h, data.draw(layouts(n)))


@PROPERTY
@given(data=st.data())
def test_any_interleaving_gives_the_same_canonical_tables(data: st.DataObject) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        h, ref_at, at = _feeds(data, root)
        want, ref_q = _ingested(root / "ref", root / "w1")
        got, q = _ingested(root / "mix", root / "w2")
    assert got == want
    assert dict(want["attendance"]) == h.attendance  # type: ignore[arg-type]
    # no valid message is lost: only the malformed ones are quarantined, in both
    assert {ref_at[k] for k in ref_q} == h.malformed
    assert {at[k] for k in q} == h.malformed
    assert set(q.values()) <= {"hl7_unsupported"}


def _fhir(run_dir: Path) -> dict[str, list[str]]:
    """Every resource but the Provenance (which names the input files)."""
    out = {}
    for path in sorted((run_dir / "fhir" / "ndjson").glob("*.ndjson")):
        if path.stem != "Provenance":
            out[path.stem] = sorted(path.read_text().splitlines())
    return out


def _dispositions(run_dir: Path) -> dict[tuple[str, int], str]:
    lineage = pl.read_parquet(run_dir / "lineage.parquet").select(
        "source_file", "source_row", pl.col("disposition").cast(pl.String)).unique()
    return {(f, r): d for f, r, d in lineage.iter_rows()}


@settings(PROPERTY, max_examples=4)
@given(data=st.data())
def test_any_interleaving_gives_the_same_fhir_and_both_invariants_hold(data: st.DataObject) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        h, ref_at, at = _feeds(data, root)
        ref = run(root / "ref", root / "run1")  # asserts both invariants and FHIR validity
        mix = run(root / "mix", root / "run2")
        assert _fhir(mix) == _fhir(ref)
        disposition = _dispositions(mix)
        assert _by_message(disposition, at, h) == _by_message(_dispositions(ref), ref_at, h)
        assert {at[k] for k, d in disposition.items() if d == "quarantined"} == h.malformed
        report = json.loads((mix / "reports" / "reconciliation.json").read_text())
        assert report["invariants"]["holds"]
