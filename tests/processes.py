"""Helpers for tests that start real services as subprocesses."""

from __future__ import annotations

import signal
import socket
import subprocess


def free_port() -> int:
    """Return a TCP port of 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def stop(process: subprocess.Popen[bytes], interrupts: int, wait: float = 15) -> None:
    """Stop a process we started: SIGINT (twice for a Prefect worker), then SIGKILL."""
    for _ in range(interrupts):
        if process.poll() is None:
            process.send_signal(signal.SIGINT)
            try:
                process.wait(timeout=wait)
            except subprocess.TimeoutExpired:
                continue
    if process.poll() is None:
        process.kill()
        process.wait(timeout=10)
