"""Moving a CPU torch.Generator ahead by whole randn draws without computing the normals.

A hyperbatch row that does not exist yet still has to reach its first step with its generator
where the plain sampler's image's generator is, i.e. after one randn draw per skipped step. The
values are discarded, so only the generator's words matter: torch's CPU randn of n >= 16 values
(normal_fill) takes exactly one 32-bit Mersenne-twister word per float32 value when n is a
multiple of 16 (other sizes redraw their last 16 values), and random_() on a uint8 tensor takes one
word per element too, without the Box-Muller transform or float writes (about 40% cheaper on
the toy's 3x64x64 draws, see docs/benchmarks.md, bench_seeded_catchup.py). Both facts are torch
internals, so `advance_is_exact` checks them once per process and callers fall back to drawing.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence

import torch

_CHECK_DRAW = 32
"""Values per draw of the self-check: a multiple of 16, as the draws it vouches for."""


def draws_are_word_aligned(shape: Sequence[int]) -> bool:
    """Whether k randn draws of `shape` consume exactly k * numel words (see the module docstring)."""
    n = math.prod(int(d) for d in shape)
    return n >= 16 and n % 16 == 0


@functools.cache
def advance_is_exact() -> bool:
    """Whether `advance` leaves a CPU generator exactly where randn draws would (this torch)."""
    drawn = torch.Generator("cpu").manual_seed(20240515)
    for _ in range(3):
        torch.randn(_CHECK_DRAW, generator=drawn)
    advanced = torch.Generator("cpu").manual_seed(20240515)
    advance(advanced, 3 * _CHECK_DRAW, torch.empty(0, dtype=torch.uint8))
    return torch.equal(drawn.get_state(), advanced.get_state())


def advance(generator: torch.Generator, values: int, scratch: torch.Tensor) -> torch.Tensor:
    """Advance `generator` past `values` float32 randn values; returns the (possibly grown) uint8
    scratch buffer to pass next time, so repeated catch-ups do not allocate."""
    if scratch.numel() < values:
        scratch = torch.empty(values, dtype=torch.uint8)
    scratch[:values].random_(generator=generator)
    return scratch
