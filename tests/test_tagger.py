"""The booru-tag objective: tag syntax, thresholds, the soft share, batching and caching, composition,
the options round trip, and a toy run that pins toward a tag with a real (tiny) ONNX tagger."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")

from lib_pinning.generator import GenerationRequest, ToyGenerator, ToySettings  # noqa: E402
from lib_pinning.objectives.compose import TAGGER, active_terms, build_objective  # noqa: E402
from lib_pinning.objectives.tagger import (  # noqa: E402
    TaggerObjective,
    check_tagger_input,
    parse_booru_tags,
    resolve_tags,
)
from lib_pinning.objectives.base import Evaluation  # noqa: E402
from lib_pinning.objectives.tagger_runtime import CHARACTER, GENERAL, RATING, TaggerSession, TagList  # noqa: E402
from lib_pinning.objectives.tagger_toy import build_toy_tagger  # noqa: E402
from lib_pinning.objectives.tags import TagError  # noqa: E402
from lib_pinning.options import PinningOptions  # noqa: E402
from lib_pinning.run import PinningRun, derive_seeds  # noqa: E402

FAST = ToySettings(steps=8, cfg_scale=1.5)
SEEDS = derive_seeds(11, 8)
PROMPT = "red circle, blue square, soft light"


@pytest.fixture(scope="module")
def toy_tagger(tmp_path_factory) -> Path:
    # 64 px: the toy model's own size, so the module's tests tag fast; the 448 px path is the same code.
    return build_toy_tagger(tmp_path_factory.mktemp("tagger") / "toy-tagger", size=64)


@pytest.fixture(scope="module")
def session(toy_tagger) -> TaggerSession:
    return TaggerSession(toy_tagger / "model.onnx", toy_tagger / "selected_tags.csv")


class FixedSession:
    """A stand-in tagger with given confidences, counting its calls."""

    def __init__(self, names, categories, rows):
        self.tag_list = TagList(tuple(names), tuple(categories))
        self.rows = np.asarray(rows, dtype=np.float64)
        self.calls: list[int] = []

    def confidences(self, images):
        self.calls.append(len(images))
        return self.rows[: len(images)]


def images(n: int, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, 3, 8, 8, generator=torch.Generator().manual_seed(seed))


def test_tag_syntax_weights_thresholds_and_spelling():
    assert parse_booru_tags("smile, (outdoors:1.5), long hair@0.5, [Blue_Sky]") == [
        ("smile", 1.0, None), ("outdoors", 1.5, None), ("long_hair", 1.0, 0.5), ("blue_sky", pytest.approx(1 / 1.1), None),
    ]
    assert parse_booru_tags(r"hatsune_miku_\(vocaloid\)@0.7") == [("hatsune_miku_(vocaloid)", 1.0, 0.7)]
    with pytest.raises(TagError, match="number"):
        parse_booru_tags("smile@high")
    with pytest.raises(TagError, match="between 0 and 1"):
        parse_booru_tags("smile@1.5")


def test_default_thresholds_follow_the_category_and_unknown_tags_are_named():
    tags = TagList(("general", "smile", "hatsune_miku", "outdoors"), (9, GENERAL, CHARACTER, GENERAL))
    resolved = resolve_tags("smile, hatsune_miku, outdoors@0.6", "general", tags)
    assert [(t.name, t.threshold, t.unwanted) for t in resolved] == [
        ("smile", 0.35, False), ("hatsune_miku", 0.85, False), ("outdoors", 0.6, False), ("general", 0.35, True),
    ]
    custom = resolve_tags("smile, hatsune_miku", "", tags, general_threshold=0.5, character_threshold=0.9)
    assert [t.threshold for t in custom] == [0.5, 0.9]
    with pytest.raises(TagError, match="did you mean smile"):
        resolve_tags("smlie", "", tags)
    with pytest.raises(TagError, match="no tag given"):
        resolve_tags(" , ", "", tags)


def test_score_is_the_soft_weighted_share_and_the_hard_share_is_reported():
    # Two images; "smile" confidences 0.9 / 0.1 (threshold 0.35), "lowres" 0.2 / 0.8 (unwanted).
    session = FixedSession(["smile", "lowres"], [GENERAL, GENERAL], [[0.9, 0.2], [0.1, 0.8]])
    objective = TaggerObjective(session, "(smile:3)", "lowres", temperature=0.05)
    evaluation = objective.score_images(images(2))
    sig = lambda z: 1 / (1 + np.exp(-z))  # noqa: E731
    p_smile = sig((np.array([0.9, 0.1]) - 0.35) / 0.05)
    p_low = sig((np.array([0.2, 0.8]) - 0.35) / 0.05)
    expected = 1 - np.mean(0.75 * p_smile + 0.25 * (1 - p_low))
    assert evaluation.value == pytest.approx(expected)
    assert evaluation.components["wanted:smile.share"] == 0.5
    assert evaluation.components["unwanted:lowres.share"] == 0.5
    assert evaluation.components["wanted:smile.confidence"] == pytest.approx(0.5)
    assert evaluation.per_image["wanted:smile"] == pytest.approx([0.9, 0.1])
    assert 0.0 <= evaluation.value <= 1.0


def test_each_image_gets_the_asked_tags_confidences_and_its_own_top_tags_for_the_report():
    names = ["general", "smile", "lowres", "outdoors", "hat"]
    cats = [RATING, GENERAL, GENERAL, GENERAL, CHARACTER]
    rows = [[0.99, 0.9, 0.2, 0.6, 0.1], [0.99, 0.1, 0.8, 0.3, 0.95]]
    evaluation = TaggerObjective(FixedSession(names, cats, rows), "smile", "lowres").score_images(images(2))
    assert evaluation.image_notes["booru tags"] == ["smile 0.90 ✓, not lowres 0.20 ✓", "smile 0.10 ✗, not lowres 0.80 ✗"]
    # The rating is not a top tag however confident; the rest by confidence, then list order.
    assert evaluation.image_notes["top tags"][0] == "smile 0.90, outdoors 0.60, lowres 0.20, hat 0.10"
    assert evaluation.image_notes["top tags"][1].startswith("hat 0.95, lowres 0.80, outdoors 0.30")
    assert Evaluation.from_json(evaluation.to_json()).image_notes == evaluation.image_notes


def test_a_confidence_exactly_at_the_threshold_counts_and_softness_gives_a_gradient():
    session = FixedSession(["smile"], [GENERAL], [[0.35], [0.30]])
    hard = TaggerObjective(session, "smile@0.35", temperature=0.001).score_images(images(2))
    assert hard.components["wanted:smile.share"] == 0.5
    soft = TaggerObjective(session, "smile", temperature=0.05)
    below, further = soft.presence(np.array([[0.30]])), soft.presence(np.array([[0.20]]))
    assert 0 < further[0, 0] < below[0, 0] < 0.5  # below the threshold, closer still scores better


def test_one_call_per_batch_and_seen_images_are_not_tagged_again():
    session = FixedSession(["smile"], [GENERAL], [[0.9], [0.1], [0.5]])
    objective = TaggerObjective(session, "smile")
    batch = images(3)
    first = objective.score_images(batch)
    again = objective.score_images(batch)
    assert session.calls == [3] and objective.images_tagged == 3
    assert again.value == first.value
    duplicated = torch.cat([batch[:1], batch[:1]])
    objective.score_images(duplicated)
    assert session.calls == [3]


def test_real_session_tags_the_toy_colours_in_one_batch(session):
    generator = ToyGenerator(FAST)
    batch = generator.generate(GenerationRequest(PROMPT, "blurry", SEEDS))
    objective = TaggerObjective(session, "red, blue")
    conf = objective.confidences(batch.images)
    assert conf.shape == (8, 2)
    # Every toy image shows one coloured shape: a red or a blue one here, seldom anything else.
    assert ((conf > 0.9).sum(axis=1) <= 1).all()
    assert session.size == 64 and session.providers == ["CPUExecutionProvider"]


@pytest.mark.parametrize("size", [64, 448])
def test_the_toy_tagger_tags_each_prototype_by_its_colour_and_its_shape_and_nothing_else(tmp_path, size):
    from lib_pinning.objectives.tagger_runtime import batch_to_pil
    from lib_pinning.toy_prototypes import COLOURS, PROTOTYPES, SHAPES, draw_prototype

    folder = build_toy_tagger(tmp_path / str(size), size=size)
    tagger = TaggerSession(folder / "model.onnx", folder / "selected_tags.csv")
    names = tagger.tag_list.index()
    assert [tagger.tag_list.categories[names[s]] for s in SHAPES] == [GENERAL] * len(SHAPES)
    pictures = torch.stack([draw_prototype(i) for i in range(len(PROTOTYPES))]) * 0.5 + 0.5
    conf = tagger.confidences(batch_to_pil(pictures))
    for proto, row in zip(PROTOTYPES, conf):
        shapes = {s: row[names[s]] for s in SHAPES}
        colours = {c: row[names[c]] for c in COLOURS}
        assert shapes[proto.shape] > 0.9, (proto.name, shapes)
        assert max(v for s, v in shapes.items() if s != proto.shape) < 0.1, (proto.name, shapes)
        assert colours[proto.colour] > 0.9, (proto.name, colours)
        assert max(v for c, v in colours.items() if c != proto.colour) < 0.1, (proto.name, colours)
        # The character tag: a purple shape, past the 0.85 character threshold.
        assert (row[names["toy_mascot"]] >= 0.85) == (proto.colour == "purple"), (proto.name, row[names["toy_mascot"]])
    # A picture without a saturated shape carries no colour and no shape tag.
    grey = tagger.confidences(batch_to_pil(torch.full((1, 3, 64, 64), 0.5)))[0]
    assert max(grey[names[t]] for t in (*SHAPES, *COLOURS)) < 0.05


@pytest.mark.parametrize("fixed_batch", [1, 2])
def test_fixed_batch_models_are_run_in_chunks_of_their_batch(tmp_path, fixed_batch):
    from PIL import Image

    folder = build_toy_tagger(tmp_path / "fixed", size=32, fixed_batch=fixed_batch)
    fixed = TaggerSession(folder / "model.onnx", folder / "selected_tags.csv")
    assert fixed.fixed_batch == fixed_batch
    red, blue = Image.new("RGB", (32, 32), (224, 30, 30)), Image.new("RGB", (32, 32), (30, 80, 235))
    out = fixed.confidences([red, blue, red])  # 3 images: the last chunk of 2 is padded
    names = fixed.tag_list.index()
    assert out.shape == (3, len(names))
    assert out[0, names["red"]] > 0.9 > out[1, names["red"]] and out[2, names["red"]] > 0.9
    assert out[1, names["blue"]] > 0.9


def test_term_selection_and_options_round_trip_through_infotext():
    options = PinningOptions(
        tagger_tags="score_9, (smile:1.2), outdoors@0.5", tagger_negative_tags="lowres",
        tagger_model="wd-swinv2-tagger-v3", tagger_general_threshold=0.4, tagger_character_threshold=0.9,
        tagger_temperature=0.02, tagger_weight=2.0,
    )
    assert TAGGER in active_terms(options)
    assert TAGGER not in active_terms(options.replace(tagger_weight=0.0))
    info = options.to_infotext()
    assert info["Pin booru tags"] == "score_9, (smile:1.2), outdoors@0.5"
    assert info["Pin tagger"] == "wd-swinv2-tagger-v3"
    assert PinningOptions.from_infotext(info) == options
    assert PinningOptions.from_json(options.to_json()) == options
    with pytest.raises(TagError):
        check_tagger_input(options.replace(tagger_tags="smile@2"))


def test_toy_run_raises_the_wanted_tags_share_across_the_batch(tmp_path, toy_tagger):
    """Pin "red" (and away from "blue") with the tiny ONNX tagger alone: the baseline shows 1 red
    shape in 8 (share 0.125; the pinned prompt reaches 1.0); the test asks for at least 4 more."""
    options = PinningOptions(
        flip_weight=0.0, tagger_tags="red", tagger_negative_tags="blue", tagger_model=str(toy_tagger),
        generations=5, cma_lambda=6, initial_std=0.4, centroid_radius=0.0, cli_log=False,
    )
    result = PinningRun.start(
        generator=ToyGenerator(FAST), prompt=PROMPT, negative_prompt="blurry", seeds=SEEDS,
        options=options, runs_dir=tmp_path,
    ).execute()
    before = result.baseline.components["tagger.wanted:red.share"]
    after = result.best.components["tagger.wanted:red.share"]
    assert before <= 0.25, before
    assert after >= before + 0.5, (before, after, result.best.prompt)
    assert result.best.components["tagger"] < result.baseline.components["tagger"]
    # The report shows, under each image of the baseline and the best, what the tagger saw.
    from lib_pinning.report import rebuild

    page = rebuild(result.run_dir).read_text()
    assert page.count('class="image-note">booru tags: red') == 2 * len(SEEDS)
    assert page.count('class="image-note">top tags: ') == 2 * len(SEEDS)


# The README quotes this command (tests/test_readme_demo.py holds it to that).
DEMO_BOORU_COMMAND = (
    "demo", "--booru-tags", "red, circle", "--flip-weight", "0", "--generations", "3", "--cma-lambda", "6",
    "--initial-std", "0.4",
)


def test_the_demo_with_booru_tags_red_circle_raises_the_share_carrying_both(tmp_path):
    """`demo --booru-tags "red, circle"` (the issue's flag) on the demo's prompt, seeds and sampler,
    with the toy's own 448 px tagger: the baseline has 2 red circles in 8 (share 0.25), 19 batches
    reach 8 in 8 (measured at the commit adding this test); the test asks for at least 6 in 8.
    The image loss is off: it pins to the prompt's own pictures, 2 in 8 of them red circles, so
    with it on the two objectives pull apart (0.5 at this budget); this measures the tagger term."""
    from lib_pinning.cli import build_parser, options_from_args
    from lib_pinning.generator import DemoPrompt
    from lib_pinning.objectives.tagger_runtime import batch_to_pil
    from lib_pinning.objectives.tagger_toy import TOY_FOLDER

    args = build_parser().parse_args([*DEMO_BOORU_COMMAND, "--models-dir", str(tmp_path / "models"), "--cli-log", "false"])
    demo, options = options_from_args(DemoPrompt, args), options_from_args(PinningOptions, args)
    assert options.tagger_tags == "red, circle" and demo == DemoPrompt()
    generator = ToyGenerator(options_from_args(ToySettings, args))
    seeds = derive_seeds(demo.seed, demo.batch_size)
    result = PinningRun.start(
        generator=generator, prompt=demo.prompt, negative_prompt=demo.negative_prompt, seeds=seeds,
        options=options, runs_dir=tmp_path / "runs",
    ).execute()
    # Counted here, from the pictures, with the tagger the run used: an image carries both tags.
    folder = tmp_path / "models" / "taggers" / TOY_FOLDER
    tagger = TaggerSession(folder / "model.onnx", folder / "selected_tags.csv")
    names = tagger.tag_list.index()

    def share_of_both(record) -> float:
        batch = generator.generate(GenerationRequest(record.prompt, record.negative_prompt, seeds))
        conf = tagger.confidences(batch_to_pil(batch.images))
        return float(np.mean((conf[:, names["red"]] >= 0.35) & (conf[:, names["circle"]] >= 0.35)))

    before, after = share_of_both(result.baseline), share_of_both(result.best)
    assert before <= 0.25, before
    assert after >= before + 0.5, (before, after, result.best.prompt)


def test_composes_with_the_image_loss_in_weighted_sum_and_pareto(tmp_path, toy_tagger):
    generator = ToyGenerator(FAST)
    batch = generator.generate(GenerationRequest(PROMPT, "blurry", SEEDS[:4]))
    options = PinningOptions(tagger_tags="red", tagger_model=str(toy_tagger), tagger_weight=2.0)
    objective = build_objective(options, batch.images, generator=generator)
    scored = objective.score(batch, np.zeros(3))
    assert objective.names[1] == "tagger" and len(scored.values) == 2
    assert scored.values[1] == pytest.approx(2.0 * scored.components["tagger"])
    assert scored.loss == pytest.approx(sum(scored.values))
    # Pareto: MO-CMA-ES sees the image loss and the tag share as two objectives.
    result = PinningRun.start(
        generator=generator, prompt=PROMPT, negative_prompt="blurry", seeds=SEEDS[:4],
        options=options.replace(combine="pareto", generations=2, cma_lambda=4, cli_log=False, stop_early=False),
        runs_dir=tmp_path,
    ).execute()
    assert result.status == "finished"
    assert len(result.best.fitness) == 2 and result.best.fitness[1] == pytest.approx(2.0 * result.best.components["tagger"])
