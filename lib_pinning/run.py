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

One individual's evaluation (render, repeat cache, generate, guard, score, fitness) is
lib_pinning.evaluation's `Evaluator`; this module persists its records and decides when to stop.

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
checkpoint is unreadable or past a missing record or generation summary.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Protocol, Sequence

import numpy as np

from lib_pinning.generator import Generator
from lib_pinning.evaluation import BackendFailure, BatchNotMade, Evaluator, RunStopped
from lib_pinning.interrupts import RunStop, first_ctrl_c_cancels
from lib_pinning.new_run import RunParts, create_run
from lib_pinning.options import PinningOptions
from lib_pinning.prompt import PromptSpace
from lib_pinning.resume import catch_up_stop_checks, reopen
from lib_pinning.run_targets import run_objective
from lib_pinning.stopping import (
    GenerationOutcome, StopDecision, StopMonitor, StopRules, generations_decision, planned_batches,
)
from lib_pinning.store import GenerationRecord, IndividualRecord, RunStore, StoreError
from lib_pinning.sweep_stage import SweepOutcome, sweep_after_search
from lib_pinning.tally import RunTally, summarize_generation

log = logging.getLogger(__name__)


@dataclass
class RunEvent:
    """Progress for front ends (CLI progress bar, WebUI job counters)."""

    kind: str  # "start", "individual", "generation", "sweep" (before each sweep batch), "end"
    generation: int
    done: int  # individuals evaluated so far, baseline included
    total: int  # individuals the whole run evaluates
    best_fitness: float | None
    record: IndividualRecord | GenerationRecord | None = None
    message: str = ""
    batches: int = 0  # batches generated so far (repeats cost none)
    planned_batches: int = 0  # batches the run generates at most (generations and budget)
    elapsed: float = 0.0  # seconds of run time so far, every session of a resumed run included
    # "sweep" events: the sweep's batches done so far, of sweep_total; "end": those it generated,
    # when it generated any
    sweep_done: int = 0
    sweep_total: int = 0


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
    sweep: SweepOutcome | None = None  # the sensitivity sweep after the search (None: not asked for)
    space: PromptSpace | None = None  # the run's prompt space, for :meth:`shown`

    @property
    def report_path(self) -> Path:
        return self.run_dir / "index.html"

    def shown(self, record: IndividualRecord) -> tuple[str, str]:
        """``(prompt, negative_prompt)`` of `record` as a person should see and copy them: without
        the schedule guard the generated prompts start with (see PromptSpace.display)."""
        if self.space is None:
            return record.prompt, record.negative_prompt
        return self.space.display(record.x_evaluated)


class Reporter(Protocol):
    """Refreshes the run's artifacts: after each generation, and with final=True when the run ends
    (finished, interrupted or failed)."""

    def update(self, store: RunStore, final: bool = False) -> None: ...


class RunEndedEarly(RuntimeError):
    """The run ended (interrupted or failed) before its baseline batch existed: no result."""

    def __init__(self, message: str, status: str) -> None:
        super().__init__(message)
        self.status = status


def derive_seeds(seed: int, batch_size: int) -> tuple[int, ...]:
    """The WebUI's convention: consecutive seeds from the first."""
    return tuple(int(seed) + i for i in range(batch_size))


class PinningRun:
    """One pinning run bound to a run directory; build with `start` or `resume`."""

    def __init__(self, parts: RunParts, generator: Generator) -> None:
        self.store = parts.store
        self.space = parts.space
        self.generator = generator
        self.options = parts.options
        self.seeds = parts.seeds
        self.settings = parts.settings
        self.optimizer = parts.optimizer
        self.run_info = parts.run_info
        self.tally = RunTally()  # the evaluations, the baseline and the best accounted for
        self.evaluator = Evaluator(
            store=self.store, space=self.space, generator=generator, options=self.options, seeds=self.seeds,
            settings=self.settings, optimizer=self.optimizer,
        )
        self.stop_rules = StopRules.resolve(self.options, self.settings.generations, self.settings.mu)
        self.monitor = StopMonitor(self.stop_rules)
        self.stop_decision: StopDecision | None = None
        self._generation_records: list[IndividualRecord] = []
        self._session_started = time.perf_counter()
        self._seconds_before = float(self.run_info.get("seconds", 0.0))  # earlier sessions' run time
        self.sweep_outcome: SweepOutcome | None = None
        self._sweep_seconds = 0.0

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
        """Validate everything that can be checked before generating, then create the run directory
        (lib_pinning.new_run)."""
        with create_run(generator=generator, prompt=prompt, negative_prompt=negative_prompt, seeds=seeds,
                        options=options, runs_dir=runs_dir, tokenizer=tokenizer) as parts:
            run = cls(parts, generator)  # inside: a Ctrl-C until the run exists still leaves a valid folder
        return run

    @classmethod
    def resume(cls, run_dir: Path, generator: Generator, changes: dict[str, Any] | None = None) -> PinningRun:
        """Continue an interrupted or stopped run; the result equals an uninterrupted run with the same seed.

        `changes` may give a stopped run more room: options among RESUME_OPTIONS (a larger budget,
        more generations, other stopping rules; lib_pinning.resume). After a convergence stop the
        stopping criteria start afresh from where the run stood, so the same search goes on.
        """
        run = cls(reopen(run_dir, changes), generator)
        for record in run.store.iter_individuals():
            run.tally.account(record)
            run.evaluator.note(record)
        return run

    # the loop ----------------------------------------------------------------------------------------

    @property
    def total_evaluations(self) -> int:
        """Individuals the run evaluates at most: the planned batches plus the repeats so far."""
        return self.planned_batches + self.repeats

    @property
    def repeats(self) -> int:
        """Individuals answered from an identical earlier prompt pair (no batch generated)."""
        return self.evaluator.repeats

    @property
    def planned_batches(self) -> int:
        return planned_batches(self.options, self.settings.generations, self.settings.lambda_)

    @property
    def batches(self) -> int:
        """Batches generated (the backend was called), failed ones included."""
        return self.tally.evaluations - self.repeats

    @property
    def elapsed(self) -> float:
        """Seconds of run time, all sessions together (what Max minutes counts), the sweep's left out."""
        return self._seconds_before + time.perf_counter() - self._session_started - self._sweep_seconds

    def execute(
        self,
        *,
        cancel: Callable[[], bool] | None = None,
        cut: Callable[[], bool] | None = None,
        on_event: Callable[[RunEvent], None] | None = None,
        reporter: Reporter | None = None,
    ) -> RunResult:
        """Run (or continue) to the end, or until `cancel()` is true; always finalises the run.
        `cut()`: whether a stop also abandons the batches in flight (default: every stop does);
        the WebUI's "Stop generating" does not, so they finish (lib_pinning.interrupts.RunStop)."""
        cancel = cancel or (lambda: False)
        cut = cut or cancel
        emit = on_event or (lambda event: None)
        status, error = "finished", None
        self._session_started = time.perf_counter()
        self._seconds_before = float(self.run_info.get("seconds", 0.0))
        self._sweep_seconds = 0.0
        self.stop_decision = None
        self.store.hold_reserve()
        emit(self._event("start"))
        try:
            with first_ctrl_c_cancels() as ctrl_c:
                stop = RunStop(lambda: cancel() or ctrl_c.is_set(), lambda: cut() or ctrl_c.is_set())
                self._baseline(stop, emit)
                self._write_checkpoint()
                catch_up_stop_checks(self.monitor, self.store, int(self.run_info.get("stop_checks_from", 0)),
                                     self.optimizer.generation)
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
        self._sweep(status, cancel, emit)
        return self._finalize(status, error, emit, reporter)

    def _sweep(self, status: str, cancel: Callable[[], bool], emit: Callable[[RunEvent], None]) -> None:
        """The sensitivity sweep (option sweep_batches) once the search has finished, before the
        final report (lib_pinning.sweep_stage); run.json's `sweep` says what became of it."""
        budget = self.options.sweep_batches

        def before_batch(done: int) -> None:
            event = self._event("sweep", message=f"sensitivity sweep, batch {done + 1}/{budget}")
            event.sweep_done, event.sweep_total = done, budget
            emit(event)

        started = time.perf_counter()
        self.sweep_outcome = sweep_after_search(self.store, self.generator, budget, status=status,
                                                best=self.tally.best, stop=cancel, before_batch=before_batch)
        # The sweep's time is not the search's: Max minutes of a later resume counts the search alone.
        self._sweep_seconds = time.perf_counter() - started
        if self.sweep_outcome is None:
            self.run_info.pop("sweep", None)
        else:
            self.run_info["sweep"] = {**self.sweep_outcome.to_json(), "seconds": round(self._sweep_seconds, 3)}

    def mark_interrupted(self) -> None:
        """Record the run as interrupted when Ctrl-C came outside `execute` (its handler not yet
        installed): run.json must not say "running" for a run nobody runs."""
        self.stop_decision = StopDecision(
            "cancelled", "Stopped on request (Ctrl-C) before the run got going; resume it to go on.",
            int(self.run_info.get("generations_done", 0)),
        )
        self._write_run_info("interrupted")

    def _outcome(self, summary: GenerationRecord) -> GenerationOutcome:
        values = [r.total for r in self._generation_records]
        return GenerationOutcome(summary.generation, values, summary.best_so_far_fitness, self.optimizer.spread)

    def _check_budget(self, generation: int) -> None:
        """Before every individual: the loss floor and the budget end the run there."""
        best_so_far = self.tally.best
        best = None if best_so_far is None or best_so_far.excluded else best_so_far.total
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
        record, batch = self.evaluator.produce_baseline(stop)
        self._prepare_objective(record)
        self.evaluator.score_baseline(record, batch)
        self._persist(record)
        emit(self._event("individual", record=record))

    def _prepare_objective(self, baseline: IndividualRecord) -> None:
        """The evaluator's objective, over the targets the run folder holds or is given now: the
        user's images, else the baseline batch (lib_pinning.run_targets)."""
        self.evaluator.objective = run_objective(self.store, self.run_info, self.options, self.generator, baseline)

    def _generation(
        self, generation: int, stop: RunStop, emit: Callable[[RunEvent], None], reporter: Reporter | None
    ) -> GenerationRecord:
        started = time.perf_counter()
        population = self.optimizer.ask()
        left = max(0, self.options.max_batches - self.batches) if self.options.max_batches else None
        self.evaluator.prefetch(generation, population, stop, batches_left=left)
        records: list[IndividualRecord] = []
        # A stop that lets the batches in flight finish ("Stop generating" with servers) skips the
        # individuals it kept from starting and still takes every later one that was made: the
        # servers finish batches out of proposal order (a failed batch goes back in the queue),
        # and each record is kept by its index, so a resume makes only what is missing.
        skipped = False
        try:
            for index, individual in enumerate(population):
                record = self.store.read_individual(generation, index)
                if record is None or not np.allclose(record.x, individual, rtol=0, atol=1e-12):
                    if not stop():
                        self._check_budget(generation)
                    elif stop.cut():
                        raise RunStopped
                    elif not self.evaluator.finishes_in_flight(individual):
                        skipped = True
                        continue
                    try:
                        record = self.evaluator.evaluate(generation, index, individual)
                    except BatchNotMade:  # a cut ends the loop at the next individual
                        skipped = True
                        continue
                    self._persist(record)
                    self.tally.count_failure(record)
                    emit(self._event("individual", generation=generation, record=record))
                records.append(record)
        finally:
            self.evaluator.end_prefetch()
        if skipped:
            raise RunStopped
        self.optimizer.tell(population, [tuple(r.fitness) for r in records])
        assert self.tally.best is not None
        summary = summarize_generation(
            generation, population, records, best=self.tally.best, optimizer=self.optimizer,
            lambda_=self.settings.lambda_, seconds=time.perf_counter() - started, run_info=self.run_info,
            guard_on=self.options.guard,
        )
        self._generation_records = records
        self.store.write_generation(summary)
        self._write_checkpoint()
        self.run_info["generations_done"] = generation
        self._write_run_info("running")
        if self.options.cli_log:
            log.info(
                "gen %3d  evals %4d  min %.5f  avg %.5f  max %.5f  best %.5f  sigma %.4f",
                generation, self.tally.evaluations, summary.fitness_min, summary.fitness_mean,
                summary.fitness_max, summary.best_so_far_fitness, summary.sigma,
            )
        self._refresh_report(reporter, final=False)
        emit(self._event("generation", generation=generation, record=summary))
        return summary

    # bookkeeping ---------------------------------------------------------------------------------------

    def _persist(self, record: IndividualRecord) -> None:
        """Write an evaluated record (batch_stats.json last: it marks the individual complete) and count it."""
        self.store.write_individual(record)
        self.tally.account(record)
        self.evaluator.note(record)

    def _write_checkpoint(self) -> None:
        self.store.write_checkpoint({"optimizer": self.optimizer.state_dict()})

    def _write_run_info(self, status: str, error: str | None = None) -> None:
        info = self.run_info
        info["status"] = status
        info["error"] = error
        info["updated"] = time.strftime("%Y-%m-%d %H:%M:%S")
        info["evaluations"] = self.tally.evaluations
        info["batches"] = self.batches
        info["repeats"] = self.repeats
        info["seconds"] = round(self.elapsed, 3)
        info["planned_batches"] = self.planned_batches
        decision = self.stop_decision if status != "running" else None
        info["stop_criterion"] = None if decision is None else decision.criterion
        info["stop_reason"] = None if decision is None else decision.message
        info["best"] = self.store.summary_of(self.tally.best, self.space)
        info["baseline"] = self.store.summary_of(self.tally.baseline, self.space)
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
        end = self._event("end", message=status)
        if self.sweep_outcome is not None and self.sweep_outcome.batches:
            end.sweep_done, end.sweep_total = self.sweep_outcome.batches, self.sweep_outcome.budget
        emit(end)
        if self.tally.best is None or self.tally.baseline is None:
            raise RunEndedEarly(
                f"the run stopped before the baseline batch was generated ({status}"
                + (f": {error}" if error else "")
                + f"); nothing to return. Run directory: {self.store.root}",
                status,
            )
        return RunResult(
            run_dir=self.store.root, status=status, best=self.tally.best, baseline=self.tally.baseline, error=error,
            generations_done=int(self.run_info["generations_done"]), evaluations=self.tally.evaluations,
            degenerate_generations=list(self.run_info.get("degenerate_generations", [])),
            stop_criterion=self.stop_decision.criterion if self.stop_decision else "",
            stop_reason=self.stop_decision.message if self.stop_decision else "",
            batches=self.batches, repeats=self.repeats, report_error=report_error, sweep=self.sweep_outcome,
            space=self.space,
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
        best = self.tally.best
        return RunEvent(
            kind=kind, generation=generation, done=self.tally.evaluations, total=self.total_evaluations,
            best_fitness=None if best is None else best.total, record=record, message=message,
            batches=self.batches, planned_batches=self.planned_batches, elapsed=self.elapsed,
        )


class _StopNow(Exception):
    """Raised inside the loop when the loss floor or the budget ends the run before an individual."""

    def __init__(self, decision: StopDecision) -> None:
        super().__init__(decision.message)
        self.decision = decision

