import subprocess
import sys
from importlib.metadata import entry_points

import pytest


def test_every_console_script_target_imports():
    scripts = [
        ep
        for ep in entry_points(group="console_scripts")
        if ep.value.startswith("echodataflow")
    ]
    assert scripts, "the echodataflow console script is not installed"
    for script in scripts:
        assert callable(script.load())


@pytest.mark.parametrize("command", ["validate", "plan", "run"])
def test_every_command_has_help(command):
    done = subprocess.run(
        [sys.executable, "-m", "echodataflow.cli", command, "--help"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "Usage" in done.stdout
