"""An optional sensitivity sweep around a run's best point, at a fixed batch budget.

Where the surrogate of :mod:`lib_pinning.analysis.influence` cannot tell (a short run, a loss that
moves in steps at fixed seeds), the sweep measures: for unit j it generates the best point with
j's weight moved up and down by `step`, scores both batches with the run's own objective (targets
read back from the run folder, images quantised and sanitised as the run does) and compares them
image by image: image i of both batches has the same seed, so the difference of its terms is the
step's effect on that image alone (lib_pinning.analysis.sweep_stats: the terms, the interval, the
classes). The image loss's choice of target is held at the best batch's (read from its saved
images, no batch generated): the sweep asks which words hold the picture the run is pinned to.

Seed sets: the first is the run's own seeds; a budget above one up/down pair per unit adds seed
sets derived as the run's are (`lib_pinning.run.derive_seeds`: consecutive seeds, each set
starting after the last seed used), so the interval is over more images. The batches go unit by
unit, least certain unit first (widest standardised interval of the surrogate; unfitted units
before all), one seed set at a time: with a budget of B batches and d units each unit gets
B // (2 d) seed sets and the first (B // 2) mod d units one more. The order depends on the
surrogate alone, never on what the sweep saw, so the interval keeps its meaning.

A batch the degenerate-image guard flags has a loss that is the guard's, not the objective's: its
seed set is left out for that unit (counted as "degenerate").

The result goes into influence.json under "sweep" (format 2; format-1 sweeps, one pair at the run's
seeds without an interval, stay readable by the report). The sweep's batches are not run records:
they do not enter the report's tables, the run's best or a resume.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import torch

from lib_pinning import guard
from lib_pinning.analysis import influence
from lib_pinning.analysis.sweep_stats import BAND, CONFIDENCE, paired_estimate, per_image_terms, pinned_target_weights
from lib_pinning.evaluation import quantize
from lib_pinning.generator import Batch, GenerationRequest, Generator
from lib_pinning.objectives.compose import CompositeObjective, build_objective
from lib_pinning.options import PinningOptions
from lib_pinning.prompt import PromptSpace
from lib_pinning.run import derive_seeds
from lib_pinning.store import RunStore, atomic_write_json, read_json

log = logging.getLogger(__name__)

FORMAT = 2
# The weight step. On the toy (docs/benchmarks.md, "Sensitivity sweep"), a step of 0.1 agrees with
# the closed-form truth less than 0.2 at the same budget (56% against 64% of 61 units at 128
# batches per prompt): at fixed seeds few images change their picture for so small a change. A
# larger step crosses the failure modes' onset (frying from an effective weight of 1.5) more
# often: 0.2 already makes most of its wrong claims there, and 0.4 made more of them in an
# exploration on 4 prompts, which is why the default stops at 0.2.
DEFAULT_STEP = 0.2
METHOD = ("one unit at a time, weight +-step, paired per-image differences of the run's objective "
          "(common seeds), Student-t interval over the images; inert also needs the unseen-jump bound in the band")


def _order(data: dict[str, Any], dim: int) -> list[int]:
    """Units, least certain first (widest standardised interval; unfitted ones before all)."""
    def width(unit: dict[str, Any]) -> float:
        low, high = unit.get("standardized_interval") or [None, None]
        return math.inf if low is None or high is None else high - low

    units = data.get("units") or []
    if len(units) != dim:
        return list(range(dim))
    return sorted(range(dim), key=lambda j: -width(units[j]))


def plan(order: list[int], budget: int) -> list[tuple[int, int]]:
    """(unit, seed set) of each up/down pair the budget pays for: every unit at seed set 0 first,
    then every unit at seed set 1, and so on (module docstring)."""
    if budget < 2:
        raise ValueError(f"a sweep needs at least 2 batches (one unit up and down), got {budget}")
    if not order:
        return []
    return [(order[k % len(order)], k // len(order)) for k in range(budget // 2)]


def seed_set(seeds: tuple[int, ...], k: int) -> tuple[int, ...]:
    """Seed set k: the run's own seeds for 0, else the k-th block of consecutive seeds after them."""
    if k == 0:
        return seeds
    return derive_seeds(max(seeds) + 1 + (k - 1) * len(seeds), len(seeds))


def jump_size(jumps: list[float], spread: float, scale: float) -> float:
    """How far one image could jump unseen: at least the largest paired change the sweep saw, and
    the largest gap between two images' terms in one batch (the run's targets, the prompt's own
    pictures, included: an image taking another of them); a sweep where nothing moved and every
    image looked alike uses the loss's whole scale. Without the gap, a small sweep of a well
    pinned run, whose images moved only by rounding, would bound the unseen jumps by that
    rounding and call units inert on no evidence."""
    return max(max(jumps, default=0.0), spread) or scale


@dataclass
class _Unit:
    """What the sweep saw of one unit: its paired differences and batch losses."""

    differences: list[float] = field(default_factory=list)
    losses_up: list[float] = field(default_factory=list)
    losses_down: list[float] = field(default_factory=list)
    seed_sets: int = 0
    degenerate: int = 0


class _Scorer:
    """Generates and scores one batch as the run did: (loss, per-image terms or None), or None for a
    batch the guard flags."""

    def __init__(self, generator: Generator, objective: CompositeObjective, space: PromptSpace,
                 thresholds: guard.GuardThresholds) -> None:
        self.generator, self.objective, self.space, self.thresholds = generator, objective, space, thresholds
        self.target_weights: dict[str, np.ndarray] | None = None
        self.target_spread = 0.0

    def measure_targets(self, targets: torch.Tensor, x: np.ndarray) -> None:
        """The gap between the terms of the run's own target pictures (the baseline's images,
        scored as a batch): how far an image that takes another of them moves its term."""
        scored = self.objective.score(Batch(images=targets, seeds=tuple(range(len(targets)))), x)
        terms = per_image_terms(self.objective, scored, x, len(targets), self.target_weights)
        self.target_spread = float(np.ptp(terms)) if terms is not None else 0.0

    def pin_to(self, store: RunStore, centre: dict[str, Any], x: np.ndarray) -> bool:
        """Hold the best batch's target weights fixed in the terms (sweep_stats._flip_terms), from
        its saved images (what the run scored: no batch generated). False when they are unreadable."""
        record = store.read_individual(int(centre["generation"]), int(centre["index"]))
        try:
            images = store.load_batch_images(record) if record is not None else None
        except (OSError, ValueError) as e:
            log.warning("sweep: the best batch's images are unreadable (%s): each batch's own nearest target "
                        "is used", e)
            images = None
        if images is None:
            return False
        scored = self.objective.score(Batch(images=images, seeds=tuple(record.seeds)), x)
        self.target_weights = pinned_target_weights(self.objective, scored, len(images))
        return True

    def __call__(self, x: np.ndarray, seeds: tuple[int, ...]) -> tuple[float, np.ndarray | None] | None:
        prompt, negative = self.space.render(x)
        batch = self.generator.generate(GenerationRequest(prompt, negative, seeds))
        images, nonfinite = guard.sanitize(batch.images, batch.nonfinite)
        if guard.inspect(images, nonfinite, self.thresholds).count:
            return None
        scored = self.objective.score(replace(batch, images=quantize(images), nonfinite=nonfinite), x)
        return float(scored.loss), per_image_terms(self.objective, scored, x, len(images), self.target_weights)


def sweep(store: RunStore, generator: Generator, budget: int, step: float = DEFAULT_STEP,
          band: float = BAND) -> dict[str, Any]:
    """Run the sweep (at most `budget` batches) and add it to the run's influence.json."""
    if not step > 0:
        raise ValueError(f"the sweep's step must be > 0, got {step}")
    if not band >= 0:
        raise ValueError(f"the sweep's band must be >= 0, got {band}")
    run = store.read_run(required=("options", "space", "seeds", "targets"))
    options = PinningOptions.from_json(run["options"])
    space = PromptSpace.from_json(run["space"])
    seeds = tuple(int(s) for s in run["seeds"])
    path = store.root / influence.INFLUENCE_FILE
    data = read_json(path) if path.is_file() else influence.write_influence(store)
    if data.get("center") is None:
        raise ValueError("the run has no usable evaluation to sweep around")
    pairs = plan(_order(data, space.dim), budget)
    centre = np.asarray(data["center"]["x"], dtype=float)
    masks = store.load_masks(run["target_masks"]) if run.get("target_masks") else None
    targets = store.load_targets(run["targets"])
    objective = build_objective(options, targets, masks=masks, generator=generator,
                                device=getattr(generator, "device", "cpu"))
    score = _Scorer(generator, objective, space, guard.GuardThresholds.from_options(options))
    pinned = score.pin_to(store, data["center"], centre)
    if len(targets) > 1:
        score.measure_targets(targets, centre)

    seen: dict[int, _Unit] = {}
    per_image = True
    spread = score.target_spread  # the largest difference between two images' terms in one batch
    for j, k in pairs:
        delta = np.zeros(space.dim)
        delta[j] = step
        at = seed_set(seeds, k)
        up, down = score(centre + delta, at), score(centre - delta, at)
        unit = seen.setdefault(j, _Unit())
        unit.seed_sets += 1
        if up is None or down is None:
            unit.degenerate += 1
            continue
        unit.losses_up.append(up[0])
        unit.losses_down.append(down[0])
        if up[1] is None or down[1] is None:
            # A part without per-image terms (the same for every batch: it depends on the objective
            # alone): whole batches, one difference per seed set.
            per_image = False
            unit.differences.append(up[0] - down[0])
        else:
            unit.differences.extend((up[1] - down[1]).tolist())
            spread = max(spread, float(np.ptp(up[1])), float(np.ptp(down[1])))
    jumps = [abs(v) for u in seen.values() for v in u.differences]
    resolution = jump_size(jumps, spread, float(sum(p.weight for p in objective.parts) or 1.0))

    units = influence.units_from_space(run.get("space"), space.dim)
    entries = [_entry(units[j], seen[j], step, band, resolution) for j in sorted(seen)]
    for entry in entries:
        log.debug("sweep: %r slope %s %s: %s", entry["text"], entry["slope"], entry["interval"], entry["class"])
    used = sorted({k for _, k in pairs})
    data["sweep"] = {
        "format": FORMAT, "method": METHOD, "budget": budget, "batches": 2 * len(pairs), "step": step,
        "band": band, "confidence": CONFIDENCE, "per_image": per_image, "pinned_to_best": pinned,
        "resolution": resolution,
        "seeds": list(seeds), "seed_sets": [list(seed_set(seeds, k)) for k in used],
        "seed_rule": "set 0: the run's seeds; set k: derive_seeds(max(run seeds) + 1 + (k - 1) x batch, batch)",
        "units": entries,
    }
    atomic_write_json(path, data)
    return data


def _finite(value: float) -> float | None:
    return float(value) if math.isfinite(value) else None


def _entry(unit: influence.UnitInfo, seen: _Unit, step: float, band: float, resolution: float) -> dict[str, Any]:
    estimate = paired_estimate(seen.differences, step, resolution, band=band)
    slope = _finite(estimate.slope)
    return {
        "index": unit.index, "side": unit.side, "text": unit.text, "step": step,
        "seed_sets": seen.seed_sets, "degenerate": seen.degenerate, "samples": estimate.samples,
        "unseen": _finite(estimate.unseen),
        "loss_up": float(np.mean(seen.losses_up)) if seen.losses_up else None,
        "loss_down": float(np.mean(seen.losses_down)) if seen.losses_down else None,
        "slope": slope, "interval": [_finite(estimate.interval[0]), _finite(estimate.interval[1])],
        "up": None if slope is None else slope * step, "down": None if slope is None else -slope * step,
        "class": estimate.cls,
    }


def sweep_lines(sweep_data: dict[str, Any]) -> list[str]:
    """The CLI's lines for a sweep of influence.json: what it cost, then one line per unit."""
    lines = [f"sweep: {sweep_data.get('batches')} batches, step {sweep_data.get('step')}, "
             f"{len(sweep_data.get('seed_sets') or [])} seed set(s); inert within +-{sweep_data.get('band')} "
             f"loss per unit weight; {round(100 * float(sweep_data.get('confidence') or 0))}% intervals"]
    for unit in sweep_data.get("units") or []:
        low, high = unit.get("interval") or [None, None]
        where = " (negative)" if unit.get("side") == "negative" else ""
        slope = "-" if unit.get("slope") is None else f"{unit['slope']:+.3f}"
        interval = "" if low is None or high is None else f" [{low:+.3f}, {high:+.3f}]"
        lines.append(f"{repr(unit['text']) + where:26} {unit['class']:12} slope {slope}{interval} loss per unit weight, "
                     f"{unit.get('samples', 0)} paired samples, {unit.get('seed_sets', 0)} seed set(s)"
                     + (f", {unit['degenerate']} degenerate" if unit.get("degenerate") else ""))
    return lines
