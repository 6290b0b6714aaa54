"""Stand-in for modules/masking.py (v1.10.1 82a973c0): the crop of "only masked" inpainting, and fill.

Pure PIL, as in the WebUI, so the same mask gives the same crop region and the same filled
picture; processing.StableDiffusionProcessingImg2Img.init calls these exactly where the WebUI does.
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageFilter, ImageOps


def get_crop_region_v2(mask: Image.Image | np.ndarray, pad: int = 0) -> tuple[int, int, int, int] | None:
    """modules/masking.py:L4: the bounding box (x1, y1, x2, y2) of the mask's non-zero pixels, grown
    by `pad` on every side and clipped to the mask; None for an all-black mask."""
    mask = mask if isinstance(mask, Image.Image) else Image.fromarray(mask)
    box = mask.getbbox()
    if not box:
        return None
    if not pad:
        return box
    x1, y1, x2, y2 = box
    width, height = mask.size
    return max(x1 - pad, 0), max(y1 - pad, 0), min(x2 + pad, width), min(y2 + pad, height)


def expand_crop_region(crop_region: tuple[int, int, int, int], processing_width: int, processing_height: int,
                       image_width: int, image_height: int) -> tuple[int, int, int, int]:
    """modules/masking.py:L39: widen (or heighten) the region to the processing size's aspect ratio,
    centred, shifted back inside the image where it overflows; the arithmetic (int truncation of
    the missing extent, the larger half after the region) is the WebUI's, so regions agree."""
    x1, y1, x2, y2 = crop_region
    if (x2 - x1) / (y2 - y1) > processing_width / processing_height:
        missing = int((x2 - x1) / (processing_width / processing_height) - (y2 - y1))
        y1, y2 = _grow_within(y1, y2, missing, image_height)
    else:
        missing = int((y2 - y1) * (processing_width / processing_height) - (x2 - x1))
        x1, x2 = _grow_within(x1, x2, missing, image_width)
    return x1, y1, x2, y2


def _grow_within(low: int, high: int, missing: int, limit: int) -> tuple[int, int]:
    """Add `missing` pixels (half before, the rest after), then slide the span back inside [0, limit]."""
    low -= missing // 2
    high += missing - missing // 2
    if high >= limit:
        low -= high - limit
        high = limit
    if low < 0:
        high -= low
        low = 0
    return low, min(high, limit)


def fill(image: Image.Image, mask: Image.Image) -> Image.Image:
    """modules/masking.py:L80: "Masked content: fill" pre-fills the masked area with ever less blurred
    copies of the unmasked picture (premultiplied alpha, PIL's Gaussian blur, radii 256 to 0)."""
    image_mod = Image.new("RGBA", (image.width, image.height))
    image_masked = Image.new("RGBa", (image.width, image.height))
    image_masked.paste(image.convert("RGBA").convert("RGBa"), mask=ImageOps.invert(mask.convert("L")))
    image_masked = image_masked.convert("RGBa")
    for radius, repeats in ((256, 1), (64, 1), (16, 2), (4, 4), (2, 2), (0, 1)):
        blurred = image_masked.filter(ImageFilter.GaussianBlur(radius)).convert("RGBA")
        for _ in range(repeats):
            image_mod.alpha_composite(blurred)
    return image_mod.convert("RGB")
