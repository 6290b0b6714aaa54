"""The pinning loop on the toy model: it pins, it resumes exactly, it stops cleanly, it survives failures."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from lib_pinning import guard
from lib_pinning.generator import Batch, GenerationRequest, ToyGenerator, ToySettings
from lib_pinning.objectives.pinning import PinningObjective
from lib_pinning.options import PinningOptions
from lib_pinning.evaluation import quantize
from lib_pinning.run import PinningRun, RunEvent, derive_seeds
from lib_pinning.store import RunStore
from lib_pinning.tally import RunTally

PROMPT = "a red circle, blue square"
FAST = ToySettings(steps=8, cfg_scale=1.5)
SEEDS = derive_seeds(11, 4)


def start(tmp_path: Path, generator=None, **options) -> PinningRun:
    # stop_early off: these tests count individuals of a fixed-length run (tests/test_stopping.py
    # covers the stopping rules).
    opts = PinningOptions(**{"generations": 3, "cma_lambda": 4, "cli_log": False, "stop_early": False, **options})
    return PinningRun.start(
        generator=generator or ToyGenerator(FAST), prompt=PROMPT, negative_prompt="blurry",
        seeds=SEEDS, options=opts, runs_dir=tmp_path,
    )


def records(run_dir: Path) -> list[dict]:
    return [r.to_json() for r in RunStore.open(run_dir).iter_individuals()]


def comparable(record: dict) -> dict:
    """A record without its wall-clock timings."""
    return {k: v for k, v in record.items() if k != "timings"}


def test_pinning_reduces_within_batch_variety(tmp_path):
    # 8 seeds, variety loss, a search wide enough to matter in 6 generations.
    seeds = derive_seeds(3, 8)
    options = PinningOptions(
        flip_loss="variety", generations=6, cma_lambda=8, initial_std=0.4, centroid_radius=0.0, cli_log=False,
    )
    generator = ToyGenerator(ToySettings(steps=10))
    run = PinningRun.start(
        generator=generator, prompt=PROMPT, negative_prompt="", seeds=seeds, options=options, runs_dir=tmp_path
    )
    result = run.execute()
    assert result.status == "finished" and result.evaluations == 1 + 6 * 8

    variety = PinningObjective(None, "variety")

    def variety_of(prompt: str, negative: str) -> float:
        images = generator.generate(GenerationRequest(prompt, negative, seeds)).images
        return variety.score_images(quantize(images)).value

    unpinned = variety_of(PROMPT, "")
    pinned = variety_of(result.best.prompt, result.best.negative_prompt)
    # Unpinned, this batch spreads over several prototypes (variety ~0.9); the pinned prompt must
    # cut the within-batch FLIP variety (mean + std over pairs) by at least a quarter.
    assert pinned < 0.75 * unpinned, (unpinned, pinned, result.best.prompt)
    assert result.best.loss == pytest.approx(pinned, abs=1e-6)  # same seeds: the score is reproducible


def test_run_directory_is_complete_and_consistent(tmp_path):
    events: list[RunEvent] = []
    result = start(tmp_path).execute(on_event=events.append)
    store = RunStore.open(result.run_dir)
    info = store.read_run()
    assert info["status"] == "finished" and info["generations_done"] == 3
    assert info["best"]["prompt"] == result.best.prompt
    assert len(list(store.iter_generations())) == 3
    recs = records(result.run_dir)
    assert [(r["generation"], r["index"]) for r in recs] == [(0, 0)] + [(g, i) for g in (1, 2, 3) for i in range(4)]
    baseline = recs[0]
    assert baseline["x"] == [0.0] * len(baseline["x"]) and baseline["prompt"] == PROMPT
    for r in recs:
        folder = store.individual_dir(r["generation"], r["index"])
        assert [p.name for p in sorted(folder.glob("*.png")) if p.name[0].isdigit()] == r["images"]
        assert r["seeds"] == list(SEEDS) and r["status"] == "ok" and len(r["fitness"]) == 1
    assert min(r["fitness"][0] for r in recs) == result.best.fitness[0]
    kinds = [e.kind for e in events]
    assert kinds[0] == "start" and kinds[-1] == "end" and kinds.count("individual") == 13
    assert events[-1].done == events[-1].total == 13
    assert (store.root / "targets" / "target-00.png").is_file()
    assert not list(store.root.rglob("*.tmp")), "no temporary files left behind"


def test_resume_equals_uninterrupted(tmp_path):
    straight = start(tmp_path / "a").execute()

    calls = {"n": 0}

    def cancel_after_six() -> bool:
        calls["n"] += 1
        return calls["n"] > 6  # checked before each individual: stops inside generation 2

    first = start(tmp_path / "b")
    stopped = first.execute(cancel=cancel_after_six)
    assert stopped.status == "interrupted"
    info = RunStore.open(stopped.run_dir).read_run()
    assert info["status"] == "interrupted" and info["generations_done"] == 1

    resumed = PinningRun.resume(stopped.run_dir, ToyGenerator(FAST)).execute()
    assert resumed.status == "finished"
    a = [comparable(r) for r in records(straight.run_dir)]
    b = [comparable(r) for r in records(resumed.run_dir)]
    assert a == b
    assert resumed.best.prompt == straight.best.prompt and resumed.evaluations == straight.evaluations


def test_keyboard_interrupt_mid_individual_drops_only_that_individual(tmp_path):
    class Flaky(ToyGenerator):
        calls = 0

        def generate(self, request: GenerationRequest) -> Batch:
            Flaky.calls += 1
            if Flaky.calls == 4:
                raise KeyboardInterrupt
            return super().generate(request)

    result = start(tmp_path, generator=Flaky(FAST)).execute()
    assert result.status == "interrupted"
    recs = records(result.run_dir)
    assert len(recs) == 3  # baseline + two individuals; the interrupted third left no record
    store = RunStore.open(result.run_dir)
    assert store.read_run()["status"] == "interrupted"
    assert not (store.individual_dir(1, 2) / "batch_stats.json").exists()
    resumed = PinningRun.resume(result.run_dir, ToyGenerator(FAST)).execute()
    assert resumed.status == "finished" and resumed.evaluations == 13


def test_a_failing_individual_is_recorded_and_the_run_goes_on(tmp_path):
    class FailsOnce(ToyGenerator):
        calls = 0

        def generate(self, request: GenerationRequest) -> Batch:
            FailsOnce.calls += 1
            if FailsOnce.calls == 3:
                raise RuntimeError("CUDA out of memory (simulated)")
            return super().generate(request)

    result = start(tmp_path, generator=FailsOnce(FAST)).execute()
    assert result.status == "finished"
    failed = [r for r in records(result.run_dir) if r["status"] == "failed"]
    assert len(failed) == 1 and "out of memory" in failed[0]["error"]
    assert failed[0]["fitness"][0] > result.best.fitness[0]


def test_a_broken_backend_fails_the_run_but_keeps_what_was_computed(tmp_path):
    class Broken(ToyGenerator):
        calls = 0

        def generate(self, request: GenerationRequest) -> Batch:
            Broken.calls += 1
            if Broken.calls > 1:
                raise RuntimeError("model unloaded")
            return super().generate(request)

    result = start(tmp_path, generator=Broken(FAST)).execute()
    assert result.status == "failed" and "3 individuals in a row failed" in result.error
    info = RunStore.open(result.run_dir).read_run()
    assert info["status"] == "failed" and "model unloaded" in info["error"]
    assert result.best.generation == 0  # the baseline survives as the best so far


def test_size_limit_runs_multi_objective_and_projects(tmp_path):
    result = start(tmp_path, size_limit=0.05, initial_std=0.5, size_limit_weight=10.0).execute()
    assert result.status == "finished"
    recs = records(result.run_dir)
    assert all(len(r["fitness"]) == 2 for r in recs)
    projected = [r for r in recs if r["x"] != r["x_evaluated"]]
    assert projected, "with sigma 0.5 and a limit of 0.05 some individuals must be projected"
    for r in projected:
        assert np.linalg.norm(r["x_evaluated"]) == pytest.approx(0.05)
        assert r["fitness"][0] > r["loss"]  # the closest-valid penalty was added


def test_user_targets_and_bad_input(tmp_path):
    from PIL import Image

    target = tmp_path / "target.png"
    Image.new("RGB", (64, 64), (200, 30, 30)).save(target)
    result = start(tmp_path / "runs", target_images=(str(target),), flip_loss="target_distance").execute()
    info = RunStore.open(result.run_dir).read_run()
    assert info["targets"] == ["targets/target-00.png"]
    pairs = json.loads((result.run_dir / "gen-000/ind-000/batch_stats.json").read_text())["objectives"]
    assert all(a == 0 for a, b in pairs["flip_target_distance"]["pairs"])

    with pytest.raises((FileNotFoundError, ValueError), match="missing.png"):  # preflight: a TargetError
        start(tmp_path / "runs", target_images=(str(tmp_path / "missing.png"),))
    with pytest.raises(ValueError, match="weight"):
        PinningRun.start(
            generator=ToyGenerator(FAST), prompt="<lora:x:1>", negative_prompt="", seeds=SEEDS,
            options=PinningOptions(), runs_dir=tmp_path / "runs",
        )


def test_tag_objective_moves_the_mixture_toward_the_tagged_prototype(tmp_path):
    """Pin to the tags "red, circle" with the toy model's own tiny CLIP (no downloads)."""
    generator = ToyGenerator(FAST)
    options = PinningOptions(
        flip_weight=0.0, tags="red, circle", generations=5, cma_lambda=6, initial_std=0.4,
        centroid_radius=0.0, cli_log=False,
    )
    result = PinningRun.start(
        generator=generator, prompt="a red circle, blue square, green triangle", negative_prompt="",
        seeds=SEEDS, options=options, runs_dir=tmp_path,
    ).execute()
    model = generator.model
    red_circle = model.prototype_names.index("red circle")
    before = float(model.mixture_weights(result.baseline.prompt)[red_circle])
    after = float(model.mixture_weights(result.best.prompt, result.best.negative_prompt)[red_circle])
    # The tag objective only sees images, yet it must raise the tagged prototype's mixture weight
    # (0.31 for the unpinned prompt) by at least half again.
    assert after > 1.5 * before, (before, after, result.best.prompt)
    assert result.best.components["tags"] < result.baseline.components["tags"]


def test_pareto_combination_searches_each_term_separately(tmp_path):
    result = start(tmp_path, combine="pareto", distance_weight=1.0, initial_std=0.3).execute()
    assert result.status == "finished"
    recs = records(result.run_dir)
    for r in recs:
        assert len(r["fitness"]) == 2 and r["fitness"] == pytest.approx(r["objective_values"])
        assert r["loss"] == pytest.approx(sum(r["objective_values"]))
    assert result.best.loss == min(r["loss"] for r in recs)


def test_no_objective_is_refused_before_anything_is_written(tmp_path):
    with pytest.raises(ValueError, match="no objective selected"):
        start(tmp_path, flip_weight=0.0)
    assert not any(tmp_path.iterdir())


# the degenerate-image guard in the loop --------------------------------------------------------------

# The old behaviour: variety loss, weights unbounded (5), every generation; a prompt already near
# the toy's frying onset and a wide search, so 5 short generations reach the failure region.
OLD_SEARCH = dict(flip_loss="variety", weight_max=5.0, stop_early=False, generations=5, cma_lambda=6, initial_std=0.5)


def _guard_run(tmp_path: Path, guard_on: bool) -> tuple[PinningRun, list]:
    run = PinningRun.start(
        generator=ToyGenerator(FAST), prompt="a red circle, blue (square:1.6)", negative_prompt="blurry",
        seeds=SEEDS, options=PinningOptions(cli_log=False, guard=guard_on, **OLD_SEARCH), runs_dir=tmp_path,
    )
    result = run.execute()
    return result, list(RunStore.open(result.run_dir).iter_individuals())


def test_without_the_guard_the_old_search_pins_a_degenerate_batch(tmp_path):
    result, individuals = _guard_run(tmp_path, guard_on=False)
    assert result.best.degenerate and result.best.loss < 0.01  # "pinned" into a shared colour field
    assert result.best.guard["penalised"] is False and result.best.guard_penalty == 0.0
    assert any(r.degenerate for r in individuals) and result.degenerate_generations
    assert json.loads((result.run_dir / "run.json").read_text())["degenerate_generations"] == result.degenerate_generations


def test_with_the_guard_the_same_search_never_picks_a_degenerate_batch(tmp_path, caplog):
    with caplog.at_level("WARNING", logger="lib_pinning"):
        result, individuals = _guard_run(tmp_path, guard_on=True)
    degenerate = [r for r in individuals if r.degenerate]
    clean = [r for r in individuals if r.status == "ok" and not r.degenerate]
    assert degenerate, "the search should still meet the failure region"
    assert not result.best.degenerate and result.best.loss < result.baseline.loss
    # Every degenerate batch scores worse than every clean one, fewer broken images being better.
    assert min(r.fitness[0] for r in degenerate) > max(r.fitness[0] for r in clean)
    for r in degenerate:
        assert r.excluded and r.guard_penalty == pytest.approx(guard.penalty(r.share_degenerate))
        assert r.fitness[0] == pytest.approx(r.loss + r.guard_penalty)
    # Per-image reasons are in batch_stats.json.
    stats = json.loads((RunStore.open(result.run_dir).individual_dir(degenerate[0].generation, degenerate[0].index)
                        / "batch_stats.json").read_text())
    assert any(stats["guard"]["reasons"]) and stats["guard"]["share_degenerate"] > 0
    if result.degenerate_generations:
        assert "most images are degenerate" in caplog.text
    generations = list(RunStore.open(result.run_dir).iter_generations())
    assert sum(g.degenerate for g in generations) == sum(1 for r in degenerate if r.generation > 0)


def _record(generation: int, index: int, loss: float, reasons: list[list[str]], penalised: bool = True):
    from lib_pinning.store import IndividualRecord

    share = sum(bool(r) for r in reasons) / len(reasons)
    return IndividualRecord(
        generation=generation, index=index, x=[0.0], x_evaluated=[0.0], weights=[[1.0]], prompt="p",
        negative_prompt="", seeds=[1, 2], fitness=[loss], loss=loss,
        guard={"reasons": reasons, "share_degenerate": share, "penalised": penalised},
        guard_penalty=guard.penalty(share) if penalised else 0.0,
    )


def test_account_never_makes_an_excluded_batch_the_best():
    tally = RunTally()
    baseline = _record(0, 0, 0.9, [[], []])
    tally.account(baseline)
    black = _record(1, 0, 0.0, [["black"], ["black"]])
    black.guard_penalty = 0.0  # even if its fitness were not penalised
    tally.account(black)
    assert tally.best is baseline
    clean = _record(1, 1, 0.5, [[], []])
    tally.account(clean)
    assert tally.best is clean


def test_when_every_batch_is_degenerate_the_best_stays_the_prompt_as_written():
    tally = RunTally()
    baseline = _record(0, 0, 0.0, [["black"], ["black"]])
    tally.account(baseline)
    tally.account(_record(1, 0, 0.0, [["fried"], []]))
    assert tally.best is baseline
    tally.account(clean := _record(1, 1, 0.7, [[], []]))
    assert tally.best is clean
    # Guard off: degenerate batches compete like any other.
    off = RunTally()
    off.account(_record(0, 0, 0.9, [[], []], penalised=False))
    off.account(fried := _record(1, 0, 0.0, [["fried"], ["fried"]], penalised=False))
    assert off.best is fried


class _NanPixels:
    """A backend that hands over NaN pixels for its second image (a decoder that does not clean up)."""

    def __init__(self) -> None:
        self.inner = ToyGenerator(FAST)

    def generate(self, request: GenerationRequest) -> Batch:
        batch = self.inner.generate(request)
        images = batch.images.clone()
        images[1, :, :8] = float("nan")
        return Batch(images=images, seeds=batch.seeds, model_rows=batch.model_rows)

    def describe(self) -> dict:
        return {"backend": "nan-pixels"}


def test_nan_pixels_from_any_backend_are_recorded_and_scored_as_black(tmp_path):
    result = start(tmp_path, generator=_NanPixels(), generations=1).execute()
    assert result.status == "finished"
    for record in RunStore.open(result.run_dir).iter_individuals():
        assert record.status == "ok" and np.isfinite(record.loss)
        assert "nonfinite" in record.degenerate_reasons[1] and record.degenerate_reasons[0] == []
