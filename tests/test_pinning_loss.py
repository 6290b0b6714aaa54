"""Pinning losses: definitions checked against brute-force loops over pairs, and level weighting."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch

from lib_pinning.generator import Batch
from lib_pinning.objectives import flip, pinning
from lib_pinning.objectives.base import Objective
from lib_pinning.objectives.pinning import LevelWeighting, PinningObjective


def smooth_images(n: int, seed: int, h: int = 32, w: int = 40) -> torch.Tensor:
    """n related images: a shared smooth base plus per-image smooth variation, in [0, 1]."""
    g = torch.Generator().manual_seed(seed)
    base = torch.rand(1, 3, h // 8, w // 8, generator=g)
    var = 0.3 * torch.rand(n, 3, h // 8, w // 8, generator=g)
    low = torch.nn.functional.interpolate(base + var, size=(h, w), mode="bilinear", align_corners=False)
    return (low / 1.3 + 0.05 * torch.rand(n, 3, h, w, generator=g)).clamp(0, 1)


def brute_force_pair_value(images: torch.Tensor, i: int, j: int) -> float:
    """One pair the original tool's way: both images prepared for this pair alone."""
    return float(flip.flip_mean(images[i : i + 1], images[j : j + 1])[0])


def numpy_mean_plus_std(values: list[float]) -> float:
    return float(np.mean(values) + np.abs(np.std(values)))


# ------------------------------------------------------------------------------------------
# Summary and pair lists
# ------------------------------------------------------------------------------------------


def test_mean_plus_std_uses_the_population_std() -> None:
    values = [0.1, 0.2, 0.4, 0.9]
    assert pinning.mean_plus_std(values) == pytest.approx(numpy_mean_plus_std(values), abs=1e-15)
    # By hand: mean 0.4, deviations (-.3, -.2, 0, .5) -> variance 0.38 / 4 = 0.095.
    assert pinning.mean_plus_std(values) == pytest.approx(0.4 + math.sqrt(0.095), abs=1e-12)
    assert pinning.mean_plus_std(torch.tensor([0.5])) == 0.5
    assert pinning.mean_and_std(np.array([1.0, 3.0])) == (2.0, 1.0)


def test_summary_refuses_empty_and_non_finite_values() -> None:
    with pytest.raises(ValueError, match="empty"):
        pinning.mean_plus_std([])
    with pytest.raises(ValueError, match="NaN"):
        pinning.mean_plus_std([0.1, float("nan")])


def test_pairs_of_each_mode() -> None:
    n_t, n_c = 2, 3
    everything = [tuple(p) for p in itertools.combinations(range(5), 2)]
    assert [tuple(p) for p in pinning.pinning_pairs(n_t, n_c, "all_pairs")] == everything
    assert [tuple(p) for p in pinning.pinning_pairs(n_t, n_c, "variety")] == [(2, 3), (2, 4), (3, 4)]
    assert [tuple(p) for p in pinning.pinning_pairs(n_t, n_c, "target_distance")] == [
        (0, 2),
        (0, 3),
        (0, 4),
        (1, 2),
        (1, 3),
        (1, 4),
    ]
    assert pinning.pinning_pairs(0, 4, "variety").tolist() == [[0, 1], [0, 2], [0, 3], [1, 2], [1, 3], [2, 3]]
    with pytest.raises(ValueError, match="unknown pinning mode"):
        pinning.pinning_pairs(1, 1, "everything")


# ------------------------------------------------------------------------------------------
# The objective against brute force
# ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def images() -> tuple[torch.Tensor, torch.Tensor]:
    return smooth_images(3, seed=1), smooth_images(4, seed=2)


@pytest.mark.parametrize("mode", pinning.PINNING_MODES)
def test_objective_matches_a_brute_force_loop(images: tuple[torch.Tensor, torch.Tensor], mode: str) -> None:
    targets, candidates = images
    everything = torch.cat([targets, candidates])
    n_t = targets.shape[0]
    to_targets = [(t, c) for t in range(n_t) for c in range(n_t, 7)]
    if mode == "all_pairs":
        expected_pairs = list(itertools.combinations(range(7), 2))
    elif mode == "variety":
        expected_pairs = list(itertools.combinations(range(n_t, 7), 2))
    elif mode == "nearest_mode":
        expected_pairs = to_targets + list(itertools.combinations(range(n_t, 7), 2))
    else:
        expected_pairs = to_targets
    expected_values = [brute_force_pair_value(everything, i, j) for i, j in expected_pairs]

    objective = PinningObjective(targets, mode)
    result = objective.score(Batch(images=candidates, seeds=(1, 2, 3, 4)))
    assert result.pairs == expected_pairs
    np.testing.assert_allclose(result.pair_values, expected_values, atol=1e-6, rtol=0)
    if mode == "nearest_mode":
        # Checked against its own brute force in tests/test_nearest_mode.py; here only the pairs.
        distances = np.array(expected_values[: len(to_targets)]).reshape(n_t, 4)
        expected_value = pinning.nearest_mode_loss(distances).value
    else:
        expected_value = numpy_mean_plus_std(expected_values)
    assert result.value == pytest.approx(expected_value, abs=1e-6)
    assert result.components["flip_mean"] == pytest.approx(np.mean(expected_values), abs=1e-6)
    assert result.components["flip_std"] == pytest.approx(np.std(expected_values), abs=1e-6)
    assert objective.name == f"flip_{mode}"


def test_objective_conforms_to_the_protocol_and_round_trips(
    images: tuple[torch.Tensor, torch.Tensor],
) -> None:
    targets, candidates = images
    objective = PinningObjective(targets)
    assert isinstance(objective, Objective)
    result = objective.score(Batch(images=candidates, seeds=(5, 6, 7, 8)))
    assert type(result).from_json(result.to_json()) == result


def test_targets_are_prepared_once(
    images: tuple[torch.Tensor, torch.Tensor], monkeypatch: pytest.MonkeyPatch
) -> None:
    targets, candidates = images
    calls: list[int] = []
    real_prepare = pinning.prepare

    def counting_prepare(x: torch.Tensor, *args: object, **kwargs: object) -> flip.FlipPrepared:
        calls.append(x.shape[0])
        return real_prepare(x, *args, **kwargs)

    monkeypatch.setattr(pinning, "prepare", counting_prepare)
    objective = PinningObjective(targets, "all_pairs")
    first = objective.score_images(candidates)
    second = objective.score_images(candidates)
    assert calls == [3, 4, 4]  # targets once, then each batch once
    assert first == second


def test_pinned_batch_scores_lower_than_a_varied_one(images: tuple[torch.Tensor, torch.Tensor]) -> None:
    targets, _ = images
    objective = PinningObjective(targets, "all_pairs")
    near_copies = (
        targets[0:1] + 0.01 * torch.rand(4, 3, 32, 40, generator=torch.Generator().manual_seed(3))
    ).clamp(0, 1)
    unrelated = torch.rand(4, 3, 32, 40, generator=torch.Generator().manual_seed(4))
    assert objective.score_images(near_copies).value < objective.score_images(unrelated).value


def test_targets_are_required_except_for_variety(images: tuple[torch.Tensor, torch.Tensor]) -> None:
    _, candidates = images
    for mode in ("nearest_mode", "all_pairs", "target_distance"):
        with pytest.raises(ValueError, match="none were given"):
            PinningObjective(None, mode)
        with pytest.raises(ValueError, match="none were given"):
            PinningObjective(torch.empty(0, 3, 32, 40), mode)
    result = PinningObjective(None, "variety").score_images(candidates)
    assert result.pairs == list(itertools.combinations(range(4), 2))
    with pytest.raises(ValueError, match="at least 2 images"):
        PinningObjective(None, "variety").score_images(candidates[:1])
    with pytest.raises(ValueError, match="unknown pinning mode"):
        PinningObjective(None, "diversity")


def test_variety_counts_targets_first_without_comparing_them(
    images: tuple[torch.Tensor, torch.Tensor],
) -> None:
    targets, candidates = images
    with_targets = PinningObjective(targets, "variety").score_images(candidates)
    alone = PinningObjective(None, "variety").score_images(candidates)
    assert with_targets.pairs == [(i + 3, j + 3) for i, j in alone.pairs]
    assert with_targets.pair_values == alone.pair_values and with_targets.value == alone.value


def test_batch_must_match_the_target_size(images: tuple[torch.Tensor, torch.Tensor]) -> None:
    targets, _ = images
    with pytest.raises(ValueError, match="32x40"):
        PinningObjective(targets).score_images(torch.rand(2, 3, 32, 32))
    with pytest.raises(ValueError, match="batch images"):
        PinningObjective(targets).score_images((torch.rand(2, 3, 32, 40) * 255).to(torch.uint8))


def test_prepared_targets_are_accepted(images: tuple[torch.Tensor, torch.Tensor]) -> None:
    targets, candidates = images
    from_tensor = PinningObjective(targets, "target_distance").score_images(candidates)
    from_prepared = PinningObjective(flip.prepare(targets), "target_distance").score_images(candidates)
    assert from_tensor == from_prepared
    with pytest.raises(ValueError, match="ppd"):
        PinningObjective(flip.prepare(targets, ppd=30.0), "target_distance")


# ------------------------------------------------------------------------------------------
# Level weighting
# ------------------------------------------------------------------------------------------

# Pair values 0.1 and 0.3 at depth 1, 0.2 at depth 2:
#   X_1 = mean(0.1, 0.3) + std(0.1, 0.3) = 0.2 + 0.1 = 0.3
#   X_2 = 0.2 + 0 = 0.2
VALUES, DEPTHS = [0.1, 0.2, 0.3], [1, 2, 1]


def test_geometric_weighting_by_hand() -> None:
    # X_1 ^ (1 / 1) + X_2 ^ (1 / 2) = 0.3 + sqrt(0.2)
    total, levels = pinning.level_weighted_loss(VALUES, DEPTHS, "Geometric", 1.0)
    assert levels == pytest.approx({1: 0.3, 2: 0.2})
    assert total == pytest.approx(0.3 + 0.4472135955, abs=1e-10)
    # scale 2: 0.3^2 + 0.2^1 = 0.09 + 0.2
    assert pinning.level_weighted_loss(VALUES, DEPTHS, "Geometric", 2.0)[0] == pytest.approx(0.29, abs=1e-12)


def test_exponential_weighting_by_hand() -> None:
    # X_1 * 1.5 + X_2 * 1.5^2 = 0.45 + 0.45
    assert pinning.level_weighted_loss(VALUES, DEPTHS, "Exponential", 1.0)[0] == pytest.approx(0.9, abs=1e-12)
    # scale 0: X_1 * 0.5 + X_2 * 0.25 = 0.15 + 0.05
    assert pinning.level_weighted_loss(VALUES, DEPTHS, "Exponential", 0.0)[0] == pytest.approx(0.2, abs=1e-12)


def test_polynomial_weighting_by_hand() -> None:
    # (1 + X_1)^(0.5 * 1) + (1 + X_2)^(0.5 * 2) = sqrt(1.3) + 1.2
    total = pinning.level_weighted_loss(VALUES, DEPTHS, "Polynomial", 0.5)[0]
    assert total == pytest.approx(1.1401754251 + 1.2, abs=1e-10)
    # scale 1: 1.3 + 1.2^2 = 1.3 + 1.44
    assert pinning.level_weighted_loss(VALUES, DEPTHS, "Polynomial", 1.0)[0] == pytest.approx(2.74, abs=1e-12)


def test_one_level_reduces_to_the_summary_for_geometric_scale_one() -> None:
    values = [0.05, 0.4, 0.25, 0.3]
    total, _ = pinning.level_weighted_loss(values, [1, 1, 1, 1], "Geometric", 1.0)
    assert total == pytest.approx(numpy_mean_plus_std(values), abs=1e-12)


def test_level_weighting_refuses_bad_input() -> None:
    with pytest.raises(ValueError, match="3 pair values but 2 depths"):
        pinning.level_weighted_loss(VALUES, [1, 2], "Geometric", 1.0)
    with pytest.raises(ValueError, match=">= 1"):
        pinning.level_weighted_loss(VALUES, [0, 1, 2], "Geometric", 1.0)
    with pytest.raises(ValueError, match="integers"):
        pinning.level_weighted_loss(VALUES, [1.5, 1, 2], "Geometric", 1.0)
    with pytest.raises(ValueError, match="unknown level weight type"):
        pinning.level_weighted_loss(VALUES, DEPTHS, "Linear", 1.0)
    with pytest.raises(ValueError, match="scale"):
        LevelWeighting("Geometric", -1.0)
    with pytest.raises(ValueError, match="unknown level weight type"):
        LevelWeighting("geometric")  # type: ignore[arg-type]


class FakeGrowthPlan:
    """Stands in for pinning_samplers.plan's plan: 4 images split as ((0, 1), (2, 3))."""

    def divergence_depth(self, i: int, j: int) -> int:
        return 2 if i // 2 == j // 2 else 1


DEPTH_MATRIX = np.array([[0, 2, 1, 1], [2, 0, 1, 1], [1, 1, 0, 2], [1, 1, 2, 0]])


@pytest.mark.parametrize("source", ["matrix", "callable", "batch_plan"])
def test_variety_with_level_weighting(images: tuple[torch.Tensor, torch.Tensor], source: str) -> None:
    _, candidates = images
    weighting = LevelWeighting("Exponential", 0.5)
    depths = {"matrix": DEPTH_MATRIX, "callable": FakeGrowthPlan().divergence_depth, "batch_plan": None}[
        source
    ]
    objective = PinningObjective(None, "variety", level_weighting=weighting, depths=depths)
    batch = Batch(images=candidates, seeds=(1, 2, 3, 4))
    if source == "batch_plan":
        batch.growth = FakeGrowthPlan()  # type: ignore[assignment]
    result = objective.score(batch)

    values = dict(zip(result.pairs, result.pair_values, strict=True))
    level2 = [values[(0, 1)], values[(2, 3)]]
    level1 = [values[p] for p in [(0, 2), (0, 3), (1, 2), (1, 3)]]
    raw = numpy_mean_plus_std(level1) * 1.0 + numpy_mean_plus_std(level2) * 1.0**2
    # Exponential at scale 0.5 weighs every level X_K * 1^K: from 0 (both 0) to 2 (both 1).
    assert result.value == pytest.approx(raw / 2, abs=1e-12)
    assert result.components["level_weighted_raw"] == pytest.approx(raw, abs=1e-12)
    assert result.components["level_1"] == pytest.approx(numpy_mean_plus_std(level1), abs=1e-12)
    assert result.components["level_2"] == pytest.approx(numpy_mean_plus_std(level2), abs=1e-12)
    assert result.components["flip_mean"] == pytest.approx(np.mean(result.pair_values), abs=1e-12)


def test_all_pairs_weighting_averages_in_the_target_pairs_summary(images: tuple[torch.Tensor, torch.Tensor]) -> None:
    targets, candidates = images
    weighting = LevelWeighting("Geometric", 1.0)
    result = PinningObjective(
        targets, "all_pairs", level_weighting=weighting, depths=DEPTH_MATRIX
    ).score_images(candidates)
    values = dict(zip(result.pairs, result.pair_values, strict=True))
    cand = {(i - 3, j - 3): v for (i, j), v in values.items() if i >= 3}
    with_target = [v for (i, _), v in values.items() if i < 3]
    level1 = [cand[p] for p in [(0, 2), (0, 3), (1, 2), (1, 3)]]
    level2 = [cand[(0, 1)], cand[(2, 3)]]
    # Geometric at scale 1: X_1 + sqrt(X_2), from 0 to 2; then averaged by pair count with the
    # 15 pairs that involve a target (3 target x target, 12 target x image) against 6 image pairs.
    weighted = (numpy_mean_plus_std(level1) + math.sqrt(numpy_mean_plus_std(level2))) / 2
    expected = (6 * weighted + 15 * numpy_mean_plus_std(with_target)) / 21
    assert result.value == pytest.approx(expected, abs=1e-12)
    assert result.components["level_weighted"] == pytest.approx(weighted, abs=1e-12)
    assert result.components["target_pairs"] == pytest.approx(numpy_mean_plus_std(with_target), abs=1e-12)


def test_weighting_without_depths_falls_back_to_the_plain_summary(
    images: tuple[torch.Tensor, torch.Tensor], caplog: pytest.LogCaptureFixture
) -> None:
    _, candidates = images
    weighted = PinningObjective(None, "variety", level_weighting=LevelWeighting("Polynomial", 2.0))
    plain = PinningObjective(None, "variety")
    batch = Batch(images=candidates, seeds=(1, 2, 3, 4))
    with caplog.at_level("DEBUG", logger="lib_pinning.objectives.pinning"):
        assert weighted.score(batch).value == plain.score(batch).value
        weighted.score(batch)
    assert caplog.text.count("no divergence depths") == 1


def test_weighting_is_refused_for_target_distance(images: tuple[torch.Tensor, torch.Tensor]) -> None:
    targets, _ = images
    with pytest.raises(ValueError, match="no candidate pairs"):
        PinningObjective(targets, "target_distance", level_weighting=LevelWeighting())
    with pytest.raises(ValueError, match="square"):
        PinningObjective(None, "variety", level_weighting=LevelWeighting(), depths=np.ones(4)).score_images(
            images[1]
        )
