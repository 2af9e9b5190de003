"""Fixtures shared by every test: the real data folder, an isolated Prefect home."""

from __future__ import annotations

import os
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


@pytest.fixture(scope="session", autouse=True)
def _isolated_prefect(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Keep Prefect's database and settings of the test session out of ~/.prefect."""
    home = tmp_path_factory.mktemp("prefect-home")
    os.environ.setdefault("PREFECT_HOME", str(home))
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("DO_NOT_TRACK", "1")
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180")
