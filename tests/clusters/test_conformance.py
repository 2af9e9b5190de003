"""Each backend starts, runs work and is gone after its block (failed or not)."""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator

import pytest
from distributed import LocalCluster
from slurm_queue import wait_no_jobs, worker_jobs

from echodataflow.clusters import client_for, open_cluster
from echodataflow.models.deployment import Cluster

BATCH = {"cores": 1, "memory": "2GB", "walltime": "00:10:00", "interface": "lo"}


@pytest.fixture(scope="module")
def scheduler_address() -> Iterator[str]:
    """A running scheduler for the ``address`` backend, not owned by the cluster."""
    with LocalCluster(
        n_workers=1,
        processes=False,
        protocol="tcp",
        dashboard_address=None,
        host="127.0.0.1",
    ) as running:
        yield running.scheduler_address


def _cluster(kind: str, request: pytest.FixtureRequest) -> Cluster:
    if kind == "address":
        address = request.getfixturevalue("scheduler_address")
        return Cluster(type="address", address=address)
    if kind in ("slurm", "pbs"):
        request.getfixturevalue("no_jobs_left")
        request.getfixturevalue("scratch_cwd")
        return Cluster.model_validate({"type": kind, "workers": 1, "jobqueue": BATCH})
    return Cluster(type="local", workers=1)


BACKENDS = [
    "local",
    "address",
    pytest.param("slurm", marks=[pytest.mark.slurm, pytest.mark.slow]),
    pytest.param("pbs", marks=[pytest.mark.slurm, pytest.mark.slow]),
]


@pytest.mark.parametrize("kind", BACKENDS)
def test_a_backend_runs_work_and_is_torn_down(kind, request):
    cluster = _cluster(kind, request)
    with open_cluster(cluster) as client:
        address = client.scheduler_info()["address"]
        assert client_for(address) is client
        assert client.submit(sum, [1, 2, 3]).result(timeout=180) == 6
        if kind in ("slurm", "pbs"):
            # The work ran inside a batch job of this cluster.
            assert (
                client.submit(os.getenv, "SLURM_JOB_ID", pure=False).result()
                in worker_jobs()
            )
    assert client.status == "closed"
    if kind in ("slurm", "pbs"):
        assert wait_no_jobs() == []


@pytest.mark.parametrize("kind", BACKENDS)
def test_a_failing_run_still_tears_the_backend_down(kind, request):
    cluster = _cluster(kind, request)
    with pytest.raises(ZeroDivisionError), open_cluster(cluster) as client:
        # The run fails while its jobs are still queued or starting.
        raise ZeroDivisionError
    assert client.status == "closed"
    if kind in ("slurm", "pbs"):
        assert wait_no_jobs() == []


@pytest.mark.slurm
@pytest.mark.slow
def test_a_cancelled_worker_job_is_replaced(no_jobs_left, scratch_cwd):
    cluster = Cluster.model_validate({"type": "slurm", "workers": 1, "jobqueue": BATCH})
    with open_cluster(cluster) as client:
        client.wait_for_workers(1, timeout=120)
        first = client.submit(os.getenv, "SLURM_JOB_ID", pure=False).result()
        subprocess.run(["scancel", first], check=True, timeout=30)
        deadline = time.monotonic() + 120
        replaced = ""
        while time.monotonic() < deadline and not replaced:
            time.sleep(1)
            if client.nthreads():
                job = client.submit(os.getenv, "SLURM_JOB_ID", pure=False).result(
                    timeout=60
                )
                replaced = job if job != first else ""
        assert replaced, "no new worker job came after the first was cancelled"
        assert replaced in worker_jobs()
