"""ToyGenerator: batches are a pure function of (prompts, seeds, settings)."""

from __future__ import annotations

import pytest
import torch

from lib_pinning.generator import Batch, GenerationRequest, Generator, ToyGenerator, ToySettings

PROMPT = "a red circle or a blue square, simple shapes"


def generate(settings: ToySettings, seeds: tuple[int, ...], prompt: str = PROMPT) -> Batch:
    return ToyGenerator(settings).generate(GenerationRequest(prompt, "blurry", seeds))


def test_is_a_generator_and_round_trips_its_description():
    generator = ToyGenerator(ToySettings(sampler="dpmpp_2m", growth="late", steps=12, cfg_scale=2.0))
    assert isinstance(generator, Generator)
    again = ToyGenerator.from_description(generator.describe())
    assert again.settings == generator.settings and again.model.config == generator.model.config
    with pytest.raises(ValueError, match="webui"):
        ToyGenerator.from_description({"backend": "webui"})


@pytest.mark.parametrize("sampler", ["euler_ancestral", "dpmpp_2m"])
def test_plain_image_depends_only_on_its_own_seed(sampler):
    settings = ToySettings(sampler=sampler, steps=12)
    a = generate(settings, (5, 6, 7))
    b = generate(settings, (7, 5))
    assert a.images.shape == (3, 3, 64, 64) and a.images.dtype == torch.float32
    assert 0.0 <= float(a.images.min()) and float(a.images.max()) <= 1.0
    assert torch.equal(a.images[2], b.images[0]) and torch.equal(a.images[0], b.images[1])
    assert a.growth is None and a.model_rows == 3 * 12


@pytest.mark.parametrize("sampler", ["euler_ancestral", "dpmpp_2m", "dpmpp_2m_sde"])
def test_hyperbatch_is_reproducible_cheaper_and_traced(sampler):
    settings = ToySettings(sampler=sampler, growth="even", steps=12)
    seeds = tuple(range(100, 108))
    a, b = generate(settings, seeds), generate(settings, seeds)
    assert torch.equal(a.images, b.images)
    assert a.growth is not None and a.growth.batch_size == 8
    assert a.model_rows < 8 * 12
    distinct = {tuple(img.flatten()[:64].tolist()) for img in a.images}
    assert len(distinct) == 8, "hyperbatch copies must differ"


def test_samples_land_on_prototypes():
    generator = ToyGenerator(ToySettings(steps=20))
    batch = generator.generate(GenerationRequest(PROMPT, "", tuple(range(16))))
    model = generator.model
    nearest = model.nearest_prototype(batch.images)
    prototypes = (model.prototypes[nearest].float() + 1) / 2
    # Pixel noise of the components is s = 0.1 in [-1, 1] units, i.e. 0.05 in image units:
    # a sample's RMS distance to its prototype is about that, far below the prototypes' spacing.
    rms = (batch.images - prototypes).pow(2).mean(dim=(1, 2, 3)).sqrt()
    assert float(rms.max()) < 0.08


def test_prompt_weights_change_the_batch():
    settings = ToySettings(steps=12)
    seeds = tuple(range(8))
    plain = generate(settings, seeds, "a red circle or a blue square")
    pinned = generate(settings, seeds, "a (red:1.8) (circle:1.8) or a (blue:0.2) (square:0.2)")
    model = ToyGenerator(settings).model
    red_circle = model.prototype_names.index("red circle")
    assert int((model.nearest_prototype(pinned.images) == red_circle).sum()) > int(
        (model.nearest_prototype(plain.images) == red_circle).sum()
    )
