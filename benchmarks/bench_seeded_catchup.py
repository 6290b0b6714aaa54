"""Can a hyperbatch skip the per-step noise of rows that do not exist yet? (issue 15, Euler a)

Euler a draws one step's noise from each image's own CPU generator at every step, for all B
images, because a row that becomes active at step k must then see the same noise as the plain
sampler's image (its generator must have advanced k steps). `SeededNoise` now skips the rows a
hyperbatch has not split off yet and, when a row appears, catches its generator up in ONE call
(`pinning_samplers.advance`) instead of k draws. That is only valid if torch's CPU generator ends
in the same state after one call of k*n values as after k draws of n values. This script checks
that for one torch.randn call, one float32 uniform_ call and the uint8 random_ call `advance`
makes (one 32-bit word per value, no Box-Muller transform), times the three against k draws, and
times toy Euler a batches (B=8, S=20) four ways, interleaved, median of the repeats:

* plain: the plain sampler (growth "none"), SeededNoise;
* hyper eager: the hyperbatch with `SeededNoise(catch_up=False)`, every generator drawn at every
  step (the code before the catch-up);
* hyper catch-up: the hyperbatch with `SeededNoise` as shipped (the batch is checked bit for bit
  against "hyper eager");
* hyper skip: `SkipNoise`, inactive rows never drawn and never caught up: WRONG noise, the cost
  floor of any scheme that keeps per-seed noise (nothing is cheaper than drawing only the active
  rows' values).

Usage:
    python benchmarks/bench_seeded_catchup.py                       # print the section
    python benchmarks/bench_seeded_catchup.py --update-doc docs/benchmarks.md
"""

from __future__ import annotations

import argparse
import logging
import math
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import command_line, load_average, machine_line, publish  # noqa: E402
from lib_pinning.toy import ToyModel  # noqa: E402
from pinning_samplers import SAMPLERS, SeededNoise  # noqa: E402
from pinning_samplers.advance import advance  # noqa: E402
from pinning_samplers.plan import plan_growth  # noqa: E402
from pinning_samplers.schedules import get_sigmas_karras  # noqa: E402

logger = logging.getLogger("bench_seeded_catchup")

SECTION = "## Per-seed noise catch-up for hyperbatch rows (bench_seeded_catchup.py)"
SHAPES: tuple[tuple[int, ...], ...] = ((3, 64, 64), (4, 64, 64), (4, 128, 128), (4, 7, 9), (15,))
"""The toy's image, SD 1.5 and SDXL latents, and two sizes that are not multiples of 16."""
CATCH_UP_STEPS: tuple[int, ...] = (1, 2, 3, 7, 19)
PROMPT = "a red circle, blue square, simple shapes"
CFG_SCALE = 1.5
SEEDS = tuple(range(1000, 1008))
STEPS = 20
GROWTHS: tuple[str, ...] = ("front", "even", "late")
WALL_SLACK = 0.1


def _numel(shape: Sequence[int]) -> int:
    return math.prod(int(d) for d in shape)


def stream_identical(shape: Sequence[int], steps: int, how: str, seed: int = 1234) -> bool:
    """Whether `steps` draws of `shape` leave a CPU generator where one call of steps *
    numel(shape) values leaves it (`how`: "randn", "uniform" float32 or "advance", the uint8
    `advance.advance`): same state, same next draw."""
    shape = tuple(shape)
    stepped = torch.Generator("cpu").manual_seed(seed)
    for _ in range(steps):
        torch.randn(shape, generator=stepped)
    jumped = torch.Generator("cpu").manual_seed(seed)
    values = torch.empty(steps * _numel(shape))
    if how == "randn":
        values.normal_(generator=jumped)
    elif how == "uniform":
        values.uniform_(generator=jumped)
    elif how == "advance":
        advance(jumped, values.numel(), torch.empty(0, dtype=torch.uint8))
    else:
        raise ValueError(f"how must be 'randn', 'uniform' or 'advance', got {how!r}")
    return torch.equal(stepped.get_state(), jumped.get_state()) and torch.equal(
        torch.randn(shape, generator=stepped), torch.randn(shape, generator=jumped)
    )


class SkipNoise(SeededNoise):
    """SeededNoise whose skipped draws are never made up: a row's noise is shifted by the steps it
    was inactive. Wrong noise; only the cost floor of any per-seed noise that skips inactive rows."""

    def _draw(self, start: int = 0, stop: int | None = None) -> torch.Tensor:
        self._owed = [0] * len(self.seeds)
        return super()._draw(start, stop)


@dataclass(frozen=True)
class AdvanceTiming:
    """Milliseconds to move one generator k steps of one draw ahead, three ways."""

    shape: tuple[int, ...]
    steps: int
    separate_ms: float
    one_randn_ms: float
    one_uniform_ms: float
    advance_ms: float


def _median_ms(fn: Callable[[], Any], repeats: int) -> float:
    fn()
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return 1e3 * statistics.median(times)


def time_advance(shape: tuple[int, ...], steps: int, repeats: int) -> AdvanceTiming:
    generator = torch.Generator("cpu").manual_seed(1)
    buffer = torch.empty(steps * _numel(shape))
    scratch = torch.empty(buffer.numel(), dtype=torch.uint8)
    return AdvanceTiming(
        shape, steps,
        _median_ms(lambda: [torch.randn(shape, generator=generator) for _ in range(steps)], repeats),
        _median_ms(lambda: buffer.normal_(generator=generator), repeats),
        _median_ms(lambda: buffer.uniform_(generator=generator), repeats),
        _median_ms(lambda: advance(generator, buffer.numel(), scratch), repeats),
    )


NOISES: dict[str, Callable[[Sequence[int], Sequence[int]], SeededNoise]] = {
    "eager": lambda seeds, shape: SeededNoise(seeds, shape, catch_up=False),
    "catch-up": SeededNoise,
    "skip": SkipNoise,
}


def sample(model: ToyModel, growth: str, noise_kind: str) -> tuple[torch.Tensor, float]:
    """One toy Euler a batch (as `ToyGenerator.generate` samples it): latents and wall seconds."""
    started = time.perf_counter()
    sigmas = get_sigmas_karras(STEPS, model.sigma_min, model.sigma_max)
    noise = NOISES[noise_kind](SEEDS, model.image_shape)
    x = noise.first() * sigmas[0]
    args = model.extra_args([PROMPT] * len(SEEDS), cond_scale=CFG_SCALE)
    latents = SAMPLERS["euler_ancestral"].function(
        model, x, sigmas, extra_args=args, disable=True, noise_sampler=noise,
        growth=plan_growth(len(SEEDS), STEPS, growth),
    )
    return latents, time.perf_counter() - started


@dataclass(frozen=True)
class BatchTiming:
    growth: str
    rows_ratio: float
    plain_ms: float
    eager_ms: float
    catch_up_ms: float
    skip_ms: float
    identical: bool


def time_batches(repeats: int) -> list[BatchTiming]:
    """Interleaved repeats of plain and the three hyperbatch noises per growth schedule."""
    model = ToyModel()
    results = []
    evals = SAMPLERS["euler_ancestral"].evals(STEPS)
    for growth in GROWTHS:
        kinds = [("none", "eager"), (growth, "eager"), (growth, "catch-up"), (growth, "skip")]
        for kind in kinds:
            sample(model, *kind)
        times: dict[tuple[str, str], list[float]] = {kind: [] for kind in kinds}
        identical = True
        for _ in range(repeats):
            outputs = {}
            for kind in kinds:
                outputs[kind], seconds = sample(model, *kind)
                times[kind].append(seconds)
            identical &= torch.equal(outputs[(growth, "eager")], outputs[(growth, "catch-up")])
        ms = [1e3 * statistics.median(times[kind]) for kind in kinds]
        plan = plan_growth(len(SEEDS), STEPS, growth)
        results.append(BatchTiming(growth, plan.cost_ratio(evals), *ms, identical))
    return results


def report(advance_checks: dict[tuple[int, ...], dict[str, bool]], advances: Sequence[AdvanceTiming],
           batches: Sequence[BatchTiming], repeats: int, load_before: float | None, seconds: float) -> str:
    load_after = load_average()
    lines = [
        command_line("bench_seeded_catchup.py"),
        "",
        f"Machine: {machine_line()}. 1-minute load average {load_before:.1f} before and "
        f"{load_after:.1f} after, on 2 cores shared with other jobs. Run time {seconds / 60:.1f} min.",
        "",
        "Is one call of k*n values the same generator stream as k calls of n values (CPU generator, "
        f"float32, k in {', '.join(map(str, CATCH_UP_STEPS))}; same state and same next draw afterwards)?",
        "",
        "| draw shape | values | one torch.randn call | one float32 uniform_ call | one uint8 random_ call (`advance`) |",
        "|---|---|---|---|---|",
    ]
    for shape, checks in advance_checks.items():
        lines.append(
            f"| {'x'.join(map(str, shape))} | {_numel(shape)} | {'identical' if checks['randn'] else 'DIFFERENT'} "
            f"| {'identical' if checks['uniform'] else 'DIFFERENT'} | {'identical' if checks['advance'] else 'DIFFERENT'} |"
        )
    lines += [
        "",
        "Advancing one generator k draws ahead (median ms):",
        "",
        "| draw shape | k | k randn calls | one randn call | one float32 uniform_ call | one uint8 random_ call (`advance`) |",
        "|---|---|---|---|---|---|",
    ]
    for a in advances:
        lines.append(
            f"| {'x'.join(map(str, a.shape))} | {a.steps} | {a.separate_ms:.3f} | {a.one_randn_ms:.3f} "
            f"| {a.one_uniform_ms:.3f} | {a.advance_ms:.3f} |"
        )
    lines += [
        "",
        f"Toy Euler a batches, B={len(SEEDS)}, S={STEPS}, cfg {CFG_SCALE}, median ms of {repeats} interleaved "
        "repeats; ratios to plain:",
        "",
        "| schedule | rows ratio | plain ms | hyper eager ms | catch-up ms | skip ms (wrong noise) "
        "| eager ratio | catch-up ratio | skip ratio | target (rows + 0.1) | catch-up == eager |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for b in batches:
        lines.append(
            f"| {b.growth} | {b.rows_ratio:.3f} | {b.plain_ms:.1f} | {b.eager_ms:.1f} | {b.catch_up_ms:.1f} "
            f"| {b.skip_ms:.1f} | {b.eager_ms / b.plain_ms:.3f} | {b.catch_up_ms / b.plain_ms:.3f} "
            f"| {b.skip_ms / b.plain_ms:.3f} | {b.rows_ratio + WALL_SLACK:.3f} | {'yes' if b.identical else 'NO'} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=15, help="interleaved batches per variant and schedule")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--update-doc", type=Path, default=None)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    load_before = load_average()
    checks = {
        shape: {how: all(stream_identical(shape, k, how) for k in CATCH_UP_STEPS) for how in ("randn", "uniform", "advance")}
        for shape in SHAPES
    }
    advances = [time_advance(shape, 19, args.repeats) for shape in SHAPES[:3]]
    batches = time_batches(args.repeats)
    body = report(checks, advances, batches, args.repeats, load_before, time.perf_counter() - started)
    publish(body, SECTION, args.update_doc)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
