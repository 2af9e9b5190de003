"""The client a cluster backend hands to the run."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from distributed import Client


@contextmanager
def connected(target: Any) -> Iterator[Client]:
    """Connect a client to ``target`` (a cluster or an address); close it on exit.

    The client is not made the process's default: a prestarted cluster is opened in
    one thread and closed in another, and a default client is bound to the context
    that set it.
    """
    client = Client(target, set_as_default=False, timeout="30s")
    try:
        yield client
    finally:
        client.close()
