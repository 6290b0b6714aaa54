"""The default image loss, nearest_mode: pinned to one of the prompt's own pictures, never to junk.

Also the natural scale of the pinning losses: level-weighted (hyperbatch) losses used to add their
levels up, which is how a real run reported a fitness of 1.33 on a scale documented to end at 1.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from lib_pinning.generator import GenerationRequest, ToyGenerator, ToySettings
from lib_pinning.objectives import flip, pinning
from lib_pinning.objectives.compose import build_objective
from lib_pinning.objectives.pinning import LevelWeighting, PinningObjective, nearest_mode_loss
from lib_pinning.options import PinningOptions
from lib_pinning.evaluation import quantize
from lib_pinning.run import derive_seeds

SEEDS = derive_seeds(1, 8)
PROMPT, NEGATIVE = "red circle, blue square, soft light", "blurry"


def toy_batch(prompt: str, negative: str = "", settings: ToySettings | None = None) -> torch.Tensor:
    generator = ToyGenerator(settings)
    return quantize(generator.generate(GenerationRequest(prompt, negative, SEEDS)).images)


@pytest.fixture(scope="module")
def batches() -> dict[str, torch.Tensor]:
    """The demo prompt's baseline (prototypes 1, 9, 1, 0, 0, 1, 8, 7: a red circle twice among
    them), and uniform batches: clean and pinned, or broken in each way a real model breaks."""
    torch.set_num_threads(1)
    baseline = toy_batch(PROMPT, NEGATIVE)
    return {
        "baseline": baseline,
        # At cfg 7 the toy collapses "red circle" onto its prototype: every seed, cleanly.
        "pinned": toy_batch("red circle", "", ToySettings(cfg_scale=7.0)),
        # Past the toy's fry_full (2.3) every seed gives the same saturated colour field.
        "fried": toy_batch("(red:2.3) circle, blue square"),
        "half fried": toy_batch("(red:1.9) circle, blue square"),
        # Past nan_full (3.5) every latent is NaN, which decodes to black.
        "black": toy_batch("(red:3.6) circle"),
        "flat": torch.full_like(baseline, 0.5),
    }


def test_the_fixture_batches_are_what_they_claim(batches: dict[str, torch.Tensor]) -> None:
    model = ToyGenerator().model
    assert model.nearest_prototype(batches["baseline"]).tolist() == [1, 9, 1, 0, 0, 1, 8, 7]
    assert model.nearest_prototype(batches["pinned"]).tolist() == [0] * 8
    assert float(batches["black"].max()) == 0.0
    variety = PinningObjective(None, "variety")
    # Every junk batch varies less than anything real: the variety loss prefers each of them.
    for name in ("fried", "black", "flat"):
        assert variety.score_images(batches[name]).value < 0.01
    assert variety.score_images(batches["pinned"]).value > 0.05


def test_pinned_beats_the_baseline_which_beats_every_kind_of_junk(batches: dict[str, torch.Tensor]) -> None:
    objective = PinningObjective(batches["baseline"], "nearest_mode")
    loss = {name: objective.score_images(images).value for name, images in batches.items()}
    assert loss["pinned"] < 0.1
    assert loss["pinned"] < 0.5 * loss["baseline"]
    for junk in ("fried", "half fried", "black", "flat"):
        assert loss[junk] > loss["baseline"] + 0.1, (junk, loss)
    # The variety loss orders them the other way round: junk first.
    variety = PinningObjective(None, "variety")
    assert max(variety.score_images(batches[j]).value for j in ("fried", "black", "flat")) < (
        variety.score_images(batches["pinned"]).value
    )


def test_the_pinned_batch_is_pinned_to_the_baseline_images_of_its_picture(batches: dict[str, torch.Tensor]) -> None:
    result = PinningObjective(batches["baseline"], "nearest_mode").score_images(batches["pinned"])
    assert result.components["mode"] in (3.0, 4.0)  # the baseline's two red circles
    assert result.components["fidelity"] < 0.1
    assert len(result.per_image["mode_distance"]) == 8
    assert len(result.per_image["nearest_target_distance"]) == 8
    # The baseline itself: every image is one of the targets.
    baseline = PinningObjective(batches["baseline"], "nearest_mode").score_images(batches["baseline"])
    assert baseline.components["fidelity"] == 0.0
    assert baseline.value == pytest.approx(baseline.components["mode_distance"] / 2, abs=1e-12)


def test_nearest_mode_against_a_brute_force_loop() -> None:
    g = torch.Generator().manual_seed(7)
    targets, images = torch.rand(3, 3, 24, 24, generator=g), torch.rand(5, 3, 24, 24, generator=g)
    d = np.array(
        [[float(flip.flip_mean(targets[j : j + 1], images[i : i + 1])[0]) for i in range(5)] for j in range(3)]
    )
    per_target = d.mean(axis=1)
    w = np.exp(-(per_target - per_target.min()) / pinning.MODE_TEMPERATURE)
    w /= w.sum()
    expected = 0.5 * (float(w @ per_target) + float(d.min(axis=0).mean()))
    result = PinningObjective(targets, "nearest_mode").score_images(images)
    assert result.value == pytest.approx(expected, abs=1e-6)
    assert result.components["mode"] == float(per_target.argmin())
    pairs = dict(zip(result.pairs, result.pair_values, strict=True))
    cand = [pairs[(3 + a, 3 + b)] for a, b in itertools.combinations(range(5), 2)]
    assert result.components["variety"] == pytest.approx(np.mean(cand) + np.std(cand), abs=1e-12)


def test_nearest_mode_formula_limits() -> None:
    d = np.array([[0.1, 0.3, 0.2], [0.5, 0.6, 0.7]])
    # One target far from the other: A is target 0's mean; F the column minima.
    result = nearest_mode_loss(d)
    assert result.mode == 0 and result.mode_distance == pytest.approx(0.2, abs=1e-9)
    assert result.fidelity == pytest.approx(0.2, abs=1e-12)
    # A duplicated target is one mode: the same loss as with one copy (softmin averages them).
    assert nearest_mode_loss(np.vstack([d, d[:1]])).value == pytest.approx(result.value, abs=1e-8)
    # One target: A = F = the mean distance (the target_distance pairs' mean).
    assert nearest_mode_loss(d[1:]).value == pytest.approx(0.6, abs=1e-12)
    # Close targets share the weight; a tiny temperature is the hard minimum.
    close = np.array([[0.30, 0.30], [0.31, 0.31]])
    assert 0.30 < nearest_mode_loss(close).mode_distance < 0.305
    assert nearest_mode_loss(close, temperature=1e-6).mode_distance == pytest.approx(0.30, abs=1e-12)
    with pytest.raises(ValueError, match="NaN"):
        nearest_mode_loss(np.array([[np.nan]]))
    with pytest.raises(ValueError, match="matrix"):
        nearest_mode_loss(np.zeros((0, 3)))


def test_nearest_mode_stays_on_the_natural_scale() -> None:
    assert nearest_mode_loss(np.zeros((4, 8))).value == 0.0
    assert nearest_mode_loss(np.ones((4, 8))).value == pytest.approx(1.0, abs=1e-12)
    rng = np.random.default_rng(0)
    for _ in range(200):
        value = nearest_mode_loss(rng.uniform(0, 1, (rng.integers(1, 9), rng.integers(1, 9)))).value
        assert 0.0 <= value <= 1.0
    # Copies of one target score 0 whatever the others are.
    g = torch.Generator().manual_seed(3)
    targets = torch.rand(3, 3, 16, 16, generator=g)
    assert PinningObjective(targets, "nearest_mode").score_images(targets[1:2].repeat(4, 1, 1, 1)).value == pytest.approx(
        0.0, abs=1e-9
    )


# ------------------------------------------------------------------------------------------
# The natural scale of level-weighted (hyperbatch) losses
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("weight_type", pinning.LEVEL_WEIGHT_TYPES)
@pytest.mark.parametrize("scale", [0.5, 1.0, 2.0])
def test_normalised_level_loss_maps_the_original_sum_onto_zero_to_one(weight_type: str, scale: float) -> None:
    depths = [1, 1, 2, 3, 3, 2, 1]
    zero = pinning.normalised_level_loss([0.0] * 7, depths, weight_type, scale)[0]
    one = pinning.normalised_level_loss([1.0] * 7, depths, weight_type, scale)[0]
    assert zero == pytest.approx(0.0, abs=1e-12) and one == pytest.approx(1.0, abs=1e-12)
    rng = np.random.default_rng(1)
    normalised, raws = [], []
    for _ in range(50):
        value, raw, _ = pinning.normalised_level_loss(rng.uniform(0, 0.9, 7), depths, weight_type, scale)
        normalised.append(value)
        raws.append(raw)
    # An affine map of the original's sum: the same ranking, hence the same search.
    assert np.argsort(normalised).tolist() == np.argsort(raws).tolist()
    assert all(0.0 <= v <= 1.0 for v in normalised)


def test_scale_zero_averages_the_levels_where_the_original_was_constant() -> None:
    values, depths = [0.1, 0.2, 0.3], [1, 2, 1]
    for weight_type in ("Geometric", "Polynomial"):
        value, raw, levels = pinning.normalised_level_loss(values, depths, weight_type, 0.0)
        assert raw == 2.0  # every level weighs 1 whatever the images: the original's loss was constant
        assert value == pytest.approx((levels[1] + levels[2]) / 2, abs=1e-12)


def test_a_hyperbatch_of_eight_scores_at_most_one() -> None:
    """The 1.33 a real run reported: a hyperbatch's three levels were added up (up to 3)."""
    from pinning_samplers.plan import plan_growth

    plan = plan_growth(8, 20, "even")
    g = torch.Generator().manual_seed(11)
    images = torch.rand(8, 3, 32, 32, generator=g)  # unrelated noise images: about FLIP's worst
    weighting = LevelWeighting("Geometric", 1.0)
    for mode, targets in (("variety", None), ("all_pairs", images[:4]), ("nearest_mode", images[:4])):
        result = PinningObjective(targets, mode, level_weighting=weighting, depths=plan.divergence_depth).score_images(images)
        assert 0.0 <= result.value <= 1.0, (mode, result.value)
        if mode == "variety":
            assert result.components["level_weighted_raw"] > 1.3  # what the original summed to
    # The composed default objective, as a run builds it, on the same batch.
    options = PinningOptions(hyperbatch_weights=True, hyperbatch_weights_any_sampler=True)

    class Steps:
        steps = 20

    from lib_pinning.generator import Batch

    composite = build_objective(options, images[:4], generator=Steps())
    scored = composite.score(Batch(images=images, seeds=tuple(range(8))), np.zeros(3))
    assert 0.0 <= scored.loss <= 1.0
