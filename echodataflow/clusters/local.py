"""A Dask cluster of worker processes on this machine."""

from __future__ import annotations

import importlib.util
import logging
import multiprocessing
import os
from collections.abc import Iterator
from contextlib import contextmanager

import dask
from distributed import Client, LocalCluster
from distributed.utils import get_mp_context

from echodataflow.clusters._client import connected
from echodataflow.models.deployment import Cluster

log = logging.getLogger(__name__)

# Each worker samples its own stack every 10 ms for the dashboard's profile page,
# which a local cluster does not serve: it cost 15 % of a worker's CPU time on the
# EK60 sample files (benchmarks/README.md).
_WORKER_CONFIG = {"distributed.worker.profile.enabled": False}

# Dask's nannies start workers with MALLOC_TRIM_THRESHOLD_=65536 so that long-lived
# workers hand freed memory back to the system. Setting it also switches off glibc's
# adaptive mmap threshold: every array above 128 KiB is then mapped and unmapped
# afresh, and its pages faulted in again. On the EK60 sample chain that was 500,000
# page faults per 50 files instead of 80,000, and a third more CPU time per file
# (benchmarks/README.md). A worker here frees each file's arrays when the file is
# done, so glibc's default behaviour is kept.
_NANNY_CONFIG = {"distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_": None}


def fork_workers_from_server(preload: tuple[str, ...] = ("echopype",)) -> None:
    """Start local workers from a fork server that has imported ``preload`` once.

    Spawned workers each import echopype (seconds of CPU apiece) at their first
    file; forked from a server process that imported it, they start with it. The
    workers inherit the environment the fork server started with, so only a process
    whose environment no longer changes should call this: ``echodataflow run`` does.
    Modules that are not installed are left out.
    """
    dask.config.set({"distributed.worker.multiprocessing-method": "forkserver"})
    # Dask sets its own preload list on first use; ours is set after it, and wins.
    get_mp_context()
    found = [name for name in preload if importlib.util.find_spec(name) is not None]
    multiprocessing.get_context("forkserver").set_forkserver_preload(
        ["distributed", *found]
    )
    log.debug("local workers fork from a server that imported %s", found)


def default_workers() -> int:
    """One worker per available CPU core."""
    return (
        len(os.sched_getaffinity(0))
        if hasattr(os, "sched_getaffinity")
        else (os.cpu_count() or 1)
    )


@contextmanager
def open_local(cluster: Cluster) -> Iterator[Client]:
    """Start a local cluster of worker processes and close it on exit."""
    workers = cluster.workers or default_workers()
    # Read by each nanny when it is created, in this process, also later ones of an
    # adaptive cluster: set for the process rather than around this call.
    dask.config.set(_NANNY_CONFIG)
    local = LocalCluster(
        n_workers=0 if cluster.adaptive else workers,
        threads_per_worker=cluster.threads_per_worker,
        processes=True,
        memory_limit=cluster.memory_limit or "auto",
        dashboard_address=None,
        host="127.0.0.1",
        config=_WORKER_CONFIG,
    )
    try:
        if cluster.adaptive is not None:
            local.adapt(
                minimum=cluster.adaptive.minimum, maximum=cluster.adaptive.maximum
            )
        with connected(local) as client:
            yield client
    finally:
        local.close()
