"""The Generator protocol: what the pinning loop needs from an image backend.

A backend turns (prompt, negative prompt, seeds) into a batch of images. Everything else about
generation (sampler, steps, size, cfg) is the backend's own configuration, fixed for a run: inside
the WebUI it comes from the user's `p`, for the toy model from `ToySettings`. The loop only varies
the prompts, and it always passes the same seeds (common random numbers), so fitness differences
between individuals come from the prompts and not from the noise.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol, runtime_checkable

import torch

if TYPE_CHECKING:
    from samplers.growth import GrowthPlan


@dataclass(frozen=True)
class GenerationRequest:
    """One individual's generation: the rendered prompts and the run's fixed seeds."""

    prompt: str
    negative_prompt: str
    seeds: tuple[int, ...]


@dataclass
class Batch:
    """A generated batch.

    images: float32 [B, 3, H, W] in [0, 1] on the CPU, row i generated from seeds[i].
    growth: the hyperbatch split tree (which image shares which steps), None for a plain sampler.
    model_rows: denoiser rows evaluated (a batch of n rows at one model call counts n): the cost
        measure hyperbatch sampling reduces.
    timings: seconds per phase, e.g. {"sample": 0.12, "decode": 0.01}.
    """

    images: torch.Tensor
    seeds: tuple[int, ...]
    growth: GrowthPlan | None = None
    model_rows: int = 0
    timings: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.images.ndim != 4 or self.images.shape[1] != 3:
            raise ValueError(f"Batch.images must be [B, 3, H, W], got {tuple(self.images.shape)}")
        if self.images.shape[0] != len(self.seeds):
            raise ValueError(
                f"Batch has {self.images.shape[0]} images but {len(self.seeds)} seeds"
            )

    def __len__(self) -> int:
        return self.images.shape[0]


@runtime_checkable
class Generator(Protocol):
    """An image backend. Implementations: ToyGenerator (here), WebUIGenerator (scripts/)."""

    def generate(self, request: GenerationRequest) -> Batch:
        """Generate one image per seed; must be deterministic in (prompts, seeds)."""
        ...

    def describe(self) -> dict[str, object]:
        """JSON-serialisable settings that produced the images (stored in run.json)."""
        ...
