"""Image artifacts: batch GIFs and contact sheets, with Pillow.

GIFs are encoded by Pillow directly rather than through imageio: imageio's Pillow plugin hands RGB
frames to Pillow's GIF writer, which quantizes each frame by median cut, about 140 ms for 8 frames
of 64 px here, while fast-octree quantization done first takes about 5 ms for the same frames (and
a run writes one GIF per individual). Frames and tiles are downscaled to a bounded size, so a GIF
of a 512 px or 1024 px batch stays a few hundred kilobytes; the full-size PNGs remain next to it.
"""

from __future__ import annotations

import functools
import io
import math
from pathlib import Path
from typing import Sequence

import matplotlib
import numpy as np
from PIL import Image, ImageDraw, ImageFont


# Longest side of a GIF frame / a contact sheet tile, in pixels. Small images (the toy model's are
# 64 px) are enlarged on the sheet by a whole factor, so its labels stay legible; GIFs keep their
# size and the page scales them.
GIF_MAX_SIDE = 256
TILE_MAX_SIDE = 160
TILE_MIN_SIDE = 96
# Per-frame display time: slow enough to compare seeds by eye, short enough for a batch of 8 to
# loop in a few seconds.
BATCH_FRAME_MS = 400
GENERATION_FRAME_MS = 600

_BACKGROUND = (246, 247, 249)
_TEXT = (40, 44, 52)
_PAD = 6
_FONT_SIZE = 11
_LABEL_HEIGHT = 15
_CAPTION_HEIGHT = 20


def load_rgb(path: Path, max_side: int) -> Image.Image:
    """An image file as RGB, shrunk (never enlarged) to fit max_side."""
    with Image.open(path) as image:
        rgb = image.convert("RGB")
    if max(rgb.size) > max_side:
        rgb.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
    return rgb


def _pad_to(frames: Sequence[Image.Image]) -> np.ndarray:
    """Stack frames of possibly different sizes, centred on a common canvas (GIF needs one size)."""
    width = max(f.width for f in frames)
    height = max(f.height for f in frames)
    out = np.empty((len(frames), height, width, 3), dtype=np.uint8)
    out[...] = _BACKGROUND
    for i, frame in enumerate(frames):
        top, left = (height - frame.height) // 2, (width - frame.width) // 2
        out[i, top : top + frame.height, left : left + frame.width] = np.asarray(frame)
    return out


def gif_bytes(frames: Sequence[Image.Image], frame_ms: int) -> bytes:
    """An endlessly looping GIF of the frames, each with its own 256-colour palette.

    Pillow merges consecutive identical frames (adding up their durations), so a perfectly pinned
    batch, all of whose images are equal, gives a one-frame GIF."""
    if not frames:
        raise ValueError("a GIF needs at least one frame")
    quantized = [
        Image.fromarray(frame).quantize(256, method=Image.Quantize.FASTOCTREE) for frame in _pad_to(frames)
    ]
    buffer = io.BytesIO()
    # optimize=False: Pillow's palette optimisation (dropping unused entries, remapping each frame
    # in Python) halved nothing but the speed here: 1.25 -> 0.65 ms for 8 frames, same file size.
    quantized[0].save(
        buffer, format="GIF", save_all=True, append_images=quantized[1:], duration=int(frame_ms), loop=0,
        optimize=False,
    )
    return buffer.getvalue()


def batch_gif(paths: Sequence[Path]) -> bytes:
    return gif_bytes([load_rgb(p, GIF_MAX_SIDE) for p in paths], BATCH_FRAME_MS)


@functools.lru_cache(maxsize=1)
def _font() -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    """DejaVu Sans, which matplotlib ships (Pillow's built-in font squeezes the spaces out)."""
    path = Path(matplotlib.get_data_path()) / "fonts" / "ttf" / "DejaVuSans.ttf"
    try:
        return ImageFont.truetype(str(path), _FONT_SIZE)
    except OSError:
        return ImageFont.load_default()


def contact_sheet(paths: Sequence[Path], labels: Sequence[str], caption: str) -> Image.Image:
    """A near-square grid of the images, each labelled (e.g. with its seed), under a caption."""
    if not paths:
        raise ValueError("a contact sheet needs at least one image")
    tiles = [_enlarge(load_rgb(p, TILE_MAX_SIDE), TILE_MIN_SIDE) for p in paths]
    font = _font()
    measure = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    label_w = max(int(math.ceil(measure.textlength(label, font=font))) for label in labels) if labels else 0
    tile_w = max(max(t.width for t in tiles), label_w)
    tile_h = max(t.height for t in tiles)
    columns = math.ceil(math.sqrt(len(tiles)))
    rows = math.ceil(len(tiles) / columns)
    cell_w, cell_h = tile_w + _PAD, tile_h + _LABEL_HEIGHT + _PAD
    caption_w = int(math.ceil(measure.textlength(caption, font=font))) + 2 * _PAD
    width = max(columns * cell_w + _PAD, caption_w)
    height = _CAPTION_HEIGHT + rows * cell_h + _PAD
    sheet = Image.new("RGB", (width, height), _BACKGROUND)
    draw = ImageDraw.Draw(sheet)
    draw.text((_PAD, 4), caption, fill=_TEXT, font=font)
    for i, (tile, label) in enumerate(zip(tiles, labels)):
        row, column = divmod(i, columns)
        left = _PAD + column * cell_w
        y = _CAPTION_HEIGHT + row * cell_h
        sheet.paste(tile, (left + (tile_w - tile.width) // 2, y))
        draw.text((left, y + tile_h + 1), label, fill=_TEXT, font=font)
    return sheet


def _enlarge(image: Image.Image, min_side: int) -> Image.Image:
    """Scale a small image up by the whole factor that brings its longest side to min_side (pixels
    stay sharp squares)."""
    factor = math.ceil(min_side / max(image.size))
    if factor <= 1:
        return image
    return image.resize((image.width * factor, image.height * factor), Image.Resampling.NEAREST)


# zlib level 1: the report's PNGs are plots and contact sheets, mostly flat areas that compress
# about as well at level 1 as at the default 6, a third faster (2.0 against 3.0 ms a loss plot).
PNG_COMPRESS_LEVEL = 1


def png_rgb(pixels: np.ndarray) -> bytes:
    """An RGB PNG of an H x W x 3 or H x W x 4 uint8 array (alpha, if any, is dropped: the
    report's figures are opaque)."""
    if pixels.dtype != np.uint8 or pixels.ndim != 3 or pixels.shape[2] not in (3, 4):
        raise ValueError(f"expected an H x W x 3|4 uint8 array, got {pixels.dtype} {pixels.shape}")
    return png_bytes(Image.fromarray(np.ascontiguousarray(pixels[..., :3])))


def png_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.convert("RGB").save(buffer, format="PNG", compress_level=PNG_COMPRESS_LEVEL)
    return buffer.getvalue()
