"""img2img and inpainting (the WebUI's default mask blur, 4; whole picture and "only masked") with the
hyperbatch samplers and pinning."""

from __future__ import annotations

import base64
import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

from tests.integration import checks
from tests.integration.harness import Server

SIZE = 64
ROUNDING = 1.5 / 255
"""img2img encodes the init image by sampling the VAE's posterior from the global torch RNG, which
the previous request left in some state: even a point-like posterior (tiny_checkpoints.py) moves a
pixel by one level now and then."""


def encode(image: Image.Image) -> str:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()


def init_image() -> Image.Image:
    """A picture with structure (gradient and a disc), so that the init image visibly matters."""
    y, x = np.mgrid[0:SIZE, 0:SIZE]
    pixels = np.stack([x * 4, y * 4, np.full_like(x, 128)], axis=-1).astype(np.uint8)
    image = Image.fromarray(pixels, "RGB")
    ImageDraw.Draw(image).ellipse((16, 16, 48, 48), fill=(230, 30, 30))
    return image


def mask_right_half() -> Image.Image:
    mask = Image.new("L", (SIZE, SIZE), 0)
    ImageDraw.Draw(mask).rectangle((SIZE // 2, 0, SIZE - 1, SIZE - 1), fill=255)
    return mask


def mask_square() -> Image.Image:
    """A 16-pixel square at (40, 40): with mask blur 4 and padding 4, "only masked" generates the region
    (26, 26)-(64, 64) (the stand-in computes that crop: tests/test_webui_stub.py
    test_only_masked_inpainting_generates_the_crop_and_pastes_it_back)."""
    mask = Image.new("L", (SIZE, SIZE), 0)
    ImageDraw.Draw(mask).rectangle((40, 40, 55, 55), fill=255)
    return mask


CROP_CORNER = 26
"""Top-left corner of the "only masked" crop region of mask_square() with padding 4."""
ONLY_MASKED = {"mask_blur": 4, "inpainting_fill": 1, "inpaint_full_res": True, "inpaint_full_res_padding": 4}


def outside_crop_unchanged(image: np.ndarray) -> float:
    """Largest difference to the init image outside the crop region: there the WebUI pastes the
    original itself over the uncropped result (apply_overlay), so it must be exactly 0."""
    init = np.asarray(init_image(), dtype=np.float32) / 255.0
    outside = np.ones((SIZE, SIZE), bool)
    outside[CROP_CORNER:, CROP_CORNER:] = False
    return float(np.abs(image - init)[outside].max())


def img2img_fields(**extra: object) -> dict[str, object]:
    """10 steps at denoising 0.6 sample 7 steps: enough to grow a hyperbatch of 4 (it needs 4)."""
    return {**checks.TINY, "steps": 10, "init_images": [encode(init_image())], "denoising_strength": 0.6, **extra}


def left_unchanged(image: np.ndarray, margin: int = 12) -> float:
    """Largest difference to the init image on the unmasked left part, away from the blurred edge
    (mask blur 4 is a Gaussian of sigma 4 on a 21-pixel kernel: it reaches 10 pixels into the
    unmasked side, modules/processing.py StableDiffusionProcessingImg2Img.init)."""
    init = np.asarray(init_image(), dtype=np.float32) / 255.0
    return float(np.abs(image[:, : SIZE // 2 - margin] - init[:, : SIZE // 2 - margin]).max())


@pytest.mark.parametrize("sampler", ["Euler a - Hyperbatch", "DPM++ 2M SDE - Hyperbatch"])
def test_img2img_with_a_hyperbatch_sampler(webui_server: Server, sampler: str) -> None:
    answer = webui_server.img2img(**img2img_fields(sampler_name=sampler, batch_size=4)).ok()
    batch = checks.images(answer)
    assert len(batch) == 4 and checks.distinct(batch)
    again = checks.images(webui_server.img2img(**img2img_fields(sampler_name=sampler, batch_size=4)).ok())
    assert all(np.abs(a - b).max() <= ROUNDING for a, b in zip(batch, again)), \
        f"{sampler}: the same seed gave other images"
    fields = checks.infotext_fields(checks.info(answer)["infotexts"][0])
    assert fields["Sampler"] == sampler and fields["Denoising strength"] == "0.6"


@pytest.mark.parametrize("only_masked", [False, True], ids=["whole-picture", "only-masked"])
def test_inpainting_with_mask_blur_4_keeps_the_unmasked_part(webui_server: Server, only_masked: bool) -> None:
    fields = img2img_fields(mask=encode(mask_right_half()), mask_blur=4, inpainting_fill=1,
                            inpaint_full_res=only_masked, inpaint_full_res_padding=8,
                            sampler_name="DPM++ 2M - Hyperbatch", batch_size=2, denoising_strength=0.9)
    answer = webui_server.img2img(**fields).ok()
    batch = checks.images(answer)
    assert len(batch) == 2 and checks.distinct(batch)
    for image in batch:
        assert left_unchanged(image) < 3 / 255, "the unmasked part changed"
    assert checks.infotext_fields(checks.info(answer)["infotexts"][0])["Mask blur"] == "4"


def test_only_masked_inpainting_changes_only_the_crop_region(webui_server: Server) -> None:
    """The stand-in's "only masked" (crop region, enlarged crop, paste-back) agrees with the WebUI's."""
    fields = img2img_fields(mask=encode(mask_square()), **ONLY_MASKED, sampler_name="DPM++ 2M - Hyperbatch",
                            batch_size=2, denoising_strength=0.9)
    answer = webui_server.img2img(**fields).ok()
    batch = checks.images(answer)
    assert len(batch) == 2 and checks.distinct(batch)
    init = np.asarray(init_image(), dtype=np.float32) / 255.0
    for image in batch:
        assert image.shape == (SIZE, SIZE, 3)
        assert outside_crop_unchanged(image) == 0.0, "a pixel outside the crop region changed"
        assert np.abs(image[44:52, 44:52] - init[44:52, 44:52]).max() > 10 / 255, "the masked square did not change"
    fields = checks.infotext_fields(checks.info(answer)["infotexts"][0])
    assert fields["Inpaint area"] == "Only masked" and fields["Masked area padding"] == "4"
    assert fields["Mask blur"] == "4"


PINNING_MASKS = {
    "img2img": {},
    "inpaint-whole-picture": {"mask_blur": 4, "inpainting_fill": 1, "inpaint_full_res": False},
    "inpaint-only-masked": ONLY_MASKED,
}


@pytest.mark.parametrize("mode", list(PINNING_MASKS))
def test_a_pinning_run_in_img2img(webui_server: Server, mode: str) -> None:
    extra = dict(PINNING_MASKS[mode])
    if mode != "img2img":
        extra["mask"] = encode(mask_square() if mode == "inpaint-only-masked" else mask_right_half())
    body = webui_server.generation({**img2img_fields(**extra), "sampler_name": "Euler a - Hyperbatch",
                                    "batch_size": 4, "script_name": checks.SCRIPT, "script_args": [dict(checks.PIN)]})
    answer = webui_server.post("/sdapi/v1/img2img", body).ok()
    batch = checks.images(answer)
    assert len(batch) == 8
    if mode == "inpaint-whole-picture":
        assert all(left_unchanged(image) < 3 / 255 for image in batch)
    if mode == "inpaint-only-masked":
        assert all(outside_crop_unchanged(image) == 0.0 for image in batch)
        assert checks.infotext_fields(checks.info(answer)["infotexts"][0])["Inpaint area"] == "Only masked"
    run = webui_server.get(
        f"/prompt-pinning/v1/runs/{checks.pin_run(webui_server, answer)['run_id']}?tab=img2img").ok().json
    assert run["status"] == "finished" and run["tab"] == "img2img"
    for individual in ("best", "baseline"):
        fitness = run[individual]["fitness"][0]
        assert 0.0 <= fitness <= 1.0, f"{individual} fitness {fitness} is outside the documented [0, 1]"
    baseline = json.loads(next(Path(run["run_dir"]).glob("gen-000/ind-000/batch_stats.json")).read_text())
    assert baseline["growth"], ("one init image must grow a hyperbatch (the WebUI samples the VAE posterior per "
                                "row, so its rows are never exactly equal)")
