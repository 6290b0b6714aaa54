"""Helpers the real-WebUI checks share: request bodies, images and infotexts of an answer."""

from __future__ import annotations

import base64
import io
import json
from collections.abc import Mapping
from typing import Any

import numpy as np
from PIL import Image

from pinning_samplers.sampling import SAMPLERS
from tests.integration.harness import Response, Server

SCRIPT = "prompt pinning"
HYPERBATCH = tuple(info.label for info in SAMPLERS.values())
"""Every hyperbatch sampler name the WebUI must list (1.9+: one per sampler, no schedule variants)."""

TINY = {"width": 64, "height": 64, "steps": 4, "cfg_scale": 7.0, "seed": 5, "batch_size": 2,
        "sampler_name": "Euler a", "prompt": "a red circle, soft light", "negative_prompt": ""}
"""A generation that takes well under a second on the tiny checkpoints."""

PIN = {"generations": 2, "cma_lambda": 2, "stop_early": False}
"""The smallest pinning run that still runs CMA-ES updates (baseline + 2 generations of 2)."""


def images(answer: Response) -> list[np.ndarray]:
    """The answer's images as float arrays HxWx3 in [0, 1]."""
    out = []
    for encoded in answer.json["images"]:
        with Image.open(io.BytesIO(base64.b64decode(encoded))) as image:
            out.append(np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0)
    return out


def info(answer: Response) -> dict[str, Any]:
    return json.loads(answer.json["info"])


def infotext_fields(infotext: str) -> dict[str, str]:
    """'Key: value' pairs of an infotext's last line (the WebUI's parameters line)."""
    last = infotext.strip().splitlines()[-1]
    fields = {}
    for part in last.split(", "):
        key, sep, value = part.partition(": ")
        if sep:
            fields[key.strip()] = value.strip()
    return fields


def distinct(batch: list[np.ndarray], tolerance: float = 1.0 / 255) -> bool:
    """Every pair of images differs somewhere by more than `tolerance`."""
    return all(np.abs(a - b).max() > tolerance for i, a in enumerate(batch) for b in batch[i + 1:])


def pin(server: Server, *, endpoint: str = "txt2img", options: Mapping[str, Any] | None = None,
        **fields: Any) -> Response:
    """A pinning run with the README's object-form script_args."""
    body = {**TINY, "batch_size": 2, **fields, "script_name": SCRIPT, "script_args": [{**PIN, **(options or {})}]}
    return server.post(f"/sdapi/v1/{endpoint}", server.generation(body))


def pin_run(server: Server, answer: Response) -> dict[str, Any]:
    """The run an answer's images come from: its "Pin run" infotext field, looked up with the
    extension's /prompt-pinning/v1/runs/{run_id} route (run.json plus run_dir, report_url...)."""
    texts = info(answer)["infotexts"]
    assert texts, f"the answer has no infotexts: {answer.text[:500]}"
    run_id = infotext_fields(texts[0]).get("Pin run")
    assert run_id, f"no 'Pin run' in the infotext {texts[0]!r}"
    return server.get(f"/prompt-pinning/v1/runs/{run_id}").ok().json


def script_info(server: Server) -> dict[str, Any]:
    scripts = server.get("/sdapi/v1/script-info").ok().json
    found = [s for s in scripts if s["name"] == SCRIPT and not s["is_img2img"]]
    assert found, f"{SCRIPT!r} is not in /sdapi/v1/script-info: {[s['name'] for s in scripts]}"
    return found[0]
