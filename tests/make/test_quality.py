"""Data-quality checks on Sv made from real EK60 files: every check passes and fails."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import xarray as xr
import yaml
from makehelp import make_in_process, mvbs_stage, plan_of, service_of, sv_stage

from echodataflow.exceptions import ConfigError
from echodataflow.models.deployment import Check, DataQuality
from echodataflow.models.load import parse_deployment
from echodataflow.quality import (
    BUILTIN_CHECKS,
    resolve_check,
    run_checks,
    write_results,
)

pytestmark = pytest.mark.slow

RAW = "Summer2017-D20170615-T214712.raw"


def _sv(shared_data: Path, location: bool) -> xr.Dataset:
    import echopype as ep

    echodata = ep.open_raw(str(shared_data / "raw" / "ek60" / RAW), sonar_model="EK60")
    sv = ep.calibrate.compute_Sv(echodata).compute()
    if location:
        sv = ep.consolidate.add_location(sv, echodata=echodata)
    return sv


@pytest.fixture(scope="module")
def sv(shared_data: Path) -> xr.Dataset:
    return _sv(shared_data, location=True)


@pytest.fixture(scope="module")
def sv_without_location(shared_data: Path) -> xr.Dataset:
    return _sv(shared_data, location=False)


def _one(dataset: xr.Dataset, name: str, **params: object) -> dict[str, object]:
    verdict = run_checks(dataset, [Check(name=name, params=params)])
    (result,) = verdict["results"]
    return dict(result)


def test_the_real_sv_passes_every_builtin_check_with_defaults(sv: xr.Dataset):
    verdict = run_checks(sv, [Check(name=name) for name in BUILTIN_CHECKS])
    assert verdict["passed"], verdict
    assert verdict["failed"] == []
    assert len(verdict["results"]) == 4


def test_nan_share_fails_above_its_threshold(sv: xr.Dataset):
    passed = _one(sv, "nan_share", max_share=0.05)
    assert passed["passed"]
    assert 0.0 < float(passed["value"]) < 0.05  # type: ignore[arg-type]
    failed = _one(sv, "nan_share", max_share=0.001)
    assert not failed["passed"]
    assert "is NaN" in str(failed["detail"])


def test_sv_range_fails_when_values_leave_the_plausible_range(sv: xr.Dataset):
    assert _one(sv, "sv_range")["passed"]
    failed = _one(sv, "sv_range", max_db=0.0)
    assert not failed["passed"]
    assert "outside [-180.0, 0.0]" in str(failed["detail"])
    assert _one(sv, "sv_range", max_db=0.0, max_share_outside=0.5)["passed"]


def test_ping_time_must_increase_strictly(sv: xr.Dataset):
    assert _one(sv, "ping_time_increasing")["passed"]
    shuffled = sv.isel(ping_time=[0, 2, 1, 3, 4, 5, 6, 7, 8, 9])
    failed = _one(shuffled, "ping_time_increasing")
    assert not failed["passed"]
    assert failed["detail"] == "1 of 9 steps between ping times are not increasing"
    repeated = xr.concat([sv, sv.isel(ping_time=[-1])], dim="ping_time")
    assert not _one(repeated, "ping_time_increasing")["passed"]


def test_location_must_be_present(sv: xr.Dataset, sv_without_location: xr.Dataset):
    assert _one(sv, "location_present")["passed"]
    failed = _one(sv_without_location, "location_present")
    assert not failed["passed"]
    assert "add edf_add_location" in str(failed["detail"])
    half = sv.copy()
    half["latitude"] = half["latitude"].where(half["ping_time"] < sv.ping_time[5])
    assert not _one(half, "location_present")["passed"]
    assert _one(half, "location_present", min_share=0.5)["passed"]


def test_a_custom_check_runs_by_dotted_path_once_its_module_is_allowed(
    sv: xr.Dataset, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    (tmp_path / "edf_site_checks.py").write_text(
        "def deep_enough(dataset, params):\n"
        "    n = dataset.sizes['range_sample']\n"
        "    return n >= params['min_samples'], f'{n} samples'\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    check = Check(name="edf_site_checks.deep_enough", params={"min_samples": 100})
    with pytest.raises(LookupError, match="not registered for echodataflow.checks"):
        resolve_check(check.name)
    monkeypatch.setenv("ECHODATAFLOW_ALLOWED_MODULES", "edf_site_checks")
    assert run_checks(sv, [check])["passed"]
    failing = Check(name=check.name, params={"min_samples": 10_000})
    assert run_checks(sv, [failing])["results"][0]["detail"] == "259 samples"
    sys.modules.pop("edf_site_checks", None)


def test_a_check_that_raises_fails_the_product_without_crashing(sv: xr.Dataset):
    verdict = run_checks(sv, [Check(name="nan_share", params={"variable": "nope"})])
    assert verdict["failed"] == ["nan_share"]
    assert run_checks(None, [Check(name="nan_share")])["failed"] == ["nan_share"]


def _deployment(checks: list[dict[str, object]]) -> str:
    stage = sv_stage(Path("/raw"), Path("/out"), data_quality={"checks": checks})
    return yaml.safe_dump({"services": [{"name": "q", "stages": [stage]}]})


@pytest.mark.parametrize(
    ("checks", "message"),
    [
        ([{"name": "no_such_check"}], "unknown check 'no_such_check'"),
        ([{"name": "os.system"}], "check module 'os' is not registered"),
        (
            [{"name": "nan_share", "params": {"max_share": 2}}],
            "params.max_share: Input should be less than or equal to 1",
        ),
        (
            [{"name": "sv_range", "params": {"min_db": 10, "max_db": 0}}],
            "min_db .* must be below max_db",
        ),
        ([{"name": "location_present", "params": {"lat": "y"}}], "params.lat: Extra"),
    ],
)
def test_validate_rejects_unknown_checks_and_bad_params(
    checks: list[dict[str, object]], message: str
):
    with pytest.raises(ConfigError, match=message) as err:
        parse_deployment(_deployment(checks), "q.yaml")
    assert "stages[0].data_quality.checks[0].name" in str(err.value)


def test_results_are_written_as_json_under_out_path(tmp_path: Path, sv: xr.Dataset):
    quality = DataQuality(
        checks=[Check(name="nan_share")], out_path=str(tmp_path / "qc")
    )
    verdict = run_checks(sv, list(quality.checks))
    url = write_results(quality, "/unused", "Sv_flow", "run-1", {"a_Sv.zarr": verdict})
    summary = json.loads(Path(url).read_text())
    assert summary["passed"] == 1
    assert summary["failed"] == []
    assert json.loads((tmp_path / "qc" / "a_Sv.zarr.json").read_text())["passed"]


def test_block_downstream_keeps_failing_products_from_the_next_stage(
    raw_copies: Path, tmp_path: Path
):
    out = tmp_path / "out"
    strict = {
        "checks": [{"name": "nan_share", "params": {"max_share": 0.001}}],
        "block_downstream": True,
    }
    service = service_of(
        sv_stage(raw_copies, out, data_quality=strict), mvbs_stage(out)
    )
    make_in_process(service, "first")
    plans = plan_of(service)
    assert len(plans[1].left_out) == 3
    assert set(plans[1].left_out.values()) == {
        "blocked: failed data-quality checks nan_share"
    }
    assert not (out / "MVBS").exists()

    lenient = {**strict, "block_downstream": False}
    service = service_of(
        sv_stage(raw_copies, out, data_quality=lenient), mvbs_stage(out)
    )
    # The stage's checks are not part of its products' identity: the Sv stay done,
    # and only a new run records the new verdicts.
    assert [p.decision.run for p in plan_of(service)[0].planned] == [False] * 3
