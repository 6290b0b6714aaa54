"""An optional one-at-a-time sensitivity sweep around a run's best point, at a fixed batch budget.

Where the surrogate of :mod:`lib_pinning.analysis.influence` cannot tell (a short or noisy run),
the sweep measures: for unit j it generates the best point with j's weight moved up and down by
`step`, at the run's own seeds, scores both batches with the run's own objective (targets read back
from the run folder, images quantised and sanitised as the run does) and takes the central
difference as the slope. With a budget below 2 batches per unit, the units the surrogate was least
sure of (widest standardised interval) are swept first.

The result goes into influence.json under "sweep", per unit in the same terms as the surrogate's
(slope, up, down, class; no interval: one pair at fixed seeds). The sweep's batches are not run
records: they do not enter the report's tables, the run's best or a resume.
"""

from __future__ import annotations

import logging
import math
from dataclasses import replace
from typing import Any

import numpy as np

from lib_pinning import guard
from lib_pinning.analysis import influence
from lib_pinning.generator import GenerationRequest, Generator
from lib_pinning.objectives.compose import build_objective
from lib_pinning.options import PinningOptions
from lib_pinning.prompt import PromptSpace
from lib_pinning.evaluation import quantize
from lib_pinning.store import RunStore, atomic_write_json, read_json

log = logging.getLogger(__name__)

DEFAULT_STEP = 0.1
# A change of the loss below this share of the best loss, both ways, is inert.
INERT_SHARE = 0.01


def _order(data: dict[str, Any], dim: int) -> list[int]:
    """Units, least certain first (widest standardised interval; unfitted ones before all)."""
    def width(unit: dict[str, Any]) -> float:
        low, high = unit.get("standardized_interval") or [None, None]
        return math.inf if low is None or high is None else high - low

    units = data.get("units") or []
    if len(units) != dim:
        return list(range(dim))
    return sorted(range(dim), key=lambda j: -width(units[j]))


def sweep(store: RunStore, generator: Generator, budget: int, step: float = DEFAULT_STEP) -> dict[str, Any]:
    """Run the sweep (at most `budget` batches) and add it to the run's influence.json."""
    if budget < 2:
        raise ValueError(f"a sweep needs at least 2 batches (one unit up and down), got {budget}")
    run = store.read_run(required=("options", "space", "seeds", "targets"))
    options = PinningOptions.from_json(run["options"])
    space = PromptSpace.from_json(run["space"])
    seeds = tuple(int(s) for s in run["seeds"])
    path = store.root / influence.INFLUENCE_FILE
    data = read_json(path) if path.is_file() else influence.write_influence(store)
    if data.get("center") is None:
        raise ValueError("the run has no usable evaluation to sweep around")
    centre = np.asarray(data["center"]["x"], dtype=float)
    masks = store.load_masks(run["target_masks"]) if run.get("target_masks") else None
    objective = build_objective(options, store.load_targets(run["targets"]), masks=masks, generator=generator,
                                device=getattr(generator, "device", "cpu"))

    def loss_at(x: np.ndarray) -> float | None:
        prompt, negative = space.render(x)
        batch = generator.generate(GenerationRequest(prompt, negative, seeds))
        images, nonfinite = guard.sanitize(batch.images, batch.nonfinite)
        if guard.inspect(images, nonfinite, guard.GuardThresholds.from_options(options)).count:
            return None  # a degenerate batch's loss is not the objective's
        scored = objective.score(replace(batch, images=quantize(images), nonfinite=nonfinite), x)
        return float(scored.loss)

    units = influence.units_from_space(run.get("space"), space.dim)
    entries = []
    for j in _order(data, space.dim)[: budget // 2]:
        delta = np.zeros(space.dim)
        delta[j] = step
        up, down = loss_at(centre + delta), loss_at(centre - delta)
        base = float(data["center"]["loss"])
        entry: dict[str, Any] = {"index": j, "side": units[j].side, "text": units[j].text, "step": step,
                                 "loss_up": up, "loss_down": down, "slope": None, "up": None, "down": None,
                                 "class": influence.UNKNOWN}
        if up is not None and down is not None:
            entry.update(slope=(up - down) / (2 * step), up=up - base, down=down - base)
            entry["class"] = _classify(up - base, down - base, base)
        entries.append(entry)
        log.info("sweep: %r up %s down %s: %s", units[j].text, up, down, entry["class"])
    data["sweep"] = {"budget": budget, "batches": 2 * len(entries), "step": step, "seeds": list(seeds),
                     "units": sorted(entries, key=lambda e: e["index"])}
    atomic_write_json(path, data)
    return data


def _classify(up: float, down: float, best_loss: float) -> str:
    """From the loss changes of a step up and down (changes within INERT_SHARE of the best loss
    count as none): inert when neither changes it; tightening when raising the weight does not cost
    and lowering it does (or raising gains); loosening the other way round; cannot tell when both
    directions cost (the weight sits at a local optimum: it holds the picture as it is) or both
    gain."""
    tolerance = INERT_SHARE * abs(best_loss)
    up, down = (0.0 if abs(v) <= tolerance else v for v in (up, down))
    if up == 0 and down == 0:
        return influence.INERT
    if up <= 0 <= down:
        return influence.TIGHTENING
    if down <= 0 <= up:
        return influence.LOOSENING
    return influence.UNKNOWN
