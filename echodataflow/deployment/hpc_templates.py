"""Base job templates of the slurm and pbs work pools: each flow run in the image.

On a cluster the Prefect worker itself runs as a long batch job
(``hpc/slurm/prefect-worker.sbatch``, ``hpc/pbs/prefect-worker.pbs``) and starts
each flow run as a process on its node. The template below is Prefect's process
template whose command starts the run through ``apptainer exec IMAGE``, so flow
runs use the pinned image while the worker needs only Prefect.
"""

from __future__ import annotations

import copy
from typing import Any

from echodataflow.clusters._jobqueue import image_reference

# What the process worker runs for a flow run, here inside the image.
ENGINE = "python -m prefect.engine"


def hpc_base_job_template(
    image: str | None, apptainer: str = "apptainer", apptainer_args: str = ""
) -> dict[str, Any]:
    """Return a process-worker base job template that runs flow runs in ``image``.

    Without an image the process worker's own template is returned: runs start in
    the worker's Python. The template gains the variables ``image``, ``apptainer``
    and ``apptainer_args`` (e.g. ``--bind /data``), which ``workpool.job_variables``
    or a deployment may override.
    """
    from prefect.workers.process import ProcessWorker

    template: dict[str, Any] = copy.deepcopy(
        ProcessWorker.get_default_base_job_template()
    )
    if image is None:
        return template
    properties = template["variables"]["properties"]
    properties["image"] = {
        "title": "Image",
        "type": "string",
        "default": image_reference(image),
        "description": "Apptainer image of each flow run (.sif, docker://, oras://).",
    }
    properties["apptainer"] = {
        "title": "Apptainer",
        "type": "string",
        "default": apptainer,
        "description": "Container runtime command (apptainer or singularity).",
    }
    properties["apptainer_args"] = {
        "title": "Apptainer arguments",
        "type": "string",
        "default": apptainer_args,
        "description": "Arguments of apptainer exec, e.g. --bind /data --cleanenv.",
    }
    env = properties["env"]
    env["default"] = {"ECHODATAFLOW_IMAGE": image_reference(image)}
    template["job_configuration"]["command"] = (
        "{{ apptainer }} exec {{ apptainer_args }} {{ image }} " + ENGINE
    )
    return template
