"""The slurm/pbs work pool template runs each flow run in the pinned image."""

from __future__ import annotations

import shlex

from prefect.utilities.templating import apply_values

from echodataflow.deployment.hpc_templates import hpc_base_job_template


def _command(template: dict, **overrides: object) -> list[str]:
    properties = template["variables"]["properties"]
    values = {k: v.get("default") for k, v in properties.items()} | overrides
    rendered = apply_values(template["job_configuration"], values)
    return shlex.split(rendered["command"])


def test_flow_runs_start_through_apptainer_in_the_pinned_image():
    template = hpc_base_job_template(
        "ghcr.io/oso/edf:1.4.0", apptainer_args="--bind /data"
    )
    assert _command(template) == [
        "apptainer", "exec", "--bind", "/data", "docker://ghcr.io/oso/edf:1.4.0",
        "python", "-m", "prefect.engine",
    ]  # fmt: skip
    env = template["variables"]["properties"]["env"]["default"]
    assert env == {"ECHODATAFLOW_IMAGE": "docker://ghcr.io/oso/edf:1.4.0"}


def test_a_deployment_may_pick_another_image_and_runtime():
    template = hpc_base_job_template("/images/edf.sif")
    command = _command(template, image="/images/edf-1.5.sif", apptainer="singularity")
    assert command[:3] == ["singularity", "exec", "/images/edf-1.5.sif"]


def test_without_an_image_runs_use_the_process_workers_own_command():
    template = hpc_base_job_template(None)
    assert template["job_configuration"]["command"] == "{{ command }}"
