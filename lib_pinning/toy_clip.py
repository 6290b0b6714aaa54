"""The toy model's CLIP stand-in (`ToyClip`): exact image and text embeddings over the toy's
attribute words, so the tag objective (lib_pinning.objectives.tags) runs on the toy with a known
optimum. The model it reads images with: lib_pinning.toy."""

from __future__ import annotations

from typing import Sequence

import torch

from lib_pinning.toy import ToyModel, _images_to_data
from lib_pinning.toy_prototypes import ATTRIBUTE_WORDS
from lib_pinning.toy_words import words_of


class ToyClip:
    """A tiny, exact CLIP stand-in over the toy's attribute words.

    Embedding space: one axis per attribute word (5 colours + 5 shapes, D = 10).
    Image: the posterior over prototypes at sigma = 0 under a uniform prior (softmax of
    -|x - mu_k|^2 / 2 s^2, i.e. essentially "which prototype is this"), projected onto the attribute
    axes through the prototype-attribute membership matrix, then L2-normalised. Text: the sum of the
    attribute axes of its words (other words carry no attribute meaning and add nothing), L2-normalised.
    An image of prototype k thus has cosine 1 with the text naming its colour and shape, 0.5 with a
    text matching one of them, 0 otherwise: the "pin to tags" objective has a known optimum.
    """

    def __init__(self, model: ToyModel | None = None) -> None:
        self.model = model or ToyModel()

    @property
    def embed_dim(self) -> int:
        return len(ATTRIBUTE_WORDS)

    @property
    def axis_names(self) -> tuple[str, ...]:
        return ATTRIBUTE_WORDS

    def encode_images(self, images: torch.Tensor) -> torch.Tensor:
        """float32 [B, D] unit embeddings of [B, 3, H, W] images in [0, 1]."""
        x = _images_to_data(images, self.model.config.image_size)
        zero = torch.zeros(x.shape[0], dtype=torch.float64)
        uniform = self.model.uniform_log_weights().expand(x.shape[0], -1)
        resp = self.model.responsibilities(x, zero, uniform)
        emb = resp @ self.model.attribute_matrix
        return torch.nn.functional.normalize(emb, dim=1).float()

    def encode_text(self, texts: str | Sequence[str]) -> torch.Tensor:
        """Unit embeddings: float32 [D] for one string, [N, D] for a list.

        A text without attribute words has no direction in this space and embeds as zeros
        (cosine 0 with every image).
        """
        single = isinstance(texts, str)
        batch = [texts] if single else list(texts)
        emb = torch.zeros(len(batch), self.embed_dim, dtype=torch.float64)
        for row, text in enumerate(batch):
            for word in words_of(text):
                if word in ATTRIBUTE_WORDS:
                    emb[row, ATTRIBUTE_WORDS.index(word)] += 1.0
        emb = torch.nn.functional.normalize(emb, dim=1).float()
        return emb[0] if single else emb
