"""Deploy services on a Prefect server: ``deploy_echodataflow`` and ``_deploy_service``.

Every service becomes one Prefect deployment of the ``edf_service`` flow, named after
the service, in the service's work pool and queue (created or updated here). The
deployment names the flow by module path, so a worker runs the ``echodataflow``
installed where it runs: no code is uploaded or pulled. Its parameters carry the
validated service (block names, never credentials), the logging entry and the
cluster settings.

Applying is idempotent: what the server already holds is compared with what the
file asks for, and a deployment that matches is left alone, so its id, schedules
and already scheduled runs stay as they are.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from echodataflow.exceptions import DeployError, ServerUnreachableError
from echodataflow.models.deployment import Deployment, Schedule, Service

if TYPE_CHECKING:
    from prefect.client.orchestration import SyncPrefectClient
    from prefect.client.schemas.actions import DeploymentScheduleCreate
    from prefect.client.schemas.responses import DeploymentResponse

log = logging.getLogger(__name__)

FLOW_NAME = "edf_service"
# A module path without a colon: Prefect imports it from the installed package,
# with no code download and no pull step (prefect.flows.load_flow_from_flow_run).
ENTRYPOINT = "echodataflow.deployment.service.edf_service"
# Every deployment echodataflow makes carries this tag; --prune touches no other.
OWNER_TAG = "echodataflow"
# An interval without anchor_date needs a fixed anchor, or every deploy would move
# the schedule (Prefect's default anchor is "now").
DEFAULT_ANCHOR = datetime(2000, 1, 1, tzinfo=UTC)
SCHEDULE_SLUG = "edf-schedule"


@dataclass(frozen=True)
class DeployedService:
    """What deploying one service did on the server."""

    service: str
    deployment_id: str
    action: str
    work_pool: str
    work_pool_action: str
    work_queue: str
    work_queue_action: str
    schedule: str


@dataclass
class DeployResult:
    """What ``deploy`` did: every service deployed, and deployments pruned."""

    deployment: Deployment
    services: list[DeployedService] = field(default_factory=list)
    pruned: list[str] = field(default_factory=list)


def prefect_schedule(schedule: Schedule | None) -> Any:
    """Return the Prefect 3 schedule of a service, or ``None`` when it has none.

    An interval keeps its anchor date (a fixed default when none is given), so
    runs fall on the same times at every deploy; cron keeps its time zone.
    """
    if schedule is None:
        return None
    from prefect.schedules import Cron, Interval

    if schedule.cron is not None:
        return Cron(schedule.cron, timezone=schedule.timezone, slug=SCHEDULE_SLUG)
    assert schedule.interval_mins is not None
    anchor = schedule.anchor_date or DEFAULT_ANCHOR
    if anchor.tzinfo is None:
        anchor = anchor.replace(tzinfo=UTC)
    return Interval(
        timedelta(minutes=schedule.interval_mins),
        anchor_date=anchor.astimezone(UTC),
        timezone="UTC",
        slug=SCHEDULE_SLUG,
    )


def describe_schedule(schedule: Schedule | None) -> str:
    """Return a short human description of a service's schedule."""
    if schedule is None:
        return "manual"
    if schedule.cron is not None:
        return f"cron {schedule.cron} ({schedule.timezone})"
    anchor = (schedule.anchor_date or DEFAULT_ANCHOR).strftime("%Y-%m-%d %H:%M:%S")
    return f"every {schedule.interval_mins} min from {anchor} UTC"


def flow_parameters(
    service: Service, logging_dict: dict[str, Any] | None
) -> dict[str, Any]:
    """Return the deployment parameters of ``edf_service`` for one service.

    Everything is plain JSON. Storage options name Prefect blocks and are resolved
    inside the run, so no credential is ever part of the parameters.
    """
    return {
        "service": service.model_dump(mode="json"),
        "logging_dict": logging_dict,
        "cluster": service.infrastructure.cluster.model_dump(mode="json"),
        "force": False,
    }


def deployment_tags(service: Service) -> list[str]:
    """Return the service's tags with the owner tag that ``--prune`` relies on."""
    return list(dict.fromkeys([*service.tags, OWNER_TAG]))


def _schedule_key(schedule: Any) -> tuple[Any, ...] | None:
    """Reduce a Prefect schedule to what decides when runs happen, for comparing."""
    if schedule is None:
        return None
    interval = getattr(schedule, "interval", None)
    if interval is not None:
        anchor = schedule.anchor_date
        if anchor.tzinfo is None:
            anchor = anchor.replace(tzinfo=UTC)
        return ("interval", interval.total_seconds(), anchor.astimezone(UTC))
    return ("cron", schedule.cron, schedule.timezone or "UTC")


def _schedule_creates(service: Service) -> list[DeploymentScheduleCreate]:
    from prefect.client.schemas.actions import DeploymentScheduleCreate

    schedule = prefect_schedule(service.schedule)
    return (
        [] if schedule is None else [DeploymentScheduleCreate.from_schedule(schedule)]
    )


def _parameter_schema() -> dict[str, Any]:
    from prefect.utilities.callables import parameter_schema

    from echodataflow.deployment.service import edf_service

    schema: dict[str, Any] = parameter_schema(edf_service.fn).model_dump(mode="json")
    return schema


def _as_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, default=str)


def _unchanged(
    existing: DeploymentResponse,
    service: Service,
    parameters: dict[str, Any],
    schema: dict[str, Any],
) -> bool:
    """Return whether the server's deployment already is what the file asks for."""
    workpool = service.infrastructure.workpool
    wanted = _schedule_key(
        None if service.schedule is None else _schedule_creates(service)[0].schedule
    )
    held = [_schedule_key(s.schedule) for s in existing.schedules]
    return (
        existing.entrypoint == ENTRYPOINT
        and not existing.pull_steps
        and (existing.description or None) == (service.description or None)
        and list(existing.tags) == deployment_tags(service)
        and _as_json(existing.parameters) == _as_json(parameters)
        and _as_json(existing.parameter_openapi_schema) == _as_json(schema)
        and existing.work_pool_name == workpool.name
        and existing.work_queue_name == workpool.workqueue
        and held == ([] if wanted is None else [wanted])
    )


def apply_service(service: Service, logging_dict: dict[str, Any] | None) -> str:
    """Create or update the Prefect deployment of one service; return its id.

    The work pool and queue must exist (:func:`_deploy_service` makes them).

    Raises
    ------
    ServerUnreachableError
        When the Prefect API does not answer.
    """
    with prefect_client() as client:
        deployment_id, _ = _apply(client, service, logging_dict)
    return deployment_id


def _plan(
    client: SyncPrefectClient, service: Service, logging_dict: dict[str, Any] | None
) -> tuple[str | None, str]:
    """Return the id the service's deployment has, and what applying would do."""
    from prefect.exceptions import ObjectNotFound

    try:
        existing = client.read_deployment_by_name(f"{FLOW_NAME}/{service.name}")
    except ObjectNotFound:
        return None, "created"
    parameters = flow_parameters(service, logging_dict)
    if _unchanged(existing, service, parameters, _parameter_schema()):
        return str(existing.id), "unchanged"
    return str(existing.id), "updated"


def _apply(
    client: SyncPrefectClient, service: Service, logging_dict: dict[str, Any] | None
) -> tuple[str, str]:
    existing_id, action = _plan(client, service, logging_dict)
    if existing_id is not None and action == "unchanged":
        return existing_id, action
    workpool = service.infrastructure.workpool
    flow_id = client.create_flow_from_name(FLOW_NAME)
    # Creating again under the same flow and name updates in place: Prefect keeps
    # the id and replaces the schedules (and the runs it had scheduled).
    deployment_id = client.create_deployment(
        flow_id=flow_id,
        name=service.name,
        # Not None: the server would store the text "None" as the description.
        description=service.description or "",
        tags=deployment_tags(service),
        parameters=flow_parameters(service, logging_dict),
        parameter_openapi_schema=_parameter_schema(),
        entrypoint=ENTRYPOINT,
        work_pool_name=workpool.name,
        work_queue_name=workpool.workqueue,
        schedules=_schedule_creates(service),
        pull_steps=[],
    )
    return str(deployment_id), action


def _deploy_service(
    service: Service,
    logging_dict: dict[str, Any] | None,
    client: SyncPrefectClient | None = None,
) -> DeployedService:
    """Create or update the service's work pool and queue, then its deployment.

    The deployment itself goes through :meth:`Service.deploy`, the models' thin
    entry into this engine.

    Raises
    ------
    DeployError
        When the pool cannot be made as configured.
    ServerUnreachableError
        When the Prefect API does not answer.
    """
    from echodataflow.deployment.infrastructure import (
        ensure_work_pool,
        ensure_work_queue,
    )

    workpool = service.infrastructure.workpool
    with _client_or(client) as c:
        pool_action = ensure_work_pool(c, workpool)
        queue_action = ensure_work_queue(c, workpool)
        _, action = _plan(c, service, logging_dict)
    deployment_id = service.deploy(logging_dict)
    deployed = DeployedService(
        service=service.name,
        deployment_id=deployment_id,
        action=action,
        work_pool=workpool.name,
        work_pool_action=pool_action,
        work_queue=workpool.workqueue,
        work_queue_action=queue_action,
        schedule=describe_schedule(service.schedule),
    )
    log.info(
        "service %s: deployment %s %s (%s/%s, %s)",
        service.name,
        deployment_id,
        action,
        workpool.name,
        workpool.workqueue,
        deployed.schedule,
    )
    return deployed


@contextmanager
def _client_or(client: SyncPrefectClient | None) -> Iterator[SyncPrefectClient]:
    if client is not None:
        yield client
        return
    with prefect_client() as fresh:
        yield fresh


@contextmanager
def prefect_client() -> Iterator[SyncPrefectClient]:
    """Open a client of the configured Prefect server, checked to answer.

    Raises
    ------
    ServerUnreachableError
        When ``PREFECT_API_URL`` is not set (deploying to a throw-away embedded
        server would be lost) or the API does not answer its health check.
    """
    import httpx
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL

    url = PREFECT_API_URL.value()
    if not url:
        raise ServerUnreachableError(
            "PREFECT_API_URL is not set: start a server (just server) and export "
            "PREFECT_API_URL=http://127.0.0.1:4200/api"
        )
    try:
        with get_client(sync_client=True) as client:
            failure = client.api_healthcheck()
            if failure is not None:
                raise ServerUnreachableError(
                    f"Prefect API at {url} does not answer: {failure}"
                )
            yield client
    except httpx.TransportError as err:
        raise ServerUnreachableError(
            f"Prefect API at {url} does not answer: {err}"
        ) from err


def load_files(
    deployment_yaml: str | Path, logging_yaml: str | Path | None = None
) -> tuple[Deployment, dict[str, dict[str, Any] | None]]:
    """Read, validate and resolve both files; return each service's logging entry.

    Raises
    ------
    ConfigError
        With one located problem per bad key, in either file.
    """
    from echodataflow.models.load import load_files as load_validated

    resolved, logging_config = load_validated(deployment_yaml, logging_yaml)
    entries: dict[str, dict[str, Any] | None] = {}
    for service in resolved.services:
        handler = service.logging.handler if service.logging else None
        entries[service.name] = (
            logging_config.for_service(handler) if logging_config else None
        )
    return resolved, entries


def deploy(
    deployment_yaml: str | Path,
    logging_yaml: str | Path | None = None,
    *,
    prune: bool = False,
) -> DeployResult:
    """Deploy every service of a file; report what changed (``deploy_echodataflow``)."""
    deployment, entries = load_files(deployment_yaml, logging_yaml)
    result = DeployResult(deployment)
    with prefect_client() as client:
        for service in deployment.services:
            result.services.append(
                _deploy_service(service, entries[service.name], client)
            )
        if prune:
            result.pruned = prune_services(
                client, {s.name for s in deployment.services}
            )
    return result


def prune_services(client: SyncPrefectClient, keep: set[str]) -> list[str]:
    """Delete echodataflow's deployments of services not in ``keep``; return names."""
    from prefect.client.schemas.filters import (
        DeploymentFilter,
        DeploymentFilterTags,
        FlowFilter,
        FlowFilterName,
    )

    owned = client.read_deployments(
        flow_filter=FlowFilter(name=FlowFilterName(any_=[FLOW_NAME])),
        deployment_filter=DeploymentFilter(tags=DeploymentFilterTags(all_=[OWNER_TAG])),
    )
    pruned = []
    for deployment in owned:
        if deployment.name not in keep:
            client.delete_deployment(deployment.id)
            log.info("pruned deployment %s (%s)", deployment.name, deployment.id)
            pruned.append(deployment.name)
    return sorted(pruned)


@dataclass(frozen=True)
class ServiceStatus:
    """One deployed service as the Prefect server sees it."""

    service: str
    deployment_id: str
    work_pool: str
    work_queue: str
    schedule: str
    paused: bool
    last_run: str
    last_state: str
    last_time: datetime | None
    next_run: datetime | None


@dataclass(frozen=True)
class PoolStatus:
    """One work pool and its queues."""

    name: str
    type: str
    status: str
    queues: list[str]


def _schedule_text(schedule: Any) -> str:
    key = _schedule_key(schedule)
    if key is None:
        return "manual"
    if key[0] == "interval":
        return f"every {key[1] / 60:g} min from {key[2]:%Y-%m-%d %H:%M:%S} UTC"
    return f"cron {key[1]} ({key[2]})"


def server_status() -> tuple[list[ServiceStatus], list[PoolStatus]]:
    """Read echodataflow's deployments, their last and next runs, and their pools.

    Raises
    ------
    ServerUnreachableError
        When ``PREFECT_API_URL`` is unset or the API does not answer.
    """
    from prefect.client.schemas.filters import (
        DeploymentFilter,
        DeploymentFilterId,
        DeploymentFilterTags,
        FlowFilter,
        FlowFilterName,
        FlowRunFilter,
        FlowRunFilterState,
        FlowRunFilterStateType,
    )
    from prefect.client.schemas.objects import StateType
    from prefect.client.schemas.sorting import FlowRunSort

    services: list[ServiceStatus] = []
    pools: list[PoolStatus] = []
    with prefect_client() as client:
        deployments = client.read_deployments(
            flow_filter=FlowFilter(name=FlowFilterName(any_=[FLOW_NAME])),
            deployment_filter=DeploymentFilter(
                tags=DeploymentFilterTags(all_=[OWNER_TAG])
            ),
        )
        for d in sorted(deployments, key=lambda d: d.name):
            mine = DeploymentFilter(id=DeploymentFilterId(any_=[d.id]))
            last = client.read_flow_runs(
                deployment_filter=mine,
                flow_run_filter=FlowRunFilter(
                    state=FlowRunFilterState(
                        type=FlowRunFilterStateType(not_any_=[StateType.SCHEDULED])
                    )
                ),
                sort=FlowRunSort.EXPECTED_START_TIME_DESC,
                limit=1,
            )
            upcoming = client.read_flow_runs(
                deployment_filter=mine,
                flow_run_filter=FlowRunFilter(
                    state=FlowRunFilterState(
                        type=FlowRunFilterStateType(any_=[StateType.SCHEDULED])
                    )
                ),
                sort=FlowRunSort.EXPECTED_START_TIME_ASC,
                limit=1,
            )
            run = last[0] if last else None
            services.append(
                ServiceStatus(
                    service=d.name,
                    deployment_id=str(d.id),
                    work_pool=d.work_pool_name or "",
                    work_queue=d.work_queue_name or "",
                    schedule=", ".join(_schedule_text(s.schedule) for s in d.schedules)
                    or "manual",
                    paused=bool(d.paused),
                    last_run=run.name if run else "",
                    last_state=run.state_name or "" if run else "",
                    last_time=(run.start_time or run.expected_start_time)
                    if run
                    else None,
                    next_run=upcoming[0].expected_start_time if upcoming else None,
                )
            )
        names = sorted({s.work_pool for s in services if s.work_pool})
        for name in names:
            pool = client.read_work_pool(name)
            queues = client.read_work_queues(work_pool_name=name)
            pools.append(
                PoolStatus(
                    name=name,
                    type=pool.type,
                    status=str(pool.status.value if pool.status else ""),
                    queues=sorted(q.name for q in queues),
                )
            )
    return services, pools


def deploy_echodataflow(
    deployment_yaml: str | Path,
    logging_yaml: str | Path | None = None,
    *,
    prune: bool = False,
) -> Deployment:
    """Deploy every service of a deployment file on the configured Prefect server.

    Each service gets its work pool and queue (created, or updated where they
    differ) and a deployment of ``edf_service`` named after it; deploying the same
    file twice changes nothing.

    Parameters
    ----------
    deployment_yaml
        The deployment file.
    logging_yaml
        The logging file; each service gets its ``logging.handler`` entry, else
        ``default``.
    prune
        Also delete echodataflow's deployments of services no longer in the file.

    Returns
    -------
    Deployment
        The validated deployment, with deployment-wide paths applied.

    Raises
    ------
    ConfigError
        When either file is invalid.
    DeployError
        When a pool cannot be made as configured.
    ServerUnreachableError
        When ``PREFECT_API_URL`` is unset or the API does not answer.
    """
    result = deploy(deployment_yaml, logging_yaml, prune=prune)
    for deployed in result.services:
        log.info(
            "deployed %s: %s (%s)",
            deployed.service,
            deployed.deployment_id,
            deployed.action,
        )
    for name in result.pruned:
        log.info("pruned %s", name)
    return result.deployment


__all__ = [
    "DeployError",
    "DeployResult",
    "DeployedService",
    "apply_service",
    "deploy",
    "deploy_echodataflow",
]
