"""Steps that do no work, to measure and test orchestration alone.

``edf_noop`` opens nothing and computes nothing: a stage made of it goes through
discovery, the ledger, submission to Dask and the result path, and commits an empty
product, so what a run of it costs is what echodataflow adds around the real steps.
"""

from __future__ import annotations

import fnmatch
import logging
import os
import posixpath
import time
from typing import Any

from echodataflow.tasklib._spec import ChainState, StepSpec

log = logging.getLogger(__name__)

EMPTY = "empty"
"""The product kind of a chain that made nothing; it is committed as an empty store."""


def edf_noop(state: ChainState, params: dict[str, Any]) -> ChainState:
    """Do nothing with the source file; the product is an empty store.

    ``fail_matching`` (a file-name pattern) makes the step fail on the files whose
    name matches, to exercise the failure path without echopype. ``seconds`` makes
    each call take that long. ``trace`` names a local file to which each call
    appends its source files, one line each, so a test can count how often each
    file was processed.
    """
    time.sleep(float(params.get("seconds", 0)))
    if params.get("trace"):
        lines = "".join(f"{source}\n" for source in state.sources)
        # One write of a short line in append mode: lines of concurrent workers
        # do not interleave.
        with open(params["trace"], "a", encoding="utf-8") as trace:
            trace.write(lines)
            trace.flush()
            os.fsync(trace.fileno())
    pattern = params.get("fail_matching")
    for source in state.sources:
        if pattern and fnmatch.fnmatchcase(posixpath.basename(source), pattern):
            raise ValueError(f"asked to fail on names matching {pattern!r}")
    state.product = EMPTY
    return state


STEPS: dict[str, StepSpec] = {
    "edf_noop": StepSpec(
        "edf_noop",
        edf_noop,
        None,
        product=EMPTY,
        needs="raw",
        extra=frozenset({"fail_matching", "seconds", "trace"}),
    ),
}
