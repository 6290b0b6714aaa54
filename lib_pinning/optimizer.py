"""CMA-ES over prompt weight offsets, on DEAP.

Two strategies, chosen by the options:
- `cma.Strategy` (single objective): the default; fitness = (weighted loss,).
- `cma.StrategyMultiObjective` (MO-CMA-ES) when there is more than one objective: with "pareto"
  combination each objective term is its own objective; with a size limit the distance of the
  offsets from the prompt, ||x||, is one more, so the run also yields the Pareto front of "how
  pinned" against "how far from what you wrote". Offsets beyond the limit are evaluated at their
  closest valid point and penalised (`tools.ClosestValidPenalty`).

Long prompts. With one weight per unit, a 40-100 tag prompt is a 40-150 dimensional search, in
which CMA-ES learns its covariance at rates of order 1/N^2 and the default budget grows past a
thousand batches. The "groups" search space (the default above `groups_above` units) gives runs of
neighbouring units one shared offset: x = G z, G a 0/1 membership matrix of contiguous groups that
never cross from the prompt into the negative prompt. CMA-ES then searches the few group offsets z
(about sqrt(N) of them), with lambda, mu and the generations resolved for that dimension; the run,
the rendering and the report still see one offset per unit. Measured on the toy (a 44-tag, 74-unit
prompt, batch 8, 3 image seeds, 150-batch budget, guard and nearest_mode loss on): units reached
a median loss of 0.36 of the baseline's (within-batch variety -87%) with 113-150 batches; 9 groups
reached 0.356 (variety -87%) and stopped on a plateau after 31-81 batches (median 71).

DEAP draws from numpy's *global* RNG, which other threads of the process (the WebUI's) share. The
search never lets DEAP draw: the only draws DEAP's strategies make are in their `generate`
(`Strategy`: `standard_normal`; `StrategyMultiObjective`: `randn` and, with mu < lambda,
`randint` for the parents), so `ask` draws those numbers from the run's private
`numpy.random.RandomState` and applies DEAP's own formula to them (`_sample_single`,
`_sample_multi`); `update` draws nothing. A private generator rather than a lock around the global
one: a lock only helps if every other numpy user in the process takes it, and the WebUI's do not.
A RandomState (not a Generator) gives the very numbers the global functions gave with the same
state, so run directories of earlier versions resume to the same result. The state is
checkpointed with the strategy; arrays keep their memory order through the checkpoint (DEAP's
B and BD are Fortran-ordered, and numpy's products round differently by order), so a resumed
search continues bit for bit. Checkpoints are JSON, never pickles, so a run directory from
elsewhere cannot execute code.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np
from deap import base, cma, creator, tools

from lib_pinning.options import PinningOptions

log = logging.getLogger(__name__)

# Fitness given to an individual whose evaluation failed: finite, so MO-CMA-ES hypervolume
# selection (which needs a finite reference point) still works, and worse than any real loss.
FAILED_FITNESS = 1e6


def _creator_classes(n_objectives: int) -> tuple[type, type]:
    """DEAP's creator registers global classes; create each once per process (no warnings)."""
    fitness_name = f"PinningFitness{n_objectives}"
    individual_name = f"PinningIndividual{n_objectives}"
    if not hasattr(creator, fitness_name):
        creator.create(fitness_name, base.Fitness, weights=(-1.0,) * n_objectives)
    if not hasattr(creator, individual_name):
        creator.create(individual_name, np.ndarray, fitness=getattr(creator, fitness_name))
    return getattr(creator, fitness_name), getattr(creator, individual_name)


def _sample_single(strategy: Any, random: np.random.RandomState, ind_init: type) -> list[np.ndarray]:
    """`cma.Strategy.generate` with the draws taken from `random` (DEAP's formula, same numbers)."""
    arz = random.standard_normal((strategy.lambda_, strategy.dim))
    arz = strategy.centroid + strategy.sigma * np.dot(arz, strategy.BD.T)
    return [ind_init(a) for a in arz]


def _sample_multi(strategy: Any, random: np.random.RandomState, ind_init: type) -> list[np.ndarray]:
    """`cma.StrategyMultiObjective.generate` with the draws taken from `random` (DEAP's formula:
    one offspring per parent, or parents drawn from the first front when mu < lambda)."""
    arz = random.randn(strategy.lambda_, strategy.dim)
    individuals = []
    # update() tells offspring from parents by this tag.
    for i, parent in enumerate(strategy.parents):
        parent._ps = "p", i
    if strategy.lambda_ == strategy.mu:
        for i in range(strategy.lambda_):
            individuals.append(ind_init(strategy.parents[i] + strategy.sigmas[i] * np.dot(strategy.A[i], arz[i])))
            individuals[-1]._ps = "o", i
        return individuals
    front = tools.sortLogNondominated(strategy.parents, len(strategy.parents), first_front_only=True)
    for i in range(strategy.lambda_):
        _, p = front[random.randint(0, len(front))]._ps
        individuals.append(ind_init(strategy.parents[p] + strategy.sigmas[p] * np.dot(strategy.A[p], arz[i])))
        individuals[-1]._ps = "o", p
    return individuals


@dataclass(frozen=True)
class CmaSettings:
    """Strategy parameters with the automatic ones resolved for a problem of `dim` weights."""

    dim: int  # units: the length of the offsets x the run renders
    generations: int
    lambda_: int
    mu: int
    sigma: float
    centroid_radius: float
    weights: str
    overrides: dict[str, float]
    size_limit: float
    size_limit_error: float
    size_limit_weight: float
    n_objectives: int = 1
    # (start, stop) unit ranges sharing one offset each (the "groups" search space); () = one per unit.
    groups: tuple[tuple[int, int], ...] = ()

    @classmethod
    def resolve(
        cls, options: PinningOptions, dim: int, objective_terms: int = 1, blocks: Sequence[int] | None = None
    ) -> CmaSettings:
        """Settings for `dim` weights; `objective_terms` counts the terms a "pareto" run separates;
        `blocks` are the unit counts of the prompt and the negative prompt, which groups never mix
        (default: one block)."""
        if dim < 1:
            raise ValueError("nothing to optimise: the prompt has no weightable units")
        groups = resolve_groups(options, dim, blocks)
        search_dim = len(groups) or dim
        lambda_ = options.cma_lambda or int(4 + 3 * math.log(search_dim))
        mu = options.cma_mu or int(lambda_ / 2)
        if mu > lambda_:
            raise ValueError(f"Mu ({mu}) must not exceed lambda ({lambda_})")
        overrides = {
            name: value
            for name, value in (
                ("cs", options.cma_cs),
                ("damps", options.cma_damps),
                ("ccum", options.cma_ccum),
                ("ccov1", options.cma_ccov1),
                ("ccovmu", options.cma_ccovmu),
            )
            if value is not None
        }
        limit = options.size_limit
        return cls(
            dim=dim,
            generations=options.default_generations(search_dim),
            lambda_=lambda_,
            mu=mu,
            sigma=options.initial_std,
            centroid_radius=options.centroid_radius,
            weights=options.cma_weights,
            overrides=overrides,
            size_limit=limit,
            size_limit_error=limit / 100 if options.size_limit_error is None else options.size_limit_error,
            size_limit_weight=limit * 10 if options.size_limit_weight is None else options.size_limit_weight,
            n_objectives=(objective_terms if options.combine == "pareto" else 1) + (1 if limit > 0 else 0),
            groups=groups,
        )

    @property
    def multi_objective(self) -> bool:
        return self.n_objectives > 1

    @property
    def search_dim(self) -> int:
        """Dimension CMA-ES works in: the number of groups, or of units."""
        return len(self.groups) or self.dim

    def lift(self, z: Sequence[float] | np.ndarray) -> np.ndarray:
        """Per-unit offsets x of search coordinates z (z itself without groups)."""
        z = np.asarray(z, dtype=float)
        if not self.groups:
            return z.copy()
        x = np.empty(self.dim)
        for value, (start, stop) in zip(z, self.groups):
            x[start:stop] = value
        return x


def default_group_count(dim: int) -> int:
    """About sqrt(N) groups of about sqrt(N) units each (at least 2)."""
    return max(2, round(math.sqrt(dim)))


def resolve_groups(options: PinningOptions, dim: int, blocks: Sequence[int] | None) -> tuple[tuple[int, int], ...]:
    """The groups search space's unit ranges, or () for one offset per unit."""
    use = options.search_space == "groups" or (options.search_space == "auto" and dim > options.groups_above)
    if not use:
        return ()
    sizes = [b for b in (blocks if blocks is not None else (dim,)) if b > 0]
    if sum(sizes) != dim:
        raise ValueError(f"blocks {list(sizes)} do not add up to {dim} units")
    count = min(dim, options.search_groups or default_group_count(dim))
    count = max(count, len(sizes))
    # Groups in proportion to each block's units, at least one per block.
    shares = [max(1, round(count * b / dim)) for b in sizes]
    while sum(shares) > count and max(shares) > 1:
        shares[shares.index(max(shares))] -= 1
    groups: list[tuple[int, int]] = []
    first = 0
    for size, share in zip(sizes, shares):
        share = min(share, size)
        edges = np.linspace(0, size, share + 1).round().astype(int)
        groups.extend((first + int(a), first + int(b)) for a, b in zip(edges[:-1], edges[1:]) if b > a)
        first += size
    return tuple(groups)


class PinningOptimizer:
    """Ask/tell wrapper around a DEAP strategy with JSON checkpoints."""

    def __init__(self, settings: CmaSettings, seed: int) -> None:
        self.settings = settings
        self.n_objectives = settings.n_objectives
        self._fitness_cls, self._individual_cls = _creator_classes(self.n_objectives)
        self._random = np.random.RandomState(seed % 2**32)
        centroid = self._random.uniform(-settings.centroid_radius, settings.centroid_radius, settings.search_dim)
        self.centroid0 = centroid
        self.generation = 0  # generations completed (told)
        self._asked: list[np.ndarray] = []  # the last ask()'s search points (z), for tell()
        self.strategy: Any = None
        if not settings.multi_objective:
            self.strategy = cma.Strategy(
                centroid=centroid,
                sigma=settings.sigma,
                lambda_=settings.lambda_,
                mu=settings.mu,
                weights=settings.weights,
                **settings.overrides,
            )

    # ask / tell -----------------------------------------------------------------------------

    def ask(self) -> list[np.ndarray]:
        """The next generation's population as per-unit offsets (deterministic in the checkpointed
        state); with groups, the search points behind them are kept for `tell`."""
        if self.strategy is None:
            # MO-CMA-ES starts from an evaluated population: sample the first one the way
            # the single-objective strategy would (centroid + sigma * N(0, I)).
            z = self._random.standard_normal((self.settings.lambda_, self.settings.search_dim))
            population = [self._individual_cls(self.centroid0 + self.settings.sigma * row) for row in z]
        elif isinstance(self.strategy, cma.StrategyMultiObjective):
            population = _sample_multi(self.strategy, self._random, self._individual_cls)
        else:
            population = _sample_single(self.strategy, self._random, self._individual_cls)
        if not self.settings.groups:
            return population
        self._asked = population
        return [self._individual_cls(self.settings.lift(z)) for z in population]

    def tell(self, population: Sequence[np.ndarray], fitnesses: Sequence[Sequence[float]]) -> None:
        if len(population) != len(fitnesses):
            raise ValueError("one fitness per individual is required")
        if self.settings.groups:
            if len(self._asked) != len(population):
                raise ValueError("tell() needs the population of the last ask()")
            population = self._asked
        for individual, fitness in zip(population, fitnesses):
            if len(fitness) != self.n_objectives:
                raise ValueError(f"expected {self.n_objectives} objective values, got {len(fitness)}")
            individual.fitness.values = tuple(float(v) for v in fitness)
        population = list(population)
        # Neither constructor nor update draws random numbers (module docstring).
        if self.strategy is None:
            self.strategy = cma.StrategyMultiObjective(
                population,
                sigma=self.settings.sigma,
                mu=self.settings.mu,
                lambda_=self.settings.lambda_,
            )
        else:
            self.strategy.update(population)
        self.generation += 1

    def individual(self, values: Sequence[float]) -> np.ndarray:
        return self._individual_cls(np.asarray(values, dtype=float))

    # size limit -------------------------------------------------------------------------------

    def penalized(
        self, evaluate: Callable[[np.ndarray], tuple[float, ...]]
    ) -> Callable[[np.ndarray], tuple[float, ...]]:
        """Wrap an evaluation with the size limit's closest-valid penalty (identity without one).

        The wrapped function receives the point actually evaluated: the individual itself when it
        is within the limit (plus its tolerance), else its projection onto the limit sphere.
        """
        s = self.settings
        if s.size_limit <= 0:
            return evaluate

        def feasible(x: np.ndarray) -> bool:
            return float(np.linalg.norm(x)) <= s.size_limit + s.size_limit_error

        def closest_feasible(x: np.ndarray) -> np.ndarray:
            projected = self._individual_cls(np.asarray(x) * (s.size_limit / float(np.linalg.norm(x))))
            return projected

        def distance(valid: np.ndarray, original: np.ndarray) -> float:
            diff = np.asarray(original) - np.asarray(valid)
            return float(np.dot(diff, diff))

        return tools.ClosestValidPenalty(feasible, closest_feasible, s.size_limit_weight, distance)(evaluate)

    # statistics ---------------------------------------------------------------------------------

    @property
    def sigma(self) -> float:
        if self.strategy is None:
            return self.settings.sigma
        if isinstance(self.strategy, cma.StrategyMultiObjective):
            return float(np.mean(self.strategy.sigmas))
        return float(self.strategy.sigma)

    @property
    def axis_scales(self) -> np.ndarray:
        """Squared lengths of the search distribution's main axes (the covariance eigenvalues, in
        the search space: one per group with groups)."""
        if isinstance(self.strategy, cma.Strategy):
            return np.asarray(self.strategy.diagD, dtype=float) ** 2
        return np.ones(self.settings.search_dim)

    @property
    def spread(self) -> float:
        """sigma times the largest coordinate standard deviation, in weight units (pycma's tolx
        measure): how far the next proposals may still move any one weight."""
        if isinstance(self.strategy, cma.Strategy):
            return float(self.strategy.sigma * np.sqrt(np.max(np.diag(self.strategy.C))))
        return self.sigma

    @property
    def axis_ratio(self) -> float:
        scales = self.axis_scales
        return float(scales.max() / scales.min())

    @property
    def centroid(self) -> np.ndarray:
        """The search distribution's mean as per-unit offsets."""
        if isinstance(self.strategy, cma.Strategy):
            return self.settings.lift(self.strategy.centroid)
        return self.settings.lift(self.centroid0)

    # checkpoints --------------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue exactly: strategy attributes and the RNG state."""
        strategy = None
        if self.strategy is not None:
            strategy = {
                "type": type(self.strategy).__name__,
                "attributes": {k: _encode(v) for k, v in vars(self.strategy).items() if k != "indicator"},
            }
        return {
            "generation": self.generation,
            "centroid0": self.centroid0.tolist(),
            "rng": _encode(self._random.get_state()),
            "strategy": strategy,
        }

    @classmethod
    def from_state(cls, settings: CmaSettings, state: dict[str, Any]) -> PinningOptimizer:
        self = cls.__new__(cls)
        self.settings = settings
        self.n_objectives = settings.n_objectives
        self._fitness_cls, self._individual_cls = _creator_classes(self.n_objectives)
        self._random = np.random.RandomState()
        self._random.set_state(_decode(state["rng"], self._individual_cls))
        self.centroid0 = np.asarray(state["centroid0"], dtype=float)
        self.generation = int(state["generation"])
        self._asked = []
        self.strategy = None
        if state["strategy"] is not None:
            kind = {"Strategy": cma.Strategy, "StrategyMultiObjective": cma.StrategyMultiObjective}[
                state["strategy"]["type"]
            ]
            strategy = kind.__new__(kind)
            attributes = {
                k: _decode(v, self._individual_cls) for k, v in state["strategy"]["attributes"].items()
            }
            vars(strategy).update(attributes)
            if kind is cma.StrategyMultiObjective:
                strategy.indicator = tools.hypervolume
            self.strategy = strategy
        return self


def _encode(value: Any) -> Any:
    """JSON encoding of the attribute types DEAP strategies hold (arrays, individuals, tuples)."""
    if hasattr(value, "fitness") and isinstance(value, np.ndarray):
        return {
            "__individual__": value.tolist(),
            "fitness": list(value.fitness.values),
            "ps": list(getattr(value, "_ps", ())),
        }
    if isinstance(value, np.ndarray):
        encoded = {"__ndarray__": value.tolist(), "dtype": str(value.dtype)}
        if value.ndim > 1 and value.flags.f_contiguous and not value.flags.c_contiguous:
            encoded["order"] = "F"  # DEAP's B and BD: products with them round by memory order
        return encoded
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, tuple):
        return {"__tuple__": [_encode(v) for v in value]}
    if isinstance(value, list):
        return [_encode(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _encode(v) for k, v in value.items()}
    if isinstance(value, float) and not math.isfinite(value):
        return {"__float__": repr(value)}
    return value


def _decode(value: Any, individual_cls: type) -> Any:
    if isinstance(value, dict):
        if "__ndarray__" in value:
            return np.asarray(value["__ndarray__"], dtype=value["dtype"], order=value.get("order", "C"))
        if "__individual__" in value:
            individual = individual_cls(np.asarray(value["__individual__"], dtype=float))
            individual.fitness.values = tuple(value["fitness"])
            if value["ps"]:
                individual._ps = tuple(value["ps"])
            return individual
        if "__tuple__" in value:
            return tuple(_decode(v, individual_cls) for v in value["__tuple__"])
        if "__float__" in value:
            return float(value["__float__"])
        return {k: _decode(v, individual_cls) for k, v in value.items()}
    if isinstance(value, list):
        return [_decode(v, individual_cls) for v in value]
    return value
