"""Synonyms are data: a site's file changes what the draft maps; a broken file is rejected."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

import cli
from migrate.draft import draft_profile, load_catalogue
from migrate.errors import ConfigError
from migrate.resources import mappings_dir
from migrate.yamltext import read_yaml

PATIENTS = "Client Number,Born,Sex\n" + "".join(f"C{i},{i % 28 + 1:02d}/0{i % 9 + 1}/1950,{'MF'[i % 2]}\n"
                                                 for i in range(40))


def _extract(tmp_path: Path) -> Path:
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "people.csv").write_text(PATIENTS, encoding="utf-8")
    return tmp_path / "in"


def test_a_site_synonym_maps_a_column_the_shipped_file_does_not_name(tmp_path: Path) -> None:
    shipped = draft_profile(_extract(tmp_path))
    assert "birth_date: {" not in shipped.text and "CHECK: map birth_date" in shipped.text
    text = (mappings_dir() / "draft" / "synonyms.yaml").read_text(encoding="utf-8")
    site = tmp_path / "site.yaml"
    site.write_text(text.replace("birth_date: {names: [birth date,", "birth_date: {names: [born, birth date,"),
                    encoding="utf-8")
    drafted = read_yaml(draft_profile(tmp_path / "in", load_catalogue(site)).text)
    assert drafted["tables"]["patients"]["fields"]["birth_date"] == {"column": "Born", "required": True}
    assert drafted["defaults"]["date_formats"] == ["%d/%m/%Y"]


@pytest.mark.parametrize(("old", "new", "problem"), [
    ("  patients:\n    source_patient_id:", "  patients:\n    date_of_death: {names: [dod]}\n    source_patient_id:",
     "tables.patients.date_of_death: not a field of patients"),
    ("    male: [M, Male, Man, \"1\"]", "    boy: [M]", "values.sex.boy: not a sex value"),
    ("time_names: [time,", "time_names: [12:30, time,", None),
    ("  \"true\": [Y, Yes, \"True\", T, \"1\"]", "  \"true\": [Y, Yes, True, T, \"1\"]", "booleans.true: expected a list"),
])
def test_a_broken_synonyms_file_is_rejected_with_every_problem(tmp_path: Path, old: str, new: str,
                                                                problem: str | None) -> None:
    text = (mappings_dir() / "draft" / "synonyms.yaml").read_text(encoding="utf-8")
    assert old in text
    path = tmp_path / "synonyms.yaml"
    path.write_text(text.replace(old, new), encoding="utf-8")
    if problem is None:  # 12:30 stays the text "12:30" (the one YAML loader keeps scalars as written)
        assert "12:30" in load_catalogue(path).time_names
        return
    with pytest.raises(ConfigError) as raised:
        load_catalogue(path)
    assert any(p.startswith(problem) for p in raised.value.problems), raised.value.problems


@pytest.mark.parametrize(("args", "code", "message"), [
    (["--input", "{tmp}/absent"], 3, "input folder not found"),
    (["--input", "{tmp}/empty"], 3, "no extract files in"),
    (["--input", "{tmp}/in", "--synonyms", "{tmp}/absent.yaml"], 2, "synonyms file"),
])
def test_the_draft_command_exits_with_the_class_of_its_problem(tmp_path: Path, args: list[str], code: int,
                                                                message: str) -> None:
    _extract(tmp_path)
    (tmp_path / "empty").mkdir()
    result = CliRunner().invoke(cli.main, ["profile", "draft", *(a.format(tmp=tmp_path) for a in args)])
    assert result.exit_code == code and message in result.stderr and result.stdout == ""
