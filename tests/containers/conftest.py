"""A real Docker engine and the locally built run image, for the container tests.

The engine is the one ``.ci/run`` started (``DOCKER_HOST``), or one started here by
``.ci/docker.sh`` under a temporary folder: no bridge, no iptables, its own data
root and socket; it is stopped by its pid at the end. No image can be pulled on
these machines, so the base image is made from a debootstrap root file system
(``containers/base.sh``) and the run image built from it with the locked wheels.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
BASE_IMAGE = "edf/python:3.13-trixie"
RUN_IMAGE = "echodataflow:test"
LOCK = REPO / "containers" / "requirements.lock"
WHEELS = REPO / "containers" / "wheels"


def docker(*args: str, timeout: float = 120) -> str:
    """Run one docker CLI command; fail the test with its output when it fails."""
    result = subprocess.run(
        ["docker", *args], capture_output=True, text=True, timeout=timeout, check=False
    )
    if result.returncode != 0:
        pytest.fail(f"docker {' '.join(args)} failed:\n{result.stderr[-3000:]}")
    return result.stdout


def _engine_answers() -> bool:
    if shutil.which("docker") is None or not os.environ.get("DOCKER_HOST"):
        return False
    result = subprocess.run(
        ["docker", "info"], capture_output=True, timeout=30, check=False
    )
    return result.returncode == 0


@pytest.fixture(scope="session")
def docker_host(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A Docker engine's DOCKER_HOST; skips only where no engine can start."""
    if _engine_answers():
        yield os.environ["DOCKER_HOST"]
        return
    if shutil.which("dockerd") is None:
        pytest.skip(
            "no Docker engine: dockerd is not installed (apt install docker.io)"
        )
    if os.geteuid() != 0:
        pytest.skip("no Docker engine: starting dockerd needs root")
    # A short path: the socket path must stay under the unix-socket length limit.
    folder = Path(tmp_path_factory.mktemp("dockerd"))
    script = REPO / ".ci" / "docker.sh"
    started = subprocess.run(
        ["bash", str(script), "start", str(folder)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    if started.returncode != 0:
        pytest.skip(
            f"no Docker engine: dockerd did not start: {started.stderr.strip()}"
        )
    previous = os.environ.get("DOCKER_HOST")
    os.environ["DOCKER_HOST"] = started.stdout.strip()
    try:
        yield os.environ["DOCKER_HOST"]
    finally:
        subprocess.run(
            ["bash", str(script), "stop", str(folder)], timeout=60, check=False
        )
        if previous is None:
            os.environ.pop("DOCKER_HOST", None)
        else:
            os.environ["DOCKER_HOST"] = previous


def _wheelhouse() -> None:
    """Download the locked wheels on the host: pip in a build cannot reach an index."""
    wanted = sum(1 for line in LOCK.read_text().splitlines() if "==" in line)
    if len(list(WHEELS.glob("*.whl"))) >= wanted:
        return
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--quiet",
            "--no-deps",
            "--only-binary=:all:",
            "--require-hashes",
            "-r",
            str(LOCK),
            "-d",
            str(WHEELS),
        ],  # fmt: skip
        check=True,
        timeout=900,
    )


def build_run_image(tag: str, *extra: str) -> str:
    """Build the run image from the local base; return its image id."""
    docker(
        "build", "--quiet", "-f", str(REPO / "containers" / "Dockerfile"),
        "--build-arg", f"BASE_IMAGE={BASE_IMAGE}", "-t", tag, *extra, str(REPO),
        timeout=1500,
    )  # fmt: skip
    return docker("image", "inspect", "--format", "{{.Id}}", tag).strip()


@pytest.fixture(scope="session")
def docker_cli(docker_host: str) -> Callable[..., str]:
    """Run a docker CLI command on the test engine; return its stdout."""
    return docker


@pytest.fixture(scope="session")
def build_image(docker_host: str) -> Callable[..., str]:
    """Build the run image under a tag (extra ``docker build`` arguments allowed)."""
    return build_run_image


@pytest.fixture(scope="session")
def run_image(docker_host: str) -> str:
    """The run image built here from the locked wheels; its id (what pools pin)."""
    subprocess.run(
        ["bash", str(REPO / "containers" / "base.sh"), BASE_IMAGE],
        check=True,
        timeout=900,
    )
    _wheelhouse()
    return build_run_image(RUN_IMAGE)
