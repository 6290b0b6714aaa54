"""Pinning on the toy model with its failure modes: the original tool, this project before issue 10, now.

Every run is a full pinning run (the real loop, guard, stopping rule, repeat cache and store) on the
toy model with over-emphasis frying and the NaN region on (lib_pinning/toy_failures.py), batch 8, over
prompts of four kinds (tight, loose, with a negative prompt, long: 40+ word units) and 5 seeds
(image seeds and CMA seed). Configurations, all set through `PinningOptions`:

- original: the original tool's settings: token units, the all-pairs loss, initial std 0.05,
  a random start in [-0.25, 0.25], every generation, no guard, weights unbounded (0 to 5, past the
  toy's NaN region);
- before: this project's defaults before issue 10: word units, the variety loss, std 0.2, no guard,
  no stopping rule, one weight per unit, weights unbounded (0 to 5);
- now: today's defaults (`PinningOptions()`);
- now, all generations: today's defaults without the stopping rule, the reference for "the loss a
  full run reaches";
- random search: word units within today's weight range, offsets uniform in [-R, R] per unit,
  scored like today's defaults (nearest-mode loss + guard), as many batches as today's defaults
  used on the same prompt and seed.

Measured per run: batches generated (repeats of an already generated prompt cost nothing), as a
share of the configuration's full generation count; the best's loss relative to the baseline's, in
the configuration's own loss and in a common one (the nearest-mode loss against the baseline
images); the best's variety (mean + std of FLIP over the batch's image pairs) relative to the
baseline's; whether the best batch is degenerate (the guard's verdict, recorded whether or not the
configuration acts on it); and the batches until a clean batch with at most half the baseline's
variety was generated. For the long prompts also the variety of the run's best after at most 150
batches.

    python benchmarks/bench_pinning.py [--quick] [--seeds 5] [--jobs 2] [--write] [--results FILE]
    python benchmarks/bench_pinning.py --from-results FILE [--write]   # the tables of a saved run

The full run (8 prompts x 5 seeds) takes about an hour on 2 cores, most of it in the original
configuration's 1025-batch runs of the long prompts.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import multiprocessing
import re
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import DOC, load_average, machine_line, usable_cores, write_section  # noqa: E402
from lib_pinning import guard  # noqa: E402
from lib_pinning.bounds import WeightRange  # noqa: E402
from lib_pinning.generator import Batch, GenerationRequest, ToyGenerator, ToySettings  # noqa: E402
from lib_pinning.objectives.compose import build_objective  # noqa: E402
from lib_pinning.objectives.pinning import PinningObjective  # noqa: E402
from lib_pinning.options import PinningOptions  # noqa: E402
from lib_pinning.prompt import PromptSpace  # noqa: E402
from lib_pinning.evaluation import quantize  # noqa: E402
from lib_pinning.run import PinningRun, derive_seeds  # noqa: E402
from lib_pinning.stopping import (  # noqa: E402
    GenerationOutcome, StopDecision, StopMonitor, StopRules, default_stagnation,
)
from lib_pinning.store import IndividualRecord, RunStore  # noqa: E402

log = logging.getLogger("bench_pinning")

SETTINGS = ToySettings(steps=20, cfg_scale=1.5)
BATCH = 8
LONG_BUDGET = 150  # batches within which a long prompt should lose 30% of its variety
RANDOM_RADIUS = 0.5

LONG_1 = (
    "masterpiece, best quality, ultra detailed, sharp focus, red circle, soft light, studio lighting, "
    "simple background, gradient backdrop, centered composition, vivid colors, high contrast, clean "
    "lines, smooth edges, flat design, minimal style, geometric art, bold outline, digital painting, "
    "award winning, professional render, cinematic mood, warm tones"
)
LONG_2 = (
    "score 9, score 8 up, score 7 up, source anime, rating safe, purple cross, yellow triangle, solo shape, "
    "looking at viewer, dynamic angle, depth of field, bokeh, rim light, volumetric fog, glossy "
    "surface, reflective floor, pastel palette, dreamy atmosphere, highres, absurdres"
)


@dataclass(frozen=True)
class Prompt:
    kind: str  # tight, loose, negative, long
    prompt: str
    negative: str = ""


PROMPTS: tuple[Prompt, ...] = (
    Prompt("tight", "red circle"),
    Prompt("tight", "blue square, simple shapes"),
    Prompt("loose", "red circle, blue square, soft light", "blurry"),
    Prompt("loose", "a photo of a red circle, detailed"),
    Prompt("negative", "yellow triangle, soft light", "circle, blurry"),
    Prompt("negative", "purple cross, green ring, studio lighting, high quality", "ugly, low quality, blurry"),
    Prompt("long", LONG_1, "blurry, lowres, worst quality"),
    Prompt("long", LONG_2, "lowres, bad anatomy, worst quality, jpeg artifacts"),
)
QUICK_PROMPTS = (0, 2, 4, 6)  # one of each kind

# Options of each configuration: unbounded means up to the option's maximum, 5, past the toy's
# NaN region (3.0 to 3.5), as the original's |base + x| was.
UNBOUNDED = dict(weight_max=5.0, guard=False, stop_early=False, search_space="units")
CONFIGS: dict[str, dict[str, Any]] = {
    "original": dict(granularity="token", flip_loss="all_pairs", initial_std=0.05, centroid_radius=0.25, **UNBOUNDED),
    "before": dict(flip_loss="variety", **UNBOUNDED),
    "now": {},
    "now, all generations": dict(stop_early=False),
}
LABELS = {
    "original": "original tool (token units, all-pairs loss, std 0.05, radius 0.25, all generations, no guard)",
    "before": "defaults before issue 10 (word units, variety loss, no guard, no stop, unbounded weights)",
    "now": "defaults now (nearest-mode loss, guard, stopping rule, weights 0-2, groups above 40 units)",
    "now, all generations": "defaults now without the stopping rule (all generations)",
    "random": f"random search, word units, offsets U[-{RANDOM_RADIUS}, {RANDOM_RADIUS}], as many batches as 'now'",
}


@dataclass
class Outcome:
    """One run's figures (see the module docstring)."""

    config: str
    prompt: int
    seed: int
    units: int
    batches: int
    full: int  # batches of the configuration's full generation count
    stop: str
    best_loss: float  # the best's loss, the configuration's own
    own_ratio: float  # best loss / baseline loss, the configuration's own loss
    mode_ratio: float  # nearest-mode loss of the best / of the baseline
    variety_ratio: float  # variety of the best / of the baseline
    degenerate: bool
    fry: float  # the toy's frying of the best batch's prompt (0 clean .. 1 a colour field)
    nan_share: float  # the toy's share of NaN images for the best batch's prompt
    to_half: int | None  # batches until a clean batch with <= half the baseline variety
    variety_at_budget: float  # variety of the best within LONG_BUDGET batches / baseline's
    seconds: float
    # Full-length runs only: where the stopping rule would have ended them with each Stagnation
    # value (str(value) -> [batches, best total, baseline total]); see `replay_stopping`.
    replay: dict[str, list[float]] | None = None


def toy_failure(prompt: str, negative: str) -> dict[str, float]:
    """The toy's ground truth for a prompt pair: how fried its images are, how many are NaN. The
    guard sees only the images, and a half-fried batch (saturated, blurred, drawn toward one colour
    field, but not yet flat or clipped) passes it; the toy knows what it did."""
    failure = ToyGenerator(SETTINGS).model.failure_modes(prompt, negative)
    return {"fry": failure.fry, "nan_share": failure.nan_share}


def seeds_of(seed: int) -> tuple[int, ...]:
    return derive_seeds(1000 + 97 * seed, BATCH)


def variety_of(record: IndividualRecord, n_targets: int) -> float:
    """Mean + std of FLIP over the record's image pairs (indices count the targets first)."""
    evaluation = next(iter(record.objectives.values()))
    values = [v for (a, _), v in zip(evaluation["pairs"], evaluation["pair_values"]) if a >= n_targets]
    return float(np.mean(values) + np.std(values))


class Yardstick:
    """The common measures of one (prompt, seed): variety, nearest-mode loss against the baseline."""

    def __init__(self, baseline_images: torch.Tensor) -> None:
        self.mode = PinningObjective(baseline_images, "nearest_mode")
        baseline = self.mode.score_images(baseline_images)
        self.baseline_mode = baseline.value
        self.baseline_variety = baseline.components["variety"]

    def mode_ratio(self, images: torch.Tensor) -> float:
        return self.mode.score_images(images).value / self.baseline_mode


def baseline_images(prompt: Prompt, seed: int) -> torch.Tensor:
    batch = ToyGenerator(SETTINGS).generate(GenerationRequest(prompt.prompt, prompt.negative, seeds_of(seed)))
    return quantize(guard.sanitize(batch.images, batch.nonfinite)[0])


REPLAYED_STAGNATION = (3, 4, 5, 6, 8, 10)


class RecordingMonitor(StopMonitor):
    """The run's own monitor, which also keeps what it observed and the batches generated by then."""

    def __init__(self, run: PinningRun) -> None:
        super().__init__(run.stop_rules)
        self.run = run
        self.observed: list[tuple[GenerationOutcome, int]] = []

    def observe(self, outcome: GenerationOutcome) -> StopDecision | None:
        self.observed.append((outcome, self.run.batches))
        return super().observe(outcome)


def replay_stopping(
    observed: Sequence[tuple[GenerationOutcome, int]], rules: StopRules, baseline: float
) -> dict[str, list[float]]:
    """Where the stopping rule (on, with each Stagnation value) would have ended a full-length run:
    the run is deterministic and the rule does not steer the search, so replaying its generations
    is the same as running it with the rule on."""
    replay = {}
    for stagnation in REPLAYED_STAGNATION:
        monitor = StopMonitor(replace(rules, enabled=True, stagnation=stagnation))
        monitor.restart(baseline)
        for outcome, batches in observed:
            if monitor.observe(outcome) is not None:
                break
        replay[str(stagnation)] = [batches, outcome.best_so_far, baseline]
    outcome, batches = observed[-1]
    replay["all"] = [batches, outcome.best_so_far, baseline]
    return replay


def pinning_run(config: str, index: int, seed: int, runs_dir: Path) -> Outcome:
    prompt = PROMPTS[index]
    options = PinningOptions(cli_log=False, cma_seed=seed, **CONFIGS[config])
    started = time.perf_counter()
    run = PinningRun.start(
        generator=ToyGenerator(SETTINGS), prompt=prompt.prompt, negative_prompt=prompt.negative,
        seeds=seeds_of(seed), options=options, runs_dir=runs_dir,
    )
    run.monitor = monitor = RecordingMonitor(run)
    result = run.execute()
    seconds = time.perf_counter() - started
    store = RunStore.open(result.run_dir)
    info = store.read_run()
    n_targets = len(info["targets"])
    records = [r for r in store.iter_individuals() if r.status == "ok"]
    yardstick = Yardstick(store.load_batch_images(result.baseline))
    base_variety = yardstick.baseline_variety
    generated, to_half = 0, None
    best_in_budget: IndividualRecord | None = None
    for record in records:
        if record.repeat_of is None:
            generated += 1
        if to_half is None and not record.degenerate and variety_of(record, n_targets) <= 0.5 * base_variety:
            to_half = generated
        if generated <= LONG_BUDGET and (best_in_budget is None or record.total < best_in_budget.total):
            best_in_budget = record
    assert best_in_budget is not None
    return Outcome(
        config=config, prompt=index, seed=seed, units=run.space.dim, batches=result.batches,
        full=1 + run.settings.generations * run.settings.lambda_, stop=result.stop_criterion,
        best_loss=result.best.loss, own_ratio=result.best.loss / result.baseline.loss if result.baseline.loss > 0 else math.nan,
        mode_ratio=yardstick.mode_ratio(store.load_batch_images(result.best)),
        variety_ratio=variety_of(result.best, n_targets) / base_variety,
        degenerate=result.best.degenerate, **toy_failure(result.best.prompt, result.best.negative_prompt), to_half=to_half,
        variety_at_budget=variety_of(best_in_budget, n_targets) / base_variety, seconds=seconds,
        replay=replay_stopping(monitor.observed, run.stop_rules, result.baseline.total) if config == "now, all generations" else None,
    )


def random_search(index: int, seed: int, budget: int) -> Outcome:
    """Offsets drawn uniformly, scored like today's defaults (nearest-mode loss + guard)."""
    prompt = PROMPTS[index]
    options = PinningOptions(cli_log=False)
    started = time.perf_counter()
    generator = ToyGenerator(SETTINGS)
    space = PromptSpace(prompt.prompt, prompt.negative, "word", weight_range=WeightRange(options.weight_min, options.weight_max))
    seeds = seeds_of(seed)
    targets = baseline_images(prompt, seed)
    objective = build_objective(options, targets, generator=generator)
    yardstick = Yardstick(targets)
    thresholds = guard.GuardThresholds.from_options(options)
    rng = np.random.default_rng(seed)
    # fitness, loss, variety, degenerate, images, (prompt, negative prompt)
    best: tuple[float, float, float, bool, torch.Tensor, tuple[str, str]] | None = None
    baseline_loss, to_half = math.nan, None
    best_in_budget = math.inf
    for count in range(1, budget + 1):
        x = np.zeros(space.dim) if count == 1 else rng.uniform(-RANDOM_RADIUS, RANDOM_RADIUS, space.dim)
        positive, negative = space.render(x)
        batch = generator.generate(GenerationRequest(positive, negative, seeds))
        images, nonfinite = guard.sanitize(batch.images, batch.nonfinite)
        images = quantize(images)
        verdict = guard.inspect(images, nonfinite, thresholds)
        scored = objective.score(Batch(images=images, seeds=seeds), x)
        variety = scored.components.get("flip_nearest_mode.variety", math.nan)
        fitness = scored.loss + guard.penalty(verdict.share_degenerate)
        degenerate = any(verdict.degenerate)
        if count == 1:
            baseline_loss = scored.loss
        if to_half is None and not degenerate and variety <= 0.5 * yardstick.baseline_variety:
            to_half = count
        if best is None or fitness < best[0]:
            best = (fitness, scored.loss, variety, degenerate, images, (positive, negative))
        if count <= LONG_BUDGET:
            best_in_budget = best[2]
    assert best is not None
    return Outcome(
        config="random", prompt=index, seed=seed, units=space.dim, batches=budget, full=budget, stop="budget",
        best_loss=best[1], own_ratio=best[1] / baseline_loss, mode_ratio=yardstick.mode_ratio(best[4]),
        variety_ratio=best[2] / yardstick.baseline_variety, degenerate=best[3], **toy_failure(*best[5]), to_half=to_half,
        variety_at_budget=best_in_budget / yardstick.baseline_variety, seconds=time.perf_counter() - started,
    )


def task(args: tuple[int, int, Sequence[str]]) -> list[Outcome]:
    """Every configuration on one (prompt, seed); random search last (its budget is 'now''s)."""
    index, seed, configs = args
    torch.set_num_threads(1)
    logging.basicConfig(level=logging.WARNING)
    logging.getLogger("lib_pinning").setLevel(logging.ERROR)  # "mostly degenerate" warnings of the old configs
    outcomes = []
    with tempfile.TemporaryDirectory() as tmp:
        for config in configs:
            if config != "random":
                outcomes.append(pinning_run(config, index, seed, Path(tmp)))
    if "random" in configs:
        now = next((o for o in outcomes if o.config == "now"), None)
        outcomes.append(random_search(index, seed, now.batches if now else 100))
    return outcomes


# ----------------------------------------------------------------------------------------------
# Summary
# ----------------------------------------------------------------------------------------------


def median(values: Iterable[float]) -> float:
    values = [v for v in values if not math.isnan(v)]
    return statistics.median(values) if values else math.nan


def to_half_cell(outcomes: Sequence[Outcome]) -> str:
    reached = [o.to_half for o in outcomes if o.to_half is not None]
    # A run that never got there counts as its whole run: a lower bound on its cost.
    med = median(o.to_half if o.to_half is not None else o.batches for o in outcomes)
    missing = len(outcomes) - len(reached)
    return f"{med:.0f}" + (f" ({len(reached)}/{len(outcomes)} reached)" if missing else f" ({len(reached)}/{len(outcomes)})")


def summary_row(name: str, outcomes: Sequence[Outcome]) -> str:
    degenerate = sum(o.degenerate for o in outcomes)
    failing = sum(o.fry > 0 or o.nan_share > 0 for o in outcomes)
    return (
        f"| {name} | {len(outcomes)} | {median(o.batches for o in outcomes):.0f} | "
        f"{median(o.full for o in outcomes):.0f} | {median(o.batches / o.full for o in outcomes):.0%} | "
        f"{median(o.own_ratio for o in outcomes):.2f} | {median(o.mode_ratio for o in outcomes):.2f} | "
        f"{median(o.variety_ratio for o in outcomes):.2f} | {degenerate}/{len(outcomes)} | "
        f"{failing}/{len(outcomes)} ({median(o.fry for o in outcomes):.2f}) | {to_half_cell(outcomes)} |"
    )


HEADER = (
    "| configuration | runs | batches (median) | full count (median) | batches / full count (median) "
    "| best / baseline, own loss | best / baseline, nearest-mode loss | best / baseline, variety "
    "| degenerate best (guard) | best in the failure region (toy; median fry) "
    "| batches to half the variety (median) |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
)


def kind_rows(outcomes: Sequence[Outcome], configs: Sequence[str]) -> list[str]:
    rows = []
    for kind in dict.fromkeys(p.kind for p in PROMPTS):
        for config in configs:
            chosen = [o for o in outcomes if o.config == config and PROMPTS[o.prompt].kind == kind]
            if chosen:
                rows.append(summary_row(f"{kind}: {config}", chosen))
    return rows


def long_rows(outcomes: Sequence[Outcome], configs: Sequence[str]) -> list[str]:
    rows = []
    for index, prompt in enumerate(PROMPTS):
        if prompt.kind != "long":
            continue
        for config in configs:
            chosen = [o for o in outcomes if o.config == config and o.prompt == index]
            if not chosen:
                continue
            removed = [1 - o.variety_at_budget for o in chosen]
            rows.append(
                f"| {index + 1} ({chosen[0].units} units) | {config} | "
                f"{median(removed):.0%} | {', '.join(f'{r:.0%}' for r in removed)} | "
                f"{sum(r >= 0.3 for r in removed)}/{len(removed)} |"
            )
    return rows


def replay_rows(outcomes: Sequence[Outcome]) -> list[str]:
    """The stopping rule replayed on the full-length runs with each Stagnation value."""
    full = [o for o in outcomes if o.replay]
    if not full:
        return []
    tolerance = PinningOptions().stop_tolerance
    rows = [
        "| Stagnation | batches / full count (median) | best / baseline loss, stopped (median) | "
        "best / baseline loss, all generations (median) | runs ending worse than all generations |",
        "|---:|---:|---:|---:|---:|",
    ]
    for stagnation in REPLAYED_STAGNATION:
        ends = [(o, o.replay[str(stagnation)]) for o in full]
        worse = sum(best > o.replay["all"][1] + tolerance for o, (_, best, _) in ends)
        rows.append(
            f"| {stagnation} | "
            f"{median(b / o.full for o, (b, _, _) in ends):.0%} | {median(best / base for _, (_, best, base) in ends):.3f} | "
            f"{median(o.replay['all'][1] / o.replay['all'][2] for o, _ in ends):.3f} | {worse}/{len(ends)} |"
        )
    return rows


def figures(outcomes: Sequence[Outcome]) -> list[str]:
    """The issue's required figures, each with whether it holds."""
    now = [o for o in outcomes if o.config == "now"]
    full = {(o.prompt, o.seed): o for o in outcomes if o.config == "now, all generations"}
    original = [o for o in outcomes if o.config == "original"]
    lines = []
    if now:
        degenerate = sum(o.degenerate for o in now)
        lines.append(f"- Degenerate best with today's defaults: {degenerate}/{len(now)} runs ({'met' if degenerate == 0 else 'NOT met'}).")
        by_config = {c: [o for o in outcomes if o.config == c] for c in dict.fromkeys(o.config for o in outcomes)}
        lines.append(
            "- Best batch in the toy's failure region (any frying or NaN, which the guard sees only once "
            "it is flat, black or clipped): "
            + ", ".join(f"{c} {sum(o.fry > 0 or o.nan_share > 0 for o in runs)}/{len(runs)}" for c, runs in by_config.items())
            + "."
        )
        share = median(o.batches / o.full for o in now)
        paired = [(o, full[(o.prompt, o.seed)]) for o in now if (o.prompt, o.seed) in full]
        if paired:
            # Losses closer than the stopping rule's tolerance (0.001) count as equal, as the rule counts them.
            tolerance = PinningOptions().stop_tolerance
            worse = sum(o.best_loss > f.best_loss + tolerance for o, f in paired)
            loss_now = median(o.own_ratio for o, _ in paired)
            loss_full = median(f.own_ratio for _, f in paired)
            met = share <= 0.4 and loss_now <= loss_full + tolerance
            lines.append(
                f"- Median batches with the stopping rule: {share:.0%} of the full generation count; median "
                f"best/baseline loss {loss_now:.3f} stopped vs {loss_full:.3f} with all generations ({worse}/"
                f"{len(paired)} runs ended more than {tolerance:g} worse than their full-length run) "
                f"({'met' if met else 'NOT met'}: at most 40% at an equal or better loss)."
            )
        removed = 1 - median(o.variety_ratio for o in now)
        lines.append(f"- Median share of the baseline variety removed: {removed:.0%} ({'met' if removed >= 0.5 else 'NOT met'}: at least 50%).")
    if original:
        lines.append(
            f"- Original configuration: degenerate best in {sum(o.degenerate for o in original)}/{len(original)} runs, "
            f"median {median(o.batches for o in original):.0f} batches, median variety removed "
            f"{1 - median(o.variety_ratio for o in original):.0%}."
        )
    long_now = [o for o in now if PROMPTS[o.prompt].kind == "long"]
    if long_now:
        removed = median(1 - o.variety_at_budget for o in long_now)
        lines.append(
            f"- Long prompts ({', '.join(sorted({str(o.units) for o in long_now}))} units), today's defaults: median "
            f"{removed:.0%} of the baseline variety removed within {LONG_BUDGET} batches ({'met' if removed >= 0.3 else 'NOT met'}: at least 30%)."
        )
        long_before = [o for o in outcomes if o.config == "before" and PROMPTS[o.prompt].kind == "long"]
        if long_before:
            lines.append(
                f"  The defaults before issue 10 reach a median {median(1 - o.variety_at_budget for o in long_before):.0%} "
                f"within {LONG_BUDGET} batches (degenerate best in {sum(o.degenerate for o in long_before)}/{len(long_before)})."
            )
    return lines


def commit() -> str:
    try:
        root = Path(__file__).resolve().parents[1]
        head = subprocess.run(["git", "-C", str(root), "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True)
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"], capture_output=True, text=True)
        return head.stdout.strip() + (" (with uncommitted changes)" if dirty.stdout.strip() else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--quick", action="store_true", help="4 prompts (one per kind) x 1 seed: a smoke run (about 6 min on 2 cores)"
    )
    parser.add_argument("--seeds", type=int, default=None, help="seeds per prompt (default 5; 1 with --quick)")
    parser.add_argument("--prompts", type=int, nargs="+", default=None, help="prompt numbers (1-based) to run")
    parser.add_argument("--configs", nargs="+", default=[*CONFIGS, "random"], choices=[*CONFIGS, "random"])
    parser.add_argument("--jobs", type=int, default=min(2, usable_cores()), help="worker processes")
    parser.add_argument("--write", action="store_true", help="write the results to docs/benchmarks.md")
    parser.add_argument("--results", type=Path, default=None, help="also save every run's figures here (JSON)")
    parser.add_argument(
        "--from-results", type=Path, default=None,
        help="summarise a --results file instead of running (its command line and times are kept)",
    )
    args = parser.parse_args(sys.argv[1:])
    if args.from_results is not None:
        saved = json.loads(args.from_results.read_text())
        report([Outcome(**o) for o in saved["outcomes"]], saved["meta"], write=args.write)
        return
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    torch.set_num_threads(1)  # as in the workers (and so the machine line says)
    seeds = args.seeds if args.seeds is not None else (1 if args.quick else 5)
    indices = [p - 1 for p in args.prompts] if args.prompts else list(QUICK_PROMPTS if args.quick else range(len(PROMPTS)))
    # The long prompts' runs take longest: start them first so the workers end together.
    tasks = sorted(((i, s, tuple(args.configs)) for i in indices for s in range(seeds)), key=lambda t: PROMPTS[t[0]].kind != "long")
    load_before = load_average()
    started = time.perf_counter()
    outcomes: list[Outcome] = []
    with multiprocessing.get_context("spawn").Pool(args.jobs) as pool:
        for done, result in enumerate(pool.imap_unordered(task, tasks), start=1):
            outcomes.extend(result)
            log.info("%d/%d (prompt %d, seed %d) %.0f s", done, len(tasks), result[0].prompt + 1, result[0].seed, time.perf_counter() - started)
            if args.results is not None:  # as it goes: a long run that breaks off keeps what it measured
                args.results.write_text(json.dumps({"outcomes": [asdict(o) for o in outcomes]}))
    meta = {
        "command": ("python benchmarks/bench_pinning.py " + " ".join(sys.argv[1:])).strip(),
        "commit": commit(),
        "machine": machine_line(),
        "jobs": args.jobs,
        "minutes": (time.perf_counter() - started) / 60,
        "load": [load_before, load_average()],
        "seeds": seeds,
        "configs": list(args.configs),
        "prompts": indices,
    }
    if args.results is not None:
        args.results.write_text(json.dumps({"meta": meta, "outcomes": [asdict(o) for o in outcomes]}, indent=1))
    report(outcomes, meta, write=args.write)


def report(outcomes: list[Outcome], meta: dict[str, Any], *, write: bool) -> None:
    """Print the tables (and write them to docs/benchmarks.md)."""
    meta = {**meta, "command": re.sub(r" --results \S+", "", meta["command"])}  # a scratch file: not the point
    outcomes.sort(key=lambda o: (o.prompt, o.seed, meta["configs"].index(o.config)))
    configs = [c for c in meta["configs"] if any(o.config == c for o in outcomes)]
    indices, seeds = meta["prompts"], meta["seeds"]

    table = [HEADER, *(summary_row(c, [o for o in outcomes if o.config == c]) for c in configs)]
    by_kind = [HEADER, *kind_rows(outcomes, configs)]
    long_table = [
        f"| long prompt | configuration | median variety removed within {LONG_BUDGET} batches | per seed | runs with at least 30% |",
        "|---|---|---:|---|---:|",
        *long_rows(outcomes, configs),
    ]
    runs = [
        "| prompt | kind | units | config | seed | batches | full | stop | own | mode | variety | degenerate | fry | to half | s |",
        "|---:|---|---:|---|---:|---:|---:|---|---:|---:|---:|---|---:|---:|---:|",
        *(
            f"| {o.prompt + 1} | {PROMPTS[o.prompt].kind} | {o.units} | {o.config} | {o.seed} | {o.batches} | {o.full} | "
            f"{o.stop} | {o.own_ratio:.3f} | {o.mode_ratio:.3f} | {o.variety_ratio:.3f} | {'yes' if o.degenerate else ''} | "
            f"{o.fry:.2f}{' NaN' if o.nan_share > 0 else ''} | {'-' if o.to_half is None else o.to_half} | {o.seconds:.0f} |"
            for o in outcomes
        ),
    ]
    legend = "\n".join(f"- {name}: {LABELS[name]}" for name in configs)
    prompts = "\n".join(
        f"{i + 1}. {p.kind}: `{p.prompt}`" + (f" / negative `{p.negative}`" if p.negative else "")
        for i, p in enumerate(PROMPTS) if i in indices
    )
    body = f"""
Machine: {meta["machine"]}; {meta["jobs"]} worker process(es), 1 torch thread each.
Command: `{meta["command"]}` (commit {meta["commit"]}); {meta["minutes"]:.1f} min.{(chr(10) + meta["note"]) if meta.get("note") else ""}
1-minute load average {meta["load"][0]:.1f} before and {meta["load"][1]:.1f} after the run (other processes
shared the cores: the batch counts and losses are exact, the times are not).

Toy model with its failure modes (frying from weight 1.5, NaN from 3.0), {SETTINGS.steps} Euler a
steps, cfg {SETTINGS.cfg_scale}, batch {BATCH}; {seeds} seeds per prompt (image seeds 1000 + 97 s
onward, CMA seed s). Prompts:

{prompts}

Configurations:

{legend}

"Own loss" is the configuration's own objective; "nearest-mode loss" and "variety" are the same
yardstick for all (the variety: mean + std of FLIP over the batch's image pairs; the nearest-mode
loss against the baseline images). "Degenerate best": the guard's verdict on the best batch (any
image black, flat, fried or NaN), recorded even where the configuration does not act on it.
"Best in the failure region": the toy's own account of the best prompt (`FailureModes`): any
frying (an emphasis weight past 1.5) or NaN images, with the median fry (0 clean, 0.5 half drawn
into the colour field, 1 the colour field); the guard flags a fried image only once it is
saturated, clipped and structureless, so a half-fried batch passes it.
"Batches to half the variety": batches generated until a clean batch with at most half the
baseline's variety; a run that never generated one counts as its whole run.

{chr(10).join(table)}

Required figures:

{chr(10).join(figures(outcomes))}

By prompt kind:

{chr(10).join(by_kind)}

{chr(10).join(long_table)}

The stopping rule replayed on the "now, all generations" runs with other Stagnation values (the
runs are deterministic and the rule does not steer the search, so a replay of their generations
ends where a run with the rule on ends); this is what the default Stagnation is chosen by
(`lib_pinning.stopping.default_stagnation`: {default_stagnation(16)} at 16 generations, {default_stagnation(32)} at 32):

{chr(10).join(replay_rows(outcomes))}

<details><summary>Every run</summary>

{chr(10).join(runs)}

</details>
"""
    print(body)
    if write:
        write_section(DOC, "## Pinning with failure modes (bench_pinning.py)", body=body)
        log.info("wrote %s", DOC)


if __name__ == "__main__":
    main()
