"""The toy-model measurements of bench_hyperbatch.py: every growth schedule against the plain
sampler, batch by batch, on the same prompts and seeds.

`measure` generates one (sampler, B, S) cell's batches for every schedule, interleaved so that a
change in the machine's load hits all of them alike, and records each batch's model rows, wall
time, time inside the denoiser (`TimedToyModel`) and variety; `Comparison` holds one schedule
against the plain sampler, `profile_jobs` the cells a profile runs and `run_toy` runs them.
`probe_overheads` times the two fixed costs that explain the toy's wall-time ratios. The tables and
text made of these results are in hyperbatch_report.py; the CLI that runs them is bench_hyperbatch.py.
"""

from __future__ import annotations

import logging
import math
import statistics
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from lib_pinning.generator import Batch, GenerationRequest, ToyGenerator, ToySettings
from lib_pinning.objectives.pinning import PinningObjective
from lib_pinning.toy import ToyModel
from pinning_samplers import SAMPLERS, GrowthPlan, SamplerInfo, SeededBrownianNoise, SeededNoise
from pinning_samplers.schedules import get_sigmas_karras

logger = logging.getLogger("bench_hyperbatch.toy")

GROWTHS: tuple[str, ...] = ("none", "front", "even", "late")
"""Growth schedules compared; "none" is the plain sampler every ratio is taken against."""

PROMPTS: tuple[tuple[str, str], ...] = (
    ("tight", "red circle"),
    ("medium", "a red circle, blue square, simple shapes"),
    ("loose", "a photo of a shape, detailed, soft light"),
)
"""(label, prompt), tight to loose: at cfg 1 the toy gives them 4.7, 6.1 and 8.5 effective
prototypes (exp of the mixture weights' entropy), so hyperbatch variety is compared where a plain
batch varies little and where it varies a lot."""

NEGATIVE_PROMPT = ""
CFG_SCALE = 1.5
"""The toy backend's default guidance (the toy's calibrated range is cfg 1 to 2)."""

SEED_BASE = 1000
TARGET_POINT = (8, 20)
"""(B, S) of issue 15's targets: the one cell the quick profile gives the slow Brownian samplers,
the cell the report's targets and per-prompt table are read at, and the fidelity measure's."""


def toy_samplers() -> tuple[str, ...]:
    """The hyperbatch samplers the toy backend accepts, in registry order.

    Asked of `ToySettings` itself (it validates the name), so a sampler added to both the registry
    and the backend is benchmarked without touching this file.
    """
    names = []
    for name in SAMPLERS:
        try:
            ToySettings(sampler=name)
        except ValueError:
            logger.debug("toy backend does not offer %s", name)
            continue
        names.append(name)
    return tuple(names)


def uses_brownian_noise(info: SamplerInfo) -> bool:
    """True for samplers that query per-seed Brownian trees at every step (slow on the toy)."""
    return bool(info.stochastic and info.webui_options.get("brownian_noise"))


def toy_scheduler(info: SamplerInfo) -> str:
    """The sampler's WebUI default schedule where the toy backend has it, else Karras."""
    scheduler = info.webui_options.get("scheduler")
    return scheduler if scheduler in ("karras", "exponential") else "karras"


def seed_set(index: int, batch_size: int) -> tuple[int, ...]:
    """Seeds of the index-th seed set: consecutive seeds, disjoint between sets."""
    start = SEED_BASE + 1000 * index
    return tuple(range(start, start + batch_size))


class TimedToyModel(ToyModel):
    """The toy denoiser, also accumulating the seconds spent inside its calls.

    Separating denoiser time from the sampler's own bookkeeping and the noise draws shows which
    part of a toy batch's wall time would grow into UNet time on a real model.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.seconds = 0.0

    def __call__(self, *args: Any, **kwargs: Any) -> torch.Tensor:
        started = time.perf_counter()
        try:
            return super().__call__(*args, **kwargs)
        finally:
            self.seconds += time.perf_counter() - started


@dataclass
class ConfigResult:
    """Every batch generated for one (sampler, B, S, growth) configuration.

    plan: the growth plan the generator used (plain for "none").
    expected_rows: plan.model_rows(evals): what the plan's arithmetic says a batch costs.
    plain_rows: B x sum(evals): what the plain sampler evaluates.
    plan_cost_ratio: SamplerInfo.cost_ratio(plan).
    The lists hold one entry per generated batch, in generation order.
    """

    sampler: str
    batch_size: int
    steps: int
    growth: str
    plan: GrowthPlan
    expected_rows: int
    plain_rows: int
    plan_cost_ratio: float
    model_rows: list[int] = field(default_factory=list)
    wall_s: list[float] = field(default_factory=list)
    model_s: list[float] = field(default_factory=list)
    variety: list[float] = field(default_factory=list)
    distinct_pairs: list[float] = field(default_factory=list)
    prompt_labels: list[str] = field(default_factory=list)

    @property
    def rows_ok(self) -> bool:
        """Every batch evaluated exactly the rows its plan says."""
        return bool(self.model_rows) and all(r == self.expected_rows for r in self.model_rows)

    @property
    def median_wall_s(self) -> float:
        """Median over the batches: they differ in prompt and seeds, not in cost."""
        return statistics.median(self.wall_s)

    @property
    def median_model_s(self) -> float:
        """Median seconds inside the denoiser: the share a real UNet would make dominant."""
        return statistics.median(self.model_s)

    def mean_of(self, values: Sequence[float], prompt: str | None = None) -> float:
        """Mean of a per-batch list, optionally over one prompt's batches only."""
        picked = [v for v, p in zip(values, self.prompt_labels) if prompt is None or p == prompt]
        return statistics.fmean(picked) if picked else math.nan


def distinct_prototype_fraction(model: ToyModel, images: torch.Tensor) -> float:
    """Fraction of image pairs i < j whose nearest prototypes differ."""
    nearest = model.nearest_prototype(images)
    i, j = torch.triu_indices(len(nearest), len(nearest), offset=1)
    return float((nearest[i] != nearest[j]).double().mean())


def _generator(sampler: str, steps: int, growth: str, model: ToyModel) -> ToyGenerator:
    settings = ToySettings(
        sampler=sampler,
        growth=growth,
        scheduler=toy_scheduler(SAMPLERS[sampler]),
        steps=steps,
        cfg_scale=CFG_SCALE,
    )
    generator = ToyGenerator(settings, model.config)
    # The generator's own model swapped for the shared timed one: same config, so the same
    # denoiser; shared, so its caches are warm across configurations.
    generator.model = model
    return generator


def measure(
    sampler: str,
    batch_size: int,
    steps: int,
    *,
    growths: Sequence[str] = GROWTHS,
    prompts: Sequence[tuple[str, str]] = PROMPTS,
    seed_sets: int = 1,
    score: bool = True,
    model: TimedToyModel | None = None,
    objective: PinningObjective | None = None,
) -> dict[str, ConfigResult]:
    """Generate len(prompts) x seed_sets batches per growth schedule; one result per schedule.

    For each (seed set, prompt) the schedules run back to back with the same seeds, so every
    schedule sees the same prompts, seeds and (nearly) the same machine load. score=False skips
    the FLIP and prototype scoring (rows and times only).
    """
    info = SAMPLERS[sampler]
    model = model if model is not None else TimedToyModel()
    if score and objective is None:
        objective = PinningObjective(None, "variety")
    evals = info.evals(steps)
    generators = {g: _generator(sampler, steps, g, model) for g in growths}
    results: dict[str, ConfigResult] = {}
    for growth, generator in generators.items():
        plan = generator.growth_plan(batch_size)
        results[growth] = ConfigResult(
            sampler=sampler,
            batch_size=batch_size,
            steps=steps,
            growth=growth,
            plan=plan,
            expected_rows=plan.model_rows(evals),
            plain_rows=plan.plain_model_rows(evals),
            plan_cost_ratio=info.cost_ratio(plan),
        )
    for index in range(seed_sets):
        seeds = seed_set(index, batch_size)
        for label, prompt in prompts:
            request = GenerationRequest(prompt, NEGATIVE_PROMPT, seeds)
            for growth, generator in generators.items():
                result = results[growth]
                model_before = model.seconds
                started = time.perf_counter()
                batch: Batch = generator.generate(request)
                result.wall_s.append(time.perf_counter() - started)
                result.model_s.append(model.seconds - model_before)
                result.model_rows.append(batch.model_rows)
                result.prompt_labels.append(label)
                if (batch.growth is None) != result.plan.is_plain:
                    raise RuntimeError(f"{sampler} {growth}: batch.growth disagrees with the plan")
                if score:
                    assert objective is not None
                    result.variety.append(objective.score_images(batch.images).value)
                    result.distinct_pairs.append(distinct_prototype_fraction(model, batch.images))
    return results


@dataclass(frozen=True)
class Comparison:
    """One hyperbatch configuration against the plain one of the same sampler, B and S."""

    hyper: ConfigResult
    plain: ConfigResult

    @property
    def rows_ratio(self) -> float:
        """Measured rows over the plain sampler's measured rows."""
        return self.hyper.model_rows[0] / self.plain.model_rows[0]

    @property
    def time_ratio(self) -> float:
        """Median wall time over the plain sampler's: what the saved rows buy on this machine."""
        return self.hyper.median_wall_s / self.plain.median_wall_s

    @property
    def model_time_ratio(self) -> float:
        """The same for the denoiser's time alone, which follows the rows more closely."""
        return self.hyper.median_model_s / self.plain.median_model_s

    def variety_ratio(self, prompt: str | None = None) -> float:
        """Mean variety of the hyperbatch batches over that of the plain batches."""
        return self.hyper.mean_of(self.hyper.variety, prompt) / self.plain.mean_of(self.plain.variety, prompt)

    @property
    def checks_out(self) -> bool:
        """Rows match the plan in every batch, the plain rows are B x evals, and the measured
        ratio equals SamplerInfo.cost_ratio."""
        return (
            self.hyper.rows_ok
            and self.plain.rows_ok
            and self.plain.model_rows[0] == self.hyper.plain_rows
            and math.isclose(self.rows_ratio, self.hyper.plan_cost_ratio, rel_tol=1e-12)
        )


@dataclass(frozen=True)
class ToyJob:
    """One (sampler, B, S) cell of a profile and how many seed sets it gets."""

    sampler: str
    batch_size: int
    steps: int
    seed_sets: int


def profile_jobs(
    profile: str,
    samplers: Sequence[str],
    batch_sizes: Sequence[int],
    steps_list: Sequence[int],
    seed_sets: int | None,
) -> list[ToyJob]:
    """The cells a profile runs (see the module docstring for why the SDE samplers get less)."""
    jobs = []
    for sampler in samplers:
        slow = uses_brownian_noise(SAMPLERS[sampler])
        for steps in steps_list:
            for batch_size in batch_sizes:
                if slow and profile == "quick" and (batch_size, steps) != TARGET_POINT:
                    continue
                sets = seed_sets if seed_sets is not None else (2 if slow else 4)
                jobs.append(ToyJob(sampler, batch_size, steps, sets))
    return jobs


def warm_up(model: TimedToyModel, samplers: Iterable[str], objective: PinningObjective) -> None:
    """One small batch per sampler and prompt, so caches and lazy initialisation are not timed."""
    for sampler in samplers:
        measure(sampler, 4, 8, growths=("none", "even"), seed_sets=1, model=model, objective=objective)


def run_toy(jobs: Sequence[ToyJob], prompts: Sequence[tuple[str, str]] = PROMPTS) -> list[Comparison]:
    """Measure every job; one Comparison per hyperbatch schedule and job."""
    model = TimedToyModel()
    objective = PinningObjective(None, "variety")
    warm_up(model, sorted({job.sampler for job in jobs}), objective)
    comparisons = []
    for number, job in enumerate(jobs, 1):
        started = time.perf_counter()
        results = measure(
            job.sampler, job.batch_size, job.steps, prompts=prompts, seed_sets=job.seed_sets,
            model=model, objective=objective,
        )
        for growth in GROWTHS[1:]:
            comparison = Comparison(results[growth], results["none"])
            comparisons.append(comparison)
            if not comparison.checks_out:
                logger.error(
                    "row accounting mismatch: %s B=%d S=%d %s measured %s, plan %d, plain %s",
                    job.sampler, job.batch_size, job.steps, growth,
                    results[growth].model_rows, results[growth].expected_rows, results["none"].model_rows,
                )
        logger.info(
            "[%d/%d] %s B=%d S=%d: %d batches per schedule in %.1f s",
            number, len(jobs), job.sampler, job.batch_size, job.steps,
            job.seed_sets * len(prompts), time.perf_counter() - started,
        )
    return comparisons


@dataclass(frozen=True)
class OverheadProbe:
    """Median milliseconds of the two costs that dominate toy wall times (see `probe_overheads`)."""

    denoiser_call_ms: float
    first_tree_query_ms: float
    later_tree_query_ms: float
    batch_size: int
    split_noise_ms: float = math.nan
    denoiser_row_call_ms: float = math.nan  # one call on a single row: the call's fixed cost
    seeded_draw_ms: float = math.nan  # Euler a's noise of one step: one draw per seed (`SeededNoise`)


def probe_overheads(batch_size: int = 8, steps: int = 20, repeats: int = 3) -> OverheadProbe:
    """Time one toy denoiser call on `batch_size` rows against Brownian-tree queries for as many seeds.

    The toy denoiser costs about a millisecond, while the per-seed Brownian trees the SDE samplers
    (and DPM++ 2M's split refresh) query are pure-Python bisections; measuring both explains the
    toy's wall-time ratios, which on a real UNet would be dominated by the model instead.
    """
    model = ToyModel()
    sigmas = get_sigmas_karras(steps, model.sigma_min, model.sigma_max)
    seeds = seed_set(0, batch_size)
    x = SeededNoise(seeds, model.image_shape).first() * sigmas[0]
    args = model.extra_args([PROMPTS[0][1]] * batch_size, cond_scale=CFG_SCALE)
    one_row = model.extra_args([PROMPTS[0][1]], cond_scale=CFG_SCALE)
    sequential = SeededNoise(seeds, model.image_shape)
    call, row_call, draw, first, later, split = [], [], [], [], [], []
    for _ in range(repeats):
        started = time.perf_counter()
        model(x, sigmas[0] * x.new_ones([batch_size]), **args)
        call.append(time.perf_counter() - started)
        started = time.perf_counter()
        model(x[:1], sigmas[0] * x.new_ones([1]), **one_row)
        row_call.append(time.perf_counter() - started)
        started = time.perf_counter()
        sequential.next()
        draw.append(time.perf_counter() - started)
        noise = SeededBrownianNoise.from_sigmas(seeds, x, sigmas)
        started = time.perf_counter()
        noise(sigmas[steps // 2], sigmas[steps // 2 + 1])
        first.append(time.perf_counter() - started)
        started = time.perf_counter()
        noise(sigmas[steps // 2 + 1], sigmas[steps // 2 + 2])
        later.append(time.perf_counter() - started)
        started = time.perf_counter()
        noise.split_noise(steps // 2, 0, batch_size)
        split.append(time.perf_counter() - started)
    return OverheadProbe(
        1e3 * statistics.median(call), 1e3 * statistics.median(first), 1e3 * statistics.median(later), batch_size,
        1e3 * statistics.median(split), 1e3 * statistics.median(row_call), 1e3 * statistics.median(draw),
    )
