"""Many products per Prefect task: every file still gets its own result and record.

A real ``edf_service`` run (embedded Prefect, a local Dask cluster) of the no-op
step over empty files named like raw files, with the batch size lowered so that ten
files make three batches. One file is made to fail. A third run asks for one
Prefect task run per file instead.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from echodataflow.deployment import batch
from echodataflow.deployment.report import ServiceReport
from echodataflow.models.deployment import Service
from echodataflow.models.load import parse_deployment
from echodataflow.models.resolve import resolve_deployment

pytestmark = pytest.mark.slow

FILES = [f"Bench-D20170615-T00{minute:02d}00.raw" for minute in range(10)]
FAILING = "Bench-D20170615-T000500.raw"


@dataclass(frozen=True)
class Runs:
    first: ServiceReport
    second: ServiceReport
    per_file: ServiceReport
    out: Path
    log: str
    task_runs: list[str]


def _service(raw: Path, out: Path, task_per_file: bool = False) -> Service:
    stage: dict[str, Any] = {
        "name": "Sv_flow",
        "tasks": [
            {
                "name": "edf_noop",
                "module": "echodataflow.tasklib.testing",
                "task_params": {"fail_matching": FAILING},
            }
        ],
        "prefect_config": {
            "retries": 1,
            "retry_delay_seconds": 0.1,
            "task_per_file": task_per_file,
        },
        "source": {"path": str(raw / "*.raw")},
        "destination": {"path": str(out)},
    }
    service = {
        "name": "batches",
        "infrastructure": {"cluster": {"type": "local", "workers": 1}},
        "stages": [stage],
    }
    text = yaml.safe_dump({"services": [service]})
    return resolve_deployment(parse_deployment(text, "test.yaml"), "/").services[0]


def _run(service: Service) -> ServiceReport:
    from echodataflow.deployment.service import edf_service

    state = edf_service(service, None, None, False, return_state=True)
    report = state.result(raise_on_failure=False)
    assert isinstance(report, ServiceReport), report
    return report


def _task_runs() -> list[str]:
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        runs = client.read_task_runs(limit=200)
    return [run.name for run in runs if run.name.startswith("Bench-")]


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Runs:
    root = tmp_path_factory.mktemp("batches")
    raw = root / "raw"
    raw.mkdir()
    for name in FILES:
        (raw / name).touch()
    service = _service(raw, root / "out")
    handler = _ListHandler()
    logging.getLogger("echodataflow").addHandler(handler)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(batch, "BATCH_SIZE", 4)
        try:
            first = _run(service)
            second = _run(service)
        finally:
            logging.getLogger("echodataflow").removeHandler(handler)
    per_file = _run(_service(raw, root / "per-file", task_per_file=True))
    return Runs(
        first, second, per_file, root / "out", "\n".join(handler.lines), _task_runs()
    )


class _ListHandler(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


def _statuses(report: ServiceReport) -> dict[str, str]:
    return {r.product: r.status for s in report.stages for r in s.results}


def test_every_file_of_a_batched_stage_gets_its_own_result(runs: Runs):
    statuses = _statuses(runs.first)
    assert len(statuses) == len(FILES)
    failing = FAILING.replace(".raw", "_empty.zarr")
    assert statuses.pop(failing) == "failed"
    assert set(statuses.values()) == {"written"}


def test_the_failing_file_is_named_with_its_reason_and_retried_once(runs: Runs):
    (failed,) = runs.first.stages[0].failed
    assert FAILING in failed.sources[0]
    assert "edf_noop failed" in failed.reason
    assert "asked to fail" in failed.reason
    retried = [line for line in runs.log.splitlines() if line.startswith("retrying")]
    # Once in each of the two batched runs.
    assert len(retried) == 2, runs.log
    assert all("Bench-D20170615-T000500_empty.zarr (1 of 1)" in r for r in retried)


def test_each_file_of_a_batch_is_recorded_in_the_ledger(runs: Runs):
    ledger = runs.out / ".edf-ledger"
    states = {
        path.name.removesuffix(".json"): json.loads(path.read_text("utf-8"))["state"]
        for path in ledger.glob("*.json")
    }
    assert len(states) == len(FILES)
    assert sorted(states.values()).count("done") == len(FILES) - 1
    assert (runs.out / "Bench-D20170615-T000000_empty.zarr" / ".edf-empty").exists()


def test_prefect_records_one_task_run_per_batch_not_per_file(runs: Runs):
    # 10 files in batches of 4; the second run remakes only the failed file.
    batches = [name for name in runs.task_runs if name.endswith(")")]
    assert sorted(batches) == sorted(
        [
            "Bench-D20170615-T000000_empty.zarr .. "
            "Bench-D20170615-T000300_empty.zarr (4 products)",
            "Bench-D20170615-T000400_empty.zarr .. "
            "Bench-D20170615-T000700_empty.zarr (4 products)",
            "Bench-D20170615-T000800_empty.zarr .. "
            "Bench-D20170615-T000900_empty.zarr (2 products)",
            "Bench-D20170615-T000500_empty.zarr (1 product)",
        ]
    )


def test_task_per_file_records_one_task_run_per_product(runs: Runs):
    per_file = sorted(name for name in runs.task_runs if not name.endswith(")"))
    # The failing file is retried by Prefect: one task run, two attempts.
    assert per_file == sorted(name.replace(".raw", "_empty.zarr") for name in FILES)
    statuses = _statuses(runs.per_file)
    assert statuses.pop(FAILING.replace(".raw", "_empty.zarr")) == "failed"
    assert set(statuses.values()) == {"written"}


def test_a_rerun_skips_the_batched_products_and_retries_the_failed_one(runs: Runs):
    statuses = _statuses(runs.second)
    failing = FAILING.replace(".raw", "_empty.zarr")
    assert statuses.pop(failing) == "failed"
    assert set(statuses.values()) == {"skipped"}
