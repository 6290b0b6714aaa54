"""Pin to a region: a new run that starts at the centre of one of a run's weight-map clusters.

The new run's prompts are the old run's prompts rendered at the cluster's centre (mean offsets of
its members), so the region's weights become the new run's base weights, and its search starts
with a step size about the cluster's own spread instead of the original one: it refines the
region rather than leaving it. Everything else (seeds, objectives, options, the generator) is the
old run's, so the new run's losses are comparable with the old run's.

A new run rather than a continued one: the old run's CMA-ES state (mean, covariance, evolution
paths) describes the whole search, and grafting a new mean onto it would make its checkpoint and
its report lie about what was searched.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from lib_pinning.analysis.weight_map import WEIGHT_MAP_FILE
from lib_pinning.options import PinningOptions
from lib_pinning.prompt import PromptSpace
from lib_pinning.store import RunDirectoryError, RunStore, read_json

# The new run's initial std: the cluster's spread (RMS over units of its members' std), kept within
# these bounds: a one-point-wide cluster would otherwise give a search that never moves.
MIN_STD = 0.02


@dataclass(frozen=True)
class RegionStart:
    prompt: str
    negative_prompt: str
    seeds: list[int]
    options: PinningOptions
    generator: dict[str, Any]  # run.json's generator description
    cluster: dict[str, Any]  # weight_map.json's entry of the cluster


def region_start(run_dir: Path, cluster_id: int) -> RegionStart:
    """What a new run from cluster `cluster_id` of the run in `run_dir` needs.

    Raises:
        RunDirectoryError: the run has no weight map (its report was not rebuilt since).
        ValueError: the map has no such cluster.
    """
    store = RunStore.open(run_dir)
    run = store.read_run(required=("options", "space", "seeds", "generator"))
    path = store.root / WEIGHT_MAP_FILE
    if not path.is_file():
        raise RunDirectoryError(f"{store.root} has no {WEIGHT_MAP_FILE}: rebuild its report first "
                                f"(python -m lib_pinning report {store.root})")
    data = read_json(path)
    clusters = {c.get("id"): c for c in (data.get("clusters") or [] if isinstance(data, dict) else [])}
    if cluster_id not in clusters:
        known = ", ".join(str(k) for k in sorted(clusters)) or "none (the map found no clusters)"
        raise ValueError(f"the run has no cluster {cluster_id}; its clusters: {known}")
    cluster = clusters[cluster_id]
    space = PromptSpace.from_json(run["space"])
    centre = np.asarray(cluster["centre"], dtype=float)
    prompt, negative = space.render(centre)
    members = np.asarray(
        [p["x"] for p in data.get("points") or [] if p.get("cluster") == cluster_id], dtype=float
    )
    spread = float(np.sqrt(np.mean(members.std(axis=0) ** 2))) if len(members) > 1 else 0.0
    options = PinningOptions.from_json(run["options"])
    std = min(options.initial_std, max(MIN_STD, spread))
    return RegionStart(
        prompt=prompt, negative_prompt=negative, seeds=[int(s) for s in run["seeds"]],
        options=options.replace(initial_std=round(std, 3), centroid_radius=0.0), generator=run["generator"],
        cluster=cluster,
    )
