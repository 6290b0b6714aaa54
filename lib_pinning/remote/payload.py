"""The WebUI API payload of one batch, and the reading of its response.

Seeds: the API's `seed` is one integer, and the WebUI derives a batch's seeds as `seed + i` when
`subseed_strength` is 0 (modules/processing.py, `process_images_inner`). A run's seeds are usually
consecutive, so a batch is one request with `seed = s_0` and `batch_size = n`; seeds that are not
consecutive are split into consecutive runs, one request each. Each response's `info.all_seeds` is
checked against the seeds asked for, so image i is the image of seed s_i or the batch is refused.

img2img: the init image(s) and the inpainting mask travel as base64 PNG (`Img2ImgImages`, encoded
once per run), with the fields of the WebUI's `StableDiffusionProcessingImg2Img` (v1.10.1 and Forge
alike: resize_mode, denoising_strength, image_cfg_scale, mask_blur_x/y, mask_round, inpainting_fill,
inpaint_full_res, inpaint_full_res_padding, inpainting_mask_invert, initial_noise_multiplier). One
init image goes with every image of a batch; several (one per image, as batch img2img makes them)
are split with the seeds, so a request for the seeds at positions k..k+m of a batch carries init
images k..k+m, as the WebUI pairs them (modules/processing.py, StableDiffusionProcessingImg2Img.init).

img2img's VAE encode samples the posterior from torch's global generator, in whatever state the
server's previous request left it; `priming_payload` is the small txt2img request that leaves it as
a batch of the run's seeds does (see lib_pinning.webui.generator.seed_vae_encode), which the client
sends before its first img2img batch on a server.
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
    resize_mode: int = option(
        0, label="Resize mode", help="img2img only: 0 just resize, 1 crop and resize, 2 resize and fill, "
        "3 just resize (latent upscale).", infotext=None, minimum=0, maximum=3,
    )
    image_cfg_scale: float | None = option(
        None, label="Image CFG scale",
        help="img2img only, instruct-pix2pix models: image guidance (empty: the server's).",
        infotext=None, minimum=0.0, maximum=3.0,
    )
    initial_noise_multiplier: float | None = option(
        None, label="Noise multiplier for img2img",
        help="img2img only: the init latent's noise multiplier (empty: the server's setting).", infotext=None,
        minimum=0.0, maximum=1.5,
    )
    mask_image: str = option(
        "", label="Inpaint mask", help="img2img only: path of the inpainting mask (white: repaint).", infotext=None
    )
    mask_blur_x: int = option(4, label="Mask blur x", help="Inpainting: horizontal mask blur in pixels.",
                              infotext=None, minimum=0, maximum=64)
    mask_blur_y: int = option(4, label="Mask blur y", help="Inpainting: vertical mask blur in pixels.",
                              infotext=None, minimum=0, maximum=64)
    mask_round: bool = option(True, label="Round the mask",
                              help="Inpainting: an alpha mask is rounded to black and white.", infotext=None)
    inpainting_fill: int = option(
        1, label="Masked content", help="Inpainting: 0 fill, 1 original, 2 latent noise, 3 latent nothing.",
        infotext=None, minimum=0, maximum=3,
    )
    inpaint_full_res: bool = option(False, label="Inpaint only masked",
                                    help="Inpainting: generate the masked area only, at full size.", infotext=None)
    inpaint_full_res_padding: int = option(
        32, label="Only masked padding", help="Inpainting, only masked: pixels around the masked area.",
        infotext=None, minimum=0, maximum=256,
    )
    inpainting_mask_invert: int = option(
        0, label="Mask mode", help="Inpainting: 0 inpaint masked, 1 inpaint not masked.", infotext=None,
        minimum=0, maximum=1,
    )
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
        if self.mode == "txt2img" and (self.init_image or self.mask_image):
            raise PinningInputError("an init image or a mask needs --mode img2img")

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


# The modes a PNG stores as they are; an image in another mode is converted (see encode_image).
_PNG_MODES = frozenset({"1", "L", "LA", "P", "RGB", "RGBA", "I", "I;16"})


def encode_image(image: Image.Image, fallback_mode: str = "RGB") -> str:
    """An image as the API takes it: base64 PNG of its pixels, in its own mode when PNG has it
    (an RGBA init image stays RGBA for the server's flatten, an alpha mask keeps its alpha), else
    converted to `fallback_mode` (what the WebUI converts it to anyway: RGB for an init image,
    modules/images.py flatten; L for a mask, processing.create_binary_mask). Without its `info`: a
    PNG's transparency key or EXIF orientation would make the server's fix_image (modules/images.py)
    change pixels the local WebUI has already taken as they are."""
    clean = image.copy() if image.mode in _PNG_MODES else image.convert(fallback_mode)
    clean.info = {}
    buffer = io.BytesIO()
    clean.save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def encode_image_file(path: str, fallback_mode: str | None = None) -> str:
    """An image file as the API takes it: base64 PNG, converted to RGB (an init image; the
    default), or to `fallback_mode` when PNG cannot store its mode (a mask: "L")."""
    with Image.open(Path(path)) as image:
        image.load()
        return encode_image(image.convert("RGB") if fallback_mode is None else image, fallback_mode or "RGB")


@dataclass(frozen=True)
class Img2ImgImages:
    """What an img2img request carries besides its settings, encoded once per run: the init images
    (one for the whole batch, or one per image of the batch) and the inpainting mask, base64 PNG."""

    init_images: tuple[str, ...]
    mask: str | None = None

    @classmethod
    def from_files(cls, init_image: str, mask_image: str = "") -> Img2ImgImages:
        return cls((encode_image_file(init_image),), encode_image_file(mask_image, "L") if mask_image else None)

    @classmethod
    def from_images(cls, init_images: Sequence[Image.Image], mask: Image.Image | None = None) -> Img2ImgImages:
        encoded_mask = None if mask is None else encode_image(mask, "L")
        return cls(tuple(encode_image(i, "RGB") for i in init_images), encoded_mask)

    def fits(self, count: int) -> bool:
        """Whether a batch of `count` images can be made: one init image, or one per image."""
        return len(self.init_images) in (1, count)

    def for_images(self, offset: int, count: int) -> list[str]:
        """The init images of a request for the images offset..offset+count-1 of a batch."""
        if len(self.init_images) == 1:
            return list(self.init_images)
        return list(self.init_images[offset:offset + count])


def build_payload(
    settings: RemoteSettings, prompt: str, negative_prompt: str, first_seed: int, count: int,
    init_image: str | Img2ImgImages | None = None, offset: int = 0,
) -> dict[str, Any]:
    """One request: `count` images with the seeds first_seed, first_seed + 1, ..., images offset..
    of their batch (img2img: which init images it carries; a str is the one init image)."""
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
        if init_image is None:
            raise ValueError("an img2img request needs its init image")
        images = init_image if isinstance(init_image, Img2ImgImages) else Img2ImgImages((init_image,))
        payload.update(init_images=images.for_images(offset, count), denoising_strength=settings.denoising_strength,
                       resize_mode=settings.resize_mode, include_init_images=False)
        if settings.image_cfg_scale is not None:
            payload["image_cfg_scale"] = settings.image_cfg_scale
        if settings.initial_noise_multiplier is not None:
            payload["initial_noise_multiplier"] = settings.initial_noise_multiplier
        if images.mask is not None:
            payload.update(
                mask=images.mask, mask_blur_x=settings.mask_blur_x, mask_blur_y=settings.mask_blur_y,
                mask_round=settings.mask_round, inpainting_fill=settings.inpainting_fill,
                inpaint_full_res=settings.inpaint_full_res, inpaint_full_res_padding=settings.inpaint_full_res_padding,
                inpainting_mask_invert=settings.inpainting_mask_invert,
            )
            if settings.mask_blur_x == settings.mask_blur_y:
                # mask_blur (the WebUI's property for both) is an API field of its own: unset, it
                # leaves x and y as sent; sent too, it reaches a WebUI that reads only this one.
                payload["mask_blur"] = settings.mask_blur_x
    return payload


def priming_payload(settings: RemoteSettings, seed: int) -> dict[str, Any]:
    """A txt2img request of one 64x64 image in one step with `seed`: its noise seeds the server's
    global torch generator by the server's own rule for a batch's last image (modules/rng.py randn:
    v1.10.1 with `seed`, Forge with (seed + 100000) % 65536), and nothing draws from it after that,
    so the next img2img request's VAE encode starts where a batch whose last seed is `seed` leaves it. The run's sampler, schedule type and override settings, so that no other
    sampler or checkpoint is set up in between."""
    plain = settings.replace(mode="txt2img", init_image="", mask_image="", enable_hr=False, steps=1, width=64,
                             height=64)
    payload = build_payload(plain, "", "", seed, 1)
    payload["send_images"] = False
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
