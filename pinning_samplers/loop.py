"""`Hyperbatch`: the one sampling loop every hyperbatch solver iterates.

It evaluates the model, grows the solver's state (the latents and any history such as DPM++ 2M's
previous denoised) and the per-image arguments at the plan's splits, reports progress and serves
per-row noise. Solver bodies (`sampling`) contain no growth code.

A split happens right after the first model evaluation of its step. At that moment the copies
are still exact duplicates of their parents, so their denoised value is the parent's and the
model is evaluated only on the n distinct rows; the copies part from their parents through the
noise the step adds (or, for a solver that adds none, through a partial noise refresh, see
`Hyperbatch`). Noise: the active row r always takes row r of a full B-row draw, i.e. noise
derived from image r's own seed, so the batch is a pure function of the seeds.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import torch
from tqdm.auto import trange

from .plan import GrowthPlan, resolve_plan
from .rows import SolverState, grow_rows, resize_extra_args

logger = logging.getLogger(__name__)

NoiseSampler = Callable[[Any, Any], torch.Tensor]
"""(sigma, sigma_next) -> noise with one row per image of the full batch."""


class Hyperbatch:
    """The loop every hyperbatch solver runs: model calls, growth, progress and per-row noise.

    Iterating yields (i, denoised) for every step i, where denoised is the model's output for the
    step's first evaluation at sigmas[i] on the active rows of `state.x`. On a split step the
    evaluation runs on the existing rows only; then the state and denoised are grown (copies
    inherit their parents' values, which is exact since they are still duplicates), and, when
    `split_refresh` is set, the copies' noise is partially refreshed (below). The k-diffusion
    callback is then called with the active rows, as k-diffusion calls it.

    split_refresh (rho in (0, 1]): for a solver that adds no noise of its own (DPM++ 2M, or a
    stochastic solver run with eta = 0 or s_noise = 0), copies would stay identical forever.
    plan_refresh: the rho a stochastic solver uses when the plan asks for a refresh at every split
    (`GrowthPlan.refresh`), so copies part at once instead of through one step's noise. Each
    copy r then gets a variance-preserving refresh of its noise component at the current
    sigma, using the exact denoised value D of the split step's evaluation:

        x_r' = D + sqrt(1 - rho^2) (x - D) + rho * sigma * eps_r,

    eps_r being row r of a B-row noise draw, i.e. from image r's own seed. If x - D is noise of
    level sigma, so is x_r': the copy stays on the schedule. This is the update an ancestral
    sampler applies at every step (Euler a re-noises a fraction sigma_up^2 / sigma_next^2 of the
    noise variance); here it is applied once, to the copies, at their split. Parents are not
    refreshed, so image 0 is exactly the plain sampler's image for the first row.

    The refresh noise comes from the noise sampler's `split_noise(step, start, stop)` where it has
    one (`noise.SeededNoise`, `noise.SeededBrownianNoise`): one small per-seed generator per copy,
    so a split costs no Brownian tree query the plain solver would not make, and a sequential
    sampler's stream (Euler a's per-step draws) is not shifted by the split. Other samplers are
    drawn at (sigma, sigma_next) like a step's noise.

    noise_sampler: (sigma, sigma_next) -> B rows; `noise` serves row r of each draw to active
    row r, and every draw advances all B images' noise (as the WebUI's generators expect), so an
    image's noise does not depend on how many rows happen to be active. A sampler with
    `draw_rows` computes the active rows only: a Brownian tree per seed, or `SeededNoise`, whose
    inactive rows' generators catch up in one call when their rows appear.
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
        plan_refresh: float | None = None,
    ) -> None:
        for rho in (split_refresh, plan_refresh):
            if rho is not None and not 0.0 < rho <= 1.0:
                raise ValueError(f"split_rho must be in (0, 1], got {rho!r}")
        self.batch_size = x.shape[0]
        self.sigmas = sigmas
        self.steps = len(sigmas) - 1
        self.plan = resolve_plan(growth, self.batch_size, self.steps) if self.steps > 0 else None
        self._model = model
        self._full_args = dict(extra_args or {})
        self._args: dict[str, Any] = {}
        self._args_rows = -1
        self._s_in: dict[tuple[int, torch.dtype, torch.device], torch.Tensor] = {}
        self._callback = callback
        self._disable = disable
        self._noise_sampler = noise_sampler
        if split_refresh is None and self.plan is not None and self.plan.refresh:
            split_refresh = plan_refresh
        self._split_refresh = split_refresh
        start = self.plan.sizes[0] if self.plan is not None else self.batch_size
        self.state = SolverState(x if start == self.batch_size else x[:start])
        if self.plan is not None and not self.plan.is_plain and logger.isEnabledFor(logging.DEBUG):
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

    def _ones(self, x: torch.Tensor) -> torch.Tensor:
        """k-diffusion's `s_in` (x.new_ones([rows])), kept per row count: it never changes."""
        key = (x.shape[0], x.dtype, x.device)
        ones = self._s_in.get(key)
        if ones is None:
            ones = self._s_in[key] = x.new_ones([x.shape[0]])
        return ones

    def model(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        """The denoiser on `x` (any leading row count 1..B) at noise level `sigma`."""
        return self._model(x, sigma * self._ones(x), **self._extra_args(x.shape[0]))

    def _draw(self, sigma: torch.Tensor, sigma_next: torch.Tensor, start: int, stop: int) -> torch.Tensor:
        """Rows start..stop-1 of the noise draw at (sigma, sigma_next).

        A noise sampler that can draw some rows with the values of a full draw (it offers
        `draw_rows`: SeededBrownianNoise, whose rows are pure functions of their own seed, or
        SeededNoise, which lets the other rows' generators owe the draw) is asked for those rows
        only: a per-seed Brownian tree query costs more than a toy model call, and one step's
        per-seed draw of the toy's image about a tenth of one. Any other sampler (the WebUI's
        sequential generators) is drawn for all B images and sliced.
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

    def _split_noise(self, i: int, start: int, stop: int) -> torch.Tensor:
        """Unit noise for the copies start..stop-1 made at step i (see the class docstring)."""
        split_noise = getattr(self._noise_sampler, "split_noise", None)
        if split_noise is not None:
            return split_noise(i, start, stop).to(device=self.state.x.device, dtype=self.state.x.dtype)
        return self._draw(self.sigmas[i], self.sigmas[i + 1], start, stop)

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
        copies_x = None
        if self._split_refresh is not None:
            # The copies before..rows-1 duplicate rows 0..rows-before-1 (`grow_rows`), so their
            # refresh is computed from those parent rows and x grows in one cat, with the values
            # a refresh of grown copies would have.
            rho = self._split_refresh
            sigma = self.sigmas[i]
            eps = self._split_noise(i, before, rows)
            parent_x = self.state.x[: rows - before]
            parent_d = denoised[: rows - before]
            if rho == 1.0:
                # The default: the copy keeps none of its parent's noise, and the formula's zero
                # term (0 * (x - D)) would cost two ops of the split's five for the same values.
                refreshed = parent_d + sigma * eps
            else:
                refreshed = parent_d + math.sqrt(1.0 - rho * rho) * (parent_x - parent_d) + rho * sigma * eps
            copies_x = refreshed.to(self.state.x.dtype)
        self.state.grow(rows, copies_x=copies_x)
        return grow_rows(denoised, rows)

    def result(self) -> torch.Tensor:
        """The final latents, one row per image."""
        x = self.state.x
        if x.shape[0] != self.batch_size:
            raise RuntimeError(f"hyperbatch ended with {x.shape[0]} rows, expected {self.batch_size}")
        return x
