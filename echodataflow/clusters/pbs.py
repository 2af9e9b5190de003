"""A Dask cluster whose workers are PBS jobs (dask-jobqueue's PBSCluster)."""

from __future__ import annotations

from contextlib import AbstractContextManager

from distributed import Client

from echodataflow.clusters._jobqueue import PBS, job_script, open_jobqueue
from echodataflow.models.deployment import Cluster


def open_pbs(cluster: Cluster) -> AbstractContextManager[Client]:
    """Submit the workers as PBS jobs (``qsub``); delete them all on exit."""
    return open_jobqueue(cluster, PBS)


def pbs_job_script(cluster: Cluster) -> str:
    """Return the ``#PBS`` script of one worker job, rendered offline."""
    return job_script(cluster, PBS)
