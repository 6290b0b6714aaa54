"""Composition: the objectives a run's options select, combined into one fitness or a vector.

Each selected objective scores the batch in its own units; its value is mapped onto its natural
scale (0 = a perfect batch, 1 = the worst plausible one, `scale.NaturalScale`) and multiplied by
the user's weight, so weights compare importance, not units. The distance penalty (mean squared
offset of the weights from the prompt's own) is in weight units already and is added as it is.

`Scored.loss` is the weighted sum; `Scored.values` the same terms one by one, which a
"pareto" run hands to MO-CMA-ES as separate objectives. With one objective at weight 1 (the
default: the image loss alone) the loss is on that objective's natural scale, so a reported fitness
above 1 means a batch worse than the worst plausible one, not a summation artefact.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np
import torch

from lib_pinning.generator import Batch
from lib_pinning.objectives.base import Evaluation, Objective
from lib_pinning.objectives.pinning import LevelWeighting, PinningObjective
from lib_pinning.objectives.scale import FLIP_SCALE, NaturalScale
from lib_pinning.options import PinningOptions

# Names of the objective terms, in the order of `Scored.values`.
FLIP, AESTHETIC, TAGS, DISTANCE = "flip", "aesthetic", "tags", "distance"
TAGGER = "tagger"


@dataclass
class Scored:
    """A batch's total loss, its terms, its named parts, and each objective's full evaluation."""

    loss: float
    values: tuple[float, ...]
    components: dict[str, float]
    evaluations: dict[str, Evaluation]


@dataclass(frozen=True)
class WeightedObjective:
    objective: Objective
    weight: float
    scale: NaturalScale


def active_terms(options: PinningOptions) -> tuple[str, ...]:
    """The terms a run's options switch on, in `Scored.values` order (known before generating)."""
    terms = []
    if options.flip_weight > 0:
        terms.append(FLIP)
    if options.aesthetic_weight > 0:
        terms.append(AESTHETIC)
    if (options.tags.strip() or options.negative_tags.strip()) and options.tag_weight > 0:
        terms.append(TAGS)
    if (options.tagger_tags.strip() or options.tagger_negative_tags.strip()) and options.tagger_weight > 0:
        terms.append(TAGGER)
    if options.distance_weight > 0:
        terms.append(DISTANCE)
    if not terms:
        raise ValueError(
            "no objective selected: give the image loss, the aesthetic score, the tags or the "
            "distance penalty a weight above 0"
        )
    return tuple(terms)


class CompositeObjective:
    """The weighted, normalised objectives plus the distance penalty."""

    def __init__(self, parts: Sequence[WeightedObjective], distance_weight: float = 0.0) -> None:
        if not parts and distance_weight <= 0:
            raise ValueError("no objective selected: give at least one objective a weight above 0")
        self.parts = tuple(parts)
        self.distance_weight = float(distance_weight)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(part.objective.name for part in self.parts)

    def score(self, batch: Batch, x: Sequence[float] | np.ndarray) -> Scored:
        values: list[float] = []
        components: dict[str, float] = {}
        evaluations: dict[str, Evaluation] = {}
        for part in self.parts:
            evaluation = part.objective.score(batch)
            name = part.objective.name
            evaluations[name] = evaluation
            components[name] = evaluation.value
            for key, value in evaluation.components.items():
                components[f"{name}.{key}"] = value
            values.append(part.weight * part.scale.normalise(evaluation.value))
        if self.distance_weight > 0:
            distance = float(np.mean(np.square(np.asarray(x, dtype=float)))) if len(x) else 0.0
            components[DISTANCE] = distance
            values.append(self.distance_weight * distance)
        return Scored(loss=float(sum(values)), values=tuple(values), components=components, evaluations=evaluations)


EncoderFactory = Callable[[str], Any]


def build_objective(
    options: PinningOptions,
    targets: torch.Tensor,
    *,
    masks: torch.Tensor | None = None,
    generator: Any = None,
    device: torch.device | str = "cpu",
) -> CompositeObjective:
    """The composite objective a run's options ask for, with `targets` [T, 3, H, W] bound once.

    CLIP encoders come from the backend when it has its own (`generator.clip_encoder(name)`: the
    toy model's tiny CLIP), else they are loaded (and downloaded on first use) by name; one encoder
    serves both the tags and the aesthetic head when they use the same model.
    """
    terms = active_terms(options)
    encoders: dict[str, Any] = {}

    def encoder(name: str) -> Any:
        if name not in encoders:
            own = getattr(generator, "clip_encoder", None)
            encoders[name] = own(name) if own is not None else None
            if encoders[name] is None:
                from lib_pinning.objectives.clip import load_clip, split_model_name

                arch, tag = split_model_name(name)
                encoders[name] = load_clip(arch, tag, models_dir=options.models_dir or None, device=device)
        return encoders[name]

    parts: list[WeightedObjective] = []
    if FLIP in terms:
        parts.append(WeightedObjective(_flip_objective(options, targets, masks, generator), options.flip_weight, FLIP_SCALE))
    if AESTHETIC in terms:
        from lib_pinning.objectives.aesthetic import AESTHETIC_CLIP, AestheticObjective

        shared = encoder("/".join(AESTHETIC_CLIP)) if options.clip_model == "/".join(AESTHETIC_CLIP) else None
        aesthetic = AestheticObjective.load(
            options.models_dir or None, device=device, spread_weight=options.aesthetic_spread_weight, encoder=shared
        )
        parts.append(WeightedObjective(aesthetic, options.aesthetic_weight, aesthetic.scale))
    if TAGS in terms:
        from lib_pinning.objectives.tags import TagObjective

        tags = TagObjective(encoder(options.clip_model), options.tags, options.negative_tags)
        parts.append(WeightedObjective(tags, options.tag_weight, tags.scale))
    if TAGGER in terms:
        from lib_pinning.objectives.tagger import load_tagger_objective

        tagger = load_tagger_objective(options, device=device, generator=generator)
        parts.append(WeightedObjective(tagger, options.tagger_weight, tagger.scale))
    return CompositeObjective(parts, distance_weight=options.distance_weight if DISTANCE in terms else 0.0)


def _flip_objective(
    options: PinningOptions, targets: torch.Tensor, masks: torch.Tensor | None, generator: Any
) -> Objective:
    if masks is not None:
        if options.flip_loss != "target_distance":
            raise ValueError(
                "Target masks apply to the image-to-target loss: set Image loss to 'target_distance' "
                f"(it is {options.flip_loss!r}), or remove the masks"
            )
        from lib_pinning.objectives.targets import MaskedTargetObjective

        return MaskedTargetObjective(targets, masks)
    weighting = None
    if options.hyperbatch_weights and options.flip_loss != "target_distance":
        weighting = LevelWeighting(options.hyperbatch_weight_type, options.hyperbatch_weight_scale)
    objective = PinningObjective(targets, options.flip_loss, level_weighting=weighting)
    if weighting is not None and options.hyperbatch_weights_any_sampler:
        steps = getattr(generator, "steps", None)
        if not isinstance(steps, int):
            raise ValueError(
                "'Hyperbatch weights for other samplers' needs the sampling step count, which this "
                "backend does not report; turn the option off"
            )
        return PlannedTreeWeighting(objective, steps)
    return objective


class PlannedTreeWeighting:
    """Level-weights a plain batch as if a hyperbatch sampler had made it.

    The original tool's "hyperbatch weights allowed for non-hyperbatch samplers": the pairs are
    grouped by the split tree the default hyperbatch schedule would use for this batch size and
    step count. The images of a plain batch are independent, so this only re-weights pairs.
    A batch that did come from a hyperbatch sampler keeps its real tree.
    """

    def __init__(self, objective: PinningObjective, steps: int) -> None:
        self.objective = objective
        self.steps = steps
        self.name = objective.name

    def score(self, batch: Batch) -> Evaluation:
        if batch.growth is not None:
            return self.objective.score(batch)
        from pinning_samplers.plan import DEFAULT_SCHEDULE, plan_growth

        plan = plan_growth(len(batch), self.steps, DEFAULT_SCHEDULE)
        return self.objective.score_images(batch.images, depths=plan.divergence_depth)
