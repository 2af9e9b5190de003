"""``Sv_flow``: the default stage flow.

It lists and groups the stage's source files, decides from the ledger which
products are missing or stale, and hands each product's chain of steps to the Dask
cluster as a task of its own, so the work fans out over the cluster. Prefect
records one task run per batch of products (``batch.py``): a task run costs tens of
milliseconds of CPU, which is a fifth of a small file's processing and minutes over
a survey. ``prefect_config.task_per_file`` asks for one task run per product
instead. Either way each product has its own retries, timeout, ledger record,
report row and run-log lines.
"""

from __future__ import annotations

import logging
import posixpath
from collections.abc import Callable, Iterator
from typing import Any

from distributed import Client
from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.task_runners import ThreadPoolTaskRunner

from echodataflow import ledger, storage
from echodataflow.clusters import client_for
from echodataflow.deployment import batch, head_start
from echodataflow.deployment.plan import (
    PlannedJob,
    plan_stage,
)
from echodataflow.deployment.report import ProductResult, RunContext, StageReport
from echodataflow.logs import replay
from echodataflow.models.deployment import Stage
from echodataflow.quality import write_results
from echodataflow.tasklib.runner import ChainJob, ChainOutcome, run_chain

log = logging.getLogger(__name__)

# Called with (stage name, number of products to make) and (stage name, result).
StartListener = Callable[[str, int], None]
DoneListener = Callable[[str, ProductResult], None]
START_LISTENERS: list[StartListener] = []
DONE_LISTENERS: list[DoneListener] = []


@task(cache_policy=NO_CACHE, persist_result=False)
def process_file(job: ChainJob, scheduler: str) -> ChainOutcome:
    """Run one product's chain of steps on the Dask cluster and wait for it."""
    client: Client = client_for(scheduler)
    future = client.submit(run_chain, job, pure=False)
    try:
        outcome: ChainOutcome = future.result()
    except Exception as err:
        replay(getattr(err, "edf_logs", []))
        raise
    replay(outcome.logs)
    return outcome


def _product_name(job: ChainJob) -> str:
    return posixpath.basename(job.product_url)


def _record(
    planned: PlannedJob,
    context: RunContext,
    state: str,
    reason: str,
    quality: dict[str, Any] | None = None,
) -> None:
    ledger.write_record(
        planned.job.product_url,
        state=state,
        inputs=planned.inputs,
        steps=planned.steps,
        run_id=context.run_id,
        options=planned.job.destination_options,
        reason=reason,
        quality=quality,
    )


def _notify(stage: str, result: ProductResult) -> None:
    for listener in DONE_LISTENERS:
        listener(stage, result)


@flow(name="Sv_flow", persist_result=False)
def Sv_flow(stage: Stage, context: RunContext, scheduler: str) -> StageReport:
    """Make every missing or stale product of one stage."""
    logger = get_run_logger()
    report = StageReport(stage=stage.name, destination=stage.destination.path)
    dest_options = storage.resolve_storage_options(stage.destination.storage_options)
    # Stores begun since the run started are its own (head_start.py), not debris.
    removed = storage.remove_partials(
        stage.destination.path, dest_options, context.started.timestamp()
    )
    if removed:
        logger.warning("removed %d half-written stores of an interrupted run", removed)
    planned, report.left_out = plan_stage(stage, context)
    for path, reason in report.left_out.items():
        logger.warning("left out %s: %s", path, reason)

    todo = head_start.claim([p for p in planned if p.decision.run])
    for p in planned:
        if not p.decision.run:
            result = ProductResult(
                product=_product_name(p.job),
                sources=p.job.sources,
                status="skipped",
                reason=p.decision.why,
            )
            report.results.append(result)
    logger.info(
        "%s: %d products, %d to make, %d up to date",
        stage.name,
        len(planned),
        len(todo),
        len(planned) - len(todo),
    )
    for listener in START_LISTENERS:
        listener(stage.name, len(todo))

    if stage.prefect_config.task_per_file:
        finished = _per_file(todo, stage, scheduler)
    else:
        finished = batch.run_batches(
            [p.job for p in todo], scheduler, batch.FilePolicy.of(stage.prefect_config)
        )
    verdicts: dict[str, dict[str, Any]] = {}
    for index, outcome, reason in finished:
        p = todo[index]
        if outcome is not None:
            verdict = _quality_verdict(stage, outcome, verdicts)
            _record(p, context, "done", "", verdict)
            result = ProductResult(
                product=_product_name(p.job),
                sources=p.job.sources,
                status="written",
                reason=p.decision.why + _quality_note(verdict),
                seconds=outcome.seconds,
            )
        else:
            _record(p, context, "failed", reason)
            logger.error("FAILED %s: %s", ", ".join(p.job.sources), reason)
            result = ProductResult(
                product=_product_name(p.job),
                sources=p.job.sources,
                status="failed",
                reason=reason,
            )
        report.results.append(result)
        _notify(stage.name, result)
    if stage.data_quality is not None and verdicts:
        url = write_results(
            stage.data_quality,
            stage.destination.path,
            stage.name,
            context.run_id,
            verdicts,
        )
        failed = sorted(name for name, v in verdicts.items() if not v["passed"])
        if failed:
            logger.warning("data-quality checks failed on %s (%s)", failed, url)
    return report


def _quality_verdict(
    stage: Stage, outcome: ChainOutcome, verdicts: dict[str, dict[str, Any]]
) -> dict[str, Any] | None:
    if outcome.quality is None or stage.data_quality is None:
        return None
    verdict = {
        **outcome.quality,
        "block_downstream": stage.data_quality.block_downstream,
    }
    verdicts[posixpath.basename(outcome.product_url)] = verdict
    return verdict


def _quality_note(verdict: dict[str, Any] | None) -> str:
    if verdict is None or verdict["passed"]:
        return ""
    blocked = " (blocked downstream)" if verdict["block_downstream"] else ""
    return f"; failed checks: {', '.join(verdict['failed'])}{blocked}"


def _per_file(
    todo: list[PlannedJob], stage: Stage, scheduler: str
) -> Iterator[batch.Finished]:
    """One Prefect task per product, retried and timed out by Prefect."""
    options: dict[str, Any] = {
        "retries": stage.prefect_config.retries,
        "retry_delay_seconds": stage.prefect_config.retry_delay_seconds,
    }
    if stage.prefect_config.timeout_seconds is not None:
        options["timeout_seconds"] = stage.prefect_config.timeout_seconds
    runner = process_file.with_options(**options)
    futures = [
        runner.with_options(task_run_name=_product_name(p.job)).submit(p.job, scheduler)
        for p in todo
    ]
    for index, future in enumerate(futures):
        future.wait()
        if future.state.is_completed():
            yield batch.Finished(index, future.result())
        else:
            yield batch.Finished(index, None, _failure_reason(future.state))


def _failure_reason(state: Any) -> str:
    try:
        state.result()
    except Exception as err:  # noqa: BLE001 - the reason is recorded, the run goes on
        return (
            str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        )
    return str(state.message or state.name)


def thread_pool_size(client: Client) -> int:
    """Concurrent per-file tasks: enough to keep every Dask thread busy."""
    threads = sum(client.nthreads().values()) or 1
    return max(4, 2 * threads)


def with_pool(stage_flow: Any, client: Client) -> Any:
    """Give a stage flow a thread pool sized to the cluster."""
    return stage_flow.with_options(
        task_runner=ThreadPoolTaskRunner(max_workers=thread_pool_size(client))
    )


STAGES = {"Sv_flow": Sv_flow}
