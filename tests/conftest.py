"""Test-session setup shared by every test module.

torch uses one intra-op thread per test worker: the suite runs with `-n 2` on 2 cores, and the
tensors here are small, so more threads only oversubscribe the cores (measured 5x slower).

`webui`: a fresh stand-in WebUI (tests/webui_env.py) for one test. Parametrise it indirectly with
"1.10" (default), "1.8", or either followed by "-sdxl" for the SDXL-flavoured toy checkpoint:
    @pytest.mark.parametrize("webui", ["1.10", "1.8-sdxl"], indirect=True)

The weight map's UMAP embedding (lib_pinning/analysis/weight_map.py) JIT-compiles with numba on
first use in a process, 20-30 s on these cores, and every toy run of 15 or more evaluations would
pay it in its final report update: tests not marked `umap` get a cheap deterministic stand-in
(the first two principal axes). The map's own tests check the real UMAP under that mark.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.webui_env import WebUIStub, webui_stub

torch.set_num_threads(1)


def _principal_axes(vectors: np.ndarray) -> np.ndarray:
    centred = np.asarray(vectors, dtype=float) - np.mean(vectors, axis=0)
    _, _, axes = np.linalg.svd(centred, full_matrices=False)
    projected = centred @ axes[:2].T
    return np.hstack([projected, np.zeros((len(projected), 2 - projected.shape[1]))])


@pytest.fixture(autouse=True)
def _fast_weight_map(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    if request.node.get_closest_marker("umap") is None:
        from lib_pinning.analysis import weight_map

        monkeypatch.setattr(weight_map, "embed", _principal_axes)


@pytest.fixture
def webui(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[WebUIStub]:
    version, _, flavour = str(getattr(request, "param", "1.10")).partition("-")
    with webui_stub(version, data_dir=tmp_path / "webui", sdxl=flavour == "sdxl") as stub:
        yield stub
