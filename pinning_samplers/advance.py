"""Moving a CPU torch.Generator ahead by whole randn draws without computing the normals.

A hyperbatch row that does not exist yet still has to reach its first step with its generator
where the plain sampler's image's generator is, i.e. after one randn draw per skipped step. The
values are discarded, so only the generator's words matter: torch's CPU randn of n >= 16 values
(normal_fill) takes exactly one 32-bit Mersenne-twister word per float32 value when n is a
multiple of 16 (other sizes redraw their last 16 values), and random_() on a uint8 tensor takes one
word per element too, without the Box-Muller transform or float writes (about 40% cheaper on
the toy's 3x64x64 draws, see docs/benchmarks.md, bench_seeded_catchup.py). Both facts are torch
internals, so `advance_is_exact` checks them once per process and callers fall back to drawing.

`PositionCache` remembers where a catch-up left a generator, by (seed, words consumed): a pinning
run generates every individual from the same seeds, so from its second batch on a late row's
generator jumps to the cached state (`set_state`, microseconds) instead of drawing its skipped
words again (0.04 ms per skipped toy draw). The state of a CPU generator that has only made
word-aligned draws is a pure function of its seed and of the words it consumed, so the jump
leaves it exactly where drawing would (tests/test_seeded_catchup.py checks the states).
"""

from __future__ import annotations

import functools
import math
import threading
from collections import OrderedDict
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


class PositionCache:
    """Generator states after catch-ups, by (seed, words consumed), least recently used first out.

    One state is 5 KB; `capacity` bounds the memory (a run of B images keeps about B - 1 of them
    per distinct skip, a few dozen in all).
    """

    def __init__(self, capacity: int = 1024) -> None:
        self.capacity = capacity
        self._states: OrderedDict[tuple[int, int], torch.Tensor] = OrderedDict()
        self._lock = threading.Lock()

    def advance(self, generator: torch.Generator, seed: int, words_before: int, values: int,
                scratch: torch.Tensor) -> torch.Tensor:
        """`advance(generator, values, scratch)` for a generator seeded with `seed` that has
        consumed `words_before` words, served from the cache when this position was reached before."""
        key = (seed, words_before + values)
        with self._lock:
            state = self._states.get(key)
            if state is not None:
                self._states.move_to_end(key)
        if state is not None:
            generator.set_state(state)
            return scratch
        scratch = advance(generator, values, scratch)
        with self._lock:
            self._states[key] = generator.get_state()
            while len(self._states) > self.capacity:
                self._states.popitem(last=False)
        return scratch

    def clear(self) -> None:
        with self._lock:
            self._states.clear()


POSITIONS = PositionCache()
"""The process's cache of catch-up positions (CPU generators only)."""
