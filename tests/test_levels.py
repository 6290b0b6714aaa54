"""Variety per split level: a hyperbatch's pair values grouped by where each pair's images parted."""

from __future__ import annotations

import pytest
import torch

from lib_pinning.generator import Batch
from lib_pinning.objectives.base import Evaluation
from lib_pinning.objectives.compose import PlannedTreeWeighting
from lib_pinning.objectives.levels import LevelVariety, level_variety
from lib_pinning.objectives.pinning import LevelWeighting, PinningObjective
from pinning_samplers import GrowthPlan

# B=4 in 6 steps: 1 row, split 1 at step 2 (1 -> 2: image 1 is a copy of 0), split 2 at step 4
# (2 -> 4: images 2 and 3 are copies of 0 and 1). Pairs (0, 2) and (1, 3) parted at split 2, the
# other four at split 1.
PLAN = GrowthPlan(4, 6, (1, 1, 2, 2, 4, 4))
LATE_PAIRS = {(0, 2), (1, 3)}


def two_pictures() -> torch.Tensor:
    """Images 0 and 2 one picture, 1 and 3 another: the batch's copies differ only across split 1."""
    g = torch.Generator().manual_seed(3)
    a, b = torch.rand(3, 24, 24, generator=g), torch.rand(3, 24, 24, generator=g)
    return torch.stack([a, b, a, b])


def test_pairs_are_grouped_by_the_split_at_which_they_parted():
    pairs = [(0, 1), (0, 2), (0, 3), (1, 2), (1, 3), (2, 3)]
    values = [0.4 if p not in LATE_PAIRS else 0.1 for p in pairs]
    first, second = level_variety(values, pairs, PLAN.divergence_depth, PLAN.level_start_steps)
    assert (first.level, first.step, first.pairs) == (1, 2, 4)
    assert (second.level, second.step, second.pairs) == (2, 4, 2)
    assert first.pair_share == pytest.approx(4 / 6) and second.pair_share == pytest.approx(2 / 6)
    assert first.mean == pytest.approx(0.4) and second.mean == pytest.approx(0.1)
    assert first.variety_share == pytest.approx(1.6 / 1.8) and second.variety_share == pytest.approx(0.2 / 1.8)


@pytest.mark.parametrize("mode", ["variety", "nearest_mode", "all_pairs"])
def test_the_objective_stores_each_levels_variety_with_the_evaluation(mode: str):
    """With targets first in the pair indices (nearest_mode, all_pairs), the candidate pairs must
    still be looked up by their batch-local images: the batch varies at split 1 only."""
    images = two_pictures()
    targets = images[:2] if mode != "variety" else None
    objective = PinningObjective(targets, mode, level_weighting=LevelWeighting())
    evaluation = objective.score(Batch(images=images, seeds=(1, 2, 3, 4), growth=PLAN))
    by_level = {level.level: level for level in evaluation.levels}
    assert sorted(by_level) == [1, 2]
    assert by_level[2].mean == pytest.approx(0.0, abs=1e-6) and by_level[2].variety_share == pytest.approx(0.0, abs=1e-6)
    assert by_level[1].mean > 0.1 and by_level[1].variety_share == pytest.approx(1.0)
    assert (by_level[1].pairs, by_level[2].pairs) == (4, 2)
    # From the pair values the objective computed anyway: the level-1 mean is theirs.
    n_t = objective.n_targets
    level_1 = [v for (i, j), v in zip(evaluation.pairs, evaluation.pair_values)
               if i >= n_t and (i - n_t, j - n_t) not in LATE_PAIRS]
    assert by_level[1].mean == pytest.approx(sum(level_1) / len(level_1))
    assert Evaluation.from_json(evaluation.to_json()).levels == evaluation.levels


def test_a_plain_batch_has_no_levels_even_when_weighted_by_a_planned_tree():
    images = two_pictures()
    plain = Batch(images=images, seeds=(1, 2, 3, 4))
    objective = PinningObjective(None, "variety", level_weighting=LevelWeighting())
    assert objective.score(plain).levels == []
    planned = PlannedTreeWeighting(objective, steps=6).score(plain)
    assert "level_weighted" in planned.components and planned.levels == []


def test_an_older_evaluation_without_levels_still_reads():
    assert Evaluation.from_json({"value": 0.5}).levels == []
    level = LevelVariety(1, None, 4, 0.5, 0.2, 0.7)
    assert LevelVariety.from_json(level.to_json()) == level


def _level_tables(page: str) -> list[list[list[str]]]:
    """The rows (cell texts) of every split-level table of a report page, in page order."""
    from html.parser import HTMLParser

    class Tables(HTMLParser):
        def __init__(self) -> None:
            super().__init__()
            self.tables: list[list[list[str]]] = []
            self.inside = False
            self.cell: list[str] | None = None

        def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
            if tag == "table" and ("class", "levels") in attrs:
                self.inside, _ = True, self.tables.append([])
            elif self.inside and tag == "tr":
                self.tables[-1].append([])
            elif self.inside and tag in ("td", "th"):
                self.cell = []

        def handle_endtag(self, tag: str) -> None:
            if tag == "table":
                self.inside = False
            elif self.inside and tag in ("td", "th") and self.cell is not None:
                self.tables[-1][-1].append(" ".join("".join(self.cell).split()))
                self.cell = None

        def handle_data(self, data: str) -> None:
            if self.cell is not None:
                self.cell.append(data)

    parser = Tables()
    parser.feed(page)
    return parser.tables


def test_the_report_shows_the_split_levels_of_the_best_and_the_baseline(tmp_path):
    """A toy hyperbatch run: the best's and the baseline's cards each have the table, one row per
    level in split order, with the step, the pairs and the mean their records hold."""
    from lib_pinning.generator import ToyGenerator, ToySettings
    from lib_pinning.options import PinningOptions
    from lib_pinning.report import rebuild
    from lib_pinning.run import PinningRun
    from lib_pinning.store import RunStore

    generator = ToyGenerator(ToySettings(steps=8, growth="front"))
    options = PinningOptions(cli_log=False, generations=1, cma_lambda=3, stop_early=False, granularity="phrase")
    result = PinningRun.start(
        generator=generator, prompt="red circle, blue square", negative_prompt="", seeds=(1, 2, 3, 4),
        options=options, runs_dir=tmp_path,
    ).execute()
    store = RunStore.open(result.run_dir)
    records = {r.key: r for r in store.iter_individuals()}
    tables = _level_tables(rebuild(result.run_dir).read_text(encoding="utf-8"))
    cards = [result.best.key, (0, 0)]  # the page shows the best's card before the baseline's
    assert len(tables) == len(cards)
    for table, key in zip(tables, cards):
        stored = records[key].objectives["flip_nearest_mode"]["levels"]
        plan = GrowthPlan.from_dict(records[key].growth)
        assert [level["level"] for level in stored] == [1, 2]
        header, *rows = table
        assert header[:3] == ["split", "at step", "image pairs"]
        for row, level in zip(rows, stored, strict=True):
            assert row[0] == str(level["level"])
            assert row[1] == f"{plan.level_start_steps[level['level']]} / {plan.steps}"
            assert row[2].startswith(f"{level['pairs']} (")
            assert float(row[3]) == pytest.approx(level["mean"], rel=1e-2, abs=1e-3)
