"""How the gap to the process pool closes as the number of raw files grows.

Usage: ``python benchmarks/scaling.py [--files 50,100,200,400] [--scratch DIR]``
(``just bench-scaling``). For each N it runs, on the same N raw files, the
hand-written echopype ``ProcessPoolExecutor`` and ``echodataflow run`` with as many
workers as cores, and prints the throughput ratio. It then fits
``time = fixed + N × per_file`` to each (least squares over the N values), which
splits each one's time into a fixed start-up and a marginal cost per file, and
gives the N from which the run reaches 0.9 of the pool's throughput and 50 ms of
overhead per file, the targets of ``bench.py``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import bench
import measure
import workload

THROUGHPUT_TARGET = 0.9
OVERHEAD_TARGET_S = 0.050


def fit(points: list[tuple[int, float]]) -> tuple[float, float]:
    """Least-squares ``(fixed, per_file)`` of ``time = fixed + N × per_file``."""
    count = len(points)
    mean_n = sum(n for n, _ in points) / count
    mean_t = sum(t for _, t in points) / count
    spread = sum((n - mean_n) ** 2 for n, _ in points)
    per_file = sum((n - mean_n) * (t - mean_t) for n, t in points) / spread
    return mean_t - per_file * mean_n, per_file


def files_needed(
    run: tuple[float, float], pool: tuple[float, float]
) -> tuple[float | None, float | None]:
    """The N from which each target holds on the fitted lines; None if never."""
    (run_fixed, run_per_file), (pool_fixed, pool_per_file) = run, pool

    # pool(N) / run(N) >= 0.9, solved for N.
    slope = pool_per_file - THROUGHPUT_TARGET * run_per_file
    throughput = None
    if slope > 0:
        throughput = max(0.0, (THROUGHPUT_TARGET * run_fixed - pool_fixed) / slope)

    # (run(N) - pool(N)) / N <= 50 ms, solved for N.
    margin = OVERHEAD_TARGET_S - (run_per_file - pool_per_file)
    overhead = None
    if margin > 0:
        overhead = max(0.0, (run_fixed - pool_fixed) / margin)
    return throughput, overhead


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--files", default="50,100,200,400", help="comma-separated numbers of files"
    )
    parser.add_argument("--scratch", type=Path, default=Path("/tmp/edf-scaling"))
    parser.add_argument(
        "--repeat", type=int, default=1, help="rounds at each N; best kept"
    )
    args = parser.parse_args()
    counts = sorted({int(n) for n in args.files.split(",")})
    if len(counts) < 2:
        raise SystemExit("--files needs at least two different numbers of files")
    scratch = args.scratch.resolve()
    scratch.mkdir(parents=True, exist_ok=True)
    runner = bench.Bench(scratch, counts[-1], 0, args.repeat)
    cores = bench.cores()

    # The database migration of a fresh Prefect home is not part of any run.
    tiny = scratch / "tiny"
    workload.build_empty(tiny, 2)
    warmup = runner.yaml("warmup", tiny, noop=True, workers=1)
    bench.checked(runner.edf(warmup, 1, force=True), "warm-up run")

    results: dict[int, dict[str, float]] = {}
    for count in counts:
        runner.raw = scratch / f"raw-{count}"
        bench.log(f"building {count} raw files in {runner.raw}")
        workload.build_raw(runner.raw, count)
        yaml = runner.yaml(f"edf-{count}", runner.raw, noop=False, workers=cores)
        best: dict[str, measure.Measured] = {}
        for _ in range(args.repeat):
            candidates = {
                "pool": runner.baseline("pool")[0],
                "run": bench.checked(
                    runner.edf(yaml, cores, force=True),
                    f"echodataflow {cores} workers, {count} files",
                ),
            }
            for name, result in candidates.items():
                if name not in best or result.wall < best[name].wall:
                    best[name] = result
        results[count] = {name: result.wall for name, result in best.items()}

    pool = fit([(n, r["pool"]) for n, r in results.items()])
    run = fit([(n, r["run"]) for n, r in results.items()])
    throughput_n, overhead_n = files_needed(run, pool)
    print(f"\n## Scaling with the number of files ({cores} cores)\n")
    print(
        f"| files | echopype pool | echodataflow, {cores} workers "
        "| throughput vs pool | overhead per file |"
    )
    print("|---|---|---|---|---|")
    for count, r in results.items():
        overhead = (r["run"] - r["pool"]) / count * 1000
        print(
            f"| {count} | {r['pool']:.1f} s | {r['run']:.1f} s "
            f"| {r['pool'] / r['run']:.2f} | {overhead:.0f} ms |"
        )
    print("\n| fitted line | fixed | per file |")
    print("|---|---|---|")
    print(f"| echopype pool | {pool[0]:.1f} s | {pool[1] * 1000:.0f} ms |")
    print(f"| echodataflow run | {run[0]:.1f} s | {run[1] * 1000:.0f} ms |")

    def reached(n: float | None) -> str:
        return "never on these lines" if n is None else f"from about {n:.0f} files"

    print(
        f"\nThroughput of at least {THROUGHPUT_TARGET} of the pool: "
        f"{reached(throughput_n)}. Overhead of at most "
        f"{OVERHEAD_TARGET_S * 1000:.0f} ms per file: {reached(overhead_n)}."
    )
    (scratch / "scaling.json").write_text(
        json.dumps(
            {
                "cores": cores,
                "runs": results,
                "fit": {"pool": pool, "run": run},
                "files_for_throughput": throughput_n,
                "files_for_overhead": overhead_n,
            },
            indent=1,
        )
    )
    bench.log(f"figures saved in {scratch / 'scaling.json'}")


if __name__ == "__main__":
    main()
