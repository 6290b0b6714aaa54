"""The toy model's ten prototype images: 5 shapes x 5 colours on gradient backgrounds, drawn
procedurally (a pure function of the index and size, anti-aliased edges). The design and why each
attribute names exactly two prototypes: lib_pinning.toy's docstring."""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import torch

SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "ring", "cross")

# Saturated foreground colours, RGB in [0, 1]; chosen to stay apart from each other and from the
# muted backgrounds below.
COLOURS: dict[str, tuple[float, float, float]] = {
    "red": (0.88, 0.12, 0.12),
    "blue": (0.12, 0.32, 0.92),
    "green": (0.10, 0.72, 0.22),
    "yellow": (0.96, 0.86, 0.12),
    "purple": (0.62, 0.18, 0.80),
}

# (shape index, colour index) of each prototype: the first five pair shape i with colour i, the last
# five with colour i + 2, so each attribute names exactly two prototypes.
_DESIGN: tuple[tuple[int, int], ...] = tuple((i, i) for i in range(5)) + tuple(
    (i, (i + 2) % 5) for i in range(5)
)

# Vertical gradient backgrounds (top colour, bottom colour), one per prototype: muted, distinct in
# brightness and tint so that prototypes sharing a shape or colour still differ everywhere.
_BACKGROUNDS: tuple[tuple[tuple[float, float, float], tuple[float, float, float]], ...] = (
    ((0.10, 0.10, 0.14), (0.30, 0.30, 0.36)),
    ((0.86, 0.84, 0.78), (0.62, 0.60, 0.56)),
    ((0.40, 0.26, 0.20), (0.20, 0.12, 0.10)),
    ((0.18, 0.30, 0.32), (0.36, 0.50, 0.50)),
    ((0.70, 0.70, 0.70), (0.92, 0.92, 0.92)),
    ((0.94, 0.90, 0.80), (0.80, 0.74, 0.60)),
    ((0.06, 0.06, 0.06), (0.16, 0.14, 0.12)),
    ((0.52, 0.56, 0.46), (0.32, 0.36, 0.28)),
    ((0.46, 0.40, 0.50), (0.66, 0.60, 0.70)),
    ((0.22, 0.20, 0.10), (0.46, 0.42, 0.26)),
)

# Width of the anti-aliased edge, in units of the half image size: a light smoothing that keeps
# shapes crisp at 64 px while giving FLIP and the denoiser no aliasing to latch onto.
_EDGE = 0.035


@dataclass(frozen=True)
class Prototype:
    """One mixture component's identity: its shape and colour words and its name."""

    shape: str
    colour: str

    @property
    def name(self) -> str:
        return f"{self.colour} {self.shape}"

    @property
    def attributes(self) -> tuple[str, str]:
        return (self.colour, self.shape)


PROTOTYPES: tuple[Prototype, ...] = tuple(
    Prototype(SHAPES[s], tuple(COLOURS)[c]) for s, c in _DESIGN
)
NUM_PROTOTYPES = len(PROTOTYPES)
ATTRIBUTE_WORDS: tuple[str, ...] = tuple(COLOURS) + SHAPES


def _shape_sdf(shape: str, y: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Signed distance (negative inside) to a centred shape; exact inside, a bound outside."""
    r = torch.sqrt(x * x + y * y)
    if shape == "circle":
        return r - 0.55
    if shape == "square":
        return torch.maximum(x.abs(), y.abs()) - 0.47
    if shape == "ring":
        return (r - 0.48).abs() - 0.14
    if shape == "cross":
        bar_h = torch.maximum(x.abs() - 0.62, y.abs() - 0.17)
        bar_v = torch.maximum(x.abs() - 0.17, y.abs() - 0.62)
        return torch.minimum(bar_h, bar_v)
    if shape == "triangle":
        # Apex up (rows grow downwards): apex (0, -0.62), base y = 0.48 from x = -0.64 to 0.64.
        ax, ay, bx, by = 0.0, -0.62, 0.64, 0.48
        nx, ny = by - ay, -(bx - ax)
        norm = math.hypot(nx, ny)
        right = (nx * (x - ax) + ny * (y - ay)) / norm
        left = (-nx * (x - ax) + ny * (y - ay)) / norm
        return torch.maximum(torch.maximum(right, left), y - by)
    raise ValueError(f"unknown shape {shape!r}")


def _grid(size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Pixel-centre coordinates (y, x) in [-1, 1] of a size x size image."""
    coords = (torch.arange(size, dtype=torch.float64) + 0.5) / size * 2.0 - 1.0
    y, x = torch.meshgrid(coords, coords, indexing="ij")
    return y, x


def shape_coverage(shape: str, size: int = 64) -> torch.Tensor:
    """How much of each pixel a toy shape covers, float64 [size, size] in [0, 1] (anti-aliased as
    the prototypes draw it): the toy tagger's shape templates."""
    y, x = _grid(size)
    return torch.sigmoid(-_shape_sdf(shape, y, x) / _EDGE)


def draw_prototype(index: int, size: int = 64) -> torch.Tensor:
    """Prototype `index` as float64 [3, size, size] in [-1, 1]; a pure function of its arguments."""
    proto = PROTOTYPES[index]
    y, _ = _grid(size)
    top, bottom = (torch.tensor(c, dtype=torch.float64).view(3, 1, 1) for c in _BACKGROUNDS[index])
    t = (y + 1.0) / 2.0
    background = top * (1.0 - t) + bottom * t
    fg = torch.tensor(COLOURS[proto.colour], dtype=torch.float64).view(3, 1, 1)
    coverage = shape_coverage(proto.shape, size)
    image = background * (1.0 - coverage) + fg * coverage
    return image * 2.0 - 1.0


@lru_cache(maxsize=8)
def prototype_stack(size: int) -> torch.Tensor:
    """All prototypes at `size`, float64 [10, 3, size, size] (cached: the denoiser reads them every call)."""
    return torch.stack([draw_prototype(i, size) for i in range(NUM_PROTOTYPES)])
