"""Which step and stage modules may run: entry points plus a worker-side allow-list.

Configuration names code by module and attribute. Only modules registered under the
``echodataflow.steps`` / ``echodataflow.stages`` entry-point groups, or listed in
``ECHODATAFLOW_ALLOWED_MODULES`` where the worker runs, are ever imported, so whoever
can start a run with custom parameters cannot make a worker import arbitrary code.
"""

from __future__ import annotations

import functools
import importlib
import inspect
import os
from collections.abc import Callable
from importlib.metadata import entry_points
from typing import Any

from echodataflow.exceptions import Problem, RegistryError
from echodataflow.models._yaml import KeyPath, line_of
from echodataflow.models.deployment import (
    DEFAULT_STAGE_MODULE,
    DEFAULT_STEP_MODULE,
    Deployment,
    Stage,
)
from echodataflow.tasklib._signatures import parameter_names
from echodataflow.tasklib._spec import StepSpec

STEP_GROUP = "echodataflow.steps"
STAGE_GROUP = "echodataflow.stages"
ALLOW_ENV = "ECHODATAFLOW_ALLOWED_MODULES"

# Custom data-quality checks (echodataflow.quality) are allowed the same way.
CHECK_GROUP = "echodataflow.checks"

_BUILTIN = {
    STEP_GROUP: {DEFAULT_STEP_MODULE},
    STAGE_GROUP: {DEFAULT_STAGE_MODULE},
    CHECK_GROUP: {"echodataflow.quality"},
}


def allowed_modules(group: str) -> frozenset[str]:
    """Return the modules of ``group`` that may be imported in this process."""
    names = set(_BUILTIN[group])
    names.update(_registered(group))
    extra = os.environ.get(ALLOW_ENV, "")
    names.update(name.strip() for name in extra.split(",") if name.strip())
    return frozenset(names)


@functools.cache
def _registered(group: str) -> frozenset[str]:
    # Scanning every installed distribution's entry points takes tens of
    # milliseconds, and a worker asks for each step of each file: scan once.
    return frozenset(ep.value.split(":")[0] for ep in entry_points(group=group))


def _import_registered(module: str, group: str) -> Any:
    allowed = allowed_modules(group)
    if module not in allowed:
        raise RegistryError(
            f"module {module!r} is not registered for {group}; registered: "
            f"{sorted(allowed)}. Register it as an entry point of {group!r} or add it "
            f"to {ALLOW_ENV} where the worker runs"
        )
    try:
        return importlib.import_module(module)
    except ImportError as err:
        raise RegistryError(
            f"registered module {module!r} cannot be imported: {err}"
        ) from err


def step_spec(module: str, name: str) -> StepSpec:
    """Return the registered step ``name`` of ``module``.

    Raises
    ------
    RegistryError
        When the module is not registered or has no such step.
    """
    steps: dict[str, StepSpec] = getattr(
        _import_registered(module, STEP_GROUP), "STEPS", {}
    )
    if name not in steps:
        raise RegistryError(
            f"step {name!r} is not in {module}; available: {sorted(steps)}"
        )
    return steps[name]


def stage_flow(module: str, name: str) -> Callable[..., Any]:
    """Return the registered stage flow ``name`` of ``module``.

    Raises
    ------
    RegistryError
        When the module is not registered or has no such flow.
    """
    stages: dict[str, Callable[..., Any]] = getattr(
        _import_registered(module, STAGE_GROUP), "STAGES", {}
    )
    if name not in stages:
        raise RegistryError(
            f"stage flow {name!r} is not in {module}; available: {sorted(stages)}"
        )
    return stages[name]


def _accepted(spec: StepSpec) -> frozenset[str]:
    if spec.target is None:
        return spec.extra
    if isinstance(spec.target, str):
        return frozenset((parameter_names(spec.target) - spec.provided) | spec.extra)
    parameters = inspect.signature(spec.target).parameters.values()
    named = {
        p.name
        for p in parameters
        if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
    }
    return frozenset((named - spec.provided) | spec.extra)


def check_params(
    spec: StepSpec, params: dict[str, Any]
) -> list[tuple[str | None, str]]:
    """Check ``task_params`` against a step's signature; return (key, problem) pairs."""
    accepted = _accepted(spec)
    if spec.target is None:
        target = ""
    elif isinstance(spec.target, str):
        target = f" of {spec.target}"
    else:
        target = f" of {spec.target.__module__}.{spec.target.__name__}"
    problems: list[tuple[str | None, str]] = []
    for key in params:
        if key in spec.provided:
            problems.append(
                (key, f"is filled in by the pipeline; remove it from {spec.name}")
            )
        elif key not in accepted:
            problems.append(
                (key, f"is not a parameter{target}; accepted: {sorted(accepted)}")
            )
    for key in sorted(spec.required - set(params)):
        problems.append((None, f"{spec.name} needs task_params.{key}"))
    for key, choices in spec.choices.items():
        if key in params and params[key] not in choices:
            problems.append(
                (key, f"got {params[key]!r}; accepted: {sorted(map(str, choices))}")
            )
    if spec.check is not None:
        problems.extend((None, message) for message in spec.check(params))
    return problems


def _check_chain(stage: Stage, specs: list[StepSpec]) -> list[tuple[int, str]]:
    problems: list[tuple[int, str]] = []
    has_echodata = False
    group_steps = [i for i, spec in enumerate(specs) if spec.scope == "group"]
    if len(group_steps) > 1:
        problems.append((group_steps[1], "a stage may have one group step only"))
    sonar_model = None
    for index, (task, spec) in enumerate(zip(stage.tasks, specs, strict=True)):
        if spec.needs == "raw" and index > 0:
            problems.append((index, f"{spec.name} must be the first step"))
        if spec.needs == "echodata" and not has_echodata:
            problems.append((index, f"{spec.name} needs EchoData: open a file first"))
        if spec.name == "edf_open_raw":
            sonar_model = task.task_params.get("sonar_model")
        if spec.product == "echodata":
            has_echodata = True
        if spec.name in ("edf_compute_Sv", "edf_compute_TS") and sonar_model in (
            "EK80",
            "ES80",
            "EA640",
        ):
            missing = {"waveform_mode", "encode_mode"} - set(task.task_params)
            if missing:
                problems.append(
                    (
                        index,
                        f"{sonar_model} calibration needs {sorted(missing)}, e.g. "
                        "waveform_mode: CW and encode_mode: power",
                    )
                )
    return problems


def check_steps(
    deployment: Deployment,
    lines: dict[KeyPath, int],
    file: str,
    *,
    check_stages: bool = True,
) -> list[Problem]:
    """Check every stage's flow, step names, parameters and step order.

    ``check_stages=False`` leaves the stage flows unchecked: importing them imports
    Prefect (seconds), which ``plan`` and an up-to-date ``run`` never need.
    """
    problems: list[Problem] = []

    def add(path: KeyPath, message: str) -> None:
        key = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in path)
        problems.append(Problem(file, line_of(lines, path), key.lstrip("."), message))

    for s, service in enumerate(deployment.services):
        for g, stage in enumerate(service.stages):
            stage_path: KeyPath = ("services", s, "stages", g)
            try:
                if check_stages:
                    stage_flow(stage.module, stage.name)
            except RegistryError as err:
                unregistered = stage.module not in allowed_modules(STAGE_GROUP)
                add((*stage_path, "module" if unregistered else "name"), str(err))
            specs: list[StepSpec] = []
            for t, task in enumerate(stage.tasks):
                task_path = (*stage_path, "tasks", t)
                try:
                    spec = step_spec(task.module, task.name)
                except RegistryError as err:
                    # Point at the key that is wrong: the module, or the step name.
                    unregistered = task.module not in allowed_modules(STEP_GROUP)
                    add((*task_path, "module" if unregistered else "name"), str(err))
                    continue
                specs.append(spec)
                for key, message in check_params(spec, task.task_params):
                    where = (*task_path, "task_params") + ((key,) if key else ())
                    add(where, message)
            if len(specs) == len(stage.tasks):
                for t, message in _check_chain(stage, specs):
                    add((*stage_path, "tasks", t, "name"), message)
    return problems


def require_registered(stages: list[Stage]) -> None:
    """Refuse stages that name a stage flow or step outside the registry.

    A deployed run checks its parameters with this before it imports or starts
    anything, since whoever can start a run can change them.

    Raises
    ------
    RegistryError
        Naming the first unregistered module, flow or step.
    """
    for stage in stages:
        stage_flow(stage.module, stage.name)
        for task in stage.tasks:
            step_spec(task.module, task.name)
