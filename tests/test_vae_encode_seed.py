"""seed_vae_encode leaves torch's global generator where the WebUI's own noise for a batch leaves it,
by that WebUI's rule (v1.10.1 seeds it with the seed, Forge with (seed + 100000) % 65536)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from lib_pinning.webui.generator import seed_vae_encode


def rng_module(offset: int) -> SimpleNamespace:
    """A modules/rng.py with one WebUI's rule for a per-seed generator's noise."""
    def randn(seed: int, shape: tuple[int, ...], generator: torch.Generator | None = None) -> torch.Tensor:
        torch.manual_seed((seed + offset) % 65536 if generator is not None else seed)
        return torch.randn(shape, generator=generator)

    return SimpleNamespace(randn=randn, create_generator=lambda seed: torch.Generator().manual_seed(int(seed)))


@pytest.mark.parametrize("offset", [0, 100000], ids=["a1111", "forge"])
def test_the_global_generator_is_left_as_the_batchs_noise_leaves_it(offset: int) -> None:
    rng = rng_module(offset)
    seeds = (40, 41, 42)
    for seed in seeds:  # the batch's noise, as ImageRNG.first draws it
        rng.randn(seed, (4, 8, 8), generator=rng.create_generator(seed))
    after_batch = torch.randn(5)
    torch.manual_seed(7)  # whatever another request left
    seed_vae_encode(rng, seeds)
    assert torch.equal(torch.randn(5), after_batch)
