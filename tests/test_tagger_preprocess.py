"""WD14 preprocessing against the reference steps, written out here with numpy on odd inputs:
alpha onto white, pad to a centred white square, bicubic resize, BGR, 0..255 float32, NHWC."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from lib_pinning.objectives.tagger_runtime import (
    batch_to_pil,
    prepare_image,
    providers_for,
    read_tag_list,
    TaggerRuntimeError,
)


def reference(image: Image.Image, size: int) -> np.ndarray:
    """The reference steps, independently: numpy blending and padding, Pillow's bicubic resize."""
    rgba = np.asarray(image.convert("RGBA"), dtype=np.float64)
    alpha = rgba[:, :, 3:] / 255.0
    rgb = np.round(rgba[:, :, :3] * alpha + 255.0 * (1 - alpha))
    h, w = rgb.shape[:2]
    side = max(h, w)
    square = np.full((side, side, 3), 255.0)
    top, left = (side - h) // 2, (side - w) // 2
    square[top:top + h, left:left + w] = rgb
    resized = Image.fromarray(square.astype(np.uint8), "RGB")
    if side != size:
        resized = resized.resize((size, size), Image.BICUBIC)
    return np.asarray(resized, dtype=np.float32)[:, :, ::-1]


def noise(shape, seed=0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=shape, dtype=np.uint8)


ODD_INPUTS = {
    "rgba": lambda: Image.fromarray(noise((40, 30, 4)), "RGBA"),
    "greyscale": lambda: Image.fromarray(noise((25, 25)), "L"),
    "greyscale+alpha": lambda: Image.fromarray(noise((20, 33, 2)), "LA"),
    "wide": lambda: Image.fromarray(noise((17, 64, 3)), "RGB"),
    "tall": lambda: Image.fromarray(noise((64, 9, 3)), "RGB"),
    "tiny": lambda: Image.fromarray(noise((1, 2, 3)), "RGB"),
    "palette": lambda: Image.fromarray(noise((12, 12, 3)), "RGB").convert("P"),
    "exact size": lambda: Image.fromarray(noise((32, 32, 3)), "RGB"),
}


@pytest.mark.parametrize("name", sorted(ODD_INPUTS))
def test_preprocessing_equals_the_reference_steps(name):
    image = ODD_INPUTS[name]()
    out = prepare_image(image, 32)
    assert out.shape == (32, 32, 3) and out.dtype == np.float32 and out.flags.c_contiguous
    # Pillow composites alpha in 8-bit integer arithmetic: one level of rounding either way.
    np.testing.assert_allclose(out, reference(image, 32), atol=1.0)
    assert 0.0 <= out.min() and out.max() <= 255.0


def test_channel_order_is_bgr_and_padding_is_white():
    red = Image.new("RGB", (4, 2), (200, 10, 20))
    out = prepare_image(red, 4)
    assert out[2, 0].tolist() == [20.0, 10.0, 200.0]  # B, G, R inside the picture
    assert out[0, 0].tolist() == [255.0, 255.0, 255.0]  # white band above a wide image


def test_fully_transparent_pixels_become_white():
    clear = Image.new("RGBA", (8, 8), (0, 0, 0, 0))
    assert (prepare_image(clear, 8) == 255.0).all()


def test_batch_to_pil_quantises_like_the_saved_images():
    images = torch.tensor([[[[0.0, 1.0]], [[0.5, 0.2]], [[1.2, -0.1]]]])
    (pil,) = batch_to_pil(images)
    assert pil.size == (2, 1) and np.asarray(pil).tolist() == [[[0, 128, 255], [255, 51, 0]]]


def test_providers_prefer_cuda_only_on_a_cuda_run_that_has_it():
    offered = ["CUDAExecutionProvider", "CPUExecutionProvider"]
    assert providers_for("cuda", offered) == offered
    assert providers_for("cpu", offered) == ["CPUExecutionProvider"]
    assert providers_for("cuda", ["CPUExecutionProvider"]) == ["CPUExecutionProvider"]


def test_tag_list_needs_name_and_category(tmp_path):
    good = tmp_path / "selected_tags.csv"
    good.write_text("tag_id,name,category,count\n9999999,general,9,1\n1,1girl,0,5\n2,hatsune_miku,4,3\n")
    tags = read_tag_list(good)
    assert tags.names == ("general", "1girl", "hatsune_miku") and tags.categories == (9, 0, 4)
    bad = tmp_path / "bad.csv"
    bad.write_text("id,label\n1,a\n")
    with pytest.raises(TaggerRuntimeError, match="'name' and 'category'"):
        read_tag_list(bad)
