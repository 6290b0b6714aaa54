"""Growth plans: which rows are active at each step, the split tree they form, and their cost.

A hyperbatch starts from a single latent (row 0 of the caller's batch), runs some steps, then
duplicates the in-progress rows (1 -> 2 -> 4 ... -> B, the last growth partial when B is not a
power of two) and continues. Early steps are shared, so a batch costs fewer model rows, and the
split tree shows how stable a prompt is at each level.

Row indices are stable: at a split from n to n' rows (n < n' <= 2n) the new rows n..n'-1 are
copies of rows 0..n'-n-1. Row r therefore *is* final image r from the moment it exists, so image
i's ancestor at an earlier size m is found by subtracting (i mod m for powers of two), and the
caller's per-image arguments and noise are always "the first n rows" (see `rows` and `loop`).

A split happens right after the first model evaluation of its step, and the final step (which
adds no noise in the k-diffusion convention, its next sigma being 0) can never be a split step:
copies made there would stay identical. This module is pure arithmetic: no tensors.
"""

from __future__ import annotations

import functools
import json
import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

logger = logging.getLogger(__name__)

SCHEDULES: tuple[str, ...] = ("front", "front-early", "even", "late", "none")
"""Named growth schedules accepted by `plan_growth`."""

DEFAULT_SCHEDULE = "front"
"""The schedule `plan_growth` gives when none is named: splits early, copies refreshed at their
split, the full batch for the last 35% of the steps.

Each sampler has its own default (`sampling.SamplerInfo.default_growth`, its function's `growth`
keyword), chosen by the fidelity measure: pinning compares prompts by their batches' variety, so a
hyperbatch must rank prompts and CMA-ES individuals as a plain batch of the same seeds does
(benchmarks/bench_hyperbatch.py --fidelity, "Fidelity: chosen defaults (toy)" in
docs/benchmarks.md). "front" is the rule's pick for Euler a, DPM++ 2M and DPM++ SDE; for DPM++ 2M
SDE the rule's tie-break prefers the former default, "front-early" with rho = sqrt(1/2) (variety
Spearman 0.693, ranking 0.518, against 0.707 and 0.294 at "front", rho = 1), which is its
default. No schedule reaches the issue's Spearman 0.9 within 0.6 of the rows. "even" (0.425 at B=8, S=20) and "late" (0.269) share more
steps: cheaper, but their copies part after the toy has mostly settled its composition.
"""

LATE_TAIL_FRACTION = 0.5
""""late" puts every split into the last half of the steps (see `plan_growth`)."""

FRONT_LAST_SPLIT = 0.65
""""front" makes its last split at this fraction of the steps and spreads the others evenly before
it (see `plan_growth`): the copies part while the composition is still open, and the full batch
runs the remaining 35% of the steps: 0.494 of a plain batch's rows at B=8, S=20 (0.503 for DPM++
SDE's two evaluations per step). In "Fidelity: chosen defaults (toy)" (docs/benchmarks.md),
with the full split refresh (rho = 1) it has the best variety Spearman at <= 0.6 rows for Euler a
(0.764, ranking 0.433) and, within the rule's tie margin of q = 0.55's 0.711, the best ranking
for DPM++ 2M (0.671, ranking 0.455 against 0.067). It was 0.55 before (0.569 of the rows).
"""

FRONT_EARLY_LAST_SPLIT = 0.55
""""front-early" is "front" with its last split at this fraction of the steps (the default before
0.65): 0.569 of a plain batch's rows at B=8, S=20; DPM++ 2M SDE's default (see `DEFAULT_SCHEDULE`)."""


def growth_levels(batch_size: int) -> tuple[int, ...]:
    """The sizes a hyperbatch of `batch_size` passes through: 1, 2, 4, ..., batch_size."""
    sizes = [1]
    while sizes[-1] < batch_size:
        sizes.append(min(2 * sizes[-1], batch_size))
    return tuple(sizes)


def min_growth_steps(batch_size: int) -> int:
    """The fewest steps a hyperbatch of `batch_size` needs.

    ceil(log2 B) splits, each at its own step; the first step runs at size 1 and the final step
    can not be a split (it adds no noise), so at least ceil(log2 B) + 2 steps, or 1 for B = 1.
    """
    splits = len(growth_levels(batch_size)) - 1
    return splits + 2 if splits else 1


def _positive_int(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}")
    return value


def _evals_per_step(evals_per_step: int | Sequence[int], steps: int) -> tuple[int, ...]:
    if isinstance(evals_per_step, int):
        evals = (evals_per_step,) * steps
    else:
        evals = tuple(int(e) for e in evals_per_step)
    if len(evals) != steps or any(e < 1 for e in evals):
        raise ValueError(
            f"evals_per_step must be a positive int or {steps} positive ints, got {evals_per_step!r}"
        )
    return evals


@dataclass(frozen=True)
class GrowthPlan:
    """How many rows are active during each step of a sampling run.

    batch_size: B, the number of images returned.
    steps: the number of sampler steps (len(sigmas) - 1).
    sizes: the active row count during each step. sizes[0] rows start from the caller's first
        rows; where sizes[i] > sizes[i - 1], step i is a split step: its first model evaluation
        runs on the sizes[i - 1] existing rows, after which rows sizes[i - 1]..sizes[i]-1 are
        made as copies of rows 0..sizes[i]-sizes[i - 1]-1.
    schedule: the name of the schedule that produced the plan ("custom" for a hand-made one).
    refresh: whether every copy gets the partial noise refresh at its split, also in solvers that
        add noise of their own (see `loop.Hyperbatch`); solvers that add none always refresh.
    """

    batch_size: int
    steps: int
    sizes: tuple[int, ...]
    schedule: str = "custom"
    refresh: bool = False

    def __post_init__(self) -> None:
        batch_size = _positive_int("batch_size", self.batch_size)
        steps = _positive_int("steps", self.steps)
        sizes = tuple(_positive_int("sizes[]", s) for s in self.sizes)
        object.__setattr__(self, "sizes", sizes)
        if len(sizes) != steps:
            raise ValueError(f"GrowthPlan needs one size per step: {len(sizes)} sizes, {steps} steps")
        if sizes[-1] != batch_size:
            raise ValueError(f"GrowthPlan must end at the batch size {batch_size}, ends at {sizes[-1]}")
        for step in range(1, steps):
            before, after = sizes[step - 1], sizes[step]
            if after != before and not before < after <= 2 * before:
                raise ValueError(
                    f"step {step}: a split must grow n rows to at most 2n (got {before} -> {after})"
                )
        if steps >= 2 and sizes[-1] != sizes[-2]:
            raise ValueError(
                "the final step can not be a split step: it adds no noise, so its copies would "
                "stay identical to their parents"
            )

    # -- structure --------------------------------------------------------------------------

    @property
    def splits(self) -> tuple[tuple[int, int, int], ...]:
        """(step, rows before, rows after) for every split, in order."""
        return tuple(
            (step, self.sizes[step - 1], self.sizes[step])
            for step in range(1, self.steps)
            if self.sizes[step] != self.sizes[step - 1]
        )

    @property
    def split_steps(self) -> tuple[int, ...]:
        """The steps at which a split happens (after the step's first model evaluation)."""
        return tuple(step for step, _, _ in self.splits)

    @property
    def levels(self) -> tuple[int, ...]:
        """The sizes the batch passes through, root first (e.g. (1, 2, 4, 6) for B=6)."""
        return (self.sizes[0],) + tuple(after for _, _, after in self.splits)

    @property
    def level_start_steps(self) -> tuple[int, ...]:
        """For each level, the step during which it came into being (0 for the root)."""
        return (0,) + self.split_steps

    @property
    def is_plain(self) -> bool:
        """True when every step runs the full batch (no shared steps at all)."""
        return self.sizes[0] == self.batch_size

    def size_at(self, step: int) -> int:
        """Active rows during `step` (after that step's split, if it has one)."""
        if not 0 <= step < self.steps:
            raise IndexError(f"step {step} outside 0..{self.steps - 1}")
        return self.sizes[step]

    def first_eval_rows(self, step: int) -> int:
        """Rows in the first model evaluation of `step`: the rows that existed before its split."""
        size = self.size_at(step)
        return self.sizes[step - 1] if step > 0 else size

    # -- ancestry ---------------------------------------------------------------------------

    def _check_image(self, i: int) -> None:
        if isinstance(i, bool) or not isinstance(i, int) or not 0 <= i < self.batch_size:
            raise IndexError(f"image index {i!r} outside 0..{self.batch_size - 1}")

    def ancestors(self, i: int) -> tuple[int, ...]:
        """Image i's row at every level, root first; the last entry is i itself.

        Going down one level from size n' to n, a row r >= n was copied from row r - n.
        """
        self._check_image(i)
        levels = self.levels
        rows = [i]
        for size in reversed(levels[:-1]):
            row = rows[-1]
            rows.append(row - size if row >= size else row)
        return tuple(reversed(rows))

    def divergence_depth(self, i: int, j: int) -> int:
        """The split, counted from the root (1 = the first split), at which images i and j parted.

        0 only for images that never shared a row, which happens only when the root has more than
        one row (a plain batch).
        """
        if i == j:
            raise ValueError("an image does not diverge from itself")
        for depth, (a, b) in enumerate(zip(self.ancestors(i), self.ancestors(j))):
            if a != b:
                return depth
        raise AssertionError("distinct images must have distinct rows at the last level")

    def parted_at_step(self, i: int, j: int) -> int:
        """The step during which images i and j parted (0 if they never shared a row).

        Both images went through the same trajectory before that step and through the same first
        model evaluation of it.
        """
        return self.level_start_steps[self.divergence_depth(i, j)]

    # -- cost -------------------------------------------------------------------------------

    def model_rows(self, evals_per_step: int | Sequence[int] = 1) -> int:
        """Denoiser rows evaluated in total (an evaluation of n rows counts n).

        evals_per_step: model evaluations in each step, one int for all steps or one per step
        (DPM++ SDE makes 2, except 1 in its final step). A split step's first evaluation runs on
        the rows that existed before the split, the others on the grown batch.
        """
        evals = _evals_per_step(evals_per_step, self.steps)
        return sum(
            self.first_eval_rows(step) + (count - 1) * self.sizes[step]
            for step, count in enumerate(evals)
        )

    def plain_model_rows(self, evals_per_step: int | Sequence[int] = 1) -> int:
        """Rows a plain batch of the same size and sampler evaluates."""
        return self.batch_size * sum(_evals_per_step(evals_per_step, self.steps))

    def cost_ratio(self, evals_per_step: int | Sequence[int] = 1) -> float:
        """model_rows / plain_model_rows: the fraction of a plain batch's cost."""
        return self.model_rows(evals_per_step) / self.plain_model_rows(evals_per_step)

    # -- serialisation ----------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form; `splits` is derived and only there for readers of the file."""
        return {
            "batch_size": self.batch_size,
            "steps": self.steps,
            "schedule": self.schedule,
            "sizes": list(self.sizes),
            "splits": [list(split) for split in self.splits],
            "refresh": self.refresh,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> GrowthPlan:
        """Inverse of `to_dict`; rejects a `splits` entry that disagrees with `sizes`."""
        plan = cls(
            batch_size=data["batch_size"],
            steps=data["steps"],
            sizes=tuple(data["sizes"]),
            schedule=str(data.get("schedule", "custom")),
            refresh=bool(data.get("refresh", False)),
        )
        if "splits" in data and [list(s) for s in data["splits"]] != [list(s) for s in plan.splits]:
            raise ValueError(f"splits {data['splits']!r} disagree with sizes {list(plan.sizes)}")
        return plan

    def to_json(self) -> str:
        return json.dumps(self.to_dict())

    @classmethod
    def from_json(cls, text: str) -> GrowthPlan:
        return cls.from_dict(json.loads(text))


def sizes_from_splits(batch_size: int, steps: int, split_steps: Sequence[int]) -> tuple[int, ...]:
    """Per-step sizes for growth through 1, 2, 4, ..., B with split k at split_steps[k - 1]."""
    levels = growth_levels(batch_size)
    if len(split_steps) != len(levels) - 1:
        raise ValueError(f"a batch of {batch_size} needs {len(levels) - 1} splits, got {list(split_steps)}")
    sizes = []
    level = 0
    for step in range(steps):
        while level < len(split_steps) and step >= split_steps[level]:
            level += 1
        sizes.append(levels[level])
    return tuple(sizes)


def front_split_steps(splits: int, steps: int, last_split: float = FRONT_LAST_SPLIT) -> tuple[int, ...]:
    """Split k of `splits` at round(k * last_split * steps / splits), kept at distinct steps in
    1..steps-2 (the caller guarantees steps >= splits + 2)."""
    chosen: list[int] = []
    for k in range(1, splits + 1):
        step = round(k * last_split * steps / splits)
        low = chosen[-1] + 1 if chosen else 1
        high = steps - 2 - (splits - k)
        chosen.append(min(max(step, low), high))
    return tuple(chosen)


def plan_growth(
    batch_size: int, steps: int, schedule: str = DEFAULT_SCHEDULE, refresh: bool | None = None
) -> GrowthPlan:
    """The growth plan for a batch of `batch_size` images sampled in `steps` steps.

    With L = ceil(log2 B) splits (sizes 1, 2, 4, ..., B):

    - "front": split k at step round(k * FRONT_LAST_SPLIT * steps / L), every copy refreshed at
      its split (`GrowthPlan.refresh`): the splits come while the composition is still open, so
      a batch's images part where a plain batch's do; the full batch runs the last 35% of steps.
    - "front-early": the same with FRONT_EARLY_LAST_SPLIT (0.55): the last 45% on the full batch.
    - "even": the steps are cut into L + 1 nearly equal segments; split k happens at step
      floor(k * steps / (L + 1)).
    - "late": the same cut applied to the last `LATE_TAIL_FRACTION` of the steps (at least
      L + 2 of them); the root runs alone before that, so more steps are shared.
    - "none": a plain batch, every step on all B rows (exactly the plain sampler).

    refresh: override the schedule's own `GrowthPlan.refresh` (True only for the two fronts): e.g.
    `plan_growth(8, 20, "even", refresh=True)`, Euler a's documented cheaper setting.

    Too few steps (fewer than `min_growth_steps(B)`) fall back to "none" with a logged warning
    rather than raising: the WebUI calls the same sampler for short runs it chooses itself
    (img2img with a low denoising strength, a hires pass with few steps), where aborting the
    user's generation would be worse than a plain batch, which is always a valid result.
    """
    batch_size = _positive_int("batch_size", batch_size)
    steps = _positive_int("steps", steps)
    if schedule not in SCHEDULES:
        raise ValueError(f"unknown growth schedule {schedule!r}; choose one of {SCHEDULES}")
    splits = len(growth_levels(batch_size)) - 1
    if schedule == "none" or splits == 0:
        return GrowthPlan(batch_size, steps, (batch_size,) * steps, "none")
    if steps < min_growth_steps(batch_size):
        logger.warning(
            "hyperbatch: %d steps are too few to grow a batch of %d (needs at least %d); "
            "sampling a plain batch instead",
            steps,
            batch_size,
            min_growth_steps(batch_size),
        )
        return GrowthPlan(batch_size, steps, (batch_size,) * steps, "none")
    return _planned(batch_size, steps, schedule, refresh, splits)


@functools.lru_cache(maxsize=256)
def _planned(batch_size: int, steps: int, schedule: str, refresh: bool | None, splits: int) -> GrowthPlan:
    """`plan_growth`'s plan of a growing batch, kept per arguments: plans are frozen, and building
    and validating one (~0.1 ms) is paid by every batch otherwise."""
    if schedule in ("front", "front-early"):
        last_split = FRONT_LAST_SPLIT if schedule == "front" else FRONT_EARLY_LAST_SPLIT
        split_steps = front_split_steps(splits, steps, last_split)
        sizes = sizes_from_splits(batch_size, steps, split_steps)
        return GrowthPlan(batch_size, steps, sizes, schedule, refresh=True if refresh is None else refresh)
    if schedule == "even":
        span = steps
    else:
        span = max(splits + 2, math.ceil(steps * LATE_TAIL_FRACTION))
    start = steps - span
    # span >= splits + 2 keeps the splits at distinct steps in 1..steps-2.
    split_steps = tuple(start + (k * span) // (splits + 1) for k in range(1, splits + 1))
    return GrowthPlan(batch_size, steps, sizes_from_splits(batch_size, steps, split_steps), schedule, bool(refresh))


def resolve_plan(growth: GrowthPlan | str, batch_size: int, steps: int) -> GrowthPlan:
    """A sampler's `growth` argument (a plan or a schedule name) as a plan for this run."""
    if isinstance(growth, GrowthPlan):
        if (growth.batch_size, growth.steps) != (batch_size, steps):
            raise ValueError(
                f"growth plan is for B={growth.batch_size}, {growth.steps} steps; "
                f"this run has B={batch_size}, {steps} steps"
            )
        return growth
    if isinstance(growth, str):
        return plan_growth(batch_size, steps, growth)
    raise TypeError(f"growth must be a GrowthPlan or a schedule name, got {type(growth).__name__}")
