"""The weight map (lib_pinning.analysis.weight_map): clusters and the mean's path on synthetic
records, the report's "weight-map" section with and without umap-learn / scikit-learn."""

from __future__ import annotations

import importlib.util
import json
import sys
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest

from lib_pinning.analysis import weight_map
from lib_pinning.generator import ToyGenerator, ToySettings
from lib_pinning.options import PinningOptions
from lib_pinning.report import Reporter
from lib_pinning.report.analysis import WEIGHT_MAP_PLOT
from lib_pinning.run import PinningRun, derive_seeds
from lib_pinning.store import GenerationRecord, IndividualRecord

HAVE_SKLEARN = importlib.util.find_spec("sklearn") is not None
HAVE_UMAP = importlib.util.find_spec("umap") is not None


def record(g: int, i: int, x, loss: float, **changes) -> IndividualRecord:
    fields = dict(generation=g, index=i, x=list(x), x_evaluated=list(x), weights=[[1.0]] * len(x), prompt=f"p{g}.{i}",
                  negative_prompt="", seeds=[1], fitness=[loss], loss=loss, images=["00-1.png"])
    return IndividualRecord(**{**fields, **changes})


def generation(g: int, centroid) -> GenerationRecord:
    return GenerationRecord(g, 0, 0, 0, 0, 0, 0, [g, 0], 0, list(centroid), 0.1, 1, [1], [1], list(centroid), 0)


def two_regions(per_region: int = 20) -> tuple[list[IndividualRecord], list[GenerationRecord]]:
    """Two tight regions of 3-D offsets; the second has the lower losses."""
    rng = np.random.default_rng(1)
    records = []
    for k in range(2 * per_region):
        centre = np.array([-1.0, 0.0, 0.0]) if k < per_region else np.array([1.0, 0.5, 0.0])
        x = centre + rng.normal(scale=0.05, size=3)
        records.append(record(1 + k // 10, k % 10, x, (0.5 if k < per_region else 0.2) + 0.01 * rng.random()))
    records.append(record(9, 0, [0.0, 0.0, 0.0], 0.0, status="failed"))  # no loss: not on the map
    return records, [generation(1, [-1, 0, 0]), generation(2, [0, 0.2, 0]), generation(3, [1, 0.5, 0])]


def first_two(vectors: np.ndarray) -> np.ndarray:
    """A stand-in embedding (UMAP takes seconds to JIT-compile): the first two offsets."""
    return np.asarray(vectors, dtype=float)[:, :2]


@pytest.fixture
def no_umap(monkeypatch):
    monkeypatch.setitem(sys.modules, "umap", None)  # `import umap` now raises ImportError


@pytest.fixture
def no_sklearn(monkeypatch):
    monkeypatch.setitem(sys.modules, "sklearn", None)
    monkeypatch.setitem(sys.modules, "sklearn.cluster", None)


@pytest.mark.skipif(not HAVE_SKLEARN, reason="scikit-learn is not installed")
def test_two_regions_make_two_clusters_with_their_best_and_the_path(monkeypatch):
    monkeypatch.setattr(weight_map, "embed", first_two)
    records, generations = two_regions()
    data = weight_map.build(records, generations, 3)
    assert data["embedded"] and data["clustered"] and data["notes"] == []
    assert len(data["points"]) == 40  # the failed record is left out
    assert len(data["clusters"]) == 2
    for c in data["clusters"]:
        members = [r for r, p in zip(records, data["points"]) if p["cluster"] == c["id"]]
        assert c["size"] == len(members)
        assert c["best"]["loss"] == min(r.loss for r in members)
        assert c["best"]["prompt"] == min(members, key=lambda r: r.loss).prompt
    low = min(data["clusters"], key=lambda c: c["best"]["loss"])
    assert low["centre"] == pytest.approx([1.0, 0.5, 0.0], abs=0.05)
    # The mean's path: the prompt as written (x = 0), then each generation's centroid, embedded.
    assert [p["generation"] for p in data["path"]] == [0, 1, 2, 3]
    assert data["path"][3]["xy"] == pytest.approx([1.0, 0.5])
    json.dumps(data, allow_nan=False)


def test_few_points_skip_the_embedding_with_a_note(monkeypatch):
    def never(vectors):
        raise AssertionError("UMAP must not run on a handful of points")

    monkeypatch.setattr(weight_map, "embed", never)
    records, generations = two_regions(per_region=5)
    data = weight_map.build(records, generations, 3)
    assert not data["embedded"] and not data["clustered"]
    assert "too few" in data["notes"][0] and "10" in data["notes"][0]


@pytest.mark.umap  # the real embed(), whose import fails
def test_without_umap_the_map_says_so_and_uses_the_principal_axes(no_umap):
    records, generations = two_regions()
    data = weight_map.build(records, generations, 3)  # no run time: UMAP is the choice
    assert data["embedded"] and data["method"]["embedding"] == weight_map.PRINCIPAL_AXES
    assert any("umap" in note and "pip install" in note for note in data["notes"])
    x = np.vstack([[p["x"] for p in data["points"]], [p["x"] for p in data["path"]]])
    xy = np.vstack([[p["xy"] for p in data["points"]], [p["xy"] for p in data["path"]]])
    assert xy == pytest.approx(weight_map.principal_axes(x))
    assert data["clustered"] == HAVE_SKLEARN  # the clusters do not need the embedding


@pytest.mark.parametrize("seconds, method", [(5.8, weight_map.PRINCIPAL_AXES), (399.0, weight_map.PRINCIPAL_AXES),
                                              (400.0, weight_map.UMAP), (None, weight_map.UMAP)])
def test_umap_only_when_its_first_use_is_at_most_5_percent_of_the_run(monkeypatch, seconds, method):
    used = []
    monkeypatch.setattr(weight_map, "embed", lambda vectors: used.append(len(vectors)) or first_two(vectors))
    records, generations = two_regions()
    data = weight_map.build(records, generations, 3, run_seconds=seconds)
    assert data["embedded"] and data["method"]["embedding"] == method
    assert bool(used) == (method == weight_map.UMAP)
    if method == weight_map.PRINCIPAL_AXES:
        assert any("principal axes" in note and "400 s" in note for note in data["notes"])


def test_principal_axes_are_the_largest_spread_with_a_fixed_sign():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(50, 4)) * [3.0, 0.1, 1.0, 0.1]
    xy = weight_map.principal_axes(x)
    assert xy.shape == (50, 2)
    assert np.corrcoef(xy[:, 0], x[:, 0])[0, 1] > 0.99 and np.corrcoef(xy[:, 1], x[:, 2])[0, 1] > 0.95
    assert weight_map.principal_axes(-x) == pytest.approx(-xy)  # sign follows the data, not the SVD
    line = weight_map.principal_axes(np.arange(6.0)[:, None])
    assert line[:, 1] == pytest.approx(np.zeros(6)) and line[:, 0] == pytest.approx(np.arange(6.0) - 2.5)


def test_without_sklearn_no_clusters_and_a_note(no_sklearn, monkeypatch):
    monkeypatch.setattr(weight_map, "embed", first_two)
    records, generations = two_regions()
    data = weight_map.build(records, generations, 3)
    assert data["embedded"] and not data["clustered"] and data["clusters"] == []
    assert any("sklearn" in note for note in data["notes"])


@pytest.mark.slow
@pytest.mark.umap
@pytest.mark.skipif(not (HAVE_UMAP and HAVE_SKLEARN), reason="umap-learn / scikit-learn are not installed")
def test_real_umap_is_deterministic():
    records, generations = two_regions()
    first = weight_map.build(records, generations, 3)
    second = weight_map.build(records, generations, 3)
    assert first["embedded"] and first == second


# -- the report of a real toy run, with the dependencies missing -------------------------------------


class _Section(HTMLParser):
    """The text of one <section id=...> (and the sources of its images)."""

    def __init__(self, wanted: str) -> None:
        super().__init__()
        self.wanted, self.depth, self.text, self.images = wanted, 0, [], []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "section" and (self.depth or attrs.get("id") == self.wanted):
            self.depth += 1
        elif self.depth and tag == "img":
            self.images.append(attrs.get("src"))

    def handle_endtag(self, tag):
        if tag == "section" and self.depth:
            self.depth -= 1

    def handle_data(self, data):
        if self.depth:
            self.text.append(data)


def toy_run(runs_dir: Path) -> Path:
    options = PinningOptions(generations=4, cma_lambda=4, cli_log=False, stop_early=False)  # 17 evaluations
    run = PinningRun.start(generator=ToyGenerator(ToySettings(steps=6)), prompt="a red circle, blue square",
                           negative_prompt="", seeds=derive_seeds(2, 2), options=options, runs_dir=runs_dir)
    return run.execute(reporter=Reporter(budget=None)).run_dir


@pytest.mark.umap
def test_the_report_of_a_run_without_umap_or_sklearn_has_the_note_and_an_unclustered_map(tmp_path, no_umap, no_sklearn):
    root = toy_run(tmp_path)
    section = _Section("weight-map")
    section.feed((root / "index.html").read_text())
    text = " ".join(" ".join(section.text).split())
    assert "pip install umap-learn scikit-learn" in text and "first two principal axes" in text
    assert (root / WEIGHT_MAP_PLOT).exists() and any(src.startswith(WEIGHT_MAP_PLOT) for src in section.images)
    data = json.loads((root / weight_map.WEIGHT_MAP_FILE).read_text())
    assert len(data["points"]) >= weight_map.MIN_POINTS and data["embedded"] and not data["clustered"]
    assert (root / "influence.json").is_file()  # the influence needs neither


def test_a_new_run_from_a_cluster_starts_at_its_centre(tmp_path, monkeypatch):
    from lib_pinning.analysis.region import MIN_STD, region_start
    from lib_pinning.cli import main
    from lib_pinning.prompt import PromptSpace
    from lib_pinning.store import RunStore

    # A fixed clustering (HDBSCAN may find no cluster in 17 toy points) and the stand-in embedding.
    monkeypatch.setattr(weight_map, "cluster", lambda vectors: (np.arange(len(vectors)) % 2).astype(int))
    monkeypatch.setattr(weight_map, "embed", first_two)
    root = toy_run(tmp_path / "runs")
    data = json.loads((root / weight_map.WEIGHT_MAP_FILE).read_text())
    centre = next(c for c in data["clusters"] if c["id"] == 1)["centre"]
    old = RunStore.open(root).read_run()
    start = region_start(root, 1)
    assert (start.prompt, start.negative_prompt) == PromptSpace.from_json(old["space"]).display(centre)
    assert start.seeds == old["seeds"] and MIN_STD <= start.initial_std <= old["options"]["initial_std"]
    with pytest.raises(ValueError, match="no cluster 5; its clusters: 0, 1"):
        region_start(root, 5)

    assert main(["resume", str(root), "--from-cluster", "1", "--generations", "1"]) == 0
    (new,) = [p for p in (tmp_path / "runs").iterdir() if p != root]
    info = RunStore.open(new).read_run()
    assert info["prompt"] == start.prompt and info["options"]["generations"] == 1
    assert info["options"]["initial_std"] == start.initial_std and info["options"]["centroid_radius"] == 0
    assert (info["options"]["from_run"], info["options"]["from_cluster"]) == (str(root), 1)  # where it started
    assert RunStore.open(root).read_run()["status"] == "finished"  # the old run is left as it was

    # The same start from the options (the WebUI's, the API's, the demo's flags): its own options,
    # the old run's prompts and seeds, the old run named by its number in the runs folder.
    assert main(["demo", "--runs-dir", str(tmp_path / "runs"), "--from-run", str(int(root.name[:5])),
                 "--from-cluster", "1", "--generations", "1", "--cma-lambda", "3", "--seed", "40"]) == 0
    (newest,) = [p for p in (tmp_path / "runs").iterdir() if p not in (root, new)]
    info = RunStore.open(newest).read_run()
    assert (info["prompt"], info["negative_prompt"], info["seeds"]) == (start.prompt, start.negative_prompt, old["seeds"])
    assert info["options"]["initial_std"] == start.initial_std and info["options"]["cma_lambda"] == 3
    assert info["options"]["from_run"] == str(int(root.name[:5]))  # as the user named it


def test_a_start_from_a_run_or_cluster_that_does_not_exist_is_bad_input(tmp_path, monkeypatch, capsys):
    from lib_pinning.analysis.region import find_run, region_of
    from lib_pinning.cli import main
    from lib_pinning.options_model import PinningInputError

    monkeypatch.setattr(weight_map, "cluster", lambda vectors: np.zeros(len(vectors), dtype=int))
    root = toy_run(tmp_path / "runs")
    runs = tmp_path / "runs"
    assert region_of(PinningOptions(), [runs]) is None  # empty: an ordinary start
    assert find_run(root.name, [runs]) == root and find_run(str(root)) == root and find_run("0", [runs]) == root
    with pytest.raises(PinningInputError, match="Start from run: no run '7' .*or a run id in"):
        region_of(PinningOptions(from_run="7"), [runs])
    with pytest.raises(PinningInputError, match="Start from cluster: the run has no cluster 3; its clusters: 0"):
        region_of(PinningOptions(from_run=root.name, from_cluster=3), [runs])
    (root / weight_map.WEIGHT_MAP_FILE).unlink()
    with pytest.raises(PinningInputError, match="Start from cluster: .* has no weight_map.json: rebuild its report"):
        region_of(PinningOptions(from_run=root.name), [runs])

    before = sorted(runs.iterdir())
    with pytest.raises(SystemExit) as exited:
        main(["demo", "--runs-dir", str(runs), "--from-run", "missing"])
    assert exited.value.code == 2 and "no run 'missing'" in capsys.readouterr().err
    assert sorted(runs.iterdir()) == before  # nothing was started


def test_a_failing_analysis_is_logged_and_the_report_still_written(tmp_path, monkeypatch, caplog):
    from lib_pinning.analysis import influence

    def broken(store):
        raise RuntimeError("a bug in the analysis")

    monkeypatch.setattr(influence, "write_influence", broken)
    root = toy_run(tmp_path)
    section = _Section("influence")
    section.feed((root / "index.html").read_text())
    assert "The analysis failed" in " ".join(section.text)
    assert "a bug in the analysis" in caplog.text
    assert (root / weight_map.WEIGHT_MAP_FILE).is_file()  # the other analysis is unaffected
