"""The natural scale of each objective, so that a weighted sum of objectives means something.

Objectives report their value in their own units (FLIP error, negative aesthetic score, negative
cosine similarity). Adding them raw would let whichever has the widest numeric range dominate
whatever the user's weights say. Each objective therefore publishes a `NaturalScale`: the value
of a perfect batch (`best`) and of the worst plausible one (`worst`). `normalise` maps a value
onto "0 at best, 1 at worst", so a weight of 2 on one objective and 1 on another says "twice as
important over their ranges" whatever the units.

The ranges are the *plausible* ranges, not the mathematical ones, where the two differ a lot:
real CLIP image-text cosines stay within about [0, 0.4] (CLIPScore rescales by 2.5 for that
reason) although cosines span [-1, 1]; normalising over [-1, 1] would make a tag objective five
times weaker than its weight suggests.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class NaturalScale:
    """Where an objective's value lies for the best and the worst plausible batch (lower is better)."""

    best: float
    worst: float
    unit: str = ""

    def __post_init__(self) -> None:
        if not self.worst > self.best:
            raise ValueError(f"a natural scale needs worst > best, got best={self.best}, worst={self.worst}")

    @property
    def span(self) -> float:
        return self.worst - self.best

    def normalise(self, value: float) -> float:
        """(value - best) / (worst - best): 0 for the best batch, 1 for the worst plausible one.

        Not clipped: a value outside the plausible range stays visible to the optimiser (clipping
        would flatten the objective exactly where it needs a gradient).
        """
        return (float(value) - self.best) / self.span


FLIP_SCALE = NaturalScale(best=0.0, worst=1.0, unit="FLIP error")
"""FLIP errors lie in [0, 1], and so do the pinning losses built on them: ``nearest_mode`` is a mean
of FLIP values, and the hyperbatch level weighting is rescaled onto [0, 1]
(`pinning.normalised_level_loss`; the original's sum over levels reached 3 for a batch of 8).
A mean + std summary can exceed 1 only for implausible batches (at most (1 + sqrt 2) / 2 = 1.21,
with 85% of the pairs at FLIP's maximum error, i.e. images unlike each other at every pixel)."""

AESTHETIC_SCORE_RANGE = (1.0, 10.0)
"""The LAION aesthetic predictor's rating scale (AVA-style 1..10; SD images mostly score 4.5..7)."""

AESTHETIC_SCALE = NaturalScale(
    best=-AESTHETIC_SCORE_RANGE[1], worst=-AESTHETIC_SCORE_RANGE[0], unit="negative aesthetic score"
)
"""The aesthetic objective's value is the negated mean score (plus a spread penalty), so best = -10."""

CLIP_COSINE_RANGE = (0.0, 0.4)
"""Plausible image-text cosine similarities of real CLIP models (see the module docstring)."""
