"""Schedules, parameters, pool templates and log capture, without a server."""

from __future__ import annotations

import json
import logging
import os
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from echodataflow.deployment import deployment_engine as engine
from echodataflow.deployment import infrastructure
from echodataflow.exceptions import DeployError, RegistryError
from echodataflow.logs import LogLine, capture_lines, replay
from echodataflow.models.deployment import Schedule, Service, Workpool
from echodataflow.registry import require_registered


def _service(**extra: Any) -> Service:
    data: dict[str, Any] = {
        "name": "raw-to-sv",
        "description": "Sv",
        "tags": ["ek60"],
        "stages": [
            {
                "tasks": [
                    {"name": "edf_open_raw", "task_params": {"sonar_model": "EK60"}}
                ],
                "source": {
                    "path": "s3://bucket/raw/*.raw",
                    "storage_options": {"block_name": "lab-creds", "block_type": "AWS"},
                },
                "destination": {"path": "/data/Sv"},
            }
        ],
        **extra,
    }
    return Service.model_validate(data)


def test_an_interval_schedule_keeps_its_anchor_date_and_minutes() -> None:
    schedule = engine.prefect_schedule(
        Schedule.model_validate(
            {"anchor_date": "D20241007-T035100", "interval_mins": 10}
        )
    )
    assert schedule.interval == timedelta(minutes=10)
    assert schedule.anchor_date == datetime(2024, 10, 7, 3, 51, tzinfo=UTC)


def test_an_interval_without_anchor_gets_the_same_anchor_at_every_deploy() -> None:
    first = engine.prefect_schedule(Schedule(interval_mins=5))
    second = engine.prefect_schedule(Schedule(interval_mins=5))
    assert first.anchor_date == second.anchor_date == engine.DEFAULT_ANCHOR


def test_a_cron_schedule_keeps_its_expression_and_time_zone() -> None:
    schedule = engine.prefect_schedule(
        Schedule(cron="*/10 * * * *", timezone="America/Los_Angeles")
    )
    assert schedule.cron == "*/10 * * * *"
    assert schedule.timezone == "America/Los_Angeles"
    assert engine.prefect_schedule(None) is None


def test_parameters_are_json_and_name_blocks_not_credentials() -> None:
    service = _service()
    parameters = engine.flow_parameters(service, {"version": 1})
    text = json.dumps(parameters)
    assert parameters["service"]["name"] == "raw-to-sv"
    assert parameters["cluster"]["type"] == "local"
    assert '"block_name": "lab-creds"' in text
    assert Service.model_validate(parameters["service"]) == service


def test_deployments_carry_the_owner_tag_once() -> None:
    service = _service(tags=["ek60", "echodataflow"])
    assert engine.deployment_tags(service) == ["ek60", "echodataflow"]
    assert engine.deployment_tags(_service()) == ["ek60", "echodataflow"]


def test_a_process_pool_gets_prefects_template_with_job_variables_as_defaults() -> None:
    kind, template = infrastructure.pool_spec(
        Workpool(job_variables={"env": {"EDF": "1"}, "working_dir": "/srv/edf"})
    )
    properties = template["variables"]["properties"]
    assert kind == "process"
    assert properties["env"]["default"] == {"EDF": "1"}
    assert properties["working_dir"]["default"] == "/srv/edf"


def test_a_docker_pool_gets_the_image_and_volumes() -> None:
    kind, template = infrastructure.pool_spec(
        Workpool(
            type="docker",
            image="echodataflow/worker:0.1",
            job_variables={"volumes": ["/data:/data"], "network_mode": "host"},
        )
    )
    properties = template["variables"]["properties"]
    assert kind == "docker"
    assert properties["image"]["default"] == "echodataflow/worker:0.1"
    assert properties["volumes"]["default"] == ["/data:/data"]


@pytest.mark.parametrize("kind", ["slurm", "pbs"])
def test_hpc_pools_are_routed_to_a_pool_of_their_own(kind: str) -> None:
    assert infrastructure.TEMPLATES[kind] is infrastructure.hpc_pool
    assert infrastructure.pool_spec(Workpool(type=kind))[0] == "process"


def test_an_hpc_pool_with_an_image_runs_each_flow_run_through_apptainer() -> None:
    kind, template = infrastructure.pool_spec(
        Workpool(type="slurm", image="/shared/images/echodataflow.sif")
    )
    properties = template["variables"]["properties"]
    assert kind == "process"
    assert properties["image"]["default"] == "/shared/images/echodataflow.sif"
    assert "exec" in template["job_configuration"]["command"]


def test_an_unknown_job_variable_is_refused_with_the_accepted_ones() -> None:
    with pytest.raises(DeployError, match=r"job_variables \['imgae'\].*accepted"):
        infrastructure.pool_spec(Workpool(job_variables={"imgae": "x"}))


def test_stages_naming_an_unregistered_step_module_are_refused() -> None:
    service = _service()
    stage = service.stages[0]
    task = stage.tasks[0].model_copy(update={"module": "os"})
    bad = stage.model_copy(update={"tasks": [task]})
    with pytest.raises(RegistryError, match="module 'os' is not registered"):
        require_registered([bad])
    require_registered(service.stages)


def test_lines_logged_in_another_process_are_captured_and_replayed(
    caplog: pytest.LogCaptureFixture,
) -> None:
    log = logging.getLogger("echodataflow.tests")
    with capture_lines() as lines:
        log.info("made %s", "x_Sv.zarr")
        log.debug("not kept")
    assert [(line.levelno, line.message) for line in lines] == [
        (logging.INFO, "made x_Sv.zarr")
    ]
    caplog.set_level(logging.INFO, logger="echodataflow")
    caplog.clear()
    replay(lines)  # same process: already logged here, not repeated
    replay(
        [LogLine("echodataflow.tests", logging.WARNING, "on a worker", os.getpid() + 1)]
    )
    messages = [r.getMessage() for r in caplog.records]
    assert messages == [f"[dask worker {os.getpid() + 1}] on a worker"]


def test_deploy_without_a_prefect_api_url_says_how_to_set_one(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from echodataflow.exceptions import ServerUnreachableError

    with (
        temporary_settings(restore_defaults={PREFECT_API_URL}),
        pytest.raises(ServerUnreachableError, match="PREFECT_API_URL is not set"),
        engine.prefect_client(),
    ):
        pass
