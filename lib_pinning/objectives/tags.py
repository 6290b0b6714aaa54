"""Pin to tags: move the batch toward texts that should describe it and away from ones that should not.

Tags are written like a prompt: comma-separated, with the WebUI's emphasis syntax for weights
(``red, (circle:1.3), [shiny]``). Positive tags pull the images' CLIP embeddings toward the tags'
text embeddings, negative tags push them away:

    s_b   = (sum_pos w_t cos(image_b, tag_t) - sum_neg w_t cos(image_b, tag_t)) / sum_all w_t
    value = -mean_b s_b

Dividing by the sum of all weights makes each tag's weight its share of the objective, so adding
tags does not inflate the value and the objective's range is that of a cosine. Any encoder with
``encode_images(images) -> [B, D]`` and ``encode_text(list[str]) -> [N, D]`` (both L2-normalised)
works: the open_clip wrapper (objectives.clip) and the toy model's `ToyClip`, whose exact cosines
make the toy demo's "pin to tags" run without downloads.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol, Sequence

import torch

from lib_pinning.objectives.base import Evaluation
from lib_pinning.objectives.scale import NaturalScale
from lib_pinning.options_model import PinningInputError
from lib_pinning.prompt import parse_prompt_attention

if TYPE_CHECKING:
    from lib_pinning.generator import Batch


class TextImageEncoder(Protocol):
    def encode_images(self, images: torch.Tensor) -> torch.Tensor: ...

    def encode_text(self, texts: Sequence[str]) -> torch.Tensor: ...


@dataclass(frozen=True)
class Tag:
    """One tag: its text, its weight (> 0) and whether it is a negative tag."""

    text: str
    weight: float
    negative: bool = False

    @property
    def key(self) -> str:
        """Name in the Evaluation's components and per-image values."""
        return f"{'negative tag' if self.negative else 'tag'}:{self.text}"


_SPACE = re.compile(r"\s+")


def parse_tags(text: str) -> list[tuple[str, float]]:
    """Comma-separated tags with their emphasis weights: ``"red, (circle:1.2)"`` -> [("red", 1.0), ("circle", 1.2)].

    Weights follow the WebUI (`parse_prompt_attention`): ``(x)`` is 1.1, ``[x]`` 1/1.1, ``(x:w)``
    w; every comma separates, also inside brackets; BREAK separates too. A tag whose words carry
    different weights (``a (red:1.5) car``) gets their mean weighted by the characters they cover,
    as a tag is embedded as one text. Tags are whitespace-normalised; repeated tags keep one entry
    with the weights added. Tags of weight <= 0 are dropped (they cannot mean "less of this": use
    a negative tag).
    """
    tags: dict[str, float] = {}
    for words, weight in _weighted_tags(text):
        if weight > 0:
            tags[words] = tags.get(words, 0.0) + weight
    return list(tags.items())


def dropped_tags(text: str) -> list[tuple[str, float]]:
    """The tags of `text` that `parse_tags` drops for a weight <= 0, as (text, weight)."""
    return [(words, weight) for words, weight in _weighted_tags(text) if weight <= 0]


def _weighted_tags(text: str) -> list[tuple[str, float]]:
    """Every tag of `text` with its character-weighted mean weight, in order, repeats kept."""
    out: list[tuple[str, float]] = []
    pieces: list[tuple[str, float]] = []

    def finish() -> None:
        words = _SPACE.sub(" ", "".join(p for p, _ in pieces)).strip()
        chars = sum(len(p.strip()) for p, _ in pieces)
        if words and chars:
            out.append((words, sum(len(p.strip()) * w for p, w in pieces) / chars))
        pieces.clear()

    for piece, weight in parse_prompt_attention(text):
        if piece == "BREAK" and weight == -1:
            finish()
            continue
        parts = piece.split(",")
        for i, part in enumerate(parts):
            if i:
                finish()
            if part:
                pieces.append((part, float(weight)))
    finish()
    return out


class TagError(PinningInputError):
    """Tags that leave the tag objective nothing to score; the message says what to write instead."""


def check_tags(positive: str, negative: str) -> None:
    """Raise TagError unless the tags and negative tags hold at least one tag of weight above 0."""
    if parse_tags(positive) or parse_tags(negative):
        return
    dropped = dropped_tags(positive) + dropped_tags(negative)
    if dropped:
        listed = ", ".join(f"{words!r} ({weight:g})" for words, weight in dropped)
        raise TagError(
            f"Pin to tags: every tag has a weight of 0 or less ({listed}), and such tags are dropped "
            "(a weight cannot mean 'less of this'): give them a positive weight, e.g. 'red' or "
            "'(red:1.2)', and put what the images should not show in Pin away from tags"
        )
    raise TagError(
        "Pin to tags: no tag given (the tags and negative tags are empty or only commas): write "
        "comma-separated tags, e.g. 'red, (circle:1.2)', or set the tag weight to 0"
    )


class TagObjective:
    """Pin to tags (an `Objective`; lower is better): see the module docstring for the formula.

    Reports per tag the mean cosine over the batch (components, keyed ``tag:<text>`` or
    ``negative tag:<text>``) and per image both each tag's cosine (per_image, same keys) and the
    image's combined score ``per_image["tags"]`` (s_b, higher is better).
    """

    name = "tags"

    def __init__(self, encoder: TextImageEncoder, positive: str = "", negative: str = "") -> None:
        check_tags(positive, negative)
        tags = [Tag(t, w) for t, w in parse_tags(positive)] + [Tag(t, w, True) for t, w in parse_tags(negative)]
        self.encoder = encoder
        self.tags = tuple(tags)
        emb = encoder.encode_text([t.text for t in tags])
        self.text_embeddings = emb.detach().float().cpu()
        signed = torch.tensor([(-t.weight if t.negative else t.weight) for t in tags], dtype=torch.float64)
        self._coefficients = signed / sum(t.weight for t in tags)

    @property
    def scale(self) -> NaturalScale:
        """Best and worst plausible value, from the encoder's plausible cosine range.

        The value is a weighted mean of +-cosines; with positive share P and negative share N
        (P + N = 1) and cosines in [lo, hi] it lies in [-(P hi - N lo), -(P lo - N hi)]. Encoders
        that do not state a range (the toy) use the full [-1, 1].
        """
        lo, hi = getattr(self.encoder, "cosine_range", (-1.0, 1.0))
        pos = float(self._coefficients.clamp_min(0).sum())
        neg = float((-self._coefficients).clamp_min(0).sum())
        return NaturalScale(best=-(pos * hi - neg * lo), worst=-(pos * lo - neg * hi), unit="negative tag cosine")

    def similarities(self, images: torch.Tensor) -> torch.Tensor:
        """float64 [B, N] cosines of each image with each tag."""
        emb = self.encoder.encode_images(images).detach().to("cpu", torch.float64)
        return emb @ self.text_embeddings.double().T

    def score(self, batch: Batch) -> Evaluation:
        return self.score_images(batch.images)

    def score_images(self, images: torch.Tensor) -> Evaluation:
        cos = self.similarities(images)
        per_image_score = cos @ self._coefficients
        components = {t.key: float(cos[:, i].mean()) for i, t in enumerate(self.tags)}
        per_image = {t.key: [float(v) for v in cos[:, i]] for i, t in enumerate(self.tags)}
        per_image["tags"] = [float(v) for v in per_image_score]
        mean = float(per_image_score.mean())
        components["tags_score"] = mean
        return Evaluation(value=-mean, components=components, per_image=per_image)
