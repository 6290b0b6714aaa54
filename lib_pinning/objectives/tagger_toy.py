"""A tiny WD14-shaped tagger for the toy model: a real ONNX file and `selected_tags.csv`.

It takes what a WD14 model takes (NHWC, BGR, 0..255, a fixed square input size) and answers per
tag with a confidence, so the tagger objective, its preprocessing and the onnxruntime session run
end to end without model weights (tests, the benchmark). Its tags respond to the toy model's
pictures:

* one general tag per toy colour (``red``, ``blue``, ...): the share of pixels whose chroma points
  to that colour, through a sigmoid (about 0.98 for a toy shape of that colour, 0.02 without);
* ``dark`` (general): the share of dark pixels;
* ``toy_mascot`` (character): a purple shape;
* ``general`` and ``sensitive`` (ratings): constant.

Graph: per pixel ``sigmoid(a (W p + b))`` for p the pixel's RGB in [0, 1], its mean over the
image, then ``sigmoid(g (share - s0))``. Building it needs the ``onnx`` package (test extra).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from lib_pinning.objectives.tagger_runtime import CHARACTER, GENERAL, RATING
from lib_pinning.toy import COLOURS

if TYPE_CHECKING:
    from lib_pinning.objectives.tagger_models import TaggerFiles

TOY_FOLDER = "toy-tagger-v1"  # a new version of the toy tagger's graph gets a new folder

# (name, category, RGB weights, pixel bias, share offset)
_PIXEL_GAIN = 20.0
_SHARE_GAIN = 40.0


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
    return [t[0] for t in _tags()]


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
    consts = {
        "W": weights, "b": pixel_bias, "g": np.full(len(tags), _SHARE_GAIN), "s0": -offset * _SHARE_GAIN,
    }
    initializers = [numpy_helper.from_array(np.asarray(v, dtype=np.float32), name) for name, v in consts.items()]
    nodes = [
        helper.make_node("MatMul", ["input_1", "W"], ["logits"]),
        helper.make_node("Add", ["logits", "b"], ["shifted"]),
        helper.make_node("Sigmoid", ["shifted"], ["pixels"]),
        helper.make_node("ReduceMean", ["pixels"], ["share"], axes=[1, 2], keepdims=0),
        helper.make_node("Mul", ["share", "g"], ["scaled"]),
        helper.make_node("Add", ["scaled", "s0"], ["centred"]),
        helper.make_node("Sigmoid", ["centred"], ["predictions_sigmoid"]),
    ]
    batch: int | str = fixed_batch if fixed_batch is not None else "batch"
    graph = helper.make_graph(
        nodes,
        "toy_tagger",
        [helper.make_tensor_value_info("input_1", TensorProto.FLOAT, [batch, size, size, 3])],
        [helper.make_tensor_value_info("predictions_sigmoid", TensorProto.FLOAT, [batch, len(tags)])],
        initializers,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8  # readable by every onnxruntime the WebUI ships with
    onnx.checker.check_model(model)
    onnx.save(model, str(folder / "model.onnx"))
    lines = ["tag_id,name,category,count"] + [f"{i},{t[0]},{t[1]},{1000 - i}" for i, t in enumerate(tags)]
    (folder / "selected_tags.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return folder
