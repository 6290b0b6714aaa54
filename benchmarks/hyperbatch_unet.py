"""The UNet timing of bench_hyperbatch.py (`--unet`, `--unet-tiny`): wall-clock seconds of plain
and hyperbatch batches on a random-weight UNet with Stable Diffusion 1.5's shapes (`sd_unet`).

On the toy model the sampler's own bookkeeping and noise draws cost as much as the denoiser, so
only a real network's per-call cost shows what a hyperbatch's saved rows are worth. The batches
are sampled as the WebUI samples them (per-seed noise generators, per-seed Brownian trees, cond and
uncond rows in one call); seeds and each sampler's schedule are the toy grid's (`hyperbatch_toy`),
so the two measurements compare like with like. `unet_table` in hyperbatch_report.py shows the rows.
"""

from __future__ import annotations

import logging
import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from benchmarks.hyperbatch_toy import GROWTHS, seed_set, toy_scheduler
from benchmarks.sd_unet import EpsDenoiser, UNet, UNetConfig
from pinning_samplers import SAMPLERS, SamplerInfo, SeededBrownianNoise, SeededNoise
from pinning_samplers.plan import plan_growth
from pinning_samplers.schedules import get_sigmas_exponential, get_sigmas_karras

logger = logging.getLogger("bench_hyperbatch.unet")


@dataclass
class UNetRow:
    """Wall-clock seconds for one sampler / B / S / schedule on the UNet."""

    sampler: str
    batch_size: int
    steps: int
    growth: str
    rows: int
    expected_rows: int
    seconds: list[float]

    @property
    def median_s(self) -> float:
        """Median over the timed rounds: one slow round (another job on the GPU) does not count."""
        return statistics.median(self.seconds)


def _sync(device: torch.device) -> None:
    """Wait for the device's queued kernels, so a batch's time is its work, not its launches."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def sample_unet_batch(
    denoiser: EpsDenoiser,
    info: SamplerInfo,
    seeds: Sequence[int],
    sigmas: torch.Tensor,
    latent_shape: tuple[int, int, int],
    extra_args: Mapping[str, Any],
    growth: str,
) -> torch.Tensor:
    """One batch with the WebUI's noise arrangement (per-seed generators, per-seed Brownian trees)."""
    device = sigmas.device
    noise = SeededNoise(seeds, latent_shape, device=device)
    x = noise.first() * sigmas[0]
    noise_sampler: Callable[[Any, Any], torch.Tensor] = (
        SeededBrownianNoise.from_sigmas(seeds, x, sigmas) if info.webui_options.get("brownian_noise") else noise
    )
    return info.function(
        denoiser, x, sigmas, extra_args=dict(extra_args), disable=True, noise_sampler=noise_sampler, growth=growth
    )


def run_unet(
    config: UNetConfig,
    device: torch.device,
    samplers: Sequence[str],
    batch_sizes: Sequence[int],
    steps_list: Sequence[int],
    repeats: int,
    image_size: int,
    growths: Sequence[str] = GROWTHS,
) -> tuple[list[UNetRow], int]:
    """Time every sampler / B / S / schedule on a random UNet; returns the rows and its parameter count.

    Per (sampler, B, S): one untimed warm-up round, then `repeats` rounds, each running every
    schedule once back to back (so load drift hits all schedules alike); medians are reported.
    """
    dtype = torch.float16 if device.type == "cuda" else torch.float32
    torch.manual_seed(0)
    with device:
        # Initialised on the device itself: random init of 860M parameters on a CPU takes long.
        unet = UNet(config).eval()
    parameters = sum(p.numel() for p in unet.parameters())
    unet = unet.to(dtype=dtype)
    denoiser = EpsDenoiser(unet, dtype)
    latent_shape = (config.in_channels, image_size // 8, image_size // 8)
    generator = torch.Generator().manual_seed(1)
    context_shape = (1, config.context_tokens, config.context_dim)
    cond_row = torch.randn(context_shape, generator=generator).to(device=device, dtype=dtype)
    uncond_row = torch.randn(context_shape, generator=generator).to(device=device, dtype=dtype)
    out: list[UNetRow] = []
    for sampler in samplers:
        info = SAMPLERS[sampler]
        schedule = get_sigmas_exponential if toy_scheduler(info) == "exponential" else get_sigmas_karras
        for steps in steps_list:
            sigmas = schedule(steps, denoiser.sigma_min, denoiser.sigma_max, device=device)
            for batch_size in batch_sizes:
                seeds = seed_set(0, batch_size)
                extra_args = {
                    "cond": cond_row.expand(batch_size, -1, -1),
                    "uncond": uncond_row.expand(batch_size, -1, -1),
                    "cond_scale": 7.0,
                }
                rows = {
                    g: UNetRow(
                        sampler, batch_size, steps, g, 0,
                        plan_growth(batch_size, steps, g).model_rows(info.evals(steps)), [],
                    )
                    for g in growths
                }
                for round_ in range(repeats + 1):
                    for growth in growths:
                        _sync(device)
                        rows_before = denoiser.rows
                        started = time.perf_counter()
                        latents = sample_unet_batch(denoiser, info, seeds, sigmas, latent_shape, extra_args, growth)
                        _sync(device)
                        elapsed = time.perf_counter() - started
                        if latents.shape[0] != batch_size or not torch.isfinite(latents).all():
                            raise RuntimeError(f"{sampler} {growth}: bad result {tuple(latents.shape)}")
                        rows[growth].rows = denoiser.rows - rows_before
                        if round_:
                            rows[growth].seconds.append(elapsed)
                for row in rows.values():
                    logger.info(
                        "unet %s B=%d S=%d %s: %.3f s (rows %d, plan %d)",
                        sampler, batch_size, steps, row.growth, row.median_s, row.rows, row.expected_rows,
                    )
                out.extend(rows.values())
    return out, parameters



def resolve_unet_device(requested: str, tiny: bool) -> torch.device | None:
    """The device for the UNet timing, or None (with a logged reason) when it must be skipped."""
    if requested == "cuda" and not torch.cuda.is_available():
        if not tiny:
            logger.warning("CUDA is not available: skipping the full-size UNet timing")
            return None
        logger.warning("CUDA is not available: running the tiny UNet on the CPU")
        return torch.device("cpu")
    if requested == "cpu" and not tiny:
        logger.warning(
            "the full-size UNet needs CUDA (--device cuda); skipping it "
            "(--unet-tiny exercises the same code path on the CPU)"
        )
        return None
    return torch.device(requested)
