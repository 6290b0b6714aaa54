"""The sensitivity sweep (lib_pinning.analysis.sweep) on a real short toy run: its budget and seed
sets, its schema in influence.json, the CLI, the report, and format-1 files."""

from __future__ import annotations

import json
import shutil
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
import torch

from lib_pinning.analysis import influence, sweep as sweeping
from lib_pinning.analysis.influence import INERT, UNKNOWN
from lib_pinning.analysis.sweep import plan, seed_set, sweep
from lib_pinning.generator import ToyGenerator, ToySettings
from lib_pinning.options import PinningOptions
from lib_pinning.prompt import PromptSpace
from lib_pinning.report import Reporter
from lib_pinning.run import PinningRun, derive_seeds
from lib_pinning.store import RunStore
from lib_pinning.toy import ToyConfig


# The budget, seed-set and schema tests sweep a toy without failure modes: the fixture run's best
# has a word past the frying onset, which the onset tests below exercise on purpose.
CLEAN = ToyConfig(failure_modes=False)


def _toy() -> ToyGenerator:
    return ToyGenerator(ToySettings(steps=6), CLEAN)


class _Counting(ToyGenerator):
    def __init__(self, settings: ToySettings, black_for: str | None = None, config: ToyConfig = CLEAN,
                 black_seeds: tuple[int, ...] | None = None) -> None:
        super().__init__(settings, config)
        self.requests = []
        self.black_for, self.black_seeds = black_for, black_seeds

    def generate(self, request):
        self.requests.append(request)
        batch = super().generate(request)
        if (self.black_for is not None and self.black_for in request.prompt
                and self.black_seeds in (None, tuple(request.seeds))):
            batch.images = torch.zeros_like(batch.images)
        return batch


@pytest.fixture(scope="module")
def toy_run(tmp_path_factory) -> Path:
    options = PinningOptions(generations=3, cma_lambda=4, cli_log=False, stop_early=False)
    run = PinningRun.start(
        generator=_toy(), prompt="a red circle, (blue square:1.2)",
        negative_prompt="green", seeds=derive_seeds(5, 3), options=options, runs_dir=tmp_path_factory.mktemp("runs"),
    )
    return run.execute(reporter=Reporter(budget=None)).run_dir


def _copy(toy_run: Path, tmp_path: Path) -> RunStore:
    return RunStore.open(shutil.copytree(toy_run, tmp_path / toy_run.name))


def _measured(data: dict) -> list[dict]:
    """The sweep's units it measured (it lists every unit of the prompt, the unreached ones "unmeasured")."""
    units = data["sweep"]["units"]
    assert [u["index"] for u in units] == list(range(len(data["units"])))  # every unit, in order
    for unit in units:
        if unit["unmeasured"]:
            assert unit["unmeasured"] == "budget" and unit["class"] == UNKNOWN and unit["seed_sets"] == 0
    return [u for u in units if not u["unmeasured"]]


def test_the_plan_spends_the_budget_unit_by_unit_then_seed_set_by_seed_set():
    assert plan([2, 0, 1], 5) == [(2, 0), (0, 0)]
    assert plan([2, 0, 1], 12) == [(2, 0), (0, 0), (1, 0), (2, 1), (0, 1), (1, 1)]
    # A larger budget's plan starts with a smaller one's: the order does not depend on the budget.
    assert plan([1, 0], 20)[:3] == plan([1, 0], 7)
    assert plan([], 10) == []
    # The reservation's plan: a centre batch spent first leaves fewer pairs.
    assert plan([2, 0, 1], 5, centre=1) == [(2, 0), (0, 0)] and plan([2, 0, 1], 4, centre=1) == [(2, 0)]
    assert plan([0, 1], 2, centre=1) == []
    with pytest.raises(ValueError, match="at least 2 batches"):
        plan([0], 1)


def test_seed_sets_follow_the_runs_seeds_without_overlap():
    seeds = (5, 6, 7)
    assert seed_set(seeds, 0) == seeds
    assert seed_set(seeds, 1) == (8, 9, 10) and seed_set(seeds, 2) == (11, 12, 13)
    assert seed_set((40, 3), 1) == (41, 42)  # after the largest seed, whatever the order


def test_a_small_budget_sweeps_the_least_certain_units_at_the_runs_seeds(toy_run, tmp_path):
    store = _copy(toy_run, tmp_path)
    generator = _Counting(ToySettings(steps=6))
    data = sweep(store, generator, budget=5)
    assert len(generator.requests) == 4 == data["sweep"]["batches"]  # 2 units, up and down
    seeds = tuple(store.read_run()["seeds"])
    assert all(r.seeds == seeds for r in generator.requests)
    written = json.loads((store.root / influence.INFLUENCE_FILE).read_text())
    assert written["sweep"] == json.loads(json.dumps(data["sweep"], allow_nan=False))
    swept = [u["index"] for u in _measured(written)]
    assert swept == sorted(sweeping._order(data, len(data["units"]))[:2])
    for unit in _measured(written):
        assert unit["class"] in influence.CLASSES and unit["seed_sets"] == 1 and unit["samples"] == 3
        # One seed set: the mean paired difference of the terms is the difference of the losses, up
        # to the target weights held at the best batch's (the same here to within 1%).
        assert unit["slope"] == pytest.approx((unit["loss_up"] - unit["loss_down"]) / (2 * sweeping.DEFAULT_STEP),
                                              rel=0.01)
        assert unit["up"] == pytest.approx(unit["slope"] * unit["step"]) and unit["down"] == -unit["up"]


def test_a_larger_budget_adds_derived_seed_sets_for_every_unit(toy_run, tmp_path):
    store = _copy(toy_run, tmp_path)
    generator = _Counting(ToySettings(steps=6))
    dim = len(store.read_run()["space"]["units"])
    data = sweep(store, generator, budget=4 * dim + 2)  # 2 seed sets each, one unit a third
    sweep_data = data["sweep"]
    assert sweep_data["format"] == 3 and sweep_data["batches"] == len(generator.requests) == 4 * dim + 2
    run_seeds = tuple(store.read_run()["seeds"])
    assert sweep_data["seed_sets"] == [list(seed_set(run_seeds, k)) for k in range(3)]
    assert {r.seeds for r in generator.requests} == {seed_set(run_seeds, k) for k in range(3)}
    counts = sorted(u["seed_sets"] for u in sweep_data["units"])
    assert counts == [2] * (dim - 1) + [3] and len(sweep_data["units"]) == dim
    for unit in sweep_data["units"]:
        assert unit["samples"] == 3 * unit["seed_sets"] and unit["degenerate"] == 0
        low, high = unit["interval"]
        assert low <= unit["slope"] <= high and unit["unseen"] > 0
    assert sweep_data["per_image"] is True and sweep_data["band"] == sweeping.BAND
    assert sweep_data["pinned_to_best"] is True
    assert 0 < sweep_data["resolution"] <= 1


@pytest.fixture(scope="module")
def phrase_run(tmp_path_factory) -> Path:
    """A short toy run over 3 phrase units: "a red circle", "blue square" and the negative "green"."""
    options = PinningOptions(generations=3, cma_lambda=4, cli_log=False, stop_early=False, granularity="phrase")
    run = PinningRun.start(
        generator=_toy(), prompt="a red circle, (blue square:1.2)",
        negative_prompt="green", seeds=derive_seeds(5, 3), options=options, runs_dir=tmp_path_factory.mktemp("phrases"),
    )
    store = RunStore.open(run.execute(reporter=None).run_dir)
    influence.write_influence(store)
    return store.root


def test_a_retry_never_spends_the_next_units_first_pair(phrase_run, tmp_path):
    """Budget 4 for 2 of the 3 units: the first unit's raised batch is black, and the retry at half
    the step would spend the batch the second unit's first pair needs. The first unit's up side is
    left out (one-sided, its onset recorded); the second is measured at the run's seeds; the third,
    beyond the budget, is listed as not measured."""
    store = _copy(phrase_run, tmp_path)
    first, raised = _raised(store, sweeping.DEFAULT_STEP)
    generator = _Counting(ToySettings(steps=6), black_for=raised)
    data = sweep(store, generator, budget=4)
    assert data["sweep"]["batches"] == len(generator.requests) == 4
    order = sweeping._order(data, 3)
    units = data["sweep"]["units"]
    assert len(units) == 3 and [u["index"] for u in _measured(data)] == sorted(order[:2])
    one_sided, second, unreached = (units[j] for j in order)
    assert one_sided["step_up"] == 0 and one_sided["step_down"] == sweeping.DEFAULT_STEP
    (failure,) = one_sided["failures"]
    assert failure["kind"] == "black" and failure["measured_step"] == 0 and len(failure["tried"]) == 1
    assert second["seed_sets"] == 1 and second["samples"] == 3 and second["failures"] == []
    assert second["step_up"] == second["step_down"] == sweeping.DEFAULT_STEP and second["slope"] is not None
    assert unreached["unmeasured"] == "budget" and unreached["class"] == UNKNOWN and unreached["seed_sets"] == 0
    seeds = tuple(store.read_run()["seeds"])
    assert all(r.seeds == seeds for r in generator.requests)
    assert data["sweep"]["seed_sets"] == [list(seeds)]


def test_with_room_for_the_retry_it_is_spent(phrase_run, tmp_path):
    """The same start with 2 batches more: the retry fits beside both first pairs and is made."""
    store = _copy(phrase_run, tmp_path)
    first, raised = _raised(store, sweeping.DEFAULT_STEP)
    data = sweep(store, _Counting(ToySettings(steps=6), black_for=raised), budget=5)
    unit = data["sweep"]["units"][first]
    assert unit["step_up"] == sweeping.DEFAULT_STEP / 2 and len(_measured(data)) == 2
    assert data["sweep"]["batches"] == 5


def test_the_reservation_counts_the_centre_batch_when_the_best_batchs_images_are_unreadable(phrase_run, tmp_path):
    """Budget 4 without the best batch's images: the centre costs a batch, so the budget reaches one
    unit (centre and pair: 3), whose retry may then take the last batch; the others are listed."""
    store = _copy(phrase_run, tmp_path)
    centre = json.loads((store.root / influence.INFLUENCE_FILE).read_text())["center"]
    for png in store.individual_dir(centre["generation"], centre["index"]).glob("*.png"):
        png.unlink()
    first, raised = _raised(store, sweeping.DEFAULT_STEP)
    generator = _Counting(ToySettings(steps=6), black_for=raised)
    data = sweep(store, generator, budget=4)
    assert data["sweep"]["pinned_to_best"] is False and data["sweep"]["batches"] == len(generator.requests) == 4
    (unit,) = _measured(data)
    assert unit["index"] == first and unit["step_up"] == sweeping.DEFAULT_STEP / 2


def test_a_budget_below_a_pair_per_unit_lists_the_unreached_units_as_cannot_tell(phrase_run, tmp_path, capsys):
    from lib_pinning.report import rebuild
    from lib_pinning.sweep_stage import summary_lines

    store = _copy(phrase_run, tmp_path)
    data = sweep(store, _toy(), budget=2)
    units = data["sweep"]["units"]
    assert len(units) == 3 and len(_measured(data)) == 1 and data["sweep"]["batches"] == 2
    unreached = [u for u in units if u["unmeasured"]]
    assert len(unreached) == 2
    for unit in unreached:
        assert unit["class"] == UNKNOWN and unit["seed_sets"] == unit["samples"] == 0 and unit["slope"] is None
        assert unit["interval"] == [None, None] and unit["failures"] == [] and unit["step_up"] is None
    json.dumps(data["sweep"], allow_nan=False)
    lines = sweeping.sweep_lines(data["sweep"])
    assert len(lines) == 4
    for unit in unreached:
        line = lines[1 + unit["index"]]
        assert line.startswith(repr(unit["text"])) and "cannot tell" in line and "slope" not in line
        assert line.endswith("not measured: the sweep's budget ran out before this unit")
    cls = _measured(data)[0]["class"]
    tally = "3 cannot tell" if cls == UNKNOWN else f"1 {cls}, 2 cannot tell"
    assert summary_lines(data)[0].endswith(f"[{tally} (2 not measured: the budget ran out)]")
    rebuild(store.root)
    section = (store.root / "index.html").read_text().split('id="influence"', 1)[1].split("</section>", 1)[0]
    assert section.count("not measured: the sweep&#39;s budget ran out before this unit") == 2
    for unit in unreached:
        assert f">{unit['text']}</span></td><td>{unit['side']}</td><td>cannot tell</td>" in section


def test_a_step_too_small_to_change_the_prompt_scores_as_the_run_did(toy_run, tmp_path):
    """The sweep's images and objective are the run's: the best individual's loss comes back, and
    no image moving at 3 images is no evidence of inert."""
    store = _copy(toy_run, tmp_path)
    data = sweep(store, _toy(), budget=2, step=1e-9)
    (unit,) = _measured(data)
    assert unit["loss_up"] == pytest.approx(data["center"]["loss"], abs=1e-9)
    assert unit["loss_down"] == pytest.approx(data["center"]["loss"], abs=1e-9)
    assert unit["interval"] == [0.0, 0.0] and unit["class"] == UNKNOWN


def _raised(store: RunStore, step: float) -> tuple[int, str]:
    """The first swept unit and the positive prompt rendered with its weight raised by `step`."""
    data = json.loads((store.root / influence.INFLUENCE_FILE).read_text())
    space = PromptSpace.from_json(store.read_run()["space"])
    first = sweeping._order(data, space.dim)[0]
    delta = np.zeros(space.dim)
    delta[first] = step
    return first, space.render(np.asarray(data["center"]["x"]) + delta)[0]


def test_a_step_the_guard_flags_is_retried_at_half_the_step_with_the_same_seeds(toy_run, tmp_path):
    """The smaller-step path: the raised batch is black at the full step only; the sweep records the
    onset and measures that side at half the step, the interval over the span measured."""
    store = _copy(toy_run, tmp_path)
    first, raised = _raised(store, sweeping.DEFAULT_STEP)
    generator = _Counting(ToySettings(steps=6), black_for=raised)
    data = sweep(store, generator, budget=3)
    (unit,) = _measured(data)
    assert unit["index"] == first and data["sweep"]["batches"] == len(generator.requests) == 3
    assert unit["step_up"] == sweeping.DEFAULT_STEP / 2 and unit["step_down"] == sweeping.DEFAULT_STEP
    assert len({r.seeds for r in generator.requests}) == 1  # the retry uses the same seeds
    (failure,) = unit["failures"]
    assert failure["direction"] == "up" and failure["kind"] == "black" and failure["flagged"] == failure["images"] == 3
    assert failure["measured_step"] == sweeping.DEFAULT_STEP / 2 and failure["clear_weight"] < failure["weight"]
    assert unit["samples"] == 3 and unit["degenerate"] == 0
    span = 1.5 * sweeping.DEFAULT_STEP
    assert unit["slope"] == pytest.approx((unit["loss_up"] - unit["loss_down"]) / span, rel=0.01)
    lines = sweeping.sweep_lines(data["sweep"])
    assert "measured at +0.1 / -0.2" in lines[1 + first]
    assert lines[-1].startswith(f"failure onset: raising {unit['text']!r} to {failure['weight']} makes 3/3 images black")


def test_without_budget_for_a_retry_the_side_is_left_out_one_sided(toy_run, tmp_path):
    store = _copy(toy_run, tmp_path)
    first, raised = _raised(store, sweeping.DEFAULT_STEP)
    data = sweep(store, _Counting(ToySettings(steps=6), black_for=raised), budget=2)
    (unit,) = _measured(data)
    assert data["sweep"]["batches"] == 2 and unit["step_up"] == 0 and unit["failures"][0]["measured_step"] == 0
    # One-sided: the best batch's own images (no batch generated) against the lowered one.
    assert unit["loss_up"] == pytest.approx(data["center"]["loss"], abs=1e-9)
    assert unit["slope"] == pytest.approx((unit["loss_up"] - unit["loss_down"]) / sweeping.DEFAULT_STEP, rel=0.01)
    assert "(one-sided)" in sweeping.sweep_lines(data["sweep"])[1 + first]


def test_degenerate_batches_at_a_later_seed_set_are_left_out(toy_run, tmp_path):
    store = _copy(toy_run, tmp_path)
    _, raised = _raised(store, sweeping.DEFAULT_STEP)
    later = seed_set(tuple(store.read_run()["seeds"]), 1)
    dim = len(store.read_run()["space"]["units"])
    data = sweep(store, _Counting(ToySettings(steps=6), black_for=raised, black_seeds=later), budget=2 * dim + 2)
    unit = next(u for u in data["sweep"]["units"] if u["seed_sets"] == 2)
    assert unit["degenerate"] == 1 and unit["samples"] == 3 and unit["failures"] == []


@pytest.fixture(scope="module")
def near_onset(tmp_path_factory) -> Path:
    """A toy run (the toy's default 20 steps) whose analysed best is its baseline, the prompt as
    written: the inert word "quietly" at 1.45, just below the toy's frying onset (1.5), so a step
    of 0.2 up reaches 1.65."""
    config = ToyConfig(inert_words=("quietly",))
    options = PinningOptions(generations=1, cma_lambda=4, cli_log=False, stop_early=False)
    run = PinningRun.start(
        generator=ToyGenerator(ToySettings(), config), prompt="green circle, (quietly:1.45)",
        negative_prompt="", seeds=derive_seeds(5, 4), options=options, runs_dir=tmp_path_factory.mktemp("onset"),
    )
    store = RunStore.open(run.execute(reporter=None).run_dir)
    data = influence.write_influence(store)
    baseline = next(r for r in store.iter_individuals() if r.generation == 0)
    data["center"] = {"generation": baseline.generation, "index": baseline.index, "x": list(baseline.x_evaluated),
                      "loss": baseline.loss}
    (store.root / influence.INFLUENCE_FILE).write_text(json.dumps(data))
    return store.root


def test_a_best_weight_just_below_the_frying_onset_claims_nothing_from_fried_images(near_onset, tmp_path):
    """The onset path: the guard flags nothing at 1.65 (the toy's frying is a ramp), but the images
    drift; the sweep records the onset, measures "quietly" clear of it, and does not call the inert
    word loosening (with the full step up it would: the fried images raise the loss)."""
    store = RunStore.open(shutil.copytree(near_onset, tmp_path / near_onset.name))
    generator = _Counting(ToySettings(), config=ToyConfig(inert_words=("quietly",)))
    data = sweep(store, generator, budget=24)
    quietly = next(u for u in data["sweep"]["units"] if u["text"] == "quietly")
    (failure,) = quietly["failures"]
    assert failure["direction"] == "up" and failure["kind"] == "drift" and failure["flagged"] == 0
    assert failure["tried"][0]["weight"] == pytest.approx(1.65) and failure["tried"][0]["drift"] > sweeping.onset.DRIFT_LIMIT
    assert quietly["step_up"] < sweeping.DEFAULT_STEP and quietly["step_down"] == sweeping.DEFAULT_STEP
    assert quietly["class"] in (INERT, UNKNOWN)
    assert all(u["failures"] == [] for u in data["sweep"]["units"] if u["text"] != "quietly")
    assert any(line.startswith("failure onset: raising 'quietly' to ") and "drifts the images" in line
               for line in sweeping.sweep_lines(data["sweep"]))


def test_the_full_step_across_the_onset_would_claim_loosening(near_onset, tmp_path, monkeypatch):
    """What the previous test guards against: without the drift check the +0.2 step measures the
    frying ramp and the inert word comes out loosening."""
    monkeypatch.setattr(sweeping.onset, "DRIFT_LIMIT", float("inf"))
    store = RunStore.open(shutil.copytree(near_onset, tmp_path / near_onset.name))
    data = sweep(store, ToyGenerator(ToySettings(), ToyConfig(inert_words=("quietly",))), budget=24)
    quietly = next(u for u in data["sweep"]["units"] if u["text"] == "quietly")
    assert quietly["failures"] == [] and quietly["class"] == influence.LOOSENING


def test_batch_by_batch_when_a_part_has_no_per_image_terms(toy_run, tmp_path, monkeypatch):
    monkeypatch.setattr(sweeping, "per_image_terms", lambda *args: None)
    store = _copy(toy_run, tmp_path)
    dim = len(store.read_run()["space"]["units"])
    data = sweep(store, _toy(), budget=4 * dim)
    assert data["sweep"]["per_image"] is False
    for unit in data["sweep"]["units"]:
        assert unit["samples"] == unit["seed_sets"] == 2


def test_bad_steps_and_bands_are_refused(toy_run, tmp_path):
    store = _copy(toy_run, tmp_path)
    with pytest.raises(ValueError, match="step"):
        sweep(store, _toy(), budget=4, step=0)
    with pytest.raises(ValueError, match="band"):
        sweep(store, _toy(), budget=4, band=-1)


class _Sections(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.ids: set[str] = set()

    def handle_starttag(self, tag, attrs):
        if tag == "section":
            self.ids.update(v for k, v in attrs if k == "id" and v)


def test_the_sweep_command_the_report_and_a_rebuild(toy_run, tmp_path, capsys):
    from lib_pinning.cli import main
    from lib_pinning.report import rebuild

    store = _copy(toy_run, tmp_path)
    assert main(["sweep", str(store.root), "--budget", "4", "--step", "0.25"]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    dim = len(store.read_run()["space"]["units"])
    assert len(out) == 1 + dim and out[0].startswith("sweep: 4 batches, step 0.25, 1 seed set(s)")
    measured = [line for line in out[1:] if " slope " in line and "paired samples" in line]
    unreached = [line for line in out[1:] if line.endswith("not measured: the sweep's budget ran out before this unit")]
    assert len(measured) == 2 and len(unreached) == dim - 2
    before = json.loads((store.root / influence.INFLUENCE_FILE).read_text())["sweep"]
    rebuild(store.root)  # recomputes influence.json: the sweep (made around the same best) stays
    assert json.loads((store.root / influence.INFLUENCE_FILE).read_text())["sweep"] == before
    parser = _Sections()
    html = (store.root / "index.html").read_text()
    parser.feed(html)
    section = html.split('id="influence"', 1)[1].split("</section>", 1)[0]
    assert "influence" in parser.ids and "Sensitivity sweep" in section
    assert "4 batches" in section and "±0.25" in section and "image by image" in section


def test_a_format_1_sweep_still_renders(toy_run, tmp_path):
    """influence.json files written before format 2: one pair at the run's seeds, no interval."""
    from lib_pinning.report import rebuild

    store = _copy(toy_run, tmp_path)
    path = store.root / influence.INFLUENCE_FILE
    data = json.loads(path.read_text())
    unit = data["units"][0]
    data["sweep"] = {"budget": 2, "batches": 2, "step": 0.1, "seeds": [5, 6, 7], "units": [
        {"index": 0, "side": unit["side"], "text": unit["text"], "step": 0.1, "loss_up": 0.3, "loss_down": 0.3,
         "slope": 0.0, "up": 0.0, "down": 0.0, "class": INERT}]}
    path.write_text(json.dumps(data))
    rebuild(store.root)
    section = (store.root / "index.html").read_text().split('id="influence"', 1)[1].split("</section>", 1)[0]
    assert "Sensitivity sweep" in section and "image by image" not in section
    assert f">{unit['text']}</span></td><td>{unit['side']}</td><td>inert</td>" in section


def test_without_the_best_batchs_images_each_batch_keeps_its_own_target(toy_run, tmp_path, caplog):
    store = _copy(toy_run, tmp_path)
    centre = json.loads((store.root / influence.INFLUENCE_FILE).read_text())["center"]
    for png in store.individual_dir(centre["generation"], centre["index"]).glob("*.png"):
        png.unlink()
    generator = _Counting(ToySettings(steps=6))
    data = sweep(store, generator, budget=3)  # the centre is generated: one batch of the budget
    assert data["sweep"]["pinned_to_best"] is False and "unreadable" in caplog.text
    assert data["sweep"]["batches"] == len(generator.requests) == 3
    (unit,) = _measured(data)
    assert unit["slope"] == pytest.approx((unit["loss_up"] - unit["loss_down"]) / (2 * sweeping.DEFAULT_STEP))


def test_the_unseen_jumps_are_at_least_the_gap_between_a_batchs_images():
    """Differences of rounding only (nothing jumped) must not bound the unseen jumps by the rounding."""
    assert sweeping.jump_size([1e-4, 2e-4], spread=0.5, scale=1.0) == 0.5
    assert sweeping.jump_size([0.7, 1e-4], spread=0.5, scale=1.0) == 0.7
    assert sweeping.jump_size([0.0], spread=0.0, scale=2.0) == 2.0
    assert sweeping.jump_size([], spread=0.0, scale=1.0) == 1.0


def test_a_sweep_records_a_picture_sized_jump(toy_run, tmp_path):
    store = _copy(toy_run, tmp_path)
    data = sweep(store, _toy(), budget=2, step=0.01)
    assert data["sweep"]["resolution"] > 0.05  # the run's images show different pictures


def test_the_report_shows_the_failure_onsets_and_a_format_2_sweep_still_renders(toy_run, tmp_path):
    from lib_pinning.report import rebuild

    store = _copy(toy_run, tmp_path)
    _, raised = _raised(store, sweeping.DEFAULT_STEP)
    data = sweep(store, _Counting(ToySettings(steps=6), black_for=raised), budget=3)
    (unit,) = _measured(data)
    rebuild(store.root)
    section = (store.root / "index.html").read_text().split('id="influence"', 1)[1].split("</section>", 1)[0]
    assert "Failure onsets the sweep ran into" in section and "measured at +0.1 / -0.2" in section
    assert f"to {unit['failures'][0]['weight']} makes 3/3 images black; measured up to" in section
    # A format-2 file (written before the onsets): no steps per side, no failures.
    path = store.root / influence.INFLUENCE_FILE
    old = json.loads(path.read_text())
    old["sweep"]["format"] = 2
    old["sweep"]["units"] = [u for u in old["sweep"]["units"] if not u["unmeasured"]]  # it listed those only
    for entry in old["sweep"]["units"]:
        for key in ("step_up", "step_down", "failures", "unmeasured"):
            del entry[key]
    path.write_text(json.dumps(old))
    rebuild(store.root)
    section = (store.root / "index.html").read_text().split('id="influence"', 1)[1].split("</section>", 1)[0]
    assert "image by image" in section and "Failure onsets" not in section and "measured at" not in section
    assert f">{unit['text']}</span></td><td>{unit['side']}</td><td>{unit['class']}</td>" in section
    assert len(sweeping.sweep_lines(old["sweep"])) == 2
