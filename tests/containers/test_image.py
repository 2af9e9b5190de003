"""The run image: what it holds is exactly the lock, and a rebuild holds the same."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import pytest
from packaging.utils import canonicalize_name

pytestmark = [pytest.mark.docker, pytest.mark.slow, pytest.mark.timeout(2400)]

FREEZE = ["/opt/edf/venv/bin/python", "-m", "pip", "freeze", "--all"]
LOCK = Path(__file__).resolve().parents[2] / "containers" / "requirements.lock"
OWN = {"pip", "echodataflow"}  # the venv's installer and the project itself


def _locked() -> dict[str, str]:
    pins = re.findall(r"^([A-Za-z0-9_.-]+)==(\S+)", LOCK.read_text(), re.M)
    return {canonicalize_name(name): version for name, version in pins}


def _installed(docker: Callable[..., str], image: str) -> dict[str, str]:
    lines = docker("run", "--rm", "--network", "none", image, *FREEZE).splitlines()
    # "name==version" for wheels; "name @ file:///..." for the project itself.
    pins = [re.split(r"==| @ ", line, maxsplit=1) for line in lines if line.strip()]
    return {canonicalize_name(name): version for name, version in pins}


def _dependencies(installed: dict[str, str]) -> dict[str, str]:
    return {name: version for name, version in installed.items() if name not in OWN}


def test_the_image_holds_exactly_the_locked_dependency_set(
    run_image: str, docker_cli: Callable[..., str]
) -> None:
    installed = _installed(docker_cli, run_image)
    assert {name for name in installed if name in OWN} == OWN
    assert _dependencies(installed) == _locked()


def test_the_image_runs_as_a_non_root_user_with_python_3_13(
    run_image: str, docker_cli: Callable[..., str]
) -> None:
    out = docker_cli(
        "run", "--rm", "--network", "none", run_image, "sh", "-c",
        "id -u; python -c 'import sys, echodataflow, echopype, prefect; "
        "print(sys.version_info[:2])'",
    )  # fmt: skip
    uid, version = out.split()[0], " ".join(out.split()[1:])
    assert uid != "0"
    assert version == "(3, 13)"


def test_a_rebuild_from_the_same_lock_installs_the_same_versions(
    run_image: str, docker_cli: Callable[..., str], build_image: Callable[..., str]
) -> None:
    # The dependency stage alone (echodataflow is added in the last stage), without
    # the layer cache: pip installs the lock afresh.
    rebuilt = build_image(
        "echodataflow:test-rebuild", "--no-cache", "--target", "build"
    )
    try:
        again = _dependencies(_installed(docker_cli, rebuilt))
        first = _dependencies(_installed(docker_cli, run_image))
        assert again == first
        assert again == _locked()
    finally:
        docker_cli("image", "rm", "echodataflow:test-rebuild")
