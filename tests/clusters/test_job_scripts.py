"""Batch scripts of worker jobs, rendered without a cluster, and their options."""

from __future__ import annotations

import sys

import pytest
from pydantic import ValidationError

from echodataflow.clusters import BACKENDS, open_cluster, with_workpool_image
from echodataflow.clusters._jobqueue import lifetime_args, walltime_seconds
from echodataflow.clusters.pbs import pbs_job_script
from echodataflow.clusters.slurm import slurm_job_script
from echodataflow.exceptions import ClusterError
from echodataflow.models.deployment import Cluster, Workpool


def _cluster(kind: str, **options: object) -> Cluster:
    return Cluster.model_validate(
        {"type": kind, "workers": 2, "jobqueue": {"cores": 1, **options}}
    )


def _directives(script: str, prefix: str) -> list[str]:
    return [line for line in script.splitlines() if line.startswith(prefix)]


def test_slurm_script_carries_partition_account_size_walltime_and_extras():
    script = slurm_job_script(
        _cluster(
            "slurm",
            queue="debug",
            account="echo-lab",
            cores=4,
            memory="8GB",
            walltime="02:30:00",
            job_extra_directives=["--constraint=skylake"],
            job_script_prologue=["module load apptainer"],
        )
    )
    assert _directives(script, "#SBATCH") == [
        "#SBATCH -J edf-worker",
        "#SBATCH -p debug",
        "#SBATCH -A echo-lab",
        "#SBATCH -n 1",
        "#SBATCH --cpus-per-task=4",
        "#SBATCH --mem=8G",
        "#SBATCH -t 02:30:00",
        "#SBATCH --constraint=skylake",
    ]
    assert "module load apptainer" in script.splitlines()
    worker = script.splitlines()[-1]
    assert worker.startswith(f"{sys.executable} -m distributed.cli.dask_worker ")
    assert "--nthreads 4" in worker
    assert "--death-timeout 60" in worker


def test_pbs_script_carries_queue_account_select_and_walltime():
    script = pbs_job_script(
        _cluster(
            "pbs",
            queue="workq",
            account="echo-lab",
            cores=2,
            memory="4GB",
            walltime="01:00:00",
            job_extra_directives=["-l place=scatter"],
        )
    )
    assert _directives(script, "#PBS") == [
        "#PBS -N edf-worker",
        "#PBS -q workq",
        "#PBS -A echo-lab",
        "#PBS -l select=1:ncpus=2:mem=3815MB",
        "#PBS -l walltime=01:00:00",
        "#PBS -l place=scatter",
    ]


def test_pbs_resource_spec_replaces_the_generated_select():
    script = pbs_job_script(
        _cluster("pbs", resource_spec="nodes=1:ppn=8", memory="2GB")
    )
    assert "#PBS -l nodes=1:ppn=8" in script
    assert "select=" not in script


def test_skipped_directives_are_left_out():
    script = slurm_job_script(_cluster("slurm", job_directives_skip=["--mem"]))
    assert not any("--mem" in line for line in _directives(script, "#SBATCH"))


def test_workers_retire_before_the_walltime_kills_their_job():
    script = slurm_job_script(_cluster("slurm", walltime="01:00:00"))
    assert "--lifetime 3240s --lifetime-stagger 90s" in script
    # Every worker is gone before the scheduler's limit, stagger included.
    for walltime in ("00:02:00", "00:10:00", "01:00:00", "2-00:00:00"):
        args = lifetime_args(walltime)
        lifetime = int(args[1].removesuffix("s"))
        stagger = int(args[3].removesuffix("s"))
        assert 0 < lifetime + stagger < walltime_seconds(walltime)


def test_a_lifetime_given_in_worker_args_replaces_the_derived_one():
    script = slurm_job_script(
        _cluster(
            "slurm", worker_extra_args=["--lifetime", "20m", "--resources", "io=1"]
        )
    )
    assert script.count("--lifetime ") == 1
    assert "--lifetime 20m --resources io=1" in script


def test_workers_start_through_apptainer_when_an_image_is_set():
    script = slurm_job_script(
        _cluster(
            "slurm",
            image="ghcr.io/oso/echodataflow:1.4.0",
            apptainer_args=["--bind", "/data/raw", "--cleanenv"],
        )
    )
    worker = script.splitlines()[-1]
    assert worker.startswith(
        "apptainer exec --bind /data/raw --cleanenv "
        "docker://ghcr.io/oso/echodataflow:1.4.0 python -m distributed.cli.dask_worker"
    )


def test_a_sif_image_and_another_runtime_are_used_as_given():
    script = pbs_job_script(
        _cluster(
            "pbs",
            image="/shared/images/edf 1.4.sif",
            apptainer="singularity",
            python="/opt/conda/bin/python",
        )
    )
    assert script.splitlines()[-1].startswith(
        "singularity exec '/shared/images/edf 1.4.sif' /opt/conda/bin/python -m "
    )


def test_plain_python_without_an_image():
    script = pbs_job_script(_cluster("pbs", python="/opt/edf/bin/python"))
    assert script.splitlines()[-1].startswith("/opt/edf/bin/python -m distributed")
    assert "apptainer" not in script


def test_a_batch_cluster_inherits_the_work_pools_image():
    pool = Workpool(type="slurm", image="ghcr.io/oso/echodataflow:1.4.0")
    inherited = with_workpool_image(_cluster("slurm"), pool)
    assert inherited.jobqueue is not None
    assert inherited.jobqueue.image == "ghcr.io/oso/echodataflow:1.4.0"
    own = with_workpool_image(_cluster("slurm", image="/img/own.sif"), pool)
    assert own.jobqueue is not None
    assert own.jobqueue.image == "/img/own.sif"
    local = Cluster(type="local", workers=2)
    assert with_workpool_image(local, pool) is local


@pytest.mark.parametrize(
    ("cluster", "message"),
    [
        (
            {"type": "slurm", "threads_per_worker": 4},
            "sizes workers with jobqueue.cores",
        ),
        (
            {"type": "slurm", "jobqueue": {"resource_spec": "select=1"}},
            "resource_spec applies to type pbs only",
        ),
        (
            {"type": "pbs", "jobqueue": {"job_extra_directives": ["-q a\n#PBS -q b"]}},
            "must be a single line",
        ),
        ({"type": "slurm", "jobqueue": {"walltime": "90 minutes"}}, "walltime"),
        ({"type": "pbs", "jobqueue": {"memory": "lots"}}, "memory"),
        ({"type": "slurm", "jobqueue": {"sbatch_flags": "-x"}}, "sbatch_flags"),
    ],
)
def test_bad_batch_options_are_rejected_by_name(cluster, message):
    with pytest.raises(ValidationError, match=message):
        Cluster.model_validate(cluster)


def test_slurm_and_pbs_are_registered_backends():
    assert {"local", "address", "slurm", "pbs"} <= set(BACKENDS)


def test_a_missing_hpc_extra_is_named(monkeypatch):
    # None in sys.modules makes the import fail as if the package were absent.
    monkeypatch.setitem(sys.modules, "dask_jobqueue", None)
    with (
        pytest.raises(ClusterError, match=r"echodataflow\[hpc\]"),
        open_cluster(_cluster("slurm")),
    ):
        pass
