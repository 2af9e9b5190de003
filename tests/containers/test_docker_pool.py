"""The docker pool's base job template, built from a service's workpool settings."""

from __future__ import annotations

import logging
from typing import Any

import pytest
from pydantic import ValidationError

from echodataflow.deployment.docker_pool import docker_job_template, is_pinned
from echodataflow.deployment.infrastructure import pool_spec
from echodataflow.exceptions import DeployError
from echodataflow.models.deployment import Workpool

IMAGE_ID = "sha256:" + "ab" * 32


def _workpool(**fields: Any) -> Workpool:
    return Workpool.model_validate({"name": "p", "type": "docker", **fields})


def _defaults(template: dict[str, Any]) -> dict[str, Any]:
    properties = template["variables"]["properties"]
    return {key: value.get("default") for key, value in properties.items()}


def test_the_template_pins_the_image_and_carries_every_docker_setting() -> None:
    workpool = _workpool(
        image=IMAGE_ID,
        docker={
            "volumes": ["/data/raw:/data/raw:ro", "products:/data/products"],
            "env": {"DASK_LOGGING__DISTRIBUTED": "warning"},
            "network_mode": "host",
            "mem_limit": "8g",
            "pull_policy": "Never",
        },
    )
    defaults = _defaults(docker_job_template(workpool))
    assert defaults["image"] == IMAGE_ID
    assert defaults["volumes"] == ["/data/raw:/data/raw:ro", "products:/data/products"]
    assert defaults["env"] == {
        "PREFECT_HOME": "/home/edf/.prefect",
        "DASK_LOGGING__DISTRIBUTED": "warning",
    }
    assert defaults["network_mode"] == "host"
    assert defaults["mem_limit"] == "8g"
    assert defaults["image_pull_policy"] == "Never"


def test_the_engine_makes_a_docker_pool_with_settings_and_job_variables() -> None:
    workpool = _workpool(
        image=IMAGE_ID,
        job_variables={"auto_remove": True, "networks": ["edf"]},
        docker={"pull_policy": "IfNotPresent"},
    )
    kind, template = pool_spec(workpool)
    defaults = _defaults(template)
    assert kind == "docker"
    assert defaults["auto_remove"] is True
    assert defaults["networks"] == ["edf"]
    assert defaults["image_pull_policy"] == "IfNotPresent"
    # The job itself still reads every variable from the template.
    assert template["job_configuration"]["image"] == "{{ image }}"


def test_runs_keep_their_prefect_home_in_the_image_whatever_the_worker_has() -> None:
    defaults = _defaults(docker_job_template(_workpool(image=IMAGE_ID)))
    assert defaults["env"] == {"PREFECT_HOME": "/home/edf/.prefect"}
    overridden = _workpool(image=IMAGE_ID, docker={"env": {"PREFECT_HOME": "/x"}})
    assert _defaults(docker_job_template(overridden))["env"] == {"PREFECT_HOME": "/x"}


def test_a_docker_pool_without_an_image_is_refused_with_the_pinning_command() -> None:
    with pytest.raises(DeployError, match=r"needs workpool.image.*docker inspect"):
        docker_job_template(_workpool())


def test_an_image_pinned_by_tag_only_is_deployed_with_a_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.WARNING):
        docker_job_template(_workpool(image="echodataflow:local"))
    assert "not pinned by digest" in caplog.text


@pytest.mark.parametrize(
    ("image", "pinned"),
    [
        (IMAGE_ID, True),
        ("ghcr.io/org/echodataflow@" + IMAGE_ID, True),
        ("echodataflow:local", False),
        ("echodataflow@sha256:abc", False),
    ],
)
def test_pinned_means_a_full_digest_or_image_id(image: str, pinned: bool) -> None:
    assert is_pinned(image) is pinned


@pytest.mark.parametrize(
    ("docker", "message"),
    [
        ({"volumes": ["/data"]}, r"not SOURCE:TARGET\[:ro\|rw\]"),
        ({"volumes": ["/data:data"]}, r"absolute TARGET"),
        ({"volumes": ["/a:/b:rx"]}, r"not SOURCE:TARGET"),
        ({"volumes": ["./data:/data"]}, r"absolute path or a named volume"),
        ({"env": {"AWS_SECRET_ACCESS_KEY": "x"}}, r"looks like a secret"),
        ({"env": {"PREFECT_API_AUTH_STRING": "u:p"}}, r"looks like a secret"),
        ({"env": {"1BAD": "x"}}, r"not a valid variable name"),
        ({"mem_limit": "8 GB"}, r"should match pattern"),
        ({"pull_policy": "Sometimes"}, r"'Always', 'IfNotPresent' or 'Never'"),
        ({"network": "host"}, r"Extra inputs are not permitted"),
    ],
)
def test_bad_docker_settings_are_rejected_with_the_reason(
    docker: dict[str, Any], message: str
) -> None:
    with pytest.raises(ValidationError, match=message):
        _workpool(image=IMAGE_ID, docker=docker)


def test_docker_settings_on_a_process_pool_are_rejected() -> None:
    with pytest.raises(ValidationError, match="apply to type: docker, not process"):
        Workpool.model_validate({"type": "process", "docker": {"mem_limit": "1g"}})


def test_a_setting_given_both_typed_and_as_job_variable_is_rejected() -> None:
    with pytest.raises(ValidationError, match=r"\['image_pull_policy'\] are also set"):
        _workpool(
            image=IMAGE_ID,
            docker={"pull_policy": "Never"},
            job_variables={"image_pull_policy": "Always"},
        )
