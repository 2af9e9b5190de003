"""Run one file's (or one group's) chain of steps and commit its product.

This is the function shipped to Dask workers. It receives plain data (paths,
step names, parameters) and returns plain data, so nothing large travels between
the flow and the workers: the product goes straight from the worker to storage.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import posixpath
import tempfile
import time
from dataclasses import dataclass, field
from typing import Any

from echodataflow import ledger, storage
from echodataflow.exceptions import StepError
from echodataflow.logs import LogLine, capture_lines
from echodataflow.registry import step_spec
from echodataflow.tasklib._spec import ChainState
from echodataflow.tasklib.testing import EMPTY

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class StepCall:
    """A step to run, by registered module and name, with its parameters."""

    module: str
    name: str
    params: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ChainJob:
    """Everything a worker needs to make one product.

    ``source_options`` and ``destination_options`` may hold credentials: a job is
    never logged or stored.
    """

    sources: list[str]
    steps: list[StepCall]
    product_url: str
    source_options: dict[str, Any] = field(default_factory=dict, repr=False)
    destination_options: dict[str, Any] = field(default_factory=dict, repr=False)
    attrs: dict[str, Any] = field(default_factory=dict)
    checks: list[Any] = field(default_factory=list)

    def dask_key(self, attempt: int = 0) -> str:
        """Return the Dask key of one attempt at this job.

        Equal jobs get equal keys, so a job submitted twice (ahead of its stage
        flow, then by it) is one Dask task. The key covers what the job makes and
        how (sources, steps, product, attributes, checks), not its storage options,
        which may hold credentials and are the same for every product of a stage.
        """
        content = json.dumps(
            [self.sources, self.steps, self.product_url, self.attrs, self.checks],
            sort_keys=True,
            default=repr,
        )
        digest = hashlib.sha256(content.encode()).hexdigest()[:24]
        name = posixpath.basename(self.product_url.rstrip("/"))
        return f"edf-{name}-{digest}-{attempt}"


@dataclass(frozen=True)
class ChainOutcome:
    """What became of one job."""

    sources: list[str]
    product_url: str
    product: str | None
    seconds: float
    logs: list[LogLine] = field(default_factory=list)
    quality: dict[str, Any] | None = None


def _initial_state(job: ChainJob, first_needs: str) -> ChainState:
    state = ChainState(sources=list(job.sources), storage_options=job.source_options)
    if first_needs == "dataset" and len(job.sources) == 1:
        # The stage reads an earlier stage's product (e.g. Sv) instead of raw files.
        import xarray as xr  # here: planning imports this module and needs no xarray

        # One file's product fits in memory; loading it also keeps echopype's
        # gridding off the lazy groupby path, which mis-sized ping_time on stores
        # read back from zarr (ValueError: conflicting sizes for dimension).
        state.dataset = xr.open_zarr(
            job.sources[0],
            storage_options=storage.for_url(job.sources[0], job.source_options) or None,
            consolidated=False,
        ).load()
        state.product = "dataset"
    return state


def _run_step(call: StepCall, state: ChainState, where: str) -> ChainState:
    spec = step_spec(call.module, call.name)
    try:
        return spec.func(state, dict(call.params))
    except Exception as err:  # noqa: BLE001 - any library error fails this file only
        raise StepError(
            f"{call.name} failed on {where}: {type(err).__name__}: {err}"
        ) from err


def _run_steps(job: ChainJob) -> ChainState:
    specs = [step_spec(call.module, call.name) for call in job.steps]
    split = next((i for i, s in enumerate(specs) if s.scope == "group"), None)
    if split is None:
        state = _initial_state(job, specs[0].needs)
        for call in job.steps:
            state = _run_step(call, state, job.sources[0])
        return state

    # Steps before the group step run file by file; their EchoData (or datasets,
    # when the stage reads an earlier stage's products) are combined.
    echodata_list = []
    dataset_list = []
    for source in job.sources:
        state = _initial_state(
            ChainJob([source], job.steps[:split], job.product_url, job.source_options),
            specs[0].needs,
        )
        for call in job.steps[:split]:
            state = _run_step(call, state, source)
        if state.echodata is not None:
            echodata_list.append(state.echodata)
        if state.dataset is not None:
            dataset_list.append(state.dataset)
    state = ChainState(
        sources=list(job.sources),
        storage_options=job.source_options,
        echodata_list=echodata_list,
        dataset_list=dataset_list,
    )
    where = f"group of {len(job.sources)} files"
    for call in job.steps[split:]:
        state = _run_step(call, state, where)
    return state


def _write(state: ChainState, job: ChainJob) -> None:
    attrs = {key: _attr(value) for key, value in job.attrs.items()}
    options = job.destination_options

    def write(target: str) -> None:
        if state.dataset is not None:
            dataset = state.dataset.assign_attrs(attrs)
            # Zarr v3 has no consolidated metadata in its specification; readers
            # that want it fall back to listing, so none is written.
            dataset.to_zarr(
                target,
                mode="w",
                consolidated=False,
                storage_options=storage.for_url(target, options) or None,
            )
        elif state.echodata is not None:
            _write_echodata(state.echodata, target, options)
        elif state.product == EMPTY:
            storage.write_empty_store(target, options)
        else:
            raise StepError(f"the steps of {job.product_url} produced nothing to write")

    # A done record must never describe a store that is being replaced: on object
    # storage the old store is deleted and the new one written in place.
    ledger.mark_writing(job.product_url, options)
    storage.commit_store(job.product_url, write, options)


def _write_echodata(echodata: Any, target: str, options: dict[str, Any]) -> None:
    if storage.is_local(target):
        echodata.to_zarr(target, overwrite=True)
        return
    # echopype 0.12's EchoData.to_zarr drops the protocol of an s3:// URL and
    # silently writes a local folder instead. Writing with echopype's own writer to
    # a local temporary folder and uploading it keeps the store identical to a
    # disk run's (same groups, encodings, chunks), and the upload goes through
    # storage with its retry policy.
    with tempfile.TemporaryDirectory(prefix="edf-echodata-") as folder:
        local = os.path.join(folder, posixpath.basename(target.rstrip("/")))
        echodata.to_zarr(local, overwrite=True)
        storage.put_tree(local, target, options)


def _attr(value: Any) -> Any:
    if isinstance(value, str | int | float | bool):
        return value
    return json.dumps(value, sort_keys=True, default=str)


def run_chain(job: ChainJob) -> ChainOutcome:
    """Run a job's steps and commit its product.

    Raises
    ------
    StepError
        When a step fails; the message names the step and the raw file.
    """
    started = time.perf_counter()
    with capture_lines() as lines:
        try:
            state = _run_steps(job)
            _write(state, job)
            quality = _quality(state, job)
        except Exception as err:
            # The lines travel with the error (pickled with its __dict__), so the
            # flow run shows what the worker logged before it failed.
            err.edf_logs = list(lines)  # type: ignore[attr-defined]
            raise
        seconds = time.perf_counter() - started
        log.info("wrote %s in %.1f s", job.product_url, seconds)
    return ChainOutcome(
        list(job.sources),
        job.product_url,
        state.product,
        seconds,
        logs=list(lines),
        quality=quality,
    )


def _quality(state: ChainState, job: ChainJob) -> dict[str, Any] | None:
    """Run the stage's data-quality checks on the dataset just committed."""
    if not job.checks:
        return None
    from echodataflow.quality import run_checks

    return run_checks(state.dataset, job.checks)
