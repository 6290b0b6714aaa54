"""The sweep's failure check (lib_pinning.analysis.sweep_onset): the guard's hard flags and the drift
of its statistics, image by image against the centre batch."""

from __future__ import annotations

import pytest

from lib_pinning import guard
from lib_pinning.analysis import sweep_onset as onset
from lib_pinning.analysis.sweep_stats import paired_estimate

T = guard.GuardThresholds()


def _stats(saturation: float = 0.4, clipped: float = 0.0, detail: float = 0.1) -> guard.ImageStats:
    return guard.ImageStats(level=0.9, std=0.2, saturation=saturation, clipped=clipped, detail=detail)


def test_the_drift_is_the_lower_quartile_images_largest_change_over_its_threshold():
    centre = [_stats()] * 4
    # Images taking another picture (a big change) do not make a drift, even half of the batch.
    assert onset.drift([_stats(detail=0.02)] + [_stats()] * 3, centre, T) == 0.0
    assert onset.drift([_stats(detail=0.02)] * 2 + [_stats()] * 2, centre, T) == 0.0
    # Every image losing detail does: 0.012 / 0.06.
    assert onset.drift([_stats(detail=0.088)] * 4, centre, T) == pytest.approx(0.2)
    assert onset.drift([_stats(saturation=0.44)] * 4, centre, T) == pytest.approx(0.05)
    with pytest.raises(ValueError):
        onset.drift([_stats()], centre, T)


def test_a_step_is_clear_unless_flagged_or_drifting_beyond_the_other_side():
    drifting = onset.StepCheck(flagged=0, images=4, reasons={}, drift=0.02)
    assert not drifting.clear(other_drift=0.0) and drifting.kind == onset.DRIFT
    assert drifting.clear(other_drift=0.015)  # both sides move alike: the model, not a failure
    assert onset.StepCheck(0, 4, {}, onset.DRIFT_LIMIT).clear(0.0)
    flagged = onset.StepCheck(flagged=2, images=4, reasons={"fried": 2, "flat": 1}, drift=0.0)
    assert not flagged.clear(0.0) and flagged.kind == "fried"
    assert onset.StepCheck(0, 4, {}, float("nan")).clear(0.0)  # no centre statistics: the flags alone


def test_the_description_names_the_weight_and_the_kind():
    seen = onset.StepCheck(flagged=8, images=8, reasons={"fried": 8}, drift=0.9)
    entry = onset.failure_entry("up", 1.6, 0.2, seen)
    assert onset.describe("quietly", entry) == "raising 'quietly' to 1.6 makes 8/8 images fried"
    entry = onset.failure_entry("down", 0.2, 0.2, onset.StepCheck(0, 8, {}, 0.05))
    assert onset.describe("red", entry).startswith("lowering 'red' to 0.2 drifts the images toward a failure")
    assert onset.steps_note({"step": 0.2, "step_up": 0.2, "step_down": 0.2}) == ""
    assert onset.steps_note({"step": 0.2, "step_up": 0.0, "step_down": 0.2}) == ", measured at +0 / -0.2 (one-sided)"


def test_a_paired_estimate_over_an_unequal_span():
    d = [0.1, 0.12, 0.08, 0.1]
    full, short = paired_estimate(d, 0.2, 0.5), paired_estimate(d, 0.2, 0.5, span=0.25)
    assert full.slope == pytest.approx(0.1 / 0.4) and short.slope == pytest.approx(0.1 / 0.25)
    assert short.interval[1] - short.interval[0] == pytest.approx((full.interval[1] - full.interval[0]) * 0.4 / 0.25)
    assert short.unseen == pytest.approx(full.unseen * 0.4 / 0.25)
    with pytest.raises(ValueError, match="apart"):
        paired_estimate(d, 0.2, 0.5, span=0.0)
