"""Every deployment file in examples/ validates through the console script's entry."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from echodataflow.cli import main

EXAMPLES = sorted((Path(__file__).resolve().parent.parent / "examples").glob("*.yaml"))


def test_the_examples_folder_holds_deployments():
    assert len(EXAMPLES) >= 2


@pytest.mark.parametrize("example", EXAMPLES, ids=[e.name for e in EXAMPLES])
def test_every_example_validates(
    example: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
):
    monkeypatch.setattr(sys, "argv", ["echodataflow", "validate", str(example)])
    try:
        main()
        code = 0
    except SystemExit as exited:
        code = int(exited.code or 0)
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert f"{example}: valid" in captured.out
