"""The degenerate-image guard: which images of a batch are broken, and why.

A loss that measures how alike a batch's images are rewards batches that failed in the same way:
four black images (NaN latents) are perfectly alike, and so are images fried by over-emphasis into
one flat saturated colour. Real checkpoints produce both in ordinary use (SDXL's VAE in half
precision, --disable-nan-check, weights past about 1.5 on SD 1.5). Every backend's batches go
through `inspect` before they are scored; the run penalises a batch with degenerate images so that
CMA-ES moves away, and never chooses one as its best (lib_pinning/tally.py).

The guard looks at one image at a time and never compares images: a pinned batch of near-identical
clean images is exactly what pinning is for and must pass. Reasons, in the order they are listed:

    nonfinite  the backend saw NaN or infinite latents or pixels (`Batch.nonfinite`, or non-finite
               values in the images themselves); the image is what the decoder made of them.
    black      99% of the pixels are darker than `black_level` in every channel (NaN decoded by the
               WebUI, a dead VAE). A night scene keeps its lights, moon or lit edges above it.
    flat       every channel's standard deviation is below `flat_std`: one colour with at most
               invisible variation (a grey or single-colour output). A gradient spanning 9/255 or
               more, or a single edge, is above the default.
    fried      mean saturation at least `fried_saturation`, at least half of the channel values
               clipped to 0 or 255, and no detail: the 99th percentile of the high-pass response
               below `fried_detail`. Over-emphasis burns an image into such a saturated, clipped,
               structureless colour field; a vivid photo keeps its edges, a smooth sunset gradient
               is rarely clipped that much, and a flat poster colour is caught only with no edge.

Statistics are taken on the image area-downsampled to at most 64 pixels on its long side, so the
thresholds mean the same at 64 px (the toy) and at 1024 px (SDXL), and a batch of large images
costs milliseconds. Setting a threshold to 0 switches its check off.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Mapping, Sequence

import torch

NONFINITE, BLACK, FLAT, FRIED = "nonfinite", "black", "flat", "fried"
REASONS: tuple[str, ...] = (NONFINITE, BLACK, FLAT, FRIED)

ANALYSIS_SIZE = 64
"""Long side, in pixels, of the downsampled image the statistics are taken on."""

FRIED_CLIPPED_SHARE = 0.5
"""Share of channel values at 0 or 255 (within 2/255) a fried image has at least."""

DEGENERATE_OFFSET = 1000.0
"""Fitness added to a batch with degenerate images, times (1 + their share).

Normalised objectives lie in about [0, weight] each (objectives/scale.py), so every clean batch of
any plausible configuration scores below 1000 and every degenerate one above it: CMA-ES ranks any
degenerate batch below any clean one, and among degenerate ones prefers fewer broken images. Far
below the failed-individual fitness (optimizer.FAILED_FITNESS, 1e6), which carries no information.
"""

MAJORITY = 0.5
"""A generation whose share of degenerate images is above this is reported as mostly degenerate."""


@dataclass(frozen=True)
class GuardThresholds:
    """The guard's thresholds (the "guard" options; module docstring: what each means)."""

    black_level: float = 0.03
    flat_std: float = 0.01
    fried_saturation: float = 0.8
    fried_detail: float = 0.06

    @classmethod
    def from_options(cls, options: Any) -> GuardThresholds:
        """From a PinningOptions (its guard_* fields)."""
        return cls(
            black_level=float(options.guard_black_level),
            flat_std=float(options.guard_flat_std),
            fried_saturation=float(options.guard_fried_saturation),
            fried_detail=float(options.guard_fried_detail),
        )


@dataclass(frozen=True)
class ImageStats:
    """What the guard measured on one image (all on [0, 1] pixel values at analysis size)."""

    level: float  # 99th percentile over pixels of the brightest channel
    std: float  # the largest per-channel standard deviation
    saturation: float  # mean HSV saturation
    clipped: float  # share of channel values within 2/255 of 0 or 1
    detail: float  # 99th percentile over pixels of |image - 3x3 box blur| (brightest channel)

    def reasons(self, thresholds: GuardThresholds) -> tuple[str, ...]:
        out = []
        if self.level < thresholds.black_level:
            out.append(BLACK)
        if self.std < thresholds.flat_std:
            out.append(FLAT)
        if (
            self.saturation >= thresholds.fried_saturation
            and self.clipped >= FRIED_CLIPPED_SHARE
            and self.detail < thresholds.fried_detail
        ):
            out.append(FRIED)
        return tuple(out)


@dataclass(frozen=True)
class GuardVerdict:
    """Per image of a batch: the reasons it is degenerate (empty: a valid image) and its statistics."""

    reasons: tuple[tuple[str, ...], ...]
    stats: tuple[ImageStats, ...]

    @property
    def degenerate(self) -> tuple[bool, ...]:
        return tuple(bool(r) for r in self.reasons)

    @property
    def count(self) -> int:
        return sum(self.degenerate)

    @property
    def share_degenerate(self) -> float:
        return self.count / len(self.reasons) if self.reasons else 0.0

    def reason_counts(self) -> dict[str, int]:
        """Images per reason, in REASONS order, reasons that occur only."""
        return summarize_reasons(self.reasons)

    def to_json(self, *, penalised: bool) -> dict[str, Any]:
        """The record's `guard` entry; penalised: whether the run acted on it (the guard option)."""
        return {
            "reasons": [list(r) for r in self.reasons],
            "share_degenerate": self.share_degenerate,
            "penalised": bool(penalised),
            "stats": [{k: round(v, 6) for k, v in asdict(s).items()} for s in self.stats],
        }


def penalty(share_degenerate: float) -> float:
    """What a batch's fitness gains for its share of degenerate images (0 for a clean batch)."""
    return 0.0 if share_degenerate <= 0 else DEGENERATE_OFFSET * (1.0 + float(share_degenerate))


def nonfinite_rows(values: torch.Tensor) -> torch.Tensor:
    """bool [B]: whether row b of `values` ([B, ...]) holds a NaN or an infinity.

    One pass: a row's float64 sum is finite exactly when all its values are, for any input of at
    most float32 range (its largest sum, 3.4e38 times the row's size, stays far below float64's
    1.8e308), while NaN and infinities propagate (inf - inf is NaN). isfinite().all() makes three
    passes and a full-size mask, a sixth of a toy batch's own work outside its model. float64
    input, whose sum could overflow, takes that path.
    """
    rows = values.flatten(1)
    if rows.dtype == torch.float64 or not rows.dtype.is_floating_point:
        return ~torch.isfinite(rows).all(dim=1)
    return ~torch.isfinite(rows.sum(dim=1, dtype=torch.float64))


def sanitize(images: torch.Tensor, nonfinite: Sequence[bool] | None = None) -> tuple[torch.Tensor, tuple[bool, ...]]:
    """Images with non-finite values rendered black, and per image whether it had any or the
    backend flagged it (`Batch.nonfinite`): scoring and saving then see what the WebUI would show."""
    bad = nonfinite_rows(images)
    flags = tuple(bool(b) or bool(nonfinite[i]) if nonfinite is not None else bool(b) for i, b in enumerate(bad))
    if bool(bad.any()):
        images = torch.nan_to_num(images, nan=0.0, posinf=1.0, neginf=0.0)
    return images, flags


def image_stats(images: torch.Tensor) -> list[ImageStats]:
    """The guard's statistics of finite images [B, 3, H, W] in [0, 1]."""
    x = images.detach().to(torch.float32).cpu()
    height, width = x.shape[-2:]
    scale = ANALYSIS_SIZE / max(height, width)
    if scale < 1.0:
        size = (max(1, round(height * scale)), max(1, round(width * scale)))
        x = torch.nn.functional.interpolate(x, size=size, mode="area")
    x = x.clamp(0.0, 1.0)  # after downsampling: the same for images in range, and 250x less work
    flat = x.flatten(2)  # [B, 3, P]
    brightest = flat.max(dim=1).values  # [B, P]
    darkest = flat.min(dim=1).values
    level = torch.quantile(brightest, 0.99, dim=1)
    std = flat.std(dim=2, unbiased=False).max(dim=1).values
    saturation = torch.where(brightest > 1e-6, (brightest - darkest) / brightest.clamp_min(1e-6), 0.0).mean(dim=1)
    edge = 2.0 / 255.0
    clipped = ((flat <= edge) | (flat >= 1.0 - edge)).float().mean(dim=(1, 2))
    padded = torch.nn.functional.pad(x, (1, 1, 1, 1), mode="replicate")
    high = (x - torch.nn.functional.avg_pool2d(padded, 3, stride=1)).abs().flatten(2).max(dim=1).values
    detail = torch.quantile(high, 0.99, dim=1)
    return [
        ImageStats(float(level[i]), float(std[i]), float(saturation[i]), float(clipped[i]), float(detail[i]))
        for i in range(x.shape[0])
    ]


def inspect(
    images: torch.Tensor,
    nonfinite: Sequence[bool] | None = None,
    thresholds: GuardThresholds | None = None,
) -> GuardVerdict:
    """The verdict on a batch [B, 3, H, W] in [0, 1] (non-finite values allowed: they count as
    `nonfinite` and are judged as the black they decode to)."""
    if images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"images must be [B, 3, H, W], got {tuple(images.shape)}")
    thresholds = thresholds or GuardThresholds()
    clean, flags = sanitize(images, nonfinite)
    stats = image_stats(clean)
    reasons = tuple(((NONFINITE,) if flag else ()) + s.reasons(thresholds) for flag, s in zip(flags, stats))
    return GuardVerdict(reasons=reasons, stats=tuple(stats))


def summarize_reasons(reasons: Sequence[Sequence[str]]) -> dict[str, int]:
    """Images per reason over per-image reason lists, in REASONS order."""
    return {r: n for r in REASONS if (n := sum(r in image for image in reasons))}


def describe(counts: Mapping[str, int], images: int) -> str:
    """E.g. "black 8/8" or "fried 5/8, flat 5/8"."""
    return ", ".join(f"{reason} {n}/{images}" for reason, n in counts.items())
