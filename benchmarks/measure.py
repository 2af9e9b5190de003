"""Run a command and sample the memory of its whole process tree while it runs."""

from __future__ import annotations

import os
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import psutil


@dataclass
class Measured:
    """Wall time, exit code, output and peak resident memory by role of one command."""

    command: list[str]
    wall: float = 0.0
    returncode: int = 0
    stdout: str = ""
    stderr: str = ""
    peaks: dict[int, tuple[str, int]] = field(default_factory=dict)
    cpu: dict[int, tuple[str, float]] = field(default_factory=dict)

    def peak(self, role: str) -> int:
        """The largest peak of any process in ``role`` (bytes; 0 when none)."""
        return max((rss for r, rss in self.peaks.values() if r == role), default=0)

    def cpu_seconds(self, role: str | None = None) -> float:
        """CPU time (user + system) of the processes in ``role``, or of all of them.

        Unlike wall time it hardly grows when other jobs load the machine.
        """
        return sum(s for r, s in self.cpu.values() if role is None or r == role)

    def count(self, role: str) -> int:
        """How many processes of ``role`` were seen."""
        return sum(1 for r, _ in self.peaks.values() if r == role)


def role(process: psutil.Process, root: int) -> str:
    """Name a process of the tree: run, worker, fork-server, prefect-server, other."""
    if process.pid == root:
        return "run"
    try:
        cmdline = " ".join(process.cmdline())
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return "other"
    if "prefect" in cmdline and ("server" in cmdline or "uvicorn" in cmdline):
        return "prefect-server"
    if "resource_tracker" in cmdline:
        return "other"
    parent = process.ppid()
    if "forkserver" in cmdline and parent == root:
        # The server the workers fork from (it imports echopype once for them).
        return "fork-server"
    if "spawn_main" in cmdline or "forkserver" in cmdline:
        return "worker"
    # A pool worker forked from the run process has the run process's command line.
    if parent == root and "python" in cmdline:
        return "worker"
    return "other"


def run(
    command: list[str],
    *,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
    timeout: float = 3600,
    interval: float = 0.1,
) -> Measured:
    """Run ``command``; sample the RSS of it and its descendants every ``interval``."""
    measured = Measured(command)
    started = time.perf_counter()
    child = subprocess.Popen(
        command,
        env={**os.environ, **(env or {})},
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    stop = threading.Event()

    def sample() -> None:
        try:
            root = psutil.Process(child.pid)
        except psutil.NoSuchProcess:
            return
        roles: dict[int, str] = {}
        while not stop.is_set():
            try:
                tree = [root, *root.children(recursive=True)]
            except psutil.NoSuchProcess:
                return
            for process in tree:
                try:
                    rss = process.memory_info().rss
                    times = process.cpu_times()
                except (psutil.NoSuchProcess, psutil.AccessDenied):
                    continue
                if process.pid not in roles:
                    roles[process.pid] = role(process, child.pid)
                name = roles[process.pid]
                known = measured.peaks.get(process.pid, (name, 0))[1]
                measured.peaks[process.pid] = (name, max(known, rss))
                measured.cpu[process.pid] = (name, times.user + times.system)
            stop.wait(interval)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        measured.stdout, measured.stderr = child.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        child.kill()
        measured.stdout, measured.stderr = child.communicate()
    measured.wall = time.perf_counter() - started
    measured.returncode = child.returncode
    stop.set()
    sampler.join()
    return measured
