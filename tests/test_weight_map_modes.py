"""The weight map's clusters separate two pinned modes of one toy prompt.

"red circle, blue square" can be pinned two ways: with the red circle's words up and the blue
square's down, the batch shows red circles; the other way round, blue squares. Two CMA-ES runs of
that prompt, one started from each weighting, searched around each pinned mode; their evaluations,
put on the prompt's common weights (offsets from weight 1), are one search with two modes. Each
batch's mode is read from its images (which of the two prototypes more of them are nearest to; a
red ring or a green circle is a half-match of the red circle's pair, not a mode of its own), not
from the run it came from, and HDBSCAN, which sees only the weights, must give clusters that each
hold one mode.
"""

from __future__ import annotations

import dataclasses
import importlib.util
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from lib_pinning.analysis import weight_map
from lib_pinning.generator import ToyGenerator, ToySettings
from lib_pinning.options import PinningOptions
from lib_pinning.prompt import PromptSpace
from lib_pinning.run import PinningRun, derive_seeds
from lib_pinning.store import IndividualRecord, RunStore
from lib_pinning.toy import ToyModel

pytestmark = pytest.mark.skipif(importlib.util.find_spec("sklearn") is None, reason="scikit-learn is not installed")

WEIGHTINGS = {
    "red circle": "(red:1.4) (circle:1.4), (blue:0.6) (square:0.6)",
    "blue square": "(red:0.6) (circle:0.6), (blue:1.4) (square:1.4)",
}


def batch_mode(store: RunStore, record: IndividualRecord, model: ToyModel) -> str:
    folder = store.root / f"gen-{record.generation:03d}" / f"ind-{record.index:03d}"
    images = torch.stack([
        torch.from_numpy(np.asarray(Image.open(folder / name).convert("RGB"), dtype=np.float32) / 255).permute(2, 0, 1)
        for name in record.images
    ])
    shown = Counter(model.prototype_names[k] for k in model.nearest_prototype(images).tolist())
    red, blue = shown["red circle"], shown["blue square"]
    return "red circle" if red > blue else "blue square" if blue > red else "neither"


def two_mode_search(runs_dir: Path) -> tuple[list[IndividualRecord], list[str]]:
    """Both runs' evaluations on the common weights, and each one's mode as its images show it."""
    model = ToyModel()
    # weight_max 1.5 keeps the search clear of the toy's frying (from 1.5), whose colour field
    # would be a third "mode" of its own.
    options = PinningOptions(generations=5, cma_lambda=8, weight_max=1.5, cli_log=False, stop_early=False)
    records, modes = [], []
    for prompt in WEIGHTINGS.values():
        run = PinningRun.start(generator=ToyGenerator(ToySettings(steps=10)), prompt=prompt, negative_prompt="",
                               seeds=derive_seeds(1, 4), options=options, runs_dir=runs_dir)
        store = RunStore.open(run.execute(reporter=None).run_dir)
        base = np.array([w[0] for w in PromptSpace.from_json(store.read_run()["space"]).weights(np.zeros(4))])
        for r in store.iter_individuals():
            common = (base + np.asarray(r.x_evaluated) - 1.0).tolist()
            records.append(dataclasses.replace(r, x=common, x_evaluated=common))
            modes.append(batch_mode(store, r, model))
    return records, modes


def test_the_clusters_of_a_two_mode_search_each_hold_one_mode(tmp_path):
    records, modes = two_mode_search(tmp_path)
    counts = Counter(modes)
    # The construction holds: most batches are pinned to one of the two modes, and both occur.
    assert counts["red circle"] >= 20 and counts["blue square"] >= 20, counts
    data = weight_map.build(records, [], 4)
    assert data["clustered"] and len(data["clusters"]) >= 2
    labels = [p["cluster"] for p in data["points"]]
    dominant = {}
    for cluster in data["clusters"]:
        members = Counter(m for m, label in zip(modes, labels) if label == cluster["id"])
        mode, count = members.most_common(1)[0]
        assert count / sum(members.values()) >= 0.9, (cluster["id"], members)
        dominant.setdefault(mode, []).append(cluster["id"])
    assert {"red circle", "blue square"} <= set(dominant)
    # Most of each mode's batches are in its clusters, not in HDBSCAN's noise.
    for mode in ("red circle", "blue square"):
        inside = sum(1 for m, label in zip(modes, labels) if m == mode and label in dominant[mode])
        assert inside / counts[mode] >= 0.8, (mode, inside, counts[mode])
