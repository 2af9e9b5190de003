"""`echodataflow validate` on malformed files: exit 2, one located line per problem.

Every case is a whole deployment file. A ``# <-`` comment marks the line each
expected problem must name; with one marked line, every expected key is on it.
The cases run through ``echodataflow.cli.main`` (the console script's entry point)
in this process, a few through ``python -m echodataflow.cli`` in a subprocess.
"""

from __future__ import annotations

import re
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from echodataflow.cli import main

LINE = re.compile(
    r"^(?P<file>[^:]+):(?P<line>\d+): (?:(?P<key>[\w.\[\]]+): )?(?P<msg>.+)$"
)
SECRET = "abc123-not-for-logs"


@dataclass(frozen=True)
class Case:
    id: str
    deployment: str
    keys: list[str]
    message: str
    logging: str | None = None
    logging_keys: list[str] = field(default_factory=list)


def _services(body: str) -> str:
    """A valid file around ``body`` (the stage's tasks and what follows them)."""
    return "services:\n- name: svc\n  stages:\n  - tasks:\n" + body


GOOD_TASKS = """\
    - {name: edf_open_raw, task_params: {sonar_model: EK60}}
    - {name: edf_compute_Sv}
"""
SINK = """\
    source: {path: raw/*.raw}
    destination: {path: out}
"""

CASES = [
    Case(
        "unknown top-level key",
        _services(GOOD_TASKS + SINK) + "base_pth: /data  # <-\n",
        ["base_pth"],
        "unknown key",
    ),
    Case(
        "unknown service key",
        "services:\n- name: svc\n  schedul: {interval_mins: 10}  # <-\n  stages:\n"
        "  - tasks:\n" + GOOD_TASKS + SINK,
        ["services[0].schedul"],
        "unknown key",
    ),
    Case(
        "unknown cluster key, four levels down",
        "services:\n- name: svc\n  infrastructure:\n"
        "    cluster: {type: local, worker: 2}  # <-\n  stages:\n  - tasks:\n"
        + GOOD_TASKS
        + SINK,
        ["services[0].infrastructure.cluster.worker"],
        "unknown key",
    ),
    Case(
        "unknown task key",
        _services(
            "    - {name: edf_open_raw, task_params: {sonar_model: EK60}}\n"
            "    - {name: edf_compute_Sv, task_param: {}}  # <-\n" + SINK
        ),
        ["services[0].stages[0].tasks[1].task_param"],
        "unknown key",
    ),
    Case(
        "unknown source key",
        _services(
            GOOD_TASKS + "    source: {path: raw/*.raw, regex: x}  # <-\n"
            "    destination: {path: out}\n"
        ),
        ["services[0].stages[0].source.regex"],
        "unknown key",
    ),
    Case(
        "workers is not a number",
        "services:\n- name: svc\n  infrastructure:\n"
        "    cluster: {workers: two}  # <-\n  stages:\n  - tasks:\n"
        + GOOD_TASKS
        + SINK,
        ["services[0].infrastructure.cluster.workers"],
        "valid integer",
    ),
    Case(
        "zero workers",
        "services:\n- name: svc\n  infrastructure:\n"
        "    cluster: {workers: 0}  # <-\n  stages:\n  - tasks:\n" + GOOD_TASKS + SINK,
        ["services[0].infrastructure.cluster.workers"],
        "greater than 0",
    ),
    Case(
        "tasks is a string, not a list",
        "services:\n- name: svc\n  stages:\n  - tasks: edf_open_raw  # <-\n" + SINK,
        ["services[0].stages[0].tasks"],
        "valid list",
    ),
    Case(
        "tags is a string, not a list",
        "services:\n- name: svc\n  tags: ek60  # <-\n  stages:\n  - tasks:\n"
        + GOOD_TASKS
        + SINK,
        ["services[0].tags"],
        "valid list",
    ),
    Case(
        "service name with a space",
        "services:\n- name: my service  # <-\n  stages:\n  - tasks:\n"
        + GOOD_TASKS
        + SINK,
        ["services[0].name"],
        "pattern",
    ),
    Case(
        "missing destination",
        "services:\n- name: svc\n  stages:\n  - tasks:  # <-\n"
        + GOOD_TASKS
        + "    source: {path: raw/*.raw}\n",
        ["services[0].stages[0].destination"],
        "required key is missing",
    ),
    Case(
        "missing service name",
        "services:\n- stages:  # <-\n  - tasks:\n" + GOOD_TASKS + SINK,
        ["services[0].name"],
        "required key is missing",
    ),
    Case(
        "missing services",
        "base_path: /data  # <-\n",
        ["services"],
        "required key is missing",
    ),
    Case(
        "empty services",
        "services: []  # <-\n",
        ["services"],
        "at least 1 item",
    ),
    Case(
        "duplicate service names",
        "services:  # <-\n- name: svc\n  stages:\n  - tasks:\n"
        + GOOD_TASKS
        + SINK
        + "- name: svc\n  stages:\n  - tasks:\n"
        + GOOD_TASKS
        + SINK,
        ["services"],
        r"service names must be unique; repeated: \['svc'\]",
    ),
    Case(
        "anchor_date not in DYYYYMMDD-THHMMSS form",
        "services:\n- name: svc\n"
        "  schedule: {anchor_date: D2024-10-07, interval_mins: 10}  # <-\n"
        "  stages:\n  - tasks:\n" + GOOD_TASKS + SINK,
        ["services[0].schedule.anchor_date"],
        "is not DYYYYMMDD-THHMMSS",
    ),
    Case(
        "anchor_date that is no real date",
        "services:\n- name: svc\n"
        "  schedule: {anchor_date: 2024-13-01, interval_mins: 10}  # <-\n"
        "  stages:\n  - tasks:\n" + GOOD_TASKS + SINK,
        ["services[0].schedule.anchor_date"],
        "is not a valid date",
    ),
    Case(
        "interval and cron together",
        "services:\n- name: svc\n"
        "  schedule: {interval_mins: 10, cron: '*/5 * * * *'}  # <-\n"
        "  stages:\n  - tasks:\n" + GOOD_TASKS + SINK,
        ["services[0].schedule"],
        "exactly one of interval_mins and cron",
    ),
    Case(
        "cron with three fields",
        "services:\n- name: svc\n  schedule: {cron: '*/5 * *'}  # <-\n"
        "  stages:\n  - tasks:\n" + GOOD_TASKS + SINK,
        ["services[0].schedule"],
        "must have 5 or 6 fields",
    ),
    Case(
        "unknown step name",
        _services(
            "    - {name: edf_open_raw, task_params: {sonar_model: EK60}}\n"
            "    - {name: edf_compute_sv}  # <-\n" + SINK
        ),
        ["services[0].stages[0].tasks[1].name"],
        "step 'edf_compute_sv' is not in echodataflow.tasklib.echopype",
    ),
    Case(
        "unknown stage flow",
        "services:\n- name: svc\n  stages:\n  - name: Sv_flw  # <-\n    tasks:\n"
        + GOOD_TASKS
        + SINK,
        ["services[0].stages[0].name"],
        "stage flow 'Sv_flw' is not in",
    ),
    Case(
        "open_raw parameter typo sonar_modle",
        _services(
            "    - name: edf_open_raw\n      task_params:  # <-\n"
            "        sonar_modle: EK60  # <-\n    - name: edf_compute_Sv\n" + SINK
        ),
        [
            "services[0].stages[0].tasks[0].task_params",
            "services[0].stages[0].tasks[0].task_params.sonar_modle",
        ],
        r"is not a parameter of echopype\..*open_raw",
    ),
    Case(
        "compute_Sv parameter typo env_param",
        _services(
            "    - {name: edf_open_raw, task_params: {sonar_model: EK60}}\n"
            "    - name: edf_compute_Sv\n      task_params:\n"
            "        env_param: {salinity: 30}  # <-\n" + SINK
        ),
        ["services[0].stages[0].tasks[1].task_params.env_param"],
        "is not a parameter",
    ),
    Case(
        "a parameter the pipeline fills in",
        _services(
            "    - name: edf_open_raw\n      task_params:\n        sonar_model: EK60\n"
            "        raw_file: x.raw  # <-\n" + SINK
        ),
        ["services[0].stages[0].tasks[0].task_params.raw_file"],
        "filled in by the pipeline",
    ),
    Case(
        "unknown sonar_model",
        _services(
            "    - name: edf_open_raw\n      task_params:\n"
            "        sonar_model: EK70  # <-\n" + SINK
        ),
        ["services[0].stages[0].tasks[0].task_params.sonar_model"],
        r"got 'EK70'; accepted: \[.*'EK60'",
    ),
    Case(
        "unknown waveform_mode",
        _services(
            "    - {name: edf_open_raw, task_params: {sonar_model: EK80}}\n"
            "    - name: edf_compute_Sv\n      task_params:\n"
            "        waveform_mode: XX  # <-\n        encode_mode: power\n" + SINK
        ),
        ["services[0].stages[0].tasks[1].task_params.waveform_mode"],
        r"got 'XX'; accepted: \['BB', 'CW', 'FM'\]",
    ),
    Case(
        "unknown work pool type",
        "services:\n- name: svc\n  infrastructure:\n"
        "    workpool: {name: pool, type: kubernetes}  # <-\n  stages:\n  - tasks:\n"
        + GOOD_TASKS
        + SINK,
        ["services[0].infrastructure.workpool.type"],
        "got 'kubernetes'; input should be 'process', 'docker'",
    ),
    Case(
        "unknown cluster type",
        "services:\n- name: svc\n  infrastructure:\n"
        "    cluster: {type: yarn}  # <-\n  stages:\n  - tasks:\n" + GOOD_TASKS + SINK,
        ["services[0].infrastructure.cluster.type"],
        "got 'yarn'",
    ),
    Case(
        "address cluster without an address",
        "services:\n- name: svc\n  infrastructure:\n"
        "    cluster: {type: address}  # <-\n  stages:\n  - tasks:\n"
        + GOOD_TASKS
        + SINK,
        ["services[0].infrastructure.cluster"],
        "type: address needs an address",
    ),
    Case(
        "negative adaptive minimum",
        "services:\n- name: svc\n  infrastructure:\n"
        "    cluster: {adaptive: {minimum: -1, maximum: 2}}  # <-\n  stages:\n"
        "  - tasks:\n" + GOOD_TASKS + SINK,
        ["services[0].infrastructure.cluster.adaptive.minimum"],
        "greater than or equal to 0",
    ),
    Case(
        "adaptive minimum above maximum",
        "services:\n- name: svc\n  infrastructure:\n    cluster:\n"
        "      adaptive: {minimum: 4, maximum: 2}  # <-\n  stages:\n  - tasks:\n"
        + GOOD_TASKS
        + SINK,
        ["services[0].infrastructure.cluster.adaptive"],
        r"minimum \(4\) must not exceed maximum \(2\)",
    ),
    Case(
        "duplicate YAML key",
        _services(
            GOOD_TASKS + "    source: {path: raw/*.raw}\n    destination: {path: out}\n"
            "    destination: {path: elsewhere}  # <-\n"
        ),
        ["services[0].stages[0].destination"],
        "duplicate key 'destination'",
    ),
    Case(
        "invalid YAML syntax",
        "services:\n- name: svc: extra  # <-\n  stages: []\n",
        [""],
        "not valid YAML: mapping values are not allowed here",
    ),
    Case(
        "top-level list",
        "- name: svc  # <-\n  stages: []\n",
        [""],
        "expected a mapping of keys at the top, got list",
    ),
    Case(
        "empty file",
        "# nothing but a comment  # <-\n",
        [""],
        "expected a mapping of keys at the top, got empty",
    ),
    Case(
        "raw_regex without a date group",
        _services(
            GOOD_TASKS + "    source:\n      path: raw/*.raw\n"
            "      raw_regex: 'D(?P<day>\\d{8})-T(?P<time>\\d{6})'  # <-\n"
            "    destination: {path: out}\n"
        ),
        ["services[0].stages[0].source.raw_regex"],
        r"raw_regex needs named groups date and time; missing \['date'\]",
    ),
    Case(
        "grouping_regex without transect_num",
        _services(
            GOOD_TASKS
            + SINK
            + "    group:\n      grouping_regex: 'x(?P<num>\\d+)'  # <-\n"
        ),
        ["services[0].stages[0].group.grouping_regex"],
        "needs a named group transect_num",
    ),
    Case(
        "time window of zero length",
        _services(
            GOOD_TASKS + "    source:\n      path: raw/*.raw\n"
            "      window_options: {window_hours: 0, window_mins: 0}  # <-\n"
            "    destination: {path: out}\n"
        ),
        ["services[0].stages[0].source.window_options"],
        "window length must be positive",
    ),
    Case(
        "secret written in storage_options.options",
        _services(
            GOOD_TASKS
            + "    source: {path: raw/*.raw}\n    destination:\n      path: s3://b/out\n"
            f"      storage_options: {{options: {{secret: {SECRET}}}}}  # <-\n"
        ),
        ["services[0].stages[0].destination.storage_options"],
        r"secrets \['secret'\] must not be written in the deployment file",
    ),
    Case(
        "EK80 compute_Sv without waveform_mode and encode_mode",
        _services(
            "    - {name: edf_open_raw, task_params: {sonar_model: EK80}}\n"
            "    - {name: edf_compute_Sv}  # <-\n" + SINK
        ),
        ["services[0].stages[0].tasks[1].name"],
        r"EK80 calibration needs \['encode_mode', 'waveform_mode'\]",
    ),
    Case(
        "AZFP without xml_path",
        _services(
            "    - name: edf_open_raw\n      task_params:  # <-\n"
            "        sonar_model: AZFP\n    - name: edf_compute_Sv\n" + SINK
        ),
        ["services[0].stages[0].tasks[0].task_params"],
        "sonar_model AZFP needs xml_path",
    ),
    Case(
        "compute_Sv before open_raw",
        _services(
            "    - {name: edf_compute_Sv}  # <-\n"
            "    - {name: edf_open_raw, task_params: {sonar_model: EK60}}  # <-\n"
            + SINK
        ),
        [
            "services[0].stages[0].tasks[0].name",
            "services[0].stages[0].tasks[1].name",
        ],
        "edf_compute_Sv needs EchoData: open a file first",
    ),
    Case(
        "step from an unregistered module",
        _services(
            "    - name: edf_open_raw\n      module: os.path  # <-\n"
            "      task_params: {sonar_model: EK60}\n" + SINK
        ),
        ["services[0].stages[0].tasks[0].module"],
        "module 'os.path' is not registered for echodataflow.steps",
    ),
    Case(
        "logging file entry without version",
        _services(GOOD_TASKS + SINK),
        [],
        "required key is missing",
        logging="default:  # <-\n  handlers: {h: {class: logging.StreamHandler}}\n",
        logging_keys=["default.version"],
    ),
    Case(
        "logging handler referenced but undefined in the logging file",
        "services:\n- name: svc\n  logging: {handler: debug}  # <-\n  stages:\n"
        "  - tasks:\n" + GOOD_TASKS + SINK,
        ["services[0].logging.handler"],
        r"'debug' is not defined in the logging file \(defined: \['default'\]\)",
        logging="default:\n  version: 1\n",
    ),
    Case(
        "logging root uses a handler the entry does not define",
        _services(GOOD_TASKS + SINK),
        [],
        r"loggers use undefined handlers \['file'\]",
        logging="default:  # <-\n  version: 1\n  root: {handlers: [file]}\n",
        logging_keys=["default"],
    ),
]


def _marked(text: str, keys: list[str], file: Path) -> set[tuple[str, int, str]]:
    lines = [n for n, line in enumerate(text.splitlines(), 1) if "# <-" in line]
    assert len(lines) in (1, len(keys)) or not keys, "bad case: markers vs keys"
    if len(lines) == 1:
        lines = lines * len(keys)
    return {(str(file), n, key) for n, key in zip(lines, keys, strict=True)}


def _write(tmp_path: Path, case: Case) -> tuple[list[str], set[tuple[str, int, str]]]:
    deployment = tmp_path / "deployment.yaml"
    deployment.write_text(case.deployment, encoding="utf-8")
    args = ["validate", str(deployment)]
    expected = _marked(case.deployment, case.keys, deployment)
    if case.logging is not None:
        logging_file = tmp_path / "logging.yaml"
        logging_file.write_text(case.logging, encoding="utf-8")
        args += ["--logging", str(logging_file)]
        expected |= _marked(case.logging, case.logging_keys, logging_file)
    return args, expected


def _check(code: int, out: str, err: str, case: Case, expected: set) -> None:
    assert code == 2, out + err
    assert "Traceback" not in out + err
    assert SECRET not in out + err
    lines = [line for line in err.splitlines() if line.strip()]
    assert lines, "no problem was printed"
    found = set()
    for line in lines:
        match = LINE.match(line)
        assert match, f"not FILE:LINE: key.path: message: {line!r}"
        found.add((match["file"], int(match["line"]), match["key"] or ""))
    assert found == expected
    assert re.search(case.message, err), err


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_malformed_file_exits_2_with_one_located_line_per_problem(
    case: Case, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
):
    args, expected = _write(tmp_path, case)
    monkeypatch.setattr(sys, "argv", ["echodataflow", *args])
    with pytest.raises(SystemExit) as exited:
        main()
    captured = capsys.readouterr()
    _check(int(exited.value.code or 0), captured.out, captured.err, case, expected)


def test_there_are_at_least_25_malformed_cases():
    assert len(CASES) >= 25


SUBPROCESS_CASES = [
    case
    for case in CASES
    if case.id
    # One case: each subprocess pays echopype's import (several seconds here).
    == "logging handler referenced but undefined in the logging file"
]


@pytest.mark.slow
@pytest.mark.parametrize("case", SUBPROCESS_CASES, ids=[c.id for c in SUBPROCESS_CASES])
def test_the_module_entry_point_reports_the_same_located_lines(
    case: Case, tmp_path: Path
):
    args, expected = _write(tmp_path, case)
    done = subprocess.run(
        [sys.executable, "-m", "echodataflow.cli", *args],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    _check(done.returncode, done.stdout, done.stderr, case, expected)
