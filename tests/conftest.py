"""Test-session setup shared by every test module.

torch uses one intra-op thread per test worker: the suite runs with `-n 2` on 2 cores, and the
tensors here are small, so more threads only oversubscribe the cores (measured 5x slower).

`webui`: a fresh stand-in WebUI (tests/webui_env.py) for one test. Parametrise it indirectly with
"1.10" (default), "1.8", or either followed by "-sdxl" for the SDXL-flavoured toy checkpoint:
    @pytest.mark.parametrize("webui", ["1.10", "1.8-sdxl"], indirect=True)

The weight map's UMAP embedding (lib_pinning/analysis/weight_map.py) JIT-compiles with numba on
first use in a process, 20-30 s on these cores, and every toy run of 15 or more evaluations would
pay it in its final report update when it ran long enough to get UMAP (or has no recorded time):
tests not marked `umap` get the map's own cheap embedding, the first two principal axes. The
map's own tests check the real UMAP under that mark.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from tests.webui_env import WebUIStub, webui_stub

torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _fast_weight_map(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    if request.node.get_closest_marker("umap") is None:
        from lib_pinning.analysis import weight_map

        monkeypatch.setattr(weight_map, "embed", weight_map.principal_axes)


@pytest.fixture
def webui(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[WebUIStub]:
    version, _, flavour = str(getattr(request, "param", "1.10")).partition("-")
    with webui_stub(version, data_dir=tmp_path / "webui", sdxl=flavour == "sdxl") as stub:
        yield stub
