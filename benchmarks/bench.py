"""echodataflow against plain echopype, measured side by side in one process tree.

Usage: ``python benchmarks/bench.py [--files 100] [--noop-files 5000] [--scratch DIR]``
(``just bench`` runs it). It builds the workloads in a scratch folder, runs the plain
echopype baselines and ``echodataflow run`` on the same files, and prints markdown
tables of ratios against the baselines, memory, and whether each target of the
benchmark issue is met. The raw figures are saved as JSON in the scratch folder.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import measure
import workload

PYTHON = sys.executable
EDF = str(Path(PYTHON).with_name("echodataflow"))
MB = 1024 * 1024
ROLES = ("run", "worker", "fork-server", "prefect-server")


@dataclass
class Target:
    """One target of the issue: what it asks, the figure measured, whether it is met."""

    name: str
    wanted: str
    got: str
    met: bool | None


def cores() -> int:
    """CPU cores this process may use."""
    return len(os.sched_getaffinity(0))


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def checked(result: measure.Measured, what: str) -> measure.Measured:
    """Stop the benchmark with the command's output when it failed."""
    if result.returncode != 0:
        sys.stderr.write(result.stdout[-4000:] + result.stderr[-4000:])
        raise SystemExit(f"{what} failed with exit code {result.returncode}")
    log(f"{what}: {result.wall:.1f} s")
    return result


class Bench:
    """The scratch folder, its workloads and the commands run on them."""

    def __init__(self, scratch: Path, files: int, noop_files: int, repeat: int) -> None:
        self.scratch = scratch
        self.files = files
        self.noop_files = noop_files
        self.repeat = repeat
        self.env = {
            "PREFECT_HOME": str(scratch / "prefect-home"),
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "DO_NOT_TRACK": "1",
        }
        # The runs must use their own embedded Prefect, not a server of the shell.
        os.environ.pop("PREFECT_API_URL", None)
        self.raw = scratch / "raw"
        self.samples: dict[str, Path] = {}

    def edf(
        self, yaml: Path, workers: int, *, force: bool, api: str | None = None
    ) -> measure.Measured:
        command = [EDF, "run", str(yaml), "--workers", str(workers)]
        env = self.env if api is None else {**self.env, "PREFECT_API_URL": api}
        return measure.run(
            command + (["--force"] if force else []), env=env, cwd=self.scratch
        )

    def yaml(self, name: str, source: Path, *, noop: bool, workers: int) -> Path:
        return workload.deployment_yaml(
            self.scratch / f"{name}.yaml",
            source,
            self.scratch / "out" / name,
            noop=noop,
            workers=workers,
        )

    def baseline(self, mode: str) -> tuple[measure.Measured, dict[str, Any]]:
        script = str(Path(__file__).with_name("baseline.py"))
        dest = self.scratch / "out" / f"baseline-{mode}"
        result = checked(
            measure.run([PYTHON, script, mode, str(self.raw), str(dest)]),
            f"echopype {mode}",
        )
        return result, json.loads(result.stdout.strip().splitlines()[-1])


@contextmanager
def served_prefect(scratch: Path) -> Iterator[str]:
    """A Prefect server left running, as on a lab server; yield its API address.

    With ``PREFECT_API_URL`` set, ``echodataflow run`` starts no server of its own.
    """
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {
        **os.environ,
        "PREFECT_HOME": str(scratch / "prefect-home-served"),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "DO_NOT_TRACK": "1",
        "PREFECT_UI_ENABLED": "false",
    }
    prefect = str(Path(PYTHON).with_name("prefect"))
    server = subprocess.Popen(
        [prefect, "server", "start", "--host", "127.0.0.1", "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    api = f"http://127.0.0.1:{port}/api"
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and server.poll() is None:
            try:
                with urllib.request.urlopen(f"{api}/health", timeout=2):
                    break
            except OSError:
                time.sleep(0.5)
        else:
            raise SystemExit("the Prefect server for the served runs did not start")
        yield api
    finally:
        server.terminate()
        server.wait(timeout=30)


def first_worker_on_slurm(scratch: Path) -> float | None:
    """Seconds from opening a SLURM cluster to its first connected worker, or None.

    The worker job's output goes to ``scratch``, not to the current folder.
    """
    try:
        answered = subprocess.run(
            ["sinfo", "-h"], capture_output=True, timeout=10, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    if answered.returncode != 0:
        return None
    from echodataflow.clusters import BACKENDS, open_cluster
    from echodataflow.models.deployment import Cluster, JobQueueOptions

    if "slurm" not in BACKENDS:
        log("sinfo answers but no slurm cluster backend is registered")
        return None
    started = time.perf_counter()
    logs = scratch / "slurm-logs"
    cluster = Cluster(
        type="slurm", workers=1, jobqueue=JobQueueOptions(log_directory=str(logs))
    )
    with open_cluster(cluster) as client:
        client.wait_for_workers(1, timeout=300)
        return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--files", type=int, default=100, help="real raw files")
    parser.add_argument(
        "--noop-files", type=int, default=5000, help="empty files, no-op step"
    )
    parser.add_argument("--scratch", type=Path, default=Path("/tmp/edf-bench"))
    parser.add_argument(
        "--skip-real", action="store_true", help="only the survey-scale part"
    )
    parser.add_argument(
        "--repeat", type=int, default=2, help="rounds of the real runs; best kept"
    )
    args = parser.parse_args()
    bench = Bench(args.scratch.resolve(), args.files, args.noop_files, args.repeat)
    bench.scratch.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(bench.scratch / "out", ignore_errors=True)
    n = cores()
    rows: list[tuple[str, str, str, str]] = []
    targets: list[Target] = []
    figures: dict[str, Any] = {"cores": n, "files": args.files}

    # Prefect's first start migrates a fresh database: do it before timing anything.
    tiny = bench.scratch / "tiny"
    workload.build_empty(tiny, 2)
    checked(
        bench.edf(bench.yaml("warmup", tiny, noop=True, workers=1), 1, force=True),
        "warm-up run",
    )

    if not args.skip_real:
        real(bench, n, rows, targets, figures)
    survey(bench, n, rows, targets, figures)
    slurm = first_worker_on_slurm(bench.scratch)
    figures["slurm_first_worker_s"] = slurm
    rows.append(
        (
            "SLURM: run start to first worker",
            "-",
            f"{slurm:.1f} s" if slurm is not None else "skipped (no SLURM here)",
            "",
        )
    )

    print(f"\n## echodataflow benchmark ({n} cores, {time.strftime('%Y-%m-%d')})\n")
    print("| measurement | ratio | time | note |")
    print("|---|---|---|---|")
    for row in rows:
        print("| " + " | ".join(row) + " |")
    if "memory" in figures:
        print_cpu(figures)
        print_memory(figures)
    if "pool_s" in figures and "noop_few_s" in figures:
        print_steady_state(figures)
    print("\n### Targets\n")
    print("| target | wanted | measured | met |")
    print("|---|---|---|---|")
    for t in targets:
        met = "n/a" if t.met is None else ("yes" if t.met else "**no**")
        print(f"| {t.name} | {t.wanted} | {t.got} | {met} |")
    (bench.scratch / "figures.json").write_text(json.dumps(figures, indent=1))
    log(f"figures saved in {bench.scratch / 'figures.json'}")


def real(
    bench: Bench,
    n: int,
    rows: list[tuple[str, str, str, str]],
    targets: list[Target],
    figures: dict[str, Any],
) -> None:
    """The real workload: baselines, runs with 1 and n workers, a re-run."""
    log(f"building {bench.files} raw files in {bench.raw}")
    bench.samples = workload.build_raw(bench.raw, bench.files)
    files = bench.files
    yaml_1 = bench.yaml("edf-1", bench.raw, noop=False, workers=1)
    yaml_n = bench.yaml("edf-n", bench.raw, noop=False, workers=n)
    best: dict[str, measure.Measured] = {}
    serial_json: dict[str, Any] = {}
    # Rounds of all four, interleaved, keeping each one's fastest: a shared
    # machine's load comes and goes, and it slows a run, never speeds it up.
    for round_ in range(1, bench.repeat + 1):
        log(f"round {round_} of {bench.repeat}")
        serial, json_ = bench.baseline("serial")
        serial_json = serial_json or json_
        candidates = {
            "serial": serial,
            "pool": bench.baseline("pool")[0],
            "one": checked(bench.edf(yaml_1, 1, force=True), "echodataflow 1 worker"),
            "many": checked(
                bench.edf(yaml_n, n, force=True), f"echodataflow {n} workers"
            ),
        }
        for name, result in candidates.items():
            if name not in best or result.wall < best[name].wall:
                best[name] = result
    serial, pool, one, many = (best[k] for k in ("serial", "pool", "one", "many"))
    again = checked(bench.edf(yaml_n, n, force=False), "re-run, nothing changed")
    # Context, not a target: the same run where a Prefect server is already up.
    with served_prefect(bench.scratch) as api:
        checked(bench.edf(yaml_n, n, force=True, api=api), "served warm-up")
        served = min(
            (
                checked(
                    bench.edf(yaml_n, n, force=True, api=api),
                    f"echodataflow {n} workers, served Prefect",
                )
                for _ in range(bench.repeat)
            ),
            key=lambda result: result.wall,
        )

    def row(name: str, result: measure.Measured, base: float, note: str) -> None:
        rows.append((name, f"{result.wall / base:.2f}", f"{result.wall:.1f} s", note))

    row("echopype serial loop (baseline)", serial, serial.wall, f"{files} files")
    row("echopype ProcessPoolExecutor", pool, serial.wall, f"{n} processes")
    row("echodataflow run, 1 worker", one, serial.wall, "ratio to the serial loop")
    row(f"echodataflow run, {n} workers", many, serial.wall, "ratio to the serial loop")
    rows.append(
        (
            f"echodataflow {n} workers / process pool (throughput)",
            f"{pool.wall / many.wall:.2f}",
            "",
            "higher is better",
        )
    )
    rows.append(
        (
            f"echodataflow {n} workers, Prefect server already running / pool",
            f"{pool.wall / served.wall:.2f}",
            f"{served.wall:.1f} s",
            "throughput; PREFECT_API_URL set, as on a lab server",
        )
    )
    row("re-run, nothing changed", again, many.wall, f"ratio to the {n}-worker run")
    overhead_1 = (one.wall - serial.wall) / files * 1000
    overhead_n = (many.wall - pool.wall) / files * 1000
    rows.append(
        ("overhead per file, 1 worker", "", f"{overhead_1:.0f} ms", "vs serial")
    )
    rows.append(
        (f"overhead per file, {n} workers", "", f"{overhead_n:.0f} ms", "vs pool")
    )

    largest_sv = max(f["sv_bytes"] for f in serial_json["files"])
    worker_peak = max(many.peak("worker"), one.peak("worker"))
    memory_limit = 3 * largest_sv + 500 * MB
    figures["cpu"] = {
        name: {role: result.cpu_seconds(role) for role in ROLES}
        for name, result in (
            ("echopype serial", serial),
            ("echopype pool", pool),
            ("echodataflow 1 worker", one),
            (f"echodataflow {n} workers", many),
        )
    }
    figures.update(
        serial_s=serial.wall,
        pool_s=pool.wall,
        edf_1_s=one.wall,
        edf_n_s=many.wall,
        edf_n_served_s=served.wall,
        rerun_s=again.wall,
        memory={
            "per_file": per_file_memory(serial_json),
            "processes": {
                name: {
                    role: {"peak": result.peak(role), "count": result.count(role)}
                    for role in ("run", "worker", "prefect-server")
                }
                for name, result in (
                    ("echopype serial", serial),
                    ("echopype pool", pool),
                    ("echodataflow 1 worker", one),
                    (f"echodataflow {n} workers", many),
                    ("re-run", again),
                )
            },
        },
    )
    targets.extend(
        [
            Target(
                "1 worker vs serial loop",
                "<= 1.10",
                f"{one.wall / serial.wall:.2f}",
                one.wall <= 1.10 * serial.wall,
            ),
            Target(
                f"{n} workers vs process pool throughput",
                ">= 0.90",
                f"{pool.wall / many.wall:.2f}",
                pool.wall / many.wall >= 0.9,
            ),
            Target(
                "overhead per file (real workload)",
                "<= 50 ms",
                f"{overhead_1:.0f} ms (1 worker), {overhead_n:.0f} ms ({n} workers)",
                max(overhead_1, overhead_n) <= 50,
            ),
            Target(
                "unchanged re-run vs full run",
                "<= 3 %",
                f"{100 * again.wall / many.wall:.1f} %",
                again.wall <= 0.03 * many.wall,
            ),
            Target(
                "peak memory per worker",
                f"<= 3 x {largest_sv / MB:.0f} MB + 500 MB"
                f" = {memory_limit / MB:.0f} MB",
                f"{worker_peak / MB:.0f} MB",
                worker_peak <= memory_limit,
            ),
        ]
    )


def per_file_memory(serial_json: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per distinct sample size: raw size, Sv size, peak RSS while it ran."""
    by_size: dict[int, dict[str, Any]] = {}
    for f in serial_json["files"]:
        row = by_size.setdefault(
            f["bytes"], {"bytes": f["bytes"], "sv_bytes": f["sv_bytes"], "peak_rss": 0}
        )
        row["peak_rss"] = max(row["peak_rss"], f["peak_rss"])
        row["rise"] = max(row.get("rise", 0), f["peak_rss"] - f["rss_before"])
    return [by_size[size] for size in sorted(by_size)]


def print_cpu(figures: dict[str, Any]) -> None:
    print("\n### CPU time by process (user + system)\n")
    print("| measured run | " + " | ".join(ROLES) + " |")
    print("|---|" + "---|" * len(ROLES))
    for name, roles in figures["cpu"].items():
        print(f"| {name} | " + " | ".join(f"{roles[r]:.1f} s" for r in ROLES) + " |")


def print_steady_state(figures: dict[str, Any]) -> None:
    """Where the CPU goes: per file in the workers, and outside them per run.

    Context for the targets, which are on whole runs. The split does not depend
    on how start-up and work overlap (a run hands files to its workers before
    its Prefect server is up), so it separates what each file costs from what a
    run costs once, better than subtracting a start-up time would.
    """
    files = figures["files"]
    print("\n### CPU per file and per run\n")
    print("| measured run | worker CPU per file | vs pool | CPU outside the workers |")
    print("|---|---|---|---|")
    pool = figures["cpu"]["echopype pool"]["worker"] / files
    for name, roles in figures["cpu"].items():
        if name == "echopype serial":
            continue
        per_file = roles["worker"] / files
        outside = sum(seconds for role, seconds in roles.items() if role != "worker")
        print(
            f"| {name} | {per_file * 1000:.0f} ms | {per_file / pool:.2f} "
            f"| {outside:.1f} s |"
        )


def print_memory(figures: dict[str, Any]) -> None:
    memory = figures["memory"]
    print("\n### Peak memory (RSS) by process\n")
    print("| run | run process | each worker (max) | workers | Prefect server |")
    print("|---|---|---|---|---|")
    for name, roles in memory["processes"].items():
        print(
            f"| {name} | {roles['run']['peak'] / MB:.0f} MB | "
            f"{roles['worker']['peak'] / MB:.0f} MB | {roles['worker']['count']} | "
            f"{roles['prefect-server']['peak'] / MB:.0f} MB |"
        )
    print("\n### Memory per file size (serial echopype loop)\n")
    print("| raw file | Sv in memory | process peak | rise while processing |")
    print("|---|---|---|---|")
    for row in memory["per_file"]:
        print(
            f"| {row['bytes'] / MB:.2f} MB | {row['sv_bytes'] / MB:.1f} MB | "
            f"{row['peak_rss'] / MB:.0f} MB | {row['rise'] / MB:.0f} MB |"
        )


def survey(
    bench: Bench,
    n: int,
    rows: list[tuple[str, str, str, str]],
    targets: list[Target],
    figures: dict[str, Any],
) -> None:
    """Orchestration alone: the no-op step over a few files and over many."""
    few, many = 10, bench.noop_files
    folders = {}
    for count in (few, many):
        folder = bench.scratch / f"empty-{count}"
        log(f"building {count} empty raw files in {folder}")
        workload.build_empty(folder, count)
        folders[count] = folder
    small = checked(
        bench.edf(
            bench.yaml("noop-few", folders[few], noop=True, workers=n), n, force=True
        ),
        f"no-op step, {few} files",
    )
    yaml_many = bench.yaml("noop-many", folders[many], noop=True, workers=n)
    large = checked(bench.edf(yaml_many, n, force=True), f"no-op step, {many} files")
    again = checked(bench.edf(yaml_many, n, force=False), f"no-op re-run, {many} files")
    per_file = (large.wall - small.wall) / (many - few) * 1000
    rows.append(
        (f"no-op step, {few} files (fixed cost)", "", f"{small.wall:.1f} s", "")
    )
    rows.append(
        (
            f"no-op step, {many} files",
            f"{large.wall / small.wall:.2f}",
            f"{large.wall:.1f} s",
            f"ratio to {few} files; {per_file:.1f} ms per extra file",
        )
    )
    rows.append(
        (
            f"no-op re-run, {many} files, nothing changed",
            f"{again.wall / large.wall:.2f}",
            f"{again.wall:.1f} s",
            f"ratio to the {many}-file run",
        )
    )
    figures.update(
        noop_few_s=small.wall,
        noop_many_s=large.wall,
        noop_rerun_s=again.wall,
        noop_files=many,
        noop_ms_per_file=per_file,
    )
    scaled = per_file * 5000 / 1000
    targets.append(
        Target(
            "orchestration per file at survey scale",
            "<= 20 ms (5,000 files < 100 s)",
            f"{per_file:.1f} ms ({scaled:.0f} s for 5,000)",
            per_file <= 20,
        )
    )


if __name__ == "__main__":
    main()
