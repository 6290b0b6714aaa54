"""What a hyperbatch measured: how much of a batch's variety appeared at each split level.

A hyperbatch grows its batch as a tree (1 -> 2 -> 4 ... -> B rows), so every pair of its images
parted at one split: the split level K of their last common ancestor (`GrowthPlan.divergence_depth`,
1 = the first split). Pairs that parted at an early split shared few steps and could still differ in
composition; pairs that parted at the last split shared most of the sampling and can only differ in
detail. Grouping the batch's FLIP pair values by K therefore says whether a batch varied in what it
shows or only in how: a loose prompt whose level-1 pairs differ no more than its last level's looks
pinned because its copies parted too late, not because the prompt holds the picture.

The values are the pair values the pinning objective already computed; nothing is compared again.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class LevelVariety:
    """The candidate pairs of one split level.

    level: K, the split at which the pair's images parted (1 = the first split from the root;
        0 only for images that never shared a row).
    step: the sampler step during which that split happened (0 for level 0), None if unknown.
    pairs: how many of the batch's image pairs parted there.
    pair_share: pairs / all the batch's image pairs.
    mean: the mean FLIP distance of those pairs (0 = identical images).
    variety_share: their part of the summed FLIP distance over all pairs: the share of the
        batch's variety that appeared at this level (0 for every level of identical images).
    """

    level: int
    step: int | None
    pairs: int
    pair_share: float
    mean: float
    variety_share: float

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> LevelVariety:
        step = data.get("step")
        return cls(
            level=int(data["level"]),
            step=None if step is None else int(step),
            pairs=int(data["pairs"]),
            pair_share=float(data["pair_share"]),
            mean=float(data["mean"]),
            variety_share=float(data["variety_share"]),
        )


def level_variety(
    values: Sequence[float] | np.ndarray,
    pairs: Sequence[tuple[int, int]] | np.ndarray,
    depth: Callable[[int, int], int],
    level_steps: Sequence[int] | None = None,
) -> list[LevelVariety]:
    """Group the FLIP values of image pairs by the split level at which the pair parted.

    values[p] is the FLIP distance of images pairs[p] = (i, j), batch-local indices; depth(i, j)
    their split level (a `GrowthPlan.divergence_depth`); level_steps[K] the step of split K
    (`GrowthPlan.level_start_steps`). Returns one entry per level present, root side first.
    """
    v = np.asarray(values, dtype=np.float64).reshape(-1)
    p = np.asarray(pairs, dtype=np.int64).reshape(-1, 2)
    if v.shape[0] != p.shape[0]:
        raise ValueError(f"got {v.shape[0]} pair values but {p.shape[0]} pairs")
    if v.size == 0:
        return []
    ks = np.array([depth(int(i), int(j)) for i, j in p], dtype=np.int64)
    total = float(v.sum())
    out = []
    for k in np.unique(ks):
        at = ks == k
        step = None if level_steps is None or k >= len(level_steps) else int(level_steps[k])
        out.append(
            LevelVariety(
                level=int(k),
                step=step,
                pairs=int(at.sum()),
                pair_share=float(at.sum() / ks.size),
                mean=float(v[at].mean()),
                variety_share=float(v[at].sum() / total) if total > 0 else 0.0,
            )
        )
    return out
