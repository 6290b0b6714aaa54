"""benchmarks/bench_influence.py: its closed-form truth, its scoring rules, and its core on one tiny prompt."""

from __future__ import annotations

import numpy as np
import pytest

from benchmarks import bench_influence as bench
from lib_pinning.analysis.influence import INERT, LOOSENING, TIGHTENING, UNKNOWN
from lib_pinning.generator import ToySettings
from lib_pinning.options import PinningOptions
from lib_pinning.prompt import PromptSpace
from lib_pinning.run import derive_seeds
from lib_pinning.toy import ToyConfig, ToyModel


def test_the_truth_follows_the_closed_form_and_inert_words_have_none():
    model = ToyModel(ToyConfig(inert_words=bench.INERT_WORDS))
    space = PromptSpace("red circle, velvet", "red")
    mode = model.prototype_names.index("red circle")
    gradient = bench.true_gradient(model, space, np.zeros(space.dim), mode, cfg=1.5)
    # Raising "red" or "circle" puts more of the batch on the red circle; "red" in the negative
    # prompt takes it away; "velvet" is a zero vector.
    assert gradient[0] < -bench.TRUTH_BAND and gradient[1] < -bench.TRUTH_BAND
    assert gradient[2] == 0.0 and gradient[3] > bench.TRUTH_BAND
    assert [bench.true_class(g) for g in gradient] == [TIGHTENING, TIGHTENING, INERT, LOOSENING]


def test_cannot_tell_disagrees_only_where_the_truth_has_an_effect():
    def unit(truth: str, estimate: str) -> bench.UnitResult:
        return bench.UnitResult(0, "w", "positive", False, 0.0, truth, estimate, None)

    assert not unit(TIGHTENING, UNKNOWN).agrees and not unit(LOOSENING, TIGHTENING).agrees
    assert unit(INERT, UNKNOWN).agrees and not unit(INERT, UNKNOWN).agrees_strictly
    assert unit(LOOSENING, LOOSENING).agrees_strictly


def test_the_core_on_one_tiny_prompt(tmp_path):
    options = PinningOptions(generations=3, cma_lambda=4, cli_log=False, stop_early=False)
    result = bench.measure("red circle, velvet", "", tmp_path, settings=ToySettings(steps=6), options=options,
                           seeds=derive_seeds(1, 4))
    assert [u.text for u in result.units] == ["red", "circle", "velvet"]
    assert result.evaluations == 13 and result.mode in ToyModel().prototype_names
    assert 1 <= result.assignments <= 13
    velvet = result.units[2]
    assert velvet.inert_word and velvet.gradient == 0.0 and velvet.truth == INERT
    assert not result.units[0].inert_word and result.units[0].gradient != 0.0
    totals = bench.totals([result])
    assert totals["units"] == 3 and totals["inert_words"] == 1
    assert totals["inert_ok"] == (1.0 if velvet.estimate in (INERT, UNKNOWN) else 0.0)
    assert totals["agreement"] == pytest.approx(sum(u.agrees for u in result.units) / 3)
    text = bench.report([result], 1.0, "python benchmarks/bench_influence.py")
    assert text.startswith("`python benchmarks/bench_influence.py` at commit ") and "| 1 | `red circle, velvet` |" in text


def test_the_loss_variance_between_assignments():
    a, b = (0, 1), (1, 1)
    assert bench.explained_by_assignment([1.0, 1.0, 3.0, 3.0], [a, a, b, b]) == pytest.approx(1.0)
    assert bench.explained_by_assignment([1.0, 2.0, 3.0, 4.0], [a, a, b, b]) == pytest.approx(0.8)
    assert bench.explained_by_assignment([1.0, 2.0, 3.0, 4.0], [a, a, a, a]) == pytest.approx(0.0)


def test_the_sweep_mode_on_one_tiny_prompt(tmp_path):
    """Sweeps at two budgets score against the run's truth; the larger reuses the smaller's batches."""
    options = PinningOptions(generations=2, cma_lambda=4, cli_log=False, stop_early=False)
    pinned = bench.pin("red circle, velvet", "", tmp_path, settings=ToySettings(steps=6), options=options,
                       seeds=derive_seeds(1, 4))
    assert len(pinned.generator._cache) == 0  # the run's own batches are not kept
    small, small_sweep = bench.measure_sweep(pinned, 2, 0.2)  # one unit only
    assert [u.text for u in small.units] == ["red", "circle", "velvet"]
    # Every unit is listed; the budget reaches one (the others "unmeasured", cannot tell).
    assert [bool(e["unmeasured"]) for e in small_sweep["units"]].count(False) == 1 == len(small_sweep["units"]) - 2
    assert sum(u.estimate != UNKNOWN for u in small.units) <= 1
    assert [u.truth for u in small.units] == [u.truth for u in pinned.result.units]
    generated = len(pinned.generator._cache)
    large, large_sweep = bench.measure_sweep(pinned, 12, 0.2)  # two seed sets for every unit
    assert len(pinned.generator._cache) == generated + 10  # the first pair came from the cache
    assert all(e["seed_sets"] == 2 for e in large_sweep["units"])
    row = bench.sweep_row(12, [large], [large_sweep])
    assert row.startswith("| 12 | 2.0 | ")
    text = bench.sweep_report({2: ([small], [small_sweep]), 12: ([large], [large_sweep])}, 0.2, 1.0, "cmd", 22)
    assert "| 2 | 0.3 |" in text and "| 12 | 2.0 |" in text and "at 12 batches per prompt" in text


def test_interval_claims_need_the_whole_interval_beyond_the_band():
    assert bench.interval_claim({"slope": 0.019, "interval": [0.005, 0.033], "class": LOOSENING}, 0.01) == UNKNOWN
    assert bench.interval_claim({"slope": 0.037, "interval": [0.016, 0.058], "class": LOOSENING}, 0.01) == LOOSENING
    assert bench.interval_claim({"slope": -0.05, "interval": [-0.08, -0.02], "class": TIGHTENING}, 0.01) == TIGHTENING
    assert bench.interval_claim({"slope": 0.0, "interval": [-0.001, 0.001], "class": INERT}, 0.01) == INERT
    assert bench.interval_claim({"slope": None, "interval": [None, None], "class": UNKNOWN}, 0.01) == UNKNOWN
