"""A pinning run's progress in the WebUI's terms, and the user's Interrupt / Skip / Stop.

The WebUI's progress (the bar under the gallery, /sdapi/v1/progress, the console's total bar) is
computed from `shared.state` (modules/progress.py:L102-L141 in v1.10.1: job_no / job_count plus
the sampling step within the job) and `shared.total_tqdm`:

- `state.job_count` = individuals in the run x WebUI jobs per individual (a batch is one job; the
  hires fix adds one, modules/processing.py:L1298). `process_images` would set job_count itself
  only while it is -1 (L929-L930) and doubles it for the hires fix unless
  `state.processing_has_refined_job_count` is set (L1290-L1299), so this sets both once at the
  start.
- `state.job_no` advances by itself (`state.nextjob()` after every batch and hires pass); it is
  set again from the engine's count after each individual, which keeps it right when an
  individual failed before its batch was done.
- `shared.total_tqdm.updateTotal(steps per individual x individuals)` sizes the console's total bar,
  which the WebUI's samplers advance one step at a time (`sd_samplers_common.py:L263`). Steps no
  local sampler makes are added after each individual (`catch_up`): batches an extra server made,
  individuals answered from an earlier identical prompt, and a resumed run's earlier sessions. So
  the bar reaches its total whoever made the batches, and only ever moves forward.
- `state.textinfo` ("Pinning: generation g/G, individual i/lambda, best f") is shown before the
  progress percentage (javascript/progressbar.js:L146-L147); it must stay on one line.

Stopping. Interrupt sets `state.interrupted`, Skip `state.skipped`, "stop generating after the
current image" (1.8+) `state.stopping_generation` (modules/shared_state.py:L75-L85). The engine
asks `cancel()` before every individual; any of the three ends the run there, with the report
written and the best individual so far returned. Interrupt and Skip also cut the current batch
short (the CFG denoiser raises on them mid-sampling); `WebUIGenerator` drops such a batch. Skip
normally means "skip this batch, go on with the next", but `process_images` clears
`state.skipped` at the start of its next batch (L935-L936), so a run that went on would lose it:
a pinning run treats Skip like Interrupt. With extra servers, `cut` (Interrupt, Skip) also
abandons the batches in flight and interrupts the servers; Stop generating lets them finish and
keeps them (lib_pinning.interrupts.RunStop, the pool's drain).
"""

from __future__ import annotations

import logging
from typing import Any

from lib_pinning.run import RunEvent

log = logging.getLogger(__name__)


LAST_TIMING: dict[str, float] = {}
"""Seconds per batch of the latest run in this WebUI process: the panel's time estimate
(`ui.plan_text`) uses it before the next run starts."""


def budget_text(event: RunEvent) -> str:
    """", batch b/B, about m min left": the planned batches and, once one ran, the time left."""
    if not event.planned_batches:
        return ""
    text = f", batch {event.batches}/{event.planned_batches}"
    if event.batches and event.elapsed > 0:
        left = event.elapsed / event.batches * max(0, event.planned_batches - event.batches)
        text += f", at most {format_duration(left)} left"
    return text


def format_duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


class WebUIProgress:
    """Maps RunEvents to the WebUI's progress state; `cancel` reads the stop flags."""

    def __init__(self, state: Any, total_tqdm: Any, *, lambda_: int, generations: int,
                 steps_per_individual: int, jobs_per_individual: int = 1) -> None:
        self.state = state
        self.total_tqdm = total_tqdm
        self.lambda_ = lambda_
        self.generations = generations
        self.steps_per_individual = steps_per_individual
        self.jobs_per_individual = jobs_per_individual
        self.stop_reason: str | None = None

    def cancel(self) -> bool:
        """True once the user pressed Interrupt, Skip or "stop generating"."""
        state = self.state
        for flag, reason in (("interrupted", "Interrupt"), ("skipped", "Skip"),
                             ("stopping_generation", "Stop generating")):
            if getattr(state, flag, False):
                if self.stop_reason is None:
                    self.stop_reason = reason
                    log.info("pinning: %s pressed; stopping after the current individual", reason)
                return True
        return False

    def cut(self) -> bool:
        """True once the user pressed Interrupt or Skip, which also abandon the batches in flight
        (on the extra servers too); "Stop generating" lets them finish."""
        if getattr(self.state, "interrupted", False) or getattr(self.state, "skipped", False):
            return self.cancel()  # true; it names the flag for the run's stop reason
        return False

    def start(self, total: int, done: int) -> None:
        state = self.state
        state.job_count = total * self.jobs_per_individual
        state.processing_has_refined_job_count = True
        state.job_no = done * self.jobs_per_individual
        self.total_tqdm.updateTotal(total * self.steps_per_individual)
        self.catch_up(done)

    def catch_up(self, done: int) -> None:
        """The console's total bar advanced to at least `done` individuals' steps.

        The bar counts the steps this WebUI's samplers made, which fall short of the individuals
        done by every batch a server made, every repeat and a resumed run's earlier batches; it can
        also be ahead, by a batch in flight here. Reads the bar's count (the tqdm behind
        `TotalTQDM`, the same class in v1.10.1 and Forge); with the console bars off there is
        none, and nothing to do."""
        bar = getattr(self.total_tqdm, "_tqdm", None)
        count = getattr(bar, "n", None)
        if count is None:
            return
        for _ in range(done * self.steps_per_individual - int(count)):
            self.total_tqdm.update()

    def on_event(self, event: RunEvent) -> None:
        if event.kind == "start":
            self.start(event.total, event.done)
        elif event.kind in ("individual", "generation"):
            self.state.job_no = event.done * self.jobs_per_individual
            self.catch_up(event.done)
        elif event.kind == "sweep":
            self.sweep(event)
            return
        elif event.kind == "end":
            self.catch_up(event.sweep_done if event.sweep_total else event.done)
        if event.kind != "end":
            self.state.textinfo = self.text(event.done, event.best_fitness) + budget_text(event)
        if event.batches:
            LAST_TIMING["seconds_per_batch"] = event.elapsed / event.batches

    def sweep(self, event: RunEvent) -> None:
        """Before each batch of the sensitivity sweep: the bars restart over the sweep's batches
        (the search's are done; the console's as a new bar), and the text says which sweep batch
        is next."""
        if event.sweep_done == 0:
            self.state.job_count = event.sweep_total * self.jobs_per_individual
            self.total_tqdm.clear()
            self.total_tqdm.updateTotal(event.sweep_total * self.steps_per_individual)
        self.state.job_no = event.sweep_done * self.jobs_per_individual
        self.catch_up(event.sweep_done)
        best = "" if event.best_fitness is None else f", best {event.best_fitness:.5g}"
        self.state.textinfo = f"Pinning: sensitivity sweep, batch {event.sweep_done + 1}/{event.sweep_total}{best}"

    def text(self, done: int, best: float | None) -> str:
        """What is being generated next: the baseline, or generation g's individual i."""
        if done == 0:
            where = "baseline batch"
        else:
            generation = (done - 1) // self.lambda_ + 1
            index = (done - 1) % self.lambda_ + 1
            if generation > self.generations:
                where = f"generation {self.generations}/{self.generations} done"
            else:
                where = f"generation {generation}/{self.generations}, individual {index}/{self.lambda_}"
        best_text = "" if best is None else f", best {best:.5g}"
        return f"Pinning: {where}{best_text}"
