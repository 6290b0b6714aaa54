"""An SD 1.5-shaped UNet with random weights, and a k-diffusion denoiser around it (classifier-free
guidance on SD 1.x's discrete schedule): the model of bench_hyperbatch.py's GPU timing (`--unet`),
where a hyperbatch's saved rows meet a real network's per-call cost. `UNetConfig.sd15()` has Stable
Diffusion 1.5's layout; `tiny()` the same layout, small, for tests and CPU runs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn


@dataclass(frozen=True)
class UNetConfig:
    """UNet hyperparameters; `sd15()` has Stable Diffusion 1.5's, `tiny()` the same layout, small."""

    in_channels: int = 4
    out_channels: int = 4
    model_channels: int = 320
    channel_mult: tuple[int, ...] = (1, 2, 4, 4)
    num_res_blocks: int = 2
    attention_levels: tuple[int, ...] = (0, 1, 2)
    num_heads: int = 8
    context_dim: int = 768
    context_tokens: int = 77
    groups: int = 32

    @classmethod
    def sd15(cls) -> UNetConfig:
        return cls()

    @classmethod
    def tiny(cls) -> UNetConfig:
        return cls(model_channels=32, num_heads=2, context_dim=32)

    @property
    def time_embed_dim(self) -> int:
        return 4 * self.model_channels

    @property
    def image_multiple(self) -> int:
        """The image side must be a multiple of this many pixels: the VAE's factor 8 times one
        halving of the latent per downsampling level."""
        return 8 * 2 ** (len(self.channel_mult) - 1)


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal embedding of (fractional) timesteps t [n] -> [n, dim] (cos half, then sin half)."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    args = t.float()[:, None] * freqs[None]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=1)


class ResBlock(nn.Module):
    """GroupNorm-SiLU-conv twice, with the time embedding added in between; 1x1 skip on a width change."""

    def __init__(self, channels: int, out_channels: int, emb_dim: int, groups: int) -> None:
        super().__init__()
        self.norm1 = nn.GroupNorm(groups, channels)
        self.conv1 = nn.Conv2d(channels, out_channels, 3, padding=1)
        self.emb = nn.Linear(emb_dim, out_channels)
        self.norm2 = nn.GroupNorm(groups, out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1)
        self.skip = nn.Identity() if channels == out_channels else nn.Conv2d(channels, out_channels, 1)

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = h + self.emb(F.silu(emb))[:, :, None, None]
        h = self.conv2(F.silu(self.norm2(h)))
        return self.skip(x) + h


class Attention(nn.Module):
    """Multi-head attention (self when context is None), through scaled_dot_product_attention."""

    def __init__(self, dim: int, context_dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.to_q = nn.Linear(dim, dim, bias=False)
        self.to_k = nn.Linear(context_dim, dim, bias=False)
        self.to_v = nn.Linear(context_dim, dim, bias=False)
        self.to_out = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        context = x if context is None else context
        n, length, dim = x.shape

        def split(t: torch.Tensor) -> torch.Tensor:
            return t.view(n, t.shape[1], self.heads, dim // self.heads).transpose(1, 2)

        out = F.scaled_dot_product_attention(split(self.to_q(x)), split(self.to_k(context)), split(self.to_v(context)))
        return self.to_out(out.transpose(1, 2).reshape(n, length, dim))


class TransformerBlock(nn.Module):
    """Self-attention, cross-attention on the text context, GEGLU feed-forward; pre-norm residuals."""

    def __init__(self, dim: int, context_dim: int, heads: int) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn1 = Attention(dim, dim, heads)
        self.norm2 = nn.LayerNorm(dim)
        self.attn2 = Attention(dim, context_dim, heads)
        self.norm3 = nn.LayerNorm(dim)
        self.ff_in = nn.Linear(dim, 8 * dim)  # GEGLU: value and gate, 4 x dim each
        self.ff_out = nn.Linear(4 * dim, dim)

    def forward(self, x: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        x = x + self.attn1(self.norm1(x))
        x = x + self.attn2(self.norm2(x), context)
        value, gate = self.ff_in(self.norm3(x)).chunk(2, dim=-1)
        return x + self.ff_out(value * F.gelu(gate))


class SpatialTransformer(nn.Module):
    """Feature map -> tokens -> one transformer block -> feature map, as in SD 1.x (1x1 conv projections)."""

    def __init__(self, channels: int, config: UNetConfig) -> None:
        super().__init__()
        self.norm = nn.GroupNorm(config.groups, channels, eps=1e-6)
        self.proj_in = nn.Conv2d(channels, channels, 1)
        self.block = TransformerBlock(channels, config.context_dim, config.num_heads)
        self.proj_out = nn.Conv2d(channels, channels, 1)

    def forward(self, x: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        tokens = self.proj_in(self.norm(x)).flatten(2).transpose(1, 2)
        tokens = self.block(tokens, context)
        return x + self.proj_out(tokens.transpose(1, 2).reshape(n, c, h, w))


class Downsample(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, stride=2, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class Upsample(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class UNetStage(nn.ModuleList):
    """Layers applied in order, each given what it takes (ResBlock: emb, SpatialTransformer: context)."""

    def forward(self, x: torch.Tensor, emb: torch.Tensor, context: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        for layer in self:
            if isinstance(layer, ResBlock):
                x = layer(x, emb)
            elif isinstance(layer, SpatialTransformer):
                x = layer(x, context)
            else:
                x = layer(x)
        return x


class UNet(nn.Module):
    """An eps-predicting UNet with SD 1.x's layout: UNet(x [n,4,h,w], t [n], context [n,77,C]) -> eps.

    Written here from torch modules so that no download and no diffusers install is needed; the
    weights are random (only the cost matters). With `UNetConfig.sd15()` it has 859,520,964
    parameters, the count of SD 1.5's UNet, which checks the shapes.
    """

    def __init__(self, config: UNetConfig) -> None:
        super().__init__()
        self.config = config
        mc, emb_dim, groups = config.model_channels, config.time_embed_dim, config.groups
        self.time_embed = nn.Sequential(nn.Linear(mc, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))
        self.input_blocks = nn.ModuleList([UNetStage([nn.Conv2d(config.in_channels, mc, 3, padding=1)])])
        skips = [mc]
        ch = mc
        last = len(config.channel_mult) - 1
        for level, mult in enumerate(config.channel_mult):
            for _ in range(config.num_res_blocks):
                layers: list[nn.Module] = [ResBlock(ch, mult * mc, emb_dim, groups)]
                ch = mult * mc
                if level in config.attention_levels:
                    layers.append(SpatialTransformer(ch, config))
                self.input_blocks.append(UNetStage(layers))
                skips.append(ch)
            if level != last:
                self.input_blocks.append(UNetStage([Downsample(ch)]))
                skips.append(ch)
        self.middle = UNetStage(
            [ResBlock(ch, ch, emb_dim, groups), SpatialTransformer(ch, config), ResBlock(ch, ch, emb_dim, groups)]
        )
        self.output_blocks = nn.ModuleList()
        for level, mult in reversed(list(enumerate(config.channel_mult))):
            for i in range(config.num_res_blocks + 1):
                layers = [ResBlock(ch + skips.pop(), mult * mc, emb_dim, groups)]
                ch = mult * mc
                if level in config.attention_levels:
                    layers.append(SpatialTransformer(ch, config))
                if level and i == config.num_res_blocks:
                    layers.append(Upsample(ch))
                self.output_blocks.append(UNetStage(layers))
        self.out = nn.Sequential(nn.GroupNorm(groups, ch), nn.SiLU(), nn.Conv2d(ch, config.out_channels, 3, padding=1))

    def forward(self, x: torch.Tensor, t: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        emb = self.time_embed(timestep_embedding(t, self.config.model_channels).to(x.dtype))
        hs = []
        h = x
        for block in self.input_blocks:
            h = block(h, emb, context)
            hs.append(h)
        h = self.middle(h, emb, context)
        for block in self.output_blocks:
            h = block(torch.cat([h, hs.pop()], dim=1), emb, context)
        return self.out(h)


class EpsDenoiser:
    """k-diffusion-convention denoiser around an eps-predicting UNet, with classifier-free guidance.

    SD 1.x's discrete schedule (1000 steps, scaled-linear betas 0.00085 to 0.012) gives the sigma
    range and the sigma -> timestep map (interpolated in log sigma). Each call evaluates the cond
    and uncond rows of the active images in one UNet call (2n rows), as the WebUI's CFG denoiser
    does; `rows` counts n per call, the same convention as `ToyModel.rows_evaluated`.
    """

    def __init__(self, unet: UNet, dtype: torch.dtype) -> None:
        self.unet = unet
        self.dtype = dtype
        betas = torch.linspace(0.00085**0.5, 0.012**0.5, 1000, dtype=torch.float64) ** 2
        alphas_cumprod = torch.cumprod(1.0 - betas, dim=0)
        sigmas = ((1.0 - alphas_cumprod) / alphas_cumprod).sqrt()
        self.log_sigmas = sigmas.log().float()
        self.sigma_min = float(sigmas[0])
        self.sigma_max = float(sigmas[-1])
        self.rows = 0

    def sigma_to_t(self, sigma: torch.Tensor) -> torch.Tensor:
        """Fractional timestep whose sigma is `sigma` (linear in log sigma between table entries)."""
        table = self.log_sigmas.to(sigma.device)
        log_sigma = sigma.float().log()
        high = torch.searchsorted(table, log_sigma).clamp(1, len(table) - 1)
        low = high - 1
        w = ((log_sigma - table[low]) / (table[high] - table[low])).clamp(0.0, 1.0)
        return low.float() + w

    @torch.no_grad()
    def __call__(
        self,
        x: torch.Tensor,
        sigma: torch.Tensor,
        cond: torch.Tensor,
        uncond: torch.Tensor,
        cond_scale: float = 7.0,
        **_unused: Any,
    ) -> torch.Tensor:
        n = x.shape[0]
        self.rows += n
        c_in = (sigma.float() ** 2 + 1.0).rsqrt()[:, None, None, None]
        x_in = (x * c_in).to(self.dtype).repeat(2, 1, 1, 1)
        t = self.sigma_to_t(sigma).repeat(2)
        context = torch.cat([cond, uncond]).to(self.dtype)
        eps_cond, eps_uncond = self.unet(x_in, t, context).float().chunk(2)
        eps = eps_uncond + cond_scale * (eps_cond - eps_uncond)
        return x - eps * sigma.float()[:, None, None, None]
