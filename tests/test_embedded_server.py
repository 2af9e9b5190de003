"""`echodataflow run` brings its own Prefect server up first and takes it down after."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import psutil
import pytest
import yaml

from echodataflow import ledger

pytestmark = pytest.mark.slow

SERVER_APP = "prefect.server.api.server:create_app"


def _servers() -> set[int]:
    """Process ids of Prefect server processes running now."""
    found = set()
    for process in psutil.process_iter(["pid", "cmdline"]):
        if SERVER_APP in " ".join(process.info["cmdline"] or []):
            found.add(process.info["pid"])
    return found


@pytest.fixture
def deployment(tmp_path: Path) -> Path:
    """A service of the no-op step over two empty files named like raw files."""
    raw = tmp_path / "raw"
    raw.mkdir()
    for minute in (0, 1):
        (raw / f"Bench-D20170615-T00{minute:02d}00.raw").touch()
    stage = {
        "name": "Sv_flow",
        "tasks": [{"name": "edf_noop", "module": "echodataflow.tasklib.testing"}],
        "source": {"path": str(raw / "*.raw")},
        "destination": {"path": str(tmp_path / "out")},
    }
    service = {
        "name": "embedded",
        "infrastructure": {"cluster": {"type": "local", "workers": 1}},
        "stages": [stage],
    }
    path = tmp_path / "deployment.yaml"
    path.write_text(yaml.safe_dump({"services": [service]}), encoding="utf-8")
    return path


def _run(deployment: Path, **env: str) -> subprocess.CompletedProcess[str]:
    scrubbed = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    return subprocess.run(
        [sys.executable, "-m", "echodataflow.cli", "run", str(deployment)],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
        env={**scrubbed, "PREFECT_HOME": str(deployment.parent / "home"), **env},
    )


def test_a_run_leaves_no_server_behind(deployment: Path):
    before = _servers()

    done = _run(deployment)

    assert done.returncode == 0, done.stdout + done.stderr
    assert "2 written" in done.stdout
    assert _servers() - before == set()


def test_a_server_that_cannot_start_is_one_line_and_exit_3(deployment: Path):
    # SQLite cannot create a database under a file.
    done = _run(
        deployment,
        PREFECT_API_DATABASE_CONNECTION_URL="sqlite+aiosqlite:////dev/null/x/prefect.db",
    )

    assert done.returncode == 3, done.stdout + done.stderr
    assert "Traceback" not in done.stdout + done.stderr
    lines = done.stderr.strip().splitlines()
    assert lines == [
        "error: the embedded Prefect server exited with code 3: "
        "sqlalchemy.exc.OperationalError: (sqlite3.OperationalError) "
        "unable to open database file"
    ]
    # The workers may have finished products before the server failed (they get
    # them before it is up): complete stores, but none recorded as done, so the
    # next run remakes them.
    records = (deployment.parent / "out" / ledger.LEDGER_FOLDER).glob("*.json")
    assert all(json.loads(r.read_text())["state"] != "done" for r in records)
