"""The hyperbatch samplers in the real WebUI: listed once, distinct and reproducible images, Schedule type.

The Reload UI check is in test_zz_reload.py: it restarts the WebUI's scripts, so it runs after the
other checks of the target.
"""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from tests.integration import checks
from tests.integration.harness import Server

BATCH = 4


def test_every_hyperbatch_sampler_is_listed_exactly_once(webui_server: Server) -> None:
    names = Counter(s["name"] for s in webui_server.get("/sdapi/v1/samplers").ok().json)
    assert {name: names[name] for name in checks.HYPERBATCH} == {name: 1 for name in checks.HYPERBATCH}
    strays = [n for n in names if n.endswith(" - Hyperbatch") and n not in checks.HYPERBATCH]
    assert not strays, f"hyperbatch entries that are not samplers of this version: {strays}"


@pytest.mark.parametrize("sampler", checks.HYPERBATCH)
def test_a_hyperbatch_sampler_gives_distinct_images_reproducible_from_the_seed(webui_server: Server,
                                                                                sampler: str) -> None:
    fields = {**checks.TINY, "sampler_name": sampler, "batch_size": BATCH}
    first = webui_server.txt2img(**fields).ok()
    batch = checks.images(first)
    assert len(batch) == BATCH
    assert checks.distinct(batch), f"{sampler}: some images of the batch are identical"
    assert all(np.isfinite(image).all() and image.std() > 0 for image in batch)
    again = checks.images(webui_server.txt2img(**fields).ok())
    assert all(np.array_equal(a, b) for a, b in zip(batch, again)), f"{sampler}: the same seed gave other images"
    info = checks.info(first)
    assert info["all_seeds"] == list(range(fields["seed"], fields["seed"] + BATCH))
    for text in info["infotexts"]:
        assert checks.infotext_fields(text)["Sampler"] == sampler
    other_seed = checks.images(webui_server.txt2img(**{**fields, "seed": fields["seed"] + 100}).ok())
    assert not np.array_equal(batch[0], other_seed[0])


@pytest.mark.parametrize("sampler", ["DPM++ 2M - Hyperbatch", "Euler a - Hyperbatch"])
def test_the_schedule_type_applies_to_a_hyperbatch_sampler(webui_server: Server, sampler: str) -> None:
    if "schedule_type" not in webui_server.target.features:
        pytest.fail(f"{webui_server.target.name} declares no Schedule type (1.9+); this check needs it")
    plain = sampler.removesuffix(" - Hyperbatch")
    fields = {**checks.TINY, "sampler_name": sampler, "batch_size": 2}
    automatic = checks.info(webui_server.txt2img(**fields, scheduler="Automatic").ok())
    plain_automatic = checks.info(webui_server.txt2img(**{**fields, "sampler_name": plain}, scheduler="Automatic").ok())
    assert (checks.infotext_fields(automatic["infotexts"][0])["Schedule type"]
            == checks.infotext_fields(plain_automatic["infotexts"][0])["Schedule type"]), \
        "Automatic picks another schedule than it does for the plain sampler"
    by_schedule = {}
    for scheduler, label in (("karras", "Karras"), ("exponential", "Exponential"), ("uniform", "Uniform")):
        answer = webui_server.txt2img(**fields, scheduler=scheduler).ok()
        assert checks.infotext_fields(checks.info(answer)["infotexts"][0])["Schedule type"] == label
        by_schedule[scheduler] = checks.images(answer)
    assert not np.array_equal(by_schedule["karras"][0], by_schedule["uniform"][0]), \
        "the schedule type did not change the sampling"
