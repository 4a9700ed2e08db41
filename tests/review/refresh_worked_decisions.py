"""Refresh tests/cases/worked-example/decisions.csv after a change to what a flag's evidence
says (its evidence ids change with it): run the worked example, take each row's current
worklist columns and keep the reviewer's columns. Not a test; run from the repository root:

    .venv/bin/python tests/review/refresh_worked_decisions.py
"""

from __future__ import annotations

import csv
import io
import sys
import tempfile
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from migrate.pipeline import RunConfig, run_batch  # noqa: E402

CASE = ROOT / "tests" / "cases" / "worked-example"
REVIEWER = ("reviewer", "decision", "date", "note", "second_reviewer")


def _rows(data: bytes) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(data.decode("utf-8-sig"), newline="")))


def main() -> None:
    out = Path(tempfile.mkdtemp()) / "run"
    run_batch(RunConfig.load(CASE / "input", CASE / "mapping.yaml", date(2022, 10, 1), out))
    fresh = _rows((out / "reports" / "exceptions.csv").read_bytes())
    by_item = {(r["subject_key"], r["flag_code"]): r for r in fresh}
    rows = []
    for old in _rows((CASE / "decisions.csv").read_bytes()):
        row = dict(by_item.get((old["subject_key"], old["flag_code"]), old))  # a hand-added row stays as it is
        row.update({k: old.get(k, "") for k in REVIEWER})
        rows.append(row)
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(fresh[0]), lineterminator="\r\n", extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    (CASE / "decisions.csv").write_bytes(buffer.getvalue().encode("utf-8-sig"))
    print(f"{len(rows)} rows refreshed")


if __name__ == "__main__":
    main()
