"""Fixtures of the make-style tests: copies of real raw files, safe to touch."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from makehelp import SMALL


@pytest.fixture
def raw_copies(shared_data: Path, tmp_path: Path) -> Path:
    """Copies of three small real EK60 files, safe to touch."""
    folder = tmp_path / "raw"
    folder.mkdir()
    for name in SMALL:
        shutil.copy(shared_data / "raw" / "ek60" / name, folder / name)
    return folder
