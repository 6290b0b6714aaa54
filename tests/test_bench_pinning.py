"""Smoke test of benchmarks/bench_pinning.py, so the benchmark cannot silently rot.

Runs the benchmark's own task on its smallest prompt (two units) with today's defaults and the
random search that follows them, and renders the tables from those outcomes.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest

from benchmarks import bench_pinning as bench


@pytest.fixture(autouse=True)
def _engine_log_level() -> Iterator[None]:
    """bench_pinning.task quietens the engine's warnings for its worker process; the tests call it
    in this one, so the level goes back for the tests that come after (they read warnings)."""
    engine = logging.getLogger("lib_pinning")
    level = engine.level
    yield
    engine.setLevel(level)


def test_configurations_are_valid_options() -> None:
    for overrides in bench.CONFIGS.values():
        bench.PinningOptions(**overrides)
    assert set(bench.LABELS) == {*bench.CONFIGS, "random"}
    kinds = [p.kind for p in bench.PROMPTS]
    assert len(bench.PROMPTS) >= 8 and {"tight", "loose", "negative", "long"} <= set(kinds)
    long_units = [bench.PromptSpace(p.prompt, p.negative, "word").dim for p in bench.PROMPTS if p.kind == "long"]
    assert min(long_units) >= 40


def test_a_task_and_its_report(capsys: pytest.CaptureFixture[str]) -> None:
    outcomes = bench.task((0, 0, ("now", "random")))
    now, random = outcomes
    assert now.config == "now" and random.config == "random"
    assert 1 <= now.batches <= now.full and random.batches == now.batches
    assert not now.degenerate
    for outcome in outcomes:
        assert 0.0 <= outcome.mode_ratio and 0.0 <= outcome.variety_ratio
        assert outcome.own_ratio <= 1.0 + 1e-9  # the baseline is a candidate: the best is no worse
    meta = {"command": "test", "commit": "-", "machine": "-", "jobs": 1, "minutes": 0.0, "load": [0, 0],
            "seeds": 1, "configs": ["now", "random"], "prompts": [0]}
    bench.report(outcomes, meta, write=False)
    text = capsys.readouterr().out
    assert "| now | 1 |" in text and "Degenerate best with today's defaults: 0/1 runs (met)" in text


def test_the_stopping_replay_ends_where_the_rule_ends_a_run() -> None:
    # The replay of a full-length run with the default Stagnation must stop exactly where a run
    # with the rule on stops: the same batches and the same best.
    stopped, full = bench.task((0, 0, ("now", "now, all generations")))
    assert stopped.replay is None and full.replay is not None
    batches, best, baseline = full.replay[str(bench.default_stagnation(16))]  # 2 units: 16 generations
    assert batches == stopped.batches
    assert best / baseline == pytest.approx(stopped.own_ratio, abs=1e-9)
    assert full.replay["all"][0] == full.batches
