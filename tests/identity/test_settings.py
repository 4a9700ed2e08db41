"""rules/identity.yaml: the shipped settings load; every problem of a bad file is listed at once."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from migrate.errors import ConfigError
from migrate.identity import IdentitySettings, load_identity_settings
from migrate.identity.settings import default_path
from migrate.yamltext import read_yaml

# Read as handover reads it (every scalar text), so dumping it back keeps 0.00005 as written
# rather than PyYAML's 5.0e-05 (which handover, rightly, does not take for a number).
SHIPPED = read_yaml(default_path().read_bytes())


def write(tmp_path: Path, doc: object) -> Path:
    path = tmp_path / "identity.yaml"
    path.write_text(yaml.safe_dump(doc), encoding="utf-8")
    return path


def test_shipped_settings(settings: IdentitySettings) -> None:
    assert settings.prefix_ranges == ((10, 311), (320, 399), (400, 499), (600, 799), (900, 999))
    assert "nsts01" in settings.verified_statuses and "01" in settings.verified_statuses
    assert settings.survivor_order == ("nhs_number_verified", "most_complete", "earliest_record")
    assert 0 < settings.review_threshold <= settings.probable_threshold < 1
    assert ("birth_date", "family_phonetic") in settings.blocking_rules
    assert any("bill" in group and "william" in group for group in settings.nicknames)
    assert {c.name for c in settings.comparisons} == {"family_name", "given_names", "birth_date", "sex", "postcode",
                                                      "phone", "address", "names_reversed"}
    for c in settings.comparisons:
        assert c.levels[-1].test == "else"
        assert abs(sum(lv.m for lv in c.levels) - 1) < 1e-3 and abs(sum(lv.u for lv in c.levels) - 1) < 1e-3
    assert {c.name for c in settings.comparisons if c.term_frequency} >= {"family_name", "given_names", "postcode"}


def test_none_means_the_shipped_file() -> None:
    assert load_identity_settings(None) == load_identity_settings(default_path())


def test_every_problem_listed_at_once_with_file_and_path(tmp_path: Path) -> None:
    doc = yaml.safe_load(yaml.safe_dump(SHIPPED))
    doc["nhs_number"]["valid_prefix_ranges"][0] = [10, 311]          # unquoted: YAML numbers
    doc["nhs_number"]["valid_prefix_ranges"][1] = ["399", "320"]     # reversed
    doc["survivorship"]["survivor"] = ["earliest_recrod"]            # typo
    doc["blocking"]["rules"].append(["birth_date", "postcode_area"])  # unknown part
    doc["comparisons"]["sex"]["levels"][0]["m"] = 0.5                 # m no longer adds up to 1
    doc["thresholds"]["review"] = 0.99                               # above probable
    doc["tresholds"] = {}                                            # unknown top-level key
    path = write(tmp_path, doc)
    with pytest.raises(ConfigError) as caught:
        load_identity_settings(path)
    err = caught.value
    assert err.exit_code == 2
    text = err.render()
    assert all(p.startswith(f"{path}: ") for p in err.problems), err.problems
    for where in ("nhs_number.valid_prefix_ranges[0]", "nhs_number.valid_prefix_ranges[1]", "survivorship.survivor",
                  "blocking.rules[", "comparisons.sex.levels: the m values must add up to 1", "thresholds.review",
                  "tresholds"):
        assert where in text, where
    assert "did you mean 'earliest_record'" in text and "did you mean 'thresholds'" in text
    assert len(err.problems) == 7


def test_missing_sections_are_problems(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        load_identity_settings(write(tmp_path, {"name": "identity"}))
    text = caught.value.render()
    for section in ("nhs_number", "survivorship", "blocking", "comparisons", "twins", "model", "thresholds"):
        assert f"{section}: missing section" in text


def test_unreadable_or_not_yaml(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot be read"):
        load_identity_settings(tmp_path / "absent.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("nhs_number: [unclosed", encoding="utf-8")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_identity_settings(bad)


def test_every_comparison_and_model_problem_listed_at_once(tmp_path: Path) -> None:
    doc = yaml.safe_load(yaml.safe_dump(SHIPPED))
    fam = doc["comparisons"]["family_name"]["levels"]
    fam[1] = {"test": "jaro_winkler", "m": 0.07, "u": 0.003}              # threshold missing
    fam.insert(2, {"test": "soundex", "m": 0.01, "u": 0.01})             # unknown test
    doc["comparisons"]["birth_date"]["term_frequency"] = True            # no exact level first? it has one
    doc["comparisons"]["phone"]["levels"].reverse()                      # else not last
    doc["comparisons"]["sex"]["term_frequency"] = "yes"                  # not a boolean
    doc["comparisons"]["shoe_size"] = {"levels": []}                     # unknown comparison
    doc["model"]["strength"]["m"] = 0                                    # must be above 0
    doc["model"]["counted_once"] = [["address", "postcode", "fax"]]      # unknown comparison
    doc["model"]["nhs_number_disagree"] = 3                              # must be 0 or negative
    path = write(tmp_path, doc)
    with pytest.raises(ConfigError) as caught:
        load_identity_settings(path)
    text = caught.value.render()
    for where in ("comparisons.family_name.levels[1].at_least", "comparisons.family_name.levels[2].test",
                  "comparisons.phone.levels: the last level", "comparisons.sex.term_frequency",
                  "comparisons.shoe_size", "model.strength.m", "model.counted_once[0]", "model.nhs_number_disagree"):
        assert where in text, where
    assert "comparisons.birth_date" not in text
