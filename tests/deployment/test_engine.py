"""The deployment engine on a real Prefect server, with a real process worker.

One server, one worker and one Dask cluster serve every test of this module; the
flow runs the tests need are started together, early, so that they overlap.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from processes import free_port, stop

pytestmark = [pytest.mark.prefect_server, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
POOL = "edf-test-pool"
SECRET = "edf-test-secret-Zq8v"  # noqa: S105 - a throw-away value the tests hunt for
ACCESS_KEY = "EDFTESTACCESSKEY"
GOOD = ["Summer2017-D20170615-T214712.raw", "Summer2017-D20170615-T212933.raw"]
BAD = "Summer2017-D20170615-T220000.raw"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """A real Prefect server on SQLite, on a free port, with its own PREFECT_HOME."""
    from prefect.settings import PREFECT_API_URL, PREFECT_HOME, temporary_settings

    home = tmp_path_factory.mktemp("prefect-server-home")
    port = free_port()
    url = f"http://127.0.0.1:{port}/api"
    env = {
        **os.environ,
        "PREFECT_HOME": str(home),
        "PREFECT_API_URL": url,
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_SERVER_UI_ENABLED": "false",
        "DO_NOT_TRACK": "1",
        "PREFECT_WORKER_QUERY_SECONDS": "2",
        "PREFECT_LOGGING_LEVEL": "INFO",
        # SQLite under several concurrent runs on a loaded machine: wait for the
        # database lock instead of answering 503.
        "PREFECT_SERVER_DATABASE_TIMEOUT": "60",
        "PREFECT_SERVER_DATABASE_CONNECTION_TIMEOUT": "30",
    }
    log_file = (home / "server.log").open("wb")
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
        env={k: v for k, v in env.items() if k != "PREFECT_API_URL"},
        stdout=log_file,
        stderr=subprocess.STDOUT,
    )
    try:
        import httpx

        deadline = time.monotonic() + 180
        while True:
            try:
                if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                pytest.fail(
                    f"Prefect server did not start: {(home / 'server.log').read_text()}"
                )
            time.sleep(0.5)
        with temporary_settings({PREFECT_API_URL: url, PREFECT_HOME: str(home)}):
            yield env
    finally:
        stop(process, interrupts=1)
        log_file.close()


@pytest.fixture(scope="module")
def dask_address() -> Iterator[str]:
    """One Dask cluster for the runs that name an address (saves a start per run)."""
    from distributed import LocalCluster

    with LocalCluster(
        n_workers=1,
        threads_per_worker=2,
        processes=True,
        host="127.0.0.1",
        dashboard_address=None,
    ) as cluster:
        yield str(cluster.scheduler_address)


@pytest.fixture(scope="module")
def s3(server: dict[str, str]) -> Iterator[str]:
    """moto's S3 on 127.0.0.1 holding one raw file; the credentials block to read it."""
    import boto3
    from moto.server import ThreadedMotoServer
    from prefect.blocks.core import Block
    from pydantic import SecretStr

    moto = ThreadedMotoServer(ip_address="127.0.0.1", port=0)
    moto.start()
    host, port = moto.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    client = boto3.client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id=ACCESS_KEY,
        aws_secret_access_key=SECRET,
        region_name="us-east-1",
    )
    client.create_bucket(Bucket="edf-secret")
    client.upload_file(
        str(REPO.parent / "shared/data/raw/ek60" / GOOD[0]),
        "edf-secret",
        f"raw/{GOOD[0]}",
    )

    # prefect-aws is not a dependency: a block type of the same slug and fields.
    class AwsCredentials(Block):
        _block_type_slug = "aws-credentials"
        aws_access_key_id: str
        aws_secret_access_key: SecretStr

    AwsCredentials(
        aws_access_key_id=ACCESS_KEY, aws_secret_access_key=SecretStr(SECRET)
    ).save("edf-test-creds", overwrite=True)
    try:
        yield endpoint
    finally:
        moto.stop()


def _stage(source: Any, destination: str, **extra: Any) -> dict[str, Any]:
    return {
        "name": "Sv_flow",
        "tasks": [
            {"name": "edf_open_raw", "task_params": {"sonar_model": "EK60"}},
            {"name": "edf_compute_Sv"},
        ],
        "source": source,
        "destination": {"path": destination},
        **extra,
    }


def _service(name: str, address: str, stage: dict[str, Any], **extra: Any) -> Any:
    return {
        "name": name,
        "tags": ["edf-test"],
        "infrastructure": {
            "workpool": {"name": POOL, "workqueue": "tests", "type": "process"},
            "cluster": {"type": "address", "address": address},
        },
        "stages": [stage],
        **extra,
    }


@pytest.fixture(scope="module")
def files(
    tmp_path_factory: pytest.TempPathFactory,
    shared_data: Path,
    dask_address: str,
    s3: str,
) -> dict[str, Path]:
    """Raw copies, the example deployment (tmp copy) plus test services, logging."""
    root = tmp_path_factory.mktemp("engine")
    raw = shared_data / "raw" / "ek60"
    for folder, names in (("good", GOOD), ("bad", GOOD[:1]), ("tiny", GOOD[:1])):
        (root / folder).mkdir()
        for name in names:
            shutil.copy(raw / name, root / folder / name)
    # A raw file cut inside its first datagram: echopype cannot read it.
    (root / "bad" / BAD).write_bytes((raw / GOOD[1]).read_bytes()[:300])

    example = yaml.safe_load((REPO / "examples" / "ek60-sv.yaml").read_text())
    service = example["services"][0]
    service["infrastructure"]["workpool"] = {
        "name": POOL,
        "workqueue": "tests",
        "type": "process",
    }
    service["infrastructure"]["cluster"] = {"type": "local", "workers": 1}
    # Far in the future: this service runs only when the test triggers it.
    service["schedule"] = {"anchor_date": "D20990101-T000000", "interval_mins": 1440}
    service["stages"][0]["source"]["path"] = str(root / "good" / "*.raw")
    service["stages"][0]["destination"]["path"] = str(root / "out" / "example")
    service["logging"] = {"handler": "to-file"}
    # Late enough that the deploy below is done by then, early enough to wait for.
    fire_at = datetime.now(UTC) + timedelta(seconds=120)
    example["services"] += [
        _service(
            "bad-file",
            dask_address,
            _stage({"path": str(root / "bad" / "*.raw")}, str(root / "out" / "bad")),
        ),
        _service(
            "scheduled",
            dask_address,
            _stage({"path": str(root / "tiny" / "*.raw")}, str(root / "out" / "tiny")),
            schedule={
                "anchor_date": fire_at.strftime("D%Y%m%d-T%H%M%S"),
                "interval_mins": 1440,
            },
        ),
        _service(
            "secret-s3",
            dask_address,
            _stage(
                {
                    "path": "s3://edf-secret/raw/*.raw",
                    "storage_options": {
                        "block_name": "edf-test-creds",
                        "block_type": "AWS",
                        "endpoint_url": s3,
                    },
                },
                str(root / "out" / "s3"),
            ),
        ),
    ]
    deployment = root / "deployment.yaml"
    deployment.write_text(yaml.safe_dump(example, sort_keys=False))
    logging_yaml = root / "logging.yaml"
    logging_yaml.write_text(
        yaml.safe_dump(
            {
                "default": {"version": 1},
                "to-file": {
                    "version": 1,
                    "formatters": {"plain": {"format": "%(name)s %(message)s"}},
                    "handlers": {
                        "file": {
                            "class": "logging.FileHandler",
                            "filename": str(root / "service.log"),
                            "formatter": "plain",
                        }
                    },
                    "loggers": {
                        "echodataflow": {"level": "INFO", "handlers": ["file"]}
                    },
                },
            }
        )
    )
    return {"root": root, "deployment": deployment, "logging": logging_yaml}


def _cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / "echodataflow"), *args],
        env={**env, "COLUMNS": "200"},
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )


@pytest.fixture(scope="module")
def deployed(server: dict[str, str], files: dict[str, Path]) -> dict[str, Any]:
    """Deploy through the CLI, as an operator would."""
    result = _cli(
        server, "deploy", str(files["deployment"]), "--logging", str(files["logging"])
    )
    assert result.returncode == 0, result.stderr
    return {"stdout": result.stdout}


@pytest.fixture(scope="module")
def worker(
    server: dict[str, str], deployed: dict[str, Any], files: dict[str, Path]
) -> Iterator[Path]:
    """A real process worker on the test pool; its output (and the runs') in a file."""
    log_path = files["root"] / "worker.log"
    with log_path.open("wb") as log_file:
        process = subprocess.Popen(
            [
                BIN / "prefect",
                "worker",
                "start",
                "--pool",
                POOL,
                "--type",
                "process",
                # Two runs at a time: enough to overlap, not enough to starve 2 cores.
                "--limit",
                "2",
            ],
            env=server,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            cwd=files["root"],
        )
        try:
            yield log_path
        finally:
            stop(process, interrupts=2)


@pytest.fixture(scope="module")
def runs(worker: Path, deployed: dict[str, Any]) -> dict[str, Any]:
    """Start the manual runs at once; each test waits for its own."""
    from prefect import get_client
    from prefect.deployments import run_deployment

    started = {}
    for name in ("raw-to-sv", "bad-file", "secret-s3"):
        flow_run = run_deployment(f"edf_service/{name}", timeout=0)
        started[name] = flow_run.id
    # The same deployment, started with parameters that name unregistered code.
    with get_client(sync_client=True) as client:
        parameters = client.read_deployment_by_name("edf_service/bad-file").parameters
    service = parameters["service"]
    service["stages"][0]["tasks"][0]["module"] = "os"
    flow_run = run_deployment(
        "edf_service/bad-file", parameters={"service": service}, timeout=0
    )
    started["unregistered"] = flow_run.id
    return started


def _wait(flow_run_id: Any, timeout: float = 400) -> Any:
    from prefect import get_client

    deadline = time.monotonic() + timeout
    with get_client(sync_client=True) as client:
        while True:
            flow_run = client.read_flow_run(flow_run_id)
            if flow_run.state is not None and flow_run.state.is_final():
                return flow_run
            assert time.monotonic() < deadline, f"run still {flow_run.state_name}"
            time.sleep(2)


def _logs(flow_run_id: Any) -> str:
    """Every log line of a flow run and of its subflow runs (the stage flows)."""
    from prefect import get_client
    from prefect.client.schemas.filters import (
        FlowRunFilter,
        FlowRunFilterParentFlowRunId,
        LogFilter,
        LogFilterFlowRunId,
    )

    with get_client(sync_client=True) as client:
        children = client.read_flow_runs(
            flow_run_filter=FlowRunFilter(
                parent_flow_run_id=FlowRunFilterParentFlowRunId(any_=[flow_run_id])
            )
        )
        ids = [flow_run_id, *(child.id for child in children)]
        lines: list[str] = []
        offset = 0
        while True:
            page = client.read_logs(
                LogFilter(flow_run_id=LogFilterFlowRunId(any_=ids)),
                limit=200,
                offset=offset,
            )
            lines += [f"{log.name} {log.message}" for log in page]
            if len(page) < 200:
                return "\n".join(lines)
            offset += 200


def _stores(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.glob("*.zarr")) if folder.exists() else []


def test_deploy_lists_every_service_with_its_pool_and_queue(
    deployed: dict[str, Any],
) -> None:
    for name in ("raw-to-sv", "bad-file", "scheduled", "secret-s3"):
        assert name in deployed["stdout"]
    assert POOL in deployed["stdout"]


def test_a_triggered_run_of_the_example_completes_and_writes_sv_stores(
    runs: dict[str, Any], files: dict[str, Path]
) -> None:
    flow_run = _wait(runs["raw-to-sv"])
    assert flow_run.state_name == "Completed", flow_run.state.message
    out = files["root"] / "out" / "example"
    assert _stores(out) == sorted(f"{Path(n).stem}_Sv.zarr" for n in GOOD)


def test_messages_of_the_run_and_of_dask_workers_reach_the_prefect_run_log(
    runs: dict[str, Any], files: dict[str, Path]
) -> None:
    _wait(runs["raw-to-sv"])
    logs = _logs(runs["raw-to-sv"])
    assert "echodataflow.clusters Dask cluster local ready" in logs
    # Logged on a Dask worker process by run_chain, replayed inside the run.
    assert "[dask worker" in logs
    assert f"{Path(GOOD[0]).stem}_Sv.zarr in" in logs


def test_the_service_logging_handler_picks_its_entry_of_the_logging_file(
    runs: dict[str, Any], files: dict[str, Path]
) -> None:
    _wait(runs["raw-to-sv"])
    written = (files["root"] / "service.log").read_text()
    assert "echodataflow.clusters Dask cluster local ready" in written


def test_a_bad_raw_file_fails_the_run_names_the_file_and_keeps_the_good_ones(
    runs: dict[str, Any], files: dict[str, Path]
) -> None:
    flow_run = _wait(runs["bad-file"])
    assert flow_run.state_name == "Failed"
    assert BAD.removesuffix(".raw") in (flow_run.state.message or "")
    assert BAD in _logs(runs["bad-file"])
    assert _stores(files["root"] / "out" / "bad") == [f"{Path(GOOD[0]).stem}_Sv.zarr"]


def test_credentials_from_a_block_are_used_in_the_run_and_never_exposed(
    runs: dict[str, Any], files: dict[str, Path], worker: Path
) -> None:
    from prefect import get_client

    flow_run = _wait(runs["secret-s3"])
    assert flow_run.state_name == "Completed", flow_run.state.message
    assert _stores(files["root"] / "out" / "s3") == [f"{Path(GOOD[0]).stem}_Sv.zarr"]
    with get_client(sync_client=True) as client:
        deployment = client.read_deployment_by_name("edf_service/secret-s3")
        run = client.read_flow_run(runs["secret-s3"])
    exposed = {
        "deployment parameters": json.dumps(deployment.parameters),
        "run parameters": json.dumps(run.parameters),
        "run logs": _logs(runs["secret-s3"]),
        "worker output": worker.read_text(errors="replace"),
        "products": "".join(
            p.read_text(errors="replace")
            for p in (files["root"] / "out" / "s3").rglob("*.json")
        ),
    }
    assert "edf-test-creds" in exposed["deployment parameters"]
    for where, text in exposed.items():
        assert SECRET not in text, f"the secret is readable in the {where}"
        assert ACCESS_KEY not in text, f"the access key is readable in the {where}"


def test_a_run_naming_an_unregistered_module_is_refused(
    runs: dict[str, Any],
) -> None:
    finished = _wait(runs["unregistered"])
    assert finished.state_name == "Failed"
    assert "module 'os' is not registered" in (finished.state.message or "")


def test_the_interval_schedule_fires_a_run_that_completes(
    runs: dict[str, Any], files: dict[str, Path]
) -> None:
    from prefect import get_client
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId

    with get_client(sync_client=True) as client:
        deployment = client.read_deployment_by_name("edf_service/scheduled")
        deadline = time.monotonic() + 240
        while True:
            scheduled = client.read_flow_runs(
                deployment_filter=DeploymentFilter(
                    id=DeploymentFilterId(any_=[deployment.id])
                )
            )
            done = [r for r in scheduled if r.state and r.state.is_final()]
            if done:
                break
            assert time.monotonic() < deadline, "the schedule fired no run"
            time.sleep(3)
    assert done[0].auto_scheduled
    assert done[0].state_name == "Completed", done[0].state.message
    assert _stores(files["root"] / "out" / "tiny") == [f"{Path(GOOD[0]).stem}_Sv.zarr"]


def _api_view() -> dict[str, Any]:
    from prefect import get_client
    from prefect.client.schemas.filters import FlowFilter, FlowFilterName

    with get_client(sync_client=True) as client:
        pool = client.read_work_pool(POOL)
        queues = client.read_work_queues(work_pool_name=POOL)
        deployments = client.read_deployments(
            flow_filter=FlowFilter(name=FlowFilterName(any_=["edf_service"]))
        )
    return {
        # Not `updated`: a polling worker touches pools and deployments.
        "pool": (str(pool.id), pool.type, pool.base_job_template),
        "queues": sorted((q.name, str(q.id)) for q in queues),
        "deployments": sorted(
            (
                d.name,
                str(d.id),
                d.description,
                d.entrypoint,
                json.dumps(d.parameters, sort_keys=True),
                [(str(s.id), s.schedule.model_dump_json()) for s in d.schedules],
            )
            for d in deployments
        ),
    }


def test_deploying_twice_changes_nothing_and_a_changed_file_updates_in_place(
    server: dict[str, str],
    files: dict[str, Path],
    runs: dict[str, Any],
) -> None:
    from echodataflow.deployment.deployment_engine import deploy

    before = _api_view()
    again = deploy(files["deployment"], files["logging"])
    assert {d.action for d in again.services} == {"unchanged"}
    assert _api_view() == before

    changed = yaml.safe_load(files["deployment"].read_text())
    changed["services"][1]["description"] = "now with a description"
    edited = files["root"] / "changed.yaml"
    edited.write_text(yaml.safe_dump(changed, sort_keys=False))
    changed_result = deploy(edited, files["logging"])
    actions = {d.service: d.action for d in changed_result.services}
    assert actions["bad-file"] == "updated"
    assert actions["raw-to-sv"] == "unchanged"
    after = {d[0]: d for d in _api_view()["deployments"]}
    old = {d[0]: d for d in before["deployments"]}
    assert after["bad-file"][1] == old["bad-file"][1]
    assert after["bad-file"][2] == "now with a description"
    assert after["raw-to-sv"][1] == old["raw-to-sv"][1]


def test_prune_removes_deployments_of_services_no_longer_in_the_file(
    server: dict[str, str],
    files: dict[str, Path],
    runs: dict[str, Any],
) -> None:
    for name in runs.values():
        _wait(name)
    fewer = yaml.safe_load(files["deployment"].read_text())
    fewer["services"] = [s for s in fewer["services"] if s["name"] != "bad-file"]
    path = files["root"] / "fewer.yaml"
    path.write_text(yaml.safe_dump(fewer, sort_keys=False))
    from echodataflow.deployment.deployment_engine import deploy

    result = deploy(path, files["logging"], prune=True)
    assert result.pruned == ["bad-file"]
    names = [d[0] for d in _api_view()["deployments"]]
    assert "bad-file" not in names
    assert "raw-to-sv" in names


def test_status_shows_services_pools_and_last_runs(
    server: dict[str, str], runs: dict[str, Any]
) -> None:
    _wait(runs["raw-to-sv"])
    result = _cli(server, "status")
    assert result.returncode == 0, result.stderr
    assert "raw-to-sv" in result.stdout
    assert "Completed" in result.stdout
    assert POOL in result.stdout


def test_deploy_without_a_reachable_server_exits_3_with_one_line(
    files: dict[str, Path], server: dict[str, str]
) -> None:
    env = {**server, "PREFECT_API_URL": f"http://127.0.0.1:{free_port()}/api"}
    result = _cli(env, "deploy", str(files["deployment"]))
    assert result.returncode == 3
    assert result.stderr.startswith("error: Prefect API at")
    assert len(result.stderr.strip().splitlines()) == 1
