"""A flow run inside the run image, through a real prefect-docker worker.

The service is deployed by the deployment engine on a real Prefect server; a real
``prefect worker start --type docker`` starts the run's container from the image
built here (pinned by id, host network, data and products bind-mounted), and the
products must equal those of a local run of the same file.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import xarray as xr
import yaml
from processes import free_port, stop

pytestmark = [
    pytest.mark.docker,
    pytest.mark.prefect_server,
    pytest.mark.slow,
    pytest.mark.timeout(2400),
]

BIN = Path(sys.executable).parent
POOL = "edf-docker-test"
FILES = ["Summer2017-D20170615-T214712.raw", "Summer2017-D20170615-T212933.raw"]
RUN_UID = 1000  # the image's non-root user


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """A Prefect server on a free port of 127.0.0.1 (containers share the host net)."""
    import httpx
    from prefect.settings import PREFECT_API_URL, PREFECT_HOME, temporary_settings

    home = tmp_path_factory.mktemp("prefect-docker-home")
    port = free_port()
    url = f"http://127.0.0.1:{port}/api"
    env = {
        **os.environ,
        "PREFECT_HOME": str(home),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_SERVER_UI_ENABLED": "false",
        "DO_NOT_TRACK": "1",
        "PREFECT_WORKER_QUERY_SECONDS": "2",
    }
    with (home / "server.log").open("wb") as log_file:
        process = subprocess.Popen(
            [
                BIN / "prefect",
                "server",
                "start",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
            ],
            env=env,
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
        try:
            deadline = time.monotonic() + 180
            while True:
                try:
                    if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                if process.poll() is not None or time.monotonic() > deadline:
                    log = (home / "server.log").read_text()
                    pytest.fail(f"Prefect server did not start:\n{log}")
                time.sleep(0.5)
            with temporary_settings({PREFECT_API_URL: url, PREFECT_HOME: str(home)}):
                yield {**env, "PREFECT_API_URL": url}
        finally:
            stop(process, interrupts=1)


def _deployment(root: Path, data: Path, image: str, products: Path) -> Path:
    """The deployment file: one docker service processing two EK60 files."""
    raw = data / "raw" / "ek60"
    service = {
        "name": "docker-sv",
        "infrastructure": {
            "workpool": {
                "name": POOL,
                "type": "docker",
                "image": image,
                "job_variables": {"auto_remove": True},
                "docker": {
                    "volumes": [f"{raw}:{raw}:ro", f"{products}:{products}"],
                    "network_mode": "host",
                    "pull_policy": "Never",
                    "mem_limit": "4g",
                    "env": {"EDF_RUN_WHERE": "docker"},
                },
            },
            "cluster": {"type": "local", "workers": 1},
        },
        "stages": [
            {
                "name": "Sv_flow",
                "tasks": [
                    {"name": "edf_open_raw", "task_params": {"sonar_model": "EK60"}},
                    {"name": "edf_compute_Sv"},
                ],
                "source": {"path": [str(raw / name) for name in FILES]},
                "destination": {"path": str(products / "Sv")},
            }
        ],
    }
    path = root / f"{products.name}.yaml"
    path.write_text(yaml.safe_dump({"services": [service]}, sort_keys=False))
    return path


@pytest.fixture(scope="module")
def docker_run(
    server: dict[str, str],
    run_image: str,
    shared_data: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> dict[str, Any]:
    """Deploy, start a docker worker, run the deployment once, wait for the end."""
    from prefect import get_client
    from prefect.deployments import run_deployment

    root = tmp_path_factory.mktemp("docker-e2e")
    products = root / "docker-products"
    products.mkdir()
    # The container runs as the image's user; it must be able to write here.
    os.chown(products, RUN_UID, RUN_UID)
    deployment = _deployment(root, shared_data, run_image, products)
    deployed = subprocess.run(
        [BIN / "echodataflow", "deploy", str(deployment)],
        env=server,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert deployed.returncode == 0, deployed.stdout + deployed.stderr

    log_path = root / "worker.log"
    with log_path.open("wb") as log_file:
        worker = subprocess.Popen(
            [BIN / "prefect", "worker", "start", "--pool", POOL, "--type", "docker"],
            env=server,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            cwd=root,
        )
        try:
            started = time.monotonic()
            flow_run = run_deployment("edf_service/docker-sv", timeout=900)
            elapsed = time.monotonic() - started
        finally:
            stop(worker, interrupts=2)
    with get_client(sync_client=True) as client:
        pool = client.read_work_pool(POOL)
    return {
        "flow_run": flow_run,
        "elapsed": elapsed,
        "products": products / "Sv",
        "deployment": deployment,
        "worker_log": log_path.read_text(errors="replace"),
        "pool": pool,
        "root": root,
        "shared_data": shared_data,
        "image": run_image,
    }


def test_the_docker_pool_carries_the_pinned_image_and_the_service_settings(
    docker_run: dict[str, Any],
) -> None:
    pool = docker_run["pool"]
    props = pool.base_job_template["variables"]["properties"]
    assert pool.type == "docker"
    assert props["image"]["default"] == docker_run["image"]
    assert props["image"]["default"].startswith("sha256:")
    assert props["network_mode"]["default"] == "host"
    assert props["image_pull_policy"]["default"] == "Never"
    assert props["mem_limit"]["default"] == "4g"
    assert props["auto_remove"]["default"] is True
    assert str(docker_run["products"].parent) in props["volumes"]["default"][1]


def test_a_flow_run_in_the_run_image_completes_and_writes_both_products(
    docker_run: dict[str, Any],
) -> None:
    flow_run = docker_run["flow_run"]
    assert flow_run.state.is_completed(), (
        f"{flow_run.state}\n{docker_run['worker_log'][-4000:]}"
    )
    # The worker started a container for the run (and did not run it in-process).
    assert "Creating Docker container" in docker_run["worker_log"]
    stores = sorted(p.name for p in docker_run["products"].glob("*.zarr"))
    assert stores == sorted(name.replace(".raw", "_Sv.zarr") for name in FILES)
    # Written by the container's user, not by the test (root) process.
    assert all(
        p.stat().st_uid == RUN_UID for p in docker_run["products"].glob("*.zarr")
    )


def test_products_made_in_the_container_equal_a_local_run(
    docker_run: dict[str, Any],
) -> None:
    local = docker_run["root"] / "local-products"
    local.mkdir()
    text = docker_run["deployment"].read_text()
    local_file = docker_run["root"] / "local.yaml"
    local_file.write_text(text.replace(str(docker_run["products"].parent), str(local)))
    result = subprocess.run(
        [BIN / "echodataflow", "run", str(local_file)],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    docker_stores = sorted(docker_run["products"].glob("*.zarr"))
    local_stores = sorted((local / "Sv").glob("*.zarr"))
    assert [p.name for p in docker_stores] == [p.name for p in local_stores]
    assert len(docker_stores) == len(FILES)
    for made_in_docker, made_here in zip(docker_stores, local_stores, strict=True):
        with xr.open_zarr(made_in_docker) as a, xr.open_zarr(made_here) as b:
            xr.testing.assert_equal(a, b)
