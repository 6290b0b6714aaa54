"""The run loop's parallel hook: a generator with `generate_many(requests, cancel)` (several remote
servers) gets a generation's batches in one call and the run's records are those of the
one-at-a-time loop."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np

from lib_pinning.generator import Batch, GenerationRequest, ToyGenerator, ToySettings
from lib_pinning.options import PinningOptions
from lib_pinning.run import PinningRun, derive_seeds
from lib_pinning.store import RunStore

FAST = ToySettings(steps=6, cfg_scale=1.5)
SEEDS = derive_seeds(11, 4)


class ManyAtOnce(ToyGenerator):
    """Answers a call's requests in reverse order (as a pool of servers might finish them)."""

    def __init__(self, fail: str | None = None) -> None:
        super().__init__(FAST)
        self.calls: list[list[GenerationRequest]] = []
        self.single = 0
        self.fail = fail

    def generate(self, request: GenerationRequest) -> Batch:
        self.single += 1
        return super().generate(request)

    def generate_many(self, requests, cancel=None):
        self.calls.append(list(requests))
        done = {}
        for request in reversed(requests):
            if self.fail is not None and self.fail in request.prompt:
                done[request] = RuntimeError("server answered HTTP 500")
            else:
                done[request] = ToyGenerator.generate(self, request)
        return [done[r] for r in requests]


def run(tmp_path: Path, generator, **options) -> list:
    opts = PinningOptions(**{"generations": 3, "cma_lambda": 4, "cli_log": False, "stop_early": False, **options})
    result = PinningRun.start(generator=generator, prompt="a red circle, blue square", negative_prompt="",
                              seeds=SEEDS, options=opts, runs_dir=tmp_path).execute()
    return result, list(RunStore.open(result.run_dir).iter_individuals())


def test_a_generation_is_one_call_and_the_records_match_the_sequential_run(tmp_path):
    _, sequential = run(tmp_path / "one", ToyGenerator(FAST))
    generator = ManyAtOnce()
    result, parallel = run(tmp_path / "many", generator)
    assert result.status == "finished"
    assert len(generator.calls) == 1 + 3 and all(1 <= len(c) <= 4 for c in generator.calls)
    assert len(generator.calls[0]) == 1  # the baseline, made the same way so that a stop reaches it
    assert generator.single == 0
    assert [(r.generation, r.index, r.prompt, r.loss) for r in parallel] == \
        [(r.generation, r.index, r.prompt, r.loss) for r in sequential]
    for a, b in zip(parallel, sequential):
        np.testing.assert_array_equal(a.x_evaluated, b.x_evaluated)


def test_a_failed_batch_of_the_call_is_that_individuals_failure(tmp_path):
    generator = ManyAtOnce(fail="(red")
    result, records = run(tmp_path, generator, generations=2)
    failed = [r for r in records if r.status != "ok"]
    assert failed and all("(red" in r.prompt and "HTTP 500" in r.error for r in failed)
    assert all(r.status == "ok" for r in records if "(red" not in r.prompt)


def test_max_batches_limits_what_is_asked_for(tmp_path):
    generator = ManyAtOnce()
    result, _ = run(tmp_path, generator, max_batches=6)
    asked = sum(len(c) for c in generator.calls)
    assert result.stop_criterion == "max_batches" and result.batches == 6
    assert asked == 6  # the baseline plus five: nothing generated beyond the budget


class HandsOverEachBatch(ToyGenerator):
    """Hands over each batch as soon as it is made (on_result), then waits for the run loop to
    score the first one before making the rest: only a loop that overlaps scoring goes on."""

    def __init__(self) -> None:
        super().__init__(FAST)
        self.first_scored = threading.Event()
        self.overlapped: list[bool] = []

    def generate_many(self, requests, cancel=None, on_result=None):
        self.first_scored.clear()
        results = []
        for i, request in enumerate(requests):
            results.append(ToyGenerator.generate(self, request))
            on_result(i, results[-1])
            if i == 0 and len(requests) > 1:  # a generation's call, not the baseline's
                self.overlapped.append(self.first_scored.wait(timeout=5.0))
        return results


def test_each_batch_is_scored_while_the_rest_of_the_generation_is_made(tmp_path):
    generator = HandsOverEachBatch()
    opts = PinningOptions(generations=2, cma_lambda=4, cli_log=False, stop_early=False)

    def on_event(event) -> None:
        if event.kind == "individual" and event.generation > 0:
            generator.first_scored.set()

    result = PinningRun.start(generator=generator, prompt="a red circle, blue square", negative_prompt="",
                              seeds=SEEDS, options=opts, runs_dir=tmp_path).execute(on_event=on_event)
    assert result.status == "finished"
    assert generator.overlapped == [True, True]
    _, sequential = run(tmp_path / "one", ToyGenerator(FAST), generations=2)
    assert [r.loss for r in RunStore.open(result.run_dir).iter_individuals()] == [r.loss for r in sequential]


def test_a_cancel_while_the_loop_waits_for_a_batch_stops_the_run_without_generating_it(tmp_path):
    class CancelledMidCall(ToyGenerator):
        def __init__(self) -> None:
            super().__init__(FAST)
            self.stopped = threading.Event()
            self.single = 0

        def generate(self, request):
            self.single += 1
            return super().generate(request)

        def generate_many(self, requests, cancel=None, on_result=None):
            if len(requests) == 1:  # the baseline's call
                return [ToyGenerator.generate(self, requests[0])]
            self.stopped.set()  # the user presses Interrupt while the servers work
            return [None] * len(requests)

    generator = CancelledMidCall()
    opts = PinningOptions(generations=2, cma_lambda=4, cli_log=False, stop_early=False)
    result = PinningRun.start(generator=generator, prompt="a red circle, blue square", negative_prompt="",
                              seeds=SEEDS, options=opts, runs_dir=tmp_path).execute(cancel=generator.stopped.is_set)
    assert result.status == "interrupted"
    assert generator.single == 0  # nothing the call did not make is generated another way


class StopGeneratingMidCall(ManyAtOnce):
    """"Stop generating" pressed while the servers make a generation: the batch at `unmade` had gone
    back in the queue (its server failed) and is not started; the later ones were in flight and
    finish. Answers as a draining pool does: None for a batch the stop kept from starting."""

    def __init__(self, unmade: int) -> None:
        super().__init__()
        self.unmade = unmade
        self.pressed = threading.Event()
        self.made: list[str] = []

    def generate_many(self, requests, cancel=None, on_result=None, drain=None):
        if len(requests) == 1:  # the baseline's call
            return [ToyGenerator.generate(self, requests[0])]
        self.pressed.set()
        assert drain() and not cancel()  # a stop that is not a cut reaches the call as drain
        results = []
        for i, request in enumerate(requests):
            results.append(None if i == self.unmade else ToyGenerator.generate(self, request))
            if results[-1] is not None:
                self.made.append(request.prompt)
        return results


def test_stop_generating_keeps_every_batch_made_after_one_it_kept_from_starting(tmp_path):
    _, sequential = run(tmp_path / "one", ToyGenerator(FAST), generations=2)
    generator = StopGeneratingMidCall(unmade=1)
    opts = PinningOptions(generations=2, cma_lambda=4, cli_log=False, stop_early=False)
    stopped = PinningRun.start(generator=generator, prompt="a red circle, blue square", negative_prompt="",
                               seeds=SEEDS, options=opts, runs_dir=tmp_path / "stopped")
    result = stopped.execute(cancel=generator.pressed.is_set, cut=lambda: False)
    assert result.status == "interrupted"
    kept = list(RunStore.open(result.run_dir).iter_individuals())
    assert [(r.generation, r.index) for r in kept] == [(0, 0), (1, 0), (1, 2), (1, 3)]
    assert sorted(r.prompt for r in kept[1:]) == sorted(generator.made)  # every batch made is kept
    assert generator.single == 0  # nothing was generated after the stop

    again = ManyAtOnce()
    resumed = PinningRun.resume(result.run_dir, again).execute()
    assert resumed.status == "finished"
    assert [len(call) for call in again.calls] == [1, 4]  # individual 1/1, then generation 2
    records = list(RunStore.open(resumed.run_dir).iter_individuals())
    assert [(r.generation, r.index, r.prompt, r.loss) for r in records] == \
        [(r.generation, r.index, r.prompt, r.loss) for r in sequential]
