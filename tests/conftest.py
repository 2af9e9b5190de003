"""Fixtures shared by every test: the real data folder, an isolated Prefect home."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SHARED_DATA = Path(os.environ.get("EDF_SHARED_DATA", REPO.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The real instrument files in ../shared/data (never copied into the repo)."""
    if not (SHARED_DATA / "raw").is_dir():
        pytest.fail(f"real data not found at {SHARED_DATA}; set EDF_SHARED_DATA")
    return SHARED_DATA


_PREFECT_HOME: list[str] = []


def pytest_configure(config: pytest.Config) -> None:
    """Keep Prefect's database and settings of the test session out of ~/.prefect.

    Set before collection: Prefect reads its settings once, when first imported, and
    test modules may import it at collection time.
    """
    if "PREFECT_HOME" not in os.environ:
        _PREFECT_HOME.append(tempfile.mkdtemp(prefix="edf-test-prefect-home-"))
        os.environ["PREFECT_HOME"] = _PREFECT_HOME[0]
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("DO_NOT_TRACK", "1")
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180")


def pytest_unconfigure(config: pytest.Config) -> None:
    """Remove the Prefect home this session made."""
    for home in _PREFECT_HOME:
        shutil.rmtree(home, ignore_errors=True)
