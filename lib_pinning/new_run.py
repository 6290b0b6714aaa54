"""Starting a pinning run: its input checked before the run folder exists, then the folder, its
first run.json and the optimizer from the run's seed.

Everything that can be checked before generating is checked first (the prompt parses into a
space, the seeds, the CMA-ES settings, lib_pinning.preflight's files and backend), so bad input is
answered at once instead of with a failed run folder. A Ctrl-C while the folder is being made
(before `PinningRun.execute` installs its own handler) never leaves a "running" run behind.

`RunParts` is what a `PinningRun` is built from, here and when a run is resumed from its folder
(lib_pinning.resume), which resolves its search with `search_settings` as its first session did.
"""

from __future__ import annotations

import logging
import shutil
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Sequence

from lib_pinning import __version__
from lib_pinning.bounds import WeightRange
from lib_pinning.generator import Generator
from lib_pinning.objectives.compose import active_terms
from lib_pinning.optimizer import CmaSettings, PinningOptimizer
from lib_pinning.options import PinningOptions
from lib_pinning.preflight import check_run_input
from lib_pinning.prompt import PromptSpace
from lib_pinning.stopping import planned_batches
from lib_pinning.store import RunStore

log = logging.getLogger(__name__)


@dataclass
class RunParts:
    """What a PinningRun is built from, besides its generator: a new run's or a resumed one's."""

    store: RunStore
    space: PromptSpace
    options: PinningOptions
    seeds: tuple[int, ...]
    settings: CmaSettings
    optimizer: PinningOptimizer
    run_info: dict[str, Any]  # run.json's contents; the run keeps them up to date


def search_settings(options: PinningOptions, space: PromptSpace) -> CmaSettings:
    """The CMA-ES settings of a run over `space`; the unit counts of the prompt and the negative
    prompt are the blocks that groups never mix."""
    blocks = (space.positive.unit_count, space.negative.unit_count)
    return CmaSettings.resolve(options, space.dim, len(active_terms(options)), blocks=blocks)


@contextmanager
def create_run(
    *,
    generator: Generator,
    prompt: str,
    negative_prompt: str,
    seeds: Sequence[int],
    options: PinningOptions,
    runs_dir: Path,
    tokenizer: Any = None,
) -> Iterator[RunParts]:
    """Validate everything that can be checked before generating, then create the run directory
    and yield the new run's parts; a Ctrl-C before the with block ends marks the run interrupted
    (or removes a folder that has no run.json yet)."""
    space = PromptSpace(
        prompt, negative_prompt, options.granularity, tokenizer=tokenizer,
        weight_range=WeightRange(options.weight_min, options.weight_max),
    )
    if not seeds:
        raise ValueError("at least one seed is required")
    settings = search_settings(options, space)
    check_run_input(options, generator=generator, seeds=seeds, settings=settings, runs_dir=runs_dir)
    cma_seed = options.cma_seed if options.cma_seed is not None else int(seeds[0]) % 2**32
    store = RunStore.create(runs_dir)
    try:
        yield _first_parts(store, space, generator, options, seeds, settings, cma_seed, prompt, negative_prompt)
    except KeyboardInterrupt:
        # Ctrl-C before execute() installs its handler: never leave a "running" run behind.
        if (store.root / "run.json").is_file():
            store.write_run({**store.read_run(), "status": "interrupted"})
        else:
            shutil.rmtree(store.root, ignore_errors=True)
        raise


def _first_parts(
    store: RunStore, space: PromptSpace, generator: Generator, options: PinningOptions,
    seeds: Sequence[int], settings: CmaSettings, cma_seed: int, prompt: str, negative_prompt: str,
) -> RunParts:
    """The rest of `create_run`, once the run directory exists: run.json and the optimizer."""
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
    return RunParts(
        store=store, space=space, options=options, seeds=tuple(int(s) for s in seeds), settings=settings,
        optimizer=optimizer, run_info=run_info,
    )
