"""Resuming a pinning run from its folder, to the very result an uninterrupted run reaches.

`reopen` turns a run folder back into the parts of a run (lib_pinning.new_run.RunParts): run.json's
options, with the changes a resumed run may make (RESUME_OPTIONS: the budget, the length of the
search, the stopping rules), the search settings resolved as the first session resolved them, and
the optimizer where checkpoint.json left it. `PinningRun.resume` then replays the records on disk
into the run's tally (lib_pinning.tally) and its repeat cache, and `catch_up_stop_checks` brings
the stopping criteria to where the run stands before the loop goes on.

Damage: a checkpoint that cannot be read (truncated, of the wrong shape) or that is past records or
generation summaries that are missing gives a fresh optimizer from the run's seed instead. The
search then replays from the start: every record on disk is reused (same proposals, same seeds) and
what is gone is redone, as the run first did, so nothing computed is lost either way.

After a convergence stop (lib_pinning.stopping.CONVERGENCE) the criteria start afresh from where
the run stood (run.json's `stop_checks_from`), so a run resumed with more room searches on instead
of stopping at once.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

from lib_pinning.new_run import RunParts, search_settings
from lib_pinning.optimizer import CmaSettings, PinningOptimizer
from lib_pinning.options import PinningOptions
from lib_pinning.prompt import PromptSpace
from lib_pinning.stopping import CONVERGENCE, GenerationOutcome, StopMonitor, planned_batches
from lib_pinning.store import RUN_KEYS, RunDirectoryError, RunStore

log = logging.getLogger(__name__)

# Options a resumed run may change: the budget, the length of the search and the stopping rules.
RESUME_OPTIONS = (
    "max_batches", "max_minutes", "generations", "stop_early", "stop_patience", "stop_stagnation",
    "stop_tolerance", "stop_tolx", "cli_log",
)


def reopen(run_dir: Path, changes: dict[str, Any] | None = None) -> RunParts:
    """The parts of the run in `run_dir`, ready to go on, with `changes` (options among
    RESUME_OPTIONS, else a ValueError) applied; run.json's contents say "running" again."""
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
    settings = search_settings(options, space)
    info["cma"]["generations"] = settings.generations
    info["planned_batches"] = planned_batches(options, settings.generations, settings.lambda_)
    if info.get("stop_criterion") in CONVERGENCE:
        info["stop_checks_from"] = int(info.get("generations_done", 0))
    optimizer = restore_optimizer(store, settings, int(info["cma_seed"]))
    info["status"] = "running"
    info["error"] = None
    return RunParts(store=store, space=space, options=options, seeds=tuple(info["seeds"]), settings=settings,
                    optimizer=optimizer, run_info=info)


def restore_optimizer(store: RunStore, settings: CmaSettings, cma_seed: int) -> PinningOptimizer:
    """The optimizer where checkpoint.json left it; else a fresh one from the run's seed, which
    replays the search reusing every record on disk and redoing what is gone, as the run first did.
    Replaying is what an unreadable checkpoint (truncated, of the wrong shape) or one past records
    or generation summaries that are missing calls for: nothing computed is lost either way."""
    def fresh() -> PinningOptimizer:
        return PinningOptimizer(settings, seed=cma_seed)

    try:
        checkpoint = store.read_checkpoint()
        if checkpoint is None:
            return fresh()
        optimizer = PinningOptimizer.from_state(settings, checkpoint["optimizer"])
    except (RunDirectoryError, KeyError, TypeError, ValueError, AttributeError, IndexError) as e:
        log.warning("the checkpoint of %s cannot be read (%s): replaying the search from its seed, reusing "
                    "the records on disk", store.root, e)
        return fresh()
    lost = lost_since_start(store, optimizer.generation, settings.lambda_)
    if lost:
        log.warning("%d record(s) the checkpoint is past are missing or unreadable (first: %s): replaying the "
                    "search from the start to redo them", len(lost), lost[0])
        return fresh()
    return optimizer


def lost_since_start(store: RunStore, done: int, lambda_: int) -> list[str]:
    """What a run checkpointed after generation `done` should have on disk and does not: the
    baseline, every individual of the told generations and their summaries."""
    present = {record.key for record in store.iter_individuals()}
    wanted = [(0, 0)] + [(g, i) for g in range(1, done + 1) for i in range(lambda_)]
    lost = [f"generation {g}, #{i}" for g, i in wanted if (g, i) not in present]
    summaries = {record.generation for record in store.iter_generations()}
    return lost + [f"the summary of generation {g}" for g in range(1, done + 1) if g not in summaries]


def catch_up_stop_checks(monitor: StopMonitor, store: RunStore, since: int, done: int) -> None:
    """Bring the stopping criteria up to where the run stands: replay the generations since the
    checks last (re)started (`since`) up to the optimizer's `done`, from the records on disk, so a
    resumed run decides as one that ran straight through (or, after a convergence stop, starts them
    afresh). For a new run this is the start from the baseline."""
    records = list(store.iter_individuals())
    before = [r.total for r in records if r.generation <= since and r.status == "ok" and not r.excluded]
    monitor.restart(min(before) if before else None)
    values: dict[int, list[float]] = {}
    for r in records:
        values.setdefault(r.generation, []).append(r.total)
    for summary in store.iter_generations():
        if since < summary.generation <= done:
            monitor.observe(GenerationOutcome(
                summary.generation, values.get(summary.generation) or [summary.fitness_min],
                summary.best_so_far_fitness, math.inf,
            ))
