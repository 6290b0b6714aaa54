"""SeededNoise's catch-up: rows a hyperbatch has not split off yet are not drawn, and their
generators catch up in one call, with exactly the values of drawing every row at every step."""

from __future__ import annotations

import pytest
import torch

from lib_pinning.toy import ToyModel, to_images
from pinning_samplers import advance as advance_module
from pinning_samplers.advance import advance, advance_is_exact, draws_are_word_aligned
from pinning_samplers.noise import SeededNoise
from pinning_samplers.plan import plan_growth
from pinning_samplers.schedules import get_sigmas_karras
from pinning_samplers.sampling import sample_euler_ancestral_hyperbatch

TOY_SHAPE = (3, 64, 64)


@pytest.mark.parametrize("shape", [TOY_SHAPE, (4, 64, 64), (2, 8)])
@pytest.mark.parametrize("steps", [1, 3])
def test_advance_leaves_the_generator_where_randn_draws_leave_it(shape, steps):
    drawn = torch.Generator().manual_seed(77)
    for _ in range(steps):
        torch.randn(shape, generator=drawn)
    advanced = torch.Generator().manual_seed(77)
    scratch = advance(advanced, steps * torch.Size(shape).numel(), torch.empty(0, dtype=torch.uint8))
    assert scratch.numel() >= steps * torch.Size(shape).numel()
    assert torch.equal(torch.randn(shape, generator=drawn), torch.randn(shape, generator=advanced))
    assert advance_is_exact()


def test_draws_of_other_sizes_are_not_word_aligned():
    assert draws_are_word_aligned(TOY_SHAPE) and draws_are_word_aligned((4, 128, 128))
    assert not draws_are_word_aligned((4, 7, 9)) and not draws_are_word_aligned((15,))
    assert not SeededNoise([1, 2], (4, 7, 9)).catch_up and SeededNoise([1, 2], TOY_SHAPE).catch_up


def _pattern(noise: SeededNoise, pattern: list[int]) -> list[torch.Tensor]:
    return [noise.draw_rows(None, None, 0, stop) for stop in pattern]


@pytest.mark.parametrize("shape", [TOY_SHAPE, (2, 8), (4, 7, 9)])
@pytest.mark.parametrize("seed_delta", [0, 31337])
def test_draw_rows_equals_the_rows_of_full_draws(shape, seed_delta):
    pattern = [1, 1, 2, 2, 2, 4, 3, 4, 4]  # a first draw, then rows growing (and one shrinking)
    seeds = [5, 6, 7, 8]
    lazy = _pattern(SeededNoise(seeds, shape, seed_delta=seed_delta), pattern)
    eager = SeededNoise(seeds, shape, seed_delta=seed_delta, catch_up=False)
    for stop, rows in zip(pattern, lazy):
        assert torch.equal(rows, eager.next()[:stop])


def test_skipped_rows_are_not_drawn(monkeypatch):
    noise = SeededNoise([5, 6, 7, 8], TOY_SHAPE)
    noise.first()
    calls = []
    real_randn = torch.randn
    monkeypatch.setattr(torch, "randn", lambda *a, **k: calls.append(1) or real_randn(*a, **k))
    for _ in range(3):
        noise.draw_rows(None, None, 0, 1)
    assert len(calls) == 3


def test_without_an_exact_advance_the_catch_up_is_off(monkeypatch):
    monkeypatch.setattr("pinning_samplers.noise.advance_is_exact", lambda: False)
    assert not SeededNoise([1, 2], TOY_SHAPE).catch_up
    assert advance_module.advance_is_exact()


@pytest.mark.parametrize("growth", ["front", "even", "late"])
def test_euler_a_hyperbatch_is_bit_identical_with_and_without_catch_up(growth):
    model = ToyModel()
    sigmas = get_sigmas_karras(10, model.sigma_min, model.sigma_max)
    seeds = list(range(40, 48))
    args = model.extra_args(["a red circle"] * len(seeds), cond_scale=1.5)
    outputs = []
    for catch_up in (True, False):
        noise = SeededNoise(seeds, model.image_shape, catch_up=catch_up)
        x = noise.first() * sigmas[0]
        outputs.append(
            sample_euler_ancestral_hyperbatch(
                model, x, sigmas, extra_args=args, disable=True, noise_sampler=noise,
                growth=plan_growth(len(seeds), 10, growth),
            )
        )
    assert torch.equal(outputs[0], outputs[1])


@pytest.mark.parametrize("shape", [TOY_SHAPE, (4, 7, 9)])
@pytest.mark.parametrize("seed_delta", [0, 31337])
def test_a_first_draw_of_some_rows_is_those_rows_of_a_full_one(shape, seed_delta):
    """A hyperbatch starts from its first rows only; the other seeds' generators owe the first
    draw, and every later draw still has the values of drawing every row every time."""
    seeds = [5, 6, 7, 8]
    lazy = SeededNoise(seeds, shape, seed_delta=seed_delta)
    eager = SeededNoise(seeds, shape, seed_delta=seed_delta, catch_up=False)
    assert torch.equal(lazy.first(1), eager.first()[:1])
    for stop, rows in zip([2, 2, 4, 4], _pattern(lazy, [2, 2, 4, 4])):
        assert torch.equal(rows, eager.next()[:stop])


@pytest.mark.parametrize("sampler", ["euler_ancestral", "dpmpp_2m"])
def test_toy_hyperbatch_draws_only_its_starting_rows_and_equals_the_full_first_draw(sampler, monkeypatch):
    from lib_pinning.generator import GenerationRequest, ToyGenerator, ToySettings

    generator = ToyGenerator(ToySettings(sampler=sampler, growth="front", steps=8))
    request = GenerationRequest("a red circle", "", tuple(range(20, 28)))
    first_rows = []
    real_first = SeededNoise.first
    monkeypatch.setattr(SeededNoise, "first", lambda self, rows=None: first_rows.append(rows) or real_first(self, rows))
    batch = generator.generate(request)
    assert first_rows == [1]
    # The reference: every row of the first draw made, as a plain batch makes them.
    model, sigmas = generator.model, generator.sigmas()
    noise = SeededNoise(request.seeds, model.image_shape, catch_up=False)
    x = real_first(noise) * sigmas[0]
    if generator.sampler.webui_options.get("brownian_noise"):
        from pinning_samplers import SeededBrownianNoise

        noise = SeededBrownianNoise.from_sigmas(request.seeds, x, sigmas)
    latents = generator.sampler.function(
        model, x, sigmas, extra_args=model.extra_args(["a red circle"] * 8, "", cond_scale=1.5),
        disable=True, noise_sampler=noise, growth=generator.growth_plan(8),
    )
    assert torch.equal(batch.images, to_images(latents))


def test_a_cached_catch_up_position_is_the_state_drawing_leaves(monkeypatch):
    """The second batch of the same seeds jumps its late rows' generators to the cached states
    (no random_ call), and those are exactly the states of drawing every skipped row."""
    advance_module.POSITIONS.clear()
    pattern = [1, 1, 1, 2, 2, 4, 4]
    seeds = [21, 22, 23, 24]
    _pattern(SeededNoise(seeds, TOY_SHAPE), pattern)  # fills the cache
    calls = []
    real = advance_module.advance
    monkeypatch.setattr(advance_module, "advance", lambda *a: calls.append(1) or real(*a))
    lazy = SeededNoise(seeds, TOY_SHAPE)
    rows = _pattern(lazy, pattern)
    assert not calls
    eager = SeededNoise(seeds, TOY_SHAPE, catch_up=False)
    for stop, drawn in zip(pattern, rows):
        assert torch.equal(drawn, eager.next()[:stop])
    for a, b in zip(lazy._generators, eager._generators):
        assert torch.equal(a.get_state(), b.get_state())
    advance_module.POSITIONS.clear()
    _pattern(SeededNoise(seeds, TOY_SHAPE), pattern)
    assert len(calls) == 3  # rows 1, 2 and 3 catch up, each once


def test_cached_positions_count_the_rows_own_draws():
    """A row that drew, skipped and caught up is at another position than one that only skipped as
    many draws: a later batch with another growth pattern must not get the first row's state."""
    advance_module.POSITIONS.clear()
    seeds = [31, 32]
    for pattern in ([2, 2, 1, 2], [1, 2, 2], [1, 1, 1, 1, 2]):
        eager = SeededNoise(seeds, TOY_SHAPE, catch_up=False)
        for stop, drawn in zip(pattern, _pattern(SeededNoise(seeds, TOY_SHAPE), pattern)):
            assert torch.equal(drawn, eager.next()[:stop])


def test_position_cache_is_bounded():
    cache = advance_module.PositionCache(capacity=2)
    scratch = torch.empty(0, dtype=torch.uint8)
    for seed in range(4):
        cache.advance(torch.Generator().manual_seed(seed), seed, 0, 32, scratch)
    assert len(cache._states) == 2
