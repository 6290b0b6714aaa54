"""Batched LDR-ꟻLIP in PyTorch.

ꟻLIP (Andersson et al., HPG 2020; NVlabs/flip) compares two images in two pipelines:

* colour: sRGB -> linear RGB -> YCxCz, filtered with contrast sensitivity functions (CSF) of the
  observer, back to linear RGB (clamped), -> CIELAB with the Hunt adjustment; per pixel the HyAB
  distance of the two filtered images, raised to q_c and redistributed onto [0, 1];
* features: edges (first derivative of a Gaussian) and points (second derivative) of the
  normalised luminance; per pixel the larger of the two feature differences.

The error map is ``colour ** (1 - feature)``.  Everything up to the HyAB distance and the feature
magnitudes depends on one image only, so this module splits the metric in two: `prepare` runs the
filters once per image, and `pair_flip` evaluates any list of (a, b) pairs with elementwise work only.
Pinning compares every image with every other (16 images -> 120 pairs), so this turns 240 filter
runs into 16.

The numbers follow the reference C++ implementation that ships as the ``flip-evaluator`` package
(``flip_evaluator.evaluate(ref, test, "LDR", parameters={"ppd": ...})``): the same constants,
filter construction (including the separated two-Gaussian Cz filter and the float32 radius
rounding), clamp-to-edge borders, and the order of colour conversions.  Measured against it
(tests/test_flip.py): error maps within 1e-5 per pixel on content with features (4.4e-6 at most
over 15 pairs of varied content at 1920x1080), means within 1e-5 of the mean of the reference's
map.  Where both images are flat the bound is 1e-4 (1.9e-5 measured): the feature difference is
then float32 rounding (~1e-8) in either implementation, and its square root (q_f = 0.5) in the
exponent of the colour error magnifies it; in float64 this module is exactly flat there, yet no
closer to the reference, whose own rounding sets that limit.  The reference's *returned* mean
adds the map into one float32 running sum, which drifts by up to ~2e-3 at 512x512 on high-error
pairs; the mean here is summed in float64 and is the more accurate of the two.  Both
implementations are symmetric in their two arguments (this one bit for bit).
"""

from __future__ import annotations

import functools
import logging
import math
from dataclasses import dataclass
from typing import Literal, overload

import numpy as np
import torch
import torch.nn.functional as F

from lib_pinning.objectives.flip_observer import (  # DEFAULT_PPD, pixels_per_degree: part of this module's API
    DEFAULT_PPD,
    PC,
    PT,
    QC,
    Filters,
    build_filters,
    check_ppd,
    linear_maps,
    pixels_per_degree,
)

__all__ = [
    "DEFAULT_PPD", "FlipPrepared", "all_pairs_flip", "check_images", "flip_mean", "pair_flip", "pixels_per_degree",
    "prepare", "upper_pairs",
]

logger = logging.getLogger(__name__)

RANGE_TOLERANCE = 1e-3
"""How far outside [0, 1] an input may stray (rounding in a VAE decode or a dtype cast) before
`check_images` refuses it; values within the tolerance are clamped, as the reference does."""

DEFAULT_BAND_PIXELS = 1 << 21
"""Output pixels (images x rows x width) that `prepare` filters per step.  Its temporaries take about
35 values per pixel (140 bytes in float32), so a step holds about 300 MB however large the images:
one 4096x4096 pair is filtered in bands of 256 rows instead of at once (which peaked at 7.4 GB).
Batches of up to four 512x512 images fit in one band, so the common case runs as before."""

DEFAULT_CHUNK_PIXELS = 1 << 18
"""Pair-pixels evaluated per step of `pair_flip`.  Small enough that the dozen temporaries of a step
stay in the CPU caches (measured fastest on a 2-core EPYC between 2**16 and 2**19) and that
memory stays bounded for any number of pairs; on CUDA a larger value lowers launch overhead."""

# ----------------------------------------------------------------------------------------------
# Input validation
# ----------------------------------------------------------------------------------------------


def check_images(images: torch.Tensor, name: str = "images") -> None:
    """Refuse inputs that the reference would silently mis-score.

    Accepts a float tensor [N, 3, H, W] (channels second, N >= 1) with finite values in [0, 1]
    (within `RANGE_TOLERANCE`).  The reference takes uint8 without dividing by 255 and reads a
    channels-first array as if it were channels-last, producing plausible but wrong numbers, so
    both are errors here rather than guesses.
    """
    if not isinstance(images, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor [N, 3, H, W], got {type(images).__name__}")
    if not images.dtype.is_floating_point:
        raise ValueError(
            f"{name} must be a floating-point tensor with values in [0, 1], got dtype {images.dtype}"
            + (" (divide 8-bit images by 255 first)" if images.dtype == torch.uint8 else "")
        )
    shape = tuple(images.shape)
    if images.ndim != 4:
        hint = " (a single image? add a batch dimension with x[None])" if images.ndim == 3 else ""
        raise ValueError(f"{name} must have shape [N, 3, H, W], got {images.ndim}-d shape {shape}{hint}")
    if shape[1] != 3:
        hint = " (looks channels-last [N, H, W, 3]: use x.permute(0, 3, 1, 2))" if shape[3] == 3 else ""
        raise ValueError(f"{name} must have shape [N, 3, H, W] (RGB channels second), got {shape}{hint}")
    if shape[0] == 0 or shape[2] == 0 or shape[3] == 0:
        raise ValueError(f"{name} must hold at least one image of at least 1x1 pixels, got {shape}")
    # One reduction pass: min and max propagate NaN, and infinities fall outside the range.
    lo_t, hi_t = torch.aminmax(images)
    lo, hi = float(lo_t), float(hi_t)
    if not (math.isfinite(lo) and math.isfinite(hi)):
        raise ValueError(f"{name} contains NaN or infinite values")
    if lo < -RANGE_TOLERANCE or hi > 1.0 + RANGE_TOLERANCE:
        raise ValueError(
            f"{name} must have values in [0, 1] (LDR sRGB), got range [{lo:.6g}, {hi:.6g}]"
            + (" (8-bit values? divide by 255)" if hi > 1.5 else "")
        )


def _compute_dtype(dtype: torch.dtype) -> torch.dtype:
    # float64 stays float64 (useful for checking precision); everything else computes in float32:
    # half-precision convolutions are slow on CPUs and lose the 1e-3 agreement.
    return torch.float64 if dtype == torch.float64 else torch.float32


def _padded_band(srgb: torch.Tensor, y0: int, y1: int, radius: int, dtype: torch.dtype) -> torch.Tensor:
    """Rows y0..y1 of srgb [n, 3, H, W] as `dtype`, clamped to [0, 1], with `radius` pixels of clamp-to-edge
    padding on every side: [n, 3, y1 - y0 + 2r, W + 2r].

    Replicating `radius` pixels and then running the two 1-D passes without padding is exactly the
    reference's ``x + i`` clamped to ``[0, w - 1]`` in each pass: a replicated row filtered
    horizontally equals the horizontally filtered edge row.  Rows beyond the band come from the
    image itself (clamped only at its true top and bottom), so a band's output equals the same rows
    of the whole image's.  Padding commutes with the per-pixel clamp and conversions, so it is done
    here, on the small 3-channel input.
    """
    h = srgb.shape[2]
    rows = torch.arange(y0 - radius, y1 + radius, device=srgb.device).clamp_(0, h - 1)
    # index_select copies, so the cast and the in-place clamp never touch the caller's tensor, and
    # only the band is ever cast.
    band = srgb.index_select(2, rows).to(dtype).clamp_(0.0, 1.0)
    return F.pad(band, (radius, radius, 0, 0), mode="replicate")


# ----------------------------------------------------------------------------------------------
# Colour conversions (channels last: [..., C])
# ----------------------------------------------------------------------------------------------


def _power(x: torch.Tensor, exponent: float | torch.Tensor) -> torch.Tensor:
    """x ** exponent for x >= 0 as exp2(exponent * log2(x)), in place on x.

    About twice as fast as torch.pow on CPUs (two vectorised transcendentals instead of pow's
    general path); 0 maps to 0 for a positive exponent, as pow does.
    """
    return x.log2_().mul_(exponent).exp2_()


def _srgb_to_linear(x: torch.Tensor) -> torch.Tensor:
    return torch.where(x <= 0.04045, x * (1.0 / 12.92), _power((x + 0.055) * (1.0 / 1.055), 2.4))


def _lab_from_scaled(scaled: torch.Tensor, to_lab: torch.Tensor) -> torch.Tensor:
    """XYZ / white [..., 3] -> Hunt-adjusted CIELAB [..., 3]."""
    delta = 6.0 / 29.0
    f = torch.where(
        scaled > delta**3,
        _power(scaled.clamp_min(0.0), 1.0 / 3.0),
        scaled * (1.0 / (3.0 * delta * delta)) + 4.0 / 29.0,
    )
    lab = _linear(f, to_lab)
    lab[..., 0] -= 16.0
    # Hunt adjustment: chroma scaled by lightness, as dark colours are harder to tell apart.
    lab[..., 1:3] *= 0.01 * lab[..., 0:1]
    return lab


def _linear(x: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    """x [..., C] @ m [C, K], per pixel."""
    return torch.mm(x.reshape(-1, x.shape[-1]), m).reshape(*x.shape[:-1], m.shape[1])


@functools.cache
def _redistribution() -> tuple[float, float, float]:
    """(k_low, k_high, offset) of the error redistribution.

    The reference maps the HyAB distance d (already raised to q_c) with ``d * pt / pccmax`` below
    ``pccmax = pc * cmax`` and linearly onto (pt, 1] above; cmax is the distance between pure green
    and pure blue.  The map is continuous and concave (the first slope is the steeper), so it equals
    ``min(k_low * d, k_high * d + offset)``: three elementwise operations and no branch.
    """
    maps = linear_maps()
    to_lab = torch.tensor(maps["to_lab"].T, dtype=torch.float64)
    green, blue = (
        _lab_from_scaled(
            torch.tensor(maps["to_lab_input"] @ np.array(rgb), dtype=torch.float64)[None], to_lab
        )[0]
        for rgb in ((0.0, 1.0, 0.0), (0.0, 0.0, 1.0))
    )
    hyab = abs(float(green[0] - blue[0])) + math.hypot(float(green[1] - blue[1]), float(green[2] - blue[2]))
    cmax = hyab**QC
    pccmax = PC * cmax
    k_low = PT / pccmax
    k_high = (1.0 - PT) / (cmax - pccmax)
    return k_low, k_high, PT - k_high * pccmax


# ----------------------------------------------------------------------------------------------
# Per-image preprocessing
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FlipPrepared:
    """The per-image half of LDR-FLIP for N images of one size.

    lab: [N, 3, H, W] CSF-filtered colour in Hunt-adjusted CIELAB (L, 0.01*L*a, 0.01*L*b).
    features: [N, 2, H, W] edge and point magnitudes, already divided by sqrt(2) (the reference's
        normalisation of the feature difference), so a pair needs only |f_a - f_b|.
    ppd: the observer the filters were built for; only sets of the same ppd can be compared.
    """

    lab: torch.Tensor
    features: torch.Tensor
    ppd: float

    def __len__(self) -> int:
        return self.lab.shape[0]

    @property
    def size(self) -> tuple[int, int]:
        """(H, W)."""
        return int(self.lab.shape[2]), int(self.lab.shape[3])

    @property
    def device(self) -> torch.device:
        return self.lab.device

    def select(self, index: torch.Tensor | list[int] | slice) -> FlipPrepared:
        """A subset (for instance the images of one individual)."""
        return FlipPrepared(self.lab[index], self.features[index], self.ppd)

    def to(self, device: torch.device | str) -> FlipPrepared:
        return FlipPrepared(self.lab.to(device), self.features.to(device), self.ppd)

    @staticmethod
    def cat(parts: list[FlipPrepared]) -> FlipPrepared:
        """Concatenate prepared sets (same size, ppd, device) in order."""
        if not parts:
            raise ValueError("FlipPrepared.cat needs at least one set")
        _check_compatible(parts[0], *parts[1:])
        return FlipPrepared(
            torch.cat([p.lab for p in parts]), torch.cat([p.features for p in parts]), parts[0].ppd
        )


def _check_compatible(first: FlipPrepared, *others: FlipPrepared) -> None:
    for other in others:
        if other.size != first.size:
            raise ValueError(
                f"image sizes differ: {first.size[0]}x{first.size[1]} vs {other.size[0]}x{other.size[1]} "
                "(FLIP compares images of the same size)"
            )
        if other.ppd != first.ppd:
            raise ValueError(f"prepared with different ppd: {first.ppd} vs {other.ppd}")
        if other.device != first.device:
            raise ValueError(f"prepared on different devices: {first.device} vs {other.device}")


def prepare(
    images: torch.Tensor,
    ppd: float = DEFAULT_PPD,
    *,
    batch_size: int = 4,
    band_pixels: int = DEFAULT_BAND_PIXELS,
) -> FlipPrepared:
    """Run the per-image part of LDR-FLIP on sRGB images [N, 3, H, W] in [0, 1].

    Runs on the images' device, in float32 (float64 inputs stay float64).  Up to `batch_size`
    images are filtered at a time, in bands of rows holding at most `band_pixels` output pixels
    (at least one row), which bounds the intermediates (about 35 values per pixel) for any image
    size; the results do not depend on either beyond rounding.  Memory is then about the result
    (5 values per pixel) plus one band.
    """
    check_images(images)
    ppd = check_ppd(ppd)
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if band_pixels < 1:
        raise ValueError(f"band_pixels must be >= 1, got {band_pixels}")
    dtype = _compute_dtype(images.dtype)
    filters = build_filters(ppd, images.device, dtype)
    n, _, h, w = images.shape
    lab = torch.empty((n, 3, h, w), dtype=dtype, device=images.device)
    features = torch.empty((n, 2, h, w), dtype=dtype, device=images.device)
    with torch.no_grad():
        for start in range(0, n, batch_size):
            stop = min(n, start + batch_size)
            batch = images[start:stop]
            rows = max(1, band_pixels // ((stop - start) * w))
            for y0 in range(0, h, rows):
                y1 = min(h, y0 + rows)
                padded = _padded_band(batch, y0, y1, filters.radius, dtype)
                _prepare_batch(padded, filters, lab[start:stop, :, y0:y1], features[start:stop, :, y0:y1])
    return FlipPrepared(lab, features, ppd)


def _prepare_batch(
    padded: torch.Tensor, filters: Filters, lab_out: torch.Tensor, features_out: torch.Tensor
) -> None:
    """Fill lab_out [n, 3, h, W] and features_out [n, 2, h, W] from the clamped, padded sRGB band
    padded [n, 3, h + 2r, W + 2r] (see `_padded_band`)."""
    # The reference converts sRGB to linear first and clamps after; the transfer function is
    # monotone with fixed points 0 and 1, so clamping first gives the same values.
    linear = _srgb_to_linear(padded.permute(0, 2, 3, 1).contiguous())  # [n, hp, Wp, 3]

    # All eight filter inputs in one product, kept channels-last: depthwise convolutions are
    # several times faster in that layout on CPUs.
    opponent = _linear(linear, filters.linear["opponent"]).permute(0, 3, 1, 2)
    del linear
    along_x = F.conv2d(opponent, filters.taps_x, groups=8)
    del opponent
    filtered = F.conv2d(along_x, filters.taps_y, groups=8).permute(0, 2, 3, 1)  # [n, h, W, 8]
    del along_x

    # Colour pipeline: filtered YCxCz -> linear RGB (clamped, as the reference does) -> CIELAB.
    rgb = _linear(filtered[..., 0:4], filters.linear["to_rgb"]).clamp_(0.0, 1.0)
    lab = _lab_from_scaled(_linear(rgb, filters.linear["to_lab_input"]), filters.linear["to_lab"])
    lab_out.copy_(lab.permute(0, 3, 1, 2))

    # Feature pipeline: edge = |(dx, dy)|, point = |(ddx, ddy)| of the normalised luminance.
    torch.hypot(filtered[..., 4], filtered[..., 6], out=features_out[:, 0])
    torch.hypot(filtered[..., 5], filtered[..., 7], out=features_out[:, 1])
    features_out.mul_(1.0 / math.sqrt(2.0))


# ----------------------------------------------------------------------------------------------
# Per-pair evaluation
# ----------------------------------------------------------------------------------------------


def _error_block(
    lab_a: torch.Tensor, lab_b: torch.Tensor, feat_a: torch.Tensor, feat_b: torch.Tensor
) -> torch.Tensor:
    """FLIP error of aligned pixel blocks: lab [P, 3, n], features [P, 2, n] -> [P, n].

    The inputs may be views of the prepared tensors: they are only read.
    """
    k_low, k_high, offset = _redistribution()
    diff = torch.sub(lab_a, lab_b)
    colour = torch.hypot(diff[:, 1], diff[:, 2]).add_(diff[:, 0].abs_())  # HyAB
    colour = _power(colour, QC)
    low = colour * k_low
    colour.mul_(k_high).add_(offset)
    colour = torch.minimum(low, colour, out=low)
    fdiff = torch.sub(feat_a, feat_b).abs_()
    feature = torch.maximum(fdiff[:, 0], fdiff[:, 1])
    # 1 - feature ** q_f with q_f = 0.5.
    exponent = feature.sqrt_().neg_().add_(1.0)
    # colour ** exponent; pow(0, 0) is 1 in the reference, exp2(0 * -inf) is NaN here.
    return _power(colour, exponent).nan_to_num_(nan=1.0)


def _as_pairs(
    pairs: torch.Tensor | list[tuple[int, int]], n_a: int, n_b: int, device: torch.device
) -> torch.Tensor:
    p = torch.as_tensor(pairs, dtype=torch.long)
    if p.numel() == 0:
        return torch.zeros((0, 2), dtype=torch.long, device=device)
    if p.ndim != 2 or p.shape[1] != 2:
        raise ValueError(f"pairs must have shape [P, 2], got {tuple(p.shape)}")
    if int(p[:, 0].min()) < 0 or int(p[:, 0].max()) >= n_a:
        raise ValueError(f"pairs[:, 0] must index the first set (0..{n_a - 1})")
    if int(p[:, 1].min()) < 0 or int(p[:, 1].max()) >= n_b:
        raise ValueError(f"pairs[:, 1] must index the second set (0..{n_b - 1})")
    return p.to(device)


def _as_mask(
    mask: torch.Tensor, n_pairs: int, size: tuple[int, int], device: torch.device, dtype: torch.dtype
) -> torch.Tensor:
    if not isinstance(mask, torch.Tensor) or not mask.dtype.is_floating_point:
        raise ValueError("mask must be a floating-point tensor [P or 1, H, W] of weights in [0, 1]")
    m = mask if mask.ndim == 3 else mask[None] if mask.ndim == 2 else None
    if m is None or tuple(m.shape[1:]) != size or m.shape[0] not in (1, n_pairs):
        raise ValueError(
            f"mask must have shape [{n_pairs} or 1, {size[0]}, {size[1]}] or [{size[0]}, {size[1]}], "
            f"got {tuple(mask.shape)}"
        )
    if not bool(torch.isfinite(m).all()) or float(m.min()) < 0.0 or float(m.max()) > 1.0:
        raise ValueError("mask values must be finite weights in [0, 1]")
    m = m.to(device=device, dtype=dtype).reshape(m.shape[0], -1)
    if bool((m.sum(dim=1) <= 0).any()):
        raise ValueError("mask has zero total weight for some pair: the masked mean is undefined")
    return m


@overload
def pair_flip(
    a: FlipPrepared,
    b: FlipPrepared,
    pairs: torch.Tensor | list[tuple[int, int]],
    *,
    error_maps: Literal[False] = ...,
    mask: torch.Tensor | None = ...,
    chunk_pixels: int = ...,
) -> torch.Tensor: ...


@overload
def pair_flip(
    a: FlipPrepared,
    b: FlipPrepared,
    pairs: torch.Tensor | list[tuple[int, int]],
    *,
    error_maps: Literal[True],
    mask: torch.Tensor | None = ...,
    chunk_pixels: int = ...,
) -> tuple[torch.Tensor, torch.Tensor]: ...


def pair_flip(
    a: FlipPrepared,
    b: FlipPrepared,
    pairs: torch.Tensor | list[tuple[int, int]],
    *,
    error_maps: bool = False,
    mask: torch.Tensor | None = None,
    chunk_pixels: int = DEFAULT_CHUNK_PIXELS,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Mean FLIP error of each pair (a[i], b[j]) for rows (i, j) of `pairs` [P, 2].

    a is the reference and b the test image in the reference's terms (LDR-FLIP is symmetric).
    mask: optional pixel weights in [0, 1], [P, H, W], [1, H, W] or [H, W]; the result is then
        sum(mask * error) / sum(mask) per pair.
    error_maps: also return the per-pixel errors [P, H, W] (P*H*W values: use for few pairs).
    chunk_pixels: pair-pixels per step; bounds memory for any number of pairs.  Results do not
        depend on it beyond rounding (an ulp where a vectorised loop's scalar tail moves).

    Returns means [P] in the prepared dtype, and the maps if asked for.
    """
    _check_compatible(a, b)
    if chunk_pixels < 1:
        raise ValueError(f"chunk_pixels must be >= 1, got {chunk_pixels}")
    device, dtype = a.device, a.lab.dtype
    idx = _as_pairs(pairs, len(a), len(b), device)
    n_pairs = idx.shape[0]
    h, w = a.size
    hw = h * w
    weights = None if mask is None else _as_mask(mask, n_pairs, (h, w), device, dtype)

    lab_a, lab_b = a.lab.reshape(len(a), 3, hw), b.lab.reshape(len(b), 3, hw)
    feat_a, feat_b = a.features.reshape(len(a), 2, hw), b.features.reshape(len(b), 2, hw)
    sums = torch.zeros(n_pairs, dtype=torch.float64, device=device)
    maps = torch.empty((n_pairs, hw), dtype=dtype, device=device) if error_maps else None

    pairs_per_step = max(1, chunk_pixels // hw)
    pixels_per_step = min(hw, chunk_pixels)
    with torch.no_grad():
        for p0 in range(0, n_pairs, pairs_per_step):
            p1 = min(n_pairs, p0 + pairs_per_step)
            if p1 - p0 == 1:
                # Large images: one pair per step, read through views (no gather copies).
                i, j = int(idx[p0, 0]), int(idx[p0, 1])
                la, lb, fa, fb = lab_a[i : i + 1], lab_b[j : j + 1], feat_a[i : i + 1], feat_b[j : j + 1]
            else:
                ia, ib = idx[p0:p1, 0], idx[p0:p1, 1]
                la, lb = lab_a.index_select(0, ia), lab_b.index_select(0, ib)
                fa, fb = feat_a.index_select(0, ia), feat_b.index_select(0, ib)
            for s0 in range(0, hw, pixels_per_step):
                s1 = min(hw, s0 + pixels_per_step)
                err = _error_block(la[:, :, s0:s1], lb[:, :, s0:s1], fa[:, :, s0:s1], fb[:, :, s0:s1])
                if maps is not None:
                    maps[p0:p1, s0:s1] = err
                if weights is not None:
                    wblock = weights[:, s0:s1] if weights.shape[0] == 1 else weights[p0:p1, s0:s1]
                    err = err.mul_(wblock)
                sums[p0:p1] += err.sum(dim=1, dtype=torch.float64)
    denom = float(hw) if weights is None else weights.sum(dim=1, dtype=torch.float64)
    means = (sums / denom).to(dtype)
    if maps is not None:
        return means, maps.reshape(n_pairs, h, w)
    return means


# ----------------------------------------------------------------------------------------------
# Conveniences
# ----------------------------------------------------------------------------------------------


def upper_pairs(n: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """All (i, j) with i < j < n, in itertools.combinations order: [n*(n-1)/2, 2]."""
    return torch.triu_indices(n, n, offset=1, device=device).T.contiguous()


def flip_mean(reference: torch.Tensor, test: torch.Tensor, ppd: float = DEFAULT_PPD) -> torch.Tensor:
    """Mean FLIP of reference[k] vs test[k] for each k: [N, 3, H, W] x2 -> [N]."""
    check_images(reference, "reference")
    check_images(test, "test")
    if reference.shape != test.shape:
        raise ValueError(
            "reference and test must have the same shape, "
            f"got {tuple(reference.shape)} vs {tuple(test.shape)}"
        )
    # Two prepared sets rather than one of the concatenated inputs: no copy of the images.
    a, b = prepare(reference, ppd), prepare(test, ppd)
    k = torch.arange(reference.shape[0], device=a.device)
    return pair_flip(a, b, torch.stack([k, k], dim=1))


def all_pairs_flip(
    images: torch.Tensor | FlipPrepared, ppd: float = DEFAULT_PPD
) -> tuple[torch.Tensor, torch.Tensor]:
    """FLIP over all pairs i < j of one set: (pairs [P, 2], means [P])."""
    prepared = images if isinstance(images, FlipPrepared) else prepare(images, ppd)
    pairs = upper_pairs(len(prepared), prepared.device)
    return pairs, pair_flip(prepared, prepared, pairs)
