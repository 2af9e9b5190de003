"""The echopype step library: open_raw, combine, Sv, depth, location, MVBS, NASC, TS.

Each step is a plain function ``(state, params) -> state`` that calls one echopype
function with the step's ``task_params``; the pipeline fills in the data arguments
(raw file, EchoData, Sv dataset). ``STEPS`` registers them, together with the echopype
function whose signature validates ``task_params`` before any run.
"""

from __future__ import annotations

import contextlib
import io
import logging
from typing import Any, Literal

from echodataflow import storage
from echodataflow.tasklib._signatures import mapping_keys
from echodataflow.tasklib._spec import ChainState, StepSpec
from echodataflow.tasklib.simrad import SIMRAD_MODELS, check_complete

log = logging.getLogger(__name__)

# echopype is imported by each step, where it runs: validating and planning need
# only the names below, cached per echopype version (tasklib/_signatures.py),
# and importing echopype costs seconds.
SONAR_MODELS = mapping_keys("echopype.core.SONAR_MODELS")

EK80_MODELS = frozenset({"EK80", "ES80", "EA640"})


def _require_echodata(state: ChainState, step: str) -> Any:
    if state.echodata is None:
        raise ValueError(f"{step} needs EchoData: put edf_open_raw before it")
    return state.echodata


def _require_dataset(state: ChainState, step: str) -> Any:
    if state.dataset is None:
        raise ValueError(f"{step} needs an Sv dataset: put edf_compute_Sv before it")
    return state.dataset


def edf_open_raw(state: ChainState, params: dict[str, Any]) -> ChainState:
    """Open one raw file (EK60, EK80, AZFP with its XML, AD2CP) as EchoData."""
    (source,) = state.sources
    log.debug("open_raw %s %s", source, params)
    import echopype as ep

    options = storage.for_url(source, state.storage_options) or None
    if params.get("sonar_model") in SIMRAD_MODELS:
        # echopype silently keeps the pings before a cut; refuse the file instead.
        check_complete(source, options or {})
    # open_raw prints its progress; keep it out of the workers' output.
    with contextlib.redirect_stdout(io.StringIO()) as printed:
        state.echodata = ep.open_raw(raw_file=source, storage_options=options, **params)
    log.debug("open_raw said: %s", printed.getvalue().strip())
    state.product = "echodata"
    return state


def edf_open_converted(state: ChainState, params: dict[str, Any]) -> ChainState:
    """Open an EchoData zarr store written by an earlier stage."""
    import echopype as ep

    (source,) = state.sources
    state.echodata = ep.open_converted(
        source,
        storage_options=storage.for_url(source, state.storage_options) or None,
        **params,
    )
    state.product = "echodata"
    return state


def edf_combine_echodata(state: ChainState, params: dict[str, Any]) -> ChainState:
    """Combine the group's EchoData objects, in time order, into one."""
    if not state.echodata_list:
        raise ValueError("edf_combine_echodata needs EchoData: put edf_open_raw first")
    import echopype as ep

    state.echodata = ep.combine_echodata(state.echodata_list, **params)
    state.echodata_list = []
    state.product = "echodata"
    return state


def edf_compute_Sv(state: ChainState, params: dict[str, Any]) -> ChainState:
    """Calibrate backscatter into volume backscattering strength (Sv)."""
    import echopype as ep

    echodata = _require_echodata(state, "edf_compute_Sv")
    state.dataset = ep.calibrate.compute_Sv(echodata, **params).compute()
    state.product = "Sv"
    return state


def edf_compute_TS(state: ChainState, params: dict[str, Any]) -> ChainState:
    """Calibrate backscatter into target strength (TS)."""
    import echopype as ep

    echodata = _require_echodata(state, "edf_compute_TS")
    state.dataset = ep.calibrate.compute_TS(echodata, **params).compute()
    state.product = "TS"
    return state


def edf_add_depth(state: ChainState, params: dict[str, Any]) -> ChainState:
    """Add a depth coordinate to the Sv dataset."""
    import echopype as ep

    dataset = _require_dataset(state, "edf_add_depth")
    state.dataset = ep.consolidate.add_depth(dataset, echodata=state.echodata, **params)
    return state


def edf_add_location(state: ChainState, params: dict[str, Any]) -> ChainState:
    """Add latitude and longitude, interpolated to ping times, to the Sv dataset."""
    import echopype as ep

    dataset = _require_dataset(state, "edf_add_location")
    echodata = _require_echodata(state, "edf_add_location")
    state.dataset = ep.consolidate.add_location(dataset, echodata=echodata, **params)
    return state


def edf_compute_MVBS(state: ChainState, params: dict[str, Any]) -> ChainState:
    """Grid Sv into mean volume backscattering strength (MVBS) bins."""
    import echopype as ep

    dataset = _require_dataset(state, "edf_compute_MVBS")
    positions = [name for name in _POSITIONS if name in dataset]
    # echopype 0.12 averages positions with flox without reindexing, so a time bin
    # without pings (a gap in a file or between a group's files) gives positions
    # one bin short of Sv and compute_MVBS fails with "conflicting sizes for
    # dimension 'ping_time'". Grid Sv without them and average them here.
    mvbs = ep.commongrid.compute_MVBS(dataset.drop_vars(positions), **params)
    if positions:
        mvbs = _with_binned_positions(
            mvbs,
            dataset,
            positions,
            params.get("ping_time_bin", "20s"),
            params.get("closed", "left"),
        )
    state.dataset = mvbs.compute()
    state.product = "MVBS"
    return state


_POSITIONS = ("latitude", "longitude")


def _with_binned_positions(
    mvbs: Any, dataset: Any, positions: list[str], ping_time_bin: str, closed: str
) -> Any:
    """Attach the mean position of each MVBS ping-time bin (NaN where empty)."""
    import numpy as np
    import pandas as pd  # type: ignore[import-untyped]

    starts = mvbs["ping_time"].values
    width = pd.Timedelta(ping_time_bin).to_timedelta64()
    times = dataset["ping_time"].values
    side: Literal["left", "right"] = "right" if closed == "left" else "left"
    index = np.searchsorted(starts, times, side=side) - 1
    inside = index >= 0
    inside[inside] = (
        times[inside] < starts[index[inside]] + width
        if closed == "left"
        else times[inside] <= starts[index[inside]] + width
    )
    for name in positions:
        values = np.asarray(dataset[name].values, dtype=float)
        means = pd.Series(values[inside]).groupby(index[inside]).mean()
        binned = np.full(len(starts), np.nan)
        binned[means.index.to_numpy()] = means.to_numpy()
        mvbs[name] = (("ping_time",), binned, dataset[name].attrs)
    return mvbs


def edf_compute_NASC(state: ChainState, params: dict[str, Any]) -> ChainState:
    """Integrate Sv into nautical area scattering coefficients (NASC)."""
    import echopype as ep

    dataset = _require_dataset(state, "edf_compute_NASC")
    state.dataset = ep.commongrid.compute_NASC(dataset, **params).compute()
    state.product = "NASC"
    return state


def edf_combine_Sv(state: ChainState, params: dict[str, Any]) -> ChainState:
    """Concatenate the group's Sv datasets (earlier stage's products) in time order.

    Lets a later stage grid a whole group or time window at once, e.g. MVBS per
    transect from per-file Sv stores. Variables without ``ping_time`` are taken
    from the first dataset; ranges of different length are padded with NaN.
    """
    if not state.dataset_list:
        raise ValueError("edf_combine_Sv needs Sv datasets: read an earlier stage's Sv")
    import xarray as xr

    combined = xr.concat(
        state.dataset_list,
        dim="ping_time",
        data_vars="minimal",
        coords="minimal",
        compat="override",
        join="outer",
        combine_attrs="drop_conflicts",
    )
    # Loaded into memory: gridding a lazy concatenation of stores whose chunks
    # differ in length failed now and then inside xarray's groupby (sizes of
    # ping_time in conflict). A group's Sv must fit in a worker's memory.
    state.dataset = combined.sortby("ping_time").compute()
    state.dataset_list = []
    state.product = "Sv"
    return state


def _check_open_raw(params: dict[str, Any]) -> list[str]:
    problems = []
    model = params.get("sonar_model")
    if model == "AZFP" and not params.get("xml_path"):
        problems.append("sonar_model AZFP needs xml_path (the instrument's XML file)")
    if model in SONAR_MODELS and model != "AZFP" and params.get("xml_path"):
        problems.append(f"xml_path is only used with AZFP, not {model}")
    return problems


_CALIBRATION_CHOICES: dict[str, frozenset[Any]] = {
    "waveform_mode": frozenset({"CW", "BB", "FM"}),
    "encode_mode": frozenset({"complex", "power"}),
}

STEPS: dict[str, StepSpec] = {
    spec.name: spec
    for spec in [
        StepSpec(
            "edf_open_raw",
            edf_open_raw,
            "echopype.open_raw",
            provided=frozenset({"raw_file", "storage_options"}),
            required=frozenset({"sonar_model"}),
            choices={"sonar_model": SONAR_MODELS},
            product="echodata",
            needs="raw",
            check=_check_open_raw,
        ),
        StepSpec(
            "edf_open_converted",
            edf_open_converted,
            None,
            product="echodata",
            needs="any",
        ),
        StepSpec(
            "edf_combine_echodata",
            edf_combine_echodata,
            "echopype.combine_echodata",
            provided=frozenset({"echodata_list"}),
            scope="group",
            product="echodata",
            needs="echodata",
        ),
        StepSpec(
            "edf_combine_Sv",
            edf_combine_Sv,
            None,
            scope="group",
            product="Sv",
            needs="dataset",
        ),
        StepSpec(
            "edf_compute_Sv",
            edf_compute_Sv,
            "echopype.calibrate.api._compute_cal",
            provided=frozenset({"echodata", "cal_type"}),
            choices=_CALIBRATION_CHOICES,
            product="Sv",
            needs="echodata",
        ),
        StepSpec(
            "edf_compute_TS",
            edf_compute_TS,
            "echopype.calibrate.api._compute_cal",
            provided=frozenset({"echodata", "cal_type"}),
            choices=_CALIBRATION_CHOICES,
            product="TS",
            needs="echodata",
        ),
        StepSpec(
            "edf_add_depth",
            edf_add_depth,
            "echopype.consolidate.add_depth",
            provided=frozenset({"ds", "echodata"}),
            needs="dataset",
        ),
        StepSpec(
            "edf_add_location",
            edf_add_location,
            "echopype.consolidate.add_location",
            provided=frozenset({"ds", "echodata"}),
            needs="dataset",
        ),
        StepSpec(
            "edf_compute_MVBS",
            edf_compute_MVBS,
            "echopype.commongrid.compute_MVBS",
            provided=frozenset({"ds_Sv"}),
            choices={"range_var": frozenset({"echo_range", "depth"})},
            product="MVBS",
            needs="dataset",
        ),
        StepSpec(
            "edf_compute_NASC",
            edf_compute_NASC,
            "echopype.commongrid.compute_NASC",
            provided=frozenset({"ds_Sv"}),
            product="NASC",
            needs="dataset",
        ),
    ]
}

# The design document's short name for the Sv step.
STEPS["edf_Sv"] = STEPS["edf_compute_Sv"]
