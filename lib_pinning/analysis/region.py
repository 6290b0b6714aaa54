"""Pin to a region: a new run that starts at the centre of one of a run's weight-map clusters.

The new run's prompts are the old run's prompts rendered at the cluster's centre (mean offsets of
its members; as shown to a person, without the schedule guard the new run adds back), so the
region's weights become the new run's base weights, and its search starts with a step size about
the cluster's own spread instead of the original one: it refines the region rather than leaving
it. Everything else (seeds, objectives, options, the generator) is the old run's, so the new run's
losses are comparable with the old run's.

A new run rather than a continued one: the old run's CMA-ES state (mean, covariance, evolution
paths) describes the whole search, and grafting a new mean onto it would make its checkpoint and
its report lie about what was searched. So no hook in PinningRun is needed: `PinningRun.start`
with the rendered prompts, the old seeds and the region's step size is the whole of it.

Every front end goes through `start_run`: the CLI's `resume DIR --from-cluster K` (the old run's
options and generator) and the options `from_run` / `from_cluster` (the WebUI panel, the API, the
CLI's `demo` flags: the options of the run being started, its own generator).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from lib_pinning.analysis.weight_map import WEIGHT_MAP_FILE
from lib_pinning.generator import Generator
from lib_pinning.options import PinningOptions
from lib_pinning.options_model import PinningInputError
from lib_pinning.prompt import PromptSpace
from lib_pinning.run import PinningRun
from lib_pinning.store import RunDirectoryError, RunStore, read_json

log = logging.getLogger(__name__)

# The new run's initial std: the cluster's spread (RMS over units of its members' std), kept within
# these bounds: a one-point-wide cluster would otherwise give a search that never moves.
MIN_STD = 0.02


@dataclass(frozen=True)
class RegionStart:
    run_dir: Path
    cluster_id: int
    prompt: str
    negative_prompt: str
    seeds: list[int]
    initial_std: float  # the cluster's spread, within [MIN_STD, the old run's initial std]
    options: PinningOptions  # the old run's, as it recorded them
    generator: dict[str, Any]  # run.json's generator description
    cluster: dict[str, Any]  # weight_map.json's entry of the cluster

    def applied_to(self, options: PinningOptions) -> PinningOptions:
        """`options` for a run from this region: its step size, no random start (the centre is the
        start), and the region named in from_run / from_cluster, so that the new run's run.json
        and infotext say where it started (a value the user gave, e.g. a run id, is kept)."""
        return options.replace(initial_std=self.initial_std, centroid_radius=0.0,
                               from_run=options.from_run or str(self.run_dir), from_cluster=self.cluster_id)


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
    prompt, negative = space.display(centre)
    members = np.asarray(
        [p["x"] for p in data.get("points") or [] if p.get("cluster") == cluster_id], dtype=float
    )
    spread = float(np.sqrt(np.mean(members.std(axis=0) ** 2))) if len(members) > 1 else 0.0
    # from_run cleared: it named the region the old run started from, not this one.
    options = PinningOptions.from_json(run["options"]).replace(from_run="", from_cluster=0)
    std = min(options.initial_std, max(MIN_STD, spread))
    return RegionStart(
        run_dir=store.root, cluster_id=cluster_id, prompt=prompt, negative_prompt=negative,
        seeds=[int(s) for s in run["seeds"]], initial_std=round(std, 3), options=options,
        generator=run["generator"], cluster=cluster,
    )


def find_run(value: str, runs_dirs: Sequence[Path] = ()) -> Path:
    """The folder of the run `value` names: a run folder's path, or a run id (the folder's name, or
    the number it starts with: "12" or "00012") in one of `runs_dirs` (the CLI's --runs-dir; in the
    WebUI the runs folders of both tabs, so that an img2img run can start from a txt2img run's
    cluster by its id).

    Raises:
        PinningInputError: no such run, or an id that names more than one run (a number that
            several folders start with, or the same id in two runs folders).
    """
    label = PinningOptions.spec("from_run").label
    text = value.strip()
    path = Path(text).expanduser()
    if (path / "run.json").is_file():
        return path
    folders = _distinct(runs_dirs)
    matches: list[Path] = []
    if not path.is_absolute():
        for folder in folders:
            if (folder / path / "run.json").is_file():
                matches.append(folder / path)
            elif text.isdigit():
                matches += sorted(p for p in folder.glob(f"{int(text):05d}-*") if (p / "run.json").is_file())
    if len(matches) == 1:
        return matches[0]
    if matches:
        raise PinningInputError(f"{label}: {value!r} names {len(matches)} runs: {', '.join(str(p) for p in matches)}; "
                                f"give the run folder's path")
    where = f" or a run id in {' or '.join(str(f) for f in folders)}" if folders else ""
    raise PinningInputError(f"{label}: no run {value!r} (give a run folder{where})")


def _distinct(folders: Sequence[Path]) -> list[Path]:
    """`folders` in order, each once: both tabs share one runs folder when the WebUI's "Output
    directory for images" is set."""
    seen: set[Path] = set()
    distinct = []
    for folder in folders:
        key = Path(folder).resolve()
        if key not in seen:
            seen.add(key)
            distinct.append(Path(folder))
    return distinct


def region_of(options: PinningOptions, runs_dirs: Sequence[Path] = ()) -> RegionStart | None:
    """The region a run with `options` starts from, None when `from_run` is empty; checked before
    anything is generated. `runs_dirs`: where a run id is looked up (find_run).

    Raises:
        PinningInputError: the run does not exist (or its id is ambiguous), has no weight map, or
            no such cluster.
    """
    if not options.from_run.strip():
        return None
    run_dir = find_run(options.from_run, runs_dirs)
    try:
        return region_start(run_dir, options.from_cluster)
    except (RunDirectoryError, ValueError) as e:
        raise PinningInputError(f"{PinningOptions.spec('from_cluster').label}: {e}") from e


def start_run(
    start: RegionStart, *, generator: Generator, options: PinningOptions, runs_dir: Path, tokenizer: Any = None
) -> PinningRun:
    """Start a new run at the region `start` with `options` (RegionStart.applied_to), the old
    run's prompts rendered at the cluster's centre and its seeds, so its losses compare with the
    old run's."""
    options = start.applied_to(options)
    log.info("new run from cluster %d of %s (%d points, best loss %.5g): prompt %r, initial std %g",
             start.cluster_id, start.run_dir, start.cluster["size"], start.cluster["best"]["loss"], start.prompt,
             options.initial_std)
    return PinningRun.start(
        generator=generator, prompt=start.prompt, negative_prompt=start.negative_prompt, seeds=start.seeds,
        options=options, runs_dir=runs_dir, tokenizer=tokenizer,
    )
