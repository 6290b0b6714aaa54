"""The WebUI generator knows its images' size before generating (the target preflight needs it).
The real WebUIs confirm the hires sizes (tests/integration/test_pinning_api.py); here the stand-in,
whose toy model only makes 64 px images, checks what it can."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from lib_pinning.generator import GenerationRequest
from lib_pinning.webui.generator import WebUIGenerator

HIRES = dict(enable_hr=True, hr_second_pass_steps=2, denoising_strength=0.5)


@pytest.mark.parametrize("settings", [{}, dict(HIRES, hr_scale=1.0)], ids=["plain", "hires-1.0"])
def test_the_predicted_size_is_the_size_generated(webui: Any, settings: dict[str, Any]) -> None:
    p = webui.txt2img(prompt="a red circle", seed=3, batch_size=2, steps=4, sampler_name="Euler a", **settings)
    generator = WebUIGenerator(p, processing=webui.processing, shared=webui.shared)
    predicted = generator.image_size
    batch = generator.generate(GenerationRequest("a red circle", "", (3, 4)))
    assert predicted == tuple(batch.images.shape[-2:]) == (64, 64)


@pytest.mark.parametrize(("settings", "size"), [
    (dict(hr_scale=1.5), (72, 96)),
    (dict(hr_scale=1.3), (56, 80)),  # 83.2 px: int(), then whole latent pixels of 8
    (dict(hr_resize_x=96), (72, 96)),
    (dict(hr_resize_y=80), (80, 104)),  # 80 * 64 // 48 = 106 -> 13 latent pixels
])
def test_hires_sizes_in_whole_latent_pixels(webui: Any, settings: dict[str, Any], size: tuple[int, int]) -> None:
    p = webui.txt2img(prompt="a", seed=3, batch_size=2, steps=4, width=64, height=48, **HIRES, **settings)
    sd_processing = SimpleNamespace(opt_f=8, process_images=webui.processing.process_images)  # the real WebUIs' factor
    assert WebUIGenerator(p, processing=sd_processing, shared=webui.shared).image_size == size


def test_another_aspect_ratio_crops_the_upscaled_latent(webui: Any) -> None:
    """64x48 to 100x60: upscaled to 100x75, then cropped by truncate_y latent rows (the stand-in's
    latent pixel is one image pixel, so exactly to 100x60)."""
    p = webui.txt2img(prompt="a", seed=3, batch_size=2, steps=4, width=64, height=48, **HIRES,
                      hr_resize_x=100, hr_resize_y=60)
    assert webui.processing.opt_f == 1
    assert WebUIGenerator(p, processing=webui.processing, shared=webui.shared).image_size == (60, 100)


def test_img2img_makes_images_of_p_size_whatever_the_hires_fields(webui: Any) -> None:
    p = webui.txt2img(prompt="a", seed=3, batch_size=2, steps=4, width=64, height=48, **HIRES, hr_scale=2.0)
    p.init_images = [object()]
    assert WebUIGenerator(p, processing=webui.processing, shared=webui.shared).image_size == (48, 64)


def test_predicting_leaves_p_untouched(webui: Any) -> None:
    p = webui.txt2img(prompt="a", seed=3, batch_size=2, steps=4, width=64, height=48, **HIRES, hr_scale=1.5)
    before = (p.width, p.height, dict(p.extra_generation_params), p.hr_upscale_to_x)
    assert WebUIGenerator(p, processing=webui.processing, shared=webui.shared).image_size == (72, 96)
    assert (p.width, p.height, dict(p.extra_generation_params), p.hr_upscale_to_x) == before
