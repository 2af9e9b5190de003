"""models/load.py: YAML text to models, every problem located by line and key path."""

from __future__ import annotations

from pathlib import Path
from textwrap import dedent

import pytest

from echodataflow.exceptions import ConfigError
from echodataflow.models.load import (
    check_logging_refs,
    load_deployment,
    load_logging,
    parse_deployment,
)

GOOD = dedent(
    """\
    services:
    - name: svc
      logging: {handler: quiet}
      stages:
      - name: Sv_flow
        tasks:
        - name: edf_open_raw
          task_params:
            sonar_model: EK60
        - name: edf_compute_Sv
        source:
          path: raw/*.raw
        destination:
          path: out
    """
)


def _problems(text: str) -> list[tuple[int | None, str, str]]:
    with pytest.raises(ConfigError) as caught:
        parse_deployment(text, "d.yaml")
    assert all(p.file == "d.yaml" for p in caught.value.problems)
    return [(p.line, p.key_path, p.message) for p in caught.value.problems]


def test_a_valid_file_loads_into_models():
    deployment = parse_deployment(GOOD)
    stage = deployment.services[0].stages[0]
    assert stage.tasks[0].task_params == {"sonar_model": "EK60"}
    assert stage.source.path == "raw/*.raw"


def test_an_unknown_nested_key_is_located_at_its_own_line():
    text = GOOD.replace("      path: out\n", "      path: out\n      paht: x\n")
    ((line, key, message),) = _problems(text)
    assert line == 15
    assert key == "services[0].stages[0].destination.paht"
    assert "unknown key" in message


def test_a_wrong_value_is_located_at_its_key():
    ((line, key, message),) = _problems(
        GOOD.replace("sonar_model: EK60", "sonar_model: EK61")
    )
    assert (line, key) == (9, "services[0].stages[0].tasks[0].task_params.sonar_model")
    assert "'EK61'" in message
    assert "EK60" in message


def test_a_missing_key_is_located_at_its_parent():
    text = GOOD.replace("    destination:\n      path: out\n", "")
    ((line, key, message),) = _problems(text)
    assert key == "services[0].stages[0].destination"
    assert line == 5
    assert message == "required key is missing"


def test_several_problems_are_all_reported_in_one_error():
    text = GOOD.replace("name: svc", "name: 'bad name'").replace("raw/*.raw", "''")
    keys = [key for _, key, _ in _problems(text)]
    assert keys == ["services[0].name", "services[0].stages[0].source.path"]


def test_a_step_parameter_typo_names_the_parameter_and_the_accepted_ones():
    text = GOOD.replace(
        "sonar_model: EK60", "sonar_model: EK60\n        sonar_modle: EK60"
    )
    ((line, key, message),) = _problems(text)
    assert (line, key) == (10, "services[0].stages[0].tasks[0].task_params.sonar_modle")
    assert "is not a parameter of echopype" in message
    assert "sonar_model" in message


def test_invalid_yaml_names_the_line_of_the_syntax_error():
    ((line, key, message),) = _problems("services:\n- name: [unclosed\n")
    assert line is not None
    assert line >= 2
    assert key == ""
    assert message.startswith("not valid YAML")


def test_a_duplicate_key_is_an_error_at_its_second_occurrence():
    text = GOOD.replace("    destination:\n", "    destination:\n      path: a\n")
    ((line, _, message),) = _problems(text)
    assert line == 15
    assert "duplicate key 'path'" in message


@pytest.mark.parametrize(("text", "kind"), [("", "empty"), ("- a\n- b\n", "list")])
def test_the_top_level_must_be_a_mapping(text, kind):
    assert _problems(text) == [
        (1, "", f"expected a mapping of keys at the top, got {kind}")
    ]


def test_an_unreadable_file_is_a_config_error_naming_it(tmp_path: Path):
    missing = tmp_path / "nope.yaml"
    with pytest.raises(ConfigError, match=r"nope\.yaml: cannot read"):
        load_deployment(missing)


def test_load_deployment_reports_the_files_path(tmp_path: Path):
    path = tmp_path / "d.yaml"
    path.write_text(GOOD.replace("EK60", "EK99"), encoding="utf-8")
    with pytest.raises(ConfigError) as caught:
        load_deployment(path)
    assert str(caught.value).startswith(f"{path}:9: services[0]")


LOGGING = dedent(
    """\
    default:
      version: 1
      handlers:
        console: {class: logging.StreamHandler}
      root: {level: INFO, handlers: [console]}
    quiet:
      version: 1
      root: {level: WARNING}
    """
)


def test_a_logging_file_loads_and_services_find_their_entry(tmp_path: Path):
    path = tmp_path / "logging.yaml"
    path.write_text(LOGGING, encoding="utf-8")
    config = load_logging(path)
    assert check_logging_refs(parse_deployment(GOOD), config, "d.yaml") == []


def test_a_service_naming_an_undefined_logging_entry_is_reported(tmp_path: Path):
    path = tmp_path / "logging.yaml"
    path.write_text(LOGGING.replace("quiet:", "silent:"), encoding="utf-8")
    (problem,) = check_logging_refs(
        parse_deployment(GOOD), load_logging(path), "d.yaml"
    )
    assert problem.key_path == "services[0].logging.handler"
    assert "'quiet' is not defined" in problem.message


def test_logging_file_problems_are_located(tmp_path: Path):
    path = tmp_path / "logging.yaml"
    path.write_text(LOGGING.replace("  version: 1\n  root: {level", "  root: {level"))
    with pytest.raises(ConfigError) as caught:
        load_logging(path)
    (problem,) = caught.value.problems
    assert (problem.line, problem.key_path) == (6, "quiet.version")
