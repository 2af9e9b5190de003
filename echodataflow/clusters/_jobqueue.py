"""What the SLURM and PBS backends share.

Options mapped to dask-jobqueue, the workers' lifetime, the worker command in the
pinned image, and a teardown that leaves no job queued.

dask-jobqueue is imported only when a SLURM or PBS cluster is opened, so the core
runs without the ``hpc`` extra.
"""

from __future__ import annotations

import importlib
import logging
import re
import shlex
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from distributed import Client
from tornado.ioloop import PeriodicCallback

from echodataflow.clusters._client import connected
from echodataflow.exceptions import ClusterError
from echodataflow.models.deployment import Cluster, JobQueueOptions

log = logging.getLogger(__name__)

JOB_NAME = "edf-worker"
# How often lost jobs (cancelled, retired at their lifetime, killed) are replaced.
KEEP_JOBS_EVERY_S = 5.0
_SCHEDULER_PLACEHOLDER = "tcp://SCHEDULER:8786"


@dataclass(frozen=True)
class BatchSystem:
    """A batch scheduler served through one dask-jobqueue cluster class."""

    name: str
    cluster_class: str
    extra_kwargs: tuple[str, ...] = field(default=())

    def load(self) -> Any:
        """Return the dask-jobqueue cluster class.

        Raises
        ------
        ClusterError
            When dask-jobqueue is not installed.
        """
        try:
            module = importlib.import_module("dask_jobqueue")
        except ImportError as err:
            raise ClusterError(
                f"cluster type {self.name} needs dask-jobqueue: "
                "pip install 'echodataflow[hpc]'"
            ) from err
        return getattr(module, self.cluster_class)


SLURM = BatchSystem("slurm", "SLURMCluster")
PBS = BatchSystem("pbs", "PBSCluster", extra_kwargs=("resource_spec",))


def walltime_seconds(walltime: str) -> int:
    """Return the seconds of a ``[D-]HH:MM:SS`` walltime."""
    match = re.fullmatch(r"(?:(\d+)-)?(\d+):(\d{2}):(\d{2})", walltime)
    if match is None:
        raise ValueError(f"walltime {walltime!r} is not [D-]HH:MM:SS")
    days, hours, minutes, seconds = (int(g or 0) for g in match.groups())
    return ((days * 24 + hours) * 60 + minutes) * 60 + seconds


def lifetime_args(walltime: str) -> list[str]:
    """Return dask worker arguments that retire a worker before its job's walltime.

    A worker closes gracefully after ``--lifetime`` (its running task moves to
    another worker) and the cluster submits a fresh job in its place. The margin is
    a tenth of the walltime, at least a minute and at most ten; the stagger keeps
    the workers of one start from all leaving at once. ``--lifetime-restart`` is
    deliberately not used: it restarts the worker inside the same job, which the
    batch scheduler still kills at the walltime.
    """
    total = walltime_seconds(walltime)
    margin = min(max(total // 10, 60), 600, total // 2)
    stagger = margin // 4
    return ["--lifetime", f"{total - margin}s", "--lifetime-stagger", f"{stagger}s"]


def image_reference(image: str) -> str:
    """Return what ``apptainer exec`` accepts: a path or URL as is, else docker://."""
    if "://" in image or image.startswith(("/", ".", "~")) or image.endswith(".sif"):
        return image
    return f"docker://{image}"


def worker_python(options: JobQueueOptions) -> str:
    """Return the command the job script starts the Dask worker's Python with.

    In the pinned image the worker starts through ``apptainer exec IMAGE python``
    (``python`` of the image unless ``options.python`` names another); without one,
    through ``options.python`` or the Python running this process.
    """
    if options.image is None:
        return options.python or sys.executable
    words = [
        options.apptainer,
        "exec",
        *options.apptainer_args,
        image_reference(options.image),
        options.python or "python",
    ]
    return shlex.join(words)


def cluster_kwargs(cluster: Cluster, system: BatchSystem) -> dict[str, Any]:
    """Map a validated ``Cluster`` to the keyword arguments of dask-jobqueue."""
    options = cluster.jobqueue or JobQueueOptions()
    extra_args = list(options.worker_extra_args)
    if "--lifetime" not in extra_args:
        extra_args += lifetime_args(options.walltime)
    kwargs: dict[str, Any] = {
        "cores": options.cores,
        "memory": options.memory,
        "processes": options.processes,
        "queue": options.queue,
        "account": options.account,
        "walltime": options.walltime,
        "job_name": JOB_NAME,
        "job_extra_directives": list(options.job_extra_directives),
        "job_directives_skip": list(options.job_directives_skip),
        "job_script_prologue": list(options.job_script_prologue),
        "interface": options.interface,
        "local_directory": options.local_directory,
        "log_directory": options.log_directory,
        "python": worker_python(options),
        "death_timeout": options.death_timeout,
        "worker_extra_args": extra_args,
        # No dashboard app; the scheduler's small HTTP endpoint (health, metrics)
        # stays on the scheduler's own interface.
        "scheduler_options": {"dashboard": False, "dashboard_address": None},
    }
    for name in system.extra_kwargs:
        kwargs[name] = getattr(options, name)
    return kwargs


def job_script(cluster: Cluster, system: BatchSystem) -> str:
    """Render the batch script of one worker job without starting anything.

    The scheduler address is a placeholder; ``echodataflow`` shows this script so
    a site can check directives before the first run.
    """
    job_cls = system.load().job_cls
    kwargs = cluster_kwargs(cluster, system)
    kwargs.pop("scheduler_options")
    kwargs.pop("log_directory")  # the Job would create the folder
    return str(
        job_cls(_SCHEDULER_PLACEHOLDER, name="edf-worker-0", **kwargs).job_script()
    )


def _recording(job_cls: Any, submitted: set[str]) -> Any:
    """Return a Job class that records the id of every job it submits."""

    class RecordedJob(job_cls):  # type: ignore[misc]
        async def start(self) -> None:
            await super().start()
            if self.job_id:
                submitted.add(str(self.job_id))

    RecordedJob.__name__ = job_cls.__name__
    return RecordedJob


def _cancel(cancel_command: str, job_ids: set[str]) -> None:
    """Cancel jobs that may still be queued; a job already gone is no error."""
    for job_id in sorted(job_ids):
        try:
            subprocess.run(
                [*shlex.split(cancel_command), job_id],
                capture_output=True,
                timeout=30,
                check=False,
            )
        except (OSError, subprocess.TimeoutExpired) as err:
            log.warning("could not cancel job %s: %s", job_id, err)


@contextmanager
def open_jobqueue(cluster: Cluster, system: BatchSystem) -> Iterator[Client]:
    """Start a Dask cluster whose workers are batch jobs; cancel every job on exit.

    A fixed-size cluster keeps ``cluster.workers`` workers (default: one job); an
    adaptive one scales between its bounds. Jobs that end early (cancelled,
    retired at their lifetime, killed by the scheduler) are replaced, and Dask
    reruns the tasks a lost worker held, so no file is lost with its worker.

    Raises
    ------
    ClusterError
        When dask-jobqueue is missing or rejects the options.
    """
    cluster_class = system.load()
    submitted: set[str] = set()
    try:
        jobqueue = cluster_class(
            job_cls=_recording(cluster_class.job_cls, submitted),
            **cluster_kwargs(cluster, system),
        )
    except (ValueError, TypeError, OSError) as err:
        raise ClusterError(f"cannot start a {system.name} cluster: {err}") from err
    keeper = PeriodicCallback(jobqueue._correct_state, KEEP_JOBS_EVERY_S * 1000)
    try:
        if cluster.adaptive is not None:
            jobqueue.adapt(
                minimum=cluster.adaptive.minimum, maximum=cluster.adaptive.maximum
            )
        else:
            jobqueue.scale(n=cluster.workers or 1)
        # dask-jobqueue forgets a job whose worker left; opening what the plan
        # still counts brings the cluster back to size.
        jobqueue.loop.add_callback(keeper.start)
        log.info("%s job script:\n%s", system.name, jobqueue.job_script())
        with connected(jobqueue) as client:
            yield client
    finally:
        jobqueue.loop.add_callback(keeper.stop)
        try:
            # Closing cancels the jobs it knows; what it missed is cancelled below.
            jobqueue.close(timeout=60)
        except Exception as err:  # noqa: BLE001 - teardown goes on to cancel jobs
            log.warning("closing the %s cluster failed: %s", system.name, err)
        _cancel(cluster_class.job_cls.cancel_command, submitted)
        log.info(
            "%s cluster closed; %d jobs were submitted", system.name, len(submitted)
        )
