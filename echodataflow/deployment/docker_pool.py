"""The base job template of a docker work pool: each flow run in the pinned image.

prefect-docker's worker describes its containers by job variables (image, volumes,
env, network mode, memory limit, pull policy, ...). :func:`docker_job_template`
sets their defaults from a service's ``workpool`` settings, so every run of the pool
starts the same container without per-deployment overrides.
"""

from __future__ import annotations

import copy
import logging
import re
from typing import Any

from echodataflow.exceptions import DeployError
from echodataflow.models.deployment import DOCKER_JOB_VARIABLES, Workpool

log = logging.getLogger(__name__)

RUN_PREFECT_HOME = "/home/edf/.prefect"  # the run image's user (containers/Dockerfile)
_DIGEST = re.compile(r"(^|@)sha256:[0-9a-f]{64}$")


def is_pinned(image: str) -> bool:
    """Whether ``image`` names one immutable image: ``name@sha256:...`` or an id."""
    return bool(_DIGEST.search(image))


def default_template() -> dict[str, Any]:
    """prefect-docker's own base job template, untouched.

    Raises
    ------
    DeployError
        When prefect-docker is not installed.
    """
    try:
        from prefect_docker.worker import DockerWorker
    except ImportError as err:
        raise DeployError(
            "docker work pools need prefect-docker: pip install 'echodataflow[docker]'"
        ) from err
    template: dict[str, Any] = DockerWorker.get_default_base_job_template()
    return template


def docker_job_template(
    workpool: Workpool, template: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Return a docker pool's base job template with the service's settings.

    Parameters
    ----------
    workpool
        The service's ``infrastructure.workpool``; its ``image`` is required and its
        ``docker`` settings become the defaults of the matching job variables.
    template
        A docker base job template to start from (e.g. one whose defaults already
        carry ``job_variables``); default: prefect-docker's own.

    Raises
    ------
    DeployError
        When the pool names no image.
    """
    if not workpool.image:
        raise DeployError(
            f"work pool {workpool.name!r} is a docker pool and needs workpool.image: "
            "the run image pinned by digest (name@sha256:...) or by id "
            "(docker inspect --format '{{.Id}}' IMAGE)"
        )
    if not is_pinned(workpool.image):
        log.warning(
            "work pool %s: image %s is not pinned by digest; runs may start a "
            "different image after a rebuild",
            workpool.name,
            workpool.image,
        )
    template = copy.deepcopy(template if template is not None else default_template())
    properties: dict[str, Any] = template["variables"]["properties"]
    properties["image"]["default"] = workpool.image
    # The worker hands its own Prefect settings to the run, PREFECT_HOME included;
    # a host path means nothing in the container, so the image user's home wins.
    properties["env"]["default"] = {
        "PREFECT_HOME": RUN_PREFECT_HOME,
        **properties["env"].get("default", {}),
    }
    if workpool.docker is not None:
        for field in sorted(workpool.docker.model_fields_set):
            value = getattr(workpool.docker, field)
            if field == "env":
                value = {**properties["env"]["default"], **value}
            if value:
                properties[DOCKER_JOB_VARIABLES[field]]["default"] = value
    return template
