"""Per-image, seed-derived noise: every draw has one row per image, row i from seed i.

This mirrors what the WebUI does so that an image depends only on its own seed, whatever the
batch it was generated in:
- `SeededNoise` is the WebUI's ImageRNG (modules/rng.py): one torch.Generator per seed; the first
  draw is the initial latent, every later draw one step's noise. The WebUI redirects
  k-diffusion's torch.randn_like to ImageRNG.next(), so a plain sampler consumes exactly one draw
  per randn_like call.
- `SeededBrownianNoise` is the WebUI's create_noise_sampler (k-diffusion's
  BrownianTreeNoiseSampler with a list of seeds): one Brownian tree per seed, so the noise between
  two sigmas is a pure function of (seed, sigma, sigma_next), independent of query order.

Both are k-diffusion noise samplers ((sigma, sigma_next) -> noise) returning all B rows; a
hyperbatch sampler hands row r to the active row r.
"""

from __future__ import annotations

import hashlib
import math
import threading
import warnings
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

import torch
import torchsde

from .advance import POSITIONS, advance_is_exact, draws_are_word_aligned


def split_seed(seed: int, step: int) -> int:
    """The generator seed of (image seed, split step)'s refresh noise: a hash, because torch's CPU
    generator keeps only 32 bits of its seed, so seed + step * 2^32 would repeat across steps."""
    digest = hashlib.blake2b(f"hyperbatch split {seed} {step}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & (2**63 - 1)


def split_noise_rows(
    seeds: Sequence[int], shape: Sequence[int], step: int, device: torch.device | None = None,
    dtype: torch.dtype | None = None,
) -> torch.Tensor:
    """Unit Gaussian noise for the copies with these seeds made at a split in `step`.

    One fresh CPU generator per row, derived from (seed, step): a pure function of the image's
    seed, costing one small draw, whatever else the sampler's noise source does (a Brownian tree
    query costs more than a toy model call; a sequential stream must not be shifted by a split).
    Being a pure function, each row is kept (`_SPLIT_ROWS`): a pinning run's every batch has the
    same seeds and splits, and from its second batch on the rows are not drawn again.
    """
    shape = tuple(int(d) for d in shape)
    rows = [_split_row(int(s), step, shape) for s in seeds]
    return torch.stack(rows).to(device=device, dtype=dtype if dtype is not None else torch.float32)


_SPLIT_ROWS_CAPACITY = 64
"""Refresh rows kept: a batch of B images makes B - 1 of them (48 KB each on the toy, 64 KB for an
SD 1.5 latent), so a few seed sets' worth."""

_SPLIT_ROWS: OrderedDict[tuple[int, int, tuple[int, ...]], torch.Tensor] = OrderedDict()
_split_rows_lock = threading.Lock()


def _split_row(seed: int, step: int, shape: tuple[int, ...]) -> torch.Tensor:
    """Row `seed`'s unit refresh noise of a split in `step` (float32, CPU); shared: never modify it."""
    key = (seed, step, shape)
    with _split_rows_lock:
        row = _SPLIT_ROWS.get(key)
        if row is not None:
            _SPLIT_ROWS.move_to_end(key)
            return row
    row = torch.randn(shape, generator=torch.Generator("cpu").manual_seed(split_seed(seed, step)))
    with _split_rows_lock:
        _SPLIT_ROWS[key] = row
        while len(_SPLIT_ROWS) > _SPLIT_ROWS_CAPACITY:
            _SPLIT_ROWS.popitem(last=False)
    return row


def _seeds(seeds: Sequence[int]) -> tuple[int, ...]:
    values = tuple(int(s) for s in seeds)
    if not values:
        raise ValueError("at least one seed is needed")
    return values


class SeededNoise:
    """Sequential Gaussian draws from one generator per image seed (the WebUI's ImageRNG).

    shape is the per-image shape (C, H, W). Values are drawn in float32 on `generator_device`
    (CPU by default: the same numbers on every machine; the WebUI's "GPU" RNG source draws on the
    model's device instead) and moved to `device` / `dtype`. `seed_delta` is the WebUI's "eta
    noise seed delta": after the first draw the generators restart from seed + seed_delta.

    `draw_rows` makes a later draw for some rows only (a hyperbatch's active rows): the other
    rows' draws are owed, and a row catches up on all it owes in one call (`advance.advance`)
    before its next draw, so every row still gets exactly the values `next()` would give it. On
    the toy, skipping the rows a hyperbatch has not split off yet saved ~40% of their noise cost.
    A catch-up to a position reached before (a pinning run's next batch of the same seeds) is a
    jump to the cached generator state (`advance.POSITIONS`), not a draw.
    The catch-up is used only where it is exact (CPU generator, `advance.draws_are_word_aligned`,
    `advance.advance_is_exact`); elsewhere, or with catch_up=False, every row is drawn every time.
    """

    def __init__(
        self,
        seeds: Sequence[int],
        shape: Sequence[int],
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
        generator_device: torch.device | str = "cpu",
        seed_delta: int = 0,
        catch_up: bool = True,
    ) -> None:
        self.seeds = _seeds(seeds)
        self.shape = tuple(int(d) for d in shape)
        self.device = torch.device(device) if device is not None else torch.device("cpu")
        self.dtype = dtype if dtype is not None else torch.float32
        self.generator_device = torch.device(generator_device)
        self.seed_delta = int(seed_delta)
        self._generators = self._make_generators(0)
        self._first_done = False
        self.catch_up = (
            catch_up
            and self.generator_device.type == "cpu"
            and draws_are_word_aligned(self.shape)
            and advance_is_exact()
        )
        self._owed = [0] * len(self.seeds)  # draws each row skipped, made up before its next one
        self._scratch = torch.empty(0, dtype=torch.uint8)

    def _make_generators(self, delta: int) -> list[torch.Generator]:
        # Each generator's seed and the words it consumed since: its position, which a catch-up
        # looks up in `advance.POSITIONS` (a pinning run's batches share their seeds).
        self._generator_seeds = [s + delta for s in self.seeds]
        self._words = [0] * len(self.seeds)
        return [torch.Generator(self.generator_device).manual_seed(s) for s in self._generator_seeds]

    def _draw(self, start: int = 0, stop: int | None = None) -> torch.Tensor:
        stop = len(self.seeds) if stop is None else stop
        if not self.catch_up:
            return self._stack(range(len(self.seeds)))[start:stop]
        values = math.prod(self.shape)
        for r, owed in enumerate(self._owed):
            if start <= r < stop:
                if owed:
                    self._scratch = POSITIONS.advance(
                        self._generators[r], self._generator_seeds[r], self._words[r], owed * values, self._scratch
                    )
                    self._words[r] += owed * values
                    self._owed[r] = 0
                self._words[r] += values
            else:
                self._owed[r] += 1
        return self._stack(range(start, stop))

    def _stack(self, rows: range) -> torch.Tensor:
        # Each row is drawn into its slice of one buffer: the values of randn(shape) per row,
        # without a stack copy of the whole draw.
        out = torch.empty((len(rows), *self.shape), device=self.generator_device)
        for i, r in enumerate(rows):
            torch.randn(self.shape, generator=self._generators[r], out=out[i])
        return out.to(device=self.device, dtype=self.dtype)

    def _first(self, start: int, stop: int) -> torch.Tensor:
        noise = self._draw(start, stop)
        self._first_done = True
        if self.seed_delta:
            # Fresh generators from seed + delta: what the skipped rows owed is moot.
            self._generators = self._make_generators(self.seed_delta)
            self._owed = [0] * len(self.seeds)
        return noise

    def first(self, rows: int | None = None) -> torch.Tensor:
        """The initial latents (unit variance), one row per seed.

        rows: draw only the first `rows` rows (the rows a hyperbatch starts from, `GrowthPlan.sizes[0]`);
        the others owe this draw and catch up before their next one, so every later draw has the
        values of a full first draw's sequel.
        """
        return self._first(0, len(self.seeds) if rows is None else rows)

    def next(self) -> torch.Tensor:
        """The next draw, one row per seed (the first call returns `first()`)."""
        if not self._first_done:
            return self.first()
        return self._draw()

    def __call__(self, sigma: Any = None, sigma_next: Any = None) -> torch.Tensor:
        """Noise-sampler form: the sigmas are ignored, every call is the next draw."""
        return self.next()

    def draw_rows(self, sigma: Any, sigma_next: Any, start: int, stop: int) -> torch.Tensor:
        """Rows start..stop-1 of the next draw (`next()[start:stop]`, the same values); the other
        rows' generators owe this draw (see the class docstring)."""
        if not self._first_done:
            return self._first(start, stop)
        return self._draw(start, stop)

    def split_noise(self, step: int, start: int, stop: int) -> torch.Tensor:
        """Refresh noise for the copies start..stop-1 of a split in `step` (`split_noise_rows`);
        the sequential generators are not advanced."""
        return split_noise_rows(self.seeds[start:stop], self.shape, step, self.device, self.dtype)


class SeededBrownianNoise:
    """Brownian-motion noise with one torchsde.BrownianTree per image seed.

    noise(sigma, sigma_next) = (W(sigma_next) - W(sigma)) / sqrt(|sigma_next - sigma|): unit
    variance, and a pure function of (seed, sigma, sigma_next), so samplers that take two
    sub-steps or are queried in a different order still see one consistent Brownian path per image.
    The sign and scaling follow k-diffusion's BrownianTreeNoiseSampler, so with the same seeds the
    values equal the WebUI's create_noise_sampler. Queries must stay inside [sigma_min, sigma_max].
    """

    def __init__(
        self,
        seeds: Sequence[int],
        shape: Sequence[int],
        sigma_min: float | torch.Tensor,
        sigma_max: float | torch.Tensor,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        self.seeds = _seeds(seeds)
        self.shape = tuple(int(d) for d in shape)
        t0, t1 = torch.as_tensor(sigma_min), torch.as_tensor(sigma_max)
        if not 0 <= t0 < t1:
            raise ValueError(f"need 0 <= sigma_min < sigma_max, got {float(t0)}, {float(t1)}")
        self.device = torch.device(device) if device is not None else torch.device("cpu")
        self.dtype = dtype if dtype is not None else torch.float32
        self._t0, self._t1 = t0, t1
        self._w0 = torch.zeros(self.shape, device=device, dtype=self.dtype)
        # Built at a row's first query: a tree is a pure function of its seed, so the values are
        # the same, and a sampler that never queries some rows (DPM++ 2M draws no noise; its split
        # refresh comes from `split_noise`) does not pay for their trees (8 of them cost about as
        # much as a toy DPM++ 2M batch's 20 denoiser calls on one row).
        self._trees: list[torchsde.BrownianTree | None] = [None] * len(self.seeds)

    @classmethod
    def from_sigmas(
        cls, seeds: Sequence[int], x: torch.Tensor, sigmas: torch.Tensor
    ) -> SeededBrownianNoise:
        """Trees covering a schedule's positive sigmas, shaped like one row of x (as the WebUI)."""
        positive = sigmas[sigmas > 0]
        return cls(seeds, x.shape[1:], positive.min(), sigmas.max(), device=x.device, dtype=x.dtype)

    def __call__(self, sigma: Any, sigma_next: Any) -> torch.Tensor:
        return self.draw_rows(sigma, sigma_next, 0, len(self.seeds))

    def split_noise(self, step: int, start: int, stop: int) -> torch.Tensor:
        """Refresh noise for the copies start..stop-1 of a split in `step` (`split_noise_rows`):
        no tree is queried, so a deterministic solver's split costs what a plain step costs."""
        return split_noise_rows(self.seeds[start:stop], self.shape, step, self.device, self.dtype)

    def draw_rows(self, sigma: Any, sigma_next: Any, start: int, stop: int) -> torch.Tensor:
        """Rows start..stop-1 of the draw: only those images' trees are queried (each row is a pure
        function of its own seed, so the values equal those rows of a full draw)."""
        t0, t1 = torch.as_tensor(sigma), torch.as_tensor(sigma_next)
        low, high, sign = (t0, t1, 1) if t0 < t1 else (t1, t0, -1)
        with warnings.catch_warnings():
            # Sigmas rebuilt as exp(-(-log sigma)) (DPM++ SDE) overshoot the tree's end points by
            # an ulp; torchsde clamps them, as it should, but warns on every such query.
            warnings.filterwarnings("ignore", message="Should have t", category=UserWarning)
            w = torch.stack([self._tree(r)(low, high) for r in range(start, stop)]) * sign
        return w / (t1 - t0).abs().sqrt()

    @property
    def trees_built(self) -> int:
        """How many of the per-seed trees have been built (each at its row's first query)."""
        return sum(tree is not None for tree in self._trees)

    def _tree(self, row: int) -> torchsde.BrownianTree:
        tree = self._trees[row]
        if tree is None:
            tree = self._trees[row] = torchsde.BrownianTree(self._t0, self._w0, self._t1, entropy=self.seeds[row])
        return tree
