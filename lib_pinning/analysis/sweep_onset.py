"""Keeping the sweep's steps clear of the failure modes: which step batches are failures, not measurements.

The product never presents a failed image as a result, so a sweep step whose batch lands in a
failure mode (fried, black, flat or non-finite images) says nothing about the word's influence on
the picture: it measures the failure. Raising a word past about 1.5 fries SD 1.5 images (the toy
model fries from an effective weight of 1.5, lib_pinning.toy_failures), and the sweep's step of
0.2 from a best weight of 1.3-1.5 crosses that onset.

Where the frying shows up (measured on the toy, docs/benchmarks.md "Sensitivity sweep"): it sets
in gradually. From 1.5 the toy blurs the images and draws them toward a colour field by a
smoothstep amount, and the guard (lib_pinning.guard) flags them only near 2.0, where the images
are saturated, clipped and without detail. Between the two the objective already sees the ramp:
from a best weight of 1.49 a step to 1.69 moves every image (mean pixel change 0.075 of the range)
while the guard flags none. The guard's verdict alone would let those steps through. So a step is
judged by two signals of the guard:

* hard: the guard flags an image of the step batch (`guard.inspect`, the run's own thresholds);
* soft: the batch *drifts*: the guard's statistics of the images (saturation, clipped share,
  detail: the ones its fried verdict reads, `guard.ImageStats`) move, image by image at the same
  seed, against the best batch's. A weight step that leaves the failure modes alone moves only the
  images whose seed lands on another picture; a failure mode moves every image. The drift is the
  lower quartile over the images of the largest change of the three statistics, each over its own
  threshold (the scale the guard judges it on): the image a quarter of the way up from the one
  that moved least, so up to three quarters of the batch may take another picture (a strong word
  lowered by 0.2 on the toy moved half of its batch: the median flagged it) without a drift. It
  must exceed DRIFT_LIMIT and DRIFT_RATIO times the drift of the step on the other side: a
  failure mode sets in on one side of the best, a model on which every image moves a little with
  any weight change (a real checkpoint) moves both sides alike.

On the toy, from a best weight of 1.49 (benchmarks/bench_sweep_onset.py: two seed sets of 8,
images quantised as saved), the drift is 0.007 at 1.52-1.55, 0.016 at 1.58, 0.025 at 1.6,
0.04 at 1.63, 0.15-0.17 at 1.65 and 0.9 at 1.69, while the guard flags nothing below 2.0 (8/8
from 2.0); a step that stays below 1.5 drifts by exactly 0 (an image that keeps its picture keeps
its pixels, one that takes another picture is a minority).

A side that is not clear records its failure onset (the weight, the failure's kind: the guard's
reasons, or "drift" when it flagged nothing yet) and is measured again with half the step, at the
same seeds, at most HALVINGS times; the first clear step is that side's step for every seed set.
A side with no clear step is left out: the unit is measured one-sided, from the best point to the
other side's step (the centre's terms at each seed set). A unit with neither side clear has no
estimate ("cannot tell"), its onsets recorded.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from lib_pinning import guard

# The share of images below the drift's image (module docstring: why not the median).
DRIFT_QUANTILE = 0.25
# The soft signal's limit: the quartile image's largest statistic change, over its threshold. A step
# that stays clear of the toy's frying moves the quartile image by exactly 0 at the toy's 20 steps
# (up to 0.004 at 6 steps, where images that keep their picture still move a little); the ramp's
# first hundredths past the onset (1.52-1.55) move it by 0.007 (module docstring), so the limit
# sits between. On a model where every image moves with any weight change, DRIFT_RATIO decides.
DRIFT_LIMIT = 0.005
# The drift must exceed this multiple of the other side's (module docstring).
DRIFT_RATIO = 2.0
# Halvings of the step on a side that is not clear (0.2 -> 0.1 -> 0.05), each one batch.
HALVINGS = 2
DRIFT = "drift"
RULE = (f"a step is a failure when the guard flags an image, or when the batch drifts: the lower-quartile image's "
        f"largest change of the guard's saturation, clipped share and detail (over their thresholds) against the "
        f"best batch's image at the same seed is above {DRIFT_LIMIT:g} and {DRIFT_RATIO:g} x the other side's; "
        f"such a side is retried at half the step (at most {HALVINGS} times), else measured one-sided from the best")


def _scales(thresholds: guard.GuardThresholds) -> tuple[float, float, float]:
    """The scale of each statistic the drift reads: the threshold the guard's fried verdict puts on it."""
    return (thresholds.fried_saturation or 1.0, guard.FRIED_CLIPPED_SHARE, thresholds.fried_detail or 1.0)


def drift(stats: Sequence[guard.ImageStats], centre: Sequence[guard.ImageStats],
          thresholds: guard.GuardThresholds) -> float:
    """How far a step batch's images moved toward (or away from) the guard's fried statistics against
    the centre batch's images at the same seeds: the lower quartile of the images' largest relative change."""
    if len(stats) != len(centre) or not stats:
        raise ValueError(f"{len(stats)} step images against {len(centre)} centre images")
    sat, clip, detail = _scales(thresholds)
    moved = [max(abs(s.saturation - c.saturation) / sat, abs(s.clipped - c.clipped) / clip,
                 abs(s.detail - c.detail) / detail) for s, c in zip(stats, centre)]
    return float(np.quantile(moved, DRIFT_QUANTILE))


@dataclass(frozen=True)
class StepCheck:
    """What the guard says of one step batch against the centre batch."""

    flagged: int  # images the guard flags
    images: int
    reasons: dict[str, int]  # images per guard reason
    drift: float  # `drift` against the centre (nan when the centre's statistics are unknown)

    def clear(self, other_drift: float) -> bool:
        """Whether the step measures the word rather than a failure (module docstring)."""
        if self.flagged:
            return False
        if not np.isfinite(self.drift):
            return True
        limit = max(DRIFT_LIMIT, DRIFT_RATIO * other_drift) if np.isfinite(other_drift) else DRIFT_LIMIT
        return self.drift <= limit

    @property
    def kind(self) -> str:
        """The failure's kind: the guard's most frequent reason, or "drift" when it flagged nothing."""
        if not self.reasons:
            return DRIFT
        return max(self.reasons, key=lambda r: (self.reasons[r], -guard.REASONS.index(r)))


def check(verdict: guard.GuardVerdict, centre: Sequence[guard.ImageStats] | None,
          thresholds: guard.GuardThresholds) -> StepCheck:
    """The guard's hard and soft signals on a step batch (`verdict`: guard.inspect of it)."""
    moved = drift(verdict.stats, centre, thresholds) if centre is not None else float("nan")
    return StepCheck(verdict.count, len(verdict.reasons), verdict.reason_counts(), moved)


def failure_entry(direction: str, weight: float, step: float, seen: StepCheck) -> dict[str, Any]:
    """influence.json's record of a failure onset the sweep ran into."""
    return {
        "direction": direction, "weight": round(float(weight), 3), "step": step, "kind": seen.kind,
        "flagged": seen.flagged, "images": seen.images,
        "drift": round(seen.drift, 4) if np.isfinite(seen.drift) else None,
    }


def describe(text: str, failure: dict[str, Any], where: str = "") -> str:
    """E.g. "raising 'quietly' to 1.69 drifts the images toward a failure (the guard flags 0/8)";
    where: said after the unit, e.g. " (negative)"."""
    verb = "raising" if failure.get("direction") == "up" else "lowering"
    kind = failure.get("kind")
    flagged = f"{failure.get('flagged', 0)}/{failure.get('images', '?')}"
    what = (f"drifts the images toward a failure (the guard flags {flagged})" if kind == DRIFT
            else f"makes {flagged} images {kind}")
    return f"{verb} {text!r}{where} to {failure.get('weight')} {what}"


def steps_note(unit: dict[str, Any]) -> str:
    """", measured at +0.05 / -0.2" when a side's step was not the sweep's (format 3), else ""."""
    step = unit.get("step")
    up, down = unit.get("step_up", step), unit.get("step_down", step)
    if up == step and down == step or up is None or down is None:
        return ""
    return f", measured at +{up:g} / -{down:g}" + (" (one-sided)" if 0 in (up, down) else "")
