"""Every materialisation in ``migrate/`` carries a ``# memory:`` note (issue #18's "done when").

A materialisation is a ``.collect(`` of a plan or a ``pl.read_parquet(`` of a file: the two
ways a frame becomes whole in memory. The note — on the line itself or within the
``WINDOW`` lines above it — says what is held and why it is bounded (one batch, one bucket, a
count, a small vocabulary, one patient...) or why it must be whole. A new collect without
one fails here, naming its file and line, so a whole-table collect cannot come in silently.

Not counted: ``.to_list()`` / ``.rows()`` / ``iter_rows()`` of a frame already in memory
(the collect that made the frame is the one noted), ``collect_schema()`` (no rows) and
``collect_batches(`` (a batch at a time by construction).
"""

from __future__ import annotations

import re
from pathlib import Path

MIGRATE = Path(__file__).resolve().parent.parent / "migrate"
WINDOW = 6  # lines above a materialisation where its note may stand
MATERIALISES = re.compile(r"\.collect\(|\bpl\.read_parquet\(")
NOTE = "memory:"

# Not on any run's path, so not held to the convention:
# - migrate/synth: the synthetic extract generator (test and benchmark data, not the ETL);
# - migrate/draft: the draft-mapping helper, run by hand on a sample of a new source.
EXCLUDED_DIRS = ("synth", "draft")


def _code(line: str) -> str:
    """``line`` without its comment (a ``#`` inside a string is rare here and only hides a hit
    after it on the same line, never invents one)."""
    return line.split("#", 1)[0]


def unnoted(root: Path = MIGRATE) -> list[str]:
    """``file:line: code`` of every materialisation under ``root`` without a note."""
    found = []
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root).as_posix()
        if rel.split("/", 1)[0] in EXCLUDED_DIRS:
            continue
        lines = path.read_text(encoding="utf-8").splitlines()
        for i, line in enumerate(lines):
            if MATERIALISES.search(_code(line)) and not any(NOTE in seen for seen in lines[max(0, i - WINDOW):i + 1]):
                found.append(f"migrate/{rel}:{i + 1}: {line.strip()}")
    return found


def test_every_materialisation_has_a_memory_note() -> None:
    missing = unnoted()
    assert not missing, (
        f"{len(missing)} collect/read_parquet without a '# memory:' note within {WINDOW} lines above "
        "(say what is held and why it is bounded or must be whole):\n" + "\n".join(missing))


def test_the_check_finds_an_unnoted_collect(tmp_path: Path) -> None:
    (tmp_path / "stage.py").write_text(
        "import polars as pl\n\n"
        "def whole(frame):\n"
        "    return frame.collect()\n\n"
        "def noted(frame):\n"
        "    # memory: one batch\n"
        "    return frame.collect()\n\n"
        "def inline(path):\n"
        "    return pl.read_parquet(path)  # memory: one bucket\n\n"
        "def schema(frame):\n"
        "    return frame.collect_schema()\n\n"
        "def far(frame):\n"
        "    # memory: too far above\n" + "    x = 1\n" * WINDOW +
        "    return pl.read_parquet(frame)\n", encoding="utf-8")
    (tmp_path / "synth").mkdir()
    (tmp_path / "synth" / "gen.py").write_text("def f(frame):\n    return frame.collect()\n", encoding="utf-8")
    found = unnoted(tmp_path)
    assert [f.split(": ", 1)[0] for f in found] == ["migrate/stage.py:4", f"migrate/stage.py:{18 + WINDOW}"]
