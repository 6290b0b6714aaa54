"""Test set-up for the learned objectives: open_clip in this environment, a tiny CLIP (the local
file server lives in tests/file_server.py).

open_clip (a test-environment concern only: inside the WebUI torchvision matches its torch): the
registry's torchvision 0.28.0 is a CUDA build; on the CPU torch of this venv its compiled ops do not
load and `import torchvision` (hence `import open_clip`) fails with "operator torchvision::nms does
not exist". Declaring the two op schemas torchvision's Python side looks up (`nms`, `qnms`)
before importing it lets transforms, models and open_clip import; the ops themselves stay
unavailable, and nothing here calls them.

`ensure_open_clip()` first tries a plain import, so with a working torchvision it changes nothing.
It is idempotent: the schemas are declared at most once per process, and the `torch.library`
handle is kept alive (dropping it would undeclare them).

`serve_files` serves bytes over HTTP on 127.0.0.1 for the download tests (no network needed).
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path
from types import ModuleType

import torch

_SCHEMA = "(Tensor dets, Tensor scores, float iou_threshold) -> Tensor"
_library: torch.library.Library | None = None

TINY_MODEL = "PinningTiny-16"
"""A 3.4M-parameter CLIP (embed 32; vision width 64, 2 layers, patch 16 at 64 px; text width 64,
2 layers) with open_clip's bundled BPE tokenizer: random weights in a tenth of a second."""

TINY_CONFIG = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 64, "layers": 2, "width": 64, "patch_size": 16},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2},
}


def _purge_torchvision() -> None:
    for name in [m for m in sys.modules if m == "torchvision" or m.startswith("torchvision.")]:
        del sys.modules[name]


def ensure_open_clip() -> ModuleType:
    """Import open_clip, declaring torchvision's missing op schemas first if the plain import fails."""
    global _library
    try:
        import torchvision  # noqa: F401
    except RuntimeError as exc:
        if "torchvision::nms" not in str(exc) or _library is not None:
            raise
        _purge_torchvision()
        _library = torch.library.Library("torchvision", "DEF")
        for op in ("nms", "qnms"):
            _library.define(op + _SCHEMA)
        import torchvision  # noqa: F401
    import open_clip

    return open_clip


def tiny_model_name() -> str:
    """Register the tiny architecture with open_clip (where it is not yet known) and return its name."""
    open_clip = ensure_open_clip()
    if TINY_MODEL not in open_clip.list_models():
        # open_clip reads the JSON into its registry when the file is added, so the file can go at
        # once; a folder kept for the process would stay in the temp dir after every test run.
        with tempfile.TemporaryDirectory(prefix="pinning-openclip-") as folder:
            config = Path(folder) / f"{TINY_MODEL}.json"
            config.write_text(json.dumps(TINY_CONFIG), encoding="utf-8")
            open_clip.add_model_config(config)
    return TINY_MODEL


