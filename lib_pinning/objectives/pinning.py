"""Pinning losses: how much a batch of images varies, measured with FLIP over image pairs.

The original tool scored a batch by FLIP over *all* pairs of the target images and the batch's
images together, summarised as mean + std: low when every image looks like every other one and
like the targets.  The same summary is offered over two subsets of those pairs:

* ``all_pairs``       targets and candidates together, all i < j (the original's loss);
* ``variety``         pairs within the candidate batch only (no targets needed);
* ``target_distance`` candidate x target pairs only.

Pair indices count targets first, then the batch's images, as `Evaluation.pairs` documents.

Hyperbatch samplers grow a batch as a tree: images that split late share more denoising steps and
are expected to look more alike.  `LevelWeighting` (the original's "hyperbatch weights") groups
the candidate pairs by the depth K at which the two images diverged, summarises each group, and
weights the levels with one of the original's three formulas.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import numpy as np
import torch

from lib_pinning.objectives.base import Evaluation
from lib_pinning.objectives.flip import (
    DEFAULT_CHUNK_PIXELS,
    DEFAULT_PPD,
    FlipPrepared,
    check_images,
    pair_flip,
    prepare,
)

if TYPE_CHECKING:
    from lib_pinning.generator import Batch

logger = logging.getLogger(__name__)

PinningMode = Literal["all_pairs", "variety", "target_distance"]
PINNING_MODES: tuple[str, ...] = ("all_pairs", "variety", "target_distance")

LevelWeightType = Literal["Geometric", "Exponential", "Polynomial"]
LEVEL_WEIGHT_TYPES: tuple[str, ...] = ("Geometric", "Exponential", "Polynomial")

DepthSource = Callable[[int, int], int] | np.ndarray | torch.Tensor | Sequence[Sequence[int]]
"""Divergence depth of candidate images i < j (batch-local indices): a callable depth(i, j), such
as a hyperbatch growth plan's ``divergence_depth``, or a [B, B] matrix read at [i, j]."""


# ----------------------------------------------------------------------------------------------
# Summaries
# ----------------------------------------------------------------------------------------------


def _as_values(values: Sequence[float] | np.ndarray | torch.Tensor) -> np.ndarray:
    if isinstance(values, torch.Tensor):
        values = values.detach().cpu().numpy()
    arr = np.asarray(values, dtype=np.float64).reshape(-1)
    if arr.size == 0:
        raise ValueError("cannot summarise an empty set of pair values")
    if not np.all(np.isfinite(arr)):
        raise ValueError("pair values contain NaN or infinite entries")
    return arr


def mean_and_std(values: Sequence[float] | np.ndarray | torch.Tensor) -> tuple[float, float]:
    """Mean and population standard deviation (ddof=0, numpy's default, as the original used)."""
    arr = _as_values(values)
    return float(arr.mean()), float(arr.std())


def mean_plus_std(values: Sequence[float] | np.ndarray | torch.Tensor) -> float:
    """The original tool's summary of pair losses: mean + std (population std).

    The mean rewards images that are close on average; the std penalises a batch in which most
    pairs are close but a few are far apart (one outlier image), which the mean alone tolerates.
    """
    mean, std = mean_and_std(values)
    return mean + std


# ----------------------------------------------------------------------------------------------
# Hyperbatch level weighting
# ----------------------------------------------------------------------------------------------


def _level_weight(weight_type: str, x: float, k: int, scale: float) -> float:
    if weight_type == "Geometric":
        return x ** (scale / k)  # X ^ (scale / K)
    if weight_type == "Exponential":
        return x * (0.5 + scale) ** k  # X * (0.5 + scale) ^ K
    if weight_type == "Polynomial":
        return (1.0 + x) ** (scale * k)  # (1 + X) ^ (scale * K)
    raise ValueError(f"unknown level weight type {weight_type!r}; expected one of {LEVEL_WEIGHT_TYPES}")


def level_weighted_loss(
    values: Sequence[float] | np.ndarray | torch.Tensor,
    depths: Sequence[int] | np.ndarray | torch.Tensor,
    weight_type: str,
    scale: float,
) -> tuple[float, dict[int, float]]:
    """Combine pair values level by level, with the original tool's hyperbatch weights.

    depths[p] is the tree depth K >= 1 at which the two images of pair p diverged: K = 1 for a
    pair separated at the first split from the root, larger K for pairs that share more steps.
    Pairs are grouped by K, each group is summarised with `mean_plus_std` (X_K), and the levels are
    summed with one of

    * Geometric:   X_K ^ (scale / K)
    * Exponential: X_K * (0.5 + scale) ^ K
    * Polynomial:  (1 + X_K) ^ (scale * K)

    Returns (the sum over levels, {K: X_K}).
    """
    arr = _as_values(values)
    if isinstance(depths, torch.Tensor):
        depths = depths.detach().cpu().numpy()
    ks = np.asarray(depths).reshape(-1)
    if ks.shape[0] != arr.shape[0]:
        raise ValueError(f"got {arr.shape[0]} pair values but {ks.shape[0]} depths")
    if not np.all(np.equal(np.mod(ks, 1), 0)) or np.any(ks < 1):
        raise ValueError("depths must be integers >= 1 (K = 1 is the first split from the root)")
    scale = _check_scale(scale)
    if weight_type not in LEVEL_WEIGHT_TYPES:
        raise ValueError(f"unknown level weight type {weight_type!r}; expected one of {LEVEL_WEIGHT_TYPES}")
    ks = ks.astype(np.int64)
    levels = {int(k): mean_plus_std(arr[ks == k]) for k in np.unique(ks)}
    total = sum(_level_weight(weight_type, x, k, scale) for k, x in levels.items())
    return float(total), levels


def _check_scale(scale: float) -> float:
    scale = float(scale)
    if not math.isfinite(scale) or scale < 0:
        raise ValueError(f"level weight scale must be a finite number >= 0, got {scale}")
    return scale


@dataclass(frozen=True)
class LevelWeighting:
    """Settings of the hyperbatch level weighting (see `level_weighted_loss`)."""

    weight_type: LevelWeightType = "Geometric"
    scale: float = 1.0

    def __post_init__(self) -> None:
        if self.weight_type not in LEVEL_WEIGHT_TYPES:
            raise ValueError(
                f"unknown level weight type {self.weight_type!r}; expected one of {LEVEL_WEIGHT_TYPES}"
            )
        _check_scale(self.scale)

    def combine(
        self, values: Sequence[float] | np.ndarray | torch.Tensor, depths: Sequence[int] | np.ndarray
    ) -> tuple[float, dict[int, float]]:
        return level_weighted_loss(values, depths, self.weight_type, self.scale)


# ----------------------------------------------------------------------------------------------
# Pairs of a mode
# ----------------------------------------------------------------------------------------------


def pinning_pairs(n_targets: int, n_candidates: int, mode: str) -> np.ndarray:
    """The pairs a mode compares, as global indices (targets first): int64 [P, 2].

    Always i < j and in lexicographic order, so `all_pairs` lists the pairs in
    itertools.combinations order and the other modes are ordered subsets of it.
    """
    if mode not in PINNING_MODES:
        raise ValueError(f"unknown pinning mode {mode!r}; expected one of {PINNING_MODES}")
    n = n_targets + n_candidates
    i, j = np.triu_indices(n, k=1)
    if mode == "variety":
        keep = i >= n_targets
    elif mode == "target_distance":
        keep = (i < n_targets) & (j >= n_targets)
    else:
        keep = np.ones_like(i, dtype=bool)
    return np.stack([i[keep], j[keep]], axis=1).astype(np.int64)


def _depth_lookup(source: DepthSource) -> Callable[[int, int], int]:
    if callable(source):
        return source
    matrix = source.detach().cpu().numpy() if isinstance(source, torch.Tensor) else np.asarray(source)
    if matrix.ndim != 2 or matrix.shape[0] != matrix.shape[1]:
        raise ValueError(f"a depth matrix must be square [B, B], got shape {matrix.shape}")

    def lookup(i: int, j: int) -> int:
        return int(matrix[i, j])

    return lookup


# ----------------------------------------------------------------------------------------------
# The objective
# ----------------------------------------------------------------------------------------------


class PinningObjective:
    """FLIP pinning loss of a batch (lower is better), an `Objective`.

    targets: sRGB images [T, 3, H, W] in [0, 1] (or already `prepare`d); preprocessed once here.
        Required by ``all_pairs`` and ``target_distance``; ``variety`` does not compare them, but
        still counts them first in `Evaluation.pairs`, so indices mean the same in every mode.
    mode: one of `PINNING_MODES`.
    level_weighting: hyperbatch level weighting of the candidate pairs; used only when the
        divergence depths are known, from `depths` or else from ``batch.growth.divergence_depth``.
        In ``all_pairs`` mode the pairs that involve a target have no depth: they are summarised
        separately (mean + std) and added to the weighted candidate levels.
    depths: a fixed depth source for every batch (see `DepthSource`), overriding the batch's plan.
    device: where FLIP runs; defaults to the targets' device (CPU when there are no targets).
    """

    def __init__(
        self,
        targets: torch.Tensor | FlipPrepared | None = None,
        mode: str = "all_pairs",
        *,
        ppd: float = DEFAULT_PPD,
        level_weighting: LevelWeighting | None = None,
        depths: DepthSource | None = None,
        device: torch.device | str | None = None,
        chunk_pixels: int = DEFAULT_CHUNK_PIXELS,
    ) -> None:
        if mode not in PINNING_MODES:
            raise ValueError(f"unknown pinning mode {mode!r}; expected one of {PINNING_MODES}")
        has_targets = targets is not None and len(targets) > 0
        if mode != "variety" and not has_targets:
            raise ValueError(
                f"pinning mode {mode!r} compares against target images, but none were given "
                "(use mode 'variety' to score a batch on its own)"
            )
        if level_weighting is not None and mode == "target_distance":
            raise ValueError(
                "level weighting groups candidate pairs by divergence depth; mode 'target_distance' "
                "has no candidate pairs"
            )
        self.mode = mode
        self.name = f"flip_{mode}"
        self.ppd = float(ppd)
        self.level_weighting = level_weighting
        self.depths = depths
        self.chunk_pixels = chunk_pixels
        self.targets: FlipPrepared | None = None
        self._n_targets = len(targets) if targets is not None else 0
        self._target_pair_values: torch.Tensor | None = None
        self._warned_no_depths = False
        if has_targets and mode != "variety":
            if isinstance(targets, FlipPrepared):
                if targets.ppd != self.ppd:
                    raise ValueError(f"targets were prepared for ppd {targets.ppd}, not {self.ppd}")
                prepared = targets
            else:
                check_images(targets, "targets")
                prepared = prepare(targets, self.ppd)
            self.targets = prepared.to(device) if device is not None else prepared
        self.device = (
            torch.device(device)
            if device is not None
            else (self.targets.device if self.targets is not None else torch.device("cpu"))
        )
        if self.targets is not None and mode == "all_pairs":
            # Target x target pairs are the same for every batch: computed once.
            t_pairs = torch.triu_indices(len(self.targets), len(self.targets), offset=1).T
            self._target_pair_values = pair_flip(
                self.targets, self.targets, t_pairs, chunk_pixels=chunk_pixels
            ).cpu()

    @property
    def n_targets(self) -> int:
        """Targets counted in the pair indices (also in ``variety`` mode, which does not compare them)."""
        return self._n_targets

    def score(self, batch: Batch) -> Evaluation:
        """Score a generated batch; depths default to the batch's hyperbatch growth plan."""
        depths = self.depths
        if depths is None and batch.growth is not None and hasattr(batch.growth, "divergence_depth"):
            depths = batch.growth.divergence_depth
        return self.score_images(batch.images, depths=depths)

    def score_images(self, images: torch.Tensor, depths: DepthSource | None = None) -> Evaluation:
        """Score candidate images [B, 3, H, W] directly (no `Batch` needed)."""
        check_images(images, "batch images")
        n_t, n_c = self.n_targets, images.shape[0]
        if self.targets is not None and tuple(images.shape[2:]) != self.targets.size:
            raise ValueError(
                f"batch images are {images.shape[2]}x{images.shape[3]} but the targets are "
                f"{self.targets.size[0]}x{self.targets.size[1]}: FLIP compares images of the same size"
            )
        pairs = pinning_pairs(n_t, n_c, self.mode)
        if pairs.shape[0] == 0:
            raise ValueError(
                f"mode {self.mode!r} has no pairs to compare with {n_t} targets and {n_c} images "
                "(variety needs at least 2 images)"
            )
        candidates = prepare(images.to(self.device), self.ppd)
        values = self._pair_values(pairs, candidates)

        mean, std = mean_and_std(values)
        components = {"flip_mean": mean, "flip_std": std}
        value = mean + std
        depth_source = depths if depths is not None else self.depths
        if self.level_weighting is not None and depth_source is not None:
            value = self._level_weighted(pairs, values, depth_source, components)
        elif self.level_weighting is not None and not self._warned_no_depths:
            # Expected with a plain sampler (hyperbatch weights are on by default): nothing to weight by.
            logger.debug("level weighting is enabled but no divergence depths are known: using mean + std")
            self._warned_no_depths = True
        return Evaluation(
            value=float(value),
            components=components,
            pair_values=[float(v) for v in values],
            pairs=[(int(i), int(j)) for i, j in pairs],
        )

    def _pair_values(self, pairs: np.ndarray, candidates: FlipPrepared) -> np.ndarray:
        """FLIP of every pair, computed per kind (target-target cached) and put back in order."""
        n_t = self.n_targets
        values = np.empty(pairs.shape[0], dtype=np.float64)
        tt = pairs[:, 1] < n_t
        tc = (pairs[:, 0] < n_t) & (pairs[:, 1] >= n_t)
        cc = pairs[:, 0] >= n_t
        if tt.any():
            # all_pairs lists target pairs in the same (lexicographic) order as they were cached.
            assert self._target_pair_values is not None
            values[tt] = self._target_pair_values.double().numpy()
        if tc.any():
            assert self.targets is not None
            local = torch.from_numpy(pairs[tc] - np.array([0, n_t]))
            values[tc] = self._flip(self.targets, candidates, local)
        if cc.any():
            local = torch.from_numpy(pairs[cc] - n_t)
            values[cc] = self._flip(candidates, candidates, local)
        return values

    def _flip(self, a: FlipPrepared, b: FlipPrepared, pairs: torch.Tensor) -> np.ndarray:
        out = pair_flip(a, b, pairs, chunk_pixels=self.chunk_pixels)
        return out.double().cpu().numpy()

    def _level_weighted(
        self, pairs: np.ndarray, values: np.ndarray, depth_source: DepthSource, components: dict[str, float]
    ) -> float:
        assert self.level_weighting is not None
        n_t = self.n_targets
        cc = pairs[:, 0] >= n_t
        lookup = _depth_lookup(depth_source)
        ks = np.array([lookup(int(i) - n_t, int(j) - n_t) for i, j in pairs[cc]], dtype=np.int64)
        weighted, levels = self.level_weighting.combine(values[cc], ks)
        components["level_weighted"] = weighted
        for k, x in levels.items():
            components[f"level_{k}"] = x
        total = weighted
        if (~cc).any():
            target_part = mean_plus_std(values[~cc])
            components["target_pairs"] = target_part
            total += target_part
        return total
