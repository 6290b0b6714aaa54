"""Target images from files, with optional masks, and the masked target-distance objective.

A mask says which part of a target matters: white pixels count fully, black not at all, greys in
between (weights = grey level / 255). The FLIP error map of a (target, image) pair is averaged
under the target's mask, so "the batch should look like this, but only the face" is expressible.

Sizes are not adapted, on purpose. A target (or mask) whose size differs from the run's images is
refused with a message naming both sizes. The typical cause is a mistake (a 512x768 portrait
dropped onto a 512x512 run); resizing would silently distort it (squash) or silently drop parts
of it (crop), and pinning would then chase a target the user never chose. The refusal is
actionable: resize or crop the file, or change the run's size.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from lib_pinning.objectives.base import Evaluation
from lib_pinning.objectives.flip import (
    DEFAULT_CHUNK_PIXELS,
    DEFAULT_PPD,
    check_images,
    pair_flip,
    prepare,
)
from lib_pinning.objectives.pinning import mean_and_std
from lib_pinning.objectives.scale import FLIP_SCALE, NaturalScale
from lib_pinning.options_model import PinningInputError

if TYPE_CHECKING:
    from PIL import Image

    from lib_pinning.generator import Batch


log = logging.getLogger(__name__)

# PIL modes whose pixels are 16-bit grey levels: convert("RGB") clips them at 255 (all white), so
# they are scaled here. "I" is how Pillow opens 16-bit greyscale PNGs in some versions and
# 32-bit integer TIFFs; both are read on the 16-bit scale, values beyond it clipped.
_SIXTEEN_BIT = ("I;16", "I;16L", "I;16B", "I;16N", "I")
# Pillow's own convention for "F" (32-bit float) images is the 0..255 scale (convert("L") keeps the values).
_FLOAT_SCALE = 255.0


class TargetError(PinningInputError):
    """A target image or mask that cannot be used; the message names the file and the fix."""


def _size_text(hw: tuple[int, int]) -> str:
    return f"{hw[1]}x{hw[0]} (width x height)"


def _open(path: Path, what: str, size: tuple[int, int] | None = None, role: str = "") -> Image.Image:
    """The decoded image at `path` (its first frame); with `size` (height, width), a file of another
    size is refused from its header, before its pixels are decoded (an 8000x8000 file costs nothing
    to refuse)."""
    from PIL import Image, UnidentifiedImageError

    if not path.exists():
        raise TargetError(f"{what} {path} does not exist: check the path")
    if path.is_dir():
        raise TargetError(f"{what} {path} is a folder, not an image file: give the image files themselves")
    if not path.is_file():
        raise TargetError(f"{what} {path} is not a regular file: give a PNG, JPEG or WebP image file")
    if path.stat().st_size == 0:
        raise TargetError(f"{what} {path} is an empty file (0 bytes): give a PNG, JPEG or WebP image file")
    try:
        with Image.open(path) as probe:
            hw = (probe.height, probe.width)
            if size is not None and hw != tuple(size):
                raise TargetError(
                    f"{what} {path} is {_size_text(hw)} but {role or 'the images'} {'is' if role else 'are'} "
                    f"{_size_text(tuple(size))}: resize or crop it to that size (it is not resized for you, "
                    "as that would distort it), or generate at its size"
                )
            # verify() reads the whole file and checks its structure (a truncated PNG fails here
            # even where the WebUI set ImageFile.LOAD_TRUNCATED_IMAGES); then it must be reopened.
            probe.verify()
        image = Image.open(path)
        if getattr(image, "n_frames", 1) > 1:
            log.warning("%s %s has %d frames; its first frame is used", what, path, image.n_frames)
            image.seek(0)
        image.load()
    except TargetError:
        raise
    except UnidentifiedImageError:
        raise TargetError(
            f"{what} {path} is not an image file PIL can read: give a PNG, JPEG or WebP image"
        ) from None
    except (OSError, ValueError, SyntaxError) as exc:
        # PIL reports a broken file (truncated, bad checksums) as OSError or SyntaxError.
        raise TargetError(f"{what} {path} is damaged or truncated ({exc}): save the image again") from exc
    return image


def _high_bit_grey(image: Image.Image) -> np.ndarray | None:
    """float32 [H, W] in [0, 1] for 16-bit, 32-bit integer and float images; None for other modes."""
    if image.mode in _SIXTEEN_BIT:
        array = np.asarray(image, dtype=np.float64) / 65535.0
    elif image.mode == "F":
        array = np.asarray(image, dtype=np.float64) / _FLOAT_SCALE
    else:
        return None
    return np.clip(np.nan_to_num(array), 0.0, 1.0).astype(np.float32)


def _flatten_palette(image: Image.Image) -> Image.Image:
    """Palette images through RGBA: their transparency is then an alpha channel that is dropped,
    rather than a palette entry PIL warns about when converting straight to RGB."""
    return image.convert("RGBA") if image.mode in ("P", "PA") else image


def image_to_rgb(image: Image.Image) -> np.ndarray:
    """float32 [H, W, 3] in [0, 1] from an image of any PIL mode (alpha dropped, grey expanded)."""
    grey = _high_bit_grey(image)
    if grey is not None:
        return np.repeat(grey[:, :, None], 3, axis=2)
    return np.asarray(_flatten_palette(image).convert("RGB"), dtype=np.float32) / 255.0


def image_to_grey(image: Image.Image) -> np.ndarray:
    """float32 [H, W] in [0, 1] grey levels of an image of any PIL mode (PIL's "L" luminance)."""
    grey = _high_bit_grey(image)
    if grey is not None:
        return grey
    return np.asarray(_flatten_palette(image).convert("L"), dtype=np.float32) / 255.0


def load_image(path: str | os.PathLike[str], size: tuple[int, int] | None = None) -> torch.Tensor:
    """float32 [3, H, W] in [0, 1] from any image file PIL reads (alpha is dropped); `size`
    (height, width) refuses a file of another size."""
    with _open(Path(path), "target image", size) as image:
        return torch.from_numpy(image_to_rgb(image)).permute(2, 0, 1).contiguous()


def load_mask(
    path: str | os.PathLike[str], size: tuple[int, int] | None = None, target: str | os.PathLike[str] = ""
) -> torch.Tensor:
    """float32 [H, W] weights in [0, 1]: the file's grey level (white = 1 = counts).

    Colour images are converted to greyscale (PIL's "L"); an alpha channel is ignored, so paint
    masks in black and white rather than in transparency.
    """
    role = f"its target {target}" if target else ""
    with _open(Path(path), "target mask", size, role) as image:
        return torch.from_numpy(image_to_grey(image).copy())


def load_targets(
    paths: Sequence[str | os.PathLike[str]],
    mask_paths: Sequence[str | os.PathLike[str] | None] = (),
    size: tuple[int, int] | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Read target images and their masks: (images [T, 3, H, W] in [0, 1], masks [T, H, W] or None).

    mask_paths: empty for no masks, else one entry per target in the same order (None or "" for a
        target without a mask, which then counts everywhere).
    size: the run's image size as (height, width); every target and mask must have it. None: the
        first target's size, which every other file must match.
    Raises TargetError naming the file for anything missing, unreadable or of the wrong size, and
    for a mask with no white at all (nothing of that target would count).
    """
    if not paths:
        raise TargetError("no target images given")
    if mask_paths and len(mask_paths) != len(paths):
        raise TargetError(
            f"got {len(paths)} target images but {len(mask_paths)} masks: give one mask per target "
            "(leave an entry empty for a target without a mask), or none at all"
        )
    images = []
    for path in paths:
        image = load_image(path, size)
        if size is None:
            size = (int(image.shape[1]), int(image.shape[2]))
        images.append(image)
    stacked = torch.stack(images)
    if not any(m for m in mask_paths):
        return stacked, None
    masks = []
    for path, mask_path in zip(paths, mask_paths):
        if not mask_path:
            masks.append(torch.ones(stacked.shape[2:], dtype=torch.float32))
            continue
        mask = load_mask(mask_path, tuple(stacked.shape[2:]), target=path)
        if float(mask.max()) <= 0.0:
            raise TargetError(
                f"target mask {mask_path} is entirely black: nothing of target {path} would count; paint "
                "white where the target matters (an all-white mask counts everywhere)"
            )
        masks.append(mask)
    return stacked, torch.stack(masks)


class MaskedTargetObjective:
    """Closeness of a batch to target images, each compared under its own mask (an `Objective`).

    For every (target t, image b) pair the FLIP error map is averaged under mask t; the value is
    mean + std of those pair values (the target-distance summary of the pinning loss). Pairs are
    indexed targets first (`Evaluation.pairs`); ``per_image["target_distance"]`` is each image's
    mean over the targets. Without masks this equals FLIP pinning in ``target_distance`` mode.
    """

    name = "flip_masked_targets"

    def __init__(
        self,
        targets: torch.Tensor,
        masks: torch.Tensor | None = None,
        *,
        ppd: float = DEFAULT_PPD,
        device: torch.device | str | None = None,
        chunk_pixels: int = DEFAULT_CHUNK_PIXELS,
    ) -> None:
        check_images(targets, "targets")
        self.device = torch.device(device) if device is not None else targets.device
        self.ppd = float(ppd)
        self.chunk_pixels = chunk_pixels
        self.size = (int(targets.shape[2]), int(targets.shape[3]))
        self.n_targets = int(targets.shape[0])
        if masks is not None:
            if masks.ndim != 3 or masks.shape[0] != self.n_targets or tuple(masks.shape[1:]) != self.size:
                raise ValueError(
                    f"masks must be [T, H, W] = [{self.n_targets}, {self.size[0]}, {self.size[1]}], "
                    f"got {tuple(masks.shape)}"
                )
            masks = masks.to(device=self.device, dtype=torch.float32)
        self.masks = masks
        self.targets = prepare(targets.to(self.device), self.ppd)

    @property
    def scale(self) -> NaturalScale:
        return FLIP_SCALE

    def score(self, batch: Batch) -> Evaluation:
        return self.score_images(batch.images)

    def pair_values(self, images: torch.Tensor) -> torch.Tensor:
        """float64 [T, B] masked FLIP of each (target, image) pair."""
        check_images(images, "batch images")
        hw = (int(images.shape[2]), int(images.shape[3]))
        if hw != self.size:
            raise ValueError(
                f"batch images are {_size_text(hw)} but the targets are {_size_text(self.size)}: "
                "FLIP compares images of the same size"
            )
        candidates = prepare(images.to(self.device), self.ppd)
        n_b = len(candidates)
        pairs = torch.stack([torch.zeros(n_b, dtype=torch.long), torch.arange(n_b)], dim=1)
        rows = []
        for t in range(self.n_targets):
            mask = None if self.masks is None else self.masks[t : t + 1]
            values = pair_flip(self.targets.select([t]), candidates, pairs, mask=mask, chunk_pixels=self.chunk_pixels)
            rows.append(values.double().cpu())
        return torch.stack(rows)

    def score_images(self, images: torch.Tensor) -> Evaluation:
        values = self.pair_values(images)
        mean, std = mean_and_std(values.reshape(-1))
        n_t, n_b = values.shape
        return Evaluation(
            value=mean + std,
            components={"flip_mean": mean, "flip_std": std},
            pair_values=[float(v) for v in values.reshape(-1)],
            pairs=[(t, n_t + b) for t in range(n_t) for b in range(n_b)],
            per_image={"target_distance": [float(v) for v in values.mean(dim=0)]},
        )
