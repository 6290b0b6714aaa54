"""A tiny WD14-shaped tagger for the toy model: a real ONNX file and `selected_tags.csv`.

It takes what a WD14 model takes (NHWC, BGR, 0..255, a fixed square input size) and answers per
tag with a confidence, so the tagger objective, its preprocessing and the onnxruntime session run
end to end without model weights (tests, the benchmark). Its tags respond to the toy model's
pictures:

* ``general`` and ``sensitive`` (ratings): constant;
* ``dark`` (general): the share of dark pixels;
* one general tag per toy colour (``red``, ``blue``, ``green``, ``yellow``, ``purple``): the share
  of saturated pixels whose colour is nearest that one, through a sigmoid (above 0.95 for a toy
  shape of that colour, under 0.05 for the other four);
* ``toy_mascot`` (character): a purple shape (as confident as ``purple``: it passes the 0.85
  character threshold);
* one general tag per toy shape (``circle``, ``square``, ``triangle``, ``ring``, ``cross``): which
  outline the image's saturated pixels fill (above 0.9 for a toy picture of that shape, under
  0.1 for the other four, all near 0 without a saturated shape).

So a toy prototype carries its colour tag and its shape tag, and "red, circle" names exactly one of
the ten prototypes, as the prompt words "red circle" do.

Graph. The image average-pooled to about 64 x 64 cells (the toy's own resolution: the cost and
the templates stay small whatever the input size); per cell p (RGB in [0, 1]) a foreground weight
``sigmoid(a (max(p) - min(p) - t))`` (the toy's shapes are saturated, its backgrounds muted).
Colour tags: per cell a softmax over the five colours of the chroma of p along each colour's
chroma (a red cell also has some chroma along yellow, so only the nearest colour may count),
times the foreground weight, its mean over the image, then ``sigmoid(g (share - s0))``. ``dark``
and the ratings: ``sigmoid(a (w p + b))``, its mean, the same sigmoid. Shape tags: per shape the
share of its outline the foreground fills plus the share of the foreground inside the outline (2
for a perfect match, about 1.8 between circle and square, the closest pair), a softmax over the
five times ``sigmoid(g (share of foreground - f0))`` (no shape without a foreground).
Building it needs the ``onnx`` package (test extra).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from lib_pinning.objectives.tagger_runtime import CHARACTER, GENERAL, RATING
from lib_pinning.toy_prototypes import COLOURS, SHAPES, shape_coverage

if TYPE_CHECKING:
    from lib_pinning.objectives.tagger_models import TaggerFiles

TOY_FOLDER = "toy-tagger-v2"  # a new version of the toy tagger's graph gets a new folder

_SHARE_GAIN = 40.0
# Pixel tags (ratings, dark): (name, category, RGB weights, pixel bias, share offset).
_PIXEL_GAIN = 20.0
_PIXEL_TAGS: tuple[tuple[str, int, tuple[float, float, float], float, float], ...] = (
    ("general", RATING, (0.0, 0.0, 0.0), 1.0, -1.0),
    ("sensitive", RATING, (0.0, 0.0, 0.0), -1.0, 1.0),
    ("dark", GENERAL, (-1 / 3, -1 / 3, -1 / 3), 0.2, 0.3),
)
# Foreground: a chroma range (max - min channel, in [0, 1]) above 0.4: the toy's shape colours span
# 0.62 to 0.84, its backgrounds at most 0.2.
_FOREGROUND_CHROMA = 0.4
_FOREGROUND_GAIN = 30.0
# Colour tags: a toy colour's own chroma leads the runner-up's by at least 0.21 (purple against
# blue), 5 logits at this gain. The smallest toy shape covers 18% of the image: a share offset of
# 0.08 puts it at 0.98, no pixel of the colour at 0.04.
_COLOUR_GAIN = 25.0
_COLOUR_SHARE = 0.08
MASCOT_COLOUR = "purple"
# Shape tags: fill plus precision is 2 for the right outline and at most about 1.8 for another
# (circle against square): a gain of 30 puts a clean shape 6 logits above the nearest other one.
_SHAPE_GRID = 64
_SHAPE_GAIN = 30.0
# 5% foreground is "some shape" (the smallest covers 18%).
_FOREGROUND_SHARE = 0.05
_PRESENCE_GAIN = 100.0


def _tag_rows() -> list[tuple[str, int]]:
    """(name, category) of every output, in output order (the tag list's order)."""
    return (
        [(t[0], t[1]) for t in _PIXEL_TAGS]
        + [(name, GENERAL) for name in COLOURS]
        + [("toy_mascot", CHARACTER)]
        + [(shape, GENERAL) for shape in SHAPES]
    )


def toy_tag_names() -> list[str]:
    return [name for name, _ in _tag_rows()]


def _colour_directions() -> np.ndarray:
    """float [3, 5]: each toy colour's chroma (RGB minus its mean: brightness does not count), unit length."""
    chroma = np.stack([np.asarray(rgb) - np.mean(rgb) for rgb in COLOURS.values()], axis=1)
    return chroma / np.linalg.norm(chroma, axis=0, keepdims=True)


def _shape_templates(grid: int) -> tuple[np.ndarray, np.ndarray]:
    """Float [grid * grid, 5] each: each shape's outline on the pooled grid (inside where the
    prototypes' coverage passes one half), divided by its own area (a mask's product with it is
    the share of the shape the mask fills) and by the grid's area (the product over the mask's
    share is the share of the mask inside the outline)."""
    inside = np.stack([(shape_coverage(shape, grid).numpy() > 0.5).reshape(-1) for shape in SHAPES], axis=1)
    inside = inside.astype(np.float64)
    return inside / inside.sum(axis=0, keepdims=True), inside / (grid * grid)


TOY_TAGGER_SIZE = 448  # a WD14 model's input size: the objective resizes as for a real tagger


def toy_tagger_files(model_name: str, models_dir: str | os.PathLike[str] | None = None) -> TaggerFiles | None:
    """The toy tagger for a tagger name (built into the models folder on first use), or None when
    `model_name` is a folder path (the user's own tagger). Building needs the ``onnx`` package."""
    from lib_pinning.objectives.tagger_models import TaggerFiles, TaggerNotFoundError, looks_like_path
    from lib_pinning.objectives.weights import default_models_dir

    if looks_like_path(model_name):
        return None
    folder = (Path(models_dir).expanduser() if models_dir else default_models_dir()) / "taggers" / TOY_FOLDER
    model, tags = folder / "model.onnx", folder / "selected_tags.csv"
    if not (model.is_file() and tags.is_file()):
        try:
            import onnx  # noqa: F401  (only to say what is missing before building)
        except ImportError as e:
            raise TaggerNotFoundError(
                "The toy model's booru-tag demo builds a tiny ONNX tagger and needs the onnx package: "
                "pip install onnx onnxruntime"
            ) from e
        # Built aside and renamed into place, so a concurrent run never reads half a model.
        staging = folder.with_name(f"{folder.name}.tmp-{os.getpid()}")
        build_toy_tagger(staging, size=TOY_TAGGER_SIZE)
        try:
            staging.rename(folder)
        except OSError:  # another process put it there first
            shutil.rmtree(staging, ignore_errors=True)
    return TaggerFiles(f"toy tagger (for {model_name})", model, tags)


def build_toy_tagger(folder: str | Path, size: int = 448, *, fixed_batch: int | None = None) -> Path:
    """Write ``model.onnx`` and ``selected_tags.csv`` into `folder`; returns the folder."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rows = _tag_rows()
    # The model sees BGR 0..255: weight rows in B, G, R order, divided by 255.
    pixel_w = np.stack([np.asarray(t[2]) for t in _PIXEL_TAGS], axis=1)[::-1] * _PIXEL_GAIN / 255.0
    colour_w = _colour_directions()[::-1] * _COLOUR_GAIN / 255.0
    # The five colour shares, then the mascot's: a copy of its colour's.
    select = np.concatenate([np.eye(len(COLOURS)), np.eye(len(COLOURS))[:, [list(COLOURS).index(MASCOT_COLOUR)]]], axis=1)
    # Pooling by a whole number of pixels: the pooled grid covers all but size % pool of them.
    pool = max(1, size // _SHAPE_GRID)
    grid = size // pool
    fill, inside = _shape_templates(grid)
    consts = {
        "pixel_w": pixel_w, "pixel_b": np.array([t[3] for t in _PIXEL_TAGS]) * _PIXEL_GAIN,
        "pixel_s0": -np.array([t[4] for t in _PIXEL_TAGS]) * _SHARE_GAIN,
        "share_gain": np.array(_SHARE_GAIN),
        "fg_gain": np.array(_FOREGROUND_GAIN / 255.0), "fg_bias": np.array(-_FOREGROUND_GAIN * _FOREGROUND_CHROMA),
        "colour_w": colour_w, "colour_select": select, "colour_s0": np.array(-_COLOUR_SHARE * _SHARE_GAIN),
        "flat_shape": np.array([-1, grid * grid], dtype=np.int64), "fill_templates": fill, "inside_templates": inside,
        "eps": np.array(1e-6), "shape_gain": np.array(_SHAPE_GAIN),
        "presence_gain": np.array(_PRESENCE_GAIN), "presence_bias": np.array(-_PRESENCE_GAIN * _FOREGROUND_SHARE),
    }
    initializers = [
        numpy_helper.from_array(np.asarray(v, dtype=np.int64 if v.dtype == np.int64 else np.float32), name)
        for name, v in consts.items()
    ]
    node = helper.make_node
    # Everything is read from the image pooled to about 64 x 64 cells (the toy's own resolution), so
    # the graph costs little more than the pooling whatever the input size.
    cell_nodes = [
        node("Transpose", ["input_1"], ["nchw"], perm=[0, 3, 1, 2]),
        node("AveragePool", ["nchw"], ["pooled"], kernel_shape=[pool, pool], strides=[pool, pool]),
        node("Transpose", ["pooled"], ["cells"], perm=[0, 2, 3, 1]),
        node("ReduceMax", ["cells"], ["cell_max"], axes=[3], keepdims=1),
        node("ReduceMin", ["cells"], ["cell_min"], axes=[3], keepdims=1),
        node("Sub", ["cell_max", "cell_min"], ["chroma"]),
        node("Mul", ["chroma", "fg_gain"], ["chroma_scaled"]),
        node("Add", ["chroma_scaled", "fg_bias"], ["chroma_centred"]),
        node("Sigmoid", ["chroma_centred"], ["foreground"]),
    ]
    pixel_nodes = [
        node("MatMul", ["cells", "pixel_w"], ["pixel_logits"]),
        node("Add", ["pixel_logits", "pixel_b"], ["pixel_shifted"]),
        node("Sigmoid", ["pixel_shifted"], ["pixel_on"]),
        node("ReduceMean", ["pixel_on"], ["pixel_share"], axes=[1, 2], keepdims=0),
        node("Mul", ["pixel_share", "share_gain"], ["pixel_scaled"]),
        node("Add", ["pixel_scaled", "pixel_s0"], ["pixel_centred"]),
        node("Sigmoid", ["pixel_centred"], ["pixel_tags"]),
    ]
    colour_nodes = [
        node("MatMul", ["cells", "colour_w"], ["colour_logits"]),
        node("Softmax", ["colour_logits"], ["colour_choice"], axis=-1),
        node("Mul", ["colour_choice", "foreground"], ["colour_pixels"]),
        node("ReduceMean", ["colour_pixels"], ["colour_share"], axes=[1, 2], keepdims=0),
        node("MatMul", ["colour_share", "colour_select"], ["colour_outputs"]),
        node("Mul", ["colour_outputs", "share_gain"], ["colour_scaled"]),
        node("Add", ["colour_scaled", "colour_s0"], ["colour_centred"]),
        node("Sigmoid", ["colour_centred"], ["colour_tags"]),
    ]
    shape_nodes = [
        node("Reshape", ["foreground", "flat_shape"], ["mask"]),
        node("MatMul", ["mask", "fill_templates"], ["filled"]),
        node("MatMul", ["mask", "inside_templates"], ["inside"]),
        node("ReduceMean", ["mask"], ["fg_share"], axes=[1], keepdims=1),
        node("Add", ["fg_share", "eps"], ["fg_share_safe"]),
        node("Div", ["inside", "fg_share_safe"], ["precision"]),
        node("Add", ["filled", "precision"], ["match"]),
        node("Mul", ["match", "shape_gain"], ["shape_logits"]),
        node("Softmax", ["shape_logits"], ["shape_choice"], axis=1),
        node("Mul", ["fg_share", "presence_gain"], ["presence_scaled"]),
        node("Add", ["presence_scaled", "presence_bias"], ["presence_centred"]),
        node("Sigmoid", ["presence_centred"], ["presence"]),
        node("Mul", ["shape_choice", "presence"], ["shape_tags"]),
    ]
    output = node("Concat", ["pixel_tags", "colour_tags", "shape_tags"], ["predictions_sigmoid"], axis=1)
    batch: int | str = fixed_batch if fixed_batch is not None else "batch"
    graph = helper.make_graph(
        cell_nodes + pixel_nodes + colour_nodes + shape_nodes + [output],
        "toy_tagger",
        [helper.make_tensor_value_info("input_1", TensorProto.FLOAT, [batch, size, size, 3])],
        [helper.make_tensor_value_info("predictions_sigmoid", TensorProto.FLOAT, [batch, len(rows)])],
        initializers,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8  # readable by every onnxruntime the WebUI ships with
    onnx.checker.check_model(model)
    onnx.save(model, str(folder / "model.onnx"))
    lines = ["tag_id,name,category,count"] + [
        f"{i},{name},{category},{1000 - i}" for i, (name, category) in enumerate(rows)
    ]
    (folder / "selected_tags.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return folder
