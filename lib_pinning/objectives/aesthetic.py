"""The LAION aesthetic predictor as an objective: pin a prompt toward images people rate higher.

The predictor (christophschuhmann/improved-aesthetic-predictor, `sac+logos+ava1-l14-linearMSE`)
is a small MLP on the L2-normalised CLIP ViT-L/14 (OpenAI) image embedding (768-d), trained on
SAC, LAION-Logos and AVA ratings; it predicts the mean rating on a 1..10 scale. Its layers, as the
repository's inference script describes them: Linear 768->1024, Dropout 0.2, Linear 1024->128,
Dropout 0.2, Linear 128->64, Dropout 0.1, Linear 64->16, Linear 16->1, with no activations (the
ReLUs are commented out there, so the trained head is an affine map in five factors). The module
below keeps that `layers.<i>` layout so the published state dict loads unchanged.

The published file is a torch pickle (.pth). It is verified by SHA-256, read with
torch.load(weights_only=True) (tensors only, nothing executed), and converted once to
safetensors beside it; later runs read the safetensors copy.

Objective: the batch's mean score, maximised (value = -mean), optionally minus a penalty on the
scores' spread (value = -mean + spread_weight * std): a batch whose images are all good beats one
with the same mean from a few great and a few poor images, which is what pinning is after.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

import torch
from torch import nn

from lib_pinning.objectives.base import Evaluation
from lib_pinning.objectives.scale import AESTHETIC_SCALE, NaturalScale
from lib_pinning.objectives.weights import (
    WeightsError,
    WeightsFile,
    default_models_dir,
    ensure_weights,
    load_tensors,
    read_record,
    sha256_of,
    verify_file,
    write_record,
)

if TYPE_CHECKING:
    from lib_pinning.generator import Batch
    from lib_pinning.objectives.clip import ClipEncoder

logger = logging.getLogger(__name__)

AESTHETIC_CLIP = ("ViT-L-14", "openai")
"""The CLIP model whose embeddings the head was trained on; another model's embeddings are meaningless to it."""

AESTHETIC_HEAD = WeightsFile(
    filename="sac+logos+ava1-l14-linearMSE.pth",
    url="https://github.com/christophschuhmann/improved-aesthetic-predictor/raw/"
    "6934dd81792f086e613a121dbce43082cb8be85e/sac%2Blogos%2Bava1-l14-linearMSE.pth",
    sha256="21dd590f3ccdc646f0d53120778b296013b096a035a2718c9cb0d511bff0f1e0",
    size=3_714_759,
    source="the file in christophschuhmann/improved-aesthetic-predictor at commit 6934dd8 (hashed "
    "from the repository's git object; the same hash is pinned by other public projects)",
)

# Hidden widths of the published head, in order.
HEAD_WIDTHS = (1024, 128, 64, 16)
_DROPOUTS = (0.2, 0.2, 0.1)


class AestheticHead(nn.Module):
    """The predictor's MLP; `layers.{0,2,4,6,7}` are its linear layers (state-dict compatible)."""

    def __init__(self, input_dim: int = 768) -> None:
        super().__init__()
        self.input_dim = int(input_dim)
        w1, w2, w3, w4 = HEAD_WIDTHS
        self.layers = nn.Sequential(
            nn.Linear(self.input_dim, w1),
            nn.Dropout(_DROPOUTS[0]),
            nn.Linear(w1, w2),
            nn.Dropout(_DROPOUTS[1]),
            nn.Linear(w2, w3),
            nn.Dropout(_DROPOUTS[2]),
            nn.Linear(w3, w4),
            nn.Linear(w4, 1),
        )
        self.eval()

    def forward(self, embeddings: torch.Tensor) -> torch.Tensor:
        """Scores [B] of L2-normalised embeddings [B, input_dim]."""
        return self.layers(embeddings).squeeze(-1)

    @classmethod
    def from_state_dict(cls, state: Mapping[str, torch.Tensor]) -> AestheticHead:
        """A head with exactly these weights; the input width is read from the first layer."""
        first = state.get("layers.0.weight")
        if first is None or first.ndim != 2:
            raise WeightsError(
                "not an aesthetic predictor state dict: no 2-d 'layers.0.weight' "
                f"(keys: {', '.join(sorted(state)[:8])})"
            )
        head = cls(int(first.shape[1]))
        expected = {k: tuple(v.shape) for k, v in head.state_dict().items()}
        got = {k: tuple(v.shape) for k, v in state.items()}
        if expected != got:
            raise WeightsError(f"aesthetic head weights do not match its layout: expected {expected}, got {got}")
        head.load_state_dict({k: v.float() for k, v in state.items()})
        return head


def load_aesthetic_head(
    models_dir: str | os.PathLike[str] | None = None,
    *,
    device: str | torch.device = "cpu",
    download: bool = True,
    spec: WeightsFile = AESTHETIC_HEAD,
) -> AestheticHead:
    """The published head from `models_dir` (downloaded and verified there on first use; None or
    "" means `default_models_dir()`).

    The verified .pth is converted to `<stem>.safetensors` beside it on first load; that copy's
    hash is recorded when it is written and checked on every later load.
    """
    directory = Path(models_dir).expanduser() if models_dir else default_models_dir()
    converted = directory / (Path(spec.filename).stem + ".safetensors")
    if converted.is_file():
        try:
            verify_file(converted)
            record = read_record(converted) or {}
            if record.get("source_sha256") != spec.sha256:
                raise WeightsError(f"it was converted from another file than {spec.filename} @ {spec.sha256}")
            return AestheticHead.from_state_dict(load_tensors(converted)).to(device)
        except WeightsError as exc:
            logger.warning("Ignoring the converted aesthetic head %s (%s); converting it again", converted, exc)
    source = ensure_weights(spec, directory, download=download)
    head = AestheticHead.from_state_dict(load_tensors(source))
    try:
        _save_safetensors(head, converted, derived_from=spec)
    except OSError as exc:
        # A read-only models folder only costs the conversion; the verified head is in memory.
        logger.warning("Could not write %s (%s); the .pth will be read again next time", converted, exc)
    return head.to(device)


def _save_safetensors(head: AestheticHead, path: Path, derived_from: WeightsFile) -> None:
    from safetensors.torch import save_file

    tmp = path.with_name(path.name + ".tmp")
    state = {k: v.detach().cpu().contiguous() for k, v in head.state_dict().items()}
    metadata = {"converted_from": derived_from.filename, "sha256": derived_from.sha256 or ""}
    save_file(state, str(tmp), metadata=metadata)
    os.replace(tmp, path)
    # Recorded as a first-seen hash: we made this file from a verified source a moment ago.
    write_record(
        path, sha256_of(path), pinned=False, converted_from=derived_from.filename, source_sha256=derived_from.sha256
    )


class AestheticObjective:
    """Maximise the predicted aesthetic score of a batch (an `Objective`; lower value is better).

    value = -mean(score) + spread_weight * std(score) (population std), in score units; the
    composer can map it onto [0, 1] with `scale`. Reported per image as
    ``per_image["aesthetic"]`` and in the components ``aesthetic_mean`` and ``aesthetic_std``.
    """

    name = "aesthetic"

    def __init__(self, encoder: ClipEncoder | Any, head: AestheticHead, *, spread_weight: float = 0.0) -> None:
        if not spread_weight >= 0.0:
            raise ValueError(f"spread_weight must be >= 0, got {spread_weight}")
        self.encoder = encoder
        self.head = head
        self.spread_weight = float(spread_weight)

    @property
    def scale(self) -> NaturalScale:
        return AESTHETIC_SCALE

    @classmethod
    def load(
        cls,
        models_dir: str | os.PathLike[str] | None = None,
        *,
        device: str | torch.device = "cpu",
        dtype: torch.dtype | None = None,
        spread_weight: float = 0.0,
        download: bool = True,
        encoder: ClipEncoder | None = None,
    ) -> AestheticObjective:
        """The objective with the published head and CLIP ViT-L/14 (pass `encoder` to share one)."""
        from lib_pinning.objectives.clip import load_clip

        if encoder is None:
            name, tag = AESTHETIC_CLIP
            encoder = load_clip(name, tag, models_dir=models_dir, device=device, dtype=dtype, download=download)
        elif getattr(encoder, "name", None) != "/".join(AESTHETIC_CLIP):
            raise ValueError(
                f"the aesthetic head reads {'/'.join(AESTHETIC_CLIP)} embeddings; the given encoder is "
                f"{getattr(encoder, 'name', type(encoder).__name__)}"
            )
        head = load_aesthetic_head(models_dir, device=device, download=download)
        return cls(encoder, head, spread_weight=spread_weight)

    def predict(self, images: torch.Tensor) -> torch.Tensor:
        """float32 [B] predicted scores of images [B, 3, H, W] in [0, 1]."""
        emb = self.encoder.encode_images(images)
        if emb.shape[1] != self.head.input_dim:
            raise ValueError(
                f"the aesthetic head takes {self.head.input_dim}-d embeddings, the encoder gives {emb.shape[1]}-d"
            )
        param = next(self.head.parameters())
        with torch.no_grad():
            return self.head(emb.to(device=param.device, dtype=param.dtype)).float().cpu()

    def score(self, batch: Batch) -> Evaluation:
        return self.score_images(batch.images)

    def score_images(self, images: torch.Tensor) -> Evaluation:
        scores = self.predict(images).double()
        mean = float(scores.mean())
        std = float(scores.std(unbiased=False))
        return Evaluation(
            value=-mean + self.spread_weight * std,
            components={"aesthetic_mean": mean, "aesthetic_std": std},
            per_image={"aesthetic": [float(s) for s in scores]},
        )
