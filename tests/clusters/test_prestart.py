"""A cluster started ahead of its run is the one the run opens, once; none leaks."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

from echodataflow.clusters import discard_prestarted, open_cluster, prestart
from echodataflow.models.deployment import Cluster


def _scheduler(cluster: Cluster) -> str:
    with open_cluster(cluster) as client:
        assert client.submit(sum, [1, 2]).result(timeout=120) == 3
        return str(client.scheduler_info()["address"])


def test_the_run_takes_the_prestarted_cluster_once():
    cluster = Cluster(type="local", workers=1)
    prestart(cluster)
    # A second prestart of the same cluster starts nothing more.
    prestart(cluster)

    with open_cluster(cluster) as client:
        taken = client.scheduler_info()["address"]
        assert client.submit(sum, [1, 2]).result(timeout=120) == 3
    assert client.status == "closed"

    # Once taken it is gone: the next open starts a cluster of its own.
    assert _scheduler(cluster) != taken


def test_a_prestarted_cluster_no_run_took_is_closed():
    cluster = Cluster(type="local", workers=1, threads_per_worker=2)
    prestart(cluster)
    discard_prestarted()

    # Nothing is left to take: the next open is a fresh cluster, and works.
    assert _scheduler(cluster).startswith("tcp://127.0.0.1:")


def test_workers_fork_with_echopype_imported_and_glibc_malloc_defaults():
    # In a process of its own: the start method is a setting of the whole process.
    script = textwrap.dedent(
        """
        import sys
        from echodataflow.clusters import open_cluster
        from echodataflow.clusters.local import fork_workers_from_server
        from echodataflow.models.deployment import Cluster

        fork_workers_from_server()
        with open_cluster(Cluster(type="local", workers=2)) as client:
            loaded = client.run(lambda: "echopype" in sys.modules)
            profiled = client.run(
                lambda: __import__("dask").config.get(
                    "distributed.worker.profile.enabled"
                )
            )
            trim = client.run(
                lambda: __import__("os").environ.get("MALLOC_TRIM_THRESHOLD_")
            )
        print(sorted(loaded.values()), sorted(profiled.values()), list(trim.values()))
        """
    )
    # Dask's default would set it to 65536 in every worker.
    environ = {k: v for k, v in os.environ.items() if k != "MALLOC_TRIM_THRESHOLD_"}
    done = subprocess.run(
        [sys.executable, "-c", script],
        env=environ,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    last = done.stdout.strip().splitlines()[-1]
    assert last == "[True, True] [False, False] [None, None]"
