"""A run's tally of its records: how many were evaluated, the baseline, the best, the streak of
failures that ends the run, and generation.json's summary of each generation.

The run loop (lib_pinning.run) counts every record it persists, and every record on disk when a
run is resumed, so the tally of a resumed run equals that of a run that went straight through.

The best is the lowest total (loss + size-limit and guard penalties) among the records that did
not fail, with one exception the guard makes: a batch it excluded is never the best, except the
first one while nothing clean exists (the baseline: the prompt as written is the one safe answer),
and the first clean record replaces it.
"""

from __future__ import annotations

import logging
from typing import Any, Sequence

import numpy as np

from lib_pinning import guard
from lib_pinning.optimizer import PinningOptimizer
from lib_pinning.store import GenerationRecord, IndividualRecord

log = logging.getLogger(__name__)

# Consecutive failed individuals after which the run stops: the backend is broken, not the prompt.
MAX_CONSECUTIVE_FAILURES = 3


class RunTally:
    """The counts and the best of the records a run has accounted for."""

    def __init__(self) -> None:
        self.evaluations = 0  # individuals evaluated, baseline and failed ones included
        self.best: IndividualRecord | None = None
        self.baseline: IndividualRecord | None = None
        self._consecutive_failures = 0

    def account(self, record: IndividualRecord) -> None:
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

    def count_failure(self, record: IndividualRecord) -> None:
        """A backend that fails several individuals in a row is broken, not the prompt: stop the run."""
        if record.status == "ok":
            self._consecutive_failures = 0
            return
        self._consecutive_failures += 1
        if self._consecutive_failures >= MAX_CONSECUTIVE_FAILURES:
            raise RuntimeError(f"{MAX_CONSECUTIVE_FAILURES} individuals in a row failed; last error: {record.error}")


def summarize_generation(
    generation: int,
    population: Sequence[np.ndarray],
    records: Sequence[IndividualRecord],
    *,
    best: IndividualRecord,
    optimizer: PinningOptimizer,
    lambda_: int,
    seconds: float,
    run_info: dict[str, Any],
    guard_on: bool,
) -> GenerationRecord:
    """generation.json of a told generation: its fitness statistics, the run's best so far, the
    search distribution after the update (`optimizer`), failures, repeats and degenerate images.
    A generation most of whose images are degenerate is added to run_info's
    `degenerate_generations` and logged."""
    values = np.array([r.total for r in records])
    return GenerationRecord(
        generation=generation,
        evaluations=1 + generation * lambda_,  # the baseline and every individual so far
        fitness_min=float(values.min()),
        fitness_mean=float(values.mean()),
        fitness_max=float(values.max()),
        fitness_std=float(values.std()),
        best_index=int(values.argmin()),
        best_so_far=[best.generation, best.index],
        best_so_far_fitness=float(best.total),
        best_so_far_x=list(best.x_evaluated),
        sigma=optimizer.sigma,
        axis_ratio=optimizer.axis_ratio,
        axis_scales=optimizer.axis_scales.tolist(),
        population_std=np.std(np.asarray(population, dtype=float), axis=0).tolist(),
        centroid=optimizer.centroid.tolist(),
        seconds=seconds,
        failed=sum(r.status != "ok" for r in records),
        repeats=sum(r.repeat_of is not None for r in records),
        **_guard_summary(generation, records, run_info, guard_on),
    )


def _guard_summary(
    generation: int, records: Sequence[IndividualRecord], run_info: dict[str, Any], guard_on: bool
) -> dict[str, Any]:
    """The generation's degenerate individuals and image share; says so when most are degenerate."""
    reasons = [image for r in records for image in r.degenerate_reasons]
    share = sum(bool(image) for image in reasons) / len(reasons) if reasons else 0.0
    if share > guard.MAJORITY:
        flagged = run_info.setdefault("degenerate_generations", [])
        if generation not in flagged:
            flagged.append(generation)
        log.warning(
            "generation %d: most images are degenerate (%s): the search is in the model's failure "
            "region%s", generation, guard.describe(guard.summarize_reasons(reasons), len(reasons)),
            "; they are penalised and never chosen as best" if guard_on else " and the guard is off",
        )
    return {"degenerate": sum(r.degenerate for r in records), "degenerate_share": share}
