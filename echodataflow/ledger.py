"""What is done: one record per product, Make-style.

A record sits beside the products (``<destination>/.edf-ledger/<product>.json``) so
it works on shared disk and on object storage alike. It is written after the product
is committed, so on object storage, where there is no rename, the record *is* the
commit marker: a product without a matching ``done`` record is never taken as done.
"""

from __future__ import annotations

import functools
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
# State of a record whose product is being rewritten (see mark_writing).
WRITING = "writing"


def versions() -> dict[str, str]:
    """Versions of the software that shapes a product's values."""
    return dict(_installed_versions())


@functools.cache
def _installed_versions() -> dict[str, str]:
    # importlib.metadata parses the package's METADATA on every call (about 3 ms);
    # planning and recording ask once per product, so ask once per process.
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
    """Compare a product's record with what would make it now.

    A product is up to date only when its record says ``done``, its store exists,
    and the record's inputs, steps, versions and image equal today's: anything else
    is a reason to make it again, and the reason is returned.
    """
    record = read_record(product_url, options)
    if record is None:
        if storage.exists(product_url, options):
            return Decision(True, "incomplete (store without a record)")
        return Decision(True, "new")
    if record.get("state") == WRITING:
        return Decision(True, "incomplete (interrupted while being rewritten)")
    if record.get("state") != "done":
        attempts = int(record.get("attempts", 1) or 1)
        reason = str(record.get("reason", "")).strip()
        return Decision(True, f"failed before ({attempts}x): {reason}".strip(": "))
    if not storage.exists(product_url, options):
        return Decision(True, "missing (record without a store)")
    recorded = record.get("inputs", {})
    if recorded != inputs:
        changed = sorted(
            set(inputs) ^ set(recorded)
            | {k for k in inputs if recorded.get(k) != inputs[k]}
        )
        names = ", ".join(posixpath.basename(c.rstrip("/")) for c in changed)
        return Decision(True, f"input changed: {names}")
    if record.get("steps") != steps:
        return Decision(True, "parameters changed")
    if record.get("versions") != versions():
        old = record.get("versions") or {}
        now = versions()
        names = ", ".join(
            f"{k} {old.get(k)} -> {now[k]}" for k in sorted(now) if old.get(k) != now[k]
        )
        return Decision(True, f"version changed: {names}")
    if record.get("image") != image():
        return Decision(True, f"image changed: {record.get('image')} -> {image()}")
    return Decision(False, "up to date")


def is_done(product_url: str, options: dict[str, Any]) -> dict[str, Any] | None:
    """Return the record of a product that is done and whose store exists, else None.

    This is how a reader (a later stage, ``plan``) tells a finished product from a
    half-written or failed one: never by the store's existence alone.
    """
    record = read_record(product_url, options)
    if record is None or record.get("state") != "done":
        return None
    if not storage.exists(product_url, options):
        return None
    return record


def mark_writing(product_url: str, options: dict[str, Any]) -> None:
    """Withdraw a ``done`` record before its store is replaced.

    On object storage a store is deleted and rewritten in place, so until the new
    record is written the old one would vouch for a half-written store. The record
    keeps everything else and says ``writing``; nothing happens without a record.
    """
    record = read_record(product_url, options)
    if record is None or record.get("state") != "done":
        return
    record["state"] = WRITING
    record["written"] = datetime.now(UTC).isoformat()
    storage.write_text_atomic(
        record_url(product_url), json.dumps(record, indent=1, sort_keys=True), options
    )


def write_record(
    product_url: str,
    *,
    state: str,
    inputs: dict[str, dict[str, Any]],
    steps: list[dict[str, Any]],
    run_id: str,
    options: dict[str, Any],
    reason: str = "",
    quality: dict[str, Any] | None = None,
) -> None:
    """Write a product's record; ``state`` is ``done`` or ``failed``.

    ``attempts`` counts the failed runs in a row (0 once done); ``quality`` holds
    the data-quality verdict, which a later stage reads to keep blocked products
    out.
    """
    previous = read_record(product_url, options) or {}
    failed_before = previous.get("state") == "failed"
    attempts = int(previous.get("attempts", 0)) + 1 if failed_before else 1
    record: dict[str, Any] = {
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
    if state == "done":
        record["attempts"] = 0
    if quality is not None:
        record["quality"] = quality
    storage.write_text_atomic(
        record_url(product_url), json.dumps(record, indent=1, sort_keys=True), options
    )
