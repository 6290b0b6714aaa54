"""Pin to booru tags: every image of the batch should carry these WD14 tags (and not those).

Tags are written like a prompt, comma-separated, with emphasis weights, and an optional confidence
threshold after ``@``: ``smile, (outdoors:1.5), hatsune_miku@0.7``. Spaces and underscores are the
same (``long hair`` is ``long_hair``); brackets that belong to a tag are escaped as in a prompt
(``hatsune_miku_\\(vocaloid\\)``). Without ``@`` a tag's threshold is the general default (0.35, as
WD14 captions are made) or, for character tags, the character default (0.85).

A tag counts as present in image b when its confidence c clears the threshold theta; CMA-ES needs
a gradient where the count has steps, so the objective uses the soft presence

    p_bt  = sigmoid((c_bt - theta_t) / temperature)
    s_b   = (sum_wanted w_t p_bt + sum_unwanted w_t (1 - p_bt)) / sum_all w_t
    value = 1 - mean_b s_b

i.e. one minus the weighted share of the batch that carries each wanted tag and lacks each
unwanted one. 0 is a batch in which every image has every wanted tag and none of the unwanted,
1 the opposite; that is its natural scale. The report gets, per tag, the hard share (confidence at
or above the threshold) and the mean confidence.

Batched and cached: the run's images are tagged in one model call per batch, and confidences are
kept per image content, so the baseline (scored again on resume) and repeated individuals are
tagged once.
"""

from __future__ import annotations

import hashlib
import logging
import math
from collections import OrderedDict
from dataclasses import dataclass
from difflib import get_close_matches
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from PIL import Image

from lib_pinning.objectives.base import Evaluation
from lib_pinning.objectives.scale import NaturalScale
from lib_pinning.objectives.tagger_runtime import CATEGORY_NAMES, CHARACTER, RATING, TaggerRuntimeError, TagList, quantise
from lib_pinning.objectives.tags import TagError, parse_tags

if TYPE_CHECKING:
    from lib_pinning.generator import Batch
    from lib_pinning.objectives.tagger_models import TaggerFiles

logger = logging.getLogger(__name__)

TOP_TAGS = 5  # tags listed per image in the report

TAGGER_SCALE = NaturalScale(best=0.0, worst=1.0, unit="share of tags missed")
DEFAULT_GENERAL_THRESHOLD = 0.35
DEFAULT_CHARACTER_THRESHOLD = 0.85
_CACHE_IMAGES = 4096


@dataclass(frozen=True)
class BooruTag:
    """One wanted or unwanted tag, resolved against the model's tag list."""

    name: str
    weight: float
    threshold: float
    index: int
    category: int
    unwanted: bool = False

    @property
    def key(self) -> str:
        return f"{'unwanted' if self.unwanted else 'wanted'}:{self.name}"


def normalise_tag(text: str) -> str:
    """The tag list's spelling: lower case, words joined by underscores."""
    return "_".join(text.strip().lower().split())


def parse_booru_tags(text: str) -> list[tuple[str, float, float | None]]:
    """``"smile, (outdoors:1.5), long hair@0.5"`` -> [(name, weight, threshold or None), ...]."""
    out: list[tuple[str, float, float | None]] = []
    for raw, weight in parse_tags(text):
        name, threshold = raw, None
        if "@" in raw:
            name, _, given = raw.rpartition("@")
            try:
                threshold = float(given)
            except ValueError:
                raise TagError(f"Booru tag {raw!r}: the threshold after '@' must be a number, e.g. 'smile@0.5'") from None
            if not 0.0 < threshold < 1.0:
                raise TagError(f"Booru tag {raw!r}: the threshold must lie strictly between 0 and 1")
        name = normalise_tag(name)
        if name:
            out.append((name, weight, threshold))
    return out


def resolve_tags(
    wanted: str,
    unwanted: str,
    tag_list: TagList,
    *,
    general_threshold: float = DEFAULT_GENERAL_THRESHOLD,
    character_threshold: float = DEFAULT_CHARACTER_THRESHOLD,
) -> tuple[BooruTag, ...]:
    """The tags of both fields against the model's tag list; an unknown tag raises TagError."""
    index = tag_list.index()
    tags: list[BooruTag] = []
    for text, is_unwanted in ((wanted, False), (unwanted, True)):
        for name, weight, threshold in parse_booru_tags(text):
            if name not in index:
                near = get_close_matches(name, tag_list.names, n=3, cutoff=0.6)
                hint = f"; did you mean {', '.join(near)}?" if near else ""
                raise TagError(f"Booru tag {name!r} is not one of the tagger's {len(tag_list)} tags{hint}")
            i = index[name]
            category = tag_list.categories[i]
            if threshold is None:
                threshold = character_threshold if category == CHARACTER else general_threshold
            tags.append(BooruTag(name, weight, threshold, i, category, is_unwanted))
    if not tags:
        raise TagError(
            "Pin to booru tags: no tag given: write comma-separated booru tags, e.g. 'smile, outdoors', "
            "or set the booru tag weight to 0"
        )
    return tuple(tags)


class TaggerObjective:
    """Pin to booru tags (an `Objective`; lower is better): see the module docstring.

    `session` is anything with ``tag_list`` and ``confidences(images: list[PIL.Image]) -> [B, T]``
    (`tagger_runtime.TaggerSession`; tests pass tiny ONNX models through the same class).
    """

    name = "tagger"
    scale = TAGGER_SCALE

    def __init__(
        self,
        session: Any,
        wanted: str = "",
        unwanted: str = "",
        *,
        general_threshold: float = DEFAULT_GENERAL_THRESHOLD,
        character_threshold: float = DEFAULT_CHARACTER_THRESHOLD,
        temperature: float = 0.05,
    ) -> None:
        if not temperature > 0:
            raise ValueError(f"temperature must be above 0, got {temperature}")
        self.session = session
        self.tags = resolve_tags(
            wanted, unwanted, session.tag_list,
            general_threshold=general_threshold, character_threshold=character_threshold,
        )
        self.temperature = float(temperature)
        self._columns = np.array([t.index for t in self.tags])
        self._thresholds = np.array([t.threshold for t in self.tags])
        self._weights = np.array([t.weight for t in self.tags]) / sum(t.weight for t in self.tags)
        self._unwanted = np.array([t.unwanted for t in self.tags])
        self._cache: OrderedDict[bytes, tuple[np.ndarray, list[tuple[str, float]]]] = OrderedDict()
        # Ratings are not what a picture shows: the report's top tags are general and character tags.
        self._descriptive = np.array([c != RATING for c in session.tag_list.categories])
        self.images_tagged = 0

    def confidences(self, images: torch.Tensor) -> np.ndarray:
        """float64 [B, N] confidence of each of this objective's tags, tagging only unseen images."""
        return np.stack([row for row, _ in self._tagged(images)])

    def top_tags(self, images: torch.Tensor) -> list[list[tuple[str, float]]]:
        """Each image's `TOP_TAGS` most confident general and character tags, for the report."""
        return [top for _, top in self._tagged(images)]

    def _tagged(self, images: torch.Tensor) -> list[tuple[np.ndarray, list[tuple[str, float]]]]:
        """(this objective's tags' confidences, top tags) of each image; images not seen before are
        tagged in one call."""
        # Keyed by the 8-bit pixels the batch is saved as: what the tagger would see anyway.
        pixels = quantise(images)
        keys = [hashlib.sha1(row.tobytes()).digest() for row in pixels]
        missing: dict[bytes, int] = {}
        for i, key in enumerate(keys):
            if key not in self._cache and key not in missing:
                missing[key] = i
        if missing:
            rows = self.session.confidences([Image.fromarray(pixels[i], "RGB") for i in missing.values()])
            self.images_tagged += len(missing)
            for key, row in zip(missing, rows):
                row = np.asarray(row, dtype=np.float64)
                top = np.argsort(-np.where(self._descriptive, row, -np.inf), kind="stable")[:TOP_TAGS]
                names = self.session.tag_list.names
                self._cache[key] = (row[self._columns], [(names[i], float(row[i])) for i in top if self._descriptive[i]])
        for key in keys:
            self._cache.move_to_end(key)
        found = [self._cache[key] for key in keys]
        while len(self._cache) > _CACHE_IMAGES:
            self._cache.popitem(last=False)
        return found

    def presence(self, confidences: np.ndarray) -> np.ndarray:
        """Soft presence p_bt in (0, 1) of each tag in each image."""
        z = (confidences - self._thresholds) / self.temperature
        return 0.5 * (1.0 + np.tanh(0.5 * z))  # the logistic sigmoid, without overflow

    def score(self, batch: Batch) -> Evaluation:
        return self.score_images(batch.images)

    def score_images(self, images: torch.Tensor) -> Evaluation:
        tagged = self._tagged(images)
        conf = np.stack([row for row, _ in tagged])
        soft = self.presence(conf)
        satisfied = np.where(self._unwanted, 1.0 - soft, soft)
        per_image_score = satisfied @ self._weights
        hard = conf >= self._thresholds
        components: dict[str, float] = {}
        per_image: dict[str, list[float]] = {}
        for i, tag in enumerate(self.tags):
            components[f"{tag.key}.share"] = float(hard[:, i].mean())
            components[f"{tag.key}.confidence"] = float(conf[:, i].mean())
            per_image[tag.key] = [float(v) for v in conf[:, i]]
        per_image["tagger"] = [float(v) for v in per_image_score]
        mean = float(per_image_score.mean())
        components["tagger_score"] = mean
        value = 1.0 - mean
        if not math.isfinite(value):
            raise FloatingPointError("the tagger returned non-finite confidences")
        return Evaluation(value=value, components=components, per_image=per_image,
                          image_notes=self._notes(conf, hard, [top for _, top in tagged]))

    def _notes(self, conf: np.ndarray, hard: np.ndarray, top: list[list[tuple[str, float]]]) -> dict[str, list[str]]:
        """Per image: the wanted and unwanted tags' confidences (a mark where the image does what
        was asked), and the image's own top tags."""
        asked = []
        for b in range(conf.shape[0]):
            parts = []
            for i, tag in enumerate(self.tags):
                good = bool(hard[b, i]) != tag.unwanted
                parts.append(f"{'not ' if tag.unwanted else ''}{tag.name} {conf[b, i]:.2f} {'✓' if good else '✗'}")
            asked.append(", ".join(parts))
        return {
            "booru tags": asked,
            "top tags": [", ".join(f"{name} {value:.2f}" for name, value in row) for row in top],
        }

    def describe(self) -> list[dict[str, Any]]:
        """The resolved tags, for logs and the report."""
        return [
            {"tag": t.name, "weight": t.weight, "threshold": t.threshold, "unwanted": t.unwanted,
             "category": CATEGORY_NAMES.get(t.category, str(t.category))}
            for t in self.tags
        ]


def check_tagger_input(options: Any, generator: Any = None) -> None:
    """Raise PinningInputError (naming the option) for a tagger run that cannot work, before
    anything is generated: no tags, no onnxruntime, a tagger not found, or a tag the tagger does
    not know. Locating the tagger may download it (what the run would do first anyway)."""
    from lib_pinning.objectives.tagger_models import TaggerNotFoundError
    from lib_pinning.objectives.tagger_runtime import import_onnxruntime, read_tag_list
    from lib_pinning.objectives.weights import WeightsError
    from lib_pinning.options import PinningOptions
    from lib_pinning.options_model import OptionError

    if not (parse_booru_tags(options.tagger_tags) or parse_booru_tags(options.tagger_negative_tags)):
        raise TagError(
            "Pin to booru tags: no tag given: write comma-separated booru tags, e.g. 'smile, outdoors', "
            "or set the booru tag weight to 0"
        )
    try:
        import_onnxruntime()
        files = tagger_files(options, generator)
        resolve_tags(
            options.tagger_tags, options.tagger_negative_tags, read_tag_list(files.tags),
            general_threshold=options.tagger_general_threshold,
            character_threshold=options.tagger_character_threshold,
        )
    except TagError:
        raise
    except (TaggerNotFoundError, WeightsError, TaggerRuntimeError) as e:
        raise OptionError("tagger_model", PinningOptions.spec("tagger_model").label, str(e)) from e


def tagger_files(options: Any, generator: Any = None) -> TaggerFiles:
    """The tagger a run uses: the backend's own when it has one for this name (the toy model's
    tiny tagger: a real WD14 model knows nothing of toy pictures), else located by name."""
    from lib_pinning.objectives.tagger_models import locate_tagger

    own = getattr(generator, "tagger_files", None)
    files = own(options.tagger_model, options.models_dir or None) if own is not None else None
    return files if files is not None else locate_tagger(options.tagger_model, options.models_dir or None)


def load_tagger_objective(options: Any, device: torch.device | str = "cpu", generator: Any = None) -> TaggerObjective:
    """The objective a run's options ask for: the tagger located (or downloaded) and one session."""
    from lib_pinning.objectives.tagger_runtime import TaggerSession

    files = tagger_files(options, generator)
    session = TaggerSession(files.model, files.tags, device=device)
    objective = TaggerObjective(
        session,
        options.tagger_tags,
        options.tagger_negative_tags,
        general_threshold=options.tagger_general_threshold,
        character_threshold=options.tagger_character_threshold,
        temperature=options.tagger_temperature,
    )
    logger.info(
        "Tagger %s (%s, %d px, %s): %s", files.name, files.model, session.size, ", ".join(session.providers),
        objective.describe(),
    )
    return objective
