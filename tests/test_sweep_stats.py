"""The sweep's estimator (lib_pinning.analysis.sweep_stats) on data whose answer is known: the
t quantile, the unseen-jump bound, the interval's coverage, the classes, and per-image terms that
add up to the run's objective."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from lib_pinning.analysis import sweep_stats
from lib_pinning.analysis.influence import INERT, LOOSENING, TIGHTENING, UNKNOWN
from lib_pinning.analysis.sweep_stats import paired_estimate, per_image_terms, t_quantile, unseen_share
from lib_pinning.generator import Batch
from lib_pinning.objectives.compose import CompositeObjective, WeightedObjective
from lib_pinning.objectives.pinning import PinningObjective
from lib_pinning.objectives.scale import FLIP_SCALE, NaturalScale

# Student-t 97.5% quantiles (any table; scipy.stats.t.ppf gives the same digits).
T_TABLE = {1: 12.7062, 2: 4.3027, 3: 3.1824, 4: 2.7764, 7: 2.3646, 30: 2.0423, 1000: 1.9623}


@pytest.mark.parametrize("df", sorted(T_TABLE))
def test_the_t_quantile_matches_the_table(df):
    assert t_quantile(0.975, df) == pytest.approx(T_TABLE[df], abs=4e-3 if df == 3 else 1e-3)
    assert t_quantile(0.025, df) == pytest.approx(-T_TABLE[df], abs=4e-3 if df == 3 else 1e-3)


def test_the_unseen_share_is_the_exact_binomial_bound():
    for n in (1, 8, 64, 500):
        p = unseen_share(n)
        # With a share p moving, seeing none of n move has probability exactly the tail, 2.5%.
        assert (1 - p) ** n == pytest.approx(0.025)
    assert unseen_share(8) > unseen_share(64) > unseen_share(500)


def test_the_interval_covers_the_true_slope_at_its_confidence():
    """Paired differences with a known mean: 95% intervals cover the true slope about 95% of the time."""
    rng = np.random.default_rng(0)
    step, slope, covered = 0.2, -0.1, 0
    for _ in range(400):
        d = rng.normal(2 * step * slope, 0.05, size=24)
        low, high = paired_estimate(d, step, resolution=0.2).interval
        covered += low <= slope <= high
    assert 0.92 <= covered / 400 <= 0.98


def test_a_clear_effect_is_claimed_with_its_sign_and_mirrors():
    rng = np.random.default_rng(1)
    d = rng.normal(-0.04, 0.02, size=64)  # slope -0.1 at step 0.2
    down = paired_estimate(d, 0.2, resolution=0.1)
    assert down.cls == TIGHTENING and down.slope == pytest.approx(-0.1, abs=0.01) and down.samples == 64
    assert paired_estimate(-d, 0.2, resolution=0.1).cls == LOOSENING


def test_no_image_moving_is_not_evidence_of_inert_until_enough_images_were_seen():
    """All-zero differences give a t-interval of [0, 0]; inert needs the unseen jumps in the band too."""
    few = paired_estimate(np.zeros(8), 0.2, resolution=0.4)
    assert few.interval == (0.0, 0.0) and few.cls == UNKNOWN
    assert few.unseen == pytest.approx(unseen_share(8) * 0.4 / 0.4)
    # Enough images that at most 0.5% could jump unseen: 0.005 x 0.4 / 0.4 = 0.005 < the band 0.01.
    many = paired_estimate(np.zeros(800), 0.2, resolution=0.4)
    assert many.unseen < sweep_stats.BAND and many.cls == INERT


def test_a_few_jumps_one_way_are_not_enough_to_claim():
    d = np.zeros(16)
    d[:2] = 0.4  # two of sixteen images changed their picture
    assert paired_estimate(d, 0.2, resolution=0.4).cls == UNKNOWN
    d[:8] = 0.4  # half of them did
    assert paired_estimate(d, 0.2, resolution=0.4).cls == LOOSENING


@pytest.mark.parametrize("sign", [1.0, -1.0])
def test_a_significant_effect_inside_the_band_is_not_claimed(sign):
    d = sign * (np.full(400, 2 * 0.2 * 0.005) + np.random.default_rng(2).normal(0, 1e-4, 400))  # slope 0.005
    estimate = paired_estimate(d, 0.2, resolution=1e-3)
    assert sign * estimate.interval[0] > 0 and sign * estimate.interval[1] > 0 and estimate.cls == INERT


def test_few_samples_use_the_t_quantile():
    """At 4 samples a normal quantile would cover the true slope only about 88% of the time."""
    rng = np.random.default_rng(5)
    covered = 0
    for _ in range(2000):
        low, high = paired_estimate(rng.normal(0.04, 0.05, size=4), 0.2, resolution=0.2).interval
        covered += low <= 0.1 <= high
    assert 0.93 <= covered / 2000 <= 0.97


def test_too_few_samples_cannot_tell():
    assert paired_estimate([0.3], 0.2, resolution=0.3).cls == UNKNOWN
    assert math.isnan(paired_estimate([], 0.2, resolution=0.3).slope)


def test_classify_needs_finite_numbers():
    assert sweep_stats.classify(-1.0, -2.0, -0.5, math.inf) == TIGHTENING
    assert sweep_stats.classify(0.0, -0.001, 0.001, math.inf) == UNKNOWN
    assert sweep_stats.classify(math.nan, -1.0, 1.0, 0.0) == UNKNOWN


# -- per-image terms ------------------------------------------------------------------------------


def _images(seed: int, n: int) -> torch.Tensor:
    return torch.rand(n, 3, 24, 24, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("mode", ["nearest_mode", "variety", "all_pairs", "target_distance"])
def test_the_terms_of_every_flip_loss_average_to_its_value(mode):
    objective = CompositeObjective([WeightedObjective(PinningObjective(_images(0, 4), mode), 1.0, FLIP_SCALE)])
    batch = Batch(images=_images(1, 5), seeds=(1, 2, 3, 4, 5))
    scored = objective.score(batch, [0.0])
    terms = per_image_terms(objective, scored, [0.0], 5)
    assert terms.shape == (5,) and terms.mean() == pytest.approx(scored.loss, rel=1e-9)
    assert np.ptp(terms) > 0  # images differ: so do their terms


def test_nearest_mode_terms_are_each_images_own():
    """Changing one image changes only its own term, except through the softened choice of target."""
    targets = torch.stack([torch.zeros(3, 24, 24), torch.ones(3, 24, 24)])
    objective = CompositeObjective([WeightedObjective(PinningObjective(targets, "nearest_mode"), 1.0, FLIP_SCALE)])
    images = torch.zeros(4, 3, 24, 24)
    moved = images.clone()
    moved[2] = 1.0  # image 2 jumps to the other target's picture
    before = per_image_terms(objective, objective.score(Batch(images=images, seeds=(1, 2, 3, 4)), []), [], 4)
    after = per_image_terms(objective, objective.score(Batch(images=moved, seeds=(1, 2, 3, 4)), []), [], 4)
    difference = after - before
    assert difference[2] > 0.3 and np.allclose(difference[[0, 1, 3]], 0.0, atol=1e-9)


def test_weights_scales_and_the_distance_penalty_are_in_the_terms():
    scale = NaturalScale(best=0.1, worst=0.6, unit="FLIP")
    objective = CompositeObjective([WeightedObjective(PinningObjective(_images(0, 3), "nearest_mode"), 2.0, scale)],
                                   distance_weight=0.5)
    x = [0.3, -0.4]
    scored = objective.score(Batch(images=_images(4, 4), seeds=(1, 2, 3, 4)), x)
    assert per_image_terms(objective, scored, x, 4).mean() == pytest.approx(scored.loss, rel=1e-9)


def test_a_part_without_per_image_terms_gives_none():
    class Whole:
        name = "aesthetic"

        def score(self, batch):
            from lib_pinning.objectives.base import Evaluation

            return Evaluation(value=0.5)

    objective = CompositeObjective([WeightedObjective(Whole(), 1.0, FLIP_SCALE)])
    scored = objective.score(Batch(images=_images(0, 2), seeds=(1, 2)), [])
    assert per_image_terms(objective, scored, [], 2) is None


def test_pinned_target_weights_hold_the_best_batchs_picture():
    """A batch that moved wholesale to another target's picture: with its own target weights its
    terms only see "near some target"; pinned to the best batch's picture, they see it left."""
    targets = torch.stack([torch.zeros(3, 24, 24), torch.ones(3, 24, 24)])
    objective = CompositeObjective([WeightedObjective(PinningObjective(targets, "nearest_mode"), 1.0, FLIP_SCALE)])
    best = objective.score(Batch(images=torch.zeros(4, 3, 24, 24), seeds=(1, 2, 3, 4)), [])
    weights = sweep_stats.pinned_target_weights(objective, best, 4)
    assert weights["flip_nearest_mode"][0] == pytest.approx(1.0)  # pinned to target 0's picture
    # At the best batch itself the pinned terms are its own.
    assert per_image_terms(objective, best, [], 4, weights).mean() == pytest.approx(best.loss, rel=1e-9)
    moved = objective.score(Batch(images=torch.ones(4, 3, 24, 24), seeds=(1, 2, 3, 4)), [])
    own = per_image_terms(objective, moved, [], 4)
    pinned = per_image_terms(objective, moved, [], 4, weights)
    assert own.mean() == pytest.approx(moved.loss) and own.mean() < 0.05
    assert pinned.mean() > own.mean() + 0.3
