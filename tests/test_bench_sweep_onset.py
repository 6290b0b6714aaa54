"""benchmarks/bench_sweep_onset.py: the profile's rows below the onset and deep in the frying."""

from __future__ import annotations

from benchmarks import bench_sweep_onset as bench


def test_below_the_onset_nothing_moves_and_deep_in_the_frying_the_guard_flags_every_image():
    below, ramp, fried = (row.split(" | ") for row in bench.profile((1.29, 1.6, 2.1)))
    assert below == ["1.29"] + ["0/8", "0.0000", "0.0000"] * bench.SEED_SETS
    # On the ramp the guard flags nothing, but the images drift past the sweep's limit.
    assert ramp[1] == "0/8" and float(ramp[2]) > bench.sweep_onset.DRIFT_LIMIT and float(ramp[3]) > 0
    assert fried[1] == fried[4] == "8/8"
