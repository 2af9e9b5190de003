"""A service whose Dask workers are batch jobs on the real single-node SLURM.

The ten Summer2017 EK60 files go through SLURM once and are compared with a local
run; PBS (through Debian's qsub wrappers) and the cancelled-worker case use fewer
files to keep the suite short.
"""

from __future__ import annotations

import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import xarray as xr
from slurm_queue import wait_no_jobs, worker_jobs

from echodataflow.deployment.report import ServiceReport
from echodataflow.deployment.service import edf_service
from echodataflow.models.deployment import Service

pytestmark = [pytest.mark.slurm, pytest.mark.slow]

BATCH = {"cores": 1, "memory": "2500MB", "walltime": "00:20:00", "interface": "lo"}
SUMMER = "raw/ek60/Summer2017-*.raw"


def _service(source: str, destination: Path, cluster: dict[str, Any]) -> Service:
    return Service.model_validate(
        {
            "name": "hpc-sv",
            "infrastructure": {"cluster": cluster},
            "stages": [
                {
                    "tasks": [
                        {
                            "name": "edf_open_raw",
                            "task_params": {"sonar_model": "EK60"},
                        },
                        {"name": "edf_compute_Sv"},
                    ],
                    "source": {"path": source},
                    "destination": {"path": str(destination)},
                }
            ],
        }
    )


def _run(service: Service) -> ServiceReport:
    state = edf_service(service, None, None, False, return_state=True)
    report = state.result(raise_on_failure=False)
    assert isinstance(report, ServiceReport), report
    return report


class QueueWatch:
    """Records every worker job seen in `squeue` while a run goes on."""

    def __init__(self) -> None:
        self.seen: set[str] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)

    def _watch(self) -> None:
        while not self._stop.is_set():
            self.seen.update(worker_jobs())
            self._stop.wait(0.5)

    def __enter__(self) -> QueueWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=30)


def _products(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.glob("*.zarr"))


def _assert_same_products(got: Path, expected: Path, names: list[str]) -> None:
    for name in names:
        with (
            xr.open_zarr(got / name) as ours,
            xr.open_zarr(expected / name) as theirs,
        ):
            # Values and coordinates; attributes carry each run's id.
            xr.testing.assert_equal(ours, theirs)


@pytest.fixture(scope="module")
def local_products(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The ten files processed on a local cluster: the reference."""
    out = tmp_path_factory.mktemp("local") / "Sv"
    report = _run(
        _service(str(shared_data / SUMMER), out, {"type": "local", "workers": 2})
    )
    assert report.ok, report.summary()
    assert len(_products(out)) == 10
    return out


def test_a_slurm_service_runs_its_workers_as_jobs_and_matches_local(
    shared_data, local_products, tmp_path, no_jobs_left, scratch_cwd
):
    out = tmp_path / "Sv"
    service = _service(
        str(shared_data / SUMMER),
        out,
        {"type": "slurm", "workers": 2, "jobqueue": BATCH},
    )
    with QueueWatch() as queue:
        report = _run(service)
    assert report.ok, report.summary()
    assert len(queue.seen) >= 2, f"worker jobs seen in squeue: {queue.seen}"
    names = _products(out)
    assert names == _products(local_products)
    _assert_same_products(out, local_products, names)
    assert wait_no_jobs() == []


def test_a_pbs_service_submits_through_qsub_and_matches_local(
    shared_data, local_products, tmp_path, no_jobs_left, scratch_cwd
):
    out = tmp_path / "Sv"
    source = str(shared_data / "raw/ek60/Summer2017-D20170615-T2129*.raw")
    service = _service(source, out, {"type": "pbs", "workers": 2, "jobqueue": BATCH})
    with QueueWatch() as queue:
        report = _run(service)
    assert report.ok, report.summary()
    assert len(queue.seen) >= 2, f"worker jobs seen in the queue: {queue.seen}"
    names = _products(out)
    assert names == ["Summer2017-D20170615-T212933_Sv.zarr"]
    _assert_same_products(out, local_products, names)
    # The qsub wrapper writes each job's output beside the submitting process.
    assert list(scratch_cwd.glob("*.o*")), "no PBS job output in the working folder"
    assert wait_no_jobs() == []


def test_a_worker_job_cancelled_mid_run_loses_no_file(
    shared_data, tmp_path, no_jobs_left, scratch_cwd
):
    out = tmp_path / "Sv"
    source = str(shared_data / "raw/ek60/Summer2017-D20170615-T21*.raw")
    expected = len(list((shared_data / "raw/ek60").glob("Summer2017-D20170615-T21*")))
    service = _service(source, out, {"type": "slurm", "workers": 2, "jobqueue": BATCH})
    reports: list[ServiceReport] = []
    runner = threading.Thread(target=lambda: reports.append(_run(service)))
    runner.start()
    cancelled = ""
    deadline = time.monotonic() + 300
    while runner.is_alive() and time.monotonic() < deadline and not cancelled:
        jobs = worker_jobs()
        if _products(out) and len(jobs) >= 2:
            cancelled = jobs[0]
            subprocess.run(["scancel", cancelled], check=True, timeout=30)
        time.sleep(0.5)
    runner.join(timeout=600)
    assert cancelled, "no worker job was cancelled while products were being made"
    assert reports, "the run did not finish"
    report = reports[0]
    assert report.ok, report.summary()
    assert len(_products(out)) == expected
    statuses = {r.status for stage in report.stages for r in stage.results}
    assert statuses == {"written"}
    assert wait_no_jobs() == []
