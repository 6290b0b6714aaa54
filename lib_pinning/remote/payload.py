"""The WebUI API payload of one batch, and the reading of its response.

Seeds: the API's `seed` is one integer, and the WebUI derives a batch's seeds as `seed + i` when
`subseed_strength` is 0 (modules/processing.py, `process_images_inner`). A run's seeds are usually
consecutive, so a batch is one request with `seed = s_0` and `batch_size = n`; seeds that are not
consecutive are split into consecutive runs, one request each. Each response's `info.all_seeds` is
checked against the seeds asked for, so image i is the image of seed s_i or the batch is refused.
"""

from __future__ import annotations

import base64
import binascii
import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Sequence

import numpy as np
import torch
from PIL import Image

from lib_pinning.options_model import OptionsModel, PinningInputError, option


class MalformedResponse(Exception):
    """The server answered, but not with the batch asked for (bad JSON, missing or wrong images)."""


@dataclass(frozen=True)
class RemoteSettings(OptionsModel):
    """The generation settings every server gets (the WebUI's own txt2img / img2img fields)."""

    mode: Literal["txt2img", "img2img"] = option(
        "txt2img", label="Mode", help="API endpoint: txt2img, or img2img from --init-image.", infotext=None
    )
    sampler_name: str = option("Euler a", label="Sampler", help="Sampler name as the WebUI lists it.", infotext=None)
    scheduler: str = option(
        "Automatic", label="Schedule type",
        help="Schedule type (WebUI 1.9+ and Forge); 'Automatic' leaves it to the sampler.", infotext=None,
    )
    steps: int = option(20, label="Steps", help="Sampling steps.", infotext=None, minimum=1, maximum=150)
    cfg_scale: float = option(7.0, label="CFG scale", help="Classifier-free guidance scale.", infotext=None,
                              minimum=0.0, maximum=30.0)
    width: int = option(512, label="Width", help="Image width in pixels.", infotext=None, minimum=64, maximum=4096)
    height: int = option(512, label="Height", help="Image height in pixels.", infotext=None, minimum=64, maximum=4096)
    denoising_strength: float = option(
        0.75, label="Denoising strength", help="img2img only.", infotext=None, minimum=0.0, maximum=1.0
    )
    init_image: str = option("", label="Init image", help="img2img only: path of the init image.", infotext=None)
    enable_hr: bool = option(False, label="Hires. fix", help="txt2img only: upscale and sample again (denoising strength applies).",
                             infotext=None)
    hr_scale: float = option(2.0, label="Upscale by", help="Hires. fix: output size = size x this.", infotext=None,
                             minimum=1.0, maximum=4.0)
    hr_upscaler: str = option("Latent", label="Upscaler", help="Hires. fix: upscaler name as the WebUI lists it.",
                              infotext=None)
    hr_second_pass_steps: int = option(0, label="Hires steps", help="Hires. fix: steps of the second pass (0: as Steps).",
                                       infotext=None, minimum=0, maximum=150)
    override_settings: str = option(
        "", label="Override settings",
        help='JSON object of WebUI settings for these requests, e.g. {"CLIP_stop_at_last_layers": 2}.',
        infotext=None,
    )

    def _check_combination(self) -> None:
        overrides = self.overrides()  # raises on bad JSON
        if not isinstance(overrides, dict):
            raise PinningInputError("override_settings must be a JSON object")
        if self.mode == "img2img" and not self.init_image:
            raise PinningInputError("img2img needs an init image (--init-image PATH)")

    def output_size(self) -> tuple[int, int]:
        """(height, width) of the images the server answers: with Hires. fix, int(size x scale), as
        the WebUI computes its upscale target (modules/processing.py, calculate_target_resolution)."""
        if self.mode == "txt2img" and self.enable_hr:
            return int(self.height * self.hr_scale), int(self.width * self.hr_scale)
        return self.height, self.width

    def overrides(self) -> dict[str, Any]:
        if not self.override_settings.strip():
            return {}
        try:
            return json.loads(self.override_settings)
        except json.JSONDecodeError as e:
            raise PinningInputError(f"override_settings is not valid JSON: {e}") from e


def seed_runs(seeds: Sequence[int]) -> list[tuple[int, int]]:
    """(first seed, count) of each run of consecutive seeds, in order."""
    runs: list[tuple[int, int]] = []
    for seed in seeds:
        if runs and runs[-1][0] + runs[-1][1] == seed:
            runs[-1] = (runs[-1][0], runs[-1][1] + 1)
        else:
            runs.append((int(seed), 1))
    return runs


def encode_image_file(path: str) -> str:
    """The init image as the API takes it: base64 of the file's PNG."""
    with Image.open(Path(path)) as image:
        buffer = io.BytesIO()
        image.convert("RGB").save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def build_payload(
    settings: RemoteSettings, prompt: str, negative_prompt: str, first_seed: int, count: int,
    init_image: str | None = None,
) -> dict[str, Any]:
    """One request: `count` images with the seeds first_seed, first_seed + 1, ..."""
    payload: dict[str, Any] = {
        "prompt": prompt,
        "negative_prompt": negative_prompt,
        "seed": int(first_seed),
        # Fixed, so the request is a pure function of its inputs (-1 would draw a random one).
        "subseed": int(first_seed),
        "subseed_strength": 0.0,
        "seed_resize_from_h": -1,
        "seed_resize_from_w": -1,
        "batch_size": int(count),
        "n_iter": 1,
        "steps": settings.steps,
        "cfg_scale": settings.cfg_scale,
        "width": settings.width,
        "height": settings.height,
        "sampler_name": settings.sampler_name,
        "override_settings": settings.overrides(),
        "override_settings_restore_afterwards": True,
        "send_images": True,
        "save_images": False,
    }
    if settings.scheduler != "Automatic":
        payload["scheduler"] = settings.scheduler
    if settings.mode == "txt2img" and settings.enable_hr:
        # hr_prompt stays empty: the WebUI then gives the second pass the (pinned) prompt itself.
        payload.update(enable_hr=True, hr_scale=settings.hr_scale, hr_upscaler=settings.hr_upscaler,
                       hr_second_pass_steps=settings.hr_second_pass_steps,
                       denoising_strength=settings.denoising_strength)
    if settings.mode == "img2img":
        payload["init_images"] = [init_image]
        payload["denoising_strength"] = settings.denoising_strength
        payload["include_init_images"] = False
    return payload


def decode_image(data: str) -> Image.Image:
    if data.startswith("data:"):  # some extensions answer with a data URL
        data = data.split(",", 1)[-1]
    try:
        image = Image.open(io.BytesIO(base64.b64decode(data, validate=False)))
        image.load()
    except (binascii.Error, OSError, ValueError) as e:
        raise MalformedResponse(f"an image is not valid base64 image data: {e}") from e
    return image.convert("RGB")


def parse_response(body: Any, first_seed: int, count: int, size: tuple[int, int]) -> torch.Tensor:
    """Images [count, 3, H, W] in [0, 1] from a txt2img/img2img response, checked against the seeds
    and the (height, width) asked for."""
    if not isinstance(body, dict) or not isinstance(body.get("images"), list):
        raise MalformedResponse("the response has no 'images' list")
    try:
        info = json.loads(body.get("info") or "{}")
    except (TypeError, json.JSONDecodeError) as e:
        raise MalformedResponse(f"the response's 'info' is not a JSON string: {e}") from e
    if not isinstance(info, dict):
        raise MalformedResponse("the response's 'info' is not a JSON object")
    first = int(info.get("index_of_first_image") or 0)  # a grid or extension images may come first
    expected = [int(first_seed) + i for i in range(count)]
    seeds = info.get("all_seeds")
    if not isinstance(seeds, list) or [int(s) for s in seeds[:count]] != expected:
        raise MalformedResponse(f"the server used seeds {seeds!r}, not {expected}")
    encoded = body["images"][first:first + count]
    if len(encoded) != count:
        raise MalformedResponse(f"{len(encoded)} images for {count} seeds")
    arrays = []
    for data in encoded:
        if not isinstance(data, str):
            raise MalformedResponse("an image is not a base64 string")
        image = decode_image(data)
        if (image.height, image.width) != tuple(size):
            raise MalformedResponse(f"an image is {image.width}x{image.height}, not {size[1]}x{size[0]}")
        arrays.append(np.asarray(image, dtype=np.uint8))
    stacked = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2)
    return stacked.float().div(255.0).contiguous()
