"""``edf_service``: one run of one service.

Applies the service's logging, builds its Dask cluster, runs its stages in order
(a stage may bring a cluster of its own), removes intermediate products the service
does not keep, and always tears the clusters down.
"""

from __future__ import annotations

from contextlib import ExitStack
from datetime import UTC, datetime
from typing import Any

from prefect import flow, get_run_logger
from prefect.client.schemas.objects import State
from prefect.runtime import deployment, flow_run
from prefect.states import Completed, Failed

from echodataflow import storage
from echodataflow.clusters import open_cluster, with_workpool_image
from echodataflow.deployment.flow import with_pool
from echodataflow.deployment.report import RunContext, ServiceReport, StageReport
from echodataflow.logs import apply_logging, forward_to_run
from echodataflow.models.deployment import Cluster, Service
from echodataflow.registry import require_registered, stage_flow


def _scheduled() -> datetime:
    when = flow_run.scheduled_start_time
    return when.astimezone(UTC) if when is not None else datetime.now(UTC)


@flow(name="edf_service", persist_result=False)
def edf_service(
    service: Service,
    logging_dict: dict[str, Any] | None = None,
    cluster: Cluster | None = None,
    force: bool = False,
    context: RunContext | None = None,
) -> State:
    """Run every stage of ``service`` in order on its Dask cluster.

    Parameters
    ----------
    service
        The validated service, with deployment-wide paths already applied.
    logging_dict
        The ``dictConfig`` entry the service's ``logging.handler`` picks.
    cluster
        Overrides ``service.infrastructure.cluster``.
    force
        Remake every product, up to date or not.
    context
        The run's id, time and ``force``, where the caller made them before the
        flow began (``echodataflow run`` submits products ahead of it under that
        run id); by default the run id is the flow run's.
    """
    apply_logging(logging_dict)
    forward_to_run(deployed=deployment.id is not None)
    logger = get_run_logger()
    # Parameters can be edited by whoever starts a run: refuse unregistered code
    # before anything is imported or started.
    require_registered(service.stages)
    if context is None:
        context = RunContext(
            run_id=str(flow_run.id or "local"),
            service=service.name,
            scheduled=_scheduled(),
            force=force,
        )
    report = ServiceReport(service=service.name, run_id=context.run_id)
    workpool = service.infrastructure.workpool
    service_cluster = with_workpool_image(
        cluster or service.infrastructure.cluster, workpool
    )
    with open_cluster(service_cluster) as service_client:
        for stage in service.stages:
            with ExitStack() as stage_stack:
                client = service_client
                if stage.cluster is not None:
                    client = stage_stack.enter_context(
                        open_cluster(with_workpool_image(stage.cluster, workpool))
                    )
                run_stage = with_pool(stage_flow(stage.module, stage.name), client)
                stage_report: StageReport = run_stage(
                    stage, context, str(client.scheduler_info()["address"])
                )
            report.stages.append(stage_report)
    _remove_intermediates(service, logger)
    logger.info("service %s finished\n%s", service.name, report.summary())
    if report.ok:
        return Completed(message=report.summary(), data=report)
    return Failed(message=report.summary(), data=report)


def _remove_intermediates(service: Service, logger: Any) -> None:
    for stage in service.stages:
        if not stage.options.save_offline:
            options = storage.resolve_storage_options(stage.destination.storage_options)
            logger.info("removing intermediate products of %s", stage.name)
            storage.remove(stage.destination.path, options)
