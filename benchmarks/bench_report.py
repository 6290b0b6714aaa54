"""Report refresh cost over a long run: does an update get slower as the run grows?

A synthetic run directory (tests/report_synthetic.py: the real RunStore and record types, random
images, all-pairs pair losses) grows one generation at a time, and `Reporter.update` runs after
each generation exactly as the pinning loop calls it. Printed: the update time of each
generation (first vs last), where the time goes (per artifact), the idle refresh (nothing new),
the final update, a rebuild by a fresh reporter, the page size, and the memory the reporter keeps
per generation.

    .venv/bin/python benchmarks/bench_report.py [--generations 30 --lambda 10 --batch 8 --size 64]
"""

from __future__ import annotations

import argparse
import gc
import logging
import os
import platform
import statistics
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lib_pinning.report import Reporter, layout  # noqa: E402
from tests.report_synthetic import SyntheticRun  # noqa: E402

log = logging.getLogger("bench_report")


_REPORT = [tracemalloc.Filter(True, "*/lib_pinning/report/*", all_frames=True)]
# Each part: successive filter stages (a trace must pass every stage).
_MATPLOTLIB = "*/matplotlib/*"
_MEMORY_PARTS = {
    "report state (records, rows, page)": [_REPORT, [tracemalloc.Filter(False, _MATPLOTLIB, all_frames=True)]],
    "matplotlib caches (per-figure text metrics)": [_REPORT, [tracemalloc.Filter(True, _MATPLOTLIB, all_frames=True)]],
}


def _growth(before: tracemalloc.Snapshot, after: tracemalloc.Snapshot, stages: list[list[tracemalloc.Filter]]) -> int:
    """Bytes allocated between the two snapshots and still alive, by the allocations selected."""
    for stage in stages:
        before, after = before.filter_traces(stage), after.filter_traces(stage)
    return sum(stat.size_diff for stat in after.compare_to(before, "filename"))


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:8.1f} ms"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--generations", type=int, default=30)
    parser.add_argument("--lambda", dest="lambda_", type=int, default=10)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--memory-generations", type=int, default=10)
    parser.add_argument("--keep", type=Path, default=None, help="write the run here instead of a temporary folder")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    with tempfile.TemporaryDirectory() as tmp:
        root = (args.keep or Path(tmp)) / "00000-bench"
        run = SyntheticRun(root, lambda_=args.lambda_, batch=args.batch, size=args.size, generations=args.generations)
        reporter = Reporter()
        run.baseline()
        reporter.update(run.store)
        baseline_seconds = reporter.last_update_seconds

        times: list[float] = []
        idle: list[float] = []
        for generation in range(1, args.generations + 1):
            run.generation(generation)
            gc.collect()
            reporter.update(run.store)
            times.append(reporter.last_update_seconds)
            reporter.update(run.store)  # nothing new: the floor of a refresh
            idle.append(reporter.last_update_seconds)
        per_generation_seconds = dict(reporter.seconds)
        per_generation_counts = dict(reporter.rendered)

        run.finish("finished")
        started = time.perf_counter()
        reporter.update(run.store, final=True)
        final_seconds = time.perf_counter() - started

        fresh = Reporter()
        started = time.perf_counter()
        fresh.update(run.store, final=True)
        rebuild_seconds = time.perf_counter() - started

        page_bytes = (run.store.root / layout.INDEX_HTML).stat().st_size
        n_individuals = 1 + args.generations * args.lambda_

        # Memory, in a second run (tracemalloc slows everything down): what the reporter keeps per
        # generation once warm.
        memory_run = SyntheticRun(Path(tmp) / "00001-memory", lambda_=args.lambda_, batch=args.batch, size=args.size)
        memory_run.baseline()
        memory_reporter = Reporter()
        memory_reporter.update(memory_run.store)
        for generation in range(1, 4):
            memory_run.generation(generation)
            memory_reporter.update(memory_run.store)
        tracemalloc.start(40)
        gc.collect()
        before = tracemalloc.take_snapshot()
        for generation in range(4, 4 + args.memory_generations):
            memory_run.generation(generation)
            memory_reporter.update(memory_run.store)
        gc.collect()
        after = tracemalloc.take_snapshot()
        tracemalloc.stop()
        memory = {name: _growth(before, after, filters) for name, filters in _MEMORY_PARTS.items()}

    out = sys.stdout
    out.write(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
              f"Python {platform.python_version()}, load average {os.getloadavg()[0]:.1f}\n")
    out.write(f"run: {args.generations} generations x {args.lambda_} individuals x {args.batch} images "
              f"of {args.size}x{args.size} ({n_individuals} individuals)\n\n")
    out.write(f"baseline update:                     {_ms(baseline_seconds)}\n")
    out.write(f"update, generations 1-3:             {'  '.join(_ms(t) for t in times[:3])}\n")
    out.write(f"update, last 3 generations:          {'  '.join(_ms(t) for t in times[-3:])}\n")
    third = max(1, len(times) // 3)
    out.write(f"median, first / last third:          {_ms(statistics.median(times[:third]))} / "
              f"{_ms(statistics.median(times[-third:]))}\n")
    out.write(f"idle refresh (nothing new), first / last: {_ms(idle[0])} / {_ms(idle[-1])}\n")
    out.write(f"final update (final_summary.gif...): {_ms(final_seconds)}\n")
    out.write(f"rebuild by a fresh reporter:         {_ms(rebuild_seconds)} (existing artifacts kept)\n")
    out.write(f"index.html: {page_bytes / 1024:.1f} KiB ({page_bytes / n_individuals:.0f} bytes per individual)\n")
    individuals = args.memory_generations * args.lambda_
    out.write(f"memory kept per individual (tracemalloc, generations 4-{3 + args.memory_generations}):\n")
    for name, growth in memory.items():
        out.write(f"  {name:44s} {growth / individuals / 1024:6.2f} KiB\n")
    out.write("\n")
    out.write("time per generation by artifact (mean over the run):\n")
    generations = args.generations
    for name, seconds in sorted(per_generation_seconds.items(), key=lambda kv: -kv[1]):
        count = per_generation_counts.get(name, 0)
        out.write(f"  {name:32s} {_ms(seconds / generations)}  ({count / generations:.1f} drawn)\n")


if __name__ == "__main__":
    main()
