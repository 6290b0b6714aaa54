"""Pin to tags (objectives.tags) on the toy model's exact CLIP stand-in and on a tiny open_clip."""

from __future__ import annotations

import math

import pytest
import torch

from lib_pinning.generator import Batch, GenerationRequest, ToyGenerator
from lib_pinning.objectives.base import Objective
from lib_pinning.objectives.tags import Tag, TagError, TagObjective, check_tags, parse_tags
from lib_pinning.options_model import PinningInputError
from lib_pinning.toy import ToyConfig, ToyModel, to_images
from lib_pinning.toy_clip import ToyClip
from lib_pinning.toy_prototypes import PROTOTYPES
from tests.clip_env import ensure_open_clip, tiny_model_name


def prototype_images(names: list[str]) -> torch.Tensor:
    index = {p.name: i for i, p in enumerate(PROTOTYPES)}
    return to_images(ToyModel().prototypes[[index[n] for n in names]])


def batch(names: list[str]) -> Batch:
    return Batch(prototype_images(names), seeds=tuple(range(len(names))))


# ---- parsing ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("red, circle", [("red", 1.0), ("circle", 1.0)]),
        ("red, (circle:1.5), [shiny]", [("red", 1.0), ("circle", 1.5), ("shiny", 1 / 1.1)]),
        ("((red))", [("red", 1.21)]),
        ("(red, blue:1.3)", [("red", 1.3), ("blue", 1.3)]),
        ("  red   circle ,, , blue ", [("red circle", 1.0), ("blue", 1.0)]),
        ("red BREAK blue", [("red", 1.0), ("blue", 1.0)]),
        ("red, red", [("red", 2.0)]),
        ("(ignored:0), blue", [("blue", 1.0)]),
        ("", []),
    ],
)
def test_parse_tags(text: str, expected: list[tuple[str, float]]) -> None:
    got = parse_tags(text)
    assert [t for t, _ in got] == [t for t, _ in expected]
    assert [w for _, w in got] == pytest.approx([w for _, w in expected])


def test_mixed_weights_in_one_tag_are_averaged_by_characters() -> None:
    # "red" (3 characters) at 2.0 and "car" (3) at 1.0 -> 1.5.
    assert parse_tags("(red:2) car") == [("red car", pytest.approx(1.5))]


def test_needs_a_tag() -> None:
    with pytest.raises(TagError, match="no tag given"):
        TagObjective(ToyClip(), " , ")


def test_only_negative_weights_say_so_and_name_the_whole_tag() -> None:
    """'(red:-2)' is a tag the parser drops for its weight, not a missing tag (issue 11)."""
    with pytest.raises(TagError) as caught:
        check_tags("(red:-2)", "")
    message = str(caught.value)
    assert "'red' (-2)" in message and "weight of 0 or less" in message and "Pin away from tags" in message
    assert "\n" not in message and isinstance(caught.value, PinningInputError)
    check_tags("(red:-2), circle", "")  # one usable tag is enough


# ---- scoring on the toy CLIP (exact cosines) ------------------------------------------------------


def test_is_an_objective() -> None:
    assert isinstance(TagObjective(ToyClip(), "red"), Objective)


def test_ranks_batches() -> None:
    objective = TagObjective(ToyClip(), "red, circle")
    exact = objective.score(batch(["red circle"] * 4))
    mixed = objective.score(batch(["red circle", "red circle", "red ring", "green circle"]))
    half = objective.score(batch(["red ring", "green circle"] * 2))
    none = objective.score(batch(["blue square", "yellow ring"] * 2))
    assert exact.value < mixed.value < half.value < none.value
    # The red circle embeds as (red + circle) / sqrt(2): cosine 1/sqrt(2) with "red" and with "circle".
    assert exact.value == pytest.approx(-1 / math.sqrt(2))
    assert exact.components["tag:red"] == pytest.approx(1 / math.sqrt(2))
    assert none.value == pytest.approx(0.0, abs=1e-7)


def test_one_tag_naming_the_prototype_scores_one() -> None:
    objective = TagObjective(ToyClip(), "red circle")
    assert objective.score(batch(["red circle"] * 2)).value == pytest.approx(-1.0)


def test_negative_tags_push_away() -> None:
    objective = TagObjective(ToyClip(), "circle", negative="red")
    green, red = objective.score(batch(["green circle"] * 2)), objective.score(batch(["red circle"] * 2))
    assert green.value < red.value
    assert red.components["negative tag:red"] == pytest.approx(1 / math.sqrt(2))
    # (w_pos cos_circle - w_neg cos_red) / (w_pos + w_neg) = (0.707 - 0.707) / 2 for the red circle.
    assert red.value == pytest.approx(0.0, abs=1e-7)
    assert green.value == pytest.approx(-(1 / math.sqrt(2)) / 2)


def test_weights_are_shares() -> None:
    light = TagObjective(ToyClip(), "red, (square:3)").score(batch(["red circle"] * 2))
    heavy = TagObjective(ToyClip(), "(red:3), square").score(batch(["red circle"] * 2))
    assert heavy.value < light.value
    assert light.value == pytest.approx(-(1 / math.sqrt(2)) / 4)


def test_reports_per_tag_and_image() -> None:
    objective = TagObjective(ToyClip(), "red, circle", negative="blue")
    evaluation = objective.score(batch(["red circle", "blue square", "green circle"]))
    assert [t.key for t in objective.tags] == ["tag:red", "tag:circle", "negative tag:blue"]
    for key in ("tag:red", "tag:circle", "negative tag:blue", "tags"):
        assert len(evaluation.per_image[key]) == 3
    assert evaluation.per_image["tags"][0] > evaluation.per_image["tags"][2] > evaluation.per_image["tags"][1]
    assert evaluation.value == pytest.approx(-sum(evaluation.per_image["tags"]) / 3)
    assert objective.tags[2] == Tag("blue", 1.0, negative=True)


def test_natural_scale_follows_the_encoder() -> None:
    toy = TagObjective(ToyClip(), "red")
    assert (toy.scale.best, toy.scale.worst) == (-1.0, 1.0)

    class Clipish(ToyClip):
        cosine_range = (0.0, 0.4)

    mixed = TagObjective(Clipish(), "red, square", negative="(blue:2)")
    # Shares: positive 0.5, negative 0.5 -> best -(0.5 * 0.4 - 0.5 * 0), worst -(0 - 0.5 * 0.4).
    assert mixed.scale.best == pytest.approx(-0.2) and mixed.scale.worst == pytest.approx(0.2)


# ---- any encoder: a tiny open_clip ----------------------------------------------------------------


def test_with_open_clip_encoder() -> None:
    from lib_pinning.objectives.clip import load_clip

    ensure_open_clip()
    torch.manual_seed(3)
    encoder = load_clip(tiny_model_name(), None)
    objective = TagObjective(encoder, "red, (circle:2)", negative="blurry")
    images = prototype_images(["red circle", "blue square"])
    evaluation = objective.score_images(images)
    img = encoder.encode_images(images).double()
    txt = encoder.encode_text(["red", "circle", "blurry"]).double()
    cos = img @ txt.T
    expected = (cos[:, 0] + 2 * cos[:, 1] - cos[:, 2]) / 4
    assert evaluation.per_image["tags"] == pytest.approx(expected.tolist(), abs=1e-6)
    assert objective.scale.best == pytest.approx(-(0.75 * 0.4 - 0.25 * 0.0))


# ---- a pinning-style check on the toy model ------------------------------------------------------


def test_grid_over_one_weight_pins_toward_the_tagged_prototype() -> None:
    """Raising the weight of "red circle" in a two-subject prompt is what the tag objective prefers.

    The prompt names two prototypes; a grid over the first phrase's weight stands in for CMA-ES on
    one dimension. With tags naming the red circle, the value falls as the weight rises (until the
    batch is as red-circle as the seeds allow), the best weight's mixture favours the red circle
    far more than the unweighted prompt's, and its batch is mostly red circles where the
    unweighted prompt's has none. The clean mixture: weight 2 would otherwise fry the batch.
    """
    generator = ToyGenerator(config=ToyConfig(failure_modes=False))
    objective = TagObjective(ToyClip(generator.model), "red, circle")
    seeds = tuple(range(100, 108))
    red = [i for i, p in enumerate(PROTOTYPES) if p.name == "red circle"][0]
    weights = (0.0, 0.5, 1.0, 1.5, 2.0)
    values, shares = [], []
    for weight in weights:
        images = generator.generate(GenerationRequest(f"(red circle:{weight}), blue square", "", seeds)).images
        values.append(objective.score_images(images).value)
        shares.append(float((generator.model.nearest_prototype(images) == red).float().mean()))
    assert all(a >= b for a, b in zip(values, values[1:])), values
    assert values[0] > values[2] > values[3], values
    best = weights[values.index(min(values))]
    assert best >= 1.5
    assert shares[values.index(min(values))] >= 0.75 and shares[0] == 0.0, shares
    pi = [generator.model.mixture_weights(f"(red circle:{w}), blue square")[red] for w in (0.0, best)]
    assert pi[1] > 2 * pi[0]
