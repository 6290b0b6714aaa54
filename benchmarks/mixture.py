"""The analytic model the sampler tests and the split-rho benchmark share.

A Gaussian mixture in D dimensions, x0 ~ sum_k w_k N(mu_k, s^2 I), whose exact denoiser is closed
form:

    E[x0 | x, sigma] = sum_k r_k(x) (mu_k + s^2 / (s^2 + sigma^2) (x - mu_k)),
    r_k(x) proportional to w_k N(x; mu_k, (s^2 + sigma^2) I).

Every row of a latent holds R independent D-dimensional problems ([n, R, D]), so one sampler call
runs R independent hyperbatches side by side (rows grow together, each problem is its own tree).
"""

from __future__ import annotations

import torch

from pinning_samplers.schedules import get_sigmas_karras

DIM = 8
STD = 0.1
WEIGHTS = (0.5, 0.3, 0.2)
SIGMA_MIN, SIGMA_MAX = 0.03, 14.6  # SD 1.x's range (sigma_max 14.6), down to below STD


def mixture_means() -> torch.Tensor:
    generator = torch.Generator().manual_seed(1)
    means = torch.randn(len(WEIGHTS), DIM, generator=generator, dtype=torch.float64)
    # norm 3: pairwise distances about 4.2 to 4.7, i.e. 40+ component standard deviations
    return means / means.norm(dim=1, keepdim=True) * 3.0


class MixtureDenoiser:
    """The exact denoiser of the mixture, on latents shaped [n, ...] with n * R * DIM elements.

    Computed in float64 (returned in x's dtype) so responsibilities underflow cleanly. Counts the
    rows it evaluates. `logit_bias` ([n, K] or [K]) shifts the component log-weights: the
    conditioned stand-in below uses it to make every row depend on its own prompt.
    """

    def __init__(self) -> None:
        self.means = mixture_means()
        self.log_weights = torch.tensor(WEIGHTS, dtype=torch.float64).log()
        self.rows = 0

    def __call__(self, x: torch.Tensor, sigma: torch.Tensor, logit_bias: torch.Tensor | None = None, **_: object) -> torch.Tensor:
        n = x.shape[0]
        self.rows += n
        assert sigma.shape == (n,)
        flat = x.reshape(n, -1, DIM).double()
        var = (STD**2 + sigma.double() ** 2)[:, None, None]
        d2 = ((flat[:, :, None, :] - self.means) ** 2).sum(-1)
        logits = self.log_weights - d2 / (2 * var)
        if logit_bias is not None:
            logits = logits + logit_bias.double().reshape(-1, 1, len(WEIGHTS))
        r = torch.softmax(logits, dim=-1)
        shrink = STD**2 / var
        denoised = (1 - shrink) * (r @ self.means) + shrink * flat
        return denoised.to(x.dtype).view_as(x)


def components(images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(nearest component [B, R], squared distance to it / (DIM s^2) [B, R]; 1 on average for
    exact samples)."""
    batch = images.shape[0]
    flat = images.reshape(batch, -1, DIM).double()
    d2 = ((flat[:, :, None, :] - mixture_means()) ** 2).sum(-1)
    best = d2.min(-1)
    return best.indices, best.values / (DIM * STD**2)


def karras(steps: int) -> torch.Tensor:
    return get_sigmas_karras(steps, SIGMA_MIN, SIGMA_MAX)
