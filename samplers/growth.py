"""The one growth mechanism every hyperbatch sampler uses.

A hyperbatch starts from a single latent (row 0 of the caller's batch), runs some steps, then
duplicates the in-progress rows (1 -> 2 -> 4 ... -> B, the last growth partial when B is not a
power of two) and continues. Early steps are shared, so a batch costs fewer model rows, and the
split tree shows how stable a prompt is at each level.

Row indices are stable: at a split from n to n' rows (n < n' <= 2n) the new rows n..n'-1 are
copies of rows 0..n'-n-1. Row r therefore *is* final image r from the moment it exists, which is
what makes three things simple:

- resizing the caller's per-image arguments (cond, uncond, image_cond, ...) is always "take the
  first n rows" of the full-size entries, even when every image has its own prompt;
- noise: the active row r always takes row r of a full B-row draw, i.e. noise derived from image
  r's own seed, so the batch is a pure function of the seeds;
- ancestry: image i's ancestor at an earlier size m is found by subtracting (i mod m for powers of
  two).

A split happens right after the first model evaluation of its step. At that moment the copies
are still exact duplicates of their parents, so their denoised value is the parent's and the
model is evaluated only on the n distinct rows; the copies part from their parents through the
noise the step adds (or, for a solver that adds none, through a partial noise refresh, see
`Hyperbatch`). Consequently the final step, which adds no noise in the k-diffusion convention
(its next sigma is 0), can never be a split step: copies made there would stay identical.

`Hyperbatch` is the shared loop: it evaluates the model, grows the solver's state (the latents
and any history such as DPM++ 2M's previous denoised) and the per-image arguments, reports
progress and serves per-row noise. Solver bodies contain no growth code.
"""

from __future__ import annotations

import copy
import json
import logging
import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from tqdm.auto import trange

logger = logging.getLogger(__name__)

SCHEDULES: tuple[str, ...] = ("even", "late", "none")
"""Named growth schedules accepted by `plan_growth`."""

DEFAULT_SCHEDULE = "even"
"""The default schedule: splits evenly spread over the steps.

Among the named schedules it gives the copies the most steps to diverge after each split while
still costing well under half a plain batch at the usual sizes (0.425 of the model rows at B=8,
S=20; 0.341 at B=16); it is also close to the original tool's spacing (whose first segment
was one step shorter), so traces stay comparable.
"late" is cheaper (0.269 at B=8, S=20) but its copies share most of the trajectory and differ
mostly in detail, which understates how much a prompt's images vary.
"""

LATE_TAIL_FRACTION = 0.5
""""late" puts every split into the last half of the steps (see `plan_growth`)."""

NoiseSampler = Callable[[Any, Any], torch.Tensor]
"""(sigma, sigma_next) -> noise with one row per image of the full batch."""


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
    """

    batch_size: int
    steps: int
    sizes: tuple[int, ...]
    schedule: str = "custom"

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
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> GrowthPlan:
        """Inverse of `to_dict`; rejects a `splits` entry that disagrees with `sizes`."""
        plan = cls(
            batch_size=data["batch_size"],
            steps=data["steps"],
            sizes=tuple(data["sizes"]),
            schedule=str(data.get("schedule", "custom")),
        )
        if "splits" in data and [list(s) for s in data["splits"]] != [list(s) for s in plan.splits]:
            raise ValueError(f"splits {data['splits']!r} disagree with sizes {list(plan.sizes)}")
        return plan

    def to_json(self) -> str:
        return json.dumps(self.to_dict())

    @classmethod
    def from_json(cls, text: str) -> GrowthPlan:
        return cls.from_dict(json.loads(text))


def plan_growth(batch_size: int, steps: int, schedule: str = DEFAULT_SCHEDULE) -> GrowthPlan:
    """The growth plan for a batch of `batch_size` images sampled in `steps` steps.

    With L = ceil(log2 B) splits (sizes 1, 2, 4, ..., B):

    - "even": the steps are cut into L + 1 nearly equal segments; split k happens at step
      floor(k * steps / (L + 1)).
    - "late": the same cut applied to the last `LATE_TAIL_FRACTION` of the steps (at least
      L + 2 of them); the root runs alone before that, so more steps are shared.
    - "none": a plain batch, every step on all B rows (exactly the plain sampler).

    Too few steps (fewer than `min_growth_steps(B)`) fall back to "none" with a logged warning
    rather than raising: the WebUI calls the same sampler for short runs it chooses itself
    (img2img with a low denoising strength, a hires pass with few steps), where aborting the
    user's generation would be worse than a plain batch, which is always a valid result.
    """
    batch_size = _positive_int("batch_size", batch_size)
    steps = _positive_int("steps", steps)
    if schedule not in SCHEDULES:
        raise ValueError(f"unknown growth schedule {schedule!r}; choose one of {SCHEDULES}")
    levels = growth_levels(batch_size)
    splits = len(levels) - 1
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
    if schedule == "even":
        span = steps
    else:
        span = max(splits + 2, math.ceil(steps * LATE_TAIL_FRACTION))
    start = steps - span
    # span >= splits + 2 keeps the splits at distinct steps in 1..steps-2.
    split_steps = [start + (k * span) // (splits + 1) for k in range(1, splits + 1)]
    sizes = []
    level = 0
    for step in range(steps):
        while level < splits and step >= split_steps[level]:
            level += 1
        sizes.append(levels[level])
    return GrowthPlan(batch_size, steps, tuple(sizes), schedule)


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


# -- per-image arguments ------------------------------------------------------------------------


def take_rows(value: Any, batch_size: int, rows: int) -> Any:
    """`value` cut to its first `rows` rows if it is batch-sized, else `value` unchanged.

    Batch-sized means, duck-typed so no WebUI import is needed:
    - a tensor whose first dimension is `batch_size`;
    - a MulticondLearnedConditioning-like object: `.shape == (batch_size,)` and a `.batch`
      list; the result is a shallow copy of the same type with shape (rows,) and batch[:rows];
    - a list (or plain tuple) of length `batch_size`, e.g. the WebUI's uncond (one list of
      ScheduledPromptConditioning per image);
    - a dict: resized entry by entry (SDXL-style {"crossattn": ..., "vector": ...}).
    Everything else (scalars, None, tensors of another length) is returned as is. The caller's
    objects are never mutated. With rows == batch_size the value itself is returned.
    """
    if rows == batch_size:
        return value
    if isinstance(value, torch.Tensor):
        return value[:rows] if value.ndim >= 1 and value.shape[0] == batch_size else value
    if isinstance(value, dict):
        resized = copy.copy(value)
        for key, entry in value.items():
            resized[key] = take_rows(entry, batch_size, rows)
        return resized
    batch = getattr(value, "batch", None)
    shape = getattr(value, "shape", None)
    if isinstance(batch, list) and shape is not None and tuple(shape) == (batch_size,):
        if len(batch) != batch_size:
            raise ValueError(f"conditioning has shape ({batch_size},) but {len(batch)} batch rows")
        resized = copy.copy(value)
        resized.shape = (rows,)
        resized.batch = batch[:rows]
        return resized
    if isinstance(value, list) and len(value) == batch_size:
        resized = copy.copy(value)
        del resized[rows:]
        return resized
    if type(value) is tuple and len(value) == batch_size:
        return value[:rows]
    return value


def resize_extra_args(extra_args: Mapping[str, Any], batch_size: int, rows: int) -> dict[str, Any]:
    """The sampler's extra_args with every batch-sized entry cut to the first `rows` rows.

    Because rows are stable, the active rows are always images 0..rows-1, so this is correct
    even when every image has its own prompt, seed or image conditioning.
    """
    return {key: take_rows(value, batch_size, rows) for key, value in extra_args.items()}


# -- solver state -------------------------------------------------------------------------------


def grow_rows(tensor: torch.Tensor, rows: int) -> torch.Tensor:
    """`tensor` (n rows) grown to `rows` rows: row r >= n is a copy of row r - n."""
    n = tensor.shape[0]
    if not n < rows <= 2 * n:
        raise ValueError(f"can only grow {n} rows to n+1..{2 * n}, not {rows}")
    return torch.cat([tensor, tensor[: rows - n]])


class SolverState:
    """The per-row state a solver carries between steps: `x` plus whatever history it keeps.

    Solvers assign attributes freely (state.old_denoised = denoised, state.h_last = h). At a
    split, every tensor attribute whose first dimension is the active row count is grown the same
    way as x; everything else (None, 0-d tensors such as a step size, floats) is shared.
    """

    def __init__(self, x: torch.Tensor) -> None:
        self.x = x

    @property
    def rows(self) -> int:
        return self.x.shape[0]

    def grow(self, rows: int) -> None:
        """Duplicate every per-row field from the current row count to `rows` rows."""
        n = self.rows
        for name, value in list(vars(self).items()):
            if isinstance(value, torch.Tensor) and value.ndim >= 1 and value.shape[0] == n:
                setattr(self, name, grow_rows(value, rows))


# -- the shared loop ----------------------------------------------------------------------------


class Hyperbatch:
    """The loop every hyperbatch solver runs: model calls, growth, progress and per-row noise.

    Iterating yields (i, denoised) for every step i, where denoised is the model's output for the
    step's first evaluation at sigmas[i] on the active rows of `state.x`. On a split step the
    evaluation runs on the existing rows only; then the state and denoised are grown (copies
    inherit their parents' values, which is exact since they are still duplicates), and, when
    `split_refresh` is set, the copies' noise is partially refreshed (below). The k-diffusion
    callback is then called with the active rows, as k-diffusion calls it.

    split_refresh (rho in (0, 1]): for a solver that adds no noise of its own (DPM++ 2M, or a
    stochastic solver run with eta = 0 or s_noise = 0), copies would stay identical forever. Each
    copy r instead gets a variance-preserving refresh of its noise component at the current
    sigma, using the exact denoised value D of the split step's evaluation:

        x_r' = D + sqrt(1 - rho^2) (x - D) + rho * sigma * eps_r,

    eps_r being row r of a B-row noise draw, i.e. from image r's own seed. If x - D is noise of
    level sigma, so is x_r': the copy stays on the schedule. This is the update an ancestral
    sampler applies at every step (Euler a re-noises a fraction sigma_up^2 / sigma_next^2 of the
    noise variance); here it is applied once, to the copies, at their split. Parents are not
    refreshed, so image 0 is exactly the plain sampler's image for the first row.

    noise_sampler: (sigma, sigma_next) -> B rows; `noise` serves row r of each draw to active
    row r, and every draw is made for all B images (as the WebUI's generators expect), so an
    image's noise does not depend on how many rows happen to be active.
    """

    def __init__(
        self,
        model: Callable[..., torch.Tensor],
        x: torch.Tensor,
        sigmas: torch.Tensor,
        extra_args: Mapping[str, Any] | None,
        callback: Callable[[dict[str, Any]], Any] | None,
        disable: bool | None,
        growth: GrowthPlan | str,
        noise_sampler: NoiseSampler | None = None,
        split_refresh: float | None = None,
    ) -> None:
        if split_refresh is not None and not 0.0 < split_refresh <= 1.0:
            raise ValueError(f"split_rho must be in (0, 1], got {split_refresh!r}")
        self.batch_size = x.shape[0]
        self.sigmas = sigmas
        self.steps = len(sigmas) - 1
        self.plan = resolve_plan(growth, self.batch_size, self.steps) if self.steps > 0 else None
        self._model = model
        self._full_args = dict(extra_args or {})
        self._args: dict[str, Any] = {}
        self._args_rows = -1
        self._callback = callback
        self._disable = disable
        self._noise_sampler = noise_sampler
        self._split_refresh = split_refresh
        start = self.plan.sizes[0] if self.plan is not None else self.batch_size
        self.state = SolverState(x if start == self.batch_size else x[:start])
        if self.plan is not None and not self.plan.is_plain:
            logger.debug("hyperbatch plan: %s", self.plan.to_json())

    @property
    def rows(self) -> int:
        """Active rows now."""
        return self.state.rows

    def _extra_args(self, rows: int) -> dict[str, Any]:
        if rows != self._args_rows:
            self._args = resize_extra_args(self._full_args, self.batch_size, rows)
            self._args_rows = rows
        return self._args

    def model(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        """The denoiser on `x` (any leading row count 1..B) at noise level `sigma`."""
        rows = x.shape[0]
        return self._model(x, sigma * x.new_ones([rows]), **self._extra_args(rows))

    def _draw(self, sigma: torch.Tensor, sigma_next: torch.Tensor, start: int, stop: int) -> torch.Tensor:
        """Rows start..stop-1 of the noise draw at (sigma, sigma_next).

        A noise sampler whose rows are independent pure functions of their own seed (it offers
        `draw_rows`, e.g. SeededBrownianNoise) is asked for those rows only: the values are the
        same, and a per-seed Brownian tree query costs more than a toy model call. Any other
        sampler (the WebUI's sequential generators) is drawn for all B images and sliced.
        """
        if self._noise_sampler is None:
            raise RuntimeError("this sampler was set up without a noise sampler")
        draw_rows = getattr(self._noise_sampler, "draw_rows", None)
        if draw_rows is not None:
            return draw_rows(sigma, sigma_next, start, stop)
        noise = self._noise_sampler(sigma, sigma_next)
        if noise.shape[0] != self.batch_size:
            raise ValueError(
                f"noise_sampler returned {noise.shape[0]} rows; a hyperbatch noise sampler must "
                f"return one row per image ({self.batch_size})"
            )
        return noise[start:stop]

    def noise(self, sigma: torch.Tensor, sigma_next: torch.Tensor) -> torch.Tensor:
        """Noise for the active rows: row r of a full B-row draw, from image r's seed."""
        return self._draw(sigma, sigma_next, 0, self.rows)

    def __iter__(self) -> Iterator[tuple[int, torch.Tensor]]:
        if self.plan is None:
            return
        sizes = self.plan.sizes
        for i in trange(self.steps, disable=self._disable):
            sigma = self.sigmas[i]
            denoised = self.model(self.state.x, sigma)
            if sizes[i] != self.rows:
                denoised = self._split(i, denoised, sizes[i])
            if self._callback is not None:
                self._callback(
                    {"x": self.state.x, "i": i, "sigma": sigma, "sigma_hat": sigma, "denoised": denoised}
                )
            yield i, denoised

    def _split(self, i: int, denoised: torch.Tensor, rows: int) -> torch.Tensor:
        before = self.rows
        self.state.grow(rows)
        denoised = grow_rows(denoised, rows)
        if self._split_refresh is not None:
            rho = self._split_refresh
            sigma = self.sigmas[i]
            eps = self._draw(sigma, self.sigmas[i + 1], before, rows)
            parent_x = self.state.x[before:]
            parent_d = denoised[before:]
            refreshed = parent_d + math.sqrt(1.0 - rho * rho) * (parent_x - parent_d) + rho * sigma * eps
            self.state.x = torch.cat([self.state.x[:before], refreshed.to(self.state.x.dtype)])
        return denoised

    def result(self) -> torch.Tensor:
        """The final latents, one row per image."""
        x = self.state.x
        if x.shape[0] != self.batch_size:
            raise RuntimeError(f"hyperbatch ended with {x.shape[0]} rows, expected {self.batch_size}")
        return x
