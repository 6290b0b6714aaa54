"""The observer of LDR-ꟻLIP: pixels per degree, the paper's constants, and the filters and colour
matrices built from them once per (ppd, device, dtype).

Everything here follows the reference C++ implementation (flip-evaluator) exactly, float32
rounding of the filter radii included; lib_pinning.objectives.flip applies them to images.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np
import torch

PI32 = np.float32(3.14159265358979)  # the reference's pi, a float32


def pixels_per_degree(distance_m: float, resolution_x: float, monitor_width_m: float) -> float:
    """Pixels per degree of visual angle for a viewer `distance_m` from a monitor `monitor_width_m`
    wide showing `resolution_x` pixels across, as the reference computes it: in float32, with its
    float32 pi, so the default below is bit for bit the reference's."""
    f32 = np.float32
    ppd = f32(distance_m) * (f32(resolution_x) / f32(monitor_width_m)) * (PI32 / f32(180.0))
    return float(ppd)


DEFAULT_PPD = pixels_per_degree(0.7, 3840, 0.7)
"""Pixels per degree of the reference's default observer: 0.7 m from a 0.7 m wide monitor with
3840 pixels across (flip-evaluator's default, 67.02064514160156; often rounded to 67 in its docs)."""

# LDR-FLIP constants (FLIP paper, table 1).
QC = 0.7  # exponent of the HyAB distance
PC = 0.4  # fraction of the maximum distance where the error redistribution changes slope
PT = 0.95  # error assigned at that point
GW = 0.082  # feature filter width in degrees
# q_f, the exponent of the feature difference, is 0.5: applied as a square root in `_error_block`.

# CSF Gaussians per YCxCz channel, in the paper's a * sqrt(pi / b) * exp(-pi^2 x^2 / b) form.
# Y and Cx are one Gaussian each; Cz is the sum of two.
_CSF_A1 = (1.0, 1.0, 34.1)
_CSF_B1 = (0.0047, 0.0053, 0.04)
_CSF_A2 = (0.0, 0.0, 13.5)
_CSF_B2 = (1.0e-5, 1.0e-5, 0.025)

# D65 white point, and linear sRGB <-> XYZ, with the reference's exact coefficients.
_ILLUMINANT = (0.950428545, 1.000000000, 1.088900371)
_INV_ILLUMINANT = (1.052156925, 1.000000000, 0.918357670)
_RGB_TO_XYZ = (
    (10135552.0 / 24577794.0, 8788810.0 / 24577794.0, 4435075.0 / 24577794.0),
    (2613072.0 / 12288897.0, 8788810.0 / 12288897.0, 887015.0 / 12288897.0),
    (1425312.0 / 73733382.0, 8788810.0 / 73733382.0, 70074185.0 / 73733382.0),
)
_XYZ_TO_RGB = (
    (3.241003275, -1.537398934, -0.498615861),
    (-0.969224334, 1.875930071, 0.041554224),
    (0.055639423, -0.204011202, 1.057148933),
)


def check_ppd(ppd: float) -> float:
    ppd = float(ppd)
    if not math.isfinite(ppd) or ppd <= 0:
        raise ValueError(f"ppd (pixels per degree) must be a positive number, got {ppd}")
    return ppd


# ----------------------------------------------------------------------------------------------
# Filters (built once per (ppd, device, dtype))
# ----------------------------------------------------------------------------------------------


def _spatial_radius(ppd: float) -> int:
    # float32 arithmetic as in the reference, so the radius rounds the same way at every ppd.
    f32 = np.float32
    max_b = f32(max(_CSF_B1 + _CSF_B2))
    r = f32(3.0) * np.sqrt(max_b / (f32(2.0) * PI32 * PI32)) * f32(ppd)
    return int(math.ceil(float(r)))


def _feature_std_radius(ppd: float) -> tuple[float, int]:
    std = np.float32(0.5) * np.float32(GW) * np.float32(ppd)
    return float(std), int(math.ceil(float(np.float32(3.0) * std)))


def _spatial_taps(ppd: float) -> np.ndarray:
    """1-D taps [4, K] applied along x and again along y to the channels (Y, Cx, Cz, Cz).

    Y and Cx use one normalised Gaussian each.  The Cz CSF is a sum of two 2-D Gaussians; each is
    separated into a 1-D "square root" Gaussian and the two are normalised jointly, so that the
    two separable passes, summed, give a 2-D filter with unit sum (see misc/separatedConvolutions.pdf
    in NVlabs/flip).
    """
    radius = _spatial_radius(ppd)
    x = (np.arange(-radius, radius + 1, dtype=np.float64)) / ppd
    x2 = x * x
    pi = math.pi

    def gaussian(a: float, b: float) -> np.ndarray:
        return a * math.sqrt(pi / b) * np.exp(-pi * pi * x2 / b)

    def gaussian_sqrt(a: float, b: float) -> np.ndarray:
        return math.sqrt(a * math.sqrt(pi / b)) * np.exp(-pi * pi * x2 / b)

    g_y = gaussian(_CSF_A1[0], _CSF_B1[0])
    g_cx = gaussian(_CSF_A1[1], _CSF_B1[1])
    g_cz1 = gaussian_sqrt(_CSF_A1[2], _CSF_B1[2])
    g_cz2 = gaussian_sqrt(_CSF_A2[2], _CSF_B2[2])
    cz_norm = 1.0 / math.sqrt(g_cz1.sum() ** 2 + g_cz2.sum() ** 2)
    return np.stack([g_y / g_y.sum(), g_cx / g_cx.sum(), g_cz1 * cz_norm, g_cz2 * cz_norm])


def _feature_taps(ppd: float) -> np.ndarray:
    """1-D taps [3, K]: Gaussian (sum 1), first derivative and second derivative (positive and
    negative lobes each normalised to +1 and -1), as the reference builds them."""
    std, radius = _feature_std_radius(ppd)
    x = np.arange(-radius, radius + 1, dtype=np.float64)
    g = np.exp(-(x * x) / (2.0 * std * std))
    dg = -x * g
    ddg = (x * x / (std * std) - 1.0) * g

    def lobes(v: np.ndarray) -> np.ndarray:
        pos, neg = v[v > 0].sum(), -v[v < 0].sum()
        return np.where(v > 0, v / pos, v / neg)

    return np.stack([g / g.sum(), lobes(dg), lobes(ddg)])


def linear_maps() -> dict[str, np.ndarray]:
    """The colour conversions between nonlinear steps, folded into 3x3-ish matrices (float64).

    Every chain of the reference's per-pixel conversions between two nonlinearities is linear once
    the constant 16 of CIELAB lightness is kept out of it, so each becomes one small matrix product:

    * "opponent": linear RGB -> (Y+16, Cx, Cz, Cz, Yn, Yn, Yn, Yn).  YCxCz feeds the CSF filters (Cz
      twice, for its two separated Gaussians); the filters sum to one, so filtering Y+16 instead of
      Y changes nothing but the bookkeeping.  Yn = (Y + 16) / 116 is the luminance normalised to
      [0, 1] that the feature filters see, four times for (dG, ddG, G, G) along x;
    * "to_rgb": filtered (Y+16, Cx, Cz1, Cz2) -> XYZ -> linear RGB (Cz = Cz1 + Cz2);
    * "to_lab_input": linear RGB -> XYZ divided by the white point (the input of the cube root);
    * "to_lab": cube-rooted (X, Y, Z) -> (L+16, a, b).
    """
    rgb_to_xyz = np.array(_RGB_TO_XYZ)
    xyz_to_rgb = np.array(_XYZ_TO_RGB)
    ill, inv_ill = np.diag(_ILLUMINANT), np.diag(_INV_ILLUMINANT)
    lab_like = np.array([[0.0, 116.0, 0.0], [500.0, -500.0, 0.0], [0.0, 200.0, -200.0]])

    scaled = inv_ill @ rgb_to_xyz  # linear RGB -> XYZ / white
    ycxcz = lab_like @ scaled  # (Y + 16, Cx, Cz)
    opponent = np.concatenate([ycxcz[[0, 1, 2, 2]], np.repeat(scaled[1:2], 4, axis=0)])
    # (Y+16, Cx, Cz1, Cz2) -> XYZ / white: y = (Y + 16) / 116, x = y + Cx / 500, z = y - Cz / 200.
    to_scaled = np.array(
        [
            [1 / 116, 1 / 500, 0.0, 0.0],
            [1 / 116, 0.0, 0.0, 0.0],
            [1 / 116, 0.0, -1 / 200, -1 / 200],
        ]
    )
    return {
        "opponent": opponent,
        "to_rgb": xyz_to_rgb @ ill @ to_scaled,
        "to_lab_input": scaled,
        "to_lab": lab_like,
    }


@dataclass(frozen=True)
class Filters:
    """Everything `prepare` needs for one (ppd, device, dtype), built once."""

    radius: int  # padding and half-width of the taps (the larger of the colour and feature radii)
    taps_x: torch.Tensor  # [8, 1, 1, K] depthwise weights along x for (Y, Cx, Cz, Cz, Yn x4)
    taps_y: torch.Tensor  # [8, 1, K, 1] along y for the 8 channels the x pass produced
    linear: dict[str, torch.Tensor]  # `linear_maps`, transposed for x[..., C] @ m


@functools.lru_cache(maxsize=16)
def build_filters(ppd: float, device: torch.device, dtype: torch.dtype) -> Filters:
    spatial, feature = _spatial_taps(ppd), _feature_taps(ppd)
    radius = max(spatial.shape[1], feature.shape[1]) // 2

    def widen(taps: np.ndarray) -> np.ndarray:
        # Zero taps at both ends: adds exact zeros, so a shorter filter computes the same values.
        extra = radius - taps.shape[1] // 2
        return np.pad(taps, ((0, 0), (extra, extra)))

    spatial, feature = widen(spatial), widen(feature)
    g, dg, ddg = feature
    # Along x the four Yn copies get (dG, ddG, G, G); along y those become
    # (G * dG_x, G * ddG_x, dG_y * G_x, ddG_y * G_x) = (dx, ddx, dy, ddy).
    taps_x = np.concatenate([spatial, np.stack([dg, ddg, g, g])])
    taps_y = np.concatenate([spatial, np.stack([g, g, dg, ddg])])
    k = taps_x.shape[1]

    def tensor(a: np.ndarray) -> torch.Tensor:
        return torch.as_tensor(a, dtype=dtype, device=device)

    return Filters(
        radius=radius,
        taps_x=tensor(taps_x).reshape(8, 1, 1, k).contiguous(),
        taps_y=tensor(taps_y).reshape(8, 1, k, 1).contiguous(),
        linear={name: tensor(m.T).contiguous() for name, m in linear_maps().items()},
    )
