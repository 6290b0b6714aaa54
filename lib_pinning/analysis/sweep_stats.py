"""The sweep's statistics: per-image terms of the run's objective, paired differences, intervals, classes.

A sweep (lib_pinning.analysis.sweep) generates the best point with one unit's weight moved up and
down by a step, at the same seeds (common random numbers). Image i of the "up" batch and image i
of the "down" batch share their seed, so their difference is the step's effect on that image
alone, without the seed's noise. Each image's *term* is its share of the run's own objective,
terms whose mean is the batch's loss (`per_image_terms`); the slope estimate is the mean paired
difference over every image of every seed set, divided by twice the step, with a Student-t
interval over those images.

At fixed seeds an image changes its picture only when its seed lands on another one, so the
differences are many small ones and a few jumps. A t-interval over differences where no image
jumped can be narrow around 0 and would call a unit inert on no evidence. "Inert" therefore also
needs the jumps the images seen cannot exclude to be small: with n images, up to a share
1 - (alpha / 2)^(1/n) of images could jump unseen (the exact binomial bound, "rule of three"),
each by the largest jump this sweep saw (`resolution`); that bound must lie inside the band too.
Tightening and loosening rest on the t-interval alone (a sign the images show).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from statistics import NormalDist
from typing import TYPE_CHECKING, Any

import numpy as np

from lib_pinning.analysis.influence import INERT, LOOSENING, TIGHTENING, UNKNOWN
from lib_pinning.objectives.pinning import nearest_mode_loss

if TYPE_CHECKING:
    from lib_pinning.objectives.base import Evaluation
    from lib_pinning.objectives.compose import CompositeObjective, Scored

CONFIDENCE = 0.95
# The dead band of the sweep's classes, in loss per unit of weight: a unit whose slope is known to
# lie within +-BAND is inert, and a claimed tightening or loosening has an estimate beyond it. On
# the toy the sweep's slope of the nearest-mode loss came out at 0.19-0.27 x the closed-form slope
# of the share of images off the pinned picture (least squares over 25 units of 4 prompts, in an
# exploration made while choosing the step, not a committed benchmark), so 0.01 is about
# benchmarks/bench_influence.py's truth band of 0.05 in loss units.
BAND = 0.01
# Why a unit of the prompt has no measurement (influence.json's sweep unit "unmeasured"), and what
# the CLI and the report say of it. "budget": the sweep's batches ran out before the unit's first
# pair (a budget below 2 batches per unit, or the centre's batch took one).
UNMEASURED_BUDGET = "budget"
UNMEASURED = {UNMEASURED_BUDGET: "not measured: the sweep's budget ran out before this unit"}
# The objectives whose terms are read from the pair values (the FLIP image losses): the mode the
# objective's name ends with says how (`_flip_terms`).
_FLIP_PREFIX = "flip_"


def _pair_matrix(evaluation: Evaluation, n_images: int) -> tuple[int, np.ndarray, np.ndarray]:
    pairs = np.asarray(evaluation.pairs, dtype=int).reshape(-1, 2)
    values = np.asarray(evaluation.pair_values, dtype=float)
    if len(pairs) != len(values) or len(pairs) == 0:
        raise ValueError("the evaluation has no pair values to split per image")
    n_targets = int(pairs.max()) + 1 - n_images
    return n_targets, pairs, values


def _nearest_mode_distances(evaluation: Evaluation, n_images: int) -> np.ndarray | None:
    """The [targets, images] FLIP distances of a nearest_mode evaluation, None for another loss."""
    if evaluation.components.get("mode") is None or "fidelity" not in evaluation.components:
        return None
    n_targets, pairs, values = _pair_matrix(evaluation, n_images)
    cross = (pairs[:, 0] < n_targets) & (pairs[:, 1] >= n_targets)
    d = np.zeros((n_targets, n_images))
    d[pairs[cross, 0], pairs[cross, 1] - n_targets] = values[cross]
    return d


def pinned_target_weights(objective: CompositeObjective, scored: Scored, n_images: int) -> dict[str, np.ndarray]:
    """The target weights w of every nearest_mode part in a batch's evaluation (the best batch's:
    the picture the run is pinned to), for `per_image_terms`."""
    weights = {}
    for part in objective.parts:
        name = part.objective.name
        if name.startswith(_FLIP_PREFIX):
            d = _nearest_mode_distances(scored.evaluations[name], n_images)
            if d is not None:
                weights[name] = nearest_mode_loss(d).target_weights
    return weights


def _flip_terms(evaluation: Evaluation, n_images: int, target_weights: np.ndarray | None) -> np.ndarray:
    """Per-image terms of a FLIP loss whose mean is `evaluation.value`.

    nearest_mode: loss = (A + F) / 2 with A = sum_j w_j mean_i D[j, i] and F = mean_i min_j D[j, i],
    so image i's term is 0.5 (sum_j w_j D[j, i] + min_j D[j, i]). With `target_weights` (the best
    batch's w) the terms hold the run's pinned picture fixed: a batch at other seeds is then scored
    against the picture the run is pinned to, not against whichever target its own images happen to
    be nearest (at other seeds that can be another of the prompt's pictures, and the question
    "which words hold this picture" would become "which words hold any picture"). Without them the
    batch's own w is used, and the terms average exactly to the loss. The other modes summarise
    pairs as mean + std (or level-weighted): image i's term is its mean over the pairs it is in, and
    what the summary adds beyond the pairs' mean (the std, the level weighting: statistics of the
    batch that no image owns) is shared equally, so the terms still average to the loss.
    """
    d = _nearest_mode_distances(evaluation, n_images)
    if d is not None:
        w = nearest_mode_loss(d).target_weights if target_weights is None else target_weights
        return 0.5 * (w @ d + d.min(axis=0))
    n_targets, pairs, values = _pair_matrix(evaluation, n_images)
    sums, counts = np.zeros(n_images), np.zeros(n_images)
    for (a, b), v in zip(pairs, values):
        for k in (a, b):
            if k >= n_targets:
                sums[k - n_targets] += v
                counts[k - n_targets] += 1
    if not counts.all():
        raise ValueError("an image of the batch is in no compared pair")
    own = sums / counts
    return own + (evaluation.value - own.mean())


def per_image_terms(
    objective: CompositeObjective,
    scored: Scored,
    x: Sequence[float],
    n_images: int,
    target_weights: dict[str, np.ndarray] | None = None,
) -> np.ndarray | None:
    """Each image's term of the composite loss (their mean is `scored.loss`; with `target_weights`,
    `pinned_target_weights` of the best batch, the loss of staying pinned to its picture), or None
    when a part of the objective has no per-image form (the aesthetic score, the tags: their batch
    values are not means of image values); the sweep then compares whole batches, one value per
    seed set."""
    terms = np.zeros(n_images)
    for part in objective.parts:
        name = part.objective.name
        if not name.startswith(_FLIP_PREFIX):
            return None
        raw = _flip_terms(scored.evaluations[name], n_images, (target_weights or {}).get(name))
        terms += part.weight * (raw - part.scale.best) / part.scale.span
    if objective.distance_weight > 0:
        # The distance penalty depends on the weights alone: the same share for every image.
        terms += objective.distance_weight * float(np.mean(np.square(np.asarray(x, dtype=float)))) if len(x) else 0.0
    return terms


def unmeasured_note(unit: dict[str, Any]) -> str:
    """What a sweep unit without a measurement says instead of its slope ("" for a measured unit)."""
    why = unit.get("unmeasured")
    return UNMEASURED.get(why, f"not measured ({why})") if why else ""


def t_quantile(p: float, df: int) -> float:
    """Student-t quantile: exact for 1 and 2 degrees of freedom, else the Cornish-Fisher expansion
    (Abramowitz and Stegun 26.7.5), within 0.004 of the exact value at 3 and 1e-3 from 4 on (no
    scipy: not a dependency here)."""
    if df < 1:
        raise ValueError(f"degrees of freedom must be >= 1, got {df}")
    if df == 1:
        return math.tan(math.pi * (p - 0.5))
    if df == 2:
        return (2 * p - 1) / math.sqrt(2 * p * (1 - p))
    z = NormalDist().inv_cdf(p)
    g1 = (z**3 + z) / 4
    g2 = (5 * z**5 + 16 * z**3 + 3 * z) / 96
    g3 = (3 * z**7 + 19 * z**5 + 17 * z**3 - 15 * z) / 384
    g4 = (79 * z**9 + 776 * z**7 + 1482 * z**5 - 1920 * z**3 - 945 * z) / 92160
    return z + g1 / df + g2 / df**2 + g3 / df**3 + g4 / df**4


def unseen_share(n: int, confidence: float = CONFIDENCE) -> float:
    """The largest share of images that could move although none of n did (exact binomial bound at
    the two-sided confidence level's tail)."""
    return 1.0 - ((1.0 - confidence) / 2) ** (1.0 / n)


@dataclass(frozen=True)
class PairedEstimate:
    """A unit's slope from paired differences: estimate, interval, and what it rests on."""

    slope: float
    interval: tuple[float, float]  # Student-t, loss per unit weight
    unseen: float  # the largest |slope| that jumps of images not seen could add (module docstring)
    samples: int  # paired differences (images, or seed sets when the loss has no per-image terms)
    cls: str


def classify(slope: float, low: float, high: float, unseen: float, band: float = BAND) -> str:
    """tightening / loosening when the interval excludes 0 and the estimate lies beyond the band
    (a sign the data show, of a size the band calls an effect); inert when the interval, widened by
    the unseen jumps, lies inside the band; cannot tell otherwise."""
    if not all(math.isfinite(v) for v in (slope, low, high)):
        return UNKNOWN
    if high < 0 and slope < -band:
        return TIGHTENING
    if low > 0 and slope > band:
        return LOOSENING
    if math.isfinite(unseen) and -band <= low - unseen and high + unseen <= band:
        return INERT
    return UNKNOWN


def paired_estimate(
    differences: Sequence[float],
    step: float,
    resolution: float,
    *,
    band: float = BAND,
    confidence: float = CONFIDENCE,
    span: float | None = None,
) -> PairedEstimate:
    """The slope (loss per unit weight) from paired up - down differences at a step of `step`.

    resolution: the largest change of one difference this sweep can show (the largest jump seen
    anywhere in it, or the loss's whole scale when nothing moved), for the unseen jumps.
    span: the weight distance between the two sides when it is not 2 x step (a side measured at a
    smaller step, or one-sided from the best point: lib_pinning.analysis.sweep_onset).
    """
    d = np.asarray(differences, dtype=float)
    n = len(d)
    width = 2 * step if span is None else span
    if not width > 0:
        raise ValueError(f"the two sides must be apart, got a span of {width}")
    if n < 2:
        slope = float(d.mean()) / width if n else math.nan
        return PairedEstimate(slope, (-math.inf, math.inf), math.inf, n, UNKNOWN)
    mean = float(d.mean())
    half = t_quantile(1 - (1 - confidence) / 2, n - 1) * float(d.std(ddof=1)) / math.sqrt(n)
    slope, low, high = mean / width, (mean - half) / width, (mean + half) / width
    unseen = unseen_share(n, confidence) * resolution / width
    return PairedEstimate(slope, (low, high), unseen, n, classify(slope, low, high, unseen, band))
