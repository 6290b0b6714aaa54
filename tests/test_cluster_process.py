"""The weight map's helper process (lib_pinning.analysis.cluster_process): the same labels as a fit
in the run's process, a fallback to that fit when the helper fails, at most one helper per process,
and a report that starts it at its first live update and leaves no process behind."""

from __future__ import annotations

import importlib.util
import json
import logging
import signal
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from lib_pinning.analysis import cluster_process, weight_map
from lib_pinning.analysis.cluster_process import ClusterProcess
from lib_pinning.generator import ToyGenerator, ToySettings
from lib_pinning.options import PinningOptions
from lib_pinning.report import Reporter
from lib_pinning.run import PinningRun, derive_seeds

pytestmark = pytest.mark.skipif(importlib.util.find_spec("sklearn") is None, reason="scikit-learn is not installed")

PARAMS = {"min_cluster_size": 5, "min_samples": 3}


def two_regions() -> np.ndarray:
    rng = np.random.default_rng(3)
    return np.vstack([rng.normal([-1.0, 0.0, 0.0], 0.05, (20, 3)), rng.normal([1.0, 0.5, 0.0], 0.05, (20, 3))])


def here(vectors: np.ndarray) -> np.ndarray:
    from sklearn.cluster import HDBSCAN

    return HDBSCAN(copy=True, **PARAMS).fit_predict(vectors)


@pytest.fixture
def fresh_process(monkeypatch):
    """As in a process that has not imported scikit-learn's clusterer nor started a helper."""
    monkeypatch.setattr(cluster_process, "_started", False)
    monkeypatch.delitem(sys.modules, cluster_process.MODULE, raising=False)
    monkeypatch.setattr(cluster_process, "_spare_core", lambda: True)  # the test machine's load varies


def test_the_helper_gives_the_labels_of_a_fit_here_and_ends():
    vectors = two_regions()
    helper = ClusterProcess.spawn()
    assert helper is not None
    process = helper._process
    labels = helper.labels(vectors, PARAMS)
    assert labels is not None and labels.tolist() == here(vectors).tolist()
    assert sorted(set(labels.tolist())) == [0, 1]
    assert process.returncode is not None  # it ended with its answer
    assert helper.labels(vectors, PARAMS) is None  # used once


def test_a_failed_helper_leaves_the_fit_to_this_process(caplog):
    vectors = two_regions()
    helper = ClusterProcess.spawn()
    helper._process.kill()
    helper._process.wait()
    with caplog.at_level(logging.WARNING, logger=cluster_process.__name__):
        with cluster_process.serving(helper):
            labels = weight_map.cluster(vectors)
    assert "the clustering process failed" in caplog.text
    assert labels.tolist() == here(vectors).tolist()


def test_the_map_asks_the_helper_it_is_served(monkeypatch):
    vectors = two_regions()
    asked = []
    monkeypatch.setattr(ClusterProcess, "labels", lambda self, v, params: asked.append(params) or np.zeros(len(v), int))
    helper = ClusterProcess(None)  # type: ignore[arg-type]
    with cluster_process.serving(helper):
        assert weight_map.cluster(vectors).tolist() == [0] * len(vectors)
    assert asked == [{"min_cluster_size": 5, "min_samples": 3}]
    assert cluster_process.labels(vectors, PARAMS) is None  # outside: none served


def test_one_helper_per_process_and_none_once_the_clusterer_is_imported(fresh_process, monkeypatch):
    first = ClusterProcess.start()
    try:
        assert first is not None and ClusterProcess.start() is None
    finally:
        first.close()
    assert first._process is None
    monkeypatch.setattr(cluster_process, "_started", False)
    monkeypatch.setattr(cluster_process, "_spare_core", lambda: False)  # a busy machine
    assert ClusterProcess.start() is None and not cluster_process._started
    monkeypatch.setattr(cluster_process, "_spare_core", lambda: True)
    monkeypatch.setitem(sys.modules, cluster_process.MODULE, sys.modules.get("numpy"))  # "imported already"
    assert ClusterProcess.start() is None


@pytest.mark.parametrize("cores, load, spare", [(1, 0.0, False), (2, 0.9, True), (2, 1.6, False), (16, 7.0, True)])
def test_a_helper_only_beside_a_run_that_leaves_a_core_idle(monkeypatch, cores, load, spare):
    monkeypatch.setattr(cluster_process.os, "cpu_count", lambda: cores)
    monkeypatch.setattr(cluster_process.os, "getloadavg", lambda: (load, load, load))
    assert cluster_process._spare_core() is spare


def toy_run(runs_dir: Path, generations: int, reporter: Reporter) -> Path:
    options = PinningOptions(generations=generations, cma_lambda=4, cli_log=False, stop_early=False)
    run = PinningRun.start(generator=ToyGenerator(ToySettings(steps=6)), prompt="a red circle, blue square",
                           negative_prompt="", seeds=derive_seeds(2, 2), options=options, runs_dir=runs_dir)
    return run.execute(reporter=reporter).run_dir


@pytest.mark.parametrize("generations", [4, 1])  # 17 points: a map; 5: too few, the helper is not asked
def test_a_run_starts_the_helper_at_a_live_update_and_leaves_no_process(tmp_path, fresh_process, monkeypatch,
                                                                        generations):
    processes, answers = [], []
    spawn, ask = ClusterProcess.spawn.__func__, ClusterProcess.labels

    def recording_spawn(cls):
        helper = spawn(cls)
        processes.append(helper._process)
        return helper

    monkeypatch.setattr(ClusterProcess, "spawn", classmethod(recording_spawn))
    monkeypatch.setattr(ClusterProcess, "labels", lambda self, v, params: answers.append(ask(self, v, params)) or answers[-1])
    reporter = Reporter(budget=None)  # alive below: its helper must have ended with the final update
    root = toy_run(tmp_path, generations, reporter)
    assert len(processes) == 1
    assert processes[0].poll() is not None  # answered, or ended by the final update
    data = json.loads((root / weight_map.WEIGHT_MAP_FILE).read_text())
    if generations == 1:
        assert answers == [] and not data["clustered"]
        return
    (labels,) = answers
    assert labels is not None and data["clustered"]
    vectors = np.array([p["x"] for p in data["points"]])
    assert labels.tolist() == [p["cluster"] for p in data["points"]] == weight_map_here(vectors)


def weight_map_here(vectors: np.ndarray) -> list[int]:
    with cluster_process.serving(None):
        return weight_map.cluster(vectors).tolist()


def _ignores_sigint(pid: int) -> bool:
    status = Path(f"/proc/{pid}/status").read_text()
    mask = next(line.split()[1] for line in status.splitlines() if line.startswith("SigIgn:"))
    return bool(int(mask, 16) & (1 << (signal.SIGINT - 1)))


@pytest.mark.skipif(not Path("/proc/self/status").is_file(), reason="reads the signal mask from Linux's /proc")
def test_the_helper_outlives_a_ctrl_c_that_the_run_survives():
    vectors = two_regions()
    helper = ClusterProcess.spawn()
    deadline = time.monotonic() + 60
    while not _ignores_sigint(helper._process.pid):  # into the helper's code (slow on a busy machine)
        assert time.monotonic() < deadline and helper._process.poll() is None
        time.sleep(0.02)
    helper._process.send_signal(signal.SIGINT)  # what the terminal sends the process group
    labels = helper.labels(vectors, PARAMS)
    assert labels is not None and labels.tolist() == here(vectors).tolist()
