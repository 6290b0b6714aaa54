"""Noise schedules (sigma sequences) for tests, benchmarks and the toy backend.

Inside the WebUI the caller always provides the sigmas; these exist so code outside it can build
the same schedules without importing k-diffusion. Every schedule has n decreasing positive sigmas
followed by a final 0, the k-diffusion convention the samplers rely on (the last step denoises
fully and adds no noise).
"""

from __future__ import annotations

import math

import torch


def _append_zero(sigmas: torch.Tensor) -> torch.Tensor:
    return torch.cat([sigmas, sigmas.new_zeros([1])])


def get_sigmas_karras(
    n: int,
    sigma_min: float,
    sigma_max: float,
    rho: float = 7.0,
    device: torch.device | str = "cpu",
) -> torch.Tensor:
    """The schedule of Karras et al. (2022): n sigmas evenly spaced in sigma^(1/rho), then 0."""
    ramp = torch.linspace(0, 1, n)
    min_inv_rho = sigma_min ** (1 / rho)
    max_inv_rho = sigma_max ** (1 / rho)
    sigmas = (max_inv_rho + ramp * (min_inv_rho - max_inv_rho)) ** rho
    return _append_zero(sigmas).to(device)


def get_sigmas_exponential(
    n: int,
    sigma_min: float,
    sigma_max: float,
    device: torch.device | str = "cpu",
) -> torch.Tensor:
    """n sigmas evenly spaced in log(sigma), then 0."""
    sigmas = torch.linspace(math.log(sigma_max), math.log(sigma_min), n, device=device).exp()
    return _append_zero(sigmas)
