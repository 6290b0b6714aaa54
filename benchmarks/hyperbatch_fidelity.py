"""Fidelity of hyperbatch schedules: do they rank prompts the way plain batches do?

Pinning compares prompts by how their batches vary, so a hyperbatch is useful exactly as far as it
orders prompts like a plain batch of the same seeds. Two measures, both Spearman rank correlations
with the plain sampler, next to each schedule's model-row cost:

* variety: over `FIDELITY_PROMPTS` (toy prompts from tight to loose), the batch variety
  (`PinningObjective(None, "variety")`) averaged over several seed sets, hyperbatch vs plain;
* ranking: the pinning objective (nearest-mode loss against the run's baseline images) of the
  CMA-ES individuals of real toy runs, each individual re-sampled with the run's seeds under the
  schedule and plainly; one correlation per run, averaged.

Candidates are the named schedules plus a sweep of "front" plans (last split at a fraction q of
the steps, the other splits evenly before it, with and without the per-split noise refresh), so
the table is a cost / fidelity curve the default is picked from. `bench_hyperbatch.py --fidelity`
runs it and writes the table.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import math
import multiprocessing
import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from lib_pinning.generator import Batch, GenerationRequest, ToyGenerator, ToySettings
from lib_pinning.objectives.pinning import PinningObjective
from lib_pinning.options import PinningOptions
from lib_pinning.run import PinningRun
from lib_pinning.store import RunStore
from lib_pinning.toy import ToyModel
from pinning_samplers import SAMPLERS, GrowthPlan, plan_growth
from pinning_samplers.plan import FRONT_LAST_SPLIT, front_split_steps, growth_levels, sizes_from_splits

logger = logging.getLogger("bench_hyperbatch.fidelity")

FIDELITY_PROMPTS: tuple[tuple[str, str, str], ...] = (
    ("tight", "(purple cross:1.6)", ""),
    ("tight", "purple cross, green ring, studio lighting, high quality", "ugly, low quality, blurry"),
    ("tight", "(blue square:1.5)", ""),
    ("tight", "blue square, simple shapes", ""),
    ("tight", "(red circle:1.5)", ""),
    ("medium", "(red circle:1.3), simple shapes", ""),
    ("medium", "red circle", ""),
    ("medium", "purple cross, green ring", ""),
    ("medium", "yellow triangle", ""),
    ("medium", "a red circle, blue square, simple shapes", ""),
    ("loose", "red circle, blue square, soft light", "blurry"),
    ("loose", "circle, square, triangle, ring, cross", ""),
    ("loose", "green ring", ""),
    ("loose", "a photo of a shape, detailed, soft light", ""),
    ("loose", "a photo of a red circle, detailed", ""),
)
"""(looseness, prompt, negative prompt), tightest first: the kinds of benchmarks/bench_pinning.py
and bench_hyperbatch.py plus emphasised and all-shape prompts. Picked so that the plain variety
(Euler a, B=8, S=20, cfg 1.5, mean of 4 seed sets) spreads from 0.12 to 0.99 in steps no smaller
than about 0.02; between seed sets a tight prompt's variety varies by up to 0.3, which is why the
measure averages several seed sets and reports plain-against-plain with other seeds as the
ceiling any schedule can reach."""

REFERENCE = "plain, other seeds"
"""The ceiling row: plain batches with different seeds against plain batches with the measured
ones (row cost 1.0). A schedule can not be expected to track plain better than plain tracks itself."""

OTHER_SEEDS = 500
"""Seed offset of the reference row."""

RUN_PROMPTS: tuple[tuple[str, str], ...] = (
    ("red circle, blue square, soft light", "blurry"),
    ("yellow triangle, soft light", "circle, blurry"),
    ("a photo of a red circle, detailed", ""),
)
"""Prompts of the toy pinning runs whose individuals are re-ranked (bench_pinning's loose and
negative kinds: the ones a run moves furthest)."""

CFG_SCALE = 1.5
SEED_BASE = 5000


def spearman(a: Sequence[float], b: Sequence[float]) -> float:
    """Spearman's rank correlation (average ranks for ties); nan when either side is constant."""
    ra, rb = _ranks(a), _ranks(b)
    if ra.std() == 0 or rb.std() == 0:
        return float("nan")
    return float(np.corrcoef(ra, rb)[0, 1])


def _ranks(values: Sequence[float]) -> np.ndarray:
    v = np.asarray(values, dtype=float)
    order = v.argsort(kind="stable")
    ranks = np.empty(len(v))
    ranks[order] = np.arange(len(v))
    for value in np.unique(v):
        tied = v == value
        ranks[tied] = ranks[tied].mean()
    return ranks


@dataclass(frozen=True)
class Candidate:
    """A schedule under test: a label, the plan it gives for (B, S), and the strength of the split
    refresh (the samplers' `split_rho`; None: their default, sqrt(1/2))."""

    label: str
    plan: Callable[[int, int], GrowthPlan]
    split_rho: float | None = None


def front_plan(last_split: float, refresh: bool) -> Callable[[int, int], GrowthPlan]:
    """Plans with the last split at `last_split` of the steps (`plan.front_split_steps`)."""

    def make(batch_size: int, steps: int) -> GrowthPlan:
        splits = len(growth_levels(batch_size)) - 1
        split_steps = front_split_steps(splits, steps, last_split)
        return GrowthPlan(batch_size, steps, sizes_from_splits(batch_size, steps, split_steps), "custom", refresh)

    return make


def named(schedule: str, refresh: bool | None = None) -> Callable[[int, int], GrowthPlan]:
    """A named schedule's plans, optionally with the refresh switched."""

    def make(batch_size: int, steps: int) -> GrowthPlan:
        plan = plan_growth(batch_size, steps, schedule)
        if refresh is None or refresh == plan.refresh:
            return plan
        return GrowthPlan(plan.batch_size, plan.steps, plan.sizes, plan.schedule, refresh)

    return make


HALF_RHO = math.sqrt(0.5)
"""The split refresh rho = sqrt(1/2) (the samplers' former default for every sampler), named so a
candidate keeps its meaning when a sampler's own default changes."""


def default_candidates() -> list[Candidate]:
    """The named schedules, their refreshed variants and the "front" sweep (rho sqrt(1/2))."""
    candidates = [
        Candidate("front", named("front"), HALF_RHO),
        Candidate("even", named("even"), HALF_RHO),
        Candidate("even + refresh", named("even", True), HALF_RHO),
        Candidate("late", named("late"), HALF_RHO),
    ]
    for q in (0.3, 0.4, 0.45, 0.5, 0.55, 0.65):
        if q != FRONT_LAST_SPLIT:
            candidates.append(Candidate(f"front q={q}", front_plan(q, True), HALF_RHO))
    candidates.append(Candidate("front q=0.45, no refresh", front_plan(0.45, False), HALF_RHO))
    return candidates


def full_refresh_candidates() -> list[Candidate]:
    """The named "front" and cheaper plans with the strongest split refresh (rho = 1: a copy
    keeps its parent's denoised estimate and none of its noise), against rho sqrt(1/2)."""
    return [
        Candidate("front", named("front"), HALF_RHO),
        Candidate("front, rho=1", named("front"), 1.0),
        Candidate("front q=0.55, rho=1", front_plan(0.55, True), 1.0),
        Candidate("even + refresh, rho=1", named("even", True), 1.0),
    ]


BROWNIAN_SAMPLERS = frozenset({"dpmpp_sde", "dpmpp_2m_sde"})
"""Samplers whose toy batches query per-seed Brownian trees: 40 to 80 times an Euler a batch's
time, so the "choice" sweep gives them fewer candidates and no ceiling row (see `choice_for`)."""


def choice_for(sampler: str) -> tuple[list[Candidate], bool]:
    """The "choice" candidates for `sampler` and whether its ceiling row is measured.

    The Brownian samplers get the four that decide their default: the current "front", "front"
    without its refresh, the Euler a suggestion "front q=0.65, rho=1" and the SDE suggestion
    "even"; their ceilings (0.81 and 0.86 for variety) are in "Fidelity: SDE samplers (toy)".
    """
    candidates = choice_candidates()
    if sampler not in BROWNIAN_SAMPLERS:
        return candidates, True
    keep = ("front", "front, no refresh", "front q=0.65, rho=1", "even")
    return [c for c in candidates if c.label in keep], False


def choice_candidates() -> list[Candidate]:
    """The candidates the per-sampler defaults are chosen from: the plans on or near the
    undominated front at <= 0.6 rows in the earlier sweeps, every rho given explicitly.

    "front" (q = 0.55) and "front q=0.65" with rho sqrt(1/2) and 1, "front" without its refresh
    (an SDE solver's own noise alone parts the copies), and the cheaper "even", plain and with the
    full refresh. DPM++ 2M refreshes at every split whatever the plan says, so for it "front, no
    refresh" equals "front" and "even" equals "even + refresh" at rho sqrt(1/2).
    """
    return [
        Candidate("front", front_plan(0.55, True), HALF_RHO),
        Candidate("front, rho=1", front_plan(0.55, True), 1.0),
        Candidate("front, no refresh", front_plan(0.55, False), HALF_RHO),
        Candidate("front q=0.65", front_plan(0.65, True), HALF_RHO),
        Candidate("front q=0.65, rho=1", front_plan(0.65, True), 1.0),
        Candidate("even", named("even", False), HALF_RHO),
        Candidate("even + refresh, rho=1", named("even", True), 1.0),
    ]


CANDIDATE_SETS: dict[str, Callable[[], list[Candidate]]] = {}
"""Candidate lists by the name `bench_hyperbatch.py --fidelity-schedules` takes (filled below)."""


def named_candidates() -> list[Candidate]:
    """The three named schedules alone: for samplers too slow on the toy for the whole sweep (the
    SDE samplers query per-seed Brownian trees, 30 to 70 times the time of an Euler a batch)."""
    return [Candidate(label, named(label), HALF_RHO) for label in ("front", "even", "late")]


CANDIDATE_SETS.update(
    sweep=default_candidates, named=named_candidates, rho=full_refresh_candidates, choice=choice_candidates,
)


class _PlannedToyGenerator(ToyGenerator):
    """The toy backend sampling with a given plan factory (any candidate, named or not) and,
    when given, a split refresh strength other than the samplers' default."""

    def __init__(
        self, settings: ToySettings, model: ToyModel, plan: Callable[[int, int], GrowthPlan],
        split_rho: float | None = None,
    ) -> None:
        super().__init__(settings, model.config)
        self.model = model
        self._plan = plan
        if split_rho is not None:
            self.sampler = dataclasses.replace(self.sampler, function=functools.partial(self.sampler.function, split_rho=split_rho))

    def growth_plan(self, batch_size: int) -> GrowthPlan:
        return self._plan(batch_size, self.settings.steps)


def _generators(sampler: str, steps: int, model: ToyModel, candidates: Sequence[Candidate]) -> dict[str, ToyGenerator]:
    scheduler = SAMPLERS[sampler].webui_options.get("scheduler")
    settings = ToySettings(
        sampler=sampler, growth="none", steps=steps, cfg_scale=CFG_SCALE,
        scheduler=scheduler if scheduler in ("karras", "exponential") else "karras",
    )
    generators: dict[str, ToyGenerator] = {"plain": _PlannedToyGenerator(settings, model, named("none"))}
    for candidate in candidates:
        generators[candidate.label] = _PlannedToyGenerator(settings, model, candidate.plan, candidate.split_rho)
    return generators


@dataclass
class FidelityRow:
    """One candidate's cost and its two rank correlations with plain sampling."""

    label: str
    rows_ratio: float
    variety_spearman: float
    ranking_spearman: float = float("nan")
    ranking_per_run: list[float] = field(default_factory=list)
    variety_ratio: float = float("nan")


@dataclass
class FidelityResult:
    sampler: str
    batch_size: int
    steps: int
    seed_sets: int
    individuals: int
    rows: list[FidelityRow]
    plain_variety: dict[str, float]


def _seeds(index: int, batch_size: int) -> tuple[int, ...]:
    start = SEED_BASE + 1000 * index
    return tuple(range(start, start + batch_size))


def variety_fidelity(
    sampler: str, batch_size: int, steps: int, candidates: Sequence[Candidate], seed_sets: int,
    prompts: Sequence[tuple[str, str, str]] = FIDELITY_PROMPTS, model: ToyModel | None = None,
    ceiling: bool = True,
) -> FidelityResult:
    """Mean variety per prompt over `seed_sets` seed sets for plain and every candidate (and, with
    `ceiling`, for plain with other seeds: the `REFERENCE` row)."""
    model = model if model is not None else ToyModel()
    objective = PinningObjective(None, "variety")
    generators = _generators(sampler, steps, model, candidates)
    variety: dict[str, list[float]] = {label: [] for label in generators}
    evals = SAMPLERS[sampler].evals(steps)
    reference: list[float] = []
    for _, prompt, negative in prompts:
        sums = dict.fromkeys(generators, 0.0)
        other = 0.0
        for index in range(seed_sets):
            request = GenerationRequest(prompt, negative, _seeds(index, batch_size))
            for label, generator in generators.items():
                batch: Batch = generator.generate(request)
                sums[label] += objective.score_images(batch.images).value / seed_sets
            if ceiling:
                shifted = GenerationRequest(prompt, negative, _seeds(index + OTHER_SEEDS, batch_size))
                other += objective.score_images(generators["plain"].generate(shifted).images).value / seed_sets
        for label, total in sums.items():
            variety[label].append(total)
        reference.append(other)
    plain = variety["plain"]
    rows = [
        FidelityRow(
            label=c.label,
            rows_ratio=c.plan(batch_size, steps).cost_ratio(evals),
            variety_spearman=spearman(variety[c.label], plain),
            variety_ratio=statistics.fmean(variety[c.label]) / statistics.fmean(plain),
        )
        for c in candidates
    ]
    if ceiling:
        rows.append(FidelityRow(
            REFERENCE, 1.0, spearman(reference, plain), variety_ratio=statistics.fmean(reference) / statistics.fmean(plain)
        ))
    return FidelityResult(
        sampler, batch_size, steps, seed_sets, 0, rows, {p: v for (_, p, _), v in zip(prompts, plain)}
    )


@dataclass(frozen=True)
class RunIndividuals:
    """The distinct prompt pairs a toy pinning run evaluated, its seeds and its baseline images."""

    prompts: tuple[tuple[str, str], ...]
    seeds: tuple[int, ...]
    targets: torch.Tensor


def toy_run_individuals(prompt: str, negative: str, batch_size: int, steps: int, generations: int, seed: int) -> RunIndividuals:
    """Run a short plain toy pinning run (default options) and collect its individuals."""
    generator = ToyGenerator(ToySettings(steps=steps, cfg_scale=CFG_SCALE))
    seeds = _seeds(100 + seed, batch_size)
    options = PinningOptions(cli_log=False, cma_seed=seed, generations=generations, stop_early=False)
    with tempfile.TemporaryDirectory() as runs_dir:
        run = PinningRun.start(
            generator=generator, prompt=prompt, negative_prompt=negative, seeds=seeds, options=options,
            runs_dir=Path(runs_dir),
        )
        result = run.execute()
        store = RunStore.open(result.run_dir)
        pairs = dict.fromkeys(
            (r.prompt, r.negative_prompt) for r in store.iter_individuals() if r.status == "ok"
        )
        targets = store.load_batch_images(result.baseline)
    return RunIndividuals(tuple(pairs), seeds, targets)


def ranking_correlations(
    sampler: str, steps: int, candidates: Sequence[Candidate], runs: Sequence[RunIndividuals],
    model: ToyModel | None = None, ceiling: bool = True,
) -> dict[str, list[float]]:
    """Per label (the candidates, plain and, with `ceiling`, the reference): one Spearman per run
    between the nearest-mode losses of the run's individuals under it and under plain sampling."""
    model = model if model is not None else ToyModel()
    generators = _generators(sampler, steps, model, candidates)
    labels = [*generators, REFERENCE] if ceiling else list(generators)
    per_run: dict[str, list[float]] = {label: [] for label in labels}
    for run in runs:
        objective = PinningObjective(run.targets, "nearest_mode")
        losses: dict[str, list[float]] = {label: [] for label in labels}
        for prompt, negative in run.prompts:
            request = GenerationRequest(prompt, negative, run.seeds)
            for label, generator in generators.items():
                losses[label].append(objective.score_images(generator.generate(request).images).value)
            if ceiling:
                shifted = GenerationRequest(prompt, negative, tuple(s + OTHER_SEEDS for s in run.seeds))
                losses[REFERENCE].append(objective.score_images(generators["plain"].generate(shifted).images).value)
        for label in losses:
            per_run[label].append(spearman(losses[label], losses["plain"]))
    return per_run


def apply_ranking(result: FidelityResult, per_run: dict[str, list[float]], runs: Sequence[RunIndividuals]) -> None:
    """Fill each row's ranking figures from `ranking_correlations`."""
    result.individuals = sum(len(run.prompts) for run in runs)
    for row in result.rows:
        row.ranking_per_run = per_run[row.label]
        row.ranking_spearman = statistics.fmean(per_run[row.label])


def ranking_fidelity(
    result: FidelityResult, candidates: Sequence[Candidate], runs: Sequence[RunIndividuals], model: ToyModel | None = None,
) -> None:
    """Fill each row's ranking correlation: the nearest-mode loss of every run's individuals under
    the candidate vs plain, one Spearman per run, averaged."""
    apply_ranking(result, ranking_correlations(result.sampler, result.steps, candidates, runs, model), runs)


@dataclass(frozen=True)
class _Task:
    """One measure of one sampler, run in a worker process (candidates travel by set name: their
    plan factories are closures, which do not pickle)."""

    sampler: str
    measure: str
    candidate_set: str
    batch_size: int
    steps: int
    seed_sets: int
    runs: tuple[RunIndividuals, ...]


def _run_task(task: _Task) -> tuple[_Task, FidelityResult | dict[str, list[float]], float]:
    torch.set_num_threads(1)
    started = time.process_time()
    candidates, ceiling = task_candidates(task.candidate_set, task.sampler)
    if task.measure == "variety":
        out: FidelityResult | dict[str, list[float]] = variety_fidelity(
            task.sampler, task.batch_size, task.steps, candidates, task.seed_sets, ceiling=ceiling
        )
    else:
        out = ranking_correlations(task.sampler, task.steps, candidates, task.runs, ceiling=ceiling)
    cpu = time.process_time() - started
    logger.info("fidelity %s %s done: %.0f s CPU", task.sampler, task.measure, cpu)
    if isinstance(out, FidelityResult):
        logger.info("%s variety: %s", task.sampler, {r.label: (round(r.rows_ratio, 3), round(r.variety_spearman, 3)) for r in out.rows})
    else:
        logger.info("%s ranking: %s", task.sampler, {label: round(statistics.fmean(v), 3) for label, v in out.items()})
    return task, out, cpu


def task_candidates(candidate_set: str, sampler: str) -> tuple[list[Candidate], bool]:
    """A set's candidates for `sampler` and whether the ceiling row is measured ("choice" is per
    sampler, see `choice_for`; the other sets are the same for every sampler)."""
    if candidate_set == "choice":
        return choice_for(sampler)
    return CANDIDATE_SETS[candidate_set](), True


def measure_samplers(
    samplers: Sequence[str], batch_size: int, steps: int, candidate_set: str, seed_sets: int,
    runs: Sequence[RunIndividuals], workers: int = 1,
) -> tuple[list[FidelityResult], float]:
    """Both measures for every sampler, split into one task per (sampler, measure) over `workers`
    processes; returns the results in `samplers` order and the CPU seconds spent. The cheapest
    tasks go first: their figures are in the log within minutes, and with the two measures of a
    sampler costing about the same, two workers still finish together."""
    tasks = [
        _Task(sampler, measure, candidate_set, batch_size, steps, seed_sets, tuple(runs))
        for sampler in samplers
        for measure in (("variety", "ranking") if runs else ("variety",))
    ]
    tasks.sort(key=lambda t: SLOWNESS.get(t.sampler, 1))
    if workers > 1:
        with multiprocessing.get_context("fork").Pool(workers) as pool:
            done = list(pool.imap_unordered(_run_task, tasks))
    else:
        done = [_run_task(task) for task in tasks]
    varieties = {task.sampler: out for task, out, _ in done if task.measure == "variety"}
    for task, out, _ in done:
        if task.measure == "ranking":
            apply_ranking(varieties[task.sampler], out, runs)
    return [varieties[sampler] for sampler in samplers], sum(cpu for _, _, cpu in done)


SLOWNESS: dict[str, int] = {"dpmpp_sde": 70, "dpmpp_2m_sde": 35, "euler_ancestral": 1, "dpmpp_2m": 1}
"""A toy batch's time relative to Euler a's (the SDE samplers query per-seed Brownian trees), used
only to order the tasks."""
