"""Stand-in for modules/sd_schedulers.py (v1.9.0+; cited at v1.10.1 82a973c0): the "Schedule type" list.

From 1.9 the noise schedule is chosen separately from the sampler (p.scheduler, "Automatic" =
the sampler's `scheduler` option). This module does not exist before 1.9: with the stand-in's
1.8 flavour importing it raises ModuleNotFoundError, exactly what code that detects the feature
by importing it sees on a real 1.6-1.8 WebUI. The 1.10 list (12 schedules) is mirrored; in 1.9
the last six (KL Optimal ... Beta) did not exist yet.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import modules

if not modules.version_at_least(1, 9):
    raise ModuleNotFoundError("No module named 'modules.sd_schedulers'", name="modules.sd_schedulers")

import numpy as np
import torch

import k_diffusion.sampling
from modules import shared


def to_d(x: torch.Tensor, sigma: torch.Tensor, denoised: torch.Tensor) -> torch.Tensor:
    """modules/sd_schedulers.py:L10: the WebUI's replacement of k-diffusion's to_d."""
    return (x - denoised) / sigma


k_diffusion.sampling.to_d = to_d


@dataclasses.dataclass
class Scheduler:
    """modules/sd_schedulers.py:L19."""

    name: str
    label: str
    function: Any
    default_rho: float = -1
    need_inner_model: bool = False
    aliases: list[str] | None = None


def uniform(n: int, sigma_min: float, sigma_max: float, inner_model: Any, device: Any) -> torch.Tensor:
    """modules/sd_schedulers.py:L29: the model's own discretisation."""
    return inner_model.get_sigmas(n).to(device)


def sgm_uniform(n: int, sigma_min: float, sigma_max: float, inner_model: Any, device: Any) -> torch.Tensor:
    """modules/sd_schedulers.py:L33."""
    start = inner_model.sigma_to_t(torch.tensor(sigma_max))
    end = inner_model.sigma_to_t(torch.tensor(sigma_min))
    sigs = [inner_model.t_to_sigma(ts) for ts in torch.linspace(start, end, n + 1)[:-1]]
    sigs += [0.0]
    return torch.FloatTensor(sigs).to(device)


def get_align_your_steps_sigmas(n: int, sigma_min: float, sigma_max: float, device: Any) -> torch.Tensor:
    """modules/sd_schedulers.py:L44: NVIDIA's fixed 10-step SD sigmas, log-interpolated to n.

    These are SD's numbers (14.6 down to 0.029), not derived from the model, so on the toy (whose
    sigma_max is 160) they start far too low: faithful, and useless for the toy.
    """
    def loglinear_interp(t_steps: list[float], num_steps: int) -> np.ndarray:
        xs = np.linspace(0, 1, len(t_steps))
        ys = np.log(t_steps[::-1])
        new_xs = np.linspace(0, 1, num_steps)
        new_ys = np.interp(new_xs, xs, ys)
        return np.exp(new_ys)[::-1].copy()

    if shared.sd_model.is_sdxl:
        sigmas: Any = [14.615, 6.315, 3.771, 2.181, 1.342, 0.862, 0.555, 0.380, 0.234, 0.113, 0.029]
    else:
        sigmas = [14.615, 6.475, 3.861, 2.697, 1.886, 1.396, 0.963, 0.652, 0.399, 0.152, 0.029]
    if n != len(sigmas):
        sigmas = np.append(loglinear_interp(sigmas, n), [0.0])
    else:
        sigmas.append(0.0)
    return torch.FloatTensor(sigmas).to(device)


def kl_optimal(n: int, sigma_min: float, sigma_max: float, device: Any) -> torch.Tensor:
    """modules/sd_schedulers.py:L73."""
    alpha_min = torch.arctan(torch.tensor(sigma_min, device=device))
    alpha_max = torch.arctan(torch.tensor(sigma_max, device=device))
    step_indices = torch.arange(n + 1, device=device)
    return torch.tan(step_indices / n * alpha_min + (1.0 - step_indices / n) * alpha_max)


def simple_scheduler(n: int, sigma_min: float, sigma_max: float, inner_model: Any, device: Any) -> torch.Tensor:
    """modules/sd_schedulers.py:L81."""
    sigs = []
    ss = len(inner_model.sigmas) / n
    for x in range(n):
        sigs += [float(inner_model.sigmas[-(1 + int(x * ss))])]
    sigs += [0.0]
    return torch.FloatTensor(sigs).to(device)


def normal_scheduler(n: int, sigma_min: float, sigma_max: float, inner_model: Any, device: Any, sgm: bool = False,
                     floor: bool = False) -> torch.Tensor:
    """modules/sd_schedulers.py:L90."""
    start = inner_model.sigma_to_t(torch.tensor(sigma_max))
    end = inner_model.sigma_to_t(torch.tensor(sigma_min))
    timesteps = torch.linspace(start, end, n + 1)[:-1] if sgm else torch.linspace(start, end, n)
    sigs = [inner_model.t_to_sigma(ts) for ts in timesteps]
    sigs += [0.0]
    return torch.FloatTensor(sigs).to(device)


def ddim_scheduler(n: int, sigma_min: float, sigma_max: float, inner_model: Any, device: Any) -> torch.Tensor:
    """modules/sd_schedulers.py:L107."""
    sigs = []
    ss = max(len(inner_model.sigmas) // n, 1)
    x = 1
    while x < len(inner_model.sigmas):
        sigs += [float(inner_model.sigmas[x])]
        x += ss
    sigs = sigs[::-1]
    sigs += [0.0]
    return torch.FloatTensor(sigs).to(device)


def beta_scheduler(n: int, sigma_min: float, sigma_max: float, inner_model: Any, device: Any) -> torch.Tensor:
    """modules/sd_schedulers.py:L119 (1.10): Beta-distributed timesteps (arXiv:2407.12173)."""
    from scipy import stats

    alpha = shared.opts.beta_dist_alpha
    beta = shared.opts.beta_dist_beta
    timesteps = 1 - np.linspace(0, 1, n)
    timesteps = [stats.beta.ppf(x, alpha, beta) for x in timesteps]
    sigmas = [sigma_min + (x * (sigma_max - sigma_min)) for x in timesteps]
    sigmas += [0.0]
    return torch.FloatTensor(sigmas).to(device)


schedulers = [
    Scheduler("automatic", "Automatic", None),
    Scheduler("uniform", "Uniform", uniform, need_inner_model=True),
    Scheduler("karras", "Karras", k_diffusion.sampling.get_sigmas_karras, default_rho=7.0),
    Scheduler("exponential", "Exponential", k_diffusion.sampling.get_sigmas_exponential),
    Scheduler("polyexponential", "Polyexponential", k_diffusion.sampling.get_sigmas_polyexponential, default_rho=1.0),
    Scheduler("sgm_uniform", "SGM Uniform", sgm_uniform, need_inner_model=True, aliases=["SGMUniform"]),
    Scheduler("kl_optimal", "KL Optimal", kl_optimal),
    Scheduler("align_your_steps", "Align Your Steps", get_align_your_steps_sigmas),
    Scheduler("simple", "Simple", simple_scheduler, need_inner_model=True),
    Scheduler("normal", "Normal", normal_scheduler, need_inner_model=True),
    Scheduler("ddim", "DDIM", ddim_scheduler, need_inner_model=True),
    Scheduler("beta", "Beta", beta_scheduler, need_inner_model=True),
]
"""modules/sd_schedulers.py:L130."""

schedulers_map = {**{x.name: x for x in schedulers}, **{x.label: x for x in schedulers}}
"""modules/sd_schedulers.py:L145: by name and by label."""
