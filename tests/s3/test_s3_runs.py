"""``echodataflow run`` of the S3 example against a real S3 server, killed and rerun."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import xarray as xr
from products import EXAMPLE, FILES, PRODUCTS, RAW_PREFIX, assert_same_product, read

from echodataflow import ledger

pytestmark = [pytest.mark.s3, pytest.mark.slow]

CLI = str(Path(sys.executable).with_name("echodataflow"))


def product_urls() -> list[str]:
    return [f"{PRODUCTS}/{name.removesuffix('.raw')}_Sv.zarr" for name in FILES]


def kill_when_writing(process: subprocess.Popen[bytes], s3: Any) -> list[str]:
    """SIGKILL the run's process group as soon as a product's first object lands."""
    deadline = time.monotonic() + 400
    while process.poll() is None and time.monotonic() < deadline:
        written = [
            k for k in s3.keys("edf-products", "SH1707/Sv/") if "/.edf-" not in k
        ]
        if written:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
            return written
        time.sleep(0.05)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    pytest.fail("the run ended or stalled before writing to S3")


def test_a_run_killed_while_writing_to_s3_leaves_nothing_done_and_a_rerun_completes(
    s3: Any, shared_data: Path, tmp_path: Path, reference: dict[str, xr.Dataset]
) -> None:
    s3.make_bucket("edf-products")
    s3.upload("edf-raw", RAW_PREFIX, [shared_data / "raw/ek60" / f for f in FILES])
    deployment = tmp_path / EXAMPLE.name
    shutil.copy(EXAMPLE, deployment)
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    env = {**s3.run_env(), "COLUMNS": "200"}
    log = tmp_path / "killed.log"

    with log.open("wb") as out:
        killed = subprocess.Popen(
            [CLI, "run", str(deployment), "--verbose"],
            cwd=cwd,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        written = kill_when_writing(killed, s3)

    assert killed.returncode == -signal.SIGKILL
    assert written, "the kill came before any product object"
    assert [url for url in product_urls() if ledger.is_done(url, {})] == []
    planned = subprocess.run(
        [CLI, "plan", str(deployment)],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert planned.returncode == 0, planned.stderr
    for url in product_urls():
        (line,) = [x for x in planned.stdout.splitlines() if Path(url).name in x]
        assert " run " in line, planned.stdout

    rerun = subprocess.run(
        [CLI, "run", str(deployment), "--verbose"],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=500,
    )

    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    for url in product_urls():
        assert ledger.is_done(url, {}) is not None, url
        assert_same_product(read(url), reference[Path(url).name])
    # Nothing was written beside the run: no local copy of a bucket.
    assert list(cwd.iterdir()) == []
    for text in (log.read_text(), rerun.stdout, rerun.stderr, planned.stdout):
        assert s3.secret not in text
