"""Plain echopype: what a user writes instead of a workflow system.

Run: ``python benchmarks/baseline.py serial|pool SOURCE DEST [--workers N]``.
It makes the same products as the benchmark's deployment (open_raw, compute_Sv,
add_depth, add_location, to_zarr), either in a serial loop or in a hand-written
``ProcessPoolExecutor``, and prints one JSON line: the wall time and, per file, its
size, the in-memory size of its Sv dataset and the seconds it took.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import echopype as ep
import psutil


def process_one(raw: str, dest: str) -> dict[str, Any]:
    """Make one Sv store the way the echodataflow chain does; return its figures."""
    started = time.perf_counter()
    rss = _PeakRss()
    with rss:
        echodata = ep.open_raw(raw, sonar_model="EK60")
        ds = ep.calibrate.compute_Sv(echodata).compute()
        ds = ep.consolidate.add_depth(ds, echodata=echodata)
        ds = ep.consolidate.add_location(ds, echodata=echodata)
        ds.to_zarr(f"{dest}/{Path(raw).stem}_Sv.zarr", mode="w", consolidated=False)
    return {
        "file": Path(raw).name,
        "bytes": os.path.getsize(raw),
        "sv_bytes": int(ds.nbytes),
        "seconds": time.perf_counter() - started,
        "peak_rss": rss.peak,
        "rss_before": rss.before,
    }


class _PeakRss:
    """Sample this process's resident memory in a thread while a block runs."""

    def __init__(self, interval: float = 0.02) -> None:
        self.interval = interval
        self.process = psutil.Process()
        self.before = self.peak = self.process.memory_info().rss
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._stop.wait(self.interval):
            self.peak = max(self.peak, self.process.memory_info().rss)

    def __enter__(self) -> _PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self.process.memory_info().rss)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("mode", choices=["serial", "pool"])
    parser.add_argument("source", type=Path)
    parser.add_argument("dest", type=Path)
    parser.add_argument("--workers", type=int, default=len(os.sched_getaffinity(0)))
    args = parser.parse_args()
    shutil.rmtree(args.dest, ignore_errors=True)
    args.dest.mkdir(parents=True)
    files = sorted(str(p) for p in args.source.glob("Bench-*.raw"))
    dest = [str(args.dest)] * len(files)

    started = time.perf_counter()
    if args.mode == "serial":
        results = [process_one(raw, out) for raw, out in zip(files, dest, strict=True)]
    else:
        with ProcessPoolExecutor(max_workers=args.workers) as pool:
            results = list(pool.map(process_one, files, dest))
    wall = time.perf_counter() - started
    json.dump({"mode": args.mode, "wall": wall, "files": results}, sys.stdout)
    print()


if __name__ == "__main__":
    main()
