"""Make-style re-run cost: a full run of the example, then a run with nothing to do.

Run as ``python benchmarks/rerun.py [--files N] [--workers W]``. It copies nothing:
the example's deployment is rewritten to read the first N Summer2017 files of
``../shared/data/raw/ek60`` (all 10 by default) and to write into a temporary
folder, then ``echodataflow run`` is timed twice as a whole CLI process (its own
Python, imports, planning, Prefect and Dask included). The second run finds every
product up to date; the target is that it costs under 5 % of the first.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent
DATA = Path(os.environ.get("EDF_SHARED_DATA", REPO.parent / "shared" / "data"))
TARGET = 0.05


def _deployment(folder: Path, files: int, workers: int) -> Path:
    example = yaml.safe_load((REPO / "examples" / "ek60-sv.yaml").read_text())
    raws = sorted(str(p) for p in (DATA / "raw" / "ek60").glob("Summer2017-*.raw"))
    service = example["services"][0]
    service["infrastructure"]["cluster"] = {"type": "local", "workers": workers}
    stage = service["stages"][0]
    stage["source"]["path"] = raws[:files]
    stage["destination"]["path"] = str(folder / "Sv")
    path = folder / "deployment.yaml"
    path.write_text(yaml.safe_dump(example, sort_keys=False))
    return path


def _timed_run(deployment: Path, env: dict[str, str]) -> tuple[float, str]:
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "echodataflow.cli", "run", str(deployment)],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        sys.stderr.write(done.stdout + done.stderr)
        raise SystemExit(f"echodataflow run failed with exit code {done.returncode}")
    summary = [line for line in done.stdout.splitlines() if "written" in line]
    return seconds, summary[-1] if summary else ""


def main() -> None:
    """Time a full run and a re-run with nothing changed; print the ratio."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--files", type=int, default=10)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="edf-rerun-") as tmp:
        folder = Path(tmp)
        deployment = _deployment(folder, args.files, args.workers)
        env = {
            **os.environ,
            "PREFECT_HOME": str(folder / "prefect-home"),
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "DO_NOT_TRACK": "1",
        }
        full, full_summary = _timed_run(deployment, env)
        print(f"full run   ({args.files} files): {full:7.1f} s  {full_summary}")
        rerun, rerun_summary = _timed_run(deployment, env)
        print(f"re-run (nothing changed): {rerun:7.1f} s  {rerun_summary}")
    ratio = rerun / full
    verdict = "met" if ratio < TARGET else "MISSED"
    print(f"re-run / full run = {ratio:.1%} (target < {TARGET:.0%}): {verdict}")


if __name__ == "__main__":
    main()
