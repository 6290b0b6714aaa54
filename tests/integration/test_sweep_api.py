"""The sensitivity sweep option on a real WebUI: an API run with sweep_batches > 0 sweeps around its
best with the WebUI's own process_images after the search, and its influence.json carries the sweep."""

from __future__ import annotations

import json
from pathlib import Path

from tests.integration import checks
from tests.integration.harness import Server


def test_an_api_run_with_the_sweep_option_writes_the_sweep_into_influence_json(webui_server: Server) -> None:
    # Phrase units: the 2 phrases need 5 evaluations for influence.json's centre, the run has 5.
    answer = checks.pin(webui_server, options={"granularity": "phrase", "sweep_batches": 8}).ok()
    texts = checks.info(answer)["infotexts"]
    assert len(checks.images(answer)) == len(texts) == 4  # the best batch, then the baseline: no sweep images
    assert all(checks.infotext_fields(t).get("Pin sweep batches") == "8" for t in texts)
    run = checks.pin_run(webui_server, answer)
    assert run["status"] == "finished" and run["batches"] == 1 + 2 * 2  # the search's count is the search's
    # At most the budget: a side whose step lands in a failure mode with no budget left for a
    # smaller step is measured one-sided from the best batch, which costs nothing.
    assert run["sweep"]["status"] == "done" and 1 <= run["sweep"]["batches"] <= 8, run["sweep"]
    data = json.loads((Path(run["run_dir"]) / "influence.json").read_text())  # the WebUI's folder, this machine
    swept = data["sweep"]
    assert swept["batches"] == run["sweep"]["batches"] and swept["seeds"] == run["seeds"] and len(swept["units"]) == 2
    # The run's seeds first; a budget beyond 2 batches per unit adds seed sets after them.
    assert swept["seed_sets"][0] == run["seeds"] and all(u["seed_sets"] >= 1 for u in swept["units"])
    assert (data["center"]["generation"], data["center"]["index"]) == (run["best"]["generation"], run["best"]["index"])
    report = webui_server.get(f"/prompt-pinning/v1/runs/{run['run_id']}/files/index.html").ok().text
    assert "Sensitivity sweep" in report.split('id="influence"', 1)[1].split("</section>", 1)[0]
