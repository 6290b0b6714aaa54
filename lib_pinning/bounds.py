"""The range an optimised emphasis weight may take, and how the search is kept inside it.

A unit's weight is ``fold(base + x)``: the value reflected back into ``[low, high]`` at both ends
(a triangle wave with period ``2 (high - low)``). The unbounded ``|base + x|`` the project used
before is the special case ``low = 0, high = inf``.

Why reflect rather than clip or penalise:

* clipping makes the objective flat wherever ``base + x`` lies outside the range (every such
  sample renders the same prompt), which stalls CMA-ES's step-size and covariance updates and lets
  the mean drift further out unopposed;
* a penalty needs a weight that has to beat the objective's own scale, and the penalised samples
  still cost a batch each while telling the search nothing about the prompt;
* reflection keeps the objective continuous and still changing with ``x`` everywhere, costs
  nothing, and maps every proposed point to an in-range weight, so every batch generated is one
  the user could have asked for. CMA-ES only ever sees ``f(fold(x))``, a deterministic function
  of its own point, so the ``x`` it is told about stays the proposed one; the weights actually
  used are recorded next to it (``weights`` in each individual's record) and the rendered prompt,
  which the repeat cache keys on, already reflects the fold.
"""

from __future__ import annotations

import dataclasses
import math

__all__ = ["DEFAULT_WEIGHT_RANGE", "UNBOUNDED", "WeightRange"]


@dataclasses.dataclass(frozen=True)
class WeightRange:
    """Closed range ``[low, high]`` of optimised emphasis weights (``high`` may be ``inf``)."""

    low: float = 0.0
    high: float = 2.0

    def __post_init__(self) -> None:
        if not (math.isfinite(self.low) and self.low >= 0.0):
            raise ValueError(f"the lowest weight must be finite and >= 0, not {self.low!r}")
        if not self.high > self.low:
            raise ValueError(f"the highest weight ({self.high!r}) must exceed the lowest ({self.low!r})")

    def fold(self, value: float) -> float:
        """``value`` reflected into the range at both ends (identity inside it)."""
        if self.low <= value <= self.high:
            return value
        if math.isinf(self.high):
            # One mirror at `low`; below it the distance is mirrored once more if needed.
            return self.low + abs(value - self.low)
        width = self.high - self.low
        phase = math.fmod(value - self.low, 2.0 * width)
        if phase < 0.0:
            phase += 2.0 * width
        return self.low + (phase if phase <= width else 2.0 * width - phase)

    def clamp(self, value: float) -> float:
        """``value`` limited to the range (for rounding that could step over an end)."""
        return min(max(value, self.low), self.high)

    def to_json(self) -> dict[str, float | None]:
        return {"low": self.low, "high": None if math.isinf(self.high) else self.high}

    @classmethod
    def from_json(cls, data: dict[str, float | None] | None) -> WeightRange:
        """The range recorded with a run; None (runs from before the bound existed) is unbounded."""
        if data is None:
            return UNBOUNDED
        high = data.get("high")
        return cls(float(data.get("low", 0.0) or 0.0), math.inf if high is None else float(high))


#: The options' default: see ``weight_min`` / ``weight_max`` in :mod:`lib_pinning.options`.
DEFAULT_WEIGHT_RANGE = WeightRange(0.0, 2.0)
#: The behaviour before the bound existed: weights ``|base + x|``, no upper limit.
UNBOUNDED = WeightRange(0.0, math.inf)
