"""CLIP image and text embeddings for the learned objectives (aesthetic head, pin to tags).

`load_clip` builds an open_clip model by architecture and pretrained tag on a device and dtype;
`ClipEncoder` turns batches of [B, 3, H, W] images in [0, 1] into L2-normalised embeddings. Its
preprocessing is open_clip's eval transform redone in torch on the whole batch (resize the
shortest side with antialiasing, centre crop, normalise with the model's own mean and std), so
generated images never take a round trip through PIL and 8-bit quantisation.

open_clip is imported inside `load_clip` only: the engine, the toy demo and the tag objective with
the toy encoder all work without it.

Weights. Every supported (architecture, tag) pair names one file in `CLIP_WEIGHTS`: open_clip's
own choice for that tag (its pretrained.py lists a Hugging Face hub repository, where the timm
organisation publishes OpenAI's weights as `open_clip_model.safetensors`), pinned here to an
immutable hub revision and a SHA-256. The file is fetched through our verified downloader into
the models directory; open_clip builds the bare architecture (pretrained=None, so it never
downloads anything behind our back) and the verified safetensors are loaded into it here. Handing
open_clip the path instead would unpickle with a plain torch.load and fail on safetensors in the
open_clip versions before 2.29, which includes the WebUI's 2.20. To support another pair, add an
entry with the file's revision URL, its SHA-256 (or None: trust on first use, see weights.py),
and the tag's `quick_gelu` and preprocessing from open_clip's pretrained.py (a weights file does
not carry them, and a wrong activation silently degrades every embedding).
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from lib_pinning.objectives.scale import CLIP_COSINE_RANGE
from lib_pinning.objectives.weights import (
    WeightsError,
    WeightsFile,
    default_models_dir,
    ensure_weights,
    load_tensors,
)

logger = logging.getLogger(__name__)

OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)

DEFAULT_CACHE_SIZE = 4096
"""Image embeddings kept per encoder (a ViT-L/14 embedding is 3 KB: 12 MB at most)."""


@dataclass(frozen=True)
class ClipWeights:
    """A supported (architecture, pretrained tag) pair: its weights file and what the file lacks."""

    weights: WeightsFile
    quick_gelu: bool
    preprocess: dict[str, Any] = field(default_factory=dict)


_OPENAI_PREPROCESS = {"mean": OPENAI_MEAN, "std": OPENAI_STD, "interpolation": "bicubic", "resize_mode": "shortest"}


def _hub_safetensors(repo: str, revision: str) -> str:
    return f"https://huggingface.co/{repo}/resolve/{revision}/open_clip_model.safetensors"


CLIP_WEIGHTS: dict[tuple[str, str], ClipWeights] = {
    ("ViT-L-14", "openai"): ClipWeights(
        WeightsFile(
            filename="ViT-L-14-openai.safetensors",
            url=_hub_safetensors(
                "timm/vit_large_patch14_clip_224.openai", "18d0535469bb561bf468d76c1d73aa35156c922b"
            ),
            sha256="9ce2e8a8ebfff3793d7d375ad6d3c35cb9aebf3de7ace0fc7308accab7cd207e",
            source="the Hugging Face LFS SHA-256 of open_clip_model.safetensors in "
            "timm/vit_large_patch14_clip_224.openai at that revision, as pinned by several public "
            "projects loading open_clip's ViT-L-14/openai",
        ),
        quick_gelu=True,
        preprocess=_OPENAI_PREPROCESS,
    ),
    ("ViT-B-32", "openai"): ClipWeights(
        WeightsFile(
            filename="ViT-B-32-openai.safetensors",
            url=_hub_safetensors(
                "timm/vit_base_patch32_clip_224.openai", "a6f597a30f7b82c51704746581f9a4e41421e878"
            ),
            sha256="e6d1bd7789aa45192b3bf90570a789b478bae1b74ebcce7eddd908e83a2b7c31",
            size=605_143_284,
            source="the Hugging Face LFS SHA-256 of open_clip_model.safetensors in "
            "timm/vit_base_patch32_clip_224.openai at that revision, as pinned by several public "
            "projects loading open_clip's ViT-B-32/openai",
        ),
        quick_gelu=True,
        preprocess=_OPENAI_PREPROCESS,
    ),
}


def supported_models() -> list[str]:
    """The "architecture/tag" names `load_clip` can download and verify."""
    return [f"{name}/{tag}" for name, tag in CLIP_WEIGHTS]


def split_model_name(spec: str) -> tuple[str, str]:
    """"ViT-L-14/openai" -> ("ViT-L-14", "openai")."""
    name, sep, tag = spec.partition("/")
    if not sep or not name or not tag:
        raise ValueError(f"a CLIP model is named 'architecture/tag', e.g. 'ViT-L-14/openai'; got {spec!r}")
    return name, tag


class ClipEncoder:
    """Batched, cached CLIP embeddings of images in [0, 1] and of texts; both L2-normalised.

    Results are float32 on the CPU whatever device and dtype the model runs in, so objectives can
    combine them with anything. Image embeddings are cached by a content hash of the image
    (blake2b of its float32 bytes and shape): the baseline's images, repeated targets and
    individuals that render the same prompt are encoded once per encoder. Build one encoder per
    run (or call `clear_cache`).
    """

    def __init__(
        self,
        model: torch.nn.Module,
        tokenizer: Any,
        preprocess_cfg: dict[str, Any],
        *,
        name: str = "",
        dtype: torch.dtype | None = None,
        cache_size: int = DEFAULT_CACHE_SIZE,
        batch_size: int = 16,
    ) -> None:
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.name = name
        self.cache_size = int(cache_size)
        self.batch_size = max(1, int(batch_size))
        size = preprocess_cfg.get("size", 224)
        self.image_size: tuple[int, int] = (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))
        self.resize_mode = str(preprocess_cfg.get("resize_mode", "shortest"))
        self.interpolation = str(preprocess_cfg.get("interpolation", "bicubic"))
        if self.resize_mode not in ("shortest", "squash"):
            raise ValueError(
                f"resize mode {self.resize_mode!r} is not supported (only 'shortest' and 'squash', which "
                "every supported CLIP model uses)"
            )
        if self.resize_mode == "shortest" and self.image_size[0] != self.image_size[1]:
            raise ValueError(f"resize mode 'shortest' needs a square input size, got {self.image_size}")
        if self.interpolation not in ("bicubic", "bilinear"):
            raise ValueError(f"interpolation {self.interpolation!r} is not supported")
        # The patch embedding's dtype is the input dtype: with open_clip's fp16/bf16 precision
        # some parameters (positional embeddings, norms) stay float32.
        patch = getattr(getattr(model, "visual", None), "conv1", None)
        param = patch.weight if patch is not None else next(model.parameters())
        self.device = param.device
        self.dtype = dtype or param.dtype
        self._mean = torch.tensor(preprocess_cfg.get("mean", OPENAI_MEAN), dtype=torch.float32, device=self.device)
        self._std = torch.tensor(preprocess_cfg.get("std", OPENAI_STD), dtype=torch.float32, device=self.device)
        self._cache: OrderedDict[bytes, torch.Tensor] = OrderedDict()
        self._text_cache: dict[str, torch.Tensor] = {}
        self.hits = 0
        self.misses = 0

    # ---- properties ---------------------------------------------------------------------------

    @property
    def embed_dim(self) -> int:
        output_dim = getattr(getattr(self.model, "visual", None), "output_dim", None)
        return int(output_dim) if output_dim is not None else int(self.encode_text(["a"]).shape[1])

    @property
    def cosine_range(self) -> tuple[float, float]:
        """Plausible image-text cosines of a real CLIP model (see objectives.scale)."""
        return CLIP_COSINE_RANGE

    # ---- preprocessing --------------------------------------------------------------------------

    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        """[B, 3, H, W] in [0, 1] -> the model's normalised float32 input [B, 3, S, S] on its device.

        Matches open_clip's eval transform (torchvision Resize with antialias, CenterCrop,
        Normalize): the shortest side is resized to S (the longer one to int(S * long / short), as
        torchvision computes it), then the centre S x S is cropped with torchvision's rounding.
        """
        _check_images(images)
        x = images.to(device=self.device, dtype=torch.float32)
        th, tw = self.image_size
        h, w = x.shape[-2:]
        if self.resize_mode == "squash":
            new_h, new_w = th, tw
        else:
            short, long = min(h, w), max(h, w)
            new_long = int(th * long / short)
            new_h, new_w = (th, new_long) if h <= w else (new_long, th)
        if (new_h, new_w) != (h, w):
            x = F.interpolate(x, size=(new_h, new_w), mode=self.interpolation, align_corners=False, antialias=True)
        if (new_h, new_w) != (th, tw):
            top = int(round((new_h - th) / 2.0))
            left = int(round((new_w - tw) / 2.0))
            x = x[:, :, top : top + th, left : left + tw]
        return (x - self._mean.view(1, 3, 1, 1)) / self._std.view(1, 3, 1, 1)

    # ---- encoding ------------------------------------------------------------------------------

    @staticmethod
    def image_key(image: torch.Tensor) -> bytes:
        """Content hash of one image [3, H, W] (float32 bytes plus shape)."""
        data = image.detach().to("cpu", torch.float32).contiguous()
        digest = hashlib.blake2b(digest_size=20)
        digest.update(repr(tuple(data.shape)).encode())
        digest.update(data.numpy().tobytes())
        return digest.digest()

    def encode_images(self, images: torch.Tensor) -> torch.Tensor:
        """float32 [B, D] unit embeddings of [B, 3, H, W] images in [0, 1] (CPU)."""
        _check_images(images)
        keys = [self.image_key(img) for img in images]
        known: dict[bytes, torch.Tensor] = {}
        todo: dict[bytes, int] = {}  # first row of each key not in the cache
        for i, key in enumerate(keys):
            cached = self._cache.get(key)
            if cached is not None:
                self._cache.move_to_end(key)
                known[key] = cached
                self.hits += 1
            elif key not in todo:
                todo[key] = i
        if todo:
            self.misses += len(todo)
            rows = list(todo.values())
            chunks = [
                self._encode_uncached(images[rows[s : s + self.batch_size]])
                for s in range(0, len(rows), self.batch_size)
            ]
            for key, emb in zip(todo, torch.cat(chunks)):
                known[key] = emb
                self._remember(key, emb)
        return torch.stack([known[k] for k in keys])

    def _encode_uncached(self, images: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            x = self.preprocess(images).to(self.dtype)
            emb = self.model.encode_image(x)
        return F.normalize(emb.float(), dim=-1).cpu()

    def _remember(self, key: bytes, emb: torch.Tensor) -> None:
        if self.cache_size <= 0:
            return
        self._cache[key] = emb
        self._cache.move_to_end(key)
        while len(self._cache) > self.cache_size:
            self._cache.popitem(last=False)

    def encode_text(self, texts: str | Sequence[str]) -> torch.Tensor:
        """Unit embeddings: float32 [D] for one string, [N, D] for a list (CPU)."""
        single = isinstance(texts, str)
        batch = [texts] if single else list(texts)
        todo = [t for t in dict.fromkeys(batch) if t not in self._text_cache]
        if todo:
            with torch.no_grad():
                tokens = self.tokenizer(todo).to(self.device)
                emb = F.normalize(self.model.encode_text(tokens).float(), dim=-1).cpu()
            self._text_cache.update(zip(todo, emb))
        if not batch:
            return torch.zeros(0, self.embed_dim)
        out = torch.stack([self._text_cache[t] for t in batch])
        return out[0] if single else out

    def clear_cache(self) -> None:
        self._cache.clear()
        self._text_cache.clear()
        self.hits = self.misses = 0


def _check_images(images: torch.Tensor) -> None:
    if not isinstance(images, torch.Tensor) or images.ndim != 4 or images.shape[1] != 3:
        shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
        raise ValueError(f"images must be a tensor [B, 3, H, W] with values in [0, 1], got {shape}")
    if not images.dtype.is_floating_point:
        raise ValueError(f"images must be floating point in [0, 1], got {images.dtype}")


def _precision(dtype: torch.dtype) -> str:
    names = {torch.float32: "fp32", torch.float16: "fp16", torch.bfloat16: "bf16"}
    if dtype not in names:
        raise ValueError(f"CLIP runs in float32, float16 or bfloat16, not {dtype}")
    return names[dtype]


def load_clip(
    name: str = "ViT-L-14",
    pretrained: str | None = "openai",
    *,
    models_dir: str | os.PathLike[str] | None = None,
    device: str | torch.device = "cpu",
    dtype: torch.dtype | None = None,
    download: bool = True,
    quick_gelu: bool | None = None,
    cache_size: int = DEFAULT_CACHE_SIZE,
) -> ClipEncoder:
    """An encoder for open_clip architecture `name` with weights `pretrained`.

    pretrained: a tag from `CLIP_WEIGHTS` (the file is found in, or downloaded and verified into,
        `models_dir`; None or "" there means `default_models_dir()`); a path to a local checkpoint
        of that architecture in open_clip's key layout (safetensors, or a tensor-only torch
        pickle); or None for random weights (benchmarks and tests).
    dtype: defaults to float16 on CUDA and float32 elsewhere.
    quick_gelu: the activation the weights were trained with; registry entries know it, for a
        local file it defaults to False (OpenAI-trained weights need True, or the architecture
        name with open_clip's "-quickgelu" suffix).
    """
    device = torch.device(device)
    if dtype is None:
        dtype = torch.float16 if device.type == "cuda" else torch.float32
    precision = _precision(dtype)
    checkpoint: Path | None = None
    preprocess: dict[str, Any] = {}
    if pretrained is not None:
        entry = CLIP_WEIGHTS.get((name, pretrained))
        if entry is not None:
            directory = Path(models_dir).expanduser() if models_dir else default_models_dir()
            checkpoint = ensure_weights(entry.weights, directory, download=download)
            quick_gelu = entry.quick_gelu if quick_gelu is None else quick_gelu
            preprocess = dict(entry.preprocess)
        elif Path(pretrained).expanduser().is_file():
            checkpoint = Path(pretrained).expanduser()
        else:
            raise ValueError(
                f"unknown CLIP weights {name}/{pretrained}: supported are {', '.join(supported_models())}, "
                "or pass the path of a checkpoint file"
            )
    state = load_tensors(checkpoint) if checkpoint is not None else None

    import open_clip  # deferred: the engine must import without open_clip (and its torchvision)

    logger.info("Loading CLIP %s (%s) on %s as %s", name, checkpoint or "random weights", device, dtype)
    # The weights are loaded here rather than by open_clip (pretrained=<path>): open_clip before
    # 2.29 (the WebUI pins 2.20) unpickles checkpoints with a plain torch.load and cannot read
    # safetensors. Building the architecture with pretrained=None works in every version and
    # never touches the network.
    model, _, _ = open_clip.create_model_and_transforms(
        name, pretrained=None, precision=precision, device=device, force_quick_gelu=bool(quick_gelu)
    )
    if state is not None:
        _load_state(model, state, checkpoint)
    return ClipEncoder(
        model,
        open_clip.get_tokenizer(name),
        _preprocess_cfg(open_clip, model, preprocess),
        name=f"{name}/{pretrained}",
        dtype=dtype,
        cache_size=cache_size,
    )


def _load_state(model: torch.nn.Module, state: dict[str, torch.Tensor], path: Path | None) -> None:
    if state and next(iter(state)).startswith("module."):
        state = {k[len("module.") :]: v for k, v in state.items()}
    own = model.state_dict()
    # logit_scale is a 0-d tensor in some checkpoints and 1-d in some open_clip versions.
    for key in ("logit_scale", "logit_bias"):
        if key in state and key in own and state[key].shape != own[key].shape:
            state[key] = state[key].reshape(own[key].shape)
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    if missing or unexpected:
        raise WeightsError(
            f"{path} does not fit this architecture: missing {missing[:6]}{'...' if len(missing) > 6 else ''}, "
            f"unexpected {unexpected[:6]}{'...' if len(unexpected) > 6 else ''}"
        )
    model.load_state_dict(state, strict=True)


def _preprocess_cfg(open_clip: Any, model: torch.nn.Module, overrides: dict[str, Any]) -> dict[str, Any]:
    """The model's eval preprocessing: open_clip's record where it keeps one (>= 2.23), else the
    legacy attributes, then the registry entry's values (a bare architecture defaults to OpenAI's)."""
    getter = getattr(open_clip, "get_model_preprocess_cfg", None)
    cfg: dict[str, Any] = dict(getter(model)) if getter is not None else {}
    visual = getattr(model, "visual", None)
    cfg.setdefault("size", getattr(visual, "image_size", 224))
    cfg.setdefault("mean", getattr(visual, "image_mean", None) or OPENAI_MEAN)
    cfg.setdefault("std", getattr(visual, "image_std", None) or OPENAI_STD)
    cfg.update(overrides)
    return cfg
