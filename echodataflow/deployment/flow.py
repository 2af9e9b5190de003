"""``Sv_flow``: the default stage flow.

It lists and groups the stage's source files, decides from the ledger which
products are missing or stale, and runs one Prefect task per product. Each task
hands its chain of steps to the Dask cluster and waits, so the work fans out over
the cluster while Prefect records one task run per raw file (or group).
"""

from __future__ import annotations

import logging
import posixpath
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from distributed import Client
from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.task_runners import ThreadPoolTaskRunner

from echodataflow import ledger, storage
from echodataflow.clusters import client_for
from echodataflow.deployment.report import ProductResult, RunContext, StageReport
from echodataflow.deployment.source import (
    club_raw_files,
    extract_source,
    parse_raw_paths,
    stem,
)
from echodataflow.logs import replay
from echodataflow.models.deployment import Stage
from echodataflow.registry import step_spec
from echodataflow.tasklib.runner import ChainJob, ChainOutcome, StepCall, run_chain

log = logging.getLogger(__name__)

_PRODUCT_KINDS = ("Sv", "TS", "MVBS", "NASC", "echodata")

# Called with (stage name, number of products to make) and (stage name, result).
StartListener = Callable[[str, int], None]
DoneListener = Callable[[str, ProductResult], None]
START_LISTENERS: list[StartListener] = []
DONE_LISTENERS: list[DoneListener] = []


@dataclass(frozen=True)
class PlannedJob:
    """A product, the job that makes it, and whether it must run."""

    job: ChainJob
    inputs: dict[str, dict[str, Any]]
    steps: list[dict[str, Any]]
    decision: ledger.Decision


def product_kind(stage: Stage) -> str:
    """Return the kind of product the stage's last producing step makes."""
    kinds = [step_spec(t.module, t.name).product for t in stage.tasks]
    named = [kind for kind in kinds if kind is not None]
    return named[-1] if named else "dataset"


def product_key(source: str) -> str:
    """Return a product's name stem: its source file's, less an earlier kind."""
    key = stem(source)
    for kind in _PRODUCT_KINDS:
        if key.endswith(f"_{kind}"):
            return key.removesuffix(f"_{kind}")
    return key


def _has_group_step(stage: Stage) -> bool:
    return any(step_spec(t.module, t.name).scope == "group" for t in stage.tasks)


def plan_stage(
    stage: Stage, context: RunContext
) -> tuple[list[PlannedJob], dict[str, str]]:
    """List, group and fingerprint the stage's sources; decide each product.

    Returns the planned jobs and the source files left out, with reasons. Nothing is
    written: ``echodataflow plan`` prints exactly this.
    """
    source_options = storage.resolve_storage_options(stage.source.storage_options)
    dest_options = storage.resolve_storage_options(stage.destination.storage_options)
    group_options = storage.resolve_storage_options(
        stage.group.storage_options if stage.group else None
    )
    paths = extract_source(stage.source, source_options, context.scheduled)
    groups, left_out = parse_raw_paths(
        paths,
        stage.source,
        stage.group,
        group_options or source_options,
        stage.options,
        context.scheduled,
    )
    clubbed = club_raw_files(groups, stage.source)
    kind = product_kind(stage)
    calls = [StepCall(t.module, t.name, dict(t.task_params)) for t in stage.tasks]
    steps = [{"name": c.name, "module": c.module, "params": c.params} for c in calls]

    if _has_group_step(stage):
        members = {name: list(files) for name, files in clubbed.items()}
    else:
        ordered = [path for files in clubbed.values() for path in files]
        members = {product_key(path): [path] for path in dict.fromkeys(ordered)}

    planned = []
    for key, sources in members.items():
        product_url = storage.join(stage.destination.path, f"{key}_{kind}.zarr")
        inputs = {s: storage.fingerprint(s, source_options) for s in sources}
        job = ChainJob(
            sources=sources,
            steps=calls,
            product_url=product_url,
            source_options=source_options,
            destination_options=dest_options,
            attrs={
                "edf_source_files": [
                    posixpath.basename(s.rstrip("/")) for s in sources
                ],
                "edf_steps": steps,
                "edf_versions": ledger.versions(),
                "edf_image": ledger.image() or "",
                "edf_run_id": context.run_id,
            },
        )
        if context.force or not stage.options.use_offline:
            decision = ledger.Decision(True, "forced")
        else:
            decision = ledger.decide(product_url, inputs, steps, dest_options)
        planned.append(PlannedJob(job, inputs, steps, decision))
    return planned, left_out


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


def _record(planned: PlannedJob, context: RunContext, state: str, reason: str) -> None:
    ledger.write_record(
        planned.job.product_url,
        state=state,
        inputs=planned.inputs,
        steps=planned.steps,
        run_id=context.run_id,
        options=planned.job.destination_options,
        reason=reason,
    )


def _notify(stage: str, result: ProductResult) -> None:
    for listener in DONE_LISTENERS:
        listener(stage, result)


@flow(name="Sv_flow", persist_result=False)
def Sv_flow(stage: Stage, context: RunContext, scheduler: str) -> StageReport:
    """Make every missing or stale product of one stage; one task per product."""
    logger = get_run_logger()
    report = StageReport(stage=stage.name, destination=stage.destination.path)
    planned, report.left_out = plan_stage(stage, context)
    for path, reason in report.left_out.items():
        logger.warning("left out %s: %s", path, reason)

    todo = [p for p in planned if p.decision.run]
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

    options: dict[str, Any] = {
        "retries": stage.prefect_config.retries,
        "retry_delay_seconds": stage.prefect_config.retry_delay_seconds,
    }
    if stage.prefect_config.timeout_seconds is not None:
        options["timeout_seconds"] = stage.prefect_config.timeout_seconds
    runner = process_file.with_options(**options)
    futures = {
        runner.with_options(task_run_name=_product_name(p.job)).submit(
            p.job, scheduler
        ): p
        for p in todo
    }
    for future, p in futures.items():
        future.wait()
        if future.state.is_completed():
            outcome: ChainOutcome = future.result()
            _record(p, context, "done", "")
            result = ProductResult(
                product=_product_name(p.job),
                sources=p.job.sources,
                status="written",
                reason=p.decision.why,
                seconds=outcome.seconds,
            )
        else:
            reason = _failure_reason(future.state)
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
    return report


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
