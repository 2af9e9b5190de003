"""A Dask cluster of worker processes on this machine."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

from distributed import Client, LocalCluster

from echodataflow.models.deployment import Cluster


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
    local = LocalCluster(
        n_workers=0 if cluster.adaptive else workers,
        threads_per_worker=cluster.threads_per_worker,
        processes=True,
        memory_limit=cluster.memory_limit or "auto",
        dashboard_address=None,
        host="127.0.0.1",
    )
    try:
        if cluster.adaptive is not None:
            local.adapt(
                minimum=cluster.adaptive.minimum, maximum=cluster.adaptive.maximum
            )
        with Client(local) as client:
            yield client
    finally:
        local.close()
