"""When a pinning run stops: convergence criteria for a piecewise-constant landscape, and budgets.

Why not pycma's defaults. pycma (cma/options_parameters.py) stops on tolfun = 1e-11 (the range of
the current population's values and of the recent best values), tolflatfitness = 1 (iterations
tolerated in which the best and a quantile of the population score the same), tolx = 1e-11 (every
coordinate's sigma * std and evolution path below it) and tolstagnation = 100 + 100 N^1.5 / lambda
iterations without improvement of the median. Those numbers suit smooth functions and thousands of
cheap evaluations. A pinning batch costs seconds, and its loss is piecewise constant: rendered
weights have 3 decimals, and a whole region of weights produces the very same images (in the demo,
after the best batch was found at generation 5, 5 to 9 of each generation's 9 individuals scored
exactly the best loss until generation 16). On such a plateau CMA-ES's selection is decided by ties,
its step size grows (it tripled in the demo) and no generation finds anything better. So:

- floor:      the best loss is within the tolerance of 0, the floor of every loss here.
- plateau:    (tolflatfitness, adapted) for `patience` generations in a row the mu best individuals,
              which steer the next generation, all scored within the tolerance of the best so far,
              and the best did not improve: the search walks on the best plateau. Only once the
              best has improved on where the checks started (the baseline, or the best at a
              resume): a search still tied with its starting point has not found a plateau of its
              own yet, and stagnation ends it if it never does (in benchmarks/bench_pinning.py, 1 of
              40 runs tied with the baseline for 2 generations and then improved it by a third).
- tolfun:     the whole generation scored within the tolerance, and so did the best of each of the
              last `patience` generations: the search sits on one plateau (not necessarily the best).
- tolx:       sigma times the largest coordinate std (in weight units) is below `tolx`: nearly every
              proposal renders the same prompt, which the repeat cache answers without a batch.
- stagnation: (tolstagnation, shortened) no improvement of the best by more than the tolerance for
              `stagnation` generations, plateau or not: a quarter of the planned generations, at
              least 5 (`default_stagnation`).
- budget:     `max_batches` generated batches or `max_minutes` of run time.
- generations: the planned number of generations ran (the only end before this module).

The tolerance (default 0.001) is on the loss scale (0 = perfect batch, about 1 = worst plausible).
Convergence criteria are checked after each generation and only over generations since the last
(re)start of the checks, so a run resumed with a larger budget searches on instead of stopping at
once; the floor and the budget are checked before every individual.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Sequence

from lib_pinning.options import PinningOptions

# Criteria whose firing means "the search has settled": a resume restarts their history.
CONVERGENCE = ("floor", "plateau", "tolfun", "tolx", "stagnation")
BUDGET = ("max_batches", "max_minutes")


def default_stagnation(generations: int) -> int:
    """A quarter of the planned generations, at least 5. benchmarks/bench_pinning.py replays the
    rule on its 40 full-length runs (8 prompts x 5 seeds, docs/benchmarks.md): the longest wait
    between two improvements of the best was 4 generations, so 5 ended no run worse than its
    full-length run, at a median 38% of the batches, where the former max(8, G/3) used 44%. The
    cost of the shorter wait: a run whose best improves after 5 or more flat generations stops
    before it (the README's demo shows one, and the command that finds the later improvement). Set
    Stagnation higher when batches are cheap."""
    return max(5, math.ceil(generations / 4))


def planned_batches(options: PinningOptions, generations: int, lambda_: int) -> int:
    """Batches a run generates at most: the baseline plus every generation, capped by the budget."""
    full = 1 + generations * lambda_
    return full if options.max_batches is None else min(full, options.max_batches)


@dataclass(frozen=True)
class StopRules:
    """The criteria's parameters with the automatic ones resolved."""

    enabled: bool
    patience: int
    stagnation: int
    tolerance: float
    tolx: float
    mu: int
    max_batches: int | None
    max_seconds: float | None
    loss_floor: float = 0.0

    @classmethod
    def resolve(cls, options: PinningOptions, generations: int, mu: int) -> StopRules:
        return cls(
            enabled=options.stop_early,
            patience=options.stop_patience,
            stagnation=options.stop_stagnation or default_stagnation(generations),
            tolerance=options.stop_tolerance,
            tolx=options.stop_tolx,
            mu=mu,
            max_batches=options.max_batches,
            max_seconds=None if options.max_minutes is None else options.max_minutes * 60.0,
        )


@dataclass(frozen=True)
class StopDecision:
    """Why a run ended: a criterion name and a sentence for people."""

    criterion: str
    message: str
    generation: int = 0

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class GenerationOutcome:
    """What the criteria read of one finished generation."""

    generation: int
    values: Sequence[float]  # every individual's total (loss + penalties)
    best_so_far: float  # the run's best total after this generation
    spread: float  # sigma * largest coordinate std of the search distribution, in weight units


class StopMonitor:
    """Feeds on finished generations; says when the run should stop."""

    def __init__(self, rules: StopRules) -> None:
        self.rules = rules
        self._reference: float | None = None  # the best total at the last real improvement
        self._since_improvement = 0
        self._flat_streak = 0
        self._left_start = False  # the best improved on where the checks (re)started
        self._generation_bests: list[float] = []

    def restart(self, best: float | None) -> None:
        """Start (or restart: a resumed run gets a fresh chance) from the best total so far."""
        self._reference = best
        self._since_improvement = 0
        self._flat_streak = 0
        self._left_start = False
        self._generation_bests = []

    def observe(self, outcome: GenerationOutcome) -> StopDecision | None:
        rules = self.rules
        tol = rules.tolerance
        values = sorted(float(v) for v in outcome.values)
        best = float(outcome.best_so_far)
        improved_now = self._reference is None or best < self._reference - tol
        if improved_now:
            self._left_start = self._left_start or self._reference is not None
            self._reference = best
            self._since_improvement = 0
        else:
            self._since_improvement += 1
        parents = values[min(rules.mu, len(values)) - 1]
        flat = parents <= best + tol
        self._flat_streak = self._flat_streak + 1 if (flat and not improved_now) else 0
        self._generation_bests.append(values[0])
        if not rules.enabled:
            return None
        g = outcome.generation
        if best <= rules.loss_floor + tol:
            return floor_decision(best, g)
        if self._left_start and self._flat_streak >= rules.patience:
            return StopDecision(
                "plateau",
                f"Stopped on a plateau: for {self._flat_streak} generation(s) the {rules.mu} best "
                f"individuals of each generation scored within {tol:g} of the best ({best:.5g}) "
                "without improving it.",
                g,
            )
        recent = self._generation_bests[-rules.patience:]
        if (
            len(recent) >= rules.patience
            and values[-1] - values[0] < tol
            and max(recent) - min(recent) < tol
        ):
            return StopDecision(
                "tolfun",
                f"Stopped: every batch of generation {g} scored within {tol:g} of the others, and so "
                f"did the best of the last {rules.patience} generation(s) (tolfun).",
                g,
            )
        if outcome.spread < rules.tolx:
            return StopDecision(
                "tolx",
                f"Stopped: the search distribution shrank to a weight std of {outcome.spread:.2g}, "
                f"below {rules.tolx:g}: nearly every proposal renders the same prompt (tolx).",
                g,
            )
        if self._since_improvement >= rules.stagnation:
            return StopDecision(
                "stagnation",
                f"Stopped: the best loss ({best:.5g}) has not improved by more than {tol:g} for "
                f"{self._since_improvement} generations (stagnation).",
                g,
            )
        return None

    def before_individual(self, best: float | None, batches: int, seconds: float, generation: int) -> StopDecision | None:
        """The checks that cannot wait for the end of a generation: the floor and the budget."""
        rules = self.rules
        if rules.enabled and best is not None and best <= rules.loss_floor + rules.tolerance:
            return floor_decision(best, generation)
        if rules.max_batches is not None and batches >= rules.max_batches:
            return StopDecision(
                "max_batches",
                f"Stopped by the budget: {batches} batches generated (Max batches {rules.max_batches}).",
                generation,
            )
        if rules.max_seconds is not None and seconds >= rules.max_seconds:
            return StopDecision(
                "max_minutes",
                f"Stopped by the budget: {seconds / 60:.1f} minutes of run time (Max minutes "
                f"{rules.max_seconds / 60:g}).",
                generation,
            )
        return None


def floor_decision(best: float, generation: int) -> StopDecision:
    return StopDecision(
        "floor",
        f"Stopped: the best loss ({best:.5g}) reached its floor (0); no batch can score better.",
        generation,
    )


def generations_decision(generations: int) -> StopDecision:
    return StopDecision("generations", f"All {generations} planned generations ran.", generations)
