"""What a run would make, and why: Make-style planning of a stage or a service.

Planning lists and groups a stage's sources, fingerprints them and asks the ledger
about each product. It reads and never writes, and imports neither Prefect nor
Dask nor echopype, so ``echodataflow plan`` (and ``run`` with nothing to do) answers
in about a second.

A stage may read an earlier stage's products (Sv stores, then MVBS). Such a source
is taken only when its own ledger record says ``done`` (a store alone may be
half-written), its fingerprint is its record's run id and time, and it is left out
when a data-quality check of its stage failed and that stage blocks downstream.
When a service is planned as a whole, the products an earlier stage will (re)make
count as sources that will change: what is built from them is planned to run,
because "upstream X will be remade".
"""

from __future__ import annotations

import fnmatch
import logging
import posixpath
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from echodataflow import ledger, storage
from echodataflow.deployment.report import RunContext
from echodataflow.deployment.source import (
    _patterns,
    club_raw_files,
    extract_source,
    parse_raw_paths,
    render,
    stem,
)
from echodataflow.models.deployment import Service, Stage
from echodataflow.registry import step_spec
from echodataflow.tasklib.runner import ChainJob, StepCall

log = logging.getLogger(__name__)

_PRODUCT_KINDS = ("Sv", "TS", "MVBS", "NASC", "echodata")


@dataclass(frozen=True)
class PlannedJob:
    """A product, the job that makes it, and whether it must run."""

    job: ChainJob
    inputs: dict[str, dict[str, Any]]
    steps: list[dict[str, Any]]
    decision: ledger.Decision


@dataclass(frozen=True)
class StagePlan:
    """The plan of one stage: its products and the sources it leaves out."""

    stage: Stage
    planned: list[PlannedJob]
    left_out: dict[str, str] = field(default_factory=dict)

    @property
    def to_run(self) -> list[PlannedJob]:
        """The products a run would make."""
        return [p for p in self.planned if p.decision.run]


def product_kind(stage: Stage) -> str:
    """Return the kind of product the stage's last producing step makes."""
    kinds = [step_spec(t.module, t.name).product for t in stage.tasks]
    named = [kind for kind in kinds if kind is not None]
    return named[-1] if named else "dataset"


def product_key(source: str) -> str:
    """Return a product's name stem: its source file's, less an earlier kind."""
    key = stem(source)
    for kind in _PRODUCT_KINDS:
        if key.endswith(f"_{kind}"):
            return key.removesuffix(f"_{kind}")
    return key


def _has_group_step(stage: Stage) -> bool:
    return any(step_spec(t.module, t.name).scope == "group" for t in stage.tasks)


def _pending_sources(stage: Stage, pending: Mapping[str, str]) -> list[str]:
    """Earlier stages' products, to be (re)made in this run, that ``stage`` reads."""
    if not pending:
        return []
    patterns = [
        render(p, stage.source.parameters)
        for paths in _patterns(stage.source).values()
        for p in paths
    ]
    return [
        url
        for url in pending
        if any(fnmatch.fnmatchcase(url, pattern) for pattern in patterns)
    ]


class _Sources:
    """Fingerprints of a stage's sources; knows which are earlier stages' products."""

    def __init__(self, options: dict[str, Any], pending: Mapping[str, str]) -> None:
        self.options = options
        self.pending = pending
        self._ledgers: dict[str, bool] = {}
        self._prints: dict[str, dict[str, Any]] = {}

    def prefetch(self, urls: list[str]) -> None:
        """Fingerprint the plain files among ``urls`` with one listing per folder."""
        plain = [u for u in urls if u not in self.pending and not self._is_product(u)]
        self._prints = storage.fingerprints(plain, self.options)

    def _is_product(self, url: str) -> bool:
        folder = posixpath.dirname(url.rstrip("/"))
        if folder not in self._ledgers:
            where = storage.join(folder, ledger.LEDGER_FOLDER)
            self._ledgers[folder] = storage.exists(where, self.options)
        return self._ledgers[folder]

    def check(self, url: str) -> tuple[dict[str, Any] | None, str]:
        """Return a source's fingerprint, or None and why it cannot be used."""
        if url in self.pending:
            return {"upstream": "will be remade"}, ""
        if not self._is_product(url):
            known = self._prints.get(url)
            return known or storage.fingerprint(url, self.options), ""
        record = ledger.is_done(url, self.options)
        if record is None:
            return None, "upstream product is not done (no done record)"
        quality = record.get("quality") or {}
        if quality.get("block_downstream") and not quality.get("passed", True):
            failed = ", ".join(quality.get("failed", []))
            return None, f"blocked: failed data-quality checks {failed}"
        return {"run_id": record.get("run_id"), "written": record.get("written")}, ""


def _attrs(sources: list[str], steps: list[dict[str, Any]], run_id: str) -> Any:
    return {
        "edf_source_files": [posixpath.basename(s.rstrip("/")) for s in sources],
        "edf_steps": steps,
        "edf_versions": ledger.versions(),
        "edf_image": ledger.image() or "",
        "edf_run_id": run_id,
    }


def plan_stage(
    stage: Stage, context: RunContext, pending: Mapping[str, str] | None = None
) -> tuple[list[PlannedJob], dict[str, str]]:
    """List, group and fingerprint the stage's sources; decide each product.

    Parameters
    ----------
    stage
        The stage to plan.
    context
        The run's id, scheduled time and ``force``.
    pending
        Products of earlier stages that this run will (re)make, by URL, with the
        name of their stage; a product built from one of them must run.

    Returns
    -------
    tuple
        The planned jobs and the source files left out, with reasons. Nothing is
        written: ``echodataflow plan`` prints exactly this.
    """
    pending = pending or {}
    source_options = storage.resolve_storage_options(stage.source.storage_options)
    dest_options = storage.resolve_storage_options(stage.destination.storage_options)
    group_options = storage.resolve_storage_options(
        stage.group.storage_options if stage.group else None
    )
    upcoming = _pending_sources(stage, pending)
    paths = extract_source(stage.source, source_options, context.scheduled, upcoming)
    sources = _Sources(source_options, pending)
    # One listing per folder, not one request per file: a survey has thousands.
    sources.prefetch(paths)
    fingerprints: dict[str, dict[str, Any]] = {}
    left_out: dict[str, str] = {}
    for path in paths:
        fingerprint, why = sources.check(path)
        if fingerprint is None:
            left_out[path] = why
        else:
            fingerprints[path] = fingerprint
    groups, skipped = parse_raw_paths(
        [p for p in paths if p in fingerprints],
        stage.source,
        stage.group,
        group_options or source_options,
        stage.options,
        context.scheduled,
    )
    left_out.update(skipped)
    clubbed = club_raw_files(groups, stage.source)
    kind = product_kind(stage)
    calls = [StepCall(t.module, t.name, dict(t.task_params)) for t in stage.tasks]
    steps = [{"name": c.name, "module": c.module, "params": c.params} for c in calls]

    if _has_group_step(stage):
        members = {name: list(files) for name, files in clubbed.items()}
    else:
        ordered = [path for files in clubbed.values() for path in files]
        members = {product_key(path): [path] for path in dict.fromkeys(ordered)}

    planned = []
    for key, product_sources in members.items():
        product_url = storage.join(stage.destination.path, f"{key}_{kind}.zarr")
        inputs = {s: fingerprints[s] for s in product_sources}
        job = ChainJob(
            sources=product_sources,
            steps=calls,
            product_url=product_url,
            source_options=source_options,
            destination_options=dest_options,
            attrs=_attrs(product_sources, steps, context.run_id),
            checks=list(stage.data_quality.checks) if stage.data_quality else [],
        )
        planned.append(
            PlannedJob(job, inputs, steps, _decide(stage, context, job, inputs, steps))
        )
    return planned, left_out


def _decide(
    stage: Stage,
    context: RunContext,
    job: ChainJob,
    inputs: dict[str, dict[str, Any]],
    steps: list[dict[str, Any]],
) -> ledger.Decision:
    if context.force:
        return ledger.Decision(True, "forced")
    if not stage.options.use_offline:
        return ledger.Decision(True, "forced (use_offline: false)")
    decision = ledger.decide(job.product_url, inputs, steps, job.destination_options)
    upstream = [s for s, f in inputs.items() if "upstream" in f]
    if upstream and decision.why != "new":
        names = ", ".join(posixpath.basename(s.rstrip("/")) for s in upstream)
        return ledger.Decision(True, f"upstream {names} will be remade")
    return decision


def plan_service(service: Service, context: RunContext) -> list[StagePlan]:
    """Plan every stage of a service in order, as one run would make them.

    A product of an earlier stage that will be (re)made makes every later product
    built from it run too, even before it exists.
    """
    pending: dict[str, str] = {}
    plans = []
    for stage in service.stages:
        planned, left_out = plan_stage(stage, context, pending)
        plan = StagePlan(stage, planned, left_out)
        pending.update({p.job.product_url: stage.name for p in plan.to_run})
        plans.append(plan)
    return plans
