"""The cached echopype signatures that keep validation and planning import-light."""

from __future__ import annotations

import subprocess
import sys

from echodataflow.tasklib._signature_cache import CACHE
from echodataflow.tasklib._signatures import live_cache


def test_the_signature_cache_matches_the_installed_echopype():
    assert CACHE["echopype"] == live_cache("echopype"), (
        "regenerate it: python -m echodataflow.tasklib._signatures"
    )


def test_planning_imports_neither_echopype_nor_prefect_nor_dask():
    code = (
        "import sys\n"
        "from echodataflow.deployment import plan\n"
        "from echodataflow.models.load import parse_deployment\n"
        "import echodataflow.tasklib.echopype\n"
        "heavy = [m for m in ('echopype', 'prefect', 'distributed', 'xarray')"
        " if m in sys.modules]\n"
        "print(','.join(heavy))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert done.stdout.strip() == ""
