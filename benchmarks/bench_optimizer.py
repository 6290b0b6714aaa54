"""Evaluations needed to pin a prompt on the toy model: our defaults vs the original configuration.

For each configuration and CMA seed, a full pinning run (the real loop, store and all) records
every evaluated batch; the measure is the number of evaluations until the best batch so far has
a within-batch variety (mean + std of FLIP over all pairs of its images) at or below a target.
Variety is read from each record's pair values, so configurations that optimise another loss
(the original's all-pairs loss against the baseline targets) are judged by the same yardstick.

Configurations:
- original: BPE-token units, centroid uniform in [-0.25, 0.25], sigma 0.05, default lambda,
  all-pairs loss (the original tool's settings);
- ours: the PinningOptions defaults;
- random search: offsets drawn uniformly in [-R, R] per unit (word units), same budget.

    python benchmarks/bench_optimizer.py [--seeds 5] [--budget 500] [--target-fraction 0.35]
                                         [--update-doc docs/benchmarks.md]

With --update-doc the printed section replaces "## CMA-ES configuration (bench_optimizer.py)" in
the given page (command, machine, commit and run time included).  The default setting takes about
8 minutes on 2 shared cores; --seeds 2 --budget 200 is a quick check (not for the page).
"""

from __future__ import annotations

import argparse
import logging
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import git_commit, load_average, machine_line, write_section  # noqa: E402
from lib_pinning.generator import GenerationRequest, ToyGenerator, ToySettings  # noqa: E402
from lib_pinning.objectives.pinning import PinningObjective  # noqa: E402
from lib_pinning.optimizer import CmaSettings  # noqa: E402
from lib_pinning.options import PinningOptions  # noqa: E402
from lib_pinning.prompt import PromptSpace  # noqa: E402
from lib_pinning.evaluation import quantize  # noqa: E402
from lib_pinning.run import PinningRun, derive_seeds  # noqa: E402
from lib_pinning.store import RunStore  # noqa: E402

PROMPT = "a red circle, blue square, simple shapes, soft light"
NEGATIVE = "blurry"
SETTINGS = ToySettings(steps=20, cfg_scale=1.5)
BATCH = 8

ORIGINAL = dict(granularity="token", centroid_radius=0.25, initial_std=0.05, flip_loss="all_pairs")


def variety(values: list[float]) -> float:
    return float(np.mean(values) + np.std(values))


def candidate_variety(record, n_targets: int) -> float:
    """Mean + std of FLIP over the record's candidate-candidate pairs (indices count targets first)."""
    if record.status != "ok":
        return float("inf")
    evaluation = next(iter(record.objectives.values()))
    values = [v for (a, b), v in zip(evaluation["pairs"], evaluation["pair_values"]) if a >= n_targets]
    return variety(values)


@dataclass
class Outcome:
    """One search: evaluations until the target (None: not within the budget), the best variety,
    and how far the first solution moved the weights (RMS offset; the prompt itself is 0)."""

    reached: int | None
    best: float
    offset: float | None


def rms(x: Sequence[float]) -> float:
    return float(np.sqrt(np.mean(np.square(x)))) if len(x) else 0.0


def evaluations_to_target(run_dir: Path, target: float) -> Outcome:
    store = RunStore.open(run_dir)
    n_targets = len(store.read_run()["targets"])
    best = float("inf")
    reached, offset = None, None
    for count, record in enumerate(store.iter_individuals(), start=1):
        best = min(best, candidate_variety(record, n_targets))
        if reached is None and best <= target:
            reached, offset = count, rms(record.x_evaluated)
    return Outcome(reached, best, offset)


def pinning_run(options: PinningOptions, seed: int, runs_dir: Path) -> Path:
    run = PinningRun.start(
        generator=ToyGenerator(SETTINGS), prompt=PROMPT, negative_prompt=NEGATIVE,
        seeds=derive_seeds(1000 + seed, BATCH), options=options, runs_dir=runs_dir,
    )
    return run.execute().run_dir


def random_search(seed: int, budget: int, radius: float, target: float) -> Outcome:
    generator = ToyGenerator(SETTINGS)
    space = PromptSpace(PROMPT, NEGATIVE, "word")
    objective = PinningObjective(None, "variety")
    seeds = derive_seeds(1000 + seed, BATCH)
    rng = np.random.default_rng(seed)
    best = float("inf")
    for count in range(1, budget + 1):
        x = np.zeros(space.dim) if count == 1 else rng.uniform(-radius, radius, space.dim)
        prompt, negative = space.render(x)
        images = quantize(generator.generate(GenerationRequest(prompt, negative, seeds)).images)
        best = min(best, objective.score_images(images).value)
        if best <= target:
            return Outcome(count, best, rms(x))
    return Outcome(None, best, None)


def unpinned_variety(seed: int) -> float:
    images = ToyGenerator(SETTINGS).generate(GenerationRequest(PROMPT, NEGATIVE, derive_seeds(1000 + seed, BATCH))).images
    return PinningObjective(None, "variety").score_images(quantize(images)).value


def summarise(name: str, outcomes: list[Outcome], budget: int) -> tuple[str, float]:
    reached = [o for o in outcomes if o.reached is not None]
    # A run that never reached the target counts as the whole budget: a lower bound on its cost.
    median = statistics.median(o.reached if o.reached is not None else budget for o in outcomes)
    missing = len(outcomes) - len(reached)
    cell = f"{median:.0f}" + (f" (at least; {missing} not reached in {budget})" if missing else "")
    offsets = [o.offset for o in reached if o.offset is not None]
    offset_cell = f"{statistics.median(offsets):.2f}" if offsets else "-"
    row = (
        f"| {name} | {len(reached)}/{len(outcomes)} | {cell} | "
        f"{', '.join('-' if o.reached is None else str(o.reached) for o in outcomes)} | "
        f"{statistics.median(o.best for o in outcomes):.3f} | {offset_cell} |"
    )
    return row, median


SECTION = "## CMA-ES configuration (bench_optimizer.py)"


def describe(name: str, options: PinningOptions, settings: CmaSettings) -> str:
    """A row label built from the options the run used, so the table cannot drift from the code."""
    start = (
        "start at the prompt" if options.centroid_radius == 0
        else f"centroid U[-{options.centroid_radius:g}, {options.centroid_radius:g}]"
    )
    return (
        f"{name}: {options.granularity} units, {start}, sigma {options.initial_std:g}, "
        f"{options.flip_loss} loss, CMA-ES N={settings.dim}, lambda={settings.lambda_}"
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--budget", type=int, default=500, help="evaluations per run at most")
    parser.add_argument("--target-fraction", type=float, default=0.35, help="target = fraction x unpinned variety")
    parser.add_argument(
        "--random-radius", type=float, nargs="+", default=[1.0, 0.35],
        help="random search offset ranges (0.35: about the spread of our first CMA-ES generation)",
    )
    parser.add_argument("--update-doc", type=Path, default=None, help="write the section into this file")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(1)
    started_all = time.perf_counter()
    load_before = load_average()
    # Read when the code was imported, before anything could change in the checkout meanwhile.
    code = git_commit()

    baselines = [unpinned_variety(s) for s in range(args.seeds)]
    baseline = statistics.mean(baselines)
    target = args.target_fraction * baseline

    rows = []
    medians = {}
    with tempfile.TemporaryDirectory() as tmp:
        for key, name, extra in (
            ("original", "original configuration", ORIGINAL), ("ours", "**our defaults**", {})
        ):
            started = time.perf_counter()
            options = PinningOptions(cli_log=False, **extra)
            settings = CmaSettings.resolve(options, PromptSpace(PROMPT, NEGATIVE, options.granularity).dim)
            generations = max(1, (args.budget - 1) // settings.lambda_)
            outcomes = [
                evaluations_to_target(
                    pinning_run(options.replace(cma_seed=seed, generations=generations), seed, Path(tmp)), target
                )
                for seed in range(args.seeds)
            ]
            row, medians[key] = summarise(describe(name, options, settings), outcomes, args.budget)
            rows.append(row)
            print(f"  {name}: {time.perf_counter() - started:.0f} s", file=sys.stderr)
    for radius in args.random_radius:
        outcomes = [random_search(seed, args.budget, radius, target) for seed in range(args.seeds)]
        row, medians[f"random {radius}"] = summarise(
            f"random search, word units, offsets U[-{radius:g}, {radius:g}]", outcomes, args.budget
        )
        rows.append(row)
    minutes = (time.perf_counter() - started_all) / 60
    load_after = load_average()

    command = "python benchmarks/bench_optimizer.py " + " ".join(argv if argv is not None else sys.argv[1:])
    load = (
        f"; 1-minute load average {load_before:.1f} before, {load_after:.1f} after (other jobs shared the "
        "cores, which affects the time, not the counts)" if load_before is not None and load_after is not None else ""
    )
    lines = [
        f"Command: `{command.strip()}` (commit {code}); {minutes:.1f} min.",
        "",
        f"Machine: {machine_line()}{load}.",
        "",
        f"Toy model, prompt `{PROMPT}`, negative `{NEGATIVE}`, batch {BATCH} (seeds 1000+s...), "
        f"{SETTINGS.steps} steps, cfg {SETTINGS.cfg_scale:g}; CMA seeds 0..{args.seeds - 1}, at most "
        f"{args.budget} batches per search. Each CMA-ES search is a full pinning run (the real loop and store). "
        "The yardstick for every configuration is the same: the number of batches evaluated until the best "
        f"batch so far has a within-batch variety (mean + std of FLIP over its {BATCH * (BATCH - 1) // 2} image "
        f"pairs) at or below {args.target_fraction:.0%} of the unpinned prompt's ({target:.3f} against "
        f"{baseline:.3f}, the mean over the seeds). The last column is how far the first solution moved the "
        "weights (RMS of the offsets; 0 = the prompt as written). A search that never reached the target "
        "counts as the whole budget in the median, which is then a lower bound.",
        "",
        "| search | reached | median batches to target | per CMA seed | median best variety "
        "| median RMS weight change of the first solution |",
        "|---|---|---|---|---|---|",
        *rows,
        "",
        f"Median batches to target, original configuration / our defaults: "
        f"**{medians['original'] / medians['ours']:.1f}x**"
        + (" (a lower bound: the original missed the target in some runs)." if any(
            "not reached" in r for r in rows[:1]) else "."),
    ]
    body = "\n".join(lines)
    print(body)
    if args.update_doc is not None:
        write_section(args.update_doc, SECTION, body=body)
        logging.getLogger("bench_optimizer").warning("updated %s", args.update_doc)


if __name__ == "__main__":
    main()
