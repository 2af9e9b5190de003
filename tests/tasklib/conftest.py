"""One real pipeline run, shared by the tests that compare its Sv with references.

A single ``edf_service`` run on the embedded Prefect, one stage per acquisition
mode (the modes need different open_raw/compute_Sv parameters), one local Dask
worker: the costly parts (Prefect's server, the cluster) start once.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest


@dataclass(frozen=True)
class Sample:
    """A sample file and the parameters plain echopype needs for its Sv."""

    raw: str
    open_raw: dict[str, Any]
    compute_Sv: dict[str, Any]


# Relative to ../shared/data; one stage per distinct parameter set.
SAMPLES = {
    "EK60": Sample(
        "raw/ek60/DY1801_EK60-D20180211-T164025.raw", {"sonar_model": "EK60"}, {}
    ),
    "EK60 Summer2017": Sample(
        "raw/ek60/Summer2017-D20170615-T214712.raw", {"sonar_model": "EK60"}, {}
    ),
    "EK80 CW power": Sample(
        "raw/ek80/5903465530494767203.raw",
        {"sonar_model": "EK80"},
        {"waveform_mode": "CW", "encode_mode": "power"},
    ),
    "EK80 CW complex": Sample(
        "raw/ek80/EK80_-D20221108-T151353.raw",
        {"sonar_model": "EK80"},
        {"waveform_mode": "CW", "encode_mode": "complex"},
    ),
    "EK80 FM complex": Sample(
        "raw/ek80/2917763601822576513.raw",
        {"sonar_model": "EK80"},
        {"waveform_mode": "BB", "encode_mode": "complex"},
    ),
    "AZFP": Sample(
        "raw/azfp/17031001.01A",
        {"sonar_model": "AZFP", "xml_path": "raw/azfp/17030815.XML"},
        {"env_params": {"salinity": 29.6, "pressure": 60.0}},
    ),
}


@dataclass(frozen=True)
class PipelineRun:
    """Where the run put each sample's Sv store, and its report."""

    data: Path
    samples: dict[str, Sample]
    stores: dict[str, Path]
    report: Any


def _deployment_yaml(data: Path, out: Path) -> str:
    import yaml

    stages: dict[str, dict[str, Any]] = {}
    for sample in SAMPLES.values():
        open_params = dict(sample.open_raw)
        if "xml_path" in open_params:
            open_params["xml_path"] = str(data / open_params["xml_path"])
        key = repr((open_params, sample.compute_Sv))
        stage = stages.setdefault(
            key,
            {
                "name": "Sv_flow",
                "tasks": [
                    {"name": "edf_open_raw", "task_params": open_params},
                    {"name": "edf_compute_Sv", "task_params": sample.compute_Sv},
                ],
                "source": {"path": []},
                "destination": {"path": str(out / f"stage{len(stages)}")},
            },
        )
        stage["source"]["path"].append(str(data / sample.raw))
    service = {
        "name": "sv-equals-echopype",
        "infrastructure": {"cluster": {"type": "local", "workers": 1}},
        "stages": list(stages.values()),
    }
    return yaml.safe_dump({"services": [service]}, sort_keys=False)


@pytest.fixture(scope="session")
def pipeline_run(
    shared_data: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[PipelineRun]:
    """Run every sample file through edf_service once; return where the Sv went."""
    from echodataflow.deployment.service import edf_service
    from echodataflow.models.load import load_deployment
    from echodataflow.models.resolve import resolve_deployment

    root = tmp_path_factory.mktemp("sv-run")
    file = root / "deployment.yaml"
    file.write_text(_deployment_yaml(shared_data, root / "out"), encoding="utf-8")
    deployment = resolve_deployment(load_deployment(file), str(root))
    service = deployment.services[0]

    state = edf_service(service, return_state=True)
    report = state.result(raise_on_failure=False)
    assert not isinstance(report, BaseException), report
    assert report.ok, report.summary()

    stores: dict[str, Path] = {}
    for name, sample in SAMPLES.items():
        stem = Path(sample.raw).stem
        found = list((root / "out").glob(f"stage*/{stem}_Sv.zarr"))
        assert len(found) == 1, f"{name}: expected one Sv store, found {found}"
        stores[name] = found[0]
    yield PipelineRun(shared_data, SAMPLES, stores, report)

    # Stop the embedded Prefect server now, while logging still has somewhere to
    # write, rather than in Prefect's exit hook after pytest closed its streams.
    from prefect.server.api.server import SubprocessASGIServer

    SubprocessASGIServer().stop()
