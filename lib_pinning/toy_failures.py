"""The toy model's failure modes (lib_pinning.toy): `FailureModes`, on by default
(`ToyConfig.failure_modes`).

A real checkpoint fails in two ways that a loss measuring only variety rewards, and the toy
reproduces both after sampling, as a function of the *effective emphasis weight*: the largest
weight the WebUI's emphasis parser gives any word of the prompt or the negative prompt (nesting
multiplies, as in the WebUI; the negative prompt counts because on SD it is the uncond, whose
over-emphasis fries just the same).

* Frying, from weight 1.5 (fry_onset) to 2.3 (fry_full). On SD 1.5, emphasis past about 1.4-1.5
  starts to burn the image (over-saturated, over-contrasted, detail melting into blotches); at 2
  the picture is mostly gone into a flat saturated colour that looks alike across seeds (SDXL and
  Pony models bear a little more). The toy blurs each image (Gaussian, up to 4 px at 64 px), draws
  it toward a saturated two-hue colour field (derived from the most emphasised word, so shared by
  every seed), then raises saturation and contrast, by a smoothstep amount of the weight: 0 at 1.5,
  0.16 at 1.65, 0.65 at 2.0, 1 from 2.3, where every seed gives the same colour field (variety 0).
  The demo's unbounded variety search (this project's defaults before weight bounds) proposes
  weights past 2.3 from about generation 6; its best had 2.4 and 3.1.
* NaN latents, from weight 3.0 (nan_onset; every image by 3.5, nan_full). Extreme emphasis
  overflows half-precision activations (the WebUI's NansException, or black images with
  --disable-nan-check); which images overflow depends on their noise, so a share of the batch
  rising linearly from 0 at 3.0 to 1 at 3.5 is NaN, each image's turn fixed by its seed. The
  decoder (`lib_pinning.toy.to_images`) renders NaN black, as the WebUI does with
  --disable-nan-check. Where a real checkpoint's NaN region starts depends on it and on the
  precision; the toy puts it past the frying, inside the range the old default search reaches, as
  the issue saw on a real WebUI.

Both are pure functions of (prompt, negative prompt, seeds, config): determinism is unchanged, and
the cost is one small blur per fried batch.
"""

from __future__ import annotations

import hashlib
import math
import struct
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING, Sequence

import torch

from lib_pinning.prompt import parse_prompt_attention
from lib_pinning.toy_words import words_of

if TYPE_CHECKING:
    # An annotation only: lib_pinning.toy imports this module, so a runtime import would be a cycle.
    from lib_pinning.toy import ToyConfig


def emphasis_peak(prompt: str, negative_prompt: str = "") -> tuple[float, str]:
    """The effective emphasis weight of a prompt pair and the word carrying it.

    The largest |weight| the WebUI's emphasis parser gives a piece with words, over the prompt and
    the negative prompt; (0.0, "") when neither has a word.
    """
    peak, word = 0.0, ""
    for text in (prompt, negative_prompt):
        if not text:
            continue
        for piece, weight in parse_prompt_attention(text):
            words = words_of(piece)
            if words and not (piece == "BREAK" and weight == -1) and abs(float(weight)) > peak:
                peak, word = abs(float(weight)), words[0]
    return peak, word


def _hash_unit(text: str) -> float:
    """A uniform value in [0, 1) from SHA-256 of `text`: stable across processes and platforms."""
    digest = hashlib.sha256(f"sd-prompt-pinning/toy-failure/{text}".encode("utf-8")).digest()
    return struct.unpack(">Q", digest[:8])[0] / 2.0**64


def _smoothstep(value: float, start: float, end: float) -> float:
    t = min(max((value - start) / (end - start), 0.0), 1.0)
    return t * t * (3.0 - 2.0 * t)


@lru_cache(maxsize=64)
def fry_field(word: str, size: int) -> torch.Tensor:
    """The colour field a fried image drifts to: float64 [3, size, size] in [-1, 1].

    A diagonal gradient between two neighbouring fully saturated hues (HSV S = V = 1, so two of
    the three channels sit at the ends of the range), the first hue derived from `word`.
    """
    hue = _hash_unit(f"hue/{word}")
    coords = (torch.arange(size, dtype=torch.float64) + 0.5) / size
    y, x = torch.meshgrid(coords, coords, indexing="ij")
    h = (hue + 0.2 * (x + y) / 2.0) % 1.0
    # HSV -> RGB with S = V = 1: channel n is clamp(|6h - k_n mod 6 - 3| - 1, 0, 1).
    channels = [(((h * 6.0 + offset) % 6.0) - 3.0).abs().sub(1.0).clamp(0.0, 1.0) for offset in (0.0, 4.0, 2.0)]
    return torch.stack(channels) * 2.0 - 1.0


def _gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of [n, 3, H, W] with reflected edges."""
    radius = min(int(math.ceil(3.0 * sigma)), x.shape[-1] // 2 - 1)
    if sigma < 0.3 or radius < 1:
        return x
    taps = torch.arange(-radius, radius + 1, dtype=x.dtype, device=x.device)
    kernel = torch.exp(-0.5 * (taps / sigma) ** 2)
    kernel = (kernel / kernel.sum()).view(1, 1, 1, -1).expand(3, 1, 1, -1)
    x = torch.nn.functional.pad(x, (radius, radius, 0, 0), mode="reflect")
    x = torch.nn.functional.conv2d(x, kernel, groups=3)
    x = torch.nn.functional.pad(x, (0, 0, radius, radius), mode="reflect")
    return torch.nn.functional.conv2d(x, kernel.transpose(-1, -2), groups=3)


_LUMA = (0.299, 0.587, 0.114)


@dataclass(frozen=True)
class FailureModes:
    """How a prompt pair fails on the toy model (module docstring: the thresholds and why).

    peak: the effective emphasis weight; word: the word carrying it (picks the colour field);
    fry: 0 (clean) to 1 (every image is the colour field); nan_share: the share of the batch whose
    latents come out NaN (image i is NaN when a uniform value fixed by its seed is below it).
    """

    peak: float
    word: str
    fry: float
    nan_share: float

    @classmethod
    def of(cls, config: ToyConfig, prompt: str, negative_prompt: str = "") -> FailureModes:
        peak, word = emphasis_peak(prompt, negative_prompt)
        if not config.failure_modes:
            return cls(peak, word, 0.0, 0.0)
        fry = _smoothstep(peak, config.fry_onset, config.fry_full)
        nan_share = min(max((peak - config.nan_onset) / (config.nan_full - config.nan_onset), 0.0), 1.0)
        return cls(peak, word, fry, nan_share)

    def apply(self, x: torch.Tensor, seeds: Sequence[int]) -> torch.Tensor:
        """Sampled data-space images [n, 3, H, W] (row i from seeds[i]) -> as this prompt fails."""
        if self.fry <= 0.0 and self.nan_share <= 0.0:
            return x
        if len(seeds) != x.shape[0]:
            raise ValueError(f"{x.shape[0]} images but {len(seeds)} seeds")
        out = x
        if self.fry > 0.0:
            s = self.fry
            size = x.shape[-1]
            blurred = _gaussian_blur(x, 4.0 * s * size / 64.0)
            field = fry_field(self.word, size).to(dtype=x.dtype, device=x.device)
            drifted = torch.lerp(blurred, field.expand_as(x), s)
            luma = sum(w * drifted[:, c : c + 1] for c, w in enumerate(_LUMA))
            saturated = luma + (1.0 + s) * (drifted - luma)
            out = (saturated * (1.0 + 0.5 * s)).clamp(-1.0, 1.0)
        if self.nan_share > 0.0:
            broken = torch.tensor([_hash_unit(f"nan/{int(seed)}") < self.nan_share for seed in seeds], device=x.device)
            out = torch.where(broken.view(-1, 1, 1, 1), torch.full_like(out, math.nan), out)
        return out
