"""What the run analyses (per-unit influence, the weight map) add to the toy demo's wall time.

The default demo (`python -m lib_pinning demo`, its defaults) runs in a fresh process per run, as
a user runs it: numba's compile of UMAP and the imports of scikit-learn and umap-learn are paid
once per process, so a warm process would hide exactly the cost in question. Five ways,
interleaved over --repeats rounds so that load on the machine hits them alike:
  - without: the report's analysis step (RunAnalysis.refresh) and the CLI's influence summary
    replaced by no-ops, i.e. the demo as it was before the analyses existed;
  - with: the demo as shipped (the map's embedding chosen by weight_map.choose_embedding, the
    clusters fitted by the helper process that imports scikit-learn at the lowest priority while
    the run generates, analysis/cluster_process.py, started with the report when the process may
    use two cores; a final report that finds it still importing fits in its own process: the
    table says in how many runs the helper gave the clusters);
  - with, late import: the same without that helper (the final report imports scikit-learn in
    the run's process, as before cluster_process existed);
  - with, helper forced: the helper started even on one core (what it costs there, --cpus 0);
  - with, helper at normal priority (nice0): the helper imports without lowering its priority
    (what nice 19 costs or saves when other processes keep the cores busy);
  - with UMAP forced: choose_embedding always answers UMAP, the cost before the choice (skipped
    with --no-umap).
--cpus pins every demo (and so its helper) to those cores, e.g. --cpus 0 for a 1-core machine.
Measured per run: the process's wall time and CPU time (user + system, from the child's rusage,
which includes the helper's: the demo waits for it; less sensitive than wall time to other
processes on the cores), the CPU that other processes used meanwhile (the machine's busy time
from /proc/stat less the demo's own, in cores: how noisy that run's wall time is), the run's own
time (run.json
"seconds") and, in the runs with the analyses, the seconds of each analysis step inside the
final report update. Reported as medians over the rounds and as the ratio with / without, and
the paired ratio again over the quiet rounds only (no run of the round shared the machine with
more than QUIET_OTHERS cores of other work). --quiet-wait waits, before each demo, up to that many
seconds for a second in which the machine is idle but for QUIET_OTHERS cores, so that more rounds
are quiet on a shared machine.

    .venv/bin/python benchmarks/bench_analysis.py [--repeats 5] [--no-umap] [--cpus 0] [--modes without,late,helper]
        [--update-doc docs/benchmarks.md]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import git_commit, load_average, machine_line, write_section  # noqa: E402

log = logging.getLogger("bench_analysis")
SECTION = "## Run analyses: cost in the demo (bench_analysis.py)"
INTRO = ("What the analyses (influence.json, weight_map.json and their plots) add to the toy demo's wall "
         "time; the issue's bound is 5%. The ways and measures: the docstring of benchmarks/bench_analysis.py.")
# The subsection a run writes: the machine's cores as users run the demo, or the cores --cpus names.
ALL_CORES = "### All cores"
ROOT = Path(__file__).resolve().parents[1]
TIMINGS = "bench_timings.json"
MODES = ("without", "with", "late", "helper", "nice0", "umap")
# Other processes' CPU, in cores, below which a run counts as quiet.
QUIET_OTHERS = 0.3

# The code each demo process runs: the CLI's own main() with the mode's patches, plus timers
# around the analysis steps (a perf_counter pair each: nothing measurable).
RUNNER = r"""
import json, sys, time
from pathlib import Path
mode, runs_dir = sys.argv[1], Path(sys.argv[2])
from lib_pinning import cli
from lib_pinning.analysis import cluster_process, influence, weight_map
from lib_pinning.report import analysis
timings = {}

def timed(name, function):
    def wrapper(*args, **kwargs):
        started = time.perf_counter()
        try:
            return function(*args, **kwargs)
        finally:
            timings[name] = timings.get(name, 0.0) + time.perf_counter() - started
    return wrapper

helpers, answered = [], []
if mode in ("without", "late"):
    cluster_process.ClusterProcess.start = classmethod(lambda cls: None)
else:
    if mode == "helper":
        cluster_process._spare_core = lambda: True
    if mode == "nice0":
        lowering = f"os.setpriority(os.PRIO_PROCESS, 0, {cluster_process.IMPORT_NICE})"
        assert lowering in cluster_process._HELPER
        cluster_process._HELPER = cluster_process._HELPER.replace(lowering, "pass")
    spawn = cluster_process.ClusterProcess.spawn.__func__
    cluster_process.ClusterProcess.spawn = classmethod(lambda cls: helpers.append(1) or spawn(cls))
    ask = cluster_process.ClusterProcess.labels
    cluster_process.ClusterProcess.labels = lambda self, v, p: (lambda r: answered.append(r is not None) or r)(ask(self, v, p))
if mode == "without":
    analysis.RunAnalysis.refresh = lambda self, store, signature: None
    cli._influence_lines = lambda run_dir: []
else:
    if mode == "umap":
        weight_map.choose_embedding = lambda run_seconds: weight_map.UMAP
    analysis.RunAnalysis.refresh = timed("analysis (all)", analysis.RunAnalysis.refresh)
    influence.write_influence = timed("influence", influence.write_influence)
    weight_map.write_weight_map = timed("weight map", weight_map.write_weight_map)
    weight_map.cluster = timed("weight map: HDBSCAN (with the scikit-learn import, or the wait for the helper)", weight_map.cluster)
    weight_map.embed = timed("weight map: UMAP (with its import and compile)", weight_map.embed)
    analysis.RunAnalysis._plot = staticmethod(timed("plots", analysis.RunAnalysis._plot))
code = cli.main(["demo", "--runs-dir", str(runs_dir)])
(runs_dir / "bench_timings.json").write_text(json.dumps({"timings": timings, "helpers": len(helpers), "answered": any(answered)}))
sys.exit(code)
"""


@dataclass
class DemoRun:
    wall: float
    cpu: float
    run_seconds: float
    batches: int
    embedding: str | None
    timings: dict[str, float]
    helpers: int  # helper processes started (cluster_process: none on one core)
    answered: bool  # the helper gave the clusters (it was ready when the final report asked)
    load: float | None  # the 1-minute load average as the run started
    others: float | None = None  # cores' worth of other processes' CPU during the run (/proc/stat)


def _machine_busy() -> float | None:
    """CPU seconds all cores have been busy since boot (/proc/stat; None where there is none)."""
    try:
        fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    except (OSError, ValueError):
        return None
    # user nice system idle iowait irq softirq steal: all but idle and iowait are busy.
    return (sum(fields) - fields[3] - fields[4]) / os.sysconf("SC_CLK_TCK")


def wait_quiet(limit: float) -> bool:
    """Wait up to `limit` seconds for a second in which other processes use at most QUIET_OTHERS
    cores; whether one came."""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        before = _machine_busy()
        time.sleep(1.0)
        after = _machine_busy()
        if before is None or after is None or after - before <= QUIET_OTHERS:
            return True
    return False


def demo_run(runs_dir: Path, mode: str, cpus: set[int] | None = None) -> DemoRun:
    runs_dir.mkdir(parents=True)
    load = load_average()
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    busy_before = _machine_busy()
    started = time.perf_counter()
    pin = (lambda: os.sched_setaffinity(0, cpus)) if cpus else None
    subprocess.run([sys.executable, "-c", RUNNER, mode, str(runs_dir)], cwd=ROOT, env=env, check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, preexec_fn=pin)
    wall = time.perf_counter() - started
    busy_after = _machine_busy()
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    others = (None if busy_before is None or busy_after is None
              else max(0.0, busy_after - busy_before - cpu) / wall)
    (run_dir,) = [p for p in runs_dir.iterdir() if p.is_dir()]
    info = json.loads((run_dir / "run.json").read_text())
    map_file = run_dir / "weight_map.json"
    embedding = json.loads(map_file.read_text())["method"]["embedding"] if map_file.is_file() else None
    measured = json.loads((runs_dir / TIMINGS).read_text())
    return DemoRun(
        wall=wall, cpu=cpu,
        run_seconds=float(info["seconds"]), batches=int(info["batches"]), embedding=embedding,
        timings=measured["timings"], helpers=int(measured["helpers"]), answered=bool(measured.get("answered")),
        load=load, others=others,
    )


def _median(runs: list[DemoRun], attribute: str) -> float:
    return statistics.median(getattr(r, attribute) for r in runs)


def section(rounds: list[dict[str, DemoRun]], modes: list[str], cores: int) -> str:
    by_mode = {m: [r[m] for r in rounds] for m in modes}
    without = by_mode["without"]
    labels = {"without": "without the analyses", "with": "with the analyses (as shipped)",
              "late": "with the analyses, scikit-learn imported late", "helper": "with the analyses, helper forced",
              "nice0": "with the analyses, helper at normal priority",
              "umap": "with the analyses, UMAP forced"}
    lines = [
        "| demo | wall time | CPU time | wall / without | CPU / without | paired wall ratio | paired, quiet rounds | run's own time | other processes' CPU | embedding | clusters fitted by the helper |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|---|",
    ]
    quiet = [r for r in rounds if all(run.others is not None and run.others <= QUIET_OTHERS for run in r.values())]
    for mode in modes:
        runs = by_mode[mode]
        paired = statistics.median(r.wall / w.wall for r, w in zip(runs, without))
        paired_quiet = (f"{statistics.median(r[mode].wall / r['without'].wall for r in quiet):.3f} ({len(quiet)})"
                        if quiet else "– (0)")
        others = [r.others for r in runs if r.others is not None]
        others_text = f"{statistics.median(others):.2f} cores (up to {max(others):.2f})" if others else "–"
        embeddings = ", ".join(sorted({str(r.embedding) for r in runs})) if mode != "without" else "–"
        helped = (f"{sum(r.answered for r in runs)} of {len(runs)} runs (started in {sum(r.helpers > 0 for r in runs)})"
                  if mode in ("with", "helper", "nice0", "umap") else "–")
        lines.append(
            f"| {labels[mode]} | {_median(runs, 'wall'):.2f} s | {_median(runs, 'cpu'):.2f} s "
            f"| {_median(runs, 'wall') / _median(without, 'wall'):.3f} | {_median(runs, 'cpu') / _median(without, 'cpu'):.3f} "
            f"| {paired:.3f} | {paired_quiet} | {_median(runs, 'run_seconds'):.2f} s | {others_text} | {embeddings} | {helped} |"
        )
    # The steps' columns: each way with the analyses, and the runs of a way with a helper split by
    # whether it answered (its clusters come from the helper) or not (imported here): a median over
    # both would describe neither.
    columns: list[tuple[str, list[DemoRun]]] = []
    for mode in modes:
        if mode == "without":
            continue
        runs = by_mode[mode]
        answered = [r for r in runs if r.answered]
        if mode in ("with", "helper", "nice0", "umap") and 0 < len(answered) < len(runs):
            columns.append((f"{labels[mode]}, helper answered ({len(answered)} runs)", answered))
            columns.append((f"{labels[mode]}, not ({len(runs) - len(answered)} runs)", [r for r in runs if not r.answered]))
        else:
            columns.append((labels[mode], runs))
    lines += ["", "Seconds of each analysis step inside the final report update (medians over the rounds):", "",
              "| step | " + " | ".join(name for name, _ in columns) + " |",
              "|---|" + "---:|" * len(columns)]
    steps = sorted({k for _, runs in columns for r in runs for k in r.timings})
    for step in steps:
        cells = []
        for _, runs in columns:
            values = [r.timings[step] for r in runs if step in r.timings]
            cells.append(f"{statistics.median(values):.3f} s" if values else "–")
        lines.append(f"| {step} | " + " | ".join(cells) + " |")
    # The analysis step's own seconds against its run's wall time: measured inside each run, so
    # load on the machine scales both alike, where the ratio of two runs' wall times also carries
    # the difference in load between them.
    shares = []
    for name, runs in columns:
        values = [r.timings["analysis (all)"] / r.wall for r in runs if "analysis (all)" in r.timings]
        if values:
            shares.append(f"{name}: median {statistics.median(values):.1%} (from {min(values):.1%} to {max(values):.1%})")
    if shares:
        lines += ["", "The analysis step's share of its own run's wall time: " + "; ".join(shares) + "."]
    loads = sorted(r.load for m in modes for r in by_mode[m] if r.load is not None)
    if loads:
        lines += ["", f"1-minute load average as each demo started: {loads[0]:.1f} to {loads[-1]:.1f}, "
                      f"median {statistics.median(loads):.1f} (the machine's {os.cpu_count()} cores; the demos ran on {cores})."]
    batches = sorted({r.batches for m in modes for r in by_mode[m]})
    lines += ["", f"Every run generated {', '.join(map(str, batches))} batches (the analyses add none)."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=5, help="rounds of the demo runs")
    parser.add_argument("--no-umap", action="store_true", help="skip the runs with UMAP forced (35 s each)")
    parser.add_argument("--cpus", default=None, help="comma-separated cores every demo is pinned to (e.g. 0)")
    parser.add_argument("--modes", default=",".join(MODES), help=f"comma-separated ways, of {', '.join(MODES)}")
    parser.add_argument("--quiet-wait", type=float, default=0.0,
                        help="seconds to wait before each demo for the machine to be quiet (other processes' CPU)")
    parser.add_argument("--update-doc", type=Path, default=None, help="write the section into this file")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    # The demo processes run with one torch thread (the CLI sets it); so does this one, whose
    # machine line reports the count.
    torch.set_num_threads(1)
    modes = [m for m in args.modes.split(",") if not (args.no_umap and m == "umap")]
    if "without" not in modes or not set(modes) <= set(MODES):
        parser.error(f"--modes: 'without' and ways of {', '.join(MODES)}")
    cpus = {int(c) for c in args.cpus.split(",")} if args.cpus else None
    cores = len(cpus) if cpus else len(os.sched_getaffinity(0))
    load_before = load_average()
    started = time.perf_counter()
    rounds: list[dict[str, DemoRun]] = []
    with tempfile.TemporaryDirectory() as tmp:
        demo_run(Path(tmp) / "warm-up", "without", cpus)  # the OS's file cache, Python's bytecode caches
        for n in range(args.repeats):
            results = {}
            # Each round in another order, so that no way always runs first (after the previous
            # round's slowest) or last.
            for mode in modes[n % len(modes):] + modes[:n % len(modes)]:
                if args.quiet_wait > 0 and not wait_quiet(args.quiet_wait):
                    log.info("round %d, %s: the machine stayed busy for %.0f s; running anyway", n + 1, mode, args.quiet_wait)
                results[mode] = demo_run(Path(tmp) / f"round-{n}-{mode}", mode, cpus)
                log.info("round %d, %s: wall %.2f s, cpu %.2f s, others %.2f cores", n + 1, mode, results[mode].wall,
                         results[mode].cpu, results[mode].others or 0.0)
            rounds.append(results)
    load_after = load_average()
    argv_text = " ".join(argv if argv is not None else sys.argv[1:])
    body = "\n".join([
        f"Command: `.venv/bin/python benchmarks/bench_analysis.py{(' ' + argv_text) if argv_text else ''}` at commit "
        f"{git_commit()} ({args.repeats} interleaved rounds, each demo in a fresh process; "
        f"{time.perf_counter() - started:.0f} s in all).",
        "",
        f"Machine: {machine_line('umap-learn', 'scikit-learn', 'numba')}.",
        "",
        f"1-minute load average {load_before:.1f} before and {load_after:.1f} after the run"
        + (" (other processes shared the cores: CPU time is the steadier measure)."
           if max(load_before or 0, load_after or 0) > 1.5 else ".")
        if load_before is not None and load_after is not None else "",
        "",
        section(rounds, modes, cores),
    ])
    sys.stdout.write(body + "\n")
    if args.update_doc is not None:
        heading = f"### Pinned to core{'s' if len(cpus or ()) > 1 else ''} {args.cpus} (--cpus {args.cpus})" if cpus else ALL_CORES
        write_section(args.update_doc, SECTION, {heading: body}, intro=INTRO)
        log.info("updated %s", args.update_doc)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
