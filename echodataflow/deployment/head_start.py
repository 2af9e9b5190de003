"""A run's first products go to the Dask workers before Prefect is up.

``echodataflow run`` starts its own Prefect server, whose process takes seconds of
CPU to import its application; the local Dask workers are ready before it. While the
server comes up, :func:`begin` plans the first stage in a thread of the run process
and hands its products to the cluster that ``clusters.prestart`` started. Each one
is submitted under ``ChainJob.dask_key``, a Dask key made from the job itself. When the
stage flow submits its products (``batch.py``), a job it planned the same way has
the same key and gets the task already running or finished, not a second one. The
flow still plans, records, reports, retries and times out every product as usual.

A job the flow does not plan after all (a file that changed or disappeared in those
seconds) is cancelled by :func:`claim`. If it was already running, its product may
still be written, but only after ``ledger.mark_writing``: without a done record it
is not taken as up to date, and the next run remakes it.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Iterable
from typing import Any

from distributed import Client, Future

from echodataflow.deployment.plan import plan_stage
from echodataflow.deployment.report import RunContext
from echodataflow.models.deployment import Service
from echodataflow.tasklib.runner import ChainJob, run_chain

log = logging.getLogger(__name__)

_LOCK = threading.Lock()
# Futures submitted ahead of the stage flow, by Dask key; holding them keeps the
# tasks alive until the flow takes them.
_HELD: dict[str, Future[Any]] = {}
_submitted = 0


def begin(
    service: Service,
    context: RunContext,
    client: Any,
    jobs: list[ChainJob] | None = None,
) -> threading.Thread:
    """Submit the first stage's products, in a thread; return it.

    ``client`` is a callable that waits for the run's Dask client (the prestarted
    cluster's). ``jobs`` are the first stage's products to make, planned with
    ``context``; where None, the thread plans them. Nothing is started where the
    first stage has a cluster of its own or asks for one Prefect task run per
    product. A failure here costs nothing but the head start: the stage flow plans
    and submits everything itself.
    """
    thread = threading.Thread(
        target=_submit_first_stage,
        args=(service, context, client, jobs),
        name="edf-head-start",
        daemon=True,
    )
    thread.start()
    return thread


def _submit_first_stage(
    service: Service, context: RunContext, client: Any, jobs: list[ChainJob] | None
) -> None:
    global _submitted
    stage = service.stages[0]
    if stage.cluster is not None or stage.prefect_config.task_per_file:
        return
    try:
        if jobs is None:
            planned, _ = plan_stage(stage, context)
            jobs = [p.job for p in planned if p.decision.run]
        if not jobs:
            return
        dask_client: Client | None = client()
        if dask_client is None:
            return
        keys = [job.dask_key() for job in jobs]
        futures = dask_client.map(run_chain, jobs, key=keys)
    except Exception as err:  # noqa: BLE001 - the stage flow will do it all
        log.debug("no head start for %s: %s", stage.name, err)
        return
    with _LOCK:
        _HELD.update(zip(keys, futures, strict=True))
        _submitted += len(futures)
    log.info("head start: %d products of %s submitted", len(jobs), stage.name)


def submitted() -> int:
    """Return how many products this process has submitted ahead of its flows."""
    with _LOCK:
        return _submitted


def claim(jobs: Iterable[ChainJob]) -> None:
    """Keep the early tasks of ``jobs`` for the stage flow; cancel every other one."""
    wanted = {job.dask_key() for job in jobs}
    with _LOCK:
        unwanted = [_HELD.pop(key) for key in list(_HELD) if key not in wanted]
    cancelled = _cancel(unwanted)
    if cancelled:
        log.info("cancelled %d products submitted ahead of the plan", cancelled)


def release() -> None:
    """Drop every early task still held (the run is over, or failed to start)."""
    with _LOCK:
        futures = list(_HELD.values())
        _HELD.clear()
    _cancel(futures)


def _cancel(futures: list[Future[Any]]) -> int:
    """Cancel the futures that have not finished; return how many."""
    running = [future for future in futures if not future.done()]
    for future in running:
        # After a failed run the client may be closed already; its tasks went with
        # its cluster.
        with contextlib.suppress(Exception):
            future.cancel()
    return len(running)
