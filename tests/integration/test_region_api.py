"""Pin to a region on a real WebUI: an img2img run started from a txt2img run's cluster, named by
its id alone (the WebUI keeps each tab's runs in its own output folder under the API)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tests.integration import checks
from tests.integration.harness import Server
from tests.integration.test_img2img_api import img2img_fields


def test_an_img2img_run_starts_from_a_txt2img_runs_cluster_by_its_id(webui_server: Server,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    from lib_pinning.analysis import region, weight_map
    from lib_pinning.store import RunStore

    first = checks.pin_run(webui_server, checks.pin(webui_server).ok())
    assert first["tab"] == "txt2img"
    run_dir = Path(first["run_dir"])
    # The smallest run's 5 points are too few for a real map: a map with two clusters, written
    # here into the run folder the WebUI wrote (the same machine).
    monkeypatch.setattr(weight_map, "MIN_POINTS", 3)
    monkeypatch.setattr(weight_map, "cluster", lambda vectors: (np.arange(len(vectors)) % 2).astype(int))
    weight_map.write_weight_map(RunStore.open(run_dir))
    start = region.region_start(run_dir, 1)

    options = {**checks.PIN, "from_run": first["run_id"], "from_cluster": 1}
    body = webui_server.generation({**img2img_fields(), "script_name": checks.SCRIPT, "script_args": [options]})
    answer = webui_server.post("/sdapi/v1/img2img", body).ok()
    second = webui_server.get(
        f"/prompt-pinning/v1/runs/{checks.pin_run(webui_server, answer)['run_id']}?tab=img2img").ok().json
    assert second["tab"] == "img2img" and second["status"] == "finished"
    assert (second["prompt"], second["negative_prompt"], second["seeds"]) == (
        start.prompt, start.negative_prompt, start.seeds)

    missing = webui_server.post("/sdapi/v1/img2img", webui_server.generation(
        {**img2img_fields(), "script_name": checks.SCRIPT, "script_args": [{**checks.PIN, "from_run": "99999"}]}))
    assert missing.status == 422 and "Start from run: no run '99999'" in missing.text
