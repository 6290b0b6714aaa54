"""The Evaluator's contract with the run loop: it makes records, the run persists them."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from lib_pinning.generator import ToyGenerator
from tests.test_run import FAST, start


class Counting(ToyGenerator):
    def __init__(self) -> None:
        super().__init__(FAST)
        self.calls = 0

    def generate(self, request):
        self.calls += 1
        return super().generate(request)


def _ready(tmp_path: Path):
    """A run whose evaluator has its objective (the baseline made the targets), nothing else done."""
    generator = Counting()
    run = start(tmp_path, generator=generator)
    record, batch = run.evaluator.produce_baseline(lambda: False)
    run._prepare_objective(record)
    run.evaluator.score_baseline(record, batch)
    run._persist(record)
    return run, generator


def test_an_evaluated_individual_is_scored_but_not_persisted(tmp_path):
    run, generator = _ready(tmp_path)
    x = np.full(run.space.dim, 0.2)
    record = run.evaluator.evaluate(1, 0, x)
    assert record.status == "ok" and np.isfinite(record.loss) and len(record.fitness) == run.optimizer.n_objectives
    assert generator.calls == 2
    assert run.store.read_individual(1, 0) is None, "persisting is the run's job"


def test_a_noted_prompt_pair_is_answered_without_a_batch(tmp_path):
    run, generator = _ready(tmp_path)
    x = np.full(run.space.dim, 0.2)
    first = run.evaluator.evaluate(1, 0, x)
    run._persist(first)
    again = run.evaluator.evaluate(1, 1, x + 1e-5)  # renders to the same 3-decimal weights
    assert generator.calls == 2, "a repeat calls no backend"
    assert again.repeat_of == [1, 0] and again.loss == first.loss and again.fitness == first.fitness
    run._persist(again)
    assert run.repeats == 1 and run.batches == 2


def test_an_unnoted_pair_is_generated_again(tmp_path):
    run, generator = _ready(tmp_path)
    x = np.full(run.space.dim, 0.2)
    run.evaluator.evaluate(1, 0, x)  # never persisted: the cache must not answer from it
    again = run.evaluator.evaluate(1, 1, x)
    assert again.repeat_of is None and generator.calls == 3
