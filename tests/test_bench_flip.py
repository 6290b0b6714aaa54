"""benchmarks/bench_flip.py --memory: each figure is the measured process's own peak."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("flip_evaluator")

from benchmarks import bench_flip as bench  # noqa: E402


def test_peak_memory_is_the_childs_own_not_the_parents(tmp_path: Path) -> None:
    a_path, b_path = tmp_path / "a.npy", tmp_path / "b.npy"
    np.save(a_path, bench.scene(32, 32, 0))
    np.save(b_path, bench.scene(32, 32, 1))
    # A parent that has touched 400 MB more than any child needs: Linux hands ru_maxrss down
    # through fork and exec, so a child reporting that would report this, not itself.
    ballast = np.ones(400 * 2**20 // 8)
    figures = {
        (side, evaluate): bench.peak_rss_mib(side, a_path, b_path, evaluate) for side in "ab" for evaluate in (False, True)
    }
    del ballast
    assert all(0 < mib < 400 for mib in figures.values()), figures
    assert figures["a", True] >= figures["a", False] and figures["b", True] >= figures["b", False]


def test_memory_table_lists_each_size_and_the_ratio() -> None:
    rows = [bench.MemoryRow("4096x4096", 1550.0, 2395.0, 605.0, 411.0)]
    text = bench.memory_table(rows)
    assert "| 4096x4096 | 1550 | 2395 | 0.65 | 605 / 411 |" in text
