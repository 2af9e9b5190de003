"""The queue as the tests see it: echodataflow's worker jobs in `squeue`."""

from __future__ import annotations

import subprocess
import time

from echodataflow.clusters._jobqueue import JOB_NAME


def worker_jobs() -> list[str]:
    """Ids of echodataflow's worker jobs in the queue, in any state."""
    done = subprocess.run(
        ["squeue", "-h", "-n", JOB_NAME, "-o", "%i %T"],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    return [line.split()[0] for line in done.stdout.splitlines() if line.strip()]


def wait_no_jobs(timeout: float = 30.0) -> list[str]:
    """Wait until no worker job is queued (completing jobs leave within seconds)."""
    deadline = time.monotonic() + timeout
    jobs = worker_jobs()
    while jobs and time.monotonic() < deadline:
        time.sleep(0.5)
        jobs = worker_jobs()
    return jobs
