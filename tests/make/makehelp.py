"""Helpers for the make-style tests: stages on real raw files and an in-process run.

``make_in_process`` runs a stage's planned jobs here, without Prefect or Dask, and
records them in the ledger exactly as ``Sv_flow`` does, so planning and the ledger
are tested quickly on real echopype products; the CLI tests run the real thing.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

from echodataflow import ledger
from echodataflow.deployment.plan import StagePlan, plan_service
from echodataflow.deployment.report import RunContext
from echodataflow.models.deployment import Service
from echodataflow.models.load import parse_deployment
from echodataflow.models.resolve import resolve_deployment
from echodataflow.tasklib.runner import run_chain

# Small Summer2017 files (10 to 113 pings): a whole chain takes about a second each.
SMALL = [
    "Summer2017-D20170615-T212933.raw",
    "Summer2017-D20170615-T214606.raw",
    "Summer2017-D20170615-T214712.raw",
]


def sv_stage(raw: Path, out: Path, **extra: Any) -> dict[str, Any]:
    """A stage turning every raw file of ``raw`` into Sv with location."""
    return {
        "name": "Sv_flow",
        "tasks": [
            {"name": "edf_open_raw", "task_params": {"sonar_model": "EK60"}},
            {"name": "edf_compute_Sv"},
            {"name": "edf_add_location"},
        ],
        "source": {"path": str(raw / "*.raw")},
        "destination": {"path": str(out / "Sv")},
        **extra,
    }


def mvbs_stage(out: Path, **extra: Any) -> dict[str, Any]:
    """A stage gridding all Sv stores of ``out/Sv`` together into one MVBS."""
    return {
        "name": "Sv_flow",
        "tasks": [
            {"name": "edf_combine_Sv"},
            {
                "name": "edf_compute_MVBS",
                "task_params": {"range_bin": "5m", "ping_time_bin": "20s"},
            },
        ],
        "options": {"group": True},
        "source": {"path": str(out / "Sv" / "*_Sv.zarr")},
        "destination": {"path": str(out / "MVBS")},
        **extra,
    }


def service_of(*stages: dict[str, Any], name: str = "make-test") -> Service:
    """Validate a service (steps included) from plain stage mappings."""
    text = yaml.safe_dump({"services": [{"name": name, "stages": list(stages)}]})
    deployment = resolve_deployment(parse_deployment(text, "test.yaml"), "/")
    return deployment.services[0]


def context(run_id: str = "test-run", force: bool = False) -> RunContext:
    """A run context, scheduled now."""
    return RunContext(
        run_id=run_id, service="make-test", scheduled=datetime.now(UTC), force=force
    )


def plan_of(service: Service, run_id: str = "test-run") -> list[StagePlan]:
    """Plan the service as ``echodataflow plan`` does."""
    return plan_service(service, context(run_id))


def actions(plans: list[StagePlan]) -> dict[str, tuple[str, str]]:
    """Product name → (run|skip, why), over every stage."""
    return {
        Path(p.job.product_url).name: (
            "run" if p.decision.run else "skip",
            p.decision.why,
        )
        for plan in plans
        for p in plan.planned
    }


def make_in_process(service: Service, run_id: str) -> list[str]:
    """Make what a run would make, stage by stage; return the products made."""
    from echodataflow.deployment.plan import plan_stage

    made = []
    for stage in service.stages:
        planned, _ = plan_stage(stage, context(run_id))
        for p in planned:
            if not p.decision.run:
                continue
            outcome = run_chain(p.job)
            quality = outcome.quality
            if quality is not None and stage.data_quality is not None:
                block = stage.data_quality.block_downstream
                quality = {**quality, "block_downstream": block}
            ledger.write_record(
                p.job.product_url,
                state="done",
                inputs=p.inputs,
                steps=p.steps,
                run_id=run_id,
                options={},
                quality=quality,
            )
            made.append(Path(p.job.product_url).name)
    return made
