"""The scalar coefficients of each solver step, computed once per schedule and cached.

Why: a solver step's arithmetic on the sigmas (logs, ratios, expm1(-h), the ancestral sigma_up /
sigma_down) is 20 to 45 0-d torch ops per step, a few microseconds of dispatch each, and a
hyperbatch pays them as often as a plain batch (it makes as many steps, on fewer rows): on the toy
they were about a third of a plain DPM++ 2M batch's fixed cost (docs/benchmarks.md,
bench_hyperbatch_wall.py). They depend on the sigmas and the sampler's scalar settings only, so
they are computed here once per distinct schedule and kept; the step then does only tensor ops on
x.

Bit identity: every coefficient is computed with the very same 0-d torch expression, in the same
order, as k-diffusion's step computes it inline (the functions below are those lines, moved), so
the values, and the tensors multiplied into x, are the same bits; the samplers stay equal to
k-diffusion bit for bit (tests/test_samplers.py).

The cache is keyed by the schedule's exact bytes, dtype and device and by the settings, so a
WebUI passing a fresh sigmas tensor of the same schedule at every generation hits it too. The
cached tensors are shared by every run of that schedule: nothing may modify them in place.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Any

import torch

_CACHE_SIZE = 64
"""Schedules kept (per kind and settings): a pinning run uses one; a WebUI session a few."""

_cache: OrderedDict[tuple[Hashable, ...], tuple[Any, ...]] = OrderedDict()
_lock = threading.Lock()


def schedule_key(sigmas: torch.Tensor) -> tuple[Hashable, ...]:
    """The exact identity of a schedule: its bytes (so -0.0 and NaN are told apart), dtype, device."""
    raw = sigmas.detach().cpu().contiguous().view(torch.uint8)
    return (sigmas.dtype, sigmas.device, bytes(raw.numpy()))


def cached(kind: str, settings: tuple[Hashable, ...], sigmas: torch.Tensor,
           build: Callable[[torch.Tensor], tuple[Any, ...]]) -> tuple[Any, ...]:
    """`build(sigmas)`, computed once per (kind, settings, schedule) and then served from the cache."""
    key = (kind, settings, *schedule_key(sigmas))
    with _lock:
        steps = _cache.get(key)
        if steps is not None:
            _cache.move_to_end(key)
            return steps
    steps = build(sigmas)
    with _lock:
        _cache[key] = steps
        while len(_cache) > _CACHE_SIZE:
            _cache.popitem(last=False)
    return steps


def clear_cache() -> None:
    """Forget every cached schedule (tests)."""
    with _lock:
        _cache.clear()


def get_ancestral_step(sigma_from: Any, sigma_to: Any, eta: float = 1.0) -> tuple[Any, Any]:
    """(sigma_down, sigma_up) of an ancestral step: the deterministic step goes to sigma_down,
    then noise of std sigma_up brings the level back to sigma_to (k-diffusion's function)."""
    if not eta:
        return sigma_to, 0.0
    sigma_up = min(sigma_to, eta * (sigma_to**2 * (sigma_from**2 - sigma_to**2) / sigma_from**2) ** 0.5)
    sigma_down = (sigma_to**2 - sigma_up**2) ** 0.5
    return sigma_down, sigma_up


def sigma_of_t(t: torch.Tensor) -> torch.Tensor:
    return t.neg().exp()


def t_of_sigma(sigma: torch.Tensor) -> torch.Tensor:
    return sigma.log().neg()


# -- Euler ancestral ------------------------------------------------------------------------------


@dataclass(frozen=True)
class EulerAncestralStep:
    """Step i of Euler a: sigma = sigmas[i], sigma_next = sigmas[i + 1] (0-d views, passed to
    the noise sampler), dt = sigma_down - sigma, sigma_up (0-d, or 0.0 with eta = 0), and
    whether noise is added (sigma_next > 0)."""

    sigma: torch.Tensor
    sigma_next: torch.Tensor
    dt: Any
    sigma_up: Any
    noisy: bool


def euler_ancestral_steps(sigmas: torch.Tensor, eta: float) -> tuple[EulerAncestralStep, ...]:
    """Every step's coefficients of Euler a on `sigmas` (cached per schedule and eta)."""

    def build(sigmas: torch.Tensor) -> tuple[EulerAncestralStep, ...]:
        steps = []
        points = sigmas.unbind()
        for i in range(len(points) - 1):
            sigma, sigma_next = points[i], points[i + 1]
            sigma_down, sigma_up = get_ancestral_step(sigma, sigma_next, eta=eta)
            steps.append(EulerAncestralStep(sigma, sigma_next, sigma_down - sigma, sigma_up, bool(sigma_next > 0)))
        return tuple(steps)

    return cached("euler_ancestral", (float(eta),), sigmas, build)  # type: ignore[return-value]


# -- DPM++ 2M -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Dpmpp2mStep:
    """Step i of DPM-Solver++(2M): x' = ratio * x - em1 * D, with D = denoised in a first-order
    step (the first, and the last, to sigma 0) and D = c_new * denoised - c_old * old_denoised
    otherwise; ratio = sigma(t_next) / sigma(t), em1 = expm1(-h)."""

    ratio: torch.Tensor
    em1: torch.Tensor
    first_order: bool
    c_new: torch.Tensor | None
    c_old: torch.Tensor | None


def dpmpp_2m_steps(sigmas: torch.Tensor) -> tuple[Dpmpp2mStep, ...]:
    """Every step's coefficients of DPM++ 2M on `sigmas` (cached per schedule)."""

    def build(sigmas: torch.Tensor) -> tuple[Dpmpp2mStep, ...]:
        steps = []
        for i in range(len(sigmas) - 1):
            t, t_next = t_of_sigma(sigmas[i]), t_of_sigma(sigmas[i + 1])
            h = t_next - t
            ratio = sigma_of_t(t_next) / sigma_of_t(t)
            em1 = (-h).expm1()
            # k-diffusion's condition is "old_denoised is None or sigmas[i + 1] == 0"; old_denoised
            # is None exactly in step 0.
            if i == 0 or bool(sigmas[i + 1] == 0):
                steps.append(Dpmpp2mStep(ratio, em1, True, None, None))
                continue
            h_last = t - t_of_sigma(sigmas[i - 1])
            r = h_last / h
            steps.append(Dpmpp2mStep(ratio, em1, False, 1 + 1 / (2 * r), 1 / (2 * r)))
        return tuple(steps)

    return cached("dpmpp_2m", (), sigmas, build)  # type: ignore[return-value]
