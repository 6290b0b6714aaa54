"""What every objective returns, and the protocol objectives follow.

Objectives are built once per run with whatever they compare against already bound (target images,
tag embeddings, ...), so per-run work such as preprocessing the targets happens once, not per batch.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from lib_pinning.objectives.levels import LevelVariety

if TYPE_CHECKING:
    from lib_pinning.generator import Batch


@dataclass
class Evaluation:
    """The score of one batch.

    value: the scalar this objective contributes (lower is better: every objective is minimised).
    components: named parts of `value` for the report, e.g. {"flip_mean": 0.11, "flip_std": 0.03}.
    pair_values: per image pair losses (for the loss plots), with `pairs` naming the two images
        of each value; image indices count targets first, then the batch's images.
    per_image: named per-image values, e.g. {"aesthetic": [5.1, 6.0, ...]}.
    image_notes: named per-image texts the report shows under each image, e.g.
        {"top tags": ["1girl 0.98, smile 0.71", ...]}.
    levels: for a hyperbatch, the batch's pair values grouped by the split level at which each
        pair's images parted (`levels.level_variety`); empty for a plain batch.
    """

    value: float
    components: dict[str, float] = field(default_factory=dict)
    pair_values: list[float] = field(default_factory=list)
    pairs: list[tuple[int, int]] = field(default_factory=list)
    per_image: dict[str, list[float]] = field(default_factory=dict)
    image_notes: dict[str, list[str]] = field(default_factory=dict)
    levels: list[LevelVariety] = field(default_factory=list)

    def to_json(self) -> dict[str, object]:
        return {
            "value": self.value,
            "components": dict(self.components),
            "pair_values": list(self.pair_values),
            "pairs": [list(p) for p in self.pairs],
            "per_image": {k: list(v) for k, v in self.per_image.items()},
            "image_notes": {k: list(v) for k, v in self.image_notes.items()},
            "levels": [level.to_json() for level in self.levels],
        }

    @classmethod
    def from_json(cls, data: dict) -> Evaluation:
        return cls(
            value=float(data["value"]),
            components={k: float(v) for k, v in data.get("components", {}).items()},
            pair_values=[float(v) for v in data.get("pair_values", [])],
            pairs=[(int(a), int(b)) for a, b in data.get("pairs", [])],
            per_image={k: [float(x) for x in v] for k, v in data.get("per_image", {}).items()},
            image_notes={k: [str(x) for x in v] for k, v in data.get("image_notes", {}).items()},
            levels=[LevelVariety.from_json(level) for level in data.get("levels", [])],
        )


@runtime_checkable
class Objective(Protocol):
    """Scores a batch; lower is better."""

    name: str

    def score(self, batch: Batch) -> Evaluation:
        ...
