"""The hand-written corpus (tests/cases/hl7): every message's verdict, from both judges.

``expected.csv`` lists file, message index, control id and verdict (valid or a reason code)
for every message of every ``.hl7`` file. The bulk reader (``read_hl7``) and the slow
per-message judge (``validate_full``, hl7apy parsing each message whole) must both give
those verdicts, and must agree with each other on the reason code and the reason text of
every message; and the polars extraction must read the same values as the per-message
``extract``.
"""

from __future__ import annotations

import csv
import re
from datetime import datetime
from pathlib import Path

import polars as pl
import pytest

from migrate.sources.hl7 import decode_bytes, read_hl7
from migrate.sources.hl7_paths import extract, parse_path
from migrate.sources.hl7_validate import Msh, parse_msh, split_messages, validate_full

CORPUS = Path(__file__).parents[1] / "cases" / "hl7"
EXPECTED = list(csv.DictReader((CORPUS / "expected.csv").open(encoding="utf-8")))
FILES = sorted(p.name for p in CORPUS.glob("*.hl7"))
# A broad set of paths: plain fields, components, subcomponents, selectors, lists,
# occurrences, MSH numbering.
PATHS = [
    "MSH-1", "MSH-2", "MSH-3", "MSH-4.1", "MSH-7", "MSH-9", "MSH-9.1", "MSH-9.2", "MSH-9.3", "MSH-10", "MSH-12",
    "EVN-1", "EVN-2", "PID-3", "PID-3[type=NH].1", "PID-3[type=MR].1", "PID-3[authority=NHS].1",
    "PID-3[authority=RXX]", "PID-3[5=MR].4", "PID-3[*]", "PID-3[*].1", "PID-5", "PID-5.1", "PID-5.2", "PID-5.5",
    "PID-7", "PID-8", "PID-11.1", "PID-11.2", "PID-11.3", "PID-11.5", "PID-13", "PID-13.1", "PID-25", "PID-29",
    "PID-32", "PD1-3", "PD1-3.1", "PD1-3.3", "PD1-3.10", "PD1-4.2", "MRG-1[type=MR].1", "RF1-1.1", "RF1-2.1",
    "RF1-3.1", "RF1-6.1", "RF1-7", "RF1-8", "RF1-10.1", "RF1-10.2", "RF1-11.1", "PRD-7.1", "NTE-3", "SCH-2.1",
    "SCH-7.1", "SCH-7.2", "SCH-11.4", "SCH-11.5", "SCH-25.1", "SCH-26.1", "RGS-1", "AIL-3.1", "AIL[2]-3.1",
    "AIL[2]-3.9", "AIL[3]-3.1", "AIG-3.1", "AIG-3.2", "AIP-3.1", "AIP-3.2", "AIP-4.1", "AIP-6", "ZU1-2", "PID-3.4.1",
]


def _expected(file: str) -> list[dict[str, str]]:
    return [r for r in EXPECTED if r["file"] == file]


def _messages(file: str) -> list[list[str]]:
    return split_messages(decode_bytes((CORPUS / file).read_bytes()))


def test_expected_lists_every_message_of_every_file() -> None:
    assert FILES and sorted({r["file"] for r in EXPECTED}) == FILES
    for file in FILES:
        rows = _expected(file)
        assert [int(r["message"]) for r in rows] == list(range(1, len(_messages(file)) + 1)), file


def test_corpus_covers_every_event_version_and_reason() -> None:
    mshs = [parse_msh(m[0]) for f in FILES for m in _messages(f)]
    usable = [m for m in mshs if isinstance(m, Msh)]
    events = {(m.message_type, m.event) for m in usable}
    for event in ("A04", "A08", "A28", "A31", "A40"):
        assert ("ADT", event) in events
    assert {("REF", "I12"), ("REF", "I14"), ("SIU", "S12"), ("SIU", "S14"), ("SIU", "S15"), ("SIU", "S26")} <= events
    assert {"2.3", "2.4", "2.5.1"} <= {m.version for m in usable}
    verdicts = {r["verdict"] for r in EXPECTED}
    assert verdicts == {"valid", "hl7_malformed", "hl7_unsupported", "hl7_structure", "hl7_datatype"}


@pytest.mark.parametrize("file", FILES)
def test_reader_gives_the_expected_verdicts(file: str, tmp_path: Path) -> None:
    result = read_hl7(CORPUS / file, file, ["PID-3[type=NH].1"], tmp_path)
    messages = result.messages.collect()
    rows = _expected(file)
    assert result.rows_read == len(rows) == messages.height + result.rejected.height
    valid = [(int(r["message"]), r["control_id"] or None) for r in rows if r["verdict"] == "valid"]
    assert messages.select("source_row", "control_id").rows() == valid
    bad = [(int(r["message"]), r["verdict"]) for r in rows if r["verdict"] != "valid"]
    assert result.rejected.select("source_row", "reason_code").rows() == bad
    assert set(messages["source_file"]) <= {file} and set(result.rejected["source_file"]) <= {file}


@pytest.mark.parametrize("file", FILES)
def test_validate_full_gives_the_expected_verdicts(file: str) -> None:
    got = [validate_full("\r".join(m)) for m in _messages(file)]
    assert [v[0] if v else "valid" for v in got] == [r["verdict"] for r in _expected(file)]


@pytest.mark.parametrize("file", FILES)
def test_fast_path_and_validate_full_agree_on_code_and_reason(file: str, tmp_path: Path) -> None:
    """The proof that judging each distinct structure once (and datatypes in polars) is the
    same as hl7apy parsing every message: same verdict, code and reason, message by message."""
    result = read_hl7(CORPUS / file, file, [], tmp_path)
    fast = {row: (code, re.sub(r"^[^:]*: ", "", message))
            for row, code, message in result.rejected.select("source_row", "reason_code", "message").iter_rows()}
    for index, lines in enumerate(_messages(file), start=1):
        assert fast.get(index) == validate_full("\r".join(lines)), f"{file} message {index}"


@pytest.mark.parametrize("file", FILES)
def test_rejection_messages_name_file_index_and_control_id_never_patient_data(file: str, tmp_path: Path) -> None:
    result = read_hl7(CORPUS / file, file, [], tmp_path)
    control = {int(r["message"]): r["control_id"] for r in _expected(file)}
    for row, message, raw in result.rejected.select("source_row", "message", "raw").iter_rows():
        where = f"control id {control[row]}" if control[row] else "no control id"
        assert message.startswith(f"{file} message {row} ({where}): ")
        pid = next((line for line in raw.split("\r") if line.startswith("PID")), "")
        fields = re.split(r"[|#]", pid)
        secrets = [fields[i] for i in (5, 7) if len(fields) > i] + re.findall(r"9\d{9}", pid)
        for secret in secrets:
            for part in re.split(r"[\^*]", secret):
                if len(part) > 2:
                    assert part not in message, f"{file} message {row} quotes patient data"


@pytest.mark.parametrize("file", FILES)
def test_polars_values_equal_the_per_message_extract(file: str, tmp_path: Path) -> None:
    result = read_hl7(CORPUS / file, file, PATHS, tmp_path)
    frame = result.messages.collect()
    messages = _messages(file)
    parsed = [parse_path(p) for p in PATHS]
    for row in frame.iter_rows(named=True):
        lines = messages[row["source_row"] - 1]
        msh = parse_msh(lines[0])
        assert isinstance(msh, Msh)
        segments = [line.split(msh.encoding.field) for line in lines]
        want = {p.text: extract(segments, p, msh.encoding) for p in parsed}
        assert {p: row[p] for p in PATHS} == want, f"{file} message {row['source_row']}"
        assert (row["message_type"], row["event"], row["version"]) == (msh.message_type, msh.event, msh.version)


@pytest.mark.parametrize("file", FILES)
def test_chunk_size_and_workers_do_not_change_the_result(file: str, tmp_path: Path) -> None:
    whole = read_hl7(CORPUS / file, file, PATHS, tmp_path / "a")
    tiny = read_hl7(CORPUS / file, file, PATHS, tmp_path / "b", chunk_bytes=64, workers=2)
    serial = read_hl7(CORPUS / file, file, PATHS, tmp_path / "c", chunk_bytes=300, workers=1)
    base = whole.messages.collect()
    for other in (tiny, serial):
        assert other.rows_read == whole.rows_read
        assert other.messages.collect().equals(base)
        assert other.rejected.equals(whole.rejected)


def test_schema_of_messages(tmp_path: Path) -> None:
    result = read_hl7(CORPUS / "adt_v24.hl7", "adt_v24.hl7", ["PID-5.1", "PID-3[type=NH].1"], tmp_path)
    assert result.messages.collect_schema() == pl.Schema({
        "source_file": pl.String, "source_row": pl.Int64, "control_id": pl.String, "message_type": pl.String,
        "event": pl.String, "version": pl.String, "sent_at": pl.Datetime("us"), "sending_app": pl.String,
        "sending_facility": pl.String, "content_hash": pl.UInt64, "PID-5.1": pl.String,
        "PID-3[type=NH].1": pl.String})
    first = result.messages.collect().row(0, named=True)
    assert (first["sending_app"], first["sending_facility"]) == ("PAS", "RXX")
    assert result.rejected.schema == pl.Schema({"source_file": pl.String, "source_row": pl.Int64,
                                                "reason_code": pl.String, "message": pl.String, "raw": pl.String})


def _row(tmp_path: Path, file: str, control_id: str, paths: list[str]) -> dict[str, object]:
    frame = read_hl7(CORPUS / file, file, paths, tmp_path).messages.collect()
    return frame.filter(pl.col("control_id") == control_id).row(0, named=True)


def test_corpus_values(tmp_path: Path) -> None:
    paths = ["PID-3[type=NH].1", "PID-3[type=MR].1", "PID-3[*].1", "PD1-3.3", "PD1-3.10", "PID-32", "PID-5.1",
             "PID-5.2", "PID-11.1", "PID-13.1", "PID-8", "AIL-3.1", "AIL[2]-3.1", "AIP-3.2", "NTE-3", "SCH-11.4"]
    one = _row(tmp_path / "1", "adt_v24.hl7", "ADT0001", paths)
    assert (one["PID-3[type=NH].1"], one["PID-3[type=MR].1"], one["PID-3[*].1"]) == ("9434765919", "12345",
                                                                                    "9434765919;12345")
    assert (one["PD1-3.3"], one["PID-32"], one["event"], one["version"]) == ("B82005", "NSTS01", "A04", "2.4")
    assert one["sent_at"] == datetime(2023, 1, 5, 9, 30)
    two = _row(tmp_path / "2", "adt_v24.hl7", "ADT0002", paths)
    assert (two["PID-5.1"], two["PID-5.2"], two["PID-11.1"]) == ("O'NEILL&BROWN", "ANNE~MARIE", "Unit 4^5 Mill Lane")
    # "" (the explicit null: delete) stays "", empty (not sent: keep) is null
    assert (two["PID-13.1"], two["PID-8"], two["PID-3[type=MR].1"]) == ('""', None, "P0000002")
    four = _row(tmp_path / "4", "adt_v24.hl7", "ADT0004", paths)
    assert (four["PID-11.1"], four["PD1-3.3"], four["PID-13.1"]) == ('""', '""', '""')  # a field "" deletes its parts
    s14 = _row(tmp_path / "5", "siu_v251_cr.hl7", "SIU0002", paths)
    assert (s14["AIL-3.1"], s14["AIL[2]-3.1"], s14["SCH-11.4"]) == ("OPD1", "OPD2", "202302101030")
    assert _row(tmp_path / "6", "siu_v251_cr.hl7", "SIU0004", paths)["AIP-3.2"] == "PATEL"
    assert _row(tmp_path / "7", "ref_v24_crlf.hl7", "REF0006", paths)["NTE-3"] == "Pain \\ stiffness"
    assert _row(tmp_path / "8", "mllp_batch_v23.hl7", "B0005", paths)["PD1-3.10"] == "B86001"
    assert _row(tmp_path / "9", "odd_bytes_and_delimiters.hl7", "X0001", paths)["PID-5.2"] == "RENÉE"  # cp1252
    other = _row(tmp_path / "10", "odd_bytes_and_delimiters.hl7", "X0002", paths)  # delimiters #*~\&
    assert (other["PID-5.2"], other["PID-3[type=NH].1"]) == ("AMY*LOU", "9990013705")
