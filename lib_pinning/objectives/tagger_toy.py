"""A tiny WD14-shaped tagger for the toy model: a real ONNX file and `selected_tags.csv`.

It takes what a WD14 model takes (NHWC, BGR, 0..255, a fixed square input size) and answers per
tag with a confidence, so the tagger objective, its preprocessing and the onnxruntime session run
end to end without model weights (tests, the benchmark). Its tags respond to the toy model's
pictures:

* one general tag per toy colour (``red``, ``blue``, ...): the share of pixels whose chroma points
  to that colour, through a sigmoid (about 0.98 for a toy shape of that colour, 0.02 without);
* ``dark`` (general): the share of dark pixels;
* ``toy_mascot`` (character): a purple shape;
* ``general`` and ``sensitive`` (ratings): constant;
* one general tag per toy shape (``circle``, ``square``, ``triangle``, ``ring``, ``cross``): which
  outline the image's saturated pixels fill (about 0.99 for a toy picture of that shape, under
  0.01 for the other four, all near 0 without a saturated shape).

So a toy prototype carries its colour tag and its shape tag, and "red, circle" names exactly one of
the ten prototypes, as the prompt words "red circle" do.

Graph, colour tags: per pixel ``sigmoid(a (W p + b))`` for p the pixel's RGB in [0, 1], its mean
over the image, then ``sigmoid(g (share - s0))``. Shape tags: the image average-pooled to about
64 x 64 cells (the toy's own resolution: the templates stay 20 KB whatever the input size), a
foreground mask ``sigmoid(a (max(p) - min(p) - t))`` (the toy's shapes are saturated, its
backgrounds muted), per shape the share of its outline the mask fills plus the share of the mask
inside the outline (2 for a perfect match, about 1.8 between circle and square, the closest
pair), a softmax over the five (the shapes overlap, so only the best match may count) times
``sigmoid(g (share of foreground - f0))`` (no shape without a foreground). Building it needs
the ``onnx`` package (test extra).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from lib_pinning.objectives.tagger_runtime import CHARACTER, GENERAL, RATING
from lib_pinning.toy import COLOURS, SHAPES, shape_coverage

if TYPE_CHECKING:
    from lib_pinning.objectives.tagger_models import TaggerFiles

TOY_FOLDER = "toy-tagger-v2"  # a new version of the toy tagger's graph gets a new folder

# (name, category, RGB weights, pixel bias, share offset)
_PIXEL_GAIN = 20.0
_SHARE_GAIN = 40.0
# Shape tags: foreground is a chroma range (max - min channel, in [0, 1]) above 0.4: the toy's shape
# colours span 0.62 to 0.84, its backgrounds at most 0.2.
_SHAPE_GRID = 64
_FOREGROUND_CHROMA = 0.4
_FOREGROUND_GAIN = 30.0
# Fill plus precision is 2 for the right outline and at most about 1.8 for another (circle against
# square): a gain of 30 puts a clean shape 6 logits above the nearest other one.
_SHAPE_GAIN = 30.0
# The smallest toy shape (the triangle) covers 18% of the image; 5% foreground is "some shape".
_FOREGROUND_SHARE = 0.05
_PRESENCE_GAIN = 100.0


def _tags() -> list[tuple[str, int, np.ndarray, float, float]]:
    tags: list[tuple[str, int, np.ndarray, float, float]] = [
        ("general", RATING, np.zeros(3), 1.0, -1.0),
        ("sensitive", RATING, np.zeros(3), -1.0, 1.0),
    ]
    for name, rgb in COLOURS.items():
        chroma = np.asarray(rgb) - np.mean(rgb)
        # dot(p, u) of a zero-mean u is the pixel's chroma along u: brightness does not count.
        tags.append((name, GENERAL, chroma / np.linalg.norm(chroma), -0.35, 0.1))
    tags.append(("dark", GENERAL, -np.ones(3) / 3.0, 0.2, 0.3))
    purple = np.asarray(COLOURS["purple"]) - np.mean(COLOURS["purple"])
    tags.append(("toy_mascot", CHARACTER, purple / np.linalg.norm(purple), -0.35, 0.1))
    return tags


def toy_tag_names() -> list[str]:
    return [t[0] for t in _tags()] + list(SHAPES)


def _shape_templates(grid: int) -> tuple[np.ndarray, np.ndarray]:
    """Float [grid * grid, 5] each: each shape's outline on the pooled grid (inside where the
    prototypes' coverage passes one half), divided by its own area (a mask's product with it is
    the share of the shape the mask fills) and by the grid's area (the product over the mask's
    share is the share of the mask inside the shape)."""
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
    tags = _tags()
    # The model sees BGR: the weight rows are in B, G, R order.
    weights = np.stack([t[2] for t in tags], axis=1)[::-1] * _PIXEL_GAIN / 255.0
    pixel_bias = np.array([t[3] for t in tags]) * _PIXEL_GAIN
    offset = np.array([t[4] for t in tags])
    # Pooling by a whole number of pixels: the pooled grid covers all but size % pool of them.
    pool = max(1, size // _SHAPE_GRID)
    grid = size // pool
    fill, inside = _shape_templates(grid)
    consts = {
        "W": weights, "b": pixel_bias, "g": np.full(len(tags), _SHARE_GAIN), "s0": -offset * _SHARE_GAIN,
        "fg_gain": np.array(_FOREGROUND_GAIN / 255.0), "fg_bias": np.array(-_FOREGROUND_GAIN * _FOREGROUND_CHROMA),
        "flat_shape": np.array([-1, grid * grid], dtype=np.int64), "fill_templates": fill, "inside_templates": inside,
        "eps": np.array(1e-6), "shape_gain": np.array(_SHAPE_GAIN),
        "presence_gain": np.array(_PRESENCE_GAIN), "presence_bias": np.array(-_PRESENCE_GAIN * _FOREGROUND_SHARE),
    }
    initializers = [
        numpy_helper.from_array(np.asarray(v, dtype=np.int64 if v.dtype == np.int64 else np.float32), name)
        for name, v in consts.items()
    ]
    colour_nodes = [
        helper.make_node("MatMul", ["input_1", "W"], ["logits"]),
        helper.make_node("Add", ["logits", "b"], ["shifted"]),
        helper.make_node("Sigmoid", ["shifted"], ["pixels"]),
        helper.make_node("ReduceMean", ["pixels"], ["share"], axes=[1, 2], keepdims=0),
        helper.make_node("Mul", ["share", "g"], ["scaled"]),
        helper.make_node("Add", ["scaled", "s0"], ["centred"]),
        helper.make_node("Sigmoid", ["centred"], ["colour_tags"]),
    ]
    shape_nodes = [
        helper.make_node("Transpose", ["input_1"], ["nchw"], perm=[0, 3, 1, 2]),
        helper.make_node("AveragePool", ["nchw"], ["cells"], kernel_shape=[pool, pool], strides=[pool, pool]),
        helper.make_node("ReduceMax", ["cells"], ["cell_max"], axes=[1], keepdims=0),
        helper.make_node("ReduceMin", ["cells"], ["cell_min"], axes=[1], keepdims=0),
        helper.make_node("Sub", ["cell_max", "cell_min"], ["chroma"]),
        helper.make_node("Mul", ["chroma", "fg_gain"], ["chroma_scaled"]),
        helper.make_node("Add", ["chroma_scaled", "fg_bias"], ["chroma_centred"]),
        helper.make_node("Sigmoid", ["chroma_centred"], ["foreground"]),
        helper.make_node("Reshape", ["foreground", "flat_shape"], ["mask"]),
        helper.make_node("MatMul", ["mask", "fill_templates"], ["filled"]),
        helper.make_node("MatMul", ["mask", "inside_templates"], ["inside"]),
        helper.make_node("ReduceMean", ["mask"], ["fg_share"], axes=[1], keepdims=1),
        helper.make_node("Add", ["fg_share", "eps"], ["fg_share_safe"]),
        helper.make_node("Div", ["inside", "fg_share_safe"], ["precision"]),
        helper.make_node("Add", ["filled", "precision"], ["match"]),
        helper.make_node("Mul", ["match", "shape_gain"], ["shape_logits"]),
        helper.make_node("Softmax", ["shape_logits"], ["shape_choice"], axis=1),
        helper.make_node("Mul", ["fg_share", "presence_gain"], ["presence_scaled"]),
        helper.make_node("Add", ["presence_scaled", "presence_bias"], ["presence_centred"]),
        helper.make_node("Sigmoid", ["presence_centred"], ["presence"]),
        helper.make_node("Mul", ["shape_choice", "presence"], ["shape_tags"]),
    ]
    output = helper.make_node("Concat", ["colour_tags", "shape_tags"], ["predictions_sigmoid"], axis=1)
    names = [t[0] for t in tags] + list(SHAPES)
    categories = [t[1] for t in tags] + [GENERAL] * len(SHAPES)
    batch: int | str = fixed_batch if fixed_batch is not None else "batch"
    graph = helper.make_graph(
        colour_nodes + shape_nodes + [output],
        "toy_tagger",
        [helper.make_tensor_value_info("input_1", TensorProto.FLOAT, [batch, size, size, 3])],
        [helper.make_tensor_value_info("predictions_sigmoid", TensorProto.FLOAT, [batch, len(names)])],
        initializers,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8  # readable by every onnxruntime the WebUI ships with
    onnx.checker.check_model(model)
    onnx.save(model, str(folder / "model.onnx"))
    lines = ["tag_id,name,category,count"] + [
        f"{i},{name},{category},{1000 - i}" for i, (name, category) in enumerate(zip(names, categories))
    ]
    (folder / "selected_tags.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return folder
