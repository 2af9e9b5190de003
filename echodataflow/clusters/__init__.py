"""Dask cluster backends behind one interface: ``open_cluster(cluster) -> Client``.

One module per backend (local, address; slurm and pbs through dask-jobqueue). Every
cluster a run creates is torn down when the run ends, failed or not.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import AbstractContextManager, ExitStack, contextmanager

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
# Clusters started ahead of the run that will use them, by their configuration.
_PRESTARTED: dict[str, Future[tuple[ExitStack, Client]]] = {}


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


def _backend(cluster: Cluster) -> Backend:
    try:
        return BACKENDS[cluster.type]
    except KeyError as err:
        raise ValueError(
            f"unknown cluster backend {cluster.type!r}; "
            f"choose one of {sorted(BACKENDS)}"
        ) from err


def _start(cluster: Cluster) -> tuple[ExitStack, Client]:
    stack = ExitStack()
    client = stack.enter_context(_backend(cluster)(cluster))
    # Per-file failures are reported by the flow; workers need not dump them. Set
    # up as the cluster starts: a run may hand it files before opening it.
    try:
        client.register_worker_callbacks(quiet_worker_failures)
    except BaseException:
        stack.close()
        raise
    return stack, client


def prestart(cluster: Cluster) -> None:
    """Start ``cluster`` in the background, for the next ``open_cluster`` of it.

    A run calls this as early as it knows its cluster, so that worker processes
    start (and import what they need) while the rest of the run starts. A cluster
    that is never opened is closed by ``discard_prestarted``.
    """
    key = cluster.model_dump_json()
    if key not in _PRESTARTED:
        _backend(cluster)
        starter = ThreadPoolExecutor(1, thread_name_prefix="edf-cluster-start")
        _PRESTARTED[key] = starter.submit(_start, cluster)
        starter.shutdown(wait=False)


def prestarted_client(cluster: Cluster) -> Client | None:
    """Wait for the prestarted ``cluster`` and return its client, without taking it.

    Returns None when ``cluster`` was not prestarted or failed to start (the run
    reports that when it opens the cluster).
    """
    started = _PRESTARTED.get(cluster.model_dump_json())
    if started is None:
        return None
    try:
        _stack, client = started.result()
    except Exception:  # noqa: BLE001 - open_cluster raises it again, in the run
        return None
    return client


def discard_prestarted() -> None:
    """Close every prestarted cluster no run has taken."""
    while _PRESTARTED:
        _, started = _PRESTARTED.popitem()
        try:
            stack, _client = started.result()
        except Exception:  # noqa: BLE001 - it failed to start: nothing to close
            continue
        stack.close()


@contextmanager
def _opened(cluster: Cluster) -> Iterator[Client]:
    started = _PRESTARTED.pop(cluster.model_dump_json(), None)
    stack, client = _start(cluster) if started is None else started.result()
    with stack:
        yield client


@contextmanager
def open_cluster(cluster: Cluster) -> Iterator[Client]:
    """Start (or connect to) the cluster a service asks for; tear it down on exit.

    A cluster ``prestart`` began is taken as it is, once.

    Raises
    ------
    ValueError
        When no backend serves ``cluster.type``.
    """
    with _opened(cluster) as client:
        address = str(client.scheduler_info()["address"])
        log.info("Dask cluster %s ready at %s", cluster.type, address)
        _CLIENTS[address] = client
        try:
            yield client
        finally:
            _CLIENTS.pop(address, None)
