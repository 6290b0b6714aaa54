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


class _Counting(ToyGenerator):
    def __init__(self, settings: ToySettings, black_for: str | None = None) -> None:
        super().__init__(settings)
        self.requests = []
        self.black_for = black_for

    def generate(self, request):
        self.requests.append(request)
        batch = super().generate(request)
        if self.black_for is not None and self.black_for in request.prompt:
            batch.images = torch.zeros_like(batch.images)
        return batch


@pytest.fixture(scope="module")
def toy_run(tmp_path_factory) -> Path:
    options = PinningOptions(generations=3, cma_lambda=4, cli_log=False, stop_early=False)
    run = PinningRun.start(
        generator=ToyGenerator(ToySettings(steps=6)), prompt="a red circle, (blue square:1.2)",
        negative_prompt="green", seeds=derive_seeds(5, 3), options=options, runs_dir=tmp_path_factory.mktemp("runs"),
    )
    return run.execute(reporter=Reporter(budget=None)).run_dir


def _copy(toy_run: Path, tmp_path: Path) -> RunStore:
    return RunStore.open(shutil.copytree(toy_run, tmp_path / toy_run.name))


def test_the_plan_spends_the_budget_unit_by_unit_then_seed_set_by_seed_set():
    assert plan([2, 0, 1], 5) == [(2, 0), (0, 0)]
    assert plan([2, 0, 1], 12) == [(2, 0), (0, 0), (1, 0), (2, 1), (0, 1), (1, 1)]
    # A larger budget's plan starts with a smaller one's: the order does not depend on the budget.
    assert plan([1, 0], 20)[:3] == plan([1, 0], 7)
    assert plan([], 10) == []
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
    swept = [u["index"] for u in written["sweep"]["units"]]
    assert swept == sorted(swept) and swept == sorted(sweeping._order(data, len(data["units"]))[:2])
    for unit in written["sweep"]["units"]:
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
    assert sweep_data["format"] == 2 and sweep_data["batches"] == len(generator.requests) == 4 * dim + 2
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


def test_a_step_too_small_to_change_the_prompt_scores_as_the_run_did(toy_run, tmp_path):
    """The sweep's images and objective are the run's: the best individual's loss comes back, and
    no image moving at 3 images is no evidence of inert."""
    store = _copy(toy_run, tmp_path)
    data = sweep(store, ToyGenerator(ToySettings(steps=6)), budget=2, step=1e-9)
    (unit,) = data["sweep"]["units"]
    assert unit["loss_up"] == pytest.approx(data["center"]["loss"], abs=1e-9)
    assert unit["loss_down"] == pytest.approx(data["center"]["loss"], abs=1e-9)
    assert unit["interval"] == [0.0, 0.0] and unit["class"] == UNKNOWN


def test_degenerate_batches_are_left_out(toy_run, tmp_path):
    store = _copy(toy_run, tmp_path)
    first = sweeping._order(json.loads((store.root / influence.INFLUENCE_FILE).read_text()),
                            len(store.read_run()["space"]["units"]))[0]
    # Black images whenever the first swept unit's weight is raised (its weight is then rendered).
    centre = json.loads((store.root / influence.INFLUENCE_FILE).read_text())["center"]["x"]
    space = PromptSpace.from_json(store.read_run()["space"])
    delta = np.zeros(space.dim)
    delta[first] = sweeping.DEFAULT_STEP
    raised = space.render(np.asarray(centre) + delta)[0]
    data = sweep(store, _Counting(ToySettings(steps=6), black_for=raised), budget=2)
    (unit,) = data["sweep"]["units"]
    assert unit["degenerate"] == 1 and unit["samples"] == 0 and unit["slope"] is None
    assert unit["class"] == UNKNOWN and unit["loss_up"] is None


def test_batch_by_batch_when_a_part_has_no_per_image_terms(toy_run, tmp_path, monkeypatch):
    monkeypatch.setattr(sweeping, "per_image_terms", lambda *args: None)
    store = _copy(toy_run, tmp_path)
    dim = len(store.read_run()["space"]["units"])
    data = sweep(store, ToyGenerator(ToySettings(steps=6)), budget=4 * dim)
    assert data["sweep"]["per_image"] is False
    for unit in data["sweep"]["units"]:
        assert unit["samples"] == unit["seed_sets"] == 2


def test_bad_steps_and_bands_are_refused(toy_run, tmp_path):
    store = _copy(toy_run, tmp_path)
    with pytest.raises(ValueError, match="step"):
        sweep(store, ToyGenerator(ToySettings(steps=6)), budget=4, step=0)
    with pytest.raises(ValueError, match="band"):
        sweep(store, ToyGenerator(ToySettings(steps=6)), budget=4, band=-1)


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
    assert len(out) == 3 and out[0].startswith("sweep: 4 batches, step 0.25, 1 seed set(s)")
    assert all(" slope " in line and "paired samples" in line for line in out[1:])
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
    data = sweep(store, ToyGenerator(ToySettings(steps=6)), budget=2)
    assert data["sweep"]["pinned_to_best"] is False and "unreadable" in caplog.text
    (unit,) = data["sweep"]["units"]
    assert unit["slope"] == pytest.approx((unit["loss_up"] - unit["loss_down"]) / (2 * sweeping.DEFAULT_STEP))


def test_the_unseen_jumps_are_at_least_the_gap_between_a_batchs_images():
    """Differences of rounding only (nothing jumped) must not bound the unseen jumps by the rounding."""
    assert sweeping.jump_size([1e-4, 2e-4], spread=0.5, scale=1.0) == 0.5
    assert sweeping.jump_size([0.7, 1e-4], spread=0.5, scale=1.0) == 0.7
    assert sweeping.jump_size([0.0], spread=0.0, scale=2.0) == 2.0
    assert sweeping.jump_size([], spread=0.0, scale=1.0) == 1.0


def test_a_sweep_records_a_picture_sized_jump(toy_run, tmp_path):
    store = _copy(toy_run, tmp_path)
    data = sweep(store, ToyGenerator(ToySettings(steps=6)), budget=2, step=0.01)
    assert data["sweep"]["resolution"] > 0.05  # the run's images show different pictures
