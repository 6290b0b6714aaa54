"""The weight map's helper process (lib_pinning.analysis.cluster_process): the same labels as a fit
in the run's process, a fallback to that fit when the helper is not ready, slow or crashed, an
import at the lowest priority and a fit at the parent's, at most one helper per process and none on
one core, and a report that starts it with the run and leaves no process behind."""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import signal
import subprocess
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
from lib_pinning.report.analysis import INFLUENCE_PLOT, WEIGHT_MAP_PLOT
from lib_pinning.run import PinningRun, derive_seeds

pytestmark = pytest.mark.skipif(importlib.util.find_spec("sklearn") is None, reason="scikit-learn is not installed")

PARAMS = {"min_cluster_size": 5, "min_samples": 3}


def two_regions() -> np.ndarray:
    rng = np.random.default_rng(3)
    return np.vstack([rng.normal([-1.0, 0.0, 0.0], 0.05, (20, 3)), rng.normal([1.0, 0.5, 0.0], 0.05, (20, 3))])


def here(vectors: np.ndarray) -> np.ndarray:
    from sklearn.cluster import HDBSCAN

    return HDBSCAN(copy=True, **PARAMS).fit_predict(vectors)


# Seconds a test waits for a helper's import (a busy 2-core machine, where it runs at nice 19).
READY = 120.0


@pytest.fixture
def fresh_process(monkeypatch):
    """As in a process that has not imported scikit-learn's clusterer nor started a helper."""
    monkeypatch.setattr(cluster_process, "_started", False)
    monkeypatch.setattr(cluster_process, "_pending", None)
    monkeypatch.delitem(sys.modules, cluster_process.MODULE, raising=False)
    monkeypatch.setattr(cluster_process, "_spare_core", lambda: True)  # the test machine may be pinned to one core


def fake_helper(code: str) -> ClusterProcess:
    """A helper process running `code` instead of the helper's."""
    return ClusterProcess(subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE,
                                           stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True))


def test_the_helper_gives_the_labels_of_a_fit_here_and_ends():
    vectors = two_regions()
    helper = ClusterProcess.spawn()
    assert helper is not None and helper.ready(READY)
    process = helper._process
    labels = helper.labels(vectors, PARAMS)
    assert labels is not None and labels.tolist() == here(vectors).tolist()
    assert sorted(set(labels.tolist())) == [0, 1]
    assert process.wait(timeout=READY) is not None  # it ended with its answer
    assert helper.labels(vectors, PARAMS) is None  # used once


@pytest.mark.skipif(not hasattr(os, "setpriority"), reason="no process priorities here")
def test_the_helper_imports_at_the_lowest_priority_and_fits_at_the_parents():
    helper = ClusterProcess.spawn()
    assert helper.ready(READY)
    assert helper.import_nice == cluster_process.IMPORT_NICE == 19
    assert helper.labels(two_regions(), PARAMS) is not None
    # The fit, which the final report waits on, is not left at the import's priority.
    assert helper.fit_nice == os.getpriority(os.PRIO_PROCESS, 0)


def test_a_helper_still_importing_is_ended_and_the_fit_made_here(caplog):
    vectors = two_regions()
    helper = fake_helper("import time; time.sleep(30)")  # says nothing: still importing
    process = helper._process
    with caplog.at_level(logging.INFO, logger=cluster_process.__name__):
        with cluster_process.serving(helper):
            labels = weight_map.cluster(vectors)
    assert "still importing scikit-learn; clustering here" in caplog.text
    assert labels.tolist() == here(vectors).tolist()
    assert process.wait(timeout=READY) == -signal.SIGKILL  # ended, not left to finish its import


def test_a_crashed_helper_leaves_the_fit_to_this_process(caplog):
    vectors = two_regions()
    helper = ClusterProcess.spawn()
    helper._process.kill()
    helper._process.wait()
    helper.ready(READY)  # the reader has seen the pipe close
    with caplog.at_level(logging.WARNING, logger=cluster_process.__name__):
        with cluster_process.serving(helper):
            labels = weight_map.cluster(vectors)
    assert "the clustering process failed (the clustering process ended)" in caplog.text
    assert labels.tolist() == here(vectors).tolist()


def test_a_helper_that_crashes_on_the_request_leaves_the_fit_to_this_process(caplog):
    vectors = two_regions()
    helper = fake_helper('import sys; print(\'{"ready": true}\', flush=True); sys.stdin.readline(); sys.exit(3)')
    assert helper.ready(READY)
    with caplog.at_level(logging.WARNING, logger=cluster_process.__name__):
        with cluster_process.serving(helper):
            labels = weight_map.cluster(vectors)
    assert "the clustering process failed" in caplog.text
    assert labels.tolist() == here(vectors).tolist()


def test_a_helper_too_slow_to_answer_is_ended_and_the_fit_made_here(caplog, monkeypatch):
    monkeypatch.setattr(cluster_process, "TIMEOUT", 0.5)
    vectors = two_regions()
    helper = fake_helper('import time; print(\'{"ready": true}\', flush=True); time.sleep(30)')
    assert helper.ready(READY)
    process = helper._process
    with caplog.at_level(logging.WARNING, logger=cluster_process.__name__):
        with cluster_process.serving(helper):
            labels = weight_map.cluster(vectors)
    assert "gave no answer in 0.5 s; clustering here" in caplog.text
    assert labels.tolist() == here(vectors).tolist()
    assert process.wait(timeout=READY) == -signal.SIGKILL


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
        assert cluster_process.take() is first and cluster_process.take() is None  # taken once
    finally:
        first.close()
    assert first._process is None
    monkeypatch.setattr(cluster_process, "_started", False)
    monkeypatch.setattr(cluster_process, "_spare_core", lambda: False)  # one core
    assert ClusterProcess.start() is None and not cluster_process._started
    monkeypatch.setattr(cluster_process, "_spare_core", lambda: True)
    monkeypatch.setitem(sys.modules, cluster_process.MODULE, sys.modules.get("numpy"))  # "imported already"
    assert ClusterProcess.start() is None


def test_a_helper_left_from_before_scikit_learn_went_missing_is_not_used(fresh_process, monkeypatch):
    helper = ClusterProcess.start()
    process = helper._process
    monkeypatch.setitem(sys.modules, "sklearn", None)  # find_spec now fails: "not installed"
    assert cluster_process.take() is None
    assert process.wait(timeout=READY) == -signal.SIGKILL


@pytest.mark.parametrize("affinity, cpu_count, spare", [({0}, 2, False), ({0, 1}, 2, True), ({3}, 16, False),
                                                        (set(range(16)), 16, True)])
def test_a_helper_only_with_two_usable_cores_whatever_the_machine_has(monkeypatch, affinity, cpu_count, spare):
    # taskset -c 0 on a 2-core machine: os.cpu_count() still says 2.
    monkeypatch.setattr(cluster_process.os, "sched_getaffinity", lambda pid: affinity, raising=False)
    monkeypatch.setattr(cluster_process.os, "cpu_count", lambda: cpu_count)
    assert cluster_process._spare_core() is spare


def test_without_an_affinity_call_the_machines_cores_count(monkeypatch):
    monkeypatch.delattr(cluster_process.os, "sched_getaffinity", raising=False)
    monkeypatch.setattr(cluster_process.os, "cpu_count", lambda: 1)
    assert cluster_process._spare_core() is False
    monkeypatch.setattr(cluster_process.os, "cpu_count", lambda: 4)
    assert cluster_process._spare_core() is True


def toy_run(runs_dir: Path, generations: int, reporter: Reporter) -> Path:
    options = PinningOptions(generations=generations, cma_lambda=4, cli_log=False, stop_early=False)
    run = PinningRun.start(generator=ToyGenerator(ToySettings(steps=6)), prompt="a red circle, blue square",
                           negative_prompt="", seeds=derive_seeds(2, 2), options=options, runs_dir=runs_dir)
    return run.execute(reporter=reporter).run_dir


@pytest.mark.parametrize("generations", [4, 1])  # 17 points: a map; 5: too few, the helper is not asked
def test_a_run_starts_the_helper_with_its_report_and_leaves_no_process(tmp_path, fresh_process, monkeypatch,
                                                                       generations):
    processes, answers = [], []
    spawn, ask = ClusterProcess.spawn.__func__, ClusterProcess.labels

    def recording_spawn(cls):
        helper = spawn(cls)
        processes.append(helper._process)
        return helper

    def ready_then_ask(self, vectors, params):
        assert self.ready(READY)  # as in a run long enough for the import
        answers.append(ask(self, vectors, params))
        return answers[-1]

    monkeypatch.setattr(ClusterProcess, "spawn", classmethod(recording_spawn))
    monkeypatch.setattr(ClusterProcess, "labels", ready_then_ask)
    reporter = Reporter(budget=None)  # alive below: its helper must have ended with the final update
    assert len(processes) == 1  # started with the report, before the run
    root = toy_run(tmp_path, generations, reporter)
    assert len(processes) == 1
    assert processes[0].wait(timeout=READY) is not None  # answered, or ended by the final update
    data = json.loads((root / weight_map.WEIGHT_MAP_FILE).read_text())
    if generations == 1:
        assert answers == [] and not data["clustered"]
        return
    (labels,) = answers
    assert labels is not None and data["clustered"]
    assert (root / WEIGHT_MAP_PLOT).is_file() and (root / INFLUENCE_PLOT).is_file()  # the plots still drawn
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
    assert helper.ready(READY)
    labels = helper.labels(vectors, PARAMS)
    assert labels is not None and labels.tolist() == here(vectors).tolist()
