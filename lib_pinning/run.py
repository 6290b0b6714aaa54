"""The pinning loop: propose -> render -> generate -> score -> persist -> update.

1. The baseline (x = 0, the prompt as written) is generated first; with no user targets its batch
   becomes the target set.
2. Each generation, CMA-ES proposes weight offsets; each is rendered to an emphasis prompt,
   generated with the run's fixed seeds (the same seeds for every individual), scored, and its
   record persisted before the strategy is updated.
3. After each generation: statistics, a checkpoint and the report are written, so an interrupted
   or crashed run is readable and resumable; `resume` continues it to the same result.

When it ends (lib_pinning.stopping): after the planned generations; earlier when the search has
settled (the loss floor, a plateau, tolfun, tolx, stagnation) or the budget is spent (max batches,
max minutes). run.json records why (`stop_criterion`, `stop_reason`); a run stopped so can be
resumed with a larger budget and continues the same search.

Repeats: an individual whose rendered prompt pair equals one already generated reuses that result
(`repeat_of`, images hard-linked) without calling the backend; rendering rounds weights to 3
decimals, and on a plateau CMA-ES proposes the same prompt again and again.

Cancelling: a cancel callable (the WebUI's Interrupt/Skip, the CLI's first Ctrl-C) is checked before
every individual, so the run stops after the current one; a KeyboardInterrupt that arrives in the
middle of an individual drops that individual (it was never persisted) and still finalises the run.

Faults: a backend failure (`BackendFailure`) is the individual's, recorded and the run goes on; a
bug of ours ends the run with its traceback; a `StoreError` (the run folder cannot be written, e.g.
a full disk) ends it without recording anything for the individual, and `resume` redoes what is
missing (records, whole generations, the targets), replaying the search from its seed when the
checkpoint is past a missing record.
"""

from __future__ import annotations

import logging
import math
import shutil
import signal
import threading
import time
import traceback
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Iterator, Protocol, Sequence

import numpy as np
import torch

from lib_pinning import __version__, guard
from lib_pinning.generator import Batch, GenerationRequest, Generator
from lib_pinning.objectives.compose import CompositeObjective, active_terms, build_objective
from lib_pinning.objectives.targets import load_targets
from lib_pinning.optimizer import FAILED_FITNESS, CmaSettings, PinningOptimizer
from lib_pinning.options import PinningOptions
from lib_pinning.bounds import WeightRange
from lib_pinning.prefetch import CallCancelled, Prefetch
from lib_pinning.preflight import check_run_input
from lib_pinning.prompt import PromptSpace
from lib_pinning.stopping import (
    CONVERGENCE, GenerationOutcome, StopDecision, StopMonitor, StopRules, generations_decision,
    planned_batches,
)
from lib_pinning.store import RUN_KEYS, GenerationRecord, IndividualRecord, RunStore, StoreError

log = logging.getLogger(__name__)

# Consecutive failed individuals after which the run stops: the backend is broken, not the prompt.
MAX_CONSECUTIVE_FAILURES = 3


@dataclass
class RunEvent:
    """Progress for front ends (CLI progress bar, WebUI job counters)."""

    kind: str  # "start", "individual", "generation", "end"
    generation: int
    done: int  # individuals evaluated so far, baseline included
    total: int  # individuals the whole run evaluates
    best_fitness: float | None
    record: IndividualRecord | GenerationRecord | None = None
    message: str = ""
    batches: int = 0  # batches generated so far (repeats cost none)
    planned_batches: int = 0  # batches the run generates at most (generations and budget)
    elapsed: float = 0.0  # seconds of run time so far, every session of a resumed run included


@dataclass
class RunResult:
    run_dir: Path
    status: str  # "finished", "interrupted", "failed"
    best: IndividualRecord
    baseline: IndividualRecord
    generations_done: int
    evaluations: int
    error: str | None = None
    # Generations most of whose images the guard found degenerate (lib_pinning.guard.MAJORITY).
    degenerate_generations: list[int] = field(default_factory=list)
    stop_criterion: str = ""  # lib_pinning.stopping's criterion, "cancelled" or "failed"
    stop_reason: str = ""  # why the run ended, in a sentence
    batches: int = 0  # batches generated (evaluations minus repeats)
    repeats: int = 0  # individuals answered from an identical earlier prompt pair
    report_error: str | None = None  # why the final report refresh failed (None: it was written)

    @property
    def report_path(self) -> Path:
        return self.run_dir / "index.html"


class Reporter(Protocol):
    """Refreshes the run's artifacts: after each generation, and with final=True when the run ends
    (finished, interrupted or failed)."""

    def update(self, store: RunStore, final: bool = False) -> None: ...


class RunStopped(Exception):
    """Raised inside the loop when the caller asked to stop."""


class RunEndedEarly(RuntimeError):
    """The run ended (interrupted or failed) before its baseline batch existed: no result."""

    def __init__(self, message: str, status: str) -> None:
        super().__init__(message)
        self.status = status


class BackendFailure(Exception):
    """The generator failed on one batch (out of memory, an extension's error): the individual is
    recorded as failed and the run goes on. Anything else raised while evaluating is a bug of ours
    (or the run directory's StoreError) and ends the run with its traceback."""

    def __init__(self, cause: BaseException) -> None:
        super().__init__("".join(traceback.format_exception_only(type(cause), cause)).strip())


def derive_seeds(seed: int, batch_size: int) -> tuple[int, ...]:
    """The WebUI's convention: consecutive seeds from the first."""
    return tuple(int(seed) + i for i in range(batch_size))


def _weights_json(weights: Sequence[Sequence[float]]) -> list[list[float]]:
    return [[float(w) for w in unit] for unit in weights]


def quantize(images: torch.Tensor) -> torch.Tensor:
    """Round to 8 bits as the images are saved, so scores match what a rebuild reads from disk."""
    return images.clamp(0, 1).mul(255).round().div(255)


class PinningRun:
    """One pinning run bound to a run directory; build with `start` or `resume`."""

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
        run_info: dict[str, Any],
    ) -> None:
        self.store = store
        self.space = space
        self.generator = generator
        self.options = options
        self.seeds = seeds
        self.settings = settings
        self.optimizer = optimizer
        self.run_info = run_info
        self.objective: CompositeObjective | None = None
        self.best: IndividualRecord | None = None
        self.baseline: IndividualRecord | None = None
        self.evaluations = 0
        self._consecutive_failures = 0
        self.repeats = 0
        self._seen: dict[tuple[str, str], tuple[int, int]] = {}  # rendered pair -> first individual
        self.stop_rules = StopRules.resolve(options, settings.generations, settings.mu)
        self.monitor = StopMonitor(self.stop_rules)
        self.stop_decision: StopDecision | None = None
        self._generation_records: list[IndividualRecord] = []
        self._prefetched: Prefetch | None = None  # the generation's batches made in the background
        self._session_started = time.perf_counter()
        self._seconds_before = float(run_info.get("seconds", 0.0))  # earlier sessions' run time

    # construction ------------------------------------------------------------------------------

    @classmethod
    def start(
        cls,
        *,
        generator: Generator,
        prompt: str,
        negative_prompt: str,
        seeds: Sequence[int],
        options: PinningOptions,
        runs_dir: Path,
        tokenizer: Any = None,
    ) -> PinningRun:
        """Validate everything that can be checked before generating, then create the run directory."""
        space = PromptSpace(
            prompt, negative_prompt, options.granularity, tokenizer=tokenizer,
            weight_range=WeightRange(options.weight_min, options.weight_max),
        )
        if not seeds:
            raise ValueError("at least one seed is required")
        settings = CmaSettings.resolve(options, space.dim, len(active_terms(options)), blocks=_blocks(space))
        check_run_input(options, generator=generator, seeds=seeds, settings=settings, runs_dir=runs_dir)
        cma_seed = options.cma_seed if options.cma_seed is not None else int(seeds[0]) % 2**32
        store = RunStore.create(runs_dir)
        try:
            return cls._create(store, space, generator, options, seeds, settings, cma_seed, prompt, negative_prompt)
        except KeyboardInterrupt:
            # Ctrl-C before execute() installs its handler: never leave a "running" run behind.
            if (store.root / "run.json").is_file():
                store.write_run({**store.read_run(), "status": "interrupted"})
            else:
                shutil.rmtree(store.root, ignore_errors=True)
            raise

    @classmethod
    def _create(
        cls, store: RunStore, space: PromptSpace, generator: Generator, options: PinningOptions,
        seeds: Sequence[int], settings: CmaSettings, cma_seed: int, prompt: str, negative_prompt: str,
    ) -> PinningRun:
        """The rest of `start`, once the run directory exists."""
        run_info = {
            "run_id": store.run_id,
            "version": __version__,
            "created": time.strftime("%Y-%m-%d %H:%M:%S"),
            "status": "running",
            "prompt": prompt,
            "negative_prompt": negative_prompt,
            "options": options.to_json(),
            "space": space.to_json(),
            "seeds": [int(s) for s in seeds],
            "cma_seed": cma_seed,
            "cma": {
                "dim": settings.dim,
                "generations": settings.generations,
                "lambda": settings.lambda_,
                "mu": settings.mu,
                "multi_objective": settings.multi_objective,
                "search_dim": settings.search_dim,
                "groups": [list(g) for g in settings.groups],
            },
            "planned_batches": planned_batches(options, settings.generations, settings.lambda_),
            "generator": generator.describe(),
            "targets": [],
            "target_masks": [],
            "generations_done": 0,
            "evaluations": 0,
            "best": None,
            "baseline": None,
            "error": None,
        }
        store.write_run(run_info)
        optimizer = PinningOptimizer(settings, seed=cma_seed)
        log.info(
            "run %s: %d weights%s, %d generations of %d, at most %d batches", store.root, space.dim,
            f" in {settings.search_dim} groups" if settings.groups else "", settings.generations, settings.lambda_,
            run_info["planned_batches"],
        )
        return cls(
            store=store, space=space, generator=generator, options=options, seeds=tuple(int(s) for s in seeds),
            settings=settings, optimizer=optimizer, run_info=run_info,
        )

    @classmethod
    def resume(cls, run_dir: Path, generator: Generator, changes: dict[str, Any] | None = None) -> PinningRun:
        """Continue an interrupted or stopped run; the result equals an uninterrupted run with the same seed.

        `changes` may give a stopped run more room: options among RESUME_OPTIONS (a larger budget,
        more generations, other stopping rules). After a convergence stop the stopping criteria
        start afresh from where the run stood, so the same search goes on.
        """
        store = RunStore.open(run_dir)
        info = store.read_run(required=tuple(RUN_KEYS))
        if store.remove_temporaries():
            log.info("removed the temporary files of writes an earlier session never finished")
        options = PinningOptions.from_json(info["options"])
        if changes:
            refused = sorted(set(changes) - set(RESUME_OPTIONS))
            if refused:
                raise ValueError(f"a resumed run cannot change {', '.join(refused)}; it can change {', '.join(RESUME_OPTIONS)}")
            options = options.replace(**changes)
            info["options"] = options.to_json()
        space = PromptSpace.from_json(info["space"])
        settings = CmaSettings.resolve(options, space.dim, len(active_terms(options)), blocks=_blocks(space))
        info["cma"]["generations"] = settings.generations
        info["planned_batches"] = planned_batches(options, settings.generations, settings.lambda_)
        if info.get("stop_criterion") in CONVERGENCE:
            info["stop_checks_from"] = int(info.get("generations_done", 0))
        checkpoint = store.read_checkpoint()
        missing = _missing_records(store, checkpoint, settings.lambda_)
        if missing:
            # The checkpoint is past individuals that are gone: replay the search from its seed,
            # reusing every record on disk and generating the missing ones, as the run first did.
            log.warning(
                "%d individual record(s) missing or unreadable (first: generation %d, #%d): replaying "
                "the search from the start to redo them", len(missing), *missing[0],
            )
            checkpoint = None
        if checkpoint is None:
            optimizer = PinningOptimizer(settings, seed=info["cma_seed"])
        else:
            optimizer = PinningOptimizer.from_state(settings, checkpoint["optimizer"])
        info["status"] = "running"
        info["error"] = None
        run = cls(
            store=store, space=space, generator=generator, options=options, seeds=tuple(info["seeds"]),
            settings=settings, optimizer=optimizer, run_info=info,
        )
        for record in store.iter_individuals():
            run._account(record)
            run._note(record)
        return run

    # the loop ----------------------------------------------------------------------------------------

    @property
    def total_evaluations(self) -> int:
        """Individuals the run evaluates at most: the planned batches plus the repeats so far."""
        return self.planned_batches + self.repeats

    @property
    def planned_batches(self) -> int:
        return planned_batches(self.options, self.settings.generations, self.settings.lambda_)

    @property
    def batches(self) -> int:
        """Batches generated (the backend was called), failed ones included."""
        return self.evaluations - self.repeats

    @property
    def elapsed(self) -> float:
        """Seconds of run time, all sessions together (what Max minutes counts)."""
        return self._seconds_before + time.perf_counter() - self._session_started

    def execute(
        self,
        *,
        cancel: Callable[[], bool] | None = None,
        on_event: Callable[[RunEvent], None] | None = None,
        reporter: Reporter | None = None,
    ) -> RunResult:
        """Run (or continue) to the end, or until `cancel()` is true; always finalises the run."""
        cancel = cancel or (lambda: False)
        emit = on_event or (lambda event: None)
        status, error = "finished", None
        self._session_started = time.perf_counter()
        self._seconds_before = float(self.run_info.get("seconds", 0.0))
        self.stop_decision = None
        self.store.hold_reserve()
        emit(self._event("start"))
        try:
            with _first_ctrl_c_cancels() as ctrl_c:
                stop = lambda: cancel() or ctrl_c.is_set()  # noqa: E731
                self._baseline(stop, emit)
                self._write_checkpoint()
                self._prime_monitor()
                for generation in range(self.optimizer.generation + 1, self.settings.generations + 1):
                    summary = self._generation(generation, stop, emit, reporter)
                    self.stop_decision = self.monitor.observe(self._outcome(summary))
                    if self.stop_decision is not None:
                        break
                else:
                    self.stop_decision = generations_decision(self.settings.generations)
        except _StopNow as e:
            self.stop_decision = e.decision
        except RunStopped:
            status = "interrupted"
        except KeyboardInterrupt:
            log.warning("interrupted: the individual in progress was dropped")
            status = "interrupted"
        except StoreError as e:  # not the individual's fault: nothing of it is recorded, resume redoes it
            log.error("the run directory cannot be written, stopping (resume the run once there is room): %s", e)
            status, error = "failed", f"{type(e).__name__}: {e}"
        except BackendFailure as e:  # the baseline itself failed: there is nothing to search from
            log.error("the baseline batch failed: %s", e)
            status, error = "failed", str(e)
        except Exception as e:  # a bug: show it; the run directory stays valid
            log.exception("pinning run failed")
            status, error = "failed", f"{type(e).__name__}: {e}"
        if status == "interrupted":
            self.stop_decision = StopDecision(
                "cancelled", "Stopped on request (Interrupt, Skip, Stop or Ctrl-C); resume it to go on.",
                int(self.run_info.get("generations_done", 0)),
            )
        elif status == "failed":
            self.stop_decision = StopDecision("failed", f"The run failed: {error}", int(self.run_info.get("generations_done", 0)))
        assert self.stop_decision is not None
        log.info("%s", self.stop_decision.message)
        return self._finalize(status, error, emit, reporter)

    def mark_interrupted(self) -> None:
        """Record the run as interrupted when Ctrl-C came outside `execute` (its handler not yet
        installed): run.json must not say "running" for a run nobody runs."""
        self.stop_decision = StopDecision(
            "cancelled", "Stopped on request (Ctrl-C) before the run got going; resume it to go on.",
            int(self.run_info.get("generations_done", 0)),
        )
        self._write_run_info("interrupted")

    def _prime_monitor(self) -> None:
        """Bring the stopping criteria up to where the run stands: replay the generations since the
        checks last (re)started, from the records on disk, so a resumed run decides as one that ran
        straight through (or, after a convergence stop, starts them afresh)."""
        since = int(self.run_info.get("stop_checks_from", 0))
        records = list(self.store.iter_individuals())
        before = [r.total for r in records if r.generation <= since and r.status == "ok" and not r.excluded]
        self.monitor.restart(min(before) if before else None)
        values: dict[int, list[float]] = {}
        for r in records:
            values.setdefault(r.generation, []).append(r.total)
        for summary in self.store.iter_generations():
            if since < summary.generation <= self.optimizer.generation:
                self.monitor.observe(GenerationOutcome(
                    summary.generation, values.get(summary.generation) or [summary.fitness_min],
                    summary.best_so_far_fitness, math.inf,
                ))

    def _outcome(self, summary: GenerationRecord) -> GenerationOutcome:
        values = [r.total for r in self._generation_records]
        return GenerationOutcome(summary.generation, values, summary.best_so_far_fitness, self.optimizer.spread)

    def _check_budget(self, generation: int) -> None:
        """Before every individual: the loss floor and the budget end the run there."""
        best = None if self.best is None or self.best.excluded else self.best.total
        decision = self.monitor.before_individual(best, self.batches, self.elapsed, generation)
        if decision is not None:
            raise _StopNow(decision)

    def _baseline(self, stop: Callable[[], bool], emit: Callable[[RunEvent], None]) -> None:
        existing = self.store.read_individual(0, 0)
        if existing is not None and existing.status == "ok":
            self._prepare_objective(existing)
            return
        if stop():
            raise RunStopped
        zero = np.zeros(self.space.dim)
        record, batch = self._produce(0, 0, zero, zero, self.space.render(zero))
        self._prepare_objective(record)
        self._score(record, batch, zero)
        record.fitness = list(self._fitness_of(record, zero))
        self.store.write_individual(record)
        self._account(record)
        self._note(record)
        emit(self._event("individual", record=record))

    def _prepare_objective(self, baseline: IndividualRecord) -> None:
        """Targets: the user's images (with masks), else the baseline batch; saved in the run
        directory once and always read back from there, so a resumed run scores identically."""
        saved = [*self.run_info["targets"], *(self.run_info.get("target_masks") or [])]
        if saved and not all((self.store.root / name).is_file() for name in saved):
            log.warning("the run's target images are missing: saving them again from their source")
            self.run_info["targets"] = []
        if not self.run_info["targets"]:
            images = self.store.load_batch_images(baseline)
            masks = None
            if self.options.target_images:
                images, masks = load_targets(
                    self.options.target_images, self.options.target_masks, size=tuple(images.shape[2:])
                )
            self.run_info["targets"] = self.store.save_targets(images)
            self.run_info["target_masks"] = [] if masks is None else self.store.save_masks(masks)
        targets = self.store.load_targets(self.run_info["targets"])
        masks = self.store.load_masks(self.run_info["target_masks"]) if self.run_info.get("target_masks") else None
        self.objective = build_objective(
            self.options, targets, masks=masks, generator=self.generator, device=getattr(self.generator, "device", "cpu")
        )

    def _generation(
        self, generation: int, stop: Callable[[], bool], emit: Callable[[RunEvent], None], reporter: Reporter | None
    ) -> GenerationRecord:
        started = time.perf_counter()
        population = self.optimizer.ask()
        self._prefetch(generation, population, stop)
        records: list[IndividualRecord] = []
        try:
            for index, individual in enumerate(population):
                record = self.store.read_individual(generation, index)
                if record is None or not np.allclose(record.x, individual, rtol=0, atol=1e-12):
                    if stop():
                        raise RunStopped
                    self._check_budget(generation)
                    record = self._evaluate_individual(generation, index, individual)
                    emit(self._event("individual", generation=generation, record=record))
                records.append(record)
        finally:
            if self._prefetched is not None:
                self._prefetched.close()
                self._prefetched = None
        self.optimizer.tell(population, [tuple(r.fitness) for r in records])
        summary = self._summarize(generation, population, records, time.perf_counter() - started)
        summary.repeats = sum(r.repeat_of is not None for r in records)
        self._generation_records = records
        self.store.write_generation(summary)
        self._write_checkpoint()
        self.run_info["generations_done"] = generation
        self._write_run_info("running")
        if self.options.cli_log:
            log.info(
                "gen %3d  evals %4d  min %.5f  avg %.5f  max %.5f  best %.5f  sigma %.4f",
                generation, self.evaluations, summary.fitness_min, summary.fitness_mean,
                summary.fitness_max, summary.best_so_far_fitness, summary.sigma,
            )
        self._refresh_report(reporter, final=False)
        emit(self._event("generation", generation=generation, record=summary))
        return summary

    def _prefetch(self, generation: int, population: Sequence[np.ndarray], stop: Callable[[], bool]) -> None:
        """A generator with `generate_many(requests, cancel)` (lib_pinning.remote: several servers)
        gets the batches the generation needs at once, to make them in parallel in the background
        (lib_pinning.prefetch); `_produce` takes them in proposal order, scoring each while later
        ones are still being made, so the records are those the one-by-one loop writes."""
        many = getattr(self.generator, "generate_many", None)
        if many is None or stop():
            return
        requests: list[GenerationRequest] = []
        for index, individual in enumerate(population):
            record = self.store.read_individual(generation, index)
            if record is not None and np.allclose(record.x, individual, rtol=0, atol=1e-12):
                continue
            points: list[np.ndarray] = []

            def capture(x: np.ndarray) -> tuple[float, ...]:  # the point the size limit evaluates
                points.append(np.asarray(x, dtype=float))
                return (0.0,) * self.optimizer.n_objectives

            self.optimizer.penalized(capture)(individual)
            rendered = self.space.render(points[-1])
            request = GenerationRequest(*rendered, self.seeds)
            if rendered not in self._seen and request not in requests:  # repeats generate nothing
                requests.append(request)
        if self.options.max_batches:
            requests = requests[:max(0, self.options.max_batches - self.batches)]
        self._prefetched = Prefetch(many, requests, stop)

    def _evaluate_individual(self, generation: int, index: int, proposed: np.ndarray) -> IndividualRecord:
        """Generate, score and persist one individual; a failure is recorded, not raised."""
        evaluated: list[IndividualRecord] = []

        def evaluate_point(x_evaluated: np.ndarray) -> tuple[float, ...]:
            # The size limit's penalty wrapper calls this with the point actually rendered.
            record = self._evaluate_point(generation, index, np.asarray(proposed), np.asarray(x_evaluated, dtype=float))
            evaluated.append(record)
            return self._fitness_of(record, np.asarray(x_evaluated, dtype=float))

        fitness = self.optimizer.penalized(evaluate_point)(proposed)
        record = evaluated[-1]
        record.fitness = [float(v) for v in fitness]
        # The size limit's penalty is added to every objective alike; keep it for the run's best.
        record.penalty = record.fitness[0] - self._fitness_of(record, np.asarray(record.x_evaluated))[0]
        self.store.write_individual(record)
        self._account(record)
        self._note(record)
        if record.status != "ok":
            self._consecutive_failures += 1
            if self._consecutive_failures >= MAX_CONSECUTIVE_FAILURES:
                raise RuntimeError(f"{MAX_CONSECUTIVE_FAILURES} individuals in a row failed; last error: {record.error}")
        else:
            self._consecutive_failures = 0
        return record

    def _evaluate_point(self, generation: int, index: int, proposed: np.ndarray, x: np.ndarray) -> IndividualRecord:
        rendered = self.space.render(x)
        repeat = self._repeat(generation, index, proposed, x, rendered)
        if repeat is not None:
            return repeat
        try:
            record, batch = self._produce(generation, index, proposed, x, rendered)
            try:
                self._score(record, batch, x)
            except torch.cuda.OutOfMemoryError as e:  # the scoring models' GPU memory: a resource, not a bug
                raise BackendFailure(e) from e
            return record
        except BackendFailure as e:
            # Only the backend's failures are the individual's; a bug of ours or a StoreError ends the run.
            log.error("individual %d/%d failed: %s", generation, index, e, exc_info=log.isEnabledFor(logging.DEBUG))
            prompt, negative = rendered
            return IndividualRecord(
                generation=generation, index=index, x=proposed.tolist(), x_evaluated=x.tolist(),
                weights=_weights_json(self.space.weights(x)), prompt=prompt, negative_prompt=negative,
                seeds=list(self.seeds), fitness=[], loss=FAILED_FITNESS, status="failed", error=str(e),
            )

    def _produce(
        self, generation: int, index: int, proposed: np.ndarray, x: np.ndarray, rendered: tuple[str, str]
    ) -> tuple[IndividualRecord, Batch]:
        """Generate and save the batch of offsets `x`, rendered as the prompt pair `rendered` (not yet scored)."""
        prompt, negative = rendered
        started = time.perf_counter()
        try:
            request = GenerationRequest(prompt, negative, self.seeds)
            try:
                prefetched = self._prefetched.take(request) if self._prefetched is not None else None
            except CallCancelled:
                raise RunStopped from None  # the servers were told to stop: the run is being stopped
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
            weights=_weights_json(self.space.weights(x)), prompt=prompt, negative_prompt=negative,
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

    def _score(self, record: IndividualRecord, batch: Batch, x: np.ndarray) -> None:
        assert self.objective is not None
        started = time.perf_counter()
        scored = self.objective.score(batch, x)
        record.loss = scored.loss
        record.objective_values = list(scored.values)
        record.components = scored.components
        record.objectives = {name: evaluation.to_json() for name, evaluation in scored.evaluations.items()}
        record.timings["score"] = time.perf_counter() - started

    def _fitness_of(self, record: IndividualRecord, x: np.ndarray) -> tuple[float, ...]:
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

    # bookkeeping ---------------------------------------------------------------------------------------

    def _account(self, record: IndividualRecord) -> None:
        self.evaluations += 1
        if record.generation == 0 and record.index == 0:
            self.baseline = record
        if record.status == "ok" and self._better_than_best(record):
            self.best = record

    def _better_than_best(self, record: IndividualRecord) -> bool:
        """A batch the guard excluded is never the best, except the first one while nothing clean
        exists (the baseline: the prompt as written is the one safe answer); a clean one replaces it."""
        if self.best is None:
            return True
        if record.excluded or self.best.excluded:
            return self.best.excluded and not record.excluded
        return record.total < self.best.total

    def _summarize(
        self, generation: int, population: Sequence[np.ndarray], records: Sequence[IndividualRecord], seconds: float
    ) -> GenerationRecord:
        values = np.array([r.total for r in records])
        assert self.best is not None
        return GenerationRecord(
            generation=generation,
            evaluations=self.evaluations,
            fitness_min=float(values.min()),
            fitness_mean=float(values.mean()),
            fitness_max=float(values.max()),
            fitness_std=float(values.std()),
            best_index=int(values.argmin()),
            best_so_far=[self.best.generation, self.best.index],
            best_so_far_fitness=float(self.best.total),
            best_so_far_x=list(self.best.x_evaluated),
            sigma=self.optimizer.sigma,
            axis_ratio=self.optimizer.axis_ratio,
            axis_scales=self.optimizer.axis_scales.tolist(),
            population_std=np.std(np.asarray(population, dtype=float), axis=0).tolist(),
            centroid=self.optimizer.centroid.tolist(),
            seconds=seconds,
            failed=sum(r.status != "ok" for r in records),
            **self._guard_summary(generation, records),
        )

    def _guard_summary(self, generation: int, records: Sequence[IndividualRecord]) -> dict[str, Any]:
        """The generation's degenerate individuals and image share; says so when most are degenerate."""
        reasons = [image for r in records for image in r.degenerate_reasons]
        share = sum(bool(image) for image in reasons) / len(reasons) if reasons else 0.0
        if share > guard.MAJORITY:
            flagged = self.run_info.setdefault("degenerate_generations", [])
            if generation not in flagged:
                flagged.append(generation)
            log.warning(
                "generation %d: most images are degenerate (%s): the search is in the model's failure "
                "region%s", generation, guard.describe(guard.summarize_reasons(reasons), len(reasons)),
                "; they are penalised and never chosen as best" if self.options.guard else " and the guard is off",
            )
        return {"degenerate": sum(r.degenerate for r in records), "degenerate_share": share}

    # repeats ---------------------------------------------------------------------------------------------

    def _note(self, record: IndividualRecord) -> None:
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
        record.weights = _weights_json(self.space.weights(x))
        record.fitness, record.penalty = [], 0.0
        record.timings, record.model_rows = {}, 0
        record.repeat_of = list(key)
        record.images = self.store.link_batch_images(source, generation, index)
        log.debug("individual %d/%d repeats %d/%d: result reused, no batch generated", generation, index, *key)
        return record

    def _write_checkpoint(self) -> None:
        self.store.write_checkpoint({"optimizer": self.optimizer.state_dict()})

    def _write_run_info(self, status: str, error: str | None = None) -> None:
        info = self.run_info
        info["status"] = status
        info["error"] = error
        info["updated"] = time.strftime("%Y-%m-%d %H:%M:%S")
        info["evaluations"] = self.evaluations
        info["batches"] = self.batches
        info["repeats"] = self.repeats
        info["seconds"] = round(self.elapsed, 3)
        info["planned_batches"] = self.planned_batches
        decision = self.stop_decision if status != "running" else None
        info["stop_criterion"] = None if decision is None else decision.criterion
        info["stop_reason"] = None if decision is None else decision.message
        for key, record in (("best", self.best), ("baseline", self.baseline)):
            info[key] = None if record is None else {
                "generation": record.generation,
                "index": record.index,
                "fitness": record.fitness,
                "loss": record.loss,
                "prompt": record.prompt,
                "negative_prompt": record.negative_prompt,
                "path": self.store.relative(self.store.individual_dir(record.generation, record.index)),
            }
        self.store.write_run(info)

    def _finalize(
        self, status: str, error: str | None, emit: Callable[[RunEvent], None], reporter: Reporter | None
    ) -> RunResult:
        try:
            self._write_run_info(status, error)
        except StoreError as e:  # run.json keeps the last state written; resume continues from the records
            log.error("could not record the run's end in run.json: %s", e)
        self.store.release_reserve()
        report_error = self._refresh_report(reporter, final=True)
        emit(self._event("end", message=status))
        if self.best is None or self.baseline is None:
            raise RunEndedEarly(
                f"the run stopped before the baseline batch was generated ({status}"
                + (f": {error}" if error else "")
                + f"); nothing to return. Run directory: {self.store.root}",
                status,
            )
        return RunResult(
            run_dir=self.store.root, status=status, best=self.best, baseline=self.baseline,
            generations_done=int(self.run_info["generations_done"]), evaluations=self.evaluations, error=error,
            degenerate_generations=list(self.run_info.get("degenerate_generations", [])),
            stop_criterion=self.stop_decision.criterion if self.stop_decision else "",
            stop_reason=self.stop_decision.message if self.stop_decision else "",
            batches=self.batches, repeats=self.repeats, report_error=report_error,
        )

    def _refresh_report(self, reporter: Reporter | None, final: bool) -> str | None:
        """A report that cannot be written (disk full, a plotting bug) must not cost the run; returns
        why it failed (None: written), for the result to say so. Ctrl-C during the final refresh
        (the run's own handler is gone by then) leaves the report for `report DIR`, not a traceback."""
        if reporter is None:
            return None
        try:
            reporter.update(self.store, final=final)
        except KeyboardInterrupt:
            if not final:
                raise
            log.warning("the final report refresh was interrupted; rebuild it with `python -m lib_pinning report %s`",
                        self.store.root)
            return "interrupted"
        except OSError as e:
            log.error("refreshing the report failed (%s); rebuild it with `python -m lib_pinning report %s`", e, self.store.root)
            return f"{type(e).__name__}: {e}"
        except Exception as e:
            log.exception("refreshing the report failed; the run goes on (rebuild it with `report DIR`)")
            return f"{type(e).__name__}: {e}"
        return None

    def _event(self, kind: str, generation: int = 0, record: Any = None, message: str = "") -> RunEvent:
        return RunEvent(
            kind=kind, generation=generation, done=self.evaluations, total=self.total_evaluations,
            best_fitness=None if self.best is None else self.best.total, record=record, message=message,
            batches=self.batches, planned_batches=self.planned_batches, elapsed=self.elapsed,
        )


class _StopNow(Exception):
    """Raised inside the loop when the loss floor or the budget ends the run before an individual."""

    def __init__(self, decision: StopDecision) -> None:
        super().__init__(decision.message)
        self.decision = decision


# Options a resumed run may change: the budget, the length of the search and the stopping rules.
RESUME_OPTIONS = (
    "max_batches", "max_minutes", "generations", "stop_early", "stop_patience", "stop_stagnation",
    "stop_tolerance", "stop_tolx", "cli_log",
)


def _missing_records(store: RunStore, checkpoint: dict[str, Any] | None, lambda_: int) -> list[tuple[int, int]]:
    """(generation, index) of the records a checkpointed run has passed but no longer has (a deleted
    or unreadable folder or record): the baseline and every individual of the told generations."""
    if checkpoint is None:
        return []
    done = int(checkpoint.get("optimizer", {}).get("generation", 0))
    present = {record.key for record in store.iter_individuals()}
    wanted = [(0, 0)] + [(g, i) for g in range(1, done + 1) for i in range(lambda_)]
    return [key for key in wanted if key not in present]


def _blocks(space: PromptSpace) -> tuple[int, int]:
    """Unit counts of the prompt and the negative prompt (groups never mix them)."""
    return (space.positive.unit_count, space.negative.unit_count)


class _CtrlC:
    def __init__(self) -> None:
        self._event = threading.Event()

    def set(self) -> None:
        self._event.set()

    def is_set(self) -> bool:
        return self._event.is_set()


@contextmanager
def _first_ctrl_c_cancels() -> Iterator[_CtrlC]:
    """In the main thread, the first Ctrl-C asks the run to stop after the current individual;
    a second one interrupts at once. Elsewhere (the WebUI's worker threads) this does nothing."""
    flag = _CtrlC()
    if threading.current_thread() is not threading.main_thread():
        yield flag
        return
    previous = signal.getsignal(signal.SIGINT)

    def handler(signum: int, frame: Any) -> None:
        if flag.is_set():
            raise KeyboardInterrupt
        flag.set()
        log.warning("stopping after the current individual (Ctrl-C again to stop now)")

    signal.signal(signal.SIGINT, handler)
    try:
        yield flag
    finally:
        signal.signal(signal.SIGINT, previous)
