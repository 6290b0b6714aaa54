"""The embedded toy diffusion model: an exact Gaussian-mixture denoiser that stands in for Stable Diffusion.

Why a toy: the demo, the tests and the benchmarks need a diffusion model that runs in milliseconds
on a CPU, whose batch variety depends on the prompt weights the way pinning assumes, and whose
optimum is known, so that convergence can be tested honestly.

The data distribution is a mixture of K = 10 isotropic Gaussians N(mu_k, s^2 I) in pixel space
([-1, 1], 3 x 64 x 64), one around each procedurally drawn prototype image (a coloured shape on a
gradient background). For such a mixture the ideal denoiser is closed form:

    E[x0 | x, sigma] = sum_k r_k(x, sigma) * (mu_k + s^2 / (s^2 + sigma^2) * (x - mu_k))

with r_k the posterior responsibility of component k under N(mu_k, (s^2 + sigma^2) I) weighted by
the mixture weight pi_k. Real k-diffusion samplers therefore run on it unchanged.

The prompt sets pi. Every word has a fixed K-vector; logits = sum of weight * vector over the
prompt's words (the negative prompt subtracts), pi = softmax(logits / T). The five shape words and
five colour words of the prototypes' names are "attribute words": their vectors favour exactly the
prototypes having that attribute, so "red circle" really pins toward the red-circle prototype and
the "pin to tags" objective has a known answer. Every other word gets a pseudo-random vector
derived from SHA-256 of its text, stable across processes, platforms and library versions.

Prototype design: 5 shapes x 5 colours, arranged so that each shape and each colour names exactly
two prototypes and every (shape, colour) pair at most one. A shape or colour word alone therefore
narrows the batch to two prototypes; both together to one. The prototypes are drawn in lib_pinning.toy_prototypes.

Calibration (ToyConfig defaults; the sampling numbers come from 20-step Karras, Euler ancestral,
200 trajectories, the loop in tests/test_toy.py):

* Scales: T = 1, attribute strength A = 1.5, random word std 0.45 (all in logit units; T only
  rescales them). At weight 1, "red circle" gives the red circle pi = 0.56 and its two
  half-matches (red ring, green circle) 0.12 each: a batch of 8 still mixes 3-4 prototypes.
  Ordinary prompts carry filler words whose random vectors spread pi further: "a photo of a red
  circle, detailed" has max pi 0.26 and 6.6 effective prototypes (exp of the entropy), four random
  filler words alone about 7.6. Raising an attribute word concentrates pi ("red (circle:1.4)" puts
  0.80 on the two circles against 0.68), and weight 2 on both attribute words with 0 on the rest
  gives pi(red circle) = 0.90: the optimum is reachable within weights 0..2. A filler word (std
  0.45 per entry) is under a third of an attribute word's 1.5-point lead: enough to matter, and
  what pinning has to turn down, never enough to drown an attribute on its own.
* Noise: s = 0.1 per pixel in [-1, 1] units (the within-prototype variety; 20 Euler ancestral steps
  end at 0.07, as coarse ancestral steps under-disperse: see the tests). The prototypes are 48 to
  143 apart in L2 over 12,288 dimensions, and the component is chosen while sigma falls through
  that range, so sigma_max = 160 (2.5 x the side in pixels: distances grow with the side) and
  sigma_min = 0.02 (well below s, as SD's 0.03 is well below its latents' spread). Along 20 Karras
  steps (rho 7), for "a photo of a red circle, detailed", the mean responsibility entropy is 1.83
  nats at step 0, 0.82 at step 6, 0.17 at step 8 and 0.00 from step 10; copies split from one
  trajectory land on different prototypes 81% of the time when split at step 2, 65% at step 4,
  31% at step 6, 4% at step 8 and never from step 9. At cfg 1.5 the same, slightly earlier (0.73
  nats at step 6).
* Guidance sharpens the frequencies, roughly to pi^cfg normalised ("red circle": 0.58 of the samples
  at cfg 1, 0.74 at 1.5, 0.84 at 2, 0.92 at 3, 0.99 at 7), as the exact mixture denoiser
  extrapolates past the favoured prototypes. The scales above are calibrated for cfg 1 to 2; at
  the WebUI's usual 7 most prompts collapse to one prototype and leave pinning nothing to do.

Cost: one call on 8 rows takes about 0.5 ms on one CPU thread (20 steps: ~10 ms per batch).

Failure modes: past an effective emphasis weight the images fry and, further on, come out NaN, as on
a real checkpoint (`ToyConfig.failure_modes`, on by default); the thresholds and why are in
lib_pinning.toy_failures.

Model rows: `ToyModel.rows_evaluated` counts one row per image per call, whatever the cfg. The
WebUI evaluates cond and uncond of a step in one batched UNet call, so with cfg it costs two UNet
rows per counted row; that factor is the same for every sampler, so comparisons between a plain and a
hyperbatch sampler are unaffected.
"""

from __future__ import annotations

import math
import threading
from dataclasses import asdict, dataclass
from functools import lru_cache
from typing import Any, NamedTuple, Sequence

import torch

from lib_pinning.prompt import parse_prompt_attention
from lib_pinning.toy_failures import FailureModes
from lib_pinning.toy_prototypes import ATTRIBUTE_WORDS, NUM_PROTOTYPES, PROTOTYPES, prototype_stack
from lib_pinning.toy_words import hashed_normal, words_of

# sigma_max per pixel of image side (see ToyConfig.sigma_max).
SIGMA_MAX_PER_PIXEL = 2.5

# Sigma values whose denoiser terms a model keeps (`ToyModel._sigma_terms`): a schedule's steps at
# each row count a hyperbatch passes through, several schedules over.
_SIGMA_CACHE_SIZE = 512


class SigmaTerms(NamedTuple):
    """A call's terms that depend on sigma alone (`ToyModel._sigma_terms`).

    two_variance: 2 (s^2 + sigma^2), float64 [n, 1]; shrink: s^2 / (s^2 + sigma^2), x's dtype
    [n, 1]; variance: s^2 + sigma^2 as a float when every row has the same sigma (a sampler's
    step), else None.
    """

    two_variance: torch.Tensor
    shrink: torch.Tensor
    variance: float | None


@dataclass(frozen=True)
class ToyConfig:
    """The toy model's numbers (module docstring: why these values).

    component_std: s, the standard deviation of each mixture component in [-1, 1] pixel units.
    sigma_min, sigma_max: the noise range a sampler should use (Karras schedule ends); sigma_max
        defaults to 2.5 x image_size (160 at 64 px), which keeps the decision timing the same at
        any resolution.
    temperature: T in pi = softmax(logits / T).
    word_std: standard deviation of the pseudo-random vector of a non-attribute word.
    attribute_strength: A; an attribute word's vector is A on the prototypes having the attribute,
        0 elsewhere, minus its mean.
    image_size: prototype side in pixels (drawn procedurally, so any size works).
    failure_modes: over-emphasis frying and the NaN region (`FailureModes`, lib_pinning.toy_failures);
        off gives the clean mixture, whose every sample is a clean prototype image.
    fry_onset, fry_full: effective emphasis weights at which frying starts and is complete.
    nan_onset, nan_full: effective weights at which the first image of a batch, and every image,
        comes out of the sampler as NaN.
    inert_words: lowercase words whose vector is zero: words the mixture ignores, whatever their
        weight (they still count for the failure modes' effective weight). None by default; the
        influence benchmark needs words whose true effect on pi is exactly nothing.
    """

    component_std: float = 0.1
    sigma_min: float = 0.02
    sigma_max: float | None = None
    temperature: float = 1.0
    word_std: float = 0.45
    attribute_strength: float = 1.5
    image_size: int = 64
    failure_modes: bool = True
    fry_onset: float = 1.5
    fry_full: float = 2.3
    nan_onset: float = 3.0
    nan_full: float = 3.5
    inert_words: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        # A JSON round trip (run.json's model description) gives a list; the config stays hashable.
        object.__setattr__(self, "inert_words", tuple(str(w).lower() for w in self.inert_words))
        if self.sigma_max is None:
            # Prototype distances grow linearly with the side (sqrt of the pixel count), so the
            # noise level at which the component gets decided does too: 160 at 64 px.
            object.__setattr__(self, "sigma_max", SIGMA_MAX_PER_PIXEL * self.image_size)
        if self.image_size < 8:
            raise ValueError("image_size must be at least 8")
        if self.component_std <= 0:
            raise ValueError("component_std must be > 0")
        if not 0 < self.sigma_min < self.sigma_max:
            raise ValueError("need 0 < sigma_min < sigma_max")
        if self.temperature <= 0:
            raise ValueError("temperature must be > 0")
        if not 0 < self.fry_onset < self.fry_full <= self.nan_onset < self.nan_full:
            raise ValueError("need 0 < fry_onset < fry_full <= nan_onset < nan_full")

    def to_json(self) -> dict[str, Any]:
        """The fields with sigma_max resolved: `ToyConfig(**config.to_json()) == config`."""
        return asdict(self)


def to_images(x: torch.Tensor) -> torch.Tensor:
    """Data space [-1, 1] -> float32 images in [0, 1] on the CPU (the Batch convention).

    NaN decodes to black, as in the WebUI with --disable-nan-check (NaN survives the clamp and
    becomes 0 when cast to 8 bits); infinities clamp to the nearest end.
    """
    x = torch.nan_to_num(x.detach().float().cpu(), nan=-1.0)
    return ((x + 1.0) / 2.0).clamp_(0.0, 1.0)


class ToyModel:
    """The toy diffusion model, callable in the k-diffusion convention.

    `model(x, sigma, cond=..., uncond=..., cond_scale=...)` returns the denoised estimate of x:
    x [n, 3, H, W], sigma [n] (or a scalar), cond / uncond [n, K] log mixture weights (any additive
    constant per row; `mixture_log_weights` makes them). uncond defaults to uniform weights, the
    unconditional model. Per-row tensors let hyperbatch samplers grow the batch by indexing the rows
    of every batch-sized extra argument.
    """

    def __init__(self, config: ToyConfig | None = None) -> None:
        self.config = config or ToyConfig()
        self.sigma_min = self.config.sigma_min
        self.sigma_max = self.config.sigma_max
        self.component_std = self.config.component_std
        self._prototypes = prototype_stack(self.config.image_size)
        self._proto_cache: dict[tuple[torch.dtype, torch.device], torch.Tensor] = {}
        self._mu64_cache: dict[torch.device, tuple[torch.Tensor, torch.Tensor]] = {}
        self._log_weights_cache: tuple[tuple[Any, ...], torch.Tensor] | None = None
        self._sigma_cache: dict[tuple[Any, ...], SigmaTerms] = {}
        self._local = threading.local()
        attr = torch.zeros(NUM_PROTOTYPES, len(ATTRIBUTE_WORDS), dtype=torch.float64)
        for k, proto in enumerate(PROTOTYPES):
            for word in proto.attributes:
                attr[k, ATTRIBUTE_WORDS.index(word)] = 1.0
        self.attribute_matrix = attr
        self.rows_evaluated = 0
        self.calls = 0

    # ---- prototypes -------------------------------------------------------------------------

    @property
    def num_prototypes(self) -> int:
        return NUM_PROTOTYPES

    @property
    def prototype_names(self) -> tuple[str, ...]:
        return tuple(p.name for p in PROTOTYPES)

    @property
    def prototypes(self) -> torch.Tensor:
        """float64 [K, 3, H, W] in [-1, 1] (the component means mu_k); shared, do not modify."""
        return self._prototypes

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return (3, self.config.image_size, self.config.image_size)

    def _mu64(self, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """float64 flattened prototypes [K, d] and their squared norms [K] on `device`, cached."""
        cached = self._mu64_cache.get(device)
        if cached is None:
            mu = self._prototypes.reshape(NUM_PROTOTYPES, -1).to(device=device)
            cached = (mu, mu.square().sum(dim=1))
            self._mu64_cache[device] = cached
        return cached

    def _mu(self, like: torch.Tensor) -> torch.Tensor:
        """Flattened prototypes in `like`'s dtype and device, cached per (dtype, device)."""
        key = (like.dtype, like.device)
        mu = self._proto_cache.get(key)
        if mu is None:
            mu = self._prototypes.reshape(NUM_PROTOTYPES, -1).to(dtype=like.dtype, device=like.device)
            self._proto_cache[key] = mu
        return mu

    # ---- prompt -> mixture weights -------------------------------------------------------------

    def word_vector(self, word: str) -> torch.Tensor:
        """The K-vector of one lowercase word (float64)."""
        if word in self.config.inert_words:
            return torch.zeros(NUM_PROTOTYPES, dtype=torch.float64)
        return _word_vector(word, self.config.word_std, self.config.attribute_strength).clone()

    def prompt_logits(self, prompt: str, negative_prompt: str = "") -> torch.Tensor:
        """float64 [K]: sum of weight * word vector over the prompt minus over the negative prompt.

        The negative prompt subtracts here instead of driving the uncond branch so that it acts at
        cfg 1 as well; the unconditional model stays the uniform mixture.
        """
        logits = torch.zeros(NUM_PROTOTYPES, dtype=torch.float64)
        for sign, text in ((1.0, prompt), (-1.0, negative_prompt)):
            if not text:
                continue
            for piece, weight in parse_prompt_attention(text):
                if piece == "BREAK" and weight == -1:
                    continue
                for word in words_of(piece):
                    logits += sign * float(weight) * self.word_vector(word)
        return logits

    def mixture_log_weights(self, prompt: str, negative_prompt: str = "") -> torch.Tensor:
        """float64 [K]: log pi = log_softmax(logits / T); the `cond` row for this prompt."""
        logits = self.prompt_logits(prompt, negative_prompt)
        return torch.log_softmax(logits / self.config.temperature, dim=0)

    def mixture_weights(self, prompt: str, negative_prompt: str = "") -> torch.Tensor:
        """float64 [K]: pi, the probability of each prototype under the prompt (at cfg 1)."""
        return self.mixture_log_weights(prompt, negative_prompt).exp()

    def failure_modes(self, prompt: str, negative_prompt: str = "") -> FailureModes:
        """How this prompt pair fails (frying, NaN) under this model's config; see FailureModes."""
        return FailureModes.of(self.config, prompt, negative_prompt)

    def uniform_log_weights(self) -> torch.Tensor:
        """float64 [K]: the unconditional model's log weights (uniform)."""
        return torch.full((NUM_PROTOTYPES,), -math.log(NUM_PROTOTYPES), dtype=torch.float64)

    def extra_args(
        self,
        prompts: Sequence[str],
        negative_prompts: Sequence[str] | str = "",
        cond_scale: float = 1.0,
        dtype: torch.dtype = torch.float32,
    ) -> dict[str, Any]:
        """The sampler's extra_args for one image per prompt: cond and uncond rows, cond_scale."""
        if isinstance(negative_prompts, str):
            negative_prompts = [negative_prompts] * len(prompts)
        if len(negative_prompts) != len(prompts):
            raise ValueError("need one negative prompt per prompt")
        # A batch usually repeats one prompt pair: parse and weigh each distinct pair once.
        weights = {pair: self.mixture_log_weights(*pair) for pair in dict.fromkeys(zip(prompts, negative_prompts))}
        cond = torch.stack([weights[pair] for pair in zip(prompts, negative_prompts)])
        uncond = self.uniform_log_weights().expand(len(prompts), -1)
        return {
            "cond": cond.to(dtype),
            "uncond": uncond.to(dtype).contiguous(),
            "cond_scale": float(cond_scale),
        }

    # ---- the denoiser ----------------------------------------------------------------------------

    def _sq_distances(self, x: torch.Tensor, beta: float = 1.0, alpha: float = -2.0) -> torch.Tensor:
        """float64 [n, K] squared L2 distances to the prototypes, less |x|^2: |mu_k|^2 - 2 x.mu_k
        (or beta |mu_k|^2 + alpha x.mu_k: a scale folded into the product).

        A term shared by all components of a row changes none of their responsibilities (softmax
        over k) nor the nearest prototype (argmin over k), so |x|^2 is never computed: two ops a
        call instead of six, and no cancellation (|x|^2 ~ 6,000 against distance gaps ~1 as sigma ->
        0, where float32, or cdist, would leave errors of ~0.04, several units of log-odds). The
        product is in float64 (a matrix product, several times faster than explicit differences).
        """
        n = x.shape[0]
        flat = self._scratch(torch.float64, x.device, n, x[0].numel())
        flat.copy_(x.reshape(n, -1))
        mu, mu_sq = self._mu64(flat.device)
        return torch.addmm(mu_sq, flat, mu.T, beta=beta, alpha=alpha)

    def _scratch(self, dtype: torch.dtype, device: torch.device, rows: int, width: int) -> torch.Tensor:
        """Rows 0..rows-1 of this thread's scratch buffer ([>= rows, width], grown as needed).

        The float64 copy of x is the call's largest temporary (96 KB a row on the toy): a fresh
        one costs page faults at every call, and a hyperbatch, whose row count changes, gets fewer
        reused blocks from the allocator than a plain batch. The copy is written into a kept
        buffer instead: the same values. One buffer per thread, as the generator may serve
        several threads.
        """
        buffers = getattr(self._local, "buffers", None)
        if buffers is None:
            buffers = self._local.buffers = {}
        key = (dtype, device, width)
        buffer = buffers.get(key)
        if buffer is None or buffer.shape[0] < rows:
            buffer = buffers[key] = torch.empty((rows, width), dtype=dtype, device=device)
        return buffer[:rows]

    def _rows(self, name: str, value: torch.Tensor, n: int, device: torch.device) -> torch.Tensor:
        """float64 [n, K] log weights from an [n, K] or [1, K] tensor."""
        value = torch.as_tensor(value)
        if value.ndim != 2 or value.shape[1] != NUM_PROTOTYPES or value.shape[0] not in (1, n):
            raise ValueError(
                f"{name} must be [n, {NUM_PROTOTYPES}] log weights with n = {n} (or 1), "
                f"got {tuple(value.shape)}"
            )
        return value.to(dtype=torch.float64, device=device).expand(n, -1)

    def _log_weights(
        self, cond: torch.Tensor, uncond: torch.Tensor | None, guided: bool, n: int, device: torch.device
    ) -> torch.Tensor:
        """float64 [1, n, K] (cond) or [2, n, K] (cond, uncond) log weights, cached.

        A sampler passes the same cond and uncond tensors at every step (a hyperbatch the same
        ones until its next split), so their float64 form is kept for as long as the caller's
        tensors are the same objects, unmodified (`_version`): the conversion and stacking cost
        as much as the rest of a one-row call.
        """
        key = (cond, getattr(cond, "_version", None), uncond, getattr(uncond, "_version", None), guided, n, device)
        cached = self._log_weights_cache
        # Tensors by identity (the cache holds them, so an id is never reused), the rest by value.
        if cached is not None and all(
            a is b or (not isinstance(a, torch.Tensor) and a == b) for a, b in zip(cached[0], key)
        ):
            return cached[1]
        rows = [self._rows("cond", cond, n, device)]
        if guided:
            if uncond is None:
                uncond = self.uniform_log_weights().unsqueeze(0)
            rows.append(self._rows("uncond", uncond, n, device))
        value = torch.stack(rows)
        if all(isinstance(v, torch.Tensor) for v in (cond, uncond) if v is not None):
            self._log_weights_cache = (key, value)
        return value

    def _variance(self, sigma: torch.Tensor | float, x: torch.Tensor) -> torch.Tensor:
        """float64 [n]: s^2 + sigma^2, the variance of x around each component's mean."""
        sigma = torch.as_tensor(sigma).to(dtype=torch.float64, device=x.device)
        if sigma.ndim == 0:
            sigma = sigma.expand(x.shape[0])
        if sigma.shape != (x.shape[0],):
            raise ValueError(
                f"sigma must be a scalar or [n] = [{x.shape[0]}], got {tuple(sigma.shape)}"
            )
        return self.component_std**2 + sigma.square()

    def _sigma_terms(self, sigma: torch.Tensor | float, x: torch.Tensor) -> SigmaTerms:
        """The per-sigma terms of a call (`SigmaTerms`), kept per sigma value: a sampler calls the
        model at each step's sigma on a fresh tensor, and these ~9 ops on n values are a third of
        a one-row call's fixed cost. Computed on a miss with the very ops the formula uses."""
        if isinstance(sigma, torch.Tensor):
            key: tuple[Any, ...] = (sigma.dtype, tuple(sigma.shape), tuple(sigma.reshape(-1).tolist()))
        else:
            key = (type(sigma), sigma)
        key += (x.shape[0], x.dtype, x.device)
        terms = self._sigma_cache.get(key)
        if terms is None:
            variance = self._variance(sigma, x)
            shared = float(variance[0]) if bool((variance == variance[0]).all()) else None
            terms = SigmaTerms(
                2.0 * variance[:, None], (self.component_std**2 / variance).to(x.dtype).view(x.shape[0], 1), shared
            )
            if len(self._sigma_cache) >= _SIGMA_CACHE_SIZE:
                self._sigma_cache.pop(next(iter(self._sigma_cache)))
            self._sigma_cache[key] = terms
        return terms

    def _responsibilities(self, x: torch.Tensor, terms: SigmaTerms, log_w: torch.Tensor) -> torch.Tensor:
        """float64 [..., n, K]: softmax over k of log_w - |x - mu_k|^2 / (2 v).

        log N(x; mu_k, v I) up to terms shared by all components (|x|^2 and (d/2) log 2 pi v),
        which the softmax removes; no exp() of a large number anywhere, so every sigma is safe.
        log_w may carry a leading branch dimension (cond, uncond): one softmax serves both. With
        one v for every row (a sampler's step) the scale 1 / (2 v) is folded into the distance
        product (addmm's alpha and beta): one op where a division and a subtraction were.
        """
        if terms.variance is None:
            return torch.softmax(log_w - self._sq_distances(x) / terms.two_variance, dim=-1)
        v = terms.variance
        # -(|mu_k|^2 - 2 x.mu_k) / (2 v) = x.mu_k / v - |mu_k|^2 / (2 v)
        return torch.softmax(log_w + self._sq_distances(x, beta=-0.5 / v, alpha=1.0 / v), dim=-1)

    def responsibilities(
        self, x: torch.Tensor, sigma: torch.Tensor | float, log_weights: torch.Tensor
    ) -> torch.Tensor:
        """float64 [n, K]: p(component k | x, sigma) with prior weights exp(log_weights) ([n|1, K])."""
        log_w = self._rows("log_weights", log_weights, x.shape[0], x.device)
        return self._responsibilities(x, self._sigma_terms(sigma, x), log_w)

    @staticmethod
    def _guidance(cond_scale: float | torch.Tensor, n: int, device: torch.device) -> float | torch.Tensor | None:
        """None for exactly 1 (no uncond pass), else a float or a float64 [n, 1] per-row scale.

        A float or a 0-d tensor becomes a Python float: multiplying float64 by it rounds exactly
        as by a 0-d float64 tensor, without a conversion op per call.
        """
        if isinstance(cond_scale, torch.Tensor) and cond_scale.ndim:
            if cond_scale.shape != (n,):
                raise ValueError(f"cond_scale must be a float or [n] = [{n}], got {tuple(cond_scale.shape)}")
            return cond_scale.to(dtype=torch.float64, device=device).view(n, 1)
        scale = float(cond_scale)
        return None if scale == 1.0 else scale

    def __call__(
        self,
        x: torch.Tensor,
        sigma: torch.Tensor | float,
        cond: torch.Tensor,
        uncond: torch.Tensor | None = None,
        cond_scale: float | torch.Tensor = 1.0,
        **_unused: Any,
    ) -> torch.Tensor:
        """Denoised x (same dtype): D_uncond + cond_scale * (D_cond - D_uncond), exact for the mixture.

        cond / uncond: [n, K] (or [1, K]) log mixture weights; uncond None means uniform.
        cond_scale: a float, or a tensor [n] for per-row guidance; exactly 1 skips the uncond pass.
        Other extra_args a WebUI-style caller passes (image_cond, s_min_uncond) mean nothing to a
        pixel-space model and are accepted and ignored.

        The call's fixed cost (a hyperbatch pays it as often as a plain batch, on fewer rows) is
        kept to the ops the formula needs: both branches' responsibilities in one softmax, the
        guidance in one lerp, the shrink inside the mixing product, the log weights' float64 form
        cached, checks on shapes only.
        """
        if x.ndim != 4 or tuple(x.shape[1:]) != self.image_shape:
            raise ValueError(f"x must be [n, *{self.image_shape}], got {tuple(x.shape)}")
        n = x.shape[0]
        scale = self._guidance(cond_scale, n, x.device)
        terms = self._sigma_terms(sigma, x)
        log_w = self._log_weights(cond, uncond, scale is not None, n, x.device)
        self.calls += 1
        self.rows_evaluated += n
        resp = self._responsibilities(x, terms, log_w)
        # Each component's denoised mean is the same in both branches, so mixing the two
        # denoisers is mixing their responsibilities: one matrix product serves both.
        weights = (resp[0] if scale is None else torch.lerp(resp[1], resp[0], scale)).to(x.dtype)
        flat = x.reshape(n, -1)
        # sum_k w_k (mu_k + shrink (x - mu_k)) = shrink x + (1 - shrink) mixed, as sum_k w_k = 1
        # (also under guidance: both branches' weights sum to 1). With one sigma for every row
        # the shrink is a number, which the mixing product adds in (addmm's beta and alpha).
        if terms.variance is not None:
            shrink = self.component_std**2 / terms.variance
            return torch.addmm(flat, weights, self._mu(flat), beta=shrink, alpha=1.0 - shrink).view_as(x)
        return torch.lerp(weights @ self._mu(flat), flat, terms.shrink).view_as(x)

    def reset_counters(self) -> None:
        """Zero `rows_evaluated` (image rows denoised, one per image per call) and `calls`."""
        self.rows_evaluated = 0
        self.calls = 0

    # ---- images -------------------------------------------------------------------------------------

    def nearest_prototype(self, images: torch.Tensor) -> torch.Tensor:
        """int64 [B]: index of the prototype closest in L2 to each image ([B, 3, H, W] in [0, 1])."""
        x = _images_to_data(images, self.config.image_size)
        return self._sq_distances(x).argmin(dim=1)


@lru_cache(maxsize=4096)
def _word_vector(word: str, word_std: float, strength: float) -> torch.Tensor:
    if word in ATTRIBUTE_WORDS:
        member = torch.tensor(
            [1.0 if word in p.attributes else 0.0 for p in PROTOTYPES], dtype=torch.float64
        )
        # Centred, so an attribute word shifts probability between prototypes without also
        # shifting the logits' overall level (softmax ignores that level anyway).
        return strength * (member - member.mean())
    return word_std * hashed_normal(word, NUM_PROTOTYPES)


def _images_to_data(images: torch.Tensor, size: int) -> torch.Tensor:
    """[B, 3, H, W] images in [0, 1] -> data space [-1, 1] at the model's resolution."""
    if images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"images must be [B, 3, H, W], got {tuple(images.shape)}")
    images = images.detach().to(torch.float64).cpu()
    if images.shape[-2:] != (size, size):
        images = torch.nn.functional.interpolate(images, size=(size, size), mode="area")
    return images * 2.0 - 1.0
