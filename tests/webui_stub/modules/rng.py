"""Stand-in for modules/rng.py (v1.6.0+; cited at v1.10.1 82a973c0): per-seed noise.

`ImageRNG` holds one torch.Generator per image seed: `next()` returns the initial latent noise the
first time and one step's noise (e.g. for Euler a, through sd_samplers_common.TorchHijack) on
every later call, always one row per seed, so an image depends only on its own seed. The device
is always the CPU here (the WebUI draws on the GPU unless randn_source is "CPU"; the values then
differ from the WebUI's but the structure does not). The "NV" source (a numpy Philox port) is not
mirrored and raises.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from modules import devices, shared


def _check_source() -> None:
    if shared.opts.randn_source == "NV":
        raise NotImplementedError("the WebUI stand-in does not mirror the 'NV' random number source")


def randn(seed: int, shape: Sequence[int], generator: torch.Generator | None = None) -> torch.Tensor:
    """modules/rng.py:L6: normal noise from `seed` (seeds the global generator, as the WebUI)."""
    _check_source()
    manual_seed(seed)
    return torch.randn(tuple(shape), device=devices.cpu, generator=generator).to(devices.device)


def randn_local(seed: int, shape: Sequence[int]) -> torch.Tensor:
    """modules/rng.py:L22: the first normal tensor of `seed`, leaving the global generator alone."""
    _check_source()
    local_generator = torch.Generator(devices.cpu).manual_seed(int(seed))
    return torch.randn(tuple(shape), device=devices.cpu, generator=local_generator).to(devices.device)


def randn_like(x: torch.Tensor) -> torch.Tensor:
    """modules/rng.py:L36: normal noise like `x` from the global generator."""
    _check_source()
    return torch.randn_like(x, device=devices.cpu).to(x.device)


def randn_without_seed(shape: Sequence[int], generator: torch.Generator | None = None) -> torch.Tensor:
    """modules/rng.py:L50: the next normal tensor of `generator` (or of the global generator)."""
    _check_source()
    return torch.randn(tuple(shape), device=devices.cpu, generator=generator).to(devices.device)


def manual_seed(seed: int) -> None:
    """modules/rng.py:L64: seed the global generator."""
    _check_source()
    torch.manual_seed(seed)


def create_generator(seed: int) -> torch.Generator:
    """modules/rng.py:L75: a generator seeded with `seed`."""
    _check_source()
    return torch.Generator(devices.cpu).manual_seed(int(seed))


def slerp(val: float, low: torch.Tensor, high: torch.Tensor) -> torch.Tensor:
    """modules/rng.py:L85: spherical interpolation (variation seeds)."""
    low_norm = low / torch.norm(low, dim=1, keepdim=True)
    high_norm = high / torch.norm(high, dim=1, keepdim=True)
    dot = (low_norm * high_norm).sum(1)
    if dot.mean() > 0.9995:
        return low * val + high * (1 - val)
    omega = torch.acos(dot)
    so = torch.sin(omega)
    return (torch.sin((1.0 - val) * omega) / so).unsqueeze(1) * low + (torch.sin(val * omega) / so).unsqueeze(1) * high


class ImageRNG:
    """modules/rng.py:L99: one generator per image seed; `first()` / `next()` give [B, *shape]."""

    def __init__(
        self,
        shape: Sequence[int],
        seeds: Sequence[int],
        subseeds: Sequence[int] | None = None,
        subseed_strength: float = 0.0,
        seed_resize_from_h: int = 0,
        seed_resize_from_w: int = 0,
    ) -> None:
        self.shape = tuple(map(int, shape))
        self.seeds = seeds
        self.subseeds = subseeds
        self.subseed_strength = subseed_strength
        self.seed_resize_from_h = seed_resize_from_h
        self.seed_resize_from_w = seed_resize_from_w
        self.generators = [create_generator(seed) for seed in seeds]
        self.is_first = True

    def first(self) -> torch.Tensor:
        """modules/rng.py:L112: the initial noise; then switches to seed + ENSD generators.

        Calling `first()` directly does not clear `is_first` (as in the WebUI): a later `next()`
        would return the initial noise again.
        """
        if self.seed_resize_from_h <= 0 or self.seed_resize_from_w <= 0:
            noise_shape = self.shape
        else:
            noise_shape = (self.shape[0], int(self.seed_resize_from_h) // 8, int(self.seed_resize_from_w // 8))
        xs = []
        for i, (seed, generator) in enumerate(zip(self.seeds, self.generators)):
            subnoise = None
            if self.subseeds is not None and self.subseed_strength != 0:
                subseed = 0 if i >= len(self.subseeds) else self.subseeds[i]
                subnoise = randn(subseed, noise_shape)
            if noise_shape != self.shape:
                noise = randn(seed, noise_shape)
            else:
                noise = randn(seed, self.shape, generator=generator)
            if subnoise is not None:
                noise = slerp(self.subseed_strength, noise, subnoise)
            if noise_shape != self.shape:
                x = randn(seed, self.shape, generator=generator)
                dx = (self.shape[2] - noise_shape[2]) // 2
                dy = (self.shape[1] - noise_shape[1]) // 2
                w = noise_shape[2] if dx >= 0 else noise_shape[2] + 2 * dx
                h = noise_shape[1] if dy >= 0 else noise_shape[1] + 2 * dy
                tx = 0 if dx < 0 else dx
                ty = 0 if dy < 0 else dy
                dx = max(-dx, 0)
                dy = max(-dy, 0)
                x[:, ty:ty + h, tx:tx + w] = noise[:, dy:dy + h, dx:dx + w]
                noise = x
            xs.append(noise)
        eta_noise_seed_delta = shared.opts.eta_noise_seed_delta or 0
        if eta_noise_seed_delta:
            self.generators = [create_generator(seed + eta_noise_seed_delta) for seed in self.seeds]
        return torch.stack(xs).to(devices.device)

    def next(self) -> torch.Tensor:
        """modules/rng.py:L153: the initial noise on the first call, then one draw per generator."""
        if self.is_first:
            self.is_first = False
            return self.first()
        xs = [randn_without_seed(self.shape, generator=generator) for generator in self.generators]
        return torch.stack(xs).to(devices.device)


devices.randn = randn
devices.randn_local = randn_local
devices.randn_like = randn_like
devices.randn_without_seed = randn_without_seed
devices.manual_seed = manual_seed
