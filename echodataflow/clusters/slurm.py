"""A Dask cluster whose workers are SLURM jobs (dask-jobqueue's SLURMCluster)."""

from __future__ import annotations

from contextlib import AbstractContextManager

from distributed import Client

from echodataflow.clusters._jobqueue import SLURM, job_script, open_jobqueue
from echodataflow.models.deployment import Cluster


def open_slurm(cluster: Cluster) -> AbstractContextManager[Client]:
    """Submit the workers as SLURM jobs (``sbatch``); cancel them all on exit."""
    return open_jobqueue(cluster, SLURM)


def slurm_job_script(cluster: Cluster) -> str:
    """Return the ``#SBATCH`` script of one worker job, rendered offline."""
    return job_script(cluster, SLURM)
