"""The timings behind bench_hyperbatch_wall.py: toy batches, plain and hyperbatch, split into parts.

`time_sampler` times `ToyGenerator.generate` (the path the toy backend and bench_hyperbatch.py
run) for plain batches of B = 1, 2, 4, 8 images and for hyperbatches at B = 8, interleaved (every
variant once per round), with the CPU time inside the denoiser calls, inside the hyperbatch's
splits and inside the sampler function measured apart (`Parts`), and the minor page faults of each
batch counted. The batches repeat one seed set, as a pinning run's individuals do, so what is kept
between batches is warm after the first round; `time_cold` times a run's first batch with every
cache cleared.

Timings are CPU seconds of this process (time.process_time: the machine is shared, and waiting for
a core is not the code's cost), medians over the rounds. `walls_to_json` / `walls_from_json` carry
the results of a child process (the steady-allocator run of bench_hyperbatch_wall.py).
"""

from __future__ import annotations

import resource
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

import torch

from lib_pinning.generator import GenerationRequest, ToyGenerator, ToySettings
from pinning_samplers import SAMPLERS, coefficients
from pinning_samplers import loop as loop_module
from pinning_samplers import advance as advance_module
from pinning_samplers import noise as noise_module
from pinning_samplers import plan as plan_module
from pinning_samplers.advance import advance

PROMPT = "a red circle, blue square, simple shapes"
NEGATIVE = "blurry"
BATCH = 8
PLAIN_SIZES = (1, 2, 4, 8)
SCHEDULES = ("front", "even", "late")


def schedules_for(sampler: str) -> tuple[str, ...]:
    """The sampler's default schedule first, then the named ones it is compared with."""
    return tuple(dict.fromkeys((SAMPLERS[sampler].default_growth, *SCHEDULES)))


def clear_caches() -> None:
    """Forget what is kept between batches, as at the start of a run (`cold` timings)."""
    coefficients.clear_cache()
    advance_module.POSITIONS.clear()
    noise_module._SPLIT_ROWS.clear()
    plan_module._planned.cache_clear()


def brownian_steps(sampler: str) -> bool:
    """Whether every step queries Brownian trees (the SDE samplers: seconds a batch on the toy);
    DPM++ 2M has per-seed trees too but never queries them."""
    info = SAMPLERS[sampler]
    return bool(info.stochastic and info.webui_options.get("brownian_noise"))


def fit_line(xs: Sequence[float], ys: Sequence[float]) -> tuple[float, float]:
    """(intercept, slope) of the least-squares line through (xs, ys)."""
    if len(xs) != len(ys) or len(xs) < 2:
        raise ValueError("need at least two points, as many xs as ys")
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    sxx = sum((x - mx) ** 2 for x in xs)
    if sxx == 0:
        raise ValueError("xs must not all be equal")
    slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sxx
    return my - slope * mx, slope


def time_catch_up(shape: tuple[int, ...], repeats: int) -> tuple[float, float, float]:
    """Median CPU ms of one randn draw of `shape`, of advancing a generator past one (`advance`,
    19 draws at once, per draw: a run's first batch), and of one jump to a kept position
    (`set_state`: its later batches)."""
    generator = torch.Generator().manual_seed(7)
    values = 1
    for d in shape:
        values *= d
    scratch = torch.empty(19 * values, dtype=torch.uint8)
    state = generator.get_state()
    draw, skip, jump = [], [], []
    for _ in range(repeats):
        draw.append(_cpu_ms(lambda: [torch.randn(shape, generator=generator) for _ in range(19)]) / 19)
        skip.append(_cpu_ms(lambda: advance(generator, 19 * values, scratch)) / 19)
        jump.append(_cpu_ms(lambda: [generator.set_state(state) for _ in range(19)]) / 19)
    return statistics.median(draw), statistics.median(skip), statistics.median(jump)


class Stopwatch:
    """CPU seconds spent inside calls of one function, added up (wraps it)."""

    def __init__(self, function: Callable[..., Any]) -> None:
        self._function = function
        self.seconds = 0.0

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        started = time.process_time()
        try:
            return self._function(*args, **kwargs)
        finally:
            self.seconds += time.process_time() - started


class TimedModel(Stopwatch):
    """The toy model with the CPU time spent inside its denoiser calls added up; its other
    attributes are the model's."""

    def __getattr__(self, name: str) -> Any:
        return getattr(self._function, name)


class TimedSplits:
    """Every `Hyperbatch._split` timed while installed (a plain batch makes none)."""

    def __enter__(self) -> Stopwatch:
        self._original = loop_module.Hyperbatch._split
        watch = Stopwatch(self._original)
        loop_module.Hyperbatch._split = lambda run, *args: watch(run, *args)  # type: ignore[method-assign]
        return watch

    def __exit__(self, *exc: Any) -> None:
        loop_module.Hyperbatch._split = self._original  # type: ignore[method-assign]


@dataclass(frozen=True)
class Parts:
    """Where one batch's CPU ms go (medians over the repeats): the denoiser calls, the hyperbatch's
    splits, the rest of the sampler function (solver arithmetic, noise draws, the loop), and
    `ToyGenerator.generate` outside the sampler (prompt weights, initial latents, failure check,
    images: per batch or per image, never per model row)."""

    denoiser: float
    splits: float
    solver: float
    outside: float


@dataclass(frozen=True)
class Variant:
    growth: str
    batch: int


@dataclass(frozen=True)
class SamplerWall:
    sampler: str
    steps: int
    calls: int
    ms: dict[Variant, float]
    denoiser_ms: dict[Variant, float]
    rows_ratio: dict[str, float]
    fixed_ms: float
    per_row_ms: float
    schedules: tuple[str, ...] = SCHEDULES
    cold_ms: dict[str, float] | None = None  # "none" and the default schedule, a run's first batch
    parts: dict[Variant, Parts] | None = None
    faults: dict[Variant, float] | None = None  # minor page faults per batch, medians

    def plain(self) -> float:
        return self.ms[Variant("none", BATCH)]


def _cpu_ms(fn: Callable[[], Any]) -> float:
    started = time.process_time()
    fn()
    return 1e3 * (time.process_time() - started)


def minor_faults() -> int:
    """Minor page faults of this process so far: memory the allocator gave back to the system and
    takes again is paid here, a few microseconds a page (see `allocator`)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def time_cold(sampler: str, steps: int, repeats: int) -> dict[str, float]:
    """Median CPU ms of a run's first batch, plain and at the default schedule (interleaved): a
    fresh generator and every cache cleared before each."""
    growths = ("none", SAMPLERS[sampler].default_growth)
    request = GenerationRequest(PROMPT, NEGATIVE, tuple(range(100, 100 + BATCH)))
    times: dict[str, list[float]] = {g: [] for g in growths}
    for _ in range(repeats):
        for g in growths:
            generator = ToyGenerator(ToySettings(sampler=sampler, growth=g, steps=steps))
            clear_caches()
            times[g].append(_cpu_ms(lambda: generator.generate(request)))
    return {g: statistics.median(t) for g, t in times.items()}


def time_sampler(sampler: str, steps: int, repeats: int, cold_repeats: int = 0) -> SamplerWall:
    schedules = schedules_for(sampler)
    variants = [Variant("none", b) for b in PLAIN_SIZES] + [Variant(g, BATCH) for g in schedules]
    generators = {v: ToyGenerator(ToySettings(sampler=sampler, growth=v.growth, steps=steps)) for v in variants}
    timed, sampling = {}, {}
    for v, generator in generators.items():
        timed[v] = generator.model = TimedModel(generator.model)  # type: ignore[assignment]
        sampling[v] = Stopwatch(generator.sampler.function)
        generator.sampler = replace(generator.sampler, function=sampling[v])
    requests = {v: GenerationRequest(PROMPT, NEGATIVE, tuple(range(100, 100 + v.batch))) for v in variants}
    rows: dict[Variant, int] = {}
    for v in variants:  # warm-up, and the rows each variant evaluates
        rows[v] = generators[v].generate(requests[v]).model_rows
    times: dict[Variant, list[float]] = {v: [] for v in variants}
    inside: dict[Variant, list[float]] = {v: [] for v in variants}
    parts: dict[Variant, list[tuple[float, float, float]]] = {v: [] for v in variants}
    faults: dict[Variant, list[int]] = {v: [] for v in variants}
    with TimedSplits() as splits:
        for _ in range(repeats):
            for v in variants:
                timed[v].seconds = sampling[v].seconds = splits.seconds = 0.0
                faults_before = minor_faults()
                times[v].append(_cpu_ms(lambda: generators[v].generate(requests[v])))
                faults[v].append(minor_faults() - faults_before)
                inside[v].append(1e3 * timed[v].seconds)
                parts[v].append((1e3 * splits.seconds, 1e3 * sampling[v].seconds, times[v][-1]))
    ms = {v: statistics.median(t) for v, t in times.items()}
    denoiser = {v: statistics.median(t) for v, t in inside.items()}
    breakdown = {}
    for v in variants:
        split_ms, sampler_ms, total_ms = (statistics.median(column) for column in zip(*parts[v]))
        breakdown[v] = Parts(denoiser[v], split_ms, sampler_ms - denoiser[v] - split_ms, total_ms - sampler_ms)
    fixed, per_row = fit_line(PLAIN_SIZES, [ms[Variant("none", b)] for b in PLAIN_SIZES])
    plain_rows = rows[Variant("none", BATCH)]
    calls = plain_rows // BATCH
    return SamplerWall(
        sampler, steps, calls, ms, denoiser, {g: rows[Variant(g, BATCH)] / plain_rows for g in schedules},
        fixed, per_row, schedules, time_cold(sampler, steps, cold_repeats) if cold_repeats else None,
        breakdown, {v: statistics.median(f) for v, f in faults.items()},
    )


def time_denoiser(repeats: int) -> tuple[dict[int, float], float, float]:
    """Median CPU ms of one toy denoiser call (cfg 1.5) per row count, and the (F, P) fit."""
    generator = ToyGenerator()
    model = generator.model
    args = model.extra_args([PROMPT] * BATCH, NEGATIVE, cond_scale=generator.settings.cfg_scale)
    calls_per_sample = 50
    per_n: dict[int, list[float]] = {n: [] for n in PLAIN_SIZES}
    inputs = {}
    for n in PLAIN_SIZES:
        x = torch.randn((n, *model.image_shape), generator=torch.Generator().manual_seed(n)) * 10.0
        inputs[n] = (x, torch.full((n,), 10.0), {k: (v[:n] if torch.is_tensor(v) else v) for k, v in args.items()})
    for _ in range(repeats):
        for n, (x, sigma, extra) in inputs.items():
            ms = _cpu_ms(lambda: [model(x, sigma, **extra) for _ in range(calls_per_sample)])
            per_n[n].append(ms / calls_per_sample)
    medians = {n: statistics.median(v) for n, v in per_n.items()}
    fixed, per_row = fit_line(list(medians), list(medians.values()))
    return medians, fixed, per_row



def _variant_key(v: Variant) -> str:
    return f"{v.growth}/{v.batch}"


def _variant(key: str) -> Variant:
    growth, batch = key.rsplit("/", 1)
    return Variant(growth, int(batch))


def walls_to_json(walls: Sequence[SamplerWall]) -> list[dict[str, Any]]:
    """The timings as JSON-ready data (what a child process hands back); `walls_from_json` inverts it."""
    data = []
    for w in walls:
        data.append({
            "sampler": w.sampler, "steps": w.steps, "calls": w.calls,
            "ms": {_variant_key(v): t for v, t in w.ms.items()},
            "denoiser_ms": {_variant_key(v): t for v, t in w.denoiser_ms.items()},
            "rows_ratio": w.rows_ratio, "fixed_ms": w.fixed_ms, "per_row_ms": w.per_row_ms,
            "schedules": list(w.schedules), "cold_ms": w.cold_ms,
            "parts": None if w.parts is None else {_variant_key(v): vars(p) for v, p in w.parts.items()},
            "faults": None if w.faults is None else {_variant_key(v): f for v, f in w.faults.items()},
        })
    return data


def walls_from_json(data: Sequence[dict[str, Any]]) -> list[SamplerWall]:
    walls = []
    for d in data:
        walls.append(SamplerWall(
            d["sampler"], d["steps"], d["calls"],
            {_variant(k): t for k, t in d["ms"].items()},
            {_variant(k): t for k, t in d["denoiser_ms"].items()},
            dict(d["rows_ratio"]), d["fixed_ms"], d["per_row_ms"], tuple(d["schedules"]), d["cold_ms"],
            None if d["parts"] is None else {_variant(k): Parts(**p) for k, p in d["parts"].items()},
            None if d["faults"] is None else {_variant(k): f for k, f in d["faults"].items()},
        ))
    return walls
