"""A map of the searched weights: every evaluated weight vector embedded in 2-D and clustered.

- Embedding: UMAP (umap-learn), which keeps the neighbourhoods of the d-dimensional offsets, so
  the regions the search sampled densely stay visible as regions. The CMA-ES mean of each
  generation (generation.json's "centroid", the mean after that generation's update) is embedded
  with the points (one fit over both: `UMAP.transform` would cost a second JIT-compiled pass), so
  the search's path can be drawn over them.
- Cheap runs get the first two principal axes instead: numba compiles UMAP on its first use in
  every process (about 20 s, `UMAP_FIRST_USE_SECONDS`), which would triple the toy demo's 10 s
  (docs/benchmarks.md, bench_analysis). numba's on-disk cache does not help: umap-learn's own
  kernels are not declared cacheable, so only pynndescent's would load from it. The choice is
  made from the run's recorded time (run.json "seconds"), not from what this process has
  compiled, so a rebuild draws the same map: UMAP when its first use is at most `MAX_SHARE` of
  the run (runs of 400 s and more, i.e. real models), else principal axes, which are exact for
  the Gaussian clouds CMA-ES samples and cost a millisecond. Without umap-learn every run gets
  principal axes, with a note.
- Clustering: HDBSCAN from scikit-learn (`sklearn.cluster.HDBSCAN`), on the offsets themselves,
  not on the embedding (UMAP distorts densities; a cluster must be a region of weight space a run
  can be pinned to). Why HDBSCAN: CMA-ES samples ever more densely as its step size shrinks, so
  the density varies along the run, which a single DBSCAN radius cannot serve; k-means would need
  the number of regions in advance and puts every stray point into some cluster, where HDBSCAN
  calls it noise. scikit-learn's implementation (>= 1.3) spares the separate `hdbscan` package and
  its compiled build; scikit-learn comes with umap-learn anyway.

Both are optional (the `map` extra) and imported only here, lazily: without scikit-learn there
are no clusters, with fewer than MIN_POINTS evaluations there is no map; weight_map.json then
still exists with a note saying why, and the report shows that note.
"""

from __future__ import annotations

import importlib
import logging
import math
import warnings
from typing import Any, Sequence

import numpy as np

from lib_pinning.analysis import cluster_process
from lib_pinning.store import GenerationRecord, IndividualRecord, RunStore, atomic_write_json

log = logging.getLogger(__name__)

WEIGHT_MAP_FILE = "weight_map.json"
FORMAT = 1
# Below this many evaluated vectors UMAP's neighbourhood graph is too thin to mean anything.
MIN_POINTS = 15
UMAP_NEIGHBOURS = 15
UMAP_MIN_DIST = 0.1
SEED = 0
MIN_SAMPLES = 3
INSTALL_HINT = "pip install umap-learn scikit-learn (the extension's 'map' extra)"
# UMAP's first use in a process, import and numba compile, measured on the demo's 2-core CPU
# (19 s compile + 1.7 s import); later uses in the same process take 0.1 s.
UMAP_FIRST_USE_SECONDS = 20.0
# The most of a run's time the map may add (the cost bound).
MAX_SHARE = 0.05
UMAP = "umap"
PRINCIPAL_AXES = "principal axes"


class MissingDependency(ImportError):
    """umap-learn or scikit-learn is not installed."""


def _import(module: str, what: str) -> Any:
    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise MissingDependency(f"{what} needs {module.split('.')[0]} ({INSTALL_HINT}): {e}") from e


def embed(vectors: np.ndarray) -> np.ndarray:
    """2-D UMAP coordinates of `vectors` (seeded: the same run gives the same map)."""
    umap = _import("umap", "the weight map's embedding")
    # Said before the wait: numba compiles UMAP on its first use in a process (20-30 s on 2 cores).
    log.info("weight map: embedding %d weight vectors with UMAP (the first use compiles it: ~20 s)", len(vectors))
    neighbours = max(2, min(UMAP_NEIGHBOURS, len(vectors) - 1))
    reducer = umap.UMAP(n_neighbors=neighbours, min_dist=UMAP_MIN_DIST, n_components=2, random_state=SEED)
    with warnings.catch_warnings():
        # A fixed random_state makes UMAP single-threaded and it warns so; that is the point here.
        warnings.simplefilter("ignore", UserWarning)
        return np.asarray(reducer.fit_transform(vectors), dtype=float)


def principal_axes(vectors: np.ndarray) -> np.ndarray:
    """`vectors` projected on their first two principal axes (a zero column when they span one
    dimension), each axis's sign fixed by its largest loading so the same run gives the same map."""
    centred = np.asarray(vectors, dtype=float) - np.mean(vectors, axis=0)
    _, _, axes = np.linalg.svd(centred, full_matrices=False)
    axes = axes[:2]
    axes = axes * np.sign(axes[np.arange(len(axes)), np.argmax(np.abs(axes), axis=1)])[:, None]
    projected = centred @ axes.T
    return np.hstack([projected, np.zeros((len(projected), 2 - projected.shape[1]))])


def choose_embedding(run_seconds: float | None) -> str:
    """UMAP when its first use costs at most MAX_SHARE of the run (or the run's time is unknown:
    a run folder from before run.json kept it), else principal axes (module docstring)."""
    if run_seconds is None or run_seconds * MAX_SHARE >= UMAP_FIRST_USE_SECONDS:
        return UMAP
    return PRINCIPAL_AXES


def cluster(vectors: np.ndarray) -> np.ndarray:
    """HDBSCAN labels of `vectors` (-1: noise), module docstring."""
    # min_samples defaults to min_cluster_size, whose core distances are too coarse for a few dozen
    # points in d dimensions (the demo's 55 points in 7-D came out as one noise cloud); 3 keeps
    # the density estimate local.
    params = {"min_cluster_size": max(5, len(vectors) // 20), "min_samples": MIN_SAMPLES}
    # The report's helper process, which imported scikit-learn while the run generated
    # (cluster_process.py); else (none, not ready, or it failed) here.
    labels = cluster_process.labels(vectors, params)
    if labels is None:
        hdbscan = _import(cluster_process.MODULE, "the weight map's clusters").HDBSCAN
        labels = hdbscan(copy=True, **params).fit_predict(vectors)
    return np.asarray(labels, dtype=int)


def _points(records: Sequence[IndividualRecord], dim: int) -> list[IndividualRecord]:
    """Every evaluated vector with a loss: failed individuals have none, and a repeat is the same
    rendered prompt as an earlier point (its image and loss are copies)."""
    return [
        r for r in records
        if r.status == "ok" and r.repeat_of is None and len(r.x_evaluated) == dim and math.isfinite(r.loss)
    ]


def _representative(record: IndividualRecord, store: RunStore | None) -> str | None:
    if not record.images:
        return None
    name = f"gen-{record.generation:03d}/ind-{record.index:03d}/{record.images[0]}"
    return name if store is None or (store.root / name).is_file() else None


def build(
    records: Sequence[IndividualRecord],
    generations: Sequence[GenerationRecord],
    dim: int,
    store: RunStore | None = None,
    run_seconds: float | None = None,
) -> dict[str, Any]:
    """weight_map.json's content: points (with 2-D coordinates when embedded), clusters, the mean's
    path and notes saying what was skipped and why. `run_seconds`: the run's time, which chooses
    the embedding (choose_embedding)."""
    points = _points(records, dim)
    notes: list[str] = []
    path_vectors = [np.zeros(dim)] + [np.asarray(g.centroid, dtype=float) for g in generations if len(g.centroid) == dim]
    path_labels = [0] + [g.generation for g in generations if len(g.centroid) == dim]
    data: dict[str, Any] = {
        "format": FORMAT,
        "method": {"embedding": None, "neighbours": UMAP_NEIGHBOURS, "min_dist": UMAP_MIN_DIST, "seed": SEED,
                   "clustering": "sklearn.cluster.HDBSCAN on the offsets"},
        "embedded": False,
        "clustered": False,
        "notes": notes,
        "points": [
            {"generation": r.generation, "index": r.index, "loss": r.loss, "degenerate": r.degenerate,
             "x": [float(v) for v in r.x_evaluated], "xy": None, "cluster": None}
            for r in points
        ],
        "clusters": [],
        "path": [{"generation": g, "x": v.tolist(), "xy": None} for g, v in zip(path_labels, path_vectors)],
    }
    if len(points) < MIN_POINTS:
        notes.append(f"{len(points)} evaluated weight vectors: too few for a map (UMAP needs at least {MIN_POINTS})")
        return data
    x = np.asarray([r.x_evaluated for r in points], dtype=float)
    try:
        labels = cluster(x)
    except MissingDependency as e:
        notes.append(str(e))
    else:
        data["clustered"] = True
        best = {int(k): min((r for r, label in zip(points, labels) if label == k), key=lambda r: r.loss)
                for k in sorted(set(labels.tolist())) if k >= 0}
        for point, label in zip(data["points"], labels):
            point["cluster"] = int(label)
        for k, member in best.items():
            inside = labels == k
            data["clusters"].append({
                "id": k,
                "size": int(inside.sum()),
                "centre": x[inside].mean(axis=0).tolist(),
                "mean_loss": float(np.mean([r.loss for r, i in zip(points, inside) if i])),
                "best": {"generation": member.generation, "index": member.index, "loss": member.loss,
                         "prompt": member.prompt, "negative_prompt": member.negative_prompt,
                         "image": _representative(member, store)},
            })
        if not best:
            notes.append("HDBSCAN found no clusters: the search sampled one diffuse region")
    method = choose_embedding(run_seconds)
    coordinates = None
    if method == UMAP:
        try:
            coordinates = embed(np.vstack([x, *path_vectors]))
        except MissingDependency as e:
            notes.append(f"{e}; drawn on the principal axes instead")
    else:
        notes.append(f"drawn on the principal axes, not with UMAP: UMAP's first use in a process costs about "
                     f"{UMAP_FIRST_USE_SECONDS:.0f} s, more than {MAX_SHARE:.0%} of this run's {run_seconds:.0f} s "
                     f"(runs of {UMAP_FIRST_USE_SECONDS / MAX_SHARE:.0f} s or more get UMAP)")
    if coordinates is None:
        method = PRINCIPAL_AXES
        coordinates = principal_axes(np.vstack([x, *path_vectors]))
    data["method"]["embedding"] = method
    data["embedded"] = True
    for point, xy in zip(data["points"], coordinates[: len(points)]):
        point["xy"] = xy.tolist()
    for step, xy in zip(data["path"], coordinates[len(points):]):
        step["xy"] = xy.tolist()
    return data


def write_weight_map(store: RunStore) -> dict[str, Any]:
    """Build the map of a run directory and write weight_map.json (atomically)."""
    run = store.read_run()
    records = list(store.iter_individuals())
    cma = run.get("cma") if isinstance(run.get("cma"), dict) else {}
    dim = cma.get("dim") if isinstance(cma.get("dim"), int) else (len(records[0].x_evaluated) if records else 0)
    seconds = run.get("seconds")
    data = build(records, list(store.iter_generations()), dim, store,
                 run_seconds=float(seconds) if isinstance(seconds, (int, float)) else None)
    _add_shown_prompts(data, run.get("space"))
    atomic_write_json(store.root / WEIGHT_MAP_FILE, data)
    return data


def _add_shown_prompts(data: dict[str, Any], space_json: Any) -> None:
    """Each cluster's best prompts as a person copies them (PromptSpace.display: no schedule guard),
    beside the generated ones; left out when the run's space cannot be read back."""
    from lib_pinning.prompt import PromptSpace

    try:
        space = PromptSpace.from_json(space_json)
    except (ValueError, KeyError, TypeError):
        return
    by_id = {(p["generation"], p["index"]): p["x"] for p in data["points"]}
    for c in data["clusters"]:
        x = by_id.get((c["best"]["generation"], c["best"]["index"]))
        if x is not None and len(x) == space.dim:
            c["best"]["shown_prompt"], c["best"]["shown_negative_prompt"] = space.display(x)
