"""Fixtures of the cluster tests: the single-node SLURM that `.ci/slurm.sh` starts."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from slurm_queue import wait_no_jobs

# Where `.ci/slurm.sh start` writes its config unless EDF_SLURM_DIR says otherwise.
DEFAULT_SLURM_CONF = Path(os.environ.get("EDF_SLURM_DIR", "/tmp/edf-slurm")) / (
    "slurm.conf"
)


def _slurm_answers() -> str | None:
    """Return why SLURM cannot be used here, or None when it answers."""
    try:
        done = subprocess.run(
            ["sinfo", "-h", "-o", "%T"],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
    except FileNotFoundError:
        return "sinfo is not installed; run .ci/slurm.sh start"
    except subprocess.TimeoutExpired:
        return "sinfo does not answer; run .ci/slurm.sh start"
    if done.returncode != 0 or not done.stdout.strip():
        return f"sinfo does not answer ({done.stderr.strip()}); run .ci/slurm.sh start"
    return None


@pytest.fixture(scope="session")
def slurm() -> None:
    """A SLURM that answers `sinfo`; skip (with the reason) where none runs."""
    if "SLURM_CONF" not in os.environ and DEFAULT_SLURM_CONF.exists():
        # Exported before any cluster starts: sbatch and qsub inherit it.
        os.environ["SLURM_CONF"] = str(DEFAULT_SLURM_CONF)
    reason = _slurm_answers()
    if reason is not None:
        pytest.skip(reason)


@pytest.fixture
def no_jobs_left(slurm: None) -> Iterator[None]:
    """Start with an empty queue and fail when a test leaves a worker job queued."""
    assert wait_no_jobs() == [], "worker jobs of an earlier test are still queued"
    yield
    assert wait_no_jobs() == [], "worker jobs were left in the queue"


@pytest.fixture
def scratch_cwd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Run from a scratch folder: the qsub wrapper writes job output to the cwd."""
    monkeypatch.chdir(tmp_path)
    return tmp_path
