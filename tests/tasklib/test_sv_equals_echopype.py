"""Pipeline Sv equals plain echopype (open_raw, then compute_Sv), value for value."""

from __future__ import annotations

import contextlib
import io
from typing import Any

import echopype as ep
import numpy as np
import pytest
import xarray as xr

pytestmark = pytest.mark.slow

# The sample files of the shared run (tests/tasklib/conftest.py): EK60, EK80 in its
# three modes, AZFP.
NAMES = [
    "EK60",
    "EK60 Summer2017",
    "EK80 CW power",
    "EK80 CW complex",
    "EK80 FM complex",
    "AZFP",
]


def _plain_echopype(run: Any, name: str) -> xr.Dataset:
    sample = run.samples[name]
    params = dict(sample.open_raw)
    if "xml_path" in params:
        params["xml_path"] = str(run.data / params["xml_path"])
    with contextlib.redirect_stdout(io.StringIO()):
        echodata = ep.open_raw(str(run.data / sample.raw), **params)
    return ep.calibrate.compute_Sv(echodata, **sample.compute_Sv).compute()


@pytest.mark.parametrize("name", NAMES)
def test_pipeline_Sv_equals_plain_echopype(pipeline_run: Any, name: str):
    expected = _plain_echopype(pipeline_run, name)
    with xr.open_zarr(pipeline_run.stores[name], consolidated=False) as stored:
        actual = stored.load()

    assert actual["Sv"].dims == expected["Sv"].dims
    # assert_array_equal treats NaN at the same place as equal, elsewhere as unequal.
    np.testing.assert_array_equal(actual["Sv"].values, expected["Sv"].values)
    assert np.isnan(actual["Sv"].values).sum() == np.isnan(expected["Sv"].values).sum()
    assert set(actual.coords) == set(expected.coords)
    for coord in expected.coords:
        np.testing.assert_array_equal(
            actual[coord].values, expected[coord].values, err_msg=coord
        )
    # Every other variable echopype returns comes through unchanged as well.
    assert set(actual.data_vars) == set(expected.data_vars)
    xr.testing.assert_equal(actual, expected)


def test_the_stores_record_where_they_came_from(pipeline_run: Any):
    with xr.open_zarr(pipeline_run.stores["AZFP"], consolidated=False) as stored:
        assert stored.attrs["edf_source_files"] == '["17031001.01A"]'
        assert "edf_compute_Sv" in stored.attrs["edf_steps"]


def test_every_sample_of_the_run_is_compared(pipeline_run: Any):
    assert sorted(pipeline_run.stores) == sorted(NAMES)
