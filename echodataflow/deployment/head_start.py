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
import dataclasses
import logging
import threading
from typing import Any

from distributed import Client, Future

from echodataflow.deployment.plan import PlannedJob, plan_stage
from echodataflow.deployment.report import RunContext
from echodataflow.models.deployment import Service
from echodataflow.tasklib.runner import run_chain

log = logging.getLogger(__name__)

_LOCK = threading.Lock()
# Futures submitted ahead of the stage flow, by Dask key; holding them keeps the
# tasks alive until the flow takes them.
_HELD: dict[str, Future[Any]] = {}
# Why each of them was to be made. By the time the flow plans, the product may be
# written already (without its record), but it is made for the first reason.
_WHY: dict[str, str] = {}
_submitted = 0


def begin(
    service: Service,
    context: RunContext,
    client: Any,
    planned: list[PlannedJob] | None = None,
) -> threading.Thread:
    """Submit the first stage's products, in a thread; return it.

    ``client`` is a callable that waits for the run's Dask client (the prestarted
    cluster's). ``planned`` is the first stage's plan, made with ``context``;
    where None, the thread plans the stage. Nothing is started where the
    first stage has a cluster of its own or asks for one Prefect task run per
    product. A failure here costs nothing but the head start: the stage flow plans
    and submits everything itself.
    """
    thread = threading.Thread(
        target=_submit_first_stage,
        args=(service, context, client, planned),
        name="edf-head-start",
        daemon=True,
    )
    thread.start()
    return thread


def _submit_first_stage(
    service: Service,
    context: RunContext,
    client: Any,
    planned: list[PlannedJob] | None,
) -> None:
    global _submitted
    stage = service.stages[0]
    if stage.cluster is not None or stage.prefect_config.task_per_file:
        return
    try:
        if planned is None:
            planned, _ = plan_stage(stage, context)
        todo = [p for p in planned if p.decision.run]
        if not todo:
            return
        dask_client: Client | None = client()
        if dask_client is None:
            return
        keys = [p.job.dask_key() for p in todo]
        futures = dask_client.map(run_chain, [p.job for p in todo], key=keys)
    except Exception as err:  # noqa: BLE001 - the stage flow will do it all
        log.debug("no head start for %s: %s", stage.name, err)
        return
    with _LOCK:
        _HELD.update(zip(keys, futures, strict=True))
        _WHY.update(zip(keys, (p.decision.why for p in todo), strict=True))
        _submitted += len(futures)
    log.info("head start: %d products of %s submitted", len(todo), stage.name)


def submitted() -> int:
    """Return how many products this process has submitted ahead of its flows."""
    with _LOCK:
        return _submitted


def claim(todo: list[PlannedJob]) -> list[PlannedJob]:
    """Keep the early tasks of ``todo`` for the stage flow; cancel every other one.

    Returns ``todo`` with each early product's decision as it was when it went to
    the workers.
    """
    keys = [p.job.dask_key() for p in todo]
    wanted = set(keys)
    with _LOCK:
        unwanted = [_HELD.pop(key) for key in list(_HELD) if key not in wanted]
        for key in list(_WHY):
            if key not in wanted:
                del _WHY[key]
        why = {key: _WHY[key] for key in keys if key in _WHY}
    cancelled = _cancel(unwanted)
    if cancelled:
        log.info("cancelled %d products submitted ahead of the plan", cancelled)
    return [
        dataclasses.replace(p, decision=dataclasses.replace(p.decision, why=why[key]))
        if key in why
        else p
        for p, key in zip(todo, keys, strict=True)
    ]


def release() -> None:
    """Drop every early task still held (the run is over, or failed to start)."""
    with _LOCK:
        futures = list(_HELD.values())
        _HELD.clear()
        _WHY.clear()
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
