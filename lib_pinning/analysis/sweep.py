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

The budget reserves the first pair of every unit it reaches (the first min(d, (B - c) // 2)
units, c the centre's batch below: 1 when the best batch's images cannot be read, else 0): a retry
at a smaller step (below) or a batch of a later seed set is spent only when what is left still
pays for the first up/down pair of every such unit not started yet, so one unit's retries never take the batches another unit's first
measurement needs. A unit the budget does not reach is still listed, as "cannot tell" with no seed
set and `"unmeasured": "budget"` (the only reason so far: `sweep_stats.UNMEASURED`, which says
what the CLI and the report show); a measured unit has `"unmeasured": null`.

Failure modes (lib_pinning.analysis.sweep_onset): a step whose batch the guard flags, or whose
images drift as a failure mode sets in (the toy fries gradually from 1.5, the guard flags near 2),
measures the failure, not the word. At the unit's first seed set such a side records the failure
onset (the weight, the failure's kind) and is retried at half the step, at most twice (while the
reservation above allows), same seeds; a side with no clear step is left out and the unit measured
one-sided from the best point (the centre's batch at each seed set: the best batch's saved images for the run's seeds, one generated
batch per further seed set). The interval divides by the span actually measured. A batch the guard
flags at a later seed set has a loss that is the guard's, not the objective's: that seed set is
left out for that unit (counted as "degenerate"). Every batch, probes and centres included, counts
against the budget.

The result goes into influence.json under "sweep" (format 3, which adds each unit's `step_up`,
`step_down` and `failures`, and `unmeasured` now that every unit is listed: an earlier format-3
file lacks it and lists only the units it measured; format-2 and format-1 sweeps, the latter one
pair at the run's seeds without an interval, stay readable by the report). The sweep's batches are not run records:
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
from lib_pinning.analysis import sweep_onset as onset
from lib_pinning.analysis.sweep_stats import (
    BAND, CONFIDENCE, UNMEASURED_BUDGET, paired_estimate, per_image_terms, pinned_target_weights, unmeasured_note,
)
from lib_pinning.evaluation import quantize
from lib_pinning.generator import Batch, GenerationRequest, Generator
from lib_pinning.objectives.compose import CompositeObjective, build_objective
from lib_pinning.options import PinningOptions
from lib_pinning.prompt import PromptSpace
from lib_pinning.run import derive_seeds
from lib_pinning.store import RunStore, atomic_write_json, read_json

log = logging.getLogger(__name__)

FORMAT = 3
# The weight step. On the toy (docs/benchmarks.md, "Sensitivity sweep"), a step of 0.1 agrees with
# the closed-form truth less than 0.2 at the same budget (56% against 64% of 61 units at 128
# batches per prompt): at fixed seeds few images change their picture for so small a change. A
# larger step crosses the failure modes' onset (frying from an effective weight of 1.5) more
# often: 0.2 already makes most of its wrong claims there, and 0.4 made more of them in an
# exploration on 4 prompts, which is why the default stops at 0.2.
DEFAULT_STEP = 0.2
METHOD = ("one unit at a time, weight +-step (a side landing in a failure mode halved, or left out: one-sided), "
          "paired per-image differences of the run's objective (common seeds), Student-t interval over the images; "
          "inert also needs the unseen-jump bound in the band")


def _order(data: dict[str, Any], dim: int) -> list[int]:
    """Units, least certain first (widest standardised interval; unfitted ones before all)."""
    def width(unit: dict[str, Any]) -> float:
        low, high = unit.get("standardized_interval") or [None, None]
        return math.inf if low is None or high is None else high - low

    units = data.get("units") or []
    if len(units) != dim:
        return list(range(dim))
    return sorted(range(dim), key=lambda j: -width(units[j]))


def plan(order: list[int], budget: int, centre: int = 0) -> list[tuple[int, int]]:
    """(unit, seed set) of each up/down pair the budget pays for: every unit at seed set 0 first,
    then every unit at seed set 1, and so on (module docstring); `centre`: batches spent on seed
    set 0's centre first (the reservation's plan)."""
    if budget < 2:
        raise ValueError(f"a sweep needs at least 2 batches (one unit up and down), got {budget}")
    if not order:
        return []
    return [(order[k % len(order)], k // len(order)) for k in range(max(budget - centre, 0) // 2)]


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
class _Side:
    """One side (up or down) of a unit: the step it is measured at (0: at the best point itself, the
    side left out) and the failure onset it ran into, if any (lib_pinning.analysis.sweep_onset)."""

    step: float
    failure: dict[str, Any] | None = None


@dataclass
class _Unit:
    """What the sweep saw of one unit: its paired differences and batch losses."""

    differences: list[float] = field(default_factory=list)
    losses_up: list[float] = field(default_factory=list)
    losses_down: list[float] = field(default_factory=list)
    seed_sets: int = 0
    degenerate: int = 0
    sides: dict[str, _Side] | None = None  # decided at the unit's first seed set

    @property
    def span(self) -> float:
        return sum(side.step for side in (self.sides or {}).values())


@dataclass(frozen=True)
class _Measured:
    """One scored batch: its loss, per-image terms (None: a part without them) and the guard's check."""

    loss: float
    terms: np.ndarray | None
    check: onset.StepCheck
    stats: tuple[guard.ImageStats, ...]


class _Scorer:
    """Generates and scores batches as the run did (quantised, sanitised, the guard's verdict), within
    the sweep's budget of batches."""

    def __init__(self, generator: Generator, objective: CompositeObjective, space: PromptSpace,
                 thresholds: guard.GuardThresholds, budget: int) -> None:
        self.generator, self.objective, self.space, self.thresholds = generator, objective, space, thresholds
        self.target_weights: dict[str, np.ndarray] | None = None
        self.target_spread = 0.0
        self.budget, self.batches = budget, 0
        self.waiting = 0  # units whose first pair is still to come: their batches are reserved
        self._centres: dict[int, _Measured] = {}

    def affords(self, batches: int, centres: tuple[int, ...] = ()) -> bool:
        """Whether `batches` step batches and the centres of the seed sets `centres` (those still to
        generate) fit the budget and leave the first pair of every waiting unit paid for (the module
        docstring's reservation). Seed set 0's centre needs no reserve: the first unit's first pair
        generates it, before any retry."""
        own = batches + sum(self.centre_cost(k) for k in set(centres))
        return self.batches + own + 2 * self.waiting <= self.budget

    def measure_targets(self, targets: torch.Tensor, x: np.ndarray) -> None:
        """The gap between the terms of the run's own target pictures (the baseline's images,
        scored as a batch): how far an image that takes another of them moves its term."""
        scored = self.objective.score(Batch(images=targets, seeds=tuple(range(len(targets)))), x)
        terms = per_image_terms(self.objective, scored, x, len(targets), self.target_weights)
        self.target_spread = float(np.ptp(terms)) if terms is not None else 0.0

    def pin_to(self, store: RunStore, centre: dict[str, Any], x: np.ndarray) -> bool:
        """Hold the best batch's target weights fixed in the terms (sweep_stats._flip_terms), from
        its saved images (what the run scored: no batch generated), which are also the centre of
        seed set 0. False when they are unreadable."""
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
        if tuple(record.seeds) == tuple(int(s) for s in store.read_run()["seeds"]):
            self._centres[0] = self._scored(images, (False,) * len(images), scored, x, None)
        return True

    def centre_cost(self, k: int) -> int:
        """Batches the centre of seed set k still costs (0 once generated, or read from the best batch)."""
        return 0 if k in self._centres else 1

    def centre(self, x: np.ndarray, k: int, seeds: tuple[int, ...]) -> _Measured:
        if k not in self._centres:
            self._centres[k] = self(x, seeds, None)
        return self._centres[k]

    def _scored(self, images: torch.Tensor, nonfinite: tuple[bool, ...], scored: Any, x: np.ndarray,
                centre: _Measured | None) -> _Measured:
        verdict = guard.inspect(images, nonfinite, self.thresholds)
        check = onset.check(verdict, centre.stats if centre is not None else None, self.thresholds)
        terms = per_image_terms(self.objective, scored, x, len(images), self.target_weights)
        return _Measured(float(scored.loss), terms, check, verdict.stats)

    def __call__(self, x: np.ndarray, seeds: tuple[int, ...], centre: _Measured | None) -> _Measured:
        """One batch at x (one of the budget), checked against `centre`'s images (the same seeds)."""
        if self.batches >= self.budget:
            raise RuntimeError("the sweep's budget is spent")  # the caller checks `affords` first
        self.batches += 1
        prompt, negative = self.space.render(x)
        batch = self.generator.generate(GenerationRequest(prompt, negative, seeds))
        images, nonfinite = guard.sanitize(batch.images, batch.nonfinite)
        images = quantize(images)  # judged and scored as saved, as the run does
        scored = self.objective.score(replace(batch, images=images, nonfinite=nonfinite), x)
        return self._scored(images, nonfinite, scored, x, centre)


_SIGN = {"up": 1.0, "down": -1.0}


def _weight(space: PromptSpace, x: np.ndarray, j: int) -> float:
    """The weight unit j's words are rendered with at x (what a user reads as "raising it to 1.6")."""
    return max(abs(w) for w in space.weights(x)[j])


def _first_sides(score: _Scorer, unit: _Unit, j: int, centre: np.ndarray, step: float, k: int,
                 seeds: tuple[int, ...]) -> tuple[_Measured, _Measured] | None:
    """The unit's first seed set: both steps, each side kept clear of the failure modes by halving
    or left out (sweep_onset's docstring); the two measurements to difference, or None when the
    budget cannot pay for the first pair."""
    if not score.affords(2, centres=(k,)):
        return None
    base = score.centre(centre, k, seeds)
    first = {}
    for name, sign in _SIGN.items():
        delta = np.zeros(score.space.dim)
        delta[j] = sign * step
        first[name] = score(centre + delta, seeds, base)
    unit.sides, chosen = {}, {}
    for name, sign in _SIGN.items():
        other = first["down" if name == "up" else "up"].check.drift
        h, seen, failure = step, first[name], None
        while not seen.check.clear(other):
            delta = np.zeros(score.space.dim)
            delta[j] = sign * h
            tried = onset.failure_entry(name, _weight(score.space, centre + delta, j), h, seen.check)
            failure = failure or {**tried, "tried": []}
            failure["tried"].append(tried)
            failure["weight"] = tried["weight"]  # the failing weight nearest the best: the onset's bound
            # The kind the guard names (fried, black...) wherever it flagged; "drift" when it never did.
            failure["kind"] = next((t["kind"] for t in failure["tried"] if t["kind"] != onset.DRIFT), onset.DRIFT)
            h /= 2
            if len(failure["tried"]) > onset.HALVINGS or not score.affords(1):
                h, seen = 0.0, base
                break
            delta[j] = sign * h
            seen = score(centre + delta, seeds, base)
        if failure is not None:
            delta = np.zeros(score.space.dim)
            delta[j] = sign * h
            failure["clear_weight"] = round(_weight(score.space, centre + delta, j), 3)
            failure["measured_step"] = h
        unit.sides[name] = _Side(h, failure)
        chosen[name] = seen
    return chosen["up"], chosen["down"]


def _later_sides(score: _Scorer, unit: _Unit, j: int, centre: np.ndarray, k: int,
                 seeds: tuple[int, ...]) -> tuple[_Measured, _Measured] | None:
    """A later seed set at the steps the first one chose (None when the budget cannot pay for it)."""
    sides = unit.sides or {}
    steps = [sides[name].step for name in _SIGN]
    if not score.affords(sum(h > 0 for h in steps), centres=(k,) if 0.0 in steps else ()):
        return None
    out = []
    for (name, sign), h in zip(_SIGN.items(), steps):
        if h > 0:
            delta = np.zeros(score.space.dim)
            delta[j] = sign * h
            out.append(score(centre + delta, seeds, None))
        else:
            out.append(score.centre(centre, k, seeds))
    return out[0], out[1]


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
    order = _order(data, space.dim)
    pairs = plan(order, budget)
    centre = np.asarray(data["center"]["x"], dtype=float)
    masks = store.load_masks(run["target_masks"]) if run.get("target_masks") else None
    targets = store.load_targets(run["targets"])
    objective = build_objective(options, targets, masks=masks, generator=generator,
                                device=getattr(generator, "device", "cpu"))
    score = _Scorer(generator, objective, space, guard.GuardThresholds.from_options(options), budget)
    pinned = score.pin_to(store, data["center"], centre)
    if len(targets) > 1:
        score.measure_targets(targets, centre)
    # The units whose first pair is reserved (module docstring): those the budget reaches after the centre.
    waiting = {j for j, _ in plan(order, budget, score.centre_cost(0))}

    seen: dict[int, _Unit] = {}
    per_image = True
    spread = score.target_spread  # the largest difference between two images' terms in one batch
    used: set[int] = set()
    for j, k in pairs:
        unit = seen.setdefault(j, _Unit())
        waiting.discard(j)
        score.waiting = len(waiting)
        if unit.sides is not None and unit.span == 0:
            continue  # neither side clear of the failure modes: nothing to measure at more seeds
        at = seed_set(seeds, k)
        measured = (_first_sides(score, unit, j, centre, step, k, at) if unit.sides is None
                    else _later_sides(score, unit, j, centre, k, at))
        if measured is None:
            break  # the budget is spent: the plan's later pairs cost at least as much
        used.add(k)
        unit.seed_sets += 1
        if unit.span == 0:
            continue
        up, down = measured
        if up.check.flagged or down.check.flagged:
            unit.degenerate += 1
            continue
        unit.losses_up.append(up.loss)
        unit.losses_down.append(down.loss)
        if up.terms is None or down.terms is None:
            # A part without per-image terms (the same for every batch: it depends on the objective
            # alone): whole batches, one difference per seed set.
            per_image = False
            unit.differences.append(up.loss - down.loss)
        else:
            unit.differences.extend((up.terms - down.terms).tolist())
            spread = max(spread, float(np.ptp(up.terms)), float(np.ptp(down.terms)))
    jumps = [abs(v) for u in seen.values() for v in u.differences]
    resolution = jump_size(jumps, spread, float(sum(p.weight for p in objective.parts) or 1.0))

    units = influence.units_from_space(run.get("space"), space.dim)
    entries = [_entry(units[j], seen[j], step, band, resolution) if j in seen and seen[j].sides is not None
               else _unmeasured(units[j], step, UNMEASURED_BUDGET) for j in range(space.dim)]
    for entry in entries:
        log.debug("sweep: %r slope %s %s: %s", entry["text"], entry["slope"], entry["interval"], entry["class"])
    data["sweep"] = {
        "format": FORMAT, "method": METHOD, "budget": budget, "batches": score.batches, "step": step,
        "band": band, "confidence": CONFIDENCE, "per_image": per_image, "pinned_to_best": pinned,
        "resolution": resolution, "onset_rule": onset.RULE,
        "seeds": list(seeds), "seed_sets": [list(seed_set(seeds, k)) for k in sorted(used)],
        "seed_rule": "set 0: the run's seeds; set k: derive_seeds(max(run seeds) + 1 + (k - 1) x batch, batch)",
        "units": entries,
    }
    atomic_write_json(path, data)
    return data


def _finite(value: float) -> float | None:
    return float(value) if math.isfinite(value) else None


def _entry(unit: influence.UnitInfo, seen: _Unit, step: float, band: float, resolution: float) -> dict[str, Any]:
    sides = seen.sides or {}
    span = seen.span
    if span > 0:
        estimate = paired_estimate(seen.differences, step, resolution, band=band, span=span)
        slope, low, high = _finite(estimate.slope), estimate.interval[0], estimate.interval[1]
        samples, unseen, cls = estimate.samples, estimate.unseen, estimate.cls
    else:
        slope, low, high, samples, unseen, cls = None, math.inf, math.inf, 0, math.inf, influence.UNKNOWN
    return {
        "index": unit.index, "side": unit.side, "text": unit.text, "step": step,
        "step_up": sides["up"].step if sides else step, "step_down": sides["down"].step if sides else step,
        "failures": [side.failure for side in sides.values() if side.failure is not None],
        "seed_sets": seen.seed_sets, "degenerate": seen.degenerate, "samples": samples,
        "unseen": _finite(unseen),
        "loss_up": float(np.mean(seen.losses_up)) if seen.losses_up else None,
        "loss_down": float(np.mean(seen.losses_down)) if seen.losses_down else None,
        "slope": slope, "interval": [_finite(low), _finite(high)],
        "up": None if slope is None else slope * step, "down": None if slope is None else -slope * step,
        "class": cls, "unmeasured": None,
    }


def _unmeasured(unit: influence.UnitInfo, step: float, why: str) -> dict[str, Any]:
    """A unit the sweep did not measure (why: a key of sweep_stats.UNMEASURED), listed as "cannot tell"."""
    return {
        "index": unit.index, "side": unit.side, "text": unit.text, "step": step, "step_up": None,
        "step_down": None, "failures": [], "seed_sets": 0, "degenerate": 0, "samples": 0, "unseen": None,
        "loss_up": None, "loss_down": None, "slope": None, "interval": [None, None], "up": None, "down": None,
        "class": influence.UNKNOWN, "unmeasured": why,
    }


def sweep_lines(sweep_data: dict[str, Any]) -> list[str]:
    """The CLI's lines for a sweep of influence.json: what it cost, then one line per unit, then one
    line per failure onset the sweep ran into (format 3)."""
    lines = [f"sweep: {sweep_data.get('batches')} batches, step {sweep_data.get('step')}, "
             f"{len(sweep_data.get('seed_sets') or [])} seed set(s); inert within +-{sweep_data.get('band')} "
             f"loss per unit weight; {round(100 * float(sweep_data.get('confidence') or 0))}% intervals"]
    onsets = []
    for unit in sweep_data.get("units") or []:
        low, high = unit.get("interval") or [None, None]
        where = " (negative)" if unit.get("side") == "negative" else ""
        if unit.get("unmeasured"):
            lines.append(f"{repr(unit['text']) + where:26} {unit['class']:12} {unmeasured_note(unit)}")
            continue
        slope = "-" if unit.get("slope") is None else f"{unit['slope']:+.3f}"
        interval = "" if low is None or high is None else f" [{low:+.3f}, {high:+.3f}]"
        lines.append(f"{repr(unit['text']) + where:26} {unit['class']:12} slope {slope}{interval} loss per unit weight, "
                     f"{unit.get('samples', 0)} paired samples, {unit.get('seed_sets', 0)} seed set(s)"
                     + (f", {unit['degenerate']} degenerate" if unit.get("degenerate") else "")
                     + onset.steps_note(unit))
        onsets.extend(f"failure onset: {onset.describe(unit['text'], f, where)}; measured up to "
                      f"{f.get('clear_weight')}" for f in unit.get("failures") or [])
    return lines + onsets

