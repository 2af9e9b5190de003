"""What is done: one record per product, Make-style.

A record sits beside the products (``<destination>/.edf-ledger/<product>.json``) so
it works on shared disk and on object storage alike. It is written after the product
is committed, so on object storage, where there is no rename, the record *is* the
commit marker: a product without a matching ``done`` record is never taken as done.
"""

from __future__ import annotations

import json
import logging
import os
import posixpath
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from echodataflow import __version__, storage

log = logging.getLogger(__name__)

LEDGER_FOLDER = ".edf-ledger"


def versions() -> dict[str, str]:
    """Versions of the software that shapes a product's values."""
    from importlib.metadata import version

    return {"echodataflow": __version__, "echopype": version("echopype")}


def image() -> str | None:
    """Return the pinned container image this run executes in, if any."""
    return os.environ.get("ECHODATAFLOW_IMAGE") or None


def record_url(product_url: str) -> str:
    """Where the record of a product lives."""
    folder, name = posixpath.split(product_url.rstrip("/"))
    return storage.join(folder, LEDGER_FOLDER, f"{name}.json")


@dataclass(frozen=True)
class Decision:
    """Whether a product must be (re)made, and why."""

    run: bool
    why: str


def read_record(product_url: str, options: dict[str, Any]) -> dict[str, Any] | None:
    """Return a product's record, or None when it has none (or an unreadable one)."""
    url = record_url(product_url)
    try:
        return dict(json.loads(storage.read_text(url, options)))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as err:
        log.warning("ignoring unreadable ledger record %s: %s", url, err)
        return None


def decide(
    product_url: str,
    inputs: dict[str, dict[str, Any]],
    steps: list[dict[str, Any]],
    options: dict[str, Any],
) -> Decision:
    """Compare a product's record with what would make it now."""
    record = read_record(product_url, options)
    if record is None:
        if storage.exists(product_url, options):
            return Decision(True, "incomplete (store without a record)")
        return Decision(True, "new")
    if record.get("state") != "done":
        return Decision(True, f"failed before: {record.get('reason', '')}".strip())
    if not storage.exists(product_url, options):
        return Decision(True, "missing (record without a store)")
    if record.get("inputs") != inputs:
        changed = sorted(
            set(inputs) ^ set(record.get("inputs", {}))
            | {k for k in inputs if record.get("inputs", {}).get(k) != inputs[k]}
        )
        names = ", ".join(posixpath.basename(c.rstrip("/")) for c in changed)
        return Decision(True, f"input changed: {names}")
    if record.get("steps") != steps:
        return Decision(True, "parameters changed")
    if record.get("versions") != versions():
        return Decision(True, "version changed")
    return Decision(False, "up to date")


def write_record(
    product_url: str,
    *,
    state: str,
    inputs: dict[str, dict[str, Any]],
    steps: list[dict[str, Any]],
    run_id: str,
    options: dict[str, Any],
    reason: str = "",
) -> None:
    """Write a product's record; ``state`` is ``done`` or ``failed``."""
    previous = read_record(product_url, options) or {}
    attempts = int(previous.get("attempts", 0)) + 1 if state == "failed" else 0
    record = {
        "product": product_url,
        "state": state,
        "reason": reason,
        "attempts": attempts,
        "inputs": inputs,
        "steps": steps,
        "versions": versions(),
        "image": image(),
        "run_id": run_id,
        "written": datetime.now(UTC).isoformat(),
    }
    storage.write_text_atomic(
        record_url(product_url), json.dumps(record, indent=1, sort_keys=True), options
    )
