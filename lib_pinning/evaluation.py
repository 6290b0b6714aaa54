"""Evaluating one individual: offsets -> rendered prompt pair -> batch -> guard -> score -> fitness.

`Evaluator` is the run loop's collaborator for everything that happens to a single weight vector:
the repeat cache (an identical rendered prompt pair reuses the earlier result, without calling the
backend), the batches made in the background for a generator with `generate_many`
(lib_pinning.prefetch), the guard's verdict on the images as saved, the objective's score and the
fitness the optimizer minimises. It never writes a record's JSON and never decides when the run
stops: `PinningRun` persists what it returns and keeps the run's bookkeeping.

Failures: only the backend's (`BackendFailure`, including the scoring models running out of GPU
memory) become a failed record; a bug of ours or a `StoreError` propagates and ends the run.
"""

from __future__ import annotations

import logging
import math
import time
import traceback
from dataclasses import replace
from typing import Callable, Sequence

import numpy as np
import torch

from lib_pinning import guard
from lib_pinning.generator import Batch, GenerationRequest, Generator
from lib_pinning.objectives.compose import CompositeObjective
from lib_pinning.optimizer import FAILED_FITNESS, CmaSettings, PinningOptimizer
from lib_pinning.options import PinningOptions
from lib_pinning.prefetch import CallCancelled, Prefetch, prefetch_one
from lib_pinning.prompt import PromptSpace
from lib_pinning.store import IndividualRecord, RunStore

log = logging.getLogger(__name__)


class RunStopped(Exception):
    """Raised inside the loop when the caller asked to stop."""


class BatchNotMade(RunStopped):
    """The individual's batch was asked of the background call (several servers) but the stop kept
    it from starting: nothing of it exists. On a stop that lets the batches in flight finish, the
    run still takes the generation's other batches that were made before it stops."""


class BackendFailure(Exception):
    """The generator failed on one batch (out of memory, an extension's error): the individual is
    recorded as failed and the run goes on. Anything else raised while evaluating is a bug of ours
    (or the run directory's StoreError) and ends the run with its traceback."""

    def __init__(self, cause: BaseException) -> None:
        super().__init__("".join(traceback.format_exception_only(type(cause), cause)).strip())


def quantize(images: torch.Tensor) -> torch.Tensor:
    """Round to 8 bits as the images are saved, so scores match what a rebuild reads from disk."""
    return images.clamp(0, 1).mul(255).round().div(255)


def weights_json(weights: Sequence[Sequence[float]]) -> list[list[float]]:
    return [[float(w) for w in unit] for unit in weights]


class Evaluator:
    """Makes the records of a run's individuals; the run persists and accounts for them."""

    def __init__(
        self,
        *,
        store: RunStore,
        space: PromptSpace,
        generator: Generator,
        options: PinningOptions,
        seeds: tuple[int, ...],
        settings: CmaSettings,
        optimizer: PinningOptimizer,
    ) -> None:
        self.store = store
        self.space = space
        self.generator = generator
        self.options = options
        self.seeds = seeds
        self.settings = settings
        self.optimizer = optimizer
        self.objective: CompositeObjective | None = None  # set once the targets exist
        self.repeats = 0
        self._seen: dict[tuple[str, str], tuple[int, int]] = {}  # rendered pair -> first individual
        self._prefetched: Prefetch | None = None  # the generation's batches made in the background

    # one individual ---------------------------------------------------------------------------------

    def produce_baseline(self, stop: Callable[[], bool]) -> tuple[IndividualRecord, Batch]:
        """The batch of the prompt as written (x = 0), saved, not yet scored: without user targets
        it becomes the target set, so the objective is built from it before `score_baseline`.
        Made like a generation's batches (through `generate_many` where the generator has it), so
        that `stop()` reaches the request in flight."""
        zero = np.zeros(self.space.dim)
        rendered = self.space.render(zero)
        self._prefetched = prefetch_one(self.generator, GenerationRequest(*rendered, self.seeds), stop)
        try:
            return self.produce(0, 0, zero, zero, rendered)
        finally:
            self.end_prefetch()

    def score_baseline(self, record: IndividualRecord, batch: Batch) -> None:
        zero = np.zeros(self.space.dim)
        self.score(record, batch, zero)
        record.fitness = list(self.fitness_of(record, zero))

    def evaluate(self, generation: int, index: int, proposed: np.ndarray) -> IndividualRecord:
        """Generate and score one proposed individual; a backend failure is a failed record, not raised."""
        evaluated: list[IndividualRecord] = []

        def evaluate_point(x_evaluated: np.ndarray) -> tuple[float, ...]:
            # The size limit's penalty wrapper calls this with the point actually rendered.
            x = np.asarray(x_evaluated, dtype=float)
            record = self._evaluate_point(generation, index, np.asarray(proposed), x)
            evaluated.append(record)
            return self.fitness_of(record, x)

        fitness = self.optimizer.penalized(evaluate_point)(proposed)
        record = evaluated[-1]
        record.fitness = [float(v) for v in fitness]
        # The size limit's penalty is added to every objective alike; keep it for the run's best.
        record.penalty = record.fitness[0] - self.fitness_of(record, np.asarray(record.x_evaluated))[0]
        return record

    def _evaluate_point(self, generation: int, index: int, proposed: np.ndarray, x: np.ndarray) -> IndividualRecord:
        rendered = self.space.render(x)
        repeat = self._repeat(generation, index, proposed, x, rendered)
        if repeat is not None:
            return repeat
        try:
            record, batch = self.produce(generation, index, proposed, x, rendered)
            try:
                self.score(record, batch, x)
            except torch.cuda.OutOfMemoryError as e:  # the scoring models' GPU memory: a resource, not a bug
                raise BackendFailure(e) from e
            return record
        except BackendFailure as e:
            log.error("individual %d/%d failed: %s", generation, index, e, exc_info=log.isEnabledFor(logging.DEBUG))
            prompt, negative = rendered
            return IndividualRecord(
                generation=generation, index=index, x=proposed.tolist(), x_evaluated=x.tolist(),
                weights=weights_json(self.space.weights(x)), prompt=prompt, negative_prompt=negative,
                seeds=list(self.seeds), fitness=[], loss=FAILED_FITNESS, status="failed", error=str(e),
            )

    def produce(
        self, generation: int, index: int, proposed: np.ndarray, x: np.ndarray, rendered: tuple[str, str]
    ) -> tuple[IndividualRecord, Batch]:
        """Generate and save the batch of offsets `x`, rendered as the prompt pair `rendered` (not yet scored)."""
        prompt, negative = rendered
        started = time.perf_counter()
        try:
            request = GenerationRequest(prompt, negative, self.seeds)
            try:
                prefetched = self._prefetched.take(request) if self._prefetched is not None else None
            except CallCancelled as e:
                raise BatchNotMade(str(e)) from None  # the servers were told to stop: the run is being stopped
            if isinstance(prefetched, BaseException):
                raise prefetched
            batch = prefetched if prefetched is not None else self.generator.generate(request)
        except RunStopped:  # the WebUI's Interrupt/Skip, seen by the generator
            raise
        except Exception as e:
            raise BackendFailure(e) from e
        seconds = time.perf_counter() - started
        # Non-finite pixels become the black the WebUI shows; the guard judges the images as saved.
        images, nonfinite = guard.sanitize(batch.images, batch.nonfinite)
        batch = replace(batch, images=quantize(images), nonfinite=nonfinite)
        verdict = guard.inspect(batch.images, nonfinite, guard.GuardThresholds.from_options(self.options))
        record = IndividualRecord(
            generation=generation, index=index, x=proposed.tolist(), x_evaluated=x.tolist(),
            weights=weights_json(self.space.weights(x)), prompt=prompt, negative_prompt=negative,
            seeds=list(batch.seeds), fitness=[], loss=math.nan,
            images=self.store.save_batch_images(generation, index, batch.images, batch.seeds),
            timings={**batch.timings, "generate": seconds}, model_rows=batch.model_rows,
            growth=batch.growth.to_dict() if batch.growth is not None else None,
            guard=verdict.to_json(penalised=self.options.guard),
            guard_penalty=guard.penalty(verdict.share_degenerate) if self.options.guard else 0.0,
        )
        if verdict.count:
            level = logging.WARNING if (generation, index) == (0, 0) else logging.DEBUG
            log.log(level, "individual %d/%d: degenerate images (%s)%s", generation, index,
                    guard.describe(verdict.reason_counts(), len(batch)),
                    ": the prompt as written already fails on this model" if level == logging.WARNING else "")
        return record, batch

    def score(self, record: IndividualRecord, batch: Batch, x: np.ndarray) -> None:
        assert self.objective is not None, "the objective is built from the targets before any scoring"
        started = time.perf_counter()
        scored = self.objective.score(batch, x)
        record.loss = scored.loss
        record.objective_values = list(scored.values)
        record.components = scored.components
        record.objectives = {name: evaluation.to_json() for name, evaluation in scored.evaluations.items()}
        record.timings["score"] = time.perf_counter() - started

    def fitness_of(self, record: IndividualRecord, x: np.ndarray) -> tuple[float, ...]:
        """What the optimizer minimises: the loss, or each term (pareto), then ||x|| with a size limit."""
        if record.status != "ok":
            return (FAILED_FITNESS,) * self.optimizer.n_objectives
        fitness = list(record.objective_values) if self.options.combine == "pareto" else [record.loss]
        if self.settings.size_limit > 0:
            fitness.append(float(np.linalg.norm(x)))
        if len(fitness) != self.optimizer.n_objectives:
            raise RuntimeError(f"{len(fitness)} objective values for a {self.optimizer.n_objectives}-objective search")
        # Degenerate images: every objective worsens past any clean batch's (guard.DEGENERATE_OFFSET),
        # so CMA-ES ranks the batch last and MO-CMA-ES finds it dominated.
        return tuple(v + record.guard_penalty for v in fitness)

    # repeats ------------------------------------------------------------------------------------------

    def note(self, record: IndividualRecord) -> None:
        """Count a persisted record and remember its prompt pair for the repeat cache (a failed
        individual is not remembered: its failure may not be the prompt's)."""
        if record.repeat_of is not None:
            self.repeats += 1
        if record.status == "ok":
            self._seen.setdefault((record.prompt, record.negative_prompt), (record.generation, record.index))

    def _repeat(
        self, generation: int, index: int, proposed: np.ndarray, x: np.ndarray, rendered: tuple[str, str]
    ) -> IndividualRecord | None:
        """The record of an earlier individual with the same rendered prompt pair, re-keyed to this
        one (same images, scores and guard verdict: same prompts and seeds give the same batch), or None."""
        key = self._seen.get(rendered)
        if key is None:
            return None
        source = self.store.read_individual(*key)
        if source is None or source.status != "ok":
            return None
        record = IndividualRecord.from_json(source.to_json())
        record.generation, record.index = generation, index
        record.x, record.x_evaluated = proposed.tolist(), x.tolist()
        record.weights = weights_json(self.space.weights(x))
        record.fitness, record.penalty = [], 0.0
        record.timings, record.model_rows = {}, 0
        record.repeat_of = list(key)
        record.images = self.store.link_batch_images(source, generation, index)
        log.debug("individual %d/%d repeats %d/%d: result reused, no batch generated", generation, index, *key)
        return record

    # batches made in the background -------------------------------------------------------------------

    def prefetch(
        self, generation: int, population: Sequence[np.ndarray], stop: Callable[[], bool], batches_left: int | None
    ) -> None:
        """A generator with `generate_many(requests, cancel)` (lib_pinning.remote: several servers)
        gets the batches the generation needs at once, to make them in parallel in the background
        (lib_pinning.prefetch); `produce` takes them in proposal order, scoring each while later
        ones are still being made, so the records are those the one-by-one loop writes.
        `batches_left`: what Max batches still allows (None: no limit)."""
        many = getattr(self.generator, "generate_many", None)
        if many is None or stop():
            return
        requests: list[GenerationRequest] = []
        for index, individual in enumerate(population):
            record = self.store.read_individual(generation, index)
            if record is not None and np.allclose(record.x, individual, rtol=0, atol=1e-12):
                continue
            rendered = self.space.render(self._evaluated_point(individual))
            request = GenerationRequest(*rendered, self.seeds)
            if rendered not in self._seen and request not in requests:  # repeats generate nothing
                requests.append(request)
        if batches_left is not None:
            requests = requests[:max(0, batches_left)]
        self._prefetched = Prefetch(many, requests, stop)

    def finishes_in_flight(self, proposed: np.ndarray) -> bool:
        """Whether the batch of `proposed` is this generation's to finish on a stop that is not a
        cut ("Stop generating" with servers): it was asked of a draining call, so it is made if it
        was in flight and comes back not made (BatchNotMade) if not. The run takes such batches
        before it stops, as it keeps the batch under way on this WebUI alone; a batch the call was
        not asked for is never started after the stop."""
        if self._prefetched is None or not self._prefetched.drains:
            return False
        rendered = self.space.render(self._evaluated_point(proposed))
        return self._prefetched.holds(GenerationRequest(*rendered, self.seeds))

    def end_prefetch(self) -> None:
        """Stop and drop what the background made for this generation (called whatever happened)."""
        if self._prefetched is not None:
            self._prefetched.close()
            self._prefetched = None

    def _evaluated_point(self, proposed: np.ndarray) -> np.ndarray:
        """The point the size limit's penalty wrapper renders for a proposal, without evaluating it."""
        points: list[np.ndarray] = []

        def capture(x: np.ndarray) -> tuple[float, ...]:
            points.append(np.asarray(x, dtype=float))
            return (0.0,) * self.optimizer.n_objectives

        self.optimizer.penalized(capture)(proposed)
        return points[-1]
