"""Bad raw files among good ones, through `echodataflow run` on an embedded Prefect.

A truncated EK60 file (the first half of a real one) and the EK80 file echopype
0.12 cannot calibrate sit among good files: the good ones are written, each bad one
is named in the summary with its reason, and nothing of the bad ones looks done.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.slow

GOOD = {
    "ek60": [
        "raw/ek60/Summer2017-D20170615-T214606.raw",
        "raw/ek60/Summer2017-D20170615-T214712.raw",
    ],
    "ek80": ["raw/ek80/5903465530494767203.raw"],
}
TRUNCATED = "Summer2017-D20170615-T215959.raw"
EDGE_CASE = "raw/ek80_edge_cases/4868864620330590206.raw"


@dataclass(frozen=True)
class Run:
    code: int
    output: str
    out: Path


def _deployment(data: Path, truncated: Path, out: Path) -> str:
    def stage(name: str, paths: list[str], sv_params: dict[str, str]) -> dict:
        return {
            "name": "Sv_flow",
            "tasks": [
                {"name": "edf_open_raw", "task_params": {"sonar_model": name.upper()}},
                {"name": "edf_compute_Sv", "task_params": sv_params},
            ],
            "source": {"path": paths},
            "destination": {"path": str(out / name)},
        }

    ek60 = [str(data / p) for p in GOOD["ek60"]] + [str(truncated)]
    ek80 = [str(data / p) for p in [*GOOD["ek80"], EDGE_CASE]]
    service = {
        "name": "bad-among-good",
        "infrastructure": {"cluster": {"type": "local", "workers": 1}},
        "stages": [
            stage("ek60", ek60, {}),
            stage("ek80", ek80, {"waveform_mode": "CW", "encode_mode": "power"}),
        ],
    }
    return yaml.safe_dump({"services": [service]}, sort_keys=False)


@pytest.fixture(scope="module")
def run(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Run:
    root = tmp_path_factory.mktemp("bad-files")
    whole = shared_data / "raw/ek60/Summer2017-D20170615-T213153.raw"
    truncated = root / "incoming" / TRUNCATED
    truncated.parent.mkdir()
    with whole.open("rb") as source, truncated.open("wb") as target:
        shutil.copyfileobj(source, target)
        target.truncate(whole.stat().st_size // 2)
    file = root / "deployment.yaml"
    file.write_text(_deployment(shared_data, truncated, root / "out"), "utf-8")
    done = subprocess.run(
        [sys.executable, "-m", "echodataflow.cli", "run", str(file)],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
        # Wide enough that rich does not wrap the summary lines.
        env={**os.environ, "COLUMNS": "500"},
    )
    return Run(done.returncode, done.stdout + done.stderr, root / "out")


def _product(raw: str) -> str:
    return f"{Path(raw).stem}_Sv.zarr"


def _record(folder: Path, product: str) -> dict | None:
    path = folder / ".edf-ledger" / f"{product}.json"
    return json.loads(path.read_text("utf-8")) if path.exists() else None


def test_a_run_with_bad_files_exits_1(run: Run):
    assert run.code == 1, run.output
    assert "crashed" not in run.output


def test_a_bad_raw_file_costs_no_traceback_in_the_output(run: Run):
    assert "Traceback" not in run.output


def test_every_good_file_is_written_and_recorded_done(run: Run):
    for stage, raws in GOOD.items():
        for raw in raws:
            store = run.out / stage / _product(raw)
            assert (store / "zarr.json").is_file(), run.output
            assert _record(run.out / stage, _product(raw))["state"] == "done"


@pytest.mark.parametrize(
    ("stage", "raw", "reason"),
    [
        ("ek60", TRUNCATED, r"is truncated: the datagram at byte \d+ needs"),
        ("ek80", EDGE_CASE, "DTypePromotionError"),
    ],
    ids=["truncated EK60", "EK80 edge case"],
)
def test_each_bad_file_is_named_with_its_reason_and_leaves_no_product(
    run: Run, stage: str, raw: str, reason: str
):
    product = _product(raw)
    failed = [line for line in run.output.splitlines() if f"FAILED {product}:" in line]
    assert len(failed) == 1, run.output
    assert Path(raw).name in failed[0]
    assert re.search(reason, failed[0]), failed[0]
    assert not (run.out / stage / product).exists()
    record = _record(run.out / stage, product)
    assert record is not None
    assert record["state"] == "failed"
    assert record["reason"]


def test_the_summary_counts_written_and_failed_per_stage(run: Run):
    assert "2 written, 0 up to date, 1 failed" in run.output
    assert "1 written, 0 up to date, 1 failed" in run.output


def test_no_partial_store_is_left_behind(run: Run):
    leftovers = [p for p in run.out.rglob("*") if ".partial-" in p.name]
    assert leftovers == []
    names = {p.name for p in run.out.glob("*/*.zarr")}
    assert names == {_product(r) for raws in GOOD.values() for r in raws}
