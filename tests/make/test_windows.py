"""Time windows on the real Summer2017 files, whose start times are in their names."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
import yaml
from pydantic import ValidationError

from echodataflow.deployment.source import (
    RawFile,
    extract_source,
    parse_file_time,
    parse_raw_paths,
    select_windows,
)
from echodataflow.exceptions import ConfigError
from echodataflow.models.deployment import DEFAULT_RAW_REGEX, Source, WindowOptions
from echodataflow.models.load import parse_deployment


def _files(shared_data: Path) -> list[RawFile]:
    paths = sorted(
        str(p) for p in (shared_data / "raw" / "ek60").glob("Summer2017*.raw")
    )
    assert len(paths) == 10
    return [RawFile(p, *parse_file_time(p, DEFAULT_RAW_REGEX)) for p in paths]


def _names(windows: dict[str, list[RawFile]]) -> dict[str, list[str]]:
    return {
        name: [f.name.removeprefix("Summer2017-").removesuffix(".raw") for f in files]
        for name, files in windows.items()
    }


AT_22 = datetime(2017, 6, 15, 22, 0, 30, tzinfo=UTC)


def test_the_last_window_holds_its_files_and_the_one_that_starts_before_it(
    shared_data: Path,
):
    window = WindowOptions(window_hours=1)
    assert _names(select_windows(_files(shared_data), window, AT_22)) == {
        "win_D20170615-T210000_D20170615-T220000": [
            "D20170615-T190843",
            "D20170615-T212409",
            "D20170615-T212933",
            "D20170615-T213153",
            "D20170615-T214606",
            "D20170615-T214712",
            "D20170615-T214734",
        ]
    }


def test_time_travel_moves_the_windows_back(shared_data: Path):
    later = datetime(2017, 6, 16, 0, 30, tzinfo=UTC)
    window = WindowOptions(time_travel_hours=2, time_travel_mins=30, window_hours=1)
    assert list(select_windows(_files(shared_data), window, later)) == [
        "win_D20170615-T210000_D20170615-T220000"
    ]


def test_several_windows_walk_back_in_time_and_empty_ones_are_left_out(
    shared_data: Path,
):
    window = WindowOptions(window_mins=60, number_of_windows=3)
    windows = _names(select_windows(_files(shared_data), window, AT_22))
    assert list(windows) == [
        "win_D20170615-T190000_D20170615-T200000",
        "win_D20170615-T210000_D20170615-T220000",
    ]
    assert windows["win_D20170615-T190000_D20170615-T200000"] == [
        "D20170615-T190214",
        "D20170615-T190843",
    ]


def test_a_window_ends_before_a_file_that_starts_at_its_end(shared_data: Path):
    at_file_start = datetime(2017, 6, 15, 21, 47, 12, tzinfo=UTC)
    window = WindowOptions(window_mins=2)
    assert _names(select_windows(_files(shared_data), window, at_file_start)) == {
        "win_D20170615-T214500_D20170615-T214700": [
            "D20170615-T213153",
            "D20170615-T214606",
        ]
    }


def test_windows_select_and_group_the_real_source_files(shared_data: Path):
    source = Source(
        path=str(shared_data / "raw" / "ek60" / "Summer2017-*.raw"),
        window_options=WindowOptions(window_hours=1, number_of_windows=2),
    )
    paths = extract_source(source, {}, AT_22)
    assert [Path(p).name for p in paths][:2] == [
        "Summer2017-D20170615-T190843.raw",
        "Summer2017-D20170615-T212409.raw",
    ]
    assert len(paths) == 7
    groups, left_out = parse_raw_paths(paths, source, None, {}, None, AT_22)
    assert list(groups) == ["win_D20170615-T210000_D20170615-T220000"]
    assert not left_out


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({}, "window length must be positive"),
        ({"window_hours": 0, "window_mins": 0}, "window length must be positive"),
        ({"window_mins": -5}, "greater than or equal to 0"),
        ({"window_hours": 1, "number_of_windows": 0}, "greater than 0"),
        ({"window_hours": 1, "time_travel_hours": -1}, "greater than or equal to 0"),
    ],
)
def test_zero_or_negative_window_settings_are_validation_errors(
    options: dict[str, int], message: str
):
    with pytest.raises(ValidationError, match=message):
        WindowOptions(**options)


def test_a_zero_window_is_reported_with_its_key_path_and_line():
    text = yaml.safe_dump(
        {
            "services": [
                {
                    "name": "w",
                    "stages": [
                        {
                            "tasks": [
                                {
                                    "name": "edf_open_raw",
                                    "task_params": {"sonar_model": "EK60"},
                                }
                            ],
                            "source": {
                                "path": "raw/*.raw",
                                "window_options": {"window_mins": 0},
                            },
                            "destination": {"path": "out"},
                        }
                    ],
                }
            ]
        },
        sort_keys=False,
    )
    with pytest.raises(ConfigError, match=r"window_options: .*window length") as err:
        parse_deployment(text, "w.yaml")
    assert str(err.value).startswith("w.yaml:")
