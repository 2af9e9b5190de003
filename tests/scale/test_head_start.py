"""Products handed to Dask before Prefect is up are taken by the flow, not redone.

``echodataflow run`` submits its first stage's products as soon as its cluster is
up (``deployment/head_start.py``). The no-op step writes a trace line per call, so
the tests count how often each file was processed.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml
from distributed import Client, LocalCluster

from echodataflow import ledger, storage
from echodataflow.clusters import _CLIENTS
from echodataflow.deployment import batch, head_start
from echodataflow.deployment.plan import plan_stage
from echodataflow.deployment.report import RunContext
from echodataflow.models.deployment import Service
from echodataflow.models.load import parse_deployment
from echodataflow.models.resolve import resolve_deployment

pytestmark = pytest.mark.slow

FILES = [f"Bench-D20170615-T00{minute:02d}00.raw" for minute in range(12)]


def _service_dict(raw: Path, out: Path, trace: Path, seconds: float) -> dict[str, Any]:
    return {
        "name": "head-start",
        "infrastructure": {"cluster": {"type": "local", "workers": 1}},
        "stages": [
            {
                "name": "Sv_flow",
                "tasks": [
                    {
                        "name": "edf_noop",
                        "module": "echodataflow.tasklib.testing",
                        "task_params": {"seconds": seconds, "trace": str(trace)},
                    }
                ],
                "source": {"path": str(raw / "*.raw")},
                "destination": {"path": str(out)},
            }
        ],
    }


def _raw(root: Path) -> Path:
    raw = root / "raw"
    raw.mkdir()
    for name in FILES:
        (raw / name).write_bytes(b"")
    return raw


def _calls(trace: Path) -> Counter[str]:
    return Counter(Path(line).name for line in trace.read_text().splitlines())


def test_a_run_takes_the_products_it_submitted_early(tmp_path: Path):
    raw, out, trace = _raw(tmp_path), tmp_path / "out", tmp_path / "trace.txt"
    deployment = tmp_path / "deployment.yaml"
    services = [_service_dict(raw, out, trace, seconds=0.4)]
    deployment.write_text(yaml.safe_dump({"services": services}))
    env = {**os.environ, "PREFECT_HOME": str(tmp_path / "prefect-home")}

    done = subprocess.run(
        [sys.executable, "-m", "echodataflow.cli", "run", str(deployment), "-v"],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
        check=False,
    )

    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-3000:]
    assert "12 products went to the workers before the stage flow began" in output
    # Each product is reported with the reason it was planned with, although
    # the workers had written it before the flow looked.
    assert "store without a record" not in output
    assert output.count("│ new ") == len(FILES)
    # Every file was processed once: the flow took the early tasks over.
    assert _calls(trace) == Counter(FILES)
    records = [
        json.loads(p.read_text()) for p in (out / ledger.LEDGER_FOLDER).glob("*.json")
    ]
    assert [r["state"] for r in records] == ["done"] * len(FILES)
    # One run id for the early products and the flow's ledger records.
    assert len({r["run_id"] for r in records}) == 1


@pytest.fixture
def client() -> Iterator[Client]:
    with (
        LocalCluster(n_workers=1, threads_per_worker=1, dashboard_address=None) as lc,
        Client(lc, set_as_default=False) as dask_client,
    ):
        address = str(dask_client.scheduler_info()["address"])
        _CLIENTS[address] = dask_client
        yield dask_client
        _CLIENTS.pop(address, None)
        head_start.release()


def _service(raw: Path, out: Path, trace: Path) -> Service:
    text = yaml.safe_dump({"services": [_service_dict(raw, out, trace, seconds=0.5)]})
    return resolve_deployment(parse_deployment(text, "test.yaml"), "/").services[0]


def test_the_flow_cancels_what_it_did_not_plan_and_reuses_the_rest(
    tmp_path: Path, client: Client
):
    raw, out, trace = _raw(tmp_path), tmp_path / "out", tmp_path / "trace.txt"
    service = _service(raw, out, trace)
    context = RunContext(
        run_id="early", service=service.name, scheduled=datetime.now(UTC)
    )
    head_start.begin(service, context, lambda: client).join(timeout=60)
    planned, _ = plan_stage(service.stages[0], context)
    jobs = [p.job for p in planned]
    assert len(client.futures) == len(FILES)

    # The flow plans only the first two files (the others changed, say).
    kept = head_start.claim(planned[:2])
    assert [p.job for p in kept] == jobs[:2]
    address = str(client.scheduler_info()["address"])
    sink = _Sink()
    failed = batch.process_batch.fn(jobs[:2], 0, address, batch.FilePolicy(), sink)
    assert failed == 0
    assert sorted(item.position for item in sink.items) == [0, 1]

    # The two kept files ran once each; the queued others never ran.
    calls = _calls(trace)
    assert calls[FILES[0]] == 1
    assert calls[FILES[1]] == 1
    time.sleep(1.0)
    assert sum(_calls(trace).values()) <= 3  # one may have been running already


class _Sink:
    """The queue ``process_batch`` reports each product on."""

    def __init__(self) -> None:
        self.items: list[Any] = []

    def put(self, item: Any) -> None:
        self.items.append(item)


def test_only_half_written_stores_older_than_the_run_are_removed(tmp_path: Path):
    old = tmp_path / f".a_Sv.zarr{storage.PARTIAL_MARK}1"
    new = tmp_path / f".b_Sv.zarr{storage.PARTIAL_MARK}2"
    old.mkdir()
    new.mkdir()
    started = time.time()
    os.utime(old, (started - 60, started - 60))

    removed = storage.remove_partials(str(tmp_path), {}, older_than=started - 1)

    assert removed == 1
    assert not old.exists()
    assert new.exists()
