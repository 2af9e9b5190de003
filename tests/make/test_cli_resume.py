"""``echodataflow run`` killed with SIGKILL while writing, then run again.

The run is a real CLI process with its embedded Prefect and a local Dask cluster;
the kill hits its whole process group, Dask workers included.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import xarray as xr
import yaml
from makehelp import SMALL, make_in_process, service_of, sv_stage

from echodataflow import ledger, storage

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1200)]

ORIGINALS = [*SMALL, "Summer2017-D20170615-T214734.raw"]
# Copies under other names: enough files that the flow records some products while
# the worker still writes others, although the products it submits ahead of the
# flow (deployment/head_start.py) are made before the flow records any.
COPIES = 10
FILES = [f"copy{i}-{name}" for i in range(COPIES) for name in ORIGINALS]
# Attributes that record when a product was made, not what it holds.
_WHEN = ("edf_run_id", "processing_time", "history")


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "echodataflow.cli", *args]


def _env(tmp_path: Path) -> dict[str, str]:
    return {
        **os.environ,
        "PREFECT_HOME": str(tmp_path / "prefect-home"),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "DO_NOT_TRACK": "1",
    }


def _deployment(tmp_path: Path, raw: Path, out: Path, **stage_extra: object) -> Path:
    stages = [sv_stage(raw, out, **stage_extra)]
    service = {
        "name": "resume",
        "infrastructure": {"cluster": {"type": "local", "workers": 1}},
        "stages": stages,
    }
    path = tmp_path / "deployment.yaml"
    path.write_text(yaml.safe_dump({"services": [service]}))
    return path


def _done(folder: Path) -> dict[str, str]:
    records = {}
    for record in (folder / ledger.LEDGER_FOLDER).glob("*.json"):
        data = json.loads(record.read_text())
        if data.get("state") == "done":
            records[record.name.removesuffix(".json")] = data["run_id"]
    return records


def _what(attrs: dict[str, object]) -> dict[str, object]:
    return {k: v for k, v in attrs.items() if k not in _WHEN}


def _partials(folder: Path) -> list[Path]:
    return (
        [p for p in folder.glob(f".*{storage.PARTIAL_MARK}*")]
        if folder.exists()
        else []
    )


def _kill_while_writing(command: list[str], env: dict[str, str], sv: Path) -> None:
    process = subprocess.Popen(
        command,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    deadline = time.monotonic() + 600
    try:
        while time.monotonic() < deadline:
            if _done(sv) and _partials(sv):
                break
            assert process.poll() is None, "the run ended before it could be killed"
            time.sleep(0.02)
        else:
            pytest.fail("no product was being written within 600 s")
    finally:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=60)


def test_a_run_killed_while_writing_resumes_and_redoes_only_unfinished_files(
    shared_data: Path, tmp_path: Path
):
    raw = tmp_path / "raw"
    raw.mkdir()
    for name in FILES:
        original = name.split("-", 1)[1]
        shutil.copy(shared_data / "raw" / "ek60" / original, raw / name)
    out = tmp_path / "out"
    sv = out / "Sv"
    deployment = _deployment(tmp_path, raw, out)
    env = _env(tmp_path)

    _kill_while_writing(_cli("run", str(deployment)), env, sv)
    done_before = _done(sv)
    leftovers = _partials(sv)
    assert done_before
    assert leftovers, "the kill should have left a half-written store"
    assert len(done_before) < len(FILES)

    # No reader takes a partial store for a product, nor plan for a done one.
    listed = storage.glob(str(sv / "*"), {})
    assert not any(storage.PARTIAL_MARK in p for p in listed)
    for partial in leftovers:
        assert ledger.is_done(str(partial), {}) is None
    planned = subprocess.run(
        _cli("plan", str(deployment)),
        env={**env, "COLUMNS": "250"},
        capture_output=True,
        text=True,
        check=True,
        timeout=300,
    ).stdout
    assert (
        f"{len(FILES) - len(done_before)} to make, {len(done_before)} up to date"
        in (planned)
    )
    assert storage.PARTIAL_MARK not in planned

    rerun = subprocess.run(
        _cli("run", str(deployment)),
        env={**env, "COLUMNS": "250"},
        capture_output=True,
        text=True,
        check=False,
        timeout=900,
    )
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    written = len(FILES) - len(done_before)
    assert f"{written} written, {len(done_before)} up to date, 0 failed" in rerun.stdout
    done_after = _done(sv)
    assert len(done_after) == len(FILES)
    assert {k: done_after[k] for k in done_before} == done_before
    assert not _partials(sv)

    reference = tmp_path / "reference"
    make_in_process(service_of(sv_stage(raw, reference)), "reference")
    for product in sorted(sv.glob("*_Sv.zarr")):
        made = xr.open_zarr(product, consolidated=False).load()
        expected = xr.open_zarr(
            reference / "Sv" / product.name, consolidated=False
        ).load()
        xr.testing.assert_equal(made, expected)
        for name in [None, *made.variables]:
            left = made.attrs if name is None else made[name].attrs
            right = expected.attrs if name is None else expected[name].attrs
            assert _what(left) == _what(right), name

    again = subprocess.run(
        _cli("run", str(deployment)),
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )
    assert again.returncode == 0, again.stderr[-3000:]
    assert "service resume is up to date" in again.stdout


def test_save_offline_false_removes_a_stage_products_after_the_service_run(
    shared_data: Path, tmp_path: Path
):
    raw = tmp_path / "raw"
    raw.mkdir()
    shutil.copy(shared_data / "raw" / "ek60" / SMALL[-1], raw / SMALL[-1])
    out = tmp_path / "out"
    deployment = _deployment(tmp_path, raw, out, options={"save_offline": False})
    done = subprocess.run(
        _cli("run", str(deployment)),
        env=_env(tmp_path),
        capture_output=True,
        text=True,
        check=False,
        timeout=900,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "1 written" in done.stdout
    assert not (out / "Sv").exists()
