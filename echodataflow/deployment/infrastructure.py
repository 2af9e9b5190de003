"""Work pools and work queues: one pool and queue per service, created or updated.

The pool's Prefect type and base job template follow ``infrastructure.workpool.type``
through :data:`TEMPLATES`. ``workpool.job_variables`` set the defaults of the
template's variables, so every run of the pool gets them without a per-deployment
override.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable
from typing import Any

from prefect.client.orchestration import SyncPrefectClient
from prefect.client.schemas.actions import WorkPoolCreate, WorkPoolUpdate
from prefect.exceptions import ObjectNotFound

from echodataflow.exceptions import DeployError
from echodataflow.models.deployment import Workpool

log = logging.getLogger(__name__)

# (Prefect worker type, base job template) for one configured work pool.
PoolSpec = tuple[str, dict[str, Any]]


def _with_defaults(template: dict[str, Any], workpool: Workpool) -> dict[str, Any]:
    """Return ``template`` with ``job_variables`` as its variables' defaults."""
    template = copy.deepcopy(template)
    properties: dict[str, Any] = template["variables"]["properties"]
    unknown = sorted(set(workpool.job_variables) - set(properties))
    if unknown:
        raise DeployError(
            f"work pool {workpool.name!r}: job_variables {unknown} are not variables "
            f"of a {workpool.type} pool; accepted: {sorted(properties)}"
        )
    for key, value in workpool.job_variables.items():
        properties[key]["default"] = value
    return template


def process_pool(workpool: Workpool) -> PoolSpec:
    """Return the pool of ``prefect worker start --type process``: runs as processes."""
    from prefect.workers.process import ProcessWorker

    return "process", _with_defaults(
        ProcessWorker.get_default_base_job_template(), workpool
    )


def docker_pool(workpool: Workpool) -> PoolSpec:
    """Return the pool of prefect-docker's worker: each run in the pinned image."""
    try:
        from prefect_docker.worker import DockerWorker
    except ImportError as err:
        raise DeployError(
            f"work pool {workpool.name!r} is a docker pool: "
            "install echodataflow[docker]"
        ) from err
    from echodataflow.deployment.docker_pool import docker_job_template

    template = _with_defaults(DockerWorker.get_default_base_job_template(), workpool)
    # The pinned image and the typed workpool.docker settings (issue #7).
    return "docker", docker_job_template(workpool, template)


def hpc_pool(workpool: Workpool) -> PoolSpec:
    """Return the pool of a worker that runs as a SLURM or PBS job.

    The worker is a process worker (``hpc/*/prefect-worker.*``); its template runs
    each flow run through ``apptainer exec`` in the pinned image, when one is set.
    """
    from echodataflow.deployment.hpc_templates import hpc_base_job_template

    return "process", _with_defaults(hpc_base_job_template(workpool.image), workpool)


TEMPLATES: dict[str, Callable[[Workpool], PoolSpec]] = {
    "process": process_pool,
    "docker": docker_pool,
    "slurm": hpc_pool,
    "pbs": hpc_pool,
}


def pool_spec(workpool: Workpool) -> PoolSpec:
    """Return the Prefect pool type and base job template of a configured pool."""
    return TEMPLATES[workpool.type](workpool)


def ensure_work_pool(client: SyncPrefectClient, workpool: Workpool) -> str:
    """Create the work pool, or update it where it differs; return what was done.

    Returns
    -------
    str
        ``"created"``, ``"updated"`` or ``"unchanged"``.

    Raises
    ------
    DeployError
        When a pool of that name exists with another worker type.
    """
    kind, template = pool_spec(workpool)
    try:
        existing = client.read_work_pool(workpool.name)
    except ObjectNotFound:
        client.create_work_pool(
            WorkPoolCreate(
                name=workpool.name,
                type=kind,
                base_job_template=template,
                concurrency_limit=workpool.concurrency_limit,
            )
        )
        log.info("created work pool %s (%s)", workpool.name, kind)
        return "created"
    if existing.type != kind:
        raise DeployError(
            f"work pool {workpool.name!r} exists with type {existing.type!r}, not "
            f"{kind!r}; delete it (prefect work-pool delete) or name another pool"
        )
    if (
        existing.base_job_template == template
        and existing.concurrency_limit == workpool.concurrency_limit
    ):
        return "unchanged"
    update = WorkPoolUpdate(base_job_template=template)
    if existing.concurrency_limit != workpool.concurrency_limit:
        # None clears the limit; it must be sent explicitly to count as set.
        update.concurrency_limit = workpool.concurrency_limit
    client.update_work_pool(workpool.name, update)
    log.info("updated work pool %s", workpool.name)
    return "updated"


def ensure_work_queue(client: SyncPrefectClient, workpool: Workpool) -> str:
    """Create the pool's work queue if it is missing; return what was done."""
    try:
        client.read_work_queue_by_name(workpool.workqueue, work_pool_name=workpool.name)
    except ObjectNotFound:
        client.create_work_queue(name=workpool.workqueue, work_pool_name=workpool.name)
        log.info("created work queue %s in %s", workpool.workqueue, workpool.name)
        return "created"
    return "unchanged"
