"""An existing Dask scheduler, reached by address; it is not ours to shut down."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from distributed import Client

from echodataflow.clusters._client import connected
from echodataflow.models.deployment import Cluster


@contextmanager
def open_address(cluster: Cluster) -> Iterator[Client]:
    """Connect a client to ``cluster.address``; only the client closes on exit."""
    assert cluster.address is not None
    with connected(cluster.address) as client:
        yield client
