"""Dask cluster backends behind one interface: ``open_cluster(cluster) -> Client``.

One module per backend (local, address; slurm and pbs through dask-jobqueue). Every
cluster a run creates is torn down when the run ends, failed or not.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager

from distributed import Client

from echodataflow.clusters import address, local, pbs, slurm
from echodataflow.logs import quiet_worker_failures
from echodataflow.models.deployment import Cluster, JobQueueOptions, Workpool

log = logging.getLogger(__name__)

Backend = Callable[[Cluster], AbstractContextManager[Client]]

BACKENDS: dict[str, Backend] = {
    "local": local.open_local,
    "address": address.open_address,
    # dask-jobqueue is imported only when one of these opens (the hpc extra).
    "slurm": slurm.open_slurm,
    "pbs": pbs.open_pbs,
}


_CLIENTS: dict[str, Client] = {}


def client_for(scheduler: str) -> Client:
    """Return this process's client of the scheduler at ``scheduler``.

    The service registers the client it opened; a process that has none (a worker
    of another pool, a test) connects once and keeps the client.
    """
    client = _CLIENTS.get(scheduler)
    if client is None or client.status not in ("running", "connecting"):
        client = Client(scheduler, set_as_default=False, timeout="30s")
        _CLIENTS[scheduler] = client
    return client


def with_workpool_image(cluster: Cluster, workpool: Workpool) -> Cluster:
    """Return ``cluster`` with its batch workers in the work pool's pinned image.

    A SLURM or PBS cluster without ``jobqueue.image`` runs its workers in
    ``workpool.image``, the image the flow runs use; other clusters are unchanged.
    """
    if cluster.type not in ("slurm", "pbs") or workpool.image is None:
        return cluster
    options = cluster.jobqueue or JobQueueOptions()
    if options.image is not None:
        return cluster
    return cluster.model_copy(
        update={"jobqueue": options.model_copy(update={"image": workpool.image})}
    )


def register_backend(name: str, backend: Backend) -> None:
    """Make a cluster backend available under ``cluster.type: name``."""
    BACKENDS[name] = backend


@contextmanager
def open_cluster(cluster: Cluster) -> Iterator[Client]:
    """Start (or connect to) the cluster a service asks for; tear it down on exit.

    Raises
    ------
    ValueError
        When no backend serves ``cluster.type``.
    """
    try:
        backend = BACKENDS[cluster.type]
    except KeyError as err:
        raise ValueError(
            f"unknown cluster backend {cluster.type!r}; "
            f"choose one of {sorted(BACKENDS)}"
        ) from err
    with backend(cluster) as client:
        address = str(client.scheduler_info()["address"])
        log.info("Dask cluster %s ready at %s", cluster.type, address)
        # Per-file failures are reported by the flow; workers need not dump them.
        client.register_worker_callbacks(quiet_worker_failures)
        _CLIENTS[address] = client
        try:
            yield client
        finally:
            _CLIENTS.pop(address, None)
