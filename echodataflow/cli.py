"""The ``echodataflow`` command: validate, plan, run, deploy, status.

Exit codes: 0 success, 1 some product failed, 2 invalid input (one line per
problem, ``FILE:LINE: key.path: message``), 3 infrastructure unreachable.
"""

from __future__ import annotations

import logging
import os
import sys
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from echodataflow.exceptions import ConfigError, EchodataflowError, Problem

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="Turn raw echosounder files into calibrated, gridded products.",
)
console = Console()
errors = Console(stderr=True)

EXIT_FAILED, EXIT_INVALID, EXIT_UNREACHABLE = 1, 2, 3
# Seconds to wait for the embedded Prefect server; a first start migrates a fresh
# SQLite database, which can take half a minute on a slow disk.
SERVER_START_TIMEOUT = 180
# The run report lists every product up to this many rows, then only failures.
REPORT_ROWS = 100

DeploymentFile = Annotated[Path, typer.Argument(help="Deployment YAML file.")]
LoggingFile = Annotated[
    Path | None, typer.Option("--logging", "-l", help="Logging YAML file.")
]
ServiceName = Annotated[
    str | None, typer.Option("--service", "-s", help="Service to use.")
]


def _fail(problems: list[Problem]) -> typer.Exit:
    for problem in problems:
        errors.print(str(problem), markup=False, highlight=False, soft_wrap=True)
    return typer.Exit(EXIT_INVALID)


def _load(
    deployment_file: Path, logging_file: Path | None, check_stages: bool = True
) -> tuple[Any, Any]:
    from echodataflow.models.load import load_files

    try:
        return load_files(deployment_file, logging_file, check_stages=check_stages)
    except ConfigError as err:
        raise _fail(err.problems) from err


def _pick(deployment: Any, service: str | None) -> Any:
    try:
        return deployment.service(service)
    except KeyError as err:
        raise _fail([Problem("--service", None, "", str(err.args[0]))]) from err


@app.command()
def validate(deployment_file: DeploymentFile, logging_file: LoggingFile = None) -> None:
    """Check a deployment (and logging) file, steps and parameters included."""
    deployment, _ = _load(deployment_file, logging_file)
    for service in deployment.services:
        steps = sum(len(stage.tasks) for stage in service.stages)
        console.print(
            f"service {service.name}: {len(service.stages)} stage(s), {steps} step(s), "
            f"pool {service.infrastructure.workpool.name} "
            f"({service.infrastructure.workpool.type})",
            highlight=False,
        )
    console.print(f"{deployment_file}: valid", highlight=False)


@app.command()
def plan(
    deployment_file: DeploymentFile,
    service: ServiceName = None,
    force: Annotated[
        bool, typer.Option(help="Plan as if every product were stale.")
    ] = False,
) -> None:
    """Say, for every product, whether a run would make it and why (like make -n).

    Reads sources, products and their ledger records; writes nothing, runs nothing
    and needs no Prefect server. Later stages are planned as the run would make
    them: a product built from an earlier product that will be remade runs too.
    """
    deployment, _ = _load(deployment_file, None, check_stages=False)
    chosen = _pick(deployment, service)
    plans = _plan(deployment_file, chosen, _context(chosen, force, run_id="plan"))
    table = Table("stage", "product", "action", "why")
    for stage_plan in plans:
        name = stage_plan.stage.name
        for p in stage_plan.planned:
            action = "run" if p.decision.run else "skip"
            table.add_row(name, Path(p.job.product_url).name, action, p.decision.why)
        for path, reason in stage_plan.left_out.items():
            table.add_row(name, Path(path).name, "left out", reason)
    console.print(table)
    runs = sum(len(stage_plan.to_run) for stage_plan in plans)
    total = sum(len(stage_plan.planned) for stage_plan in plans)
    console.print(f"{runs} to make, {total - runs} up to date", highlight=False)


def _context(service: Any, force: bool, run_id: str | None = None) -> Any:
    """Return the context of a run (or plan) of ``service`` starting now."""
    from echodataflow.deployment.report import RunContext

    return RunContext(
        run_id=run_id or uuid.uuid4().hex,
        service=service.name,
        scheduled=datetime.now(UTC),
        force=force,
    )


def _plan(deployment_file: Path, service: Any, context: Any) -> Any:
    """Plan every stage of ``service``; bad input exits 2 with one line."""
    from echodataflow.deployment.plan import plan_service

    try:
        return plan_service(service, context)
    except (EchodataflowError, OSError) as err:
        raise _fail([Problem(str(deployment_file), None, "", str(err))]) from err


def _report_up_to_date(service: Any, plans: Any) -> bool:
    """Print the report of a run with nothing to make, if that is the case.

    Planning first costs about a second and spares an up-to-date run the start of
    Prefect and Dask (tens of seconds).
    """
    from echodataflow.deployment.report import (
        ProductResult,
        ServiceReport,
        StageReport,
    )

    if any(stage_plan.to_run for stage_plan in plans):
        return False
    report = ServiceReport(service=service.name, run_id="none")
    for stage_plan in plans:
        stage = StageReport(
            stage=stage_plan.stage.name,
            destination=stage_plan.stage.destination.path,
            left_out=stage_plan.left_out,
        )
        stage.results = [
            ProductResult(
                product=Path(p.job.product_url).name,
                sources=p.job.sources,
                status="skipped",
                reason=p.decision.why,
            )
            for p in stage_plan.planned
        ]
        report.stages.append(stage)
    _print_report(report)
    console.print(f"service {service.name} is up to date", highlight=False)
    return True


@app.command()
def run(
    deployment_file: DeploymentFile,
    service: ServiceName = None,
    logging_file: LoggingFile = None,
    workers: Annotated[
        int | None, typer.Option("--workers", "-w", min=1, help="Local Dask workers.")
    ] = None,
    force: Annotated[bool, typer.Option(help="Remake every product.")] = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
) -> None:
    """Run one service now, in this process, on an embedded Prefect."""
    # Prefect reads its settings once, when first imported; loading the deployment
    # imports the stage flows (and Prefect), so the settings go first.
    _embedded_prefect(verbose)
    server = _start_embedded_server()
    deployment, logging_config = _load(deployment_file, logging_file, False)
    chosen = _pick(deployment, service)
    # The products of the run carry its id: the plan, the products handed to the
    # workers ahead of the flow and the flow itself share this context.
    context = _context(chosen, force)
    first_stage = None
    if not force:
        plans = _plan(deployment_file, chosen, context)
        if _report_up_to_date(chosen, plans):
            return
        first_stage = plans[0].planned
    cluster = chosen.infrastructure.cluster
    if workers is not None:
        cluster = cluster.model_copy(update={"type": "local", "workers": workers})

    # The cluster starts while the stage flows are checked and the server comes up,
    # and the first stage's products go to it as soon as it is up.
    _head_start(chosen, context, _prestart(chosen, cluster, verbose), first_stage)
    try:
        _check_stage_flows(deployment_file)
        logging_dict = None
        if logging_config is not None:
            handler = chosen.logging.handler if chosen.logging else None
            logging_dict = logging_config.for_service(handler)
        if server is not None:
            _wait_for(server)
        report = _run_with_progress(
            chosen, logging_dict, cluster, context, verbose, server is not None
        )
    finally:
        from echodataflow.clusters import discard_prestarted
        from echodataflow.deployment import head_start

        head_start.release()
        discard_prestarted()
    if verbose:
        early = head_start.submitted()
        errors.print(
            f"{early} products went to the workers before the stage flow began"
        )
    _print_report(report)
    if not report.ok:
        raise typer.Exit(EXIT_FAILED)


def _check_stage_flows(deployment_file: Path) -> None:
    """Validate the stage flows too, now that the run will import them anyway."""
    _load(deployment_file, None, check_stages=True)


def _embedded_prefect(verbose: bool) -> None:
    """Set up Prefect's embedded server; runs before Prefect is imported."""
    defaults = {
        "PREFECT_LOGGING_LEVEL": "INFO" if verbose else "WARNING",
        "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": str(SERVER_START_TIMEOUT),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "DO_NOT_TRACK": "1",
    }
    for key, value in defaults.items():
        os.environ.setdefault(key, value)


def _start_embedded_server() -> Any:
    """Start the run's own Prefect server now, unless a Prefect API is configured.

    Prefect reads ``PREFECT_API_URL`` when it is first imported; where it already
    was (a caller in the same process), Prefect starts its own server as usual.
    """
    if os.environ.get("PREFECT_API_URL") or "prefect" in sys.modules:
        return None
    from echodataflow.embedded import EmbeddedServer

    server = EmbeddedServer()
    server.start()
    os.environ["PREFECT_API_URL"] = server.api_url
    return server


def _quiet(verbose: bool) -> None:
    if verbose:
        return
    from echodataflow.logs import quiet_console_failures

    for name in ("prefect", "distributed"):
        logging.getLogger(name).setLevel(logging.WARNING)
    quiet_console_failures()


def _prestart(service: Any, cluster: Any, verbose: bool) -> Any:
    """Start the service's cluster while the Prefect server comes up; return it."""
    from echodataflow.clusters import prestart, with_workpool_image
    from echodataflow.clusters.local import fork_workers_from_server

    # After the import: Dask sets its loggers' levels when it is first imported.
    _quiet(verbose)
    fork_workers_from_server()
    started = with_workpool_image(cluster, service.infrastructure.workpool)
    prestart(started)
    return started


def _head_start(service: Any, context: Any, cluster: Any, jobs: Any) -> None:
    """Hand the first stage's products (planned here if None) to ``cluster``."""
    from echodataflow.clusters import prestarted_client
    from echodataflow.deployment import head_start

    head_start.begin(service, context, lambda: prestarted_client(cluster), jobs)


def _wait_for(server: Any) -> None:
    from echodataflow.exceptions import ServerUnreachableError

    try:
        timeout = float(os.environ["PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS"])
    except ValueError:
        timeout = SERVER_START_TIMEOUT
    try:
        server.wait_ready(timeout)
    except ServerUnreachableError as err:
        errors.print(f"error: {err}", markup=False, highlight=False, soft_wrap=True)
        raise typer.Exit(EXIT_UNREACHABLE) from err


def _run_with_progress(
    service: Any,
    logging_dict: Any,
    cluster: Any,
    context: Any,
    verbose: bool,
    own_server: bool,
) -> Any:
    from prefect.settings import PREFECT_FLOWS_HEARTBEAT_FREQUENCY, temporary_settings
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

    from echodataflow.deployment import flow as stage_flows
    from echodataflow.deployment.service import edf_service

    progress = Progress(
        "[progress.description]{task.description}",
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=errors,
        transient=False,
    )
    bars: dict[str, Any] = {}

    def started(stage: str, total: int) -> None:
        bars[stage] = progress.add_task(stage, total=total)

    def done(stage: str, result: Any) -> None:
        progress.advance(bars[stage])

    stage_flows.START_LISTENERS.append(started)
    stage_flows.DONE_LISTENERS.append(done)
    try:
        # Heartbeats tell a server that a run on some other machine is alive; the
        # run's own server lives and dies with this process. Each flow also waits
        # up to a second for its heartbeat thread when it ends.
        quiet = {PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None} if own_server else {}
        with progress, temporary_settings(updates=quiet):
            state = edf_service(
                service,
                logging_dict,
                cluster,
                context.force,
                context,
                return_state=True,
            )
    except (RuntimeError, OSError) as err:
        # With return_state the flow's own errors come back in the state; what
        # escapes is Prefect's engine failing to start (e.g. its embedded server).
        first = str(err).strip().splitlines()[0] if str(err).strip() else repr(err)
        errors.print(
            f"error: Prefect could not run service {service.name}: {first}",
            markup=False,
            highlight=False,
        )
        raise typer.Exit(EXIT_UNREACHABLE) from err
    finally:
        stage_flows.START_LISTENERS.remove(started)
        stage_flows.DONE_LISTENERS.remove(done)
    report = state.result(raise_on_failure=False)
    if isinstance(report, BaseException):
        errors.print(f"service {service.name} crashed: {report}", markup=False)
        raise typer.Exit(EXIT_FAILED)
    return report


def _print_report(report: Any) -> None:
    table = Table(title=f"service {report.service}")
    for column in ("stage", "product", "status", "seconds", "reason"):
        table.add_column(column)
    # A survey makes thousands of products: past a screenful, list only failures.
    rows = sum(len(stage.results) + len(stage.left_out) for stage in report.stages)
    brief = rows > REPORT_ROWS
    for stage in report.stages:
        for result in stage.results:
            if brief and result.status != "failed":
                continue
            style = {"failed": "red", "written": "green"}.get(result.status, "")
            table.add_row(
                stage.stage,
                result.product,
                f"[{style}]{result.status}[/]" if style else result.status,
                f"{result.seconds:.1f}",
                result.reason,
            )
        for path, reason in stage.left_out.items():
            table.add_row(stage.stage, Path(path).name, "left out", "", reason)
    if table.row_count or not brief:
        console.print(table)
    if brief:
        console.print(
            f"{rows} products and sources: only failures are listed", highlight=False
        )
    console.print(report.summary(), markup=False, highlight=False)


def _unreachable(err: Exception) -> typer.Exit:
    errors.print(f"error: {err}", markup=False, highlight=False, soft_wrap=True)
    return typer.Exit(EXIT_UNREACHABLE)


@app.command()
def deploy(
    deployment_file: DeploymentFile,
    logging_file: LoggingFile = None,
    prune: Annotated[
        bool,
        typer.Option(help="Delete deployments of services no longer in the file."),
    ] = False,
) -> None:
    """Create or update each service's work pool, queue and Prefect deployment."""
    import httpx

    from echodataflow.deployment.deployment_engine import deploy as deploy_file
    from echodataflow.exceptions import DeployError, ServerUnreachableError

    _embedded_prefect(False)
    try:
        result = deploy_file(deployment_file, logging_file, prune=prune)
    except ConfigError as err:
        raise _fail(err.problems) from err
    except (ServerUnreachableError, httpx.TransportError) as err:
        raise _unreachable(err) from err
    except DeployError as err:
        raise _fail([Problem(str(deployment_file), None, "", str(err))]) from err
    table = Table("service", "deployment", "work pool", "queue", "schedule")
    for d in result.services:
        table.add_row(
            d.service,
            f"{d.deployment_id} ({d.action})",
            f"{d.work_pool} ({d.work_pool_action})",
            f"{d.work_queue} ({d.work_queue_action})",
            d.schedule,
        )
    console.print(table)
    for name in result.pruned:
        console.print(f"pruned deployment {name}", highlight=False)


@app.command()
def status() -> None:
    """Show deployed services, their pools, queues, schedules and last runs."""
    import httpx

    from echodataflow.deployment.deployment_engine import server_status
    from echodataflow.exceptions import ServerUnreachableError

    _embedded_prefect(False)
    try:
        services, pools = server_status()
    except (ServerUnreachableError, httpx.TransportError) as err:
        raise _unreachable(err) from err

    def when(value: Any) -> str:
        return "" if value is None else f"{value:%Y-%m-%d %H:%M:%S %Z}"

    table = Table(title="services")
    for column in ("service", "pool/queue", "schedule", "last run", "state", "next"):
        table.add_column(column)
    for s in services:
        state = s.last_state
        style = {"Completed": "green", "Failed": "red", "Crashed": "red"}.get(state)
        table.add_row(
            s.service + (" (paused)" if s.paused else ""),
            f"{s.work_pool}/{s.work_queue}",
            s.schedule,
            f"{s.last_run} {when(s.last_time)}".strip(),
            f"[{style}]{state}[/]" if style else state,
            when(s.next_run),
        )
    console.print(table)
    pool_table = Table("work pool", "type", "status", "queues", title="work pools")
    for p in pools:
        pool_table.add_row(p.name, p.type, p.status, ", ".join(p.queues))
    console.print(pool_table)


def main() -> None:
    """Entry point of the ``echodataflow`` console script."""
    logging.basicConfig(
        level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s"
    )
    try:
        app()
    except EchodataflowError as err:
        errors.print(f"error: {err}", markup=False, highlight=False)
        sys.exit(EXIT_INVALID)


if __name__ == "__main__":
    main()
