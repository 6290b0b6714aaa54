"""Running a WD14 tagger: its tag list, the preprocessing its models expect, one ONNX session.

Preprocessing, as SmilingWolf's reference Space (wd-tagger `app.py`) and the WebUI tagger
extensions prepare images: transparency composited onto white, the image padded to a square with
white (centred), resized to the model's input size (read from the model: 448 for the v3 and v1.4
models) with bicubic filtering, channels in BGR order, values 0..255 as float32, NHWC. The models
end in a sigmoid, so their outputs are per-tag confidences in [0, 1].

`selected_tags.csv` has the columns ``tag_id,name,category,count``; category 9 is a rating
(``general``, ``sensitive``, ``questionable``, ``explicit``), 0 a general tag, 4 a character.

onnxruntime is imported only when a session is built (the `tagger` extra installs it); the CUDA
provider is used when the run is on a CUDA device and the installed onnxruntime offers it.
"""

from __future__ import annotations

import csv
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from PIL import Image

logger = logging.getLogger(__name__)

RATING, GENERAL, CHARACTER = 9, 0, 4
CATEGORY_NAMES = {RATING: "rating", GENERAL: "general", CHARACTER: "character"}


class TaggerRuntimeError(RuntimeError):
    """The tagger cannot run (onnxruntime missing, a model of an unexpected shape); says what to do."""


@dataclass(frozen=True)
class TagList:
    """The model's output labels, in output order."""

    names: tuple[str, ...]
    categories: tuple[int, ...]

    def __len__(self) -> int:
        return len(self.names)

    def index(self) -> dict[str, int]:
        return {name: i for i, name in enumerate(self.names)}


def read_tag_list(path: str | Path) -> TagList:
    """`selected_tags.csv` as a TagList (needs the ``name`` and ``category`` columns)."""
    with open(path, newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        if not reader.fieldnames or not {"name", "category"} <= set(reader.fieldnames):
            raise TaggerRuntimeError(f"{path} is not a tagger tag list: it needs 'name' and 'category' columns")
        rows = [(row["name"], int(row["category"])) for row in reader]
    if not rows:
        raise TaggerRuntimeError(f"{path} lists no tags")
    names, categories = zip(*rows)
    return TagList(tuple(names), tuple(categories))


def prepare_image(image: Image.Image, size: int) -> np.ndarray:
    """One image as the model's input row: float32 [size, size, 3], BGR, 0..255."""
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        canvas = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        canvas.alpha_composite(rgba)
        rgb = canvas.convert("RGB")
    else:
        rgb = image.convert("RGB")
    side = max(rgb.size)
    if rgb.size != (side, side):
        square = Image.new("RGB", (side, side), (255, 255, 255))
        square.paste(rgb, ((side - rgb.width) // 2, (side - rgb.height) // 2))
        rgb = square
    if side != size:
        rgb = rgb.resize((size, size), Image.BICUBIC)
    return np.ascontiguousarray(np.asarray(rgb, dtype=np.float32)[:, :, ::-1])


def quantise(images: torch.Tensor) -> np.ndarray:
    """float [B, 3, H, W] in [0, 1] -> uint8 [B, H, W, 3], as the batch is saved."""
    pixels = (images.detach().float().clamp(0, 1) * 255).round().to(torch.uint8)
    return np.ascontiguousarray(pixels.permute(0, 2, 3, 1).cpu().numpy())


def batch_to_pil(images: torch.Tensor) -> list[Image.Image]:
    """float [B, 3, H, W] in [0, 1] -> 8-bit RGB images (as the batch is saved)."""
    return [Image.fromarray(row, "RGB") for row in quantise(images)]


def providers_for(device: torch.device | str, available: Sequence[str]) -> list[str]:
    """The onnxruntime providers to ask for: CUDA first on a CUDA run when offered, CPU always."""
    wanted = ["CPUExecutionProvider"]
    if torch.device(device).type == "cuda" and "CUDAExecutionProvider" in available:
        wanted.insert(0, "CUDAExecutionProvider")
    return wanted


def import_onnxruntime() -> Any:
    try:
        import onnxruntime
    except ImportError as exc:
        raise TaggerRuntimeError(
            "The tagger objective needs onnxruntime: pip install onnxruntime (or onnxruntime-gpu, "
            "-directml, -silicon; inside the WebUI the extension's installer adds it), or install "
            "this package with the 'tagger' extra"
        ) from exc
    return onnxruntime


class TaggerSession:
    """One ONNX session and its tag list; `confidences` tags a whole batch in one call."""

    def __init__(self, model: str | Path, tags: str | Path, *, device: torch.device | str = "cpu") -> None:
        ort = import_onnxruntime()
        self.tag_list = read_tag_list(tags)
        options = ort.SessionOptions()
        options.log_severity_level = 3  # onnxruntime's provider warnings are noise here
        self.providers = providers_for(device, ort.get_available_providers())
        self.session = ort.InferenceSession(str(model), sess_options=options, providers=self.providers)
        inputs, outputs = self.session.get_inputs(), self.session.get_outputs()
        if len(inputs) != 1 or len(inputs[0].shape) != 4:
            raise TaggerRuntimeError(f"{model} is not a WD14 tagger: expected one NHWC image input")
        self.input_name = inputs[0].name
        self.output_name = outputs[0].name
        batch, height, width, channels = inputs[0].shape
        if not (isinstance(height, int) and height == width and channels == 3):
            raise TaggerRuntimeError(
                f"{model} has input shape {inputs[0].shape}; a WD14 tagger takes [N, S, S, 3] with a fixed S"
            )
        self.size = int(height)
        # Some exports fix the batch dimension to 1; those are run one image at a time.
        self.fixed_batch = batch if isinstance(batch, int) else None
        width_out = outputs[0].shape[-1]
        if isinstance(width_out, int) and width_out != len(self.tag_list):
            raise TaggerRuntimeError(
                f"{model} outputs {width_out} confidences but {tags} lists {len(self.tag_list)} tags"
            )

    def confidences(self, images: Sequence[Image.Image]) -> np.ndarray:
        """float64 [B, T] confidences of every tag for each image."""
        rows = np.stack([prepare_image(image, self.size) for image in images])
        if self.fixed_batch is None:
            out = self.session.run([self.output_name], {self.input_name: rows})[0]
        else:
            step, chunks = self.fixed_batch, []
            for i in range(0, len(rows), step):
                chunk = rows[i:i + step]
                short = step - len(chunk)
                if short:  # pad the last chunk to the model's batch with white images, then drop them
                    chunk = np.concatenate([chunk, np.full((short, *chunk.shape[1:]), 255.0, np.float32)])
                chunks.append(self.session.run([self.output_name], {self.input_name: chunk})[0][: step - short])
            out = np.concatenate(chunks)
        return np.asarray(out, dtype=np.float64).reshape(len(images), -1)
