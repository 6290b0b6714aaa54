"""Pinning losses: how much a batch of images varies, measured with FLIP over image pairs.

The original tool scored a batch by FLIP over *all* pairs of the target images and the batch's
images together, summarised as mean + std: low when every image looks like every other one and
like the targets.  The same summary is offered over two subsets of those pairs:

* ``all_pairs``       targets and candidates together, all i < j (the original's loss);
* ``variety``         pairs within the candidate batch only (no targets needed);
* ``target_distance`` candidate x target pairs only.

The default, ``nearest_mode``, compares the batch with each target (without user targets: each
image of the baseline batch, the prompt as written) and asks two things (`nearest_mode_loss`):
do the batch's images all sit close to *one* of the targets (pinned to one of the prompt's own
pictures), and does each image look like *some* target (still shows what the prompt shows)?
Variety alone cannot tell a pinned batch from a collapsed one: four black images, or an
over-emphasised "fried" colour field shared by every seed, vary less than any real picture.

Pair indices count targets first, then the batch's images, as `Evaluation.pairs` documents.

Hyperbatch samplers grow a batch as a tree: images that split late share more denoising steps and
are expected to look more alike.  `LevelWeighting` (the original's "hyperbatch weights") groups
the candidate pairs by the depth K at which the two images diverged, summarises each group, and
weights the levels with one of the original's three formulas.  The original summed the weighted
levels, which leaves FLIP's [0, 1] range (three levels of a batch of 8 reach 2.5 with the
default Geometric weights); `normalised_level_loss` maps that sum back onto [0, 1] with an affine
map fixed by the levels present, so candidates rank exactly as under the original's sum.
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
from lib_pinning.objectives.levels import LevelVariety, level_variety
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
    from pinning_samplers import GrowthPlan

logger = logging.getLogger(__name__)

PinningMode = Literal["nearest_mode", "all_pairs", "variety", "target_distance"]
PINNING_MODES: tuple[str, ...] = ("nearest_mode", "all_pairs", "variety", "target_distance")

MODE_TEMPERATURE = 0.02
"""Softness (FLIP units) of the choice of the nearest target in `nearest_mode_loss`.  Targets whose
distance to the batch is within a few hundredths of the nearest share its weight: a baseline that
shows the same picture several times (the usual case) is one mode, not a coin toss between its
near-duplicates; a target 0.1 farther than the nearest gets under 1% of its weight."""

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


def normalised_level_loss(
    values: Sequence[float] | np.ndarray | torch.Tensor,
    depths: Sequence[int] | np.ndarray | torch.Tensor,
    weight_type: str,
    scale: float,
) -> tuple[float, float, dict[int, float]]:
    """`level_weighted_loss` mapped onto FLIP's scale: (normalised, the original's sum, {K: X_K}).

    The original's sum over levels is not on [0, 1]: three levels (a batch of 8) give up to 3 with
    Geometric weights, (0.5 + scale)^K grows with K, and Polynomial weights are at least 1 per
    level even for identical images.  With w_K the level's weight function,

        normalised = (sum_K w_K(X_K) - sum_K w_K(0)) / (sum_K w_K(1) - sum_K w_K(0))

    is 0 when every level's pairs are identical, 1 when every level sits at FLIP's worst, and an
    affine map of the original's sum (the levels present, hence both constants, are the same for
    every batch of a run), so candidates rank exactly as the original ranked them.  With scale 0,
    Geometric and Polynomial weights are 1 whatever X_K (the original's loss was then constant):
    the levels are averaged instead, each level counting once.
    """
    raw, levels = level_weighted_loss(values, depths, weight_type, scale)
    lo = sum(_level_weight(weight_type, 0.0, k, scale) for k in levels)
    hi = sum(_level_weight(weight_type, 1.0, k, scale) for k in levels)
    if hi - lo <= 1e-12:
        return float(np.mean(list(levels.values()))), raw, levels
    return float((raw - lo) / (hi - lo)), raw, levels


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
        """The original's sum over levels (not on FLIP's scale: see `normalised`)."""
        return level_weighted_loss(values, depths, self.weight_type, self.scale)

    def normalised(
        self, values: Sequence[float] | np.ndarray | torch.Tensor, depths: Sequence[int] | np.ndarray
    ) -> tuple[float, float, dict[int, float]]:
        """(normalised loss on [0, 1], the original's sum, {K: X_K}); see `normalised_level_loss`."""
        return normalised_level_loss(values, depths, self.weight_type, self.scale)


# ----------------------------------------------------------------------------------------------
# Nearest mode
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class NearestMode:
    """The parts of `nearest_mode_loss` (on FLIP's scale, lower is better)."""

    value: float  # (A + F) / 2
    mode_distance: float  # A: the batch's mean distance to its nearest target (softened)
    fidelity: float  # F: mean over images of each image's distance to its nearest target
    mode: int  # index of the nearest target: the picture the batch is pinned to
    target_weights: np.ndarray  # [T]: each target's softmin weight in A; sums to 1
    image_distance: np.ndarray  # [B]: each image's distance to its nearest target (F's terms)


def nearest_mode_loss(distances: np.ndarray | torch.Tensor, temperature: float = MODE_TEMPERATURE) -> NearestMode:
    """The ``nearest_mode`` loss from the FLIP distances D [T, B] of target j to image i.

        A_j  = mean_i D[j, i]                                the batch against target j
        A    = sum_j w_j A_j,  w = softmax(-A / temperature)  the batch against its nearest target
        F    = mean_i min_j D[j, i]                          each image against its nearest target
        loss = (A + F) / 2

    A is 0 only when every image equals one target: the batch is pinned to one of the prompt's own
    pictures.  It is a plain mean, not the mean + std of the other losses: with a share p of the
    images on target j's picture, the mean falls linearly in p, while mean + std stays at the full
    distance until half the batch has moved (a search would see no progress for the first half).

    Without user targets the targets are the baseline batch (the prompt as written, the same
    seeds), so F is 0 for the baseline itself and stays at the within-picture noise for any batch
    of the prompt's pictures; a black, flat or fried batch is as far from every target as from the
    nearest one.  A uniform junk batch at FLIP distance d from the nearest target scores d
    (A = F = d), the unpinned baseline A / 2: junk scores worse than the unpinned prompt whenever it
    is farther from the prompt's pictures than half the baseline's own spread, and far worse than
    a batch pinned to one of them (about the within-picture noise).  Variety alone scores junk 0.

    Both terms are means of FLIP values, so the loss lies in [0, 1]: 0 for copies of one target,
    1 for images at FLIP's maximum from every target.
    """
    d = distances.detach().cpu().numpy() if isinstance(distances, torch.Tensor) else np.asarray(distances)
    d = np.asarray(d, dtype=np.float64)
    if d.ndim != 2 or d.size == 0:
        raise ValueError(f"nearest_mode needs a non-empty [targets, images] distance matrix, got shape {d.shape}")
    if not np.all(np.isfinite(d)):
        raise ValueError("distances contain NaN or infinite entries")
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    per_target = d.mean(axis=1)
    weights = np.exp(-(per_target - per_target.min()) / temperature)
    weights /= weights.sum()
    mode_distance = float(weights @ per_target)
    image_distance = d.min(axis=0)
    fidelity = float(image_distance.mean())
    return NearestMode(
        value=0.5 * (mode_distance + fidelity),
        mode_distance=mode_distance,
        fidelity=fidelity,
        mode=int(per_target.argmin()),
        target_weights=weights,
        image_distance=image_distance,
    )


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
    elif mode == "nearest_mode":
        keep = j >= n_targets  # target x candidate, then candidate pairs: no target x target pairs
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
        Required by every mode but ``variety``, which does not compare them, but still counts
        them first in `Evaluation.pairs`, so indices mean the same in every mode.
    mode: one of `PINNING_MODES`.
    level_weighting: hyperbatch level weighting of the candidate pairs; used only when the
        divergence depths are known, from `depths` or else from ``batch.growth.divergence_depth``.
        The weighted levels are normalised onto FLIP's scale (`normalised_level_loss`). In
        ``all_pairs`` mode the pairs that involve a target have no depth: they are summarised
        separately (mean + std) and averaged with the weighted candidate levels by pair count.
        In ``nearest_mode`` only the reported ``variety`` component is weighted.
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
        """Score a generated batch; depths default to the batch's hyperbatch growth plan.

        A hyperbatch's evaluation also gets its variety per split level (`Evaluation.levels`) from
        the batch's own tree, never from `depths`: a plain batch weighted by a planned tree
        (`compose.PlannedTreeWeighting`) has independent images, which no level describes.
        """
        plan = batch.growth if batch.growth is not None and hasattr(batch.growth, "divergence_depth") else None
        depths = self.depths
        if depths is None and plan is not None:
            depths = plan.divergence_depth
        evaluation = self.score_images(batch.images, depths=depths)
        if plan is not None:
            evaluation.levels = self._levels(evaluation, plan)
        return evaluation

    def _levels(self, evaluation: Evaluation, plan: GrowthPlan) -> list[LevelVariety]:
        """The candidate pairs' values by split level (targets come first in `Evaluation.pairs`)."""
        n_t = self.n_targets
        local = [(i - n_t, j - n_t) for i, j in evaluation.pairs if i >= n_t]
        values = [v for (i, _), v in zip(evaluation.pairs, evaluation.pair_values) if i >= n_t]
        return level_variety(values, local, plan.divergence_depth, getattr(plan, "level_start_steps", None))

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
        per_image: dict[str, list[float]] = {}
        depth_source = depths if depths is not None else self.depths
        weighted = self.level_weighting is not None and depth_source is not None
        if self.level_weighting is not None and depth_source is None and not self._warned_no_depths:
            # Expected with a plain sampler (hyperbatch weights are on by default): nothing to weight by.
            logger.debug("level weighting is enabled but no divergence depths are known: using mean + std")
            self._warned_no_depths = True
        if self.mode == "nearest_mode":
            value = self._nearest_mode(pairs, values, depth_source if weighted else None, components, per_image)
        elif weighted:
            assert depth_source is not None
            value = self._level_weighted(pairs, values, depth_source, components)
        else:
            value = mean + std
        return Evaluation(
            value=float(value),
            components=components,
            pair_values=[float(v) for v in values],
            pairs=[(int(i), int(j)) for i, j in pairs],
            per_image=per_image,
        )

    def _nearest_mode(
        self,
        pairs: np.ndarray,
        values: np.ndarray,
        depth_source: DepthSource | None,
        components: dict[str, float],
        per_image: dict[str, list[float]],
    ) -> float:
        """`nearest_mode_loss` from the pair values: target x candidate first ([T, B] row-major in
        `pinning_pairs` order), then the candidate pairs.  Those give the batch's variety, reported
        beside the loss (level-weighted when the depths are known) but not part of it."""
        n_t = self.n_targets
        cc = pairs[:, 0] >= n_t
        result = nearest_mode_loss(values[~cc].reshape(n_t, -1))
        components["mode_distance"] = result.mode_distance
        components["fidelity"] = result.fidelity
        components["mode"] = float(result.mode)
        if cc.any():
            components["variety"] = (
                self._level_weighted(pairs[cc], values[cc], depth_source, components)
                if depth_source is not None
                else mean_plus_std(values[cc])
            )
        per_image["mode_distance"] = [float(v) for v in values[~cc].reshape(n_t, -1)[result.mode]]
        per_image["nearest_target_distance"] = [float(v) for v in result.image_distance]
        return result.value

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
        """The level-weighted loss, normalised onto FLIP's scale (`normalised_level_loss`).

        Pairs that involve a target (``all_pairs``) have no depth: they are summarised with mean +
        std and averaged with the weighted candidate levels by pair count, so that the total stays
        on FLIP's scale (the original added the two, up to 2 and more).
        """
        assert self.level_weighting is not None
        n_t = self.n_targets
        cc = pairs[:, 0] >= n_t
        lookup = _depth_lookup(depth_source)
        ks = np.array([lookup(int(i) - n_t, int(j) - n_t) for i, j in pairs[cc]], dtype=np.int64)
        weighted, raw, levels = self.level_weighting.normalised(values[cc], ks)
        components["level_weighted"] = weighted
        components["level_weighted_raw"] = raw
        for k, x in levels.items():
            components[f"level_{k}"] = x
        total = weighted
        if (~cc).any():
            target_part = mean_plus_std(values[~cc])
            components["target_pairs"] = target_part
            n_cc, n_other = int(cc.sum()), int((~cc).sum())
            total = (n_cc * weighted + n_other * target_part) / (n_cc + n_other)
        return total
