"""The pinning loop: propose -> render -> generate -> score -> persist -> update.

1. The baseline (x = 0, the prompt as written) is generated first; with no user targets its batch
   becomes the target set.
2. Each generation, CMA-ES proposes weight offsets; each is rendered to an emphasis prompt,
   generated with the run's fixed seeds (the same seeds for every individual), scored, and its
   record persisted before the strategy is updated.
3. After each generation: statistics, a checkpoint and the report are written, so an interrupted
   or crashed run is readable and resumable; `resume` continues it to the same result.

Stopping: a cancel callable (the WebUI's Interrupt/Skip, the CLI's first Ctrl-C) is checked before
every individual, so the run stops after the current one; a KeyboardInterrupt that arrives in the
middle of an individual drops that individual (it was never persisted) and still finalises the run.
"""

from __future__ import annotations

import logging
import math
import signal
import threading
import time
import traceback
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable, Iterator, Protocol, Sequence

import numpy as np
import torch

from lib_pinning import __version__
from lib_pinning.generator import Batch, GenerationRequest, Generator
from lib_pinning.objectives.compose import CompositeObjective, active_terms, build_objective
from lib_pinning.objectives.targets import load_targets
from lib_pinning.optimizer import FAILED_FITNESS, CmaSettings, PinningOptimizer
from lib_pinning.options import PinningOptions
from lib_pinning.prompt import PromptSpace
from lib_pinning.store import GenerationRecord, IndividualRecord, RunStore

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


@dataclass
class RunResult:
    run_dir: Path
    status: str  # "finished", "interrupted", "failed"
    best: IndividualRecord
    baseline: IndividualRecord
    generations_done: int
    evaluations: int
    error: str | None = None

    @property
    def report_path(self) -> Path:
        return self.run_dir / "index.html"


class Reporter(Protocol):
    """Refreshes the run's artifacts: after each generation, and with final=True when the run ends
    (finished, interrupted or failed)."""

    def update(self, store: RunStore, final: bool = False) -> None: ...


class RunStopped(Exception):
    """Raised inside the loop when the caller asked to stop."""


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
        space = PromptSpace(prompt, negative_prompt, options.granularity, tokenizer=tokenizer)
        if not seeds:
            raise ValueError("at least one seed is required")
        settings = CmaSettings.resolve(options, space.dim, len(active_terms(options)))
        for path in (*options.target_images, *options.target_masks):
            if not Path(path).is_file():
                raise FileNotFoundError(f"target image or mask not found: {path}")
        cma_seed = options.cma_seed if options.cma_seed is not None else int(seeds[0]) % 2**32
        store = RunStore.create(runs_dir)
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
            },
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
        log.info("run %s: %d weights, %d generations of %d", store.root, space.dim, settings.generations, settings.lambda_)
        return cls(
            store=store, space=space, generator=generator, options=options, seeds=tuple(int(s) for s in seeds),
            settings=settings, optimizer=optimizer, run_info=run_info,
        )

    @classmethod
    def resume(cls, run_dir: Path, generator: Generator) -> PinningRun:
        """Continue an interrupted run; the result equals an uninterrupted run with the same seed."""
        store = RunStore.open(run_dir)
        info = store.read_run()
        options = PinningOptions.from_json(info["options"])
        space = PromptSpace.from_json(info["space"])
        settings = CmaSettings.resolve(options, space.dim, len(active_terms(options)))
        checkpoint = store.read_checkpoint()
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
        return run

    # the loop ----------------------------------------------------------------------------------------

    @property
    def total_evaluations(self) -> int:
        return 1 + self.settings.generations * self.settings.lambda_

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
        emit(self._event("start"))
        try:
            with _first_ctrl_c_cancels() as ctrl_c:
                stop = lambda: cancel() or ctrl_c.is_set()  # noqa: E731
                self._baseline(stop, emit)
                self._write_checkpoint()
                for generation in range(self.optimizer.generation + 1, self.settings.generations + 1):
                    self._generation(generation, stop, emit, reporter)
        except RunStopped:
            status = "interrupted"
        except KeyboardInterrupt:
            log.warning("interrupted: the individual in progress was dropped")
            status = "interrupted"
        except Exception as e:  # the run directory stays valid; say what broke
            log.exception("pinning run failed")
            status, error = "failed", f"{type(e).__name__}: {e}"
        return self._finalize(status, error, emit, reporter)

    def _baseline(self, stop: Callable[[], bool], emit: Callable[[RunEvent], None]) -> None:
        existing = self.store.read_individual(0, 0)
        if existing is not None and existing.status == "ok":
            self._prepare_objective(existing)
            return
        if stop():
            raise RunStopped
        zero = np.zeros(self.space.dim)
        record, batch = self._produce(0, 0, zero, zero)
        self._prepare_objective(record)
        self._score(record, batch, zero)
        record.fitness = list(self._fitness_of(record, zero))
        self.store.write_individual(record)
        self._account(record)
        emit(self._event("individual", record=record))

    def _prepare_objective(self, baseline: IndividualRecord) -> None:
        """Targets: the user's images (with masks), else the baseline batch; saved in the run
        directory once and always read back from there, so a resumed run scores identically."""
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
    ) -> None:
        started = time.perf_counter()
        population = self.optimizer.ask()
        records: list[IndividualRecord] = []
        for index, individual in enumerate(population):
            record = self.store.read_individual(generation, index)
            if record is None or not np.allclose(record.x, individual, rtol=0, atol=1e-12):
                if stop():
                    raise RunStopped
                record = self._evaluate_individual(generation, index, individual)
                emit(self._event("individual", generation=generation, record=record))
            records.append(record)
        self.optimizer.tell(population, [tuple(r.fitness) for r in records])
        summary = self._summarize(generation, population, records, time.perf_counter() - started)
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
        if record.status != "ok":
            self._consecutive_failures += 1
            if self._consecutive_failures >= MAX_CONSECUTIVE_FAILURES:
                raise RuntimeError(f"{MAX_CONSECUTIVE_FAILURES} individuals in a row failed; last error: {record.error}")
        else:
            self._consecutive_failures = 0
        return record

    def _evaluate_point(self, generation: int, index: int, proposed: np.ndarray, x: np.ndarray) -> IndividualRecord:
        try:
            record, batch = self._produce(generation, index, proposed, x)
            self._score(record, batch, x)
            return record
        except (KeyboardInterrupt, RunStopped):
            raise
        except Exception as e:
            log.error("individual %d/%d failed: %s", generation, index, e, exc_info=log.isEnabledFor(logging.DEBUG))
            prompt, negative = self.space.render(x)
            return IndividualRecord(
                generation=generation, index=index, x=proposed.tolist(), x_evaluated=x.tolist(),
                weights=_weights_json(self.space.weights(x)), prompt=prompt, negative_prompt=negative,
                seeds=list(self.seeds), fitness=[], loss=FAILED_FITNESS, status="failed",
                error="".join(traceback.format_exception_only(type(e), e)).strip(),
            )

    def _produce(self, generation: int, index: int, proposed: np.ndarray, x: np.ndarray) -> tuple[IndividualRecord, Batch]:
        """Render, generate and save the batch of offsets `x` (not yet scored)."""
        prompt, negative = self.space.render(x)
        started = time.perf_counter()
        batch = self.generator.generate(GenerationRequest(prompt, negative, self.seeds))
        seconds = time.perf_counter() - started
        batch = replace(batch, images=quantize(batch.images))
        record = IndividualRecord(
            generation=generation, index=index, x=proposed.tolist(), x_evaluated=x.tolist(),
            weights=_weights_json(self.space.weights(x)), prompt=prompt, negative_prompt=negative,
            seeds=list(batch.seeds), fitness=[], loss=math.nan,
            images=self.store.save_batch_images(generation, index, batch.images, batch.seeds),
            timings={**batch.timings, "generate": seconds}, model_rows=batch.model_rows,
            growth=batch.growth.to_dict() if batch.growth is not None else None,
        )
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
        return tuple(fitness)

    # bookkeeping ---------------------------------------------------------------------------------------

    def _account(self, record: IndividualRecord) -> None:
        self.evaluations += 1
        if record.generation == 0 and record.index == 0:
            self.baseline = record
        if record.status == "ok" and (self.best is None or record.total < self.best.total):
            self.best = record

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
        )

    def _write_checkpoint(self) -> None:
        self.store.write_checkpoint({"optimizer": self.optimizer.state_dict()})

    def _write_run_info(self, status: str, error: str | None = None) -> None:
        info = self.run_info
        info["status"] = status
        info["error"] = error
        info["updated"] = time.strftime("%Y-%m-%d %H:%M:%S")
        info["evaluations"] = self.evaluations
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
        self._write_run_info(status, error)
        self._refresh_report(reporter, final=True)
        emit(self._event("end", message=status))
        if self.best is None or self.baseline is None:
            raise RuntimeError(
                f"the run stopped before the baseline batch was generated ({status}"
                + (f": {error}" if error else "")
                + f"); nothing to return. Run directory: {self.store.root}"
            )
        return RunResult(
            run_dir=self.store.root, status=status, best=self.best, baseline=self.baseline,
            generations_done=int(self.run_info["generations_done"]), evaluations=self.evaluations, error=error,
        )

    def _refresh_report(self, reporter: Reporter | None, final: bool) -> None:
        """A report that cannot be written (disk full, a plotting bug) must not cost the run."""
        if reporter is None:
            return
        try:
            reporter.update(self.store, final=final)
        except Exception:
            log.exception("refreshing the report failed; the run goes on (rebuild it with `report DIR`)")

    def _event(self, kind: str, generation: int = 0, record: Any = None, message: str = "") -> RunEvent:
        return RunEvent(
            kind=kind, generation=generation, done=self.evaluations, total=self.total_evaluations,
            best_fitness=None if self.best is None else self.best.total, record=record, message=message,
        )


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
