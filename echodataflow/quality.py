"""Data-quality checks run on every product a stage makes.

A stage's ``data_quality.checks`` names built-in checks (``nan_share``,
``sv_range``, ``ping_time_increasing``, ``location_present``) or custom ones by
dotted path, ``package.module.function``. Custom checks come from modules
registered under the ``echodataflow.checks`` entry-point group (or listed in
``ECHODATAFLOW_ALLOWED_MODULES``), like steps, so a deployment file cannot make a
worker import arbitrary code.

A check is a function ``(dataset, params) -> CheckResult``. It may carry a pydantic
model of its parameters as ``check.params_model``; ``echodataflow validate`` then
checks the parameters before any run. Built-in checks always have one.

The checks run on the worker, on the dataset just committed, so nothing is read
back. Their verdict goes into the product's ledger record (a later stage reads it
to keep blocked products out) and, as JSON, under ``data_quality.out_path``.
"""

from __future__ import annotations

import importlib
import json
import logging
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any, Self

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from echodataflow import storage
from echodataflow.exceptions import Problem, RegistryError
from echodataflow.models._yaml import KeyPath, line_of
from echodataflow.models.deployment import Check, DataQuality, Deployment
from echodataflow.registry import CHECK_GROUP, allowed_modules

if TYPE_CHECKING:
    import xarray as xr

log = logging.getLogger(__name__)

QUALITY_FOLDER = ".edf-quality"


@dataclass(frozen=True)
class CheckResult:
    """The verdict of one check on one product."""

    name: str
    passed: bool
    detail: str
    value: float | None = None


CheckFunction = Callable[["xr.Dataset", dict[str, Any]], CheckResult]


class _Params(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class NanShareParams(_Params):
    """Parameters of ``nan_share``."""

    variable: str = Field("Sv", description="Variable whose NaN share is measured.")
    max_share: float = Field(
        0.5, ge=0, le=1, description="Largest accepted share of NaN values, 0 to 1."
    )


class SvRangeParams(_Params):
    """Parameters of ``sv_range``."""

    variable: str = "Sv"
    min_db: float = Field(-180.0, description="Lowest plausible value, dB.")
    max_db: float = Field(20.0, description="Highest plausible value, dB.")
    max_share_outside: float = Field(
        0.0, ge=0, le=1, description="Share of finite values allowed outside."
    )

    @model_validator(mode="after")
    def _ordered(self) -> Self:
        if self.min_db >= self.max_db:
            raise ValueError(
                f"min_db ({self.min_db}) must be below max_db ({self.max_db})"
            )
        return self


class PingTimeParams(_Params):
    """Parameters of ``ping_time_increasing``."""

    dimension: str = "ping_time"


class LocationParams(_Params):
    """Parameters of ``location_present``."""

    latitude: str = "latitude"
    longitude: str = "longitude"
    min_share: float = Field(
        1.0, gt=0, le=1, description="Share of pings that need a finite position."
    )


def nan_share(dataset: xr.Dataset, params: dict[str, Any]) -> CheckResult:
    """Pass when the share of NaN values of a variable is at most ``max_share``."""
    p = NanShareParams.model_validate(params)
    if p.variable not in dataset:
        return CheckResult("nan_share", False, f"no variable {p.variable!r}")
    values = dataset[p.variable]
    share = float(values.isnull().mean().values) if values.size else 1.0
    return CheckResult(
        "nan_share",
        share <= p.max_share,
        f"{share:.2%} of {p.variable} is NaN (at most {p.max_share:.2%} accepted)",
        share,
    )


def sv_range(dataset: xr.Dataset, params: dict[str, Any]) -> CheckResult:
    """Pass when the finite values of Sv lie inside ``[min_db, max_db]``."""
    p = SvRangeParams.model_validate(params)
    if p.variable not in dataset:
        return CheckResult("sv_range", False, f"no variable {p.variable!r}")
    values = dataset[p.variable]
    finite = values.notnull()
    count = int(finite.sum().values)
    if count == 0:
        return CheckResult("sv_range", False, f"{p.variable} has no finite value")
    outside = int((finite & ((values < p.min_db) | (values > p.max_db))).sum().values)
    share = outside / count
    low, high = float(values.min().values), float(values.max().values)
    return CheckResult(
        "sv_range",
        share <= p.max_share_outside,
        f"{p.variable} spans {low:.1f} to {high:.1f} dB; {share:.2%} outside "
        f"[{p.min_db}, {p.max_db}]",
        share,
    )


def ping_time_increasing(dataset: xr.Dataset, params: dict[str, Any]) -> CheckResult:
    """Pass when ping times increase strictly (no repeat, no step back)."""
    import numpy as np

    p = PingTimeParams.model_validate(params)
    if p.dimension not in dataset.coords:
        return CheckResult("ping_time_increasing", False, f"no {p.dimension!r}")
    times = dataset[p.dimension].values
    steps = np.diff(times)
    bad = int((steps <= np.zeros_like(steps)).sum()) if steps.size else 0
    detail = (
        f"{len(times)} ping times increase strictly"
        if bad == 0
        else f"{bad} of {max(len(times) - 1, 0)} steps between ping times are not "
        "increasing"
    )
    return CheckResult("ping_time_increasing", bad == 0, detail, float(bad))


def location_present(dataset: xr.Dataset, params: dict[str, Any]) -> CheckResult:
    """Pass when latitude and longitude exist and are finite at enough pings."""
    p = LocationParams.model_validate(params)
    missing = [v for v in (p.latitude, p.longitude) if v not in dataset]
    if missing:
        return CheckResult(
            "location_present", False, f"no {', '.join(missing)}: add edf_add_location"
        )
    both = dataset[p.latitude].notnull() & dataset[p.longitude].notnull()
    share = float(both.mean().values) if both.size else 0.0
    return CheckResult(
        "location_present",
        share >= p.min_share,
        f"{share:.2%} of pings have a position (at least {p.min_share:.2%} needed)",
        share,
    )


def _with_model(func: Callable[..., CheckResult], model: type[BaseModel]) -> Any:
    func.params_model = model  # type: ignore[attr-defined]
    return func


BUILTIN_CHECKS: dict[str, CheckFunction] = {
    "nan_share": _with_model(nan_share, NanShareParams),
    "sv_range": _with_model(sv_range, SvRangeParams),
    "ping_time_increasing": _with_model(ping_time_increasing, PingTimeParams),
    "location_present": _with_model(location_present, LocationParams),
}


def resolve_check(name: str) -> CheckFunction:
    """Return the check called ``name``: a built-in one or a registered dotted path.

    Raises
    ------
    RegistryError
        When the name is neither built in nor in a registered check module.
    """
    if name in BUILTIN_CHECKS:
        return BUILTIN_CHECKS[name]
    module, _, attr = name.rpartition(".")
    if not module:
        raise RegistryError(
            f"unknown check {name!r}; built-in: {sorted(BUILTIN_CHECKS)}, or give a "
            "dotted path package.module.function of a registered check module"
        )
    allowed = allowed_modules(CHECK_GROUP)
    if module not in allowed:
        raise RegistryError(
            f"check module {module!r} is not registered for {CHECK_GROUP}; "
            f"registered: {sorted(allowed)}. Register it as an entry point of "
            f"{CHECK_GROUP!r} or add it to ECHODATAFLOW_ALLOWED_MODULES"
        )
    try:
        found = getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError) as err:
        raise RegistryError(f"check {name!r} cannot be loaded: {err}") from err
    if not callable(found):
        raise RegistryError(f"check {name!r} is not a function")
    check: CheckFunction = found
    return check


def check_params(check: Check) -> list[str]:
    """Return what is wrong with a check's name or parameters (empty when fine)."""
    try:
        func = resolve_check(check.name)
    except RegistryError as err:
        return [str(err)]
    model: type[BaseModel] | None = getattr(func, "params_model", None)
    if model is None:
        return []
    try:
        model.model_validate(check.params)
    except ValidationError as err:
        return [
            f"params.{'.'.join(map(str, e['loc']))}: {e['msg']}"
            if e["loc"]
            else f"params: {e['msg']}"
            for e in err.errors()
        ]
    return []


def check_quality(
    deployment: Deployment, lines: dict[KeyPath, int], file: str
) -> list[Problem]:
    """Check every stage's data-quality check names and parameters."""
    problems: list[Problem] = []
    for s, service in enumerate(deployment.services):
        for g, stage in enumerate(service.stages):
            if stage.data_quality is None:
                continue
            for c, check in enumerate(stage.data_quality.checks):
                path: KeyPath = (
                    "services",
                    s,
                    "stages",
                    g,
                    "data_quality",
                    "checks",
                    c,
                    "name",
                )
                key = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in path)
                problems.extend(
                    Problem(file, line_of(lines, path), key.lstrip("."), message)
                    for message in check_params(check)
                )
    return problems


def run_checks(dataset: xr.Dataset | None, checks: list[Check]) -> dict[str, Any]:
    """Run checks on a product; return the verdict as plain data.

    A check that raises fails, with the error as its detail: a broken check must
    not pass a product silently, nor cost the product itself.
    """
    results = []
    for check in checks:
        if dataset is None:
            results.append(CheckResult(check.name, False, "the product is no dataset"))
            continue
        try:
            result = resolve_check(check.name)(dataset, dict(check.params))
            if not isinstance(result, CheckResult):
                passed, detail = result
                result = CheckResult(check.name, bool(passed), str(detail))
        except Exception as err:  # noqa: BLE001 - a failing check fails, never crashes
            result = CheckResult(check.name, False, f"{type(err).__name__}: {err}")
        results.append(result)
    failed = [r.name for r in results if not r.passed]
    return {
        "passed": not failed,
        "failed": failed,
        "results": [asdict(r) for r in results],
    }


def results_url(quality: DataQuality, destination: str) -> str:
    """Where a stage's quality results go: ``out_path``, else beside the products."""
    return quality.out_path or storage.join(destination, QUALITY_FOLDER)


def write_results(
    quality: DataQuality,
    destination: str,
    stage: str,
    run_id: str,
    verdicts: dict[str, dict[str, Any]],
) -> str:
    """Write one JSON file per stage run and one per product; return the run's URL."""
    folder = results_url(quality, destination)
    options = storage.resolve_storage_options(quality.storage_options)
    for product, verdict in verdicts.items():
        storage.write_text_atomic(
            storage.join(folder, f"{product}.json"),
            json.dumps({"product": product, **verdict}, indent=1, default=str),
            options,
        )
    summary = {
        "stage": stage,
        "run_id": run_id,
        "block_downstream": quality.block_downstream,
        "passed": sum(1 for v in verdicts.values() if v["passed"]),
        "failed": sorted(p for p, v in verdicts.items() if not v["passed"]),
        "products": verdicts,
    }
    url = storage.join(folder, f"{stage}-{run_id}.json")
    storage.write_text_atomic(url, json.dumps(summary, indent=1, default=str), options)
    return url
