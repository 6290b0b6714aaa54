"""The toy diffusion model: prototypes, prompt -> mixture weights, the exact denoiser, tiny CLIP.

Sampling checks use their own Euler ancestral loop (below), independent of pinning_samplers/, so a bug in
the model cannot hide behind a matching bug in a production sampler.
"""

from __future__ import annotations

import json
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from lib_pinning.toy import ToyConfig, ToyModel, to_images
from lib_pinning.toy_clip import ToyClip
from lib_pinning.toy_prototypes import ATTRIBUTE_WORDS, COLOURS, NUM_PROTOTYPES, PROTOTYPES, draw_prototype
from lib_pinning.toy_words import hashed_normal, words_of
from pinning_samplers.schedules import get_sigmas_karras

# chi-square critical value for 9 degrees of freedom (K - 1) at p = 0.001 (scipy.stats.chi2.ppf).
CHI2_9DF_P001 = 27.877


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    """These tensors are small (a few MB): intra-op threads only add hand-off cost, and on a busy
    2-core machine (pytest -n 2) their spinning made this module 5x slower (42 s against 8 s)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def model() -> ToyModel:
    return ToyModel()


def one_hot_log_weights(k: int, n: int = 1) -> torch.Tensor:
    row = torch.full((NUM_PROTOTYPES,), -math.inf, dtype=torch.float64)
    row[k] = 0.0
    return row.expand(n, -1)


def euler_ancestral(model, x, sigmas, extra_args, generator, start=0, stop=None, trace=None):
    """k-diffusion's sample_euler_ancestral (eta 1) from step `start` to `stop`; trace gets x per step."""
    stop = len(sigmas) - 1 if stop is None else stop
    for i in range(start, stop):
        sigma, sigma_next = float(sigmas[i]), float(sigmas[i + 1])
        if trace is not None:
            trace.append((i, sigma, x))
        denoised = model(x, torch.full((x.shape[0],), sigma, dtype=x.dtype), **extra_args)
        sigma_up = min(sigma_next, math.sqrt(sigma_next**2 * (sigma**2 - sigma_next**2) / sigma**2))
        sigma_down = math.sqrt(sigma_next**2 - sigma_up**2)
        x = x + (x - denoised) / sigma * (sigma_down - sigma)
        if sigma_next > 0:
            x = x + torch.randn(x.shape, generator=generator, dtype=x.dtype) * sigma_up
    return x


def sample(model, prompt, n, steps, seed, cond_scale=1.0):
    sigmas = get_sigmas_karras(steps, model.sigma_min, model.sigma_max).double()
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn((n, *model.image_shape), generator=generator) * float(sigmas[0])
    extra_args = model.extra_args([prompt] * n, cond_scale=cond_scale)
    return euler_ancestral(model, x, sigmas, extra_args, generator)


# ---- prototypes ------------------------------------------------------------------------------------


def test_prototypes_are_deterministic_distinct_and_named_by_their_attributes(model):
    protos = model.prototypes
    assert protos.shape == (NUM_PROTOTYPES, 3, 64, 64) and protos.dtype == torch.float64
    assert 8 <= NUM_PROTOTYPES <= 12
    assert float(protos.min()) >= -1.0 and float(protos.max()) <= 1.0
    assert torch.equal(draw_prototype(3), protos[3])
    # A checksum pins the drawing: the calibration numbers in lib_pinning/toy.py depend on it.
    assert float(protos.sum()) == pytest.approx(-12268.754342430078, abs=1e-6)
    flat = protos.reshape(NUM_PROTOTYPES, -1)
    distances = torch.cdist(flat, flat) + torch.eye(NUM_PROTOTYPES) * 1e9
    assert float(distances.min()) > 40.0  # ~ 0.4 RMS per pixel: visibly different images

    names = model.prototype_names
    assert len(set(names)) == NUM_PROTOTYPES
    for word in ATTRIBUTE_WORDS:
        assert sum(word in name.split() for name in names) == 2, word
    # Each prototype shows its colour: a sizeable share of pixels within 0.1 of the named colour.
    for k, proto in enumerate(PROTOTYPES):
        colour = torch.tensor(COLOURS[proto.colour], dtype=torch.float64).view(3, 1, 1) * 2 - 1
        share = float(((protos[k] - colour).abs().amax(dim=0) < 0.1).double().mean())
        assert 0.05 < share < 0.5, (proto.name, share)


def test_nearest_prototype_and_to_images(model):
    images = to_images(model.prototypes)
    assert images.dtype == torch.float32 and float(images.min()) >= 0 and float(images.max()) <= 1
    assert torch.equal(model.nearest_prototype(images), torch.arange(NUM_PROTOTYPES))
    noisy = (images + 0.05 * torch.randn(images.shape, generator=torch.Generator().manual_seed(0))).clamp(0, 1)
    assert torch.equal(model.nearest_prototype(noisy), torch.arange(NUM_PROTOTYPES))
    big = torch.nn.functional.interpolate(images, scale_factor=2, mode="nearest")
    assert torch.equal(model.nearest_prototype(big), torch.arange(NUM_PROTOTYPES))


# ---- words and prompts -----------------------------------------------------------------------------


def test_word_vectors_are_fixed_across_processes_and_versions(model):
    # Values from SHA-256 + Box-Muller: a salted hash() or a changed RNG stream would break these.
    assert model.word_vector("photo")[:3].tolist() == pytest.approx(
        [0.06868129912909254, -0.6473802991294848, 0.5107922638552204], abs=1e-12
    )
    assert model.word_vector("cat")[:3].tolist() == pytest.approx(
        [0.3833095129858251, -0.639540056841856, 0.047714239620707324], abs=1e-12
    )
    red = model.word_vector("red")
    members = [k for k, p in enumerate(PROTOTYPES) if p.colour == "red"]
    expected = torch.full((NUM_PROTOTYPES,), -0.3, dtype=torch.float64)
    expected[members] = 1.2  # A = 1.5 on the two red prototypes, minus the mean 1.5 * 2 / 10
    torch.testing.assert_close(red, expected)
    draws = torch.cat([hashed_normal(f"word{i}", 10) for i in range(1000)])
    assert abs(float(draws.mean())) < 0.05 and abs(float(draws.std()) - 1.0) < 0.03


def test_words_of_splits_like_the_toy_reads_prompts():
    assert words_of("A RED_circle, (blue:1.2)!") == ["a", "red", "circle", "blue", "1", "2"]


def test_attribute_words_shift_pi_as_designed(model):
    names = model.prototype_names
    rc, gc, rr = names.index("red circle"), names.index("green circle"), names.index("red ring")

    pi = model.mixture_weights("circle")
    assert pi[rc] == pytest.approx(float(pi[gc])) and set(pi.argsort()[-2:].tolist()) == {rc, gc}

    base = model.mixture_weights("red circle")
    assert int(base.argmax()) == rc and 0.4 < float(base[rc]) < 0.7
    emphasised = model.mixture_weights("red (circle:1.4)")
    assert float(emphasised[rc] + emphasised[gc]) > float(base[rc] + base[gc]) + 0.08
    assert float(model.mixture_weights("(red:2) (circle:2)")[rc]) > 0.85  # reachable in weights 0..2

    ordinary = model.mixture_weights("a photo of a red circle, detailed")
    effective = math.exp(float(-(ordinary * ordinary.log()).sum()))
    assert effective > 4.0, "an ordinary prompt must leave variety for pinning to remove"

    # The negative prompt subtracts; weight 0 and BREAK remove words.
    torch.testing.assert_close(model.prompt_logits("red circle", "red"), model.prompt_logits("circle"))
    assert float(model.mixture_weights("red circle", "red")[rr]) < float(base[rr])
    torch.testing.assert_close(model.prompt_logits("(photo:0) red"), model.prompt_logits("red"))
    torch.testing.assert_close(model.prompt_logits("red BREAK circle"), model.prompt_logits("red circle"))
    torch.testing.assert_close(model.prompt_logits("(cat:1.5)"), 1.5 * model.word_vector("cat"))

    hot = ToyModel(ToyConfig(temperature=2.0))
    logits = model.prompt_logits("red circle")
    torch.testing.assert_close(hot.mixture_log_weights("red circle"), torch.log_softmax(logits / 2.0, 0))


# ---- the denoiser ----------------------------------------------------------------------------------


def brute_force_denoiser(mu, s, x, sigma, pi):
    """E[x0 | x, sigma] for the mixture, from the definition, in float64 with explicit densities."""
    x = x.double().reshape(x.shape[0], -1)
    mu = mu.double().reshape(mu.shape[0], -1)
    out = []
    for row, sig in zip(x, sigma.double()):
        v = s**2 + sig**2
        diff = row[None] - mu
        log_density = -0.5 * diff.shape[1] * torch.log(2 * math.pi * v) - diff.square().sum(1) / (2 * v)
        r = torch.softmax(pi.log() + log_density, 0)
        means = mu + (s**2 / v) * (row[None] - mu)
        out.append((r[:, None] * means).sum(0))
    return torch.stack(out)


@pytest.mark.parametrize(
    "sigma_values",
    [
        (0.0, 0.05, 3.0, 8.0, 20.0, 160.0),  # one sigma per row: the denoiser's general path
        (0.05,) * 6,  # one sigma for every row (a sampler's step): its folded-scale path
        (3.0,) * 6,
        (160.0,) * 6,
    ],
)
def test_denoiser_matches_brute_force_in_float64_and_float32(model, sigma_values):
    gen = torch.Generator().manual_seed(1)
    pi = torch.softmax(torch.randn(NUM_PROTOTYPES, generator=gen, dtype=torch.float64), 0)
    k = torch.tensor([0, 3, 5, 9, 2, 7])
    sigma = torch.tensor(sigma_values, dtype=torch.float64)
    x = model.prototypes[k] + (0.1**2 + sigma**2).sqrt().view(-1, 1, 1, 1) * torch.randn(
        (6, 3, 64, 64), generator=gen, dtype=torch.float64
    )
    expected = brute_force_denoiser(model.prototypes, 0.1, x, sigma, pi).view_as(x)
    cond = pi.log().expand(6, -1)
    torch.testing.assert_close(model(x, sigma, cond=cond), expected, rtol=0, atol=1e-9)
    got32 = model(x.float(), sigma.float(), cond=cond.float())
    assert got32.dtype == torch.float32
    torch.testing.assert_close(got32.double(), expected, rtol=0, atol=2e-4)


def test_single_component_is_the_prototype_plus_shrunk_residual(model):
    gen = torch.Generator().manual_seed(2)
    x = torch.randn((4, 3, 64, 64), generator=gen, dtype=torch.float64) * 5
    sigma = torch.tensor([0.0, 0.1, 1.0, 50.0], dtype=torch.float64)
    for k in (0, 6):
        got = model(x, sigma, cond=one_hot_log_weights(k, 4))
        shrink = (0.01 / (0.01 + sigma**2)).view(-1, 1, 1, 1)
        mu = model.prototypes[k]
        torch.testing.assert_close(got, mu + shrink * (x - mu), rtol=0, atol=1e-12)
        # On the prototype itself the denoiser returns it exactly at every noise level.
        on = model(model.prototypes[k].expand(4, -1, -1, -1), sigma, cond=one_hot_log_weights(k, 4))
        torch.testing.assert_close(on, model.prototypes[k].expand(4, -1, -1, -1), rtol=0, atol=1e-12)


def euler_ancestral_variance(sigmas, s: float) -> float:
    """Per-pixel variance of x - mu_k after euler_ancestral on a single component N(mu_k, s^2 I).

    Every step is linear in y = x - mu_k: the denoiser gives mu_k + c y with c = s^2 / (s^2 +
    sigma^2), so y <- a y + sigma_up * noise with a = 1 + (1 - c)(sigma_down - sigma) / sigma, and the
    variance follows exactly. (With few steps it ends below s^2: ancestral sampling under-disperses.)
    """
    var = float(sigmas[0]) ** 2
    for sigma, sigma_next in zip(sigmas[:-1].tolist(), sigmas[1:].tolist()):
        up2 = min(sigma_next**2, sigma_next**2 * (sigma**2 - sigma_next**2) / sigma**2)
        down = math.sqrt(sigma_next**2 - up2)
        a = 1 + (1 - s**2 / (s**2 + sigma**2)) * (down - sigma) / sigma
        var = a * a * var + up2
    return var


@pytest.mark.parametrize("steps", [20, 60])
def test_one_hot_sampling_ends_on_the_prototype_with_the_component_noise(model, steps):
    k = 4
    sigmas = get_sigmas_karras(steps, model.sigma_min, model.sigma_max).double()
    gen = torch.Generator().manual_seed(3)
    x = torch.randn((4, *model.image_shape), generator=gen) * float(sigmas[0])
    out = euler_ancestral(model, x, sigmas, {"cond": one_hot_log_weights(k)}, gen)
    assert torch.equal(model.nearest_prototype(to_images(out)), torch.full((4,), k))
    per_image_std = (out - model.prototypes[k].float()).reshape(4, -1).std(dim=1)
    expected = euler_ancestral_variance(sigmas, model.component_std) ** 0.5
    # 12,288 pixels: the sample std has a relative spread of ~0.6%; 3% is 5 of those.
    assert torch.all((per_image_std / expected - 1).abs() < 0.03), (per_image_std, expected)
    # 0.070 at 20 steps, 0.088 at 60: towards s = 0.1 as the steps refine.
    assert expected == pytest.approx({20: 0.0704, 60: 0.0875}[steps], abs=2e-3)


@settings(max_examples=25, deadline=None, derandomize=True)
@given(
    log_sigma=st.floats(min_value=-8, max_value=8),
    offset_scale=st.floats(min_value=0.0, max_value=1e3),
    dtype=st.sampled_from([torch.float32, torch.float64]),
    logit_seed=st.integers(min_value=0, max_value=2**16),
)
def test_responsibilities_are_normalised_and_finite_at_every_sigma(log_sigma, offset_scale, dtype, logit_seed):
    model = ToyModel()
    sigma = 10.0**log_sigma
    gen = torch.Generator().manual_seed(logit_seed)
    logits = torch.randn((3, NUM_PROTOTYPES), generator=gen, dtype=torch.float64) * 3
    x = model.prototypes[[1, 4, 8]] + (0.01 + sigma**2) ** 0.5 * torch.randn(
        (3, 3, 64, 64), generator=gen, dtype=torch.float64
    )
    x = (x + offset_scale).to(dtype)  # also far outside the data range
    r = model.responsibilities(x, torch.full((3,), sigma, dtype=dtype), logits)
    assert torch.isfinite(r).all() and float(r.min()) >= 0
    torch.testing.assert_close(r.sum(1), torch.ones(3, dtype=torch.float64))
    if sigma > 1e6 and offset_scale < 1:  # no information in x: the posterior is the prior
        torch.testing.assert_close(r, torch.softmax(logits, 1), rtol=0, atol=1e-3)
    if sigma < 1e-3 and offset_scale == 0:  # the data point is its own component's
        assert r.argmax(1).tolist() == [1, 4, 8]
    out = model(x, torch.full((3,), sigma, dtype=dtype), cond=logits, cond_scale=7.0)
    assert out.dtype == dtype and torch.isfinite(out).all()


def test_cfg_is_uncond_plus_scale_times_difference(model):
    gen = torch.Generator().manual_seed(4)
    x = torch.randn((3, 3, 64, 64), generator=gen, dtype=torch.float64) * 12
    sigma = torch.tensor([12.0, 12.0, 12.0], dtype=torch.float64)
    cond = model.mixture_log_weights("red circle").expand(3, -1)
    uncond = model.mixture_log_weights("blue square").expand(3, -1)
    d_cond = model(x, sigma, cond=cond)
    d_uncond = model(x, sigma, cond=uncond)
    got = model(x, sigma, cond=cond, uncond=uncond, cond_scale=5.0)
    torch.testing.assert_close(got, d_uncond + 5.0 * (d_cond - d_uncond), rtol=0, atol=1e-9)
    # Default uncond is the uniform mixture; a per-row cond_scale tensor guides row by row.
    uniform = model.uniform_log_weights().expand(3, -1)
    torch.testing.assert_close(
        model(x, sigma, cond=cond, cond_scale=3.0), model(x, sigma, cond=cond, uncond=uniform, cond_scale=3.0)
    )
    scales = torch.tensor([1.0, 2.0, 7.0])
    rows = model(x, sigma, cond=cond, uncond=uncond, cond_scale=scales)
    for i, scale in enumerate(scales.tolist()):
        torch.testing.assert_close(rows[i], model(x, sigma, cond=cond, uncond=uncond, cond_scale=scale)[i])
    with pytest.raises(ValueError, match="cond_scale"):
        model(x, sigma, cond=cond, cond_scale=torch.ones(2))


def test_rows_are_independent_and_counted_once_per_image(model):
    """Hyperbatch samplers grow a batch by indexing rows of x, sigma and every extra_args tensor."""
    gen = torch.Generator().manual_seed(5)
    x = torch.randn((4, 3, 64, 64), generator=gen) * 20
    sigma = torch.tensor([20.0, 10.0, 5.0, 1.0])
    extra = model.extra_args(["red circle", "blue square", "cat", "ring"], "blurry", cond_scale=1.5)
    assert extra["cond"].shape == extra["uncond"].shape == (4, NUM_PROTOTYPES)
    full = model(x, sigma, **extra)
    index = torch.tensor([2, 2, 0, 3, 1])
    grown = {key: (value[index] if torch.is_tensor(value) else value) for key, value in extra.items()}
    torch.testing.assert_close(model(x[index], sigma[index], **grown), full[index])
    model.reset_counters()
    model(x, sigma, **extra)  # cfg 1.5: two branches, still one row per image
    model(x[:1], sigma[:1], cond=extra["cond"][:1], image_cond=None, s_min_uncond=0.0)
    assert (model.rows_evaluated, model.calls) == (5, 2)
    with pytest.raises(ValueError, match="cond"):
        model(x, sigma, cond=extra["cond"][:3])
    with pytest.raises(ValueError, match="sigma"):
        model(x, sigma[:2], cond=extra["cond"])


def test_cached_log_weights_follow_the_callers_tensors(model):
    """The denoiser keeps the float64 form of the last cond/uncond it saw (a sampler passes the same
    tensors at every step): another tensor, an in-place change, another cfg or row count must
    each give what a fresh model computes."""
    gen = torch.Generator().manual_seed(6)
    x = torch.randn((2, 3, 64, 64), generator=gen) * 8
    sigma = torch.tensor([8.0, 8.0])
    red = model.extra_args(["red circle"] * 2, cond_scale=1.5)
    blue = model.extra_args(["blue square"] * 2, cond_scale=1.5)

    def fresh(**args):
        return ToyModel()(x, sigma, **args)

    torch.testing.assert_close(model(x, sigma, **red), fresh(**red), rtol=0, atol=0)
    with pytest.raises(ValueError, match="cond"):  # checked again for another row count
        model(x[:1], sigma[:1], **red)
    unguided = {**blue, "cond_scale": 1.0}
    torch.testing.assert_close(model(x, sigma, **unguided), fresh(**unguided), rtol=0, atol=0)
    torch.testing.assert_close(model(x, sigma, **blue), fresh(**blue), rtol=0, atol=0)
    blue["cond"].copy_(red["cond"])  # the same tensor object, new values
    torch.testing.assert_close(model(x, sigma, **blue), fresh(**blue), rtol=0, atol=0)
    # One [1, K] row serves any row count.
    shared = {"cond": red["cond"][:1], "uncond": blue["uncond"][:1], "cond_scale": 1.5}
    torch.testing.assert_close(model(x[:1], sigma[:1], **shared), ToyModel()(x[:1], sigma[:1], **shared), rtol=0, atol=0)
    torch.testing.assert_close(model(x, sigma, **shared), ToyModel()(x, sigma, **shared), rtol=0, atol=0)


def test_cached_sigma_terms_follow_the_sigma_values_dtype_and_rows(model):
    """The denoiser keeps its per-sigma terms by value: every call must give what a fresh model
    computes, bit for bit, whatever sigmas, dtypes and row counts came before."""
    gen = torch.Generator().manual_seed(8)
    x = torch.randn((3, 3, 64, 64), generator=gen) * 5
    args = model.extra_args(["red circle"] * 3, cond_scale=1.5)
    calls = [
        (x, torch.full((3,), 5.0)),
        (x, torch.full((3,), 0.5)),
        (x, torch.tensor([5.0, 0.5, 2.0])),
        (x, torch.full((3,), 5.0, dtype=torch.float64)),
        (x * 10.7, 53.3),  # a float becomes float32 53.3, not the float64 53.3
        (x * 10.7, torch.tensor(53.3, dtype=torch.float64)),
        (x, torch.tensor(5.0)),
        (x[:2], torch.full((2,), 5.0)),
        (x.double(), torch.full((3,), 5.0)),
        (x, torch.full((3,), 5.0)),
    ]
    for inputs, sigma in calls:
        extra = {k: (v[: inputs.shape[0]] if torch.is_tensor(v) else v) for k, v in args.items()}
        torch.testing.assert_close(model(inputs, sigma, **extra), ToyModel()(inputs, sigma, **extra), rtol=0, atol=0)


def test_scratch_buffers_grow_and_are_per_thread(model):
    """The denoiser writes its float64 temporaries into kept buffers: more rows than before, and
    two threads calling one model at once, must each give what a fresh model computes."""
    import threading

    gen = torch.Generator().manual_seed(9)
    inputs = [torch.randn((n, 3, 64, 64), generator=gen) * 20 for n in (1, 4, 2, 6)]
    args = model.extra_args(["blue square"] * 6, cond_scale=1.5)
    sigma = 20.0

    def call(m, x):
        return m(x, sigma, cond=args["cond"][: x.shape[0]], uncond=args["uncond"][: x.shape[0]], cond_scale=1.5)

    expected = [call(ToyModel(), x) for x in inputs]
    for x, want in zip(inputs, expected):
        torch.testing.assert_close(call(model, x), want, rtol=0, atol=0)
    shared, failures = ToyModel(), []

    def worker(offset):
        for k in range(40):
            i = (k + offset) % len(inputs)
            if not torch.equal(call(shared, inputs[i]), expected[i]):
                failures.append(i)

    import sys

    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads between any two ops of a call
    try:
        threads = [threading.Thread(target=worker, args=(t,)) for t in range(3)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        sys.setswitchinterval(interval)
    assert not failures


# ---- the schedule: when is the component decided? -----------------------------------------------


def test_component_is_open_in_the_first_third_and_decided_by_the_middle(model):
    """Along 20-step Karras trajectories: the responsibility entropy and what split copies do."""
    n, steps = 32, 20
    prompt = "a photo of a red circle, detailed"
    sigmas = get_sigmas_karras(steps, model.sigma_min, model.sigma_max).double()
    extra = model.extra_args([prompt] * n)
    gen = torch.Generator().manual_seed(6)
    x = torch.randn((n, *model.image_shape), generator=gen) * float(sigmas[0])
    trace: list = []
    euler_ancestral(model, x, sigmas, extra, gen, trace=trace)

    def entropy(i: int) -> float:
        _, sigma, xi = trace[i]
        r = model.responsibilities(xi, torch.full((n,), sigma), extra["cond"])
        return float(-(r * r.clamp_min(1e-300).log()).sum(1).mean())

    assert entropy(6) > 0.3 * entropy(0)  # measured: ~0.5
    assert entropy(10) < 0.05  # measured: < 0.01

    def split_differs(step: int) -> float:
        """Run to `step` on one noise stream, then finish twice with different noise."""
        shared = euler_ancestral(model, x, sigmas, extra, torch.Generator().manual_seed(7), stop=step)
        a = euler_ancestral(model, shared, sigmas, extra, torch.Generator().manual_seed(8), start=step)
        b = euler_ancestral(model, shared, sigmas, extra, torch.Generator().manual_seed(9), start=step)
        landed_a, landed_b = model.nearest_prototype(to_images(a)), model.nearest_prototype(to_images(b))
        return float((landed_a != landed_b).double().mean())

    assert split_differs(3) > 0.4  # measured: ~0.75: an early split still varies the prototype
    assert split_differs(11) == 0.0  # a late split only varies the pixel noise


# ---- the sampled distribution ---------------------------------------------------------------------


@pytest.mark.parametrize("prompt", ["red circle", "shape"])
def test_sample_frequencies_match_pi(prompt):
    """Chi-square goodness of fit of the prototype counts to N * pi, at cfg 1.

    Bound: the statistic has 9 degrees of freedom; a correct model exceeds 27.88 with probability
    0.001 (the seed is fixed, so the test is deterministic). Sampling runs at 16 px (sigma_max
    scales with the side, so the dynamics are those of 64 px) with 40 steps, where the
    discretisation bias of Euler ancestral is below the sampling error (at 20 steps the chi-square
    of N = 3,000 samples is ~40-55: about 0.02 of mass moves between near components).
    """
    model = ToyModel(ToyConfig(image_size=16))
    n = 600
    pi = model.mixture_weights(prompt)
    out = sample(model, prompt, n, steps=40, seed=10)
    counts = torch.bincount(model.nearest_prototype(to_images(out)), minlength=NUM_PROTOTYPES).double()
    chi2 = float(((counts - n * pi) ** 2 / (n * pi)).sum())
    assert chi2 < CHI2_9DF_P001, (chi2, (counts / n).tolist(), pi.tolist())


def test_guidance_sharpens_the_frequencies():
    model = ToyModel(ToyConfig(image_size=16))
    prompt = "red circle"
    target = model.prototype_names.index("red circle")
    share = {}
    for scale in (1.0, 3.0):
        nearest = model.nearest_prototype(to_images(sample(model, prompt, 200, 20, 11, scale)))
        share[scale] = float((nearest == target).double().mean())
    assert share[3.0] > share[1.0] + 0.2  # measured: 0.58 -> 0.92 (pi^cfg predicts 0.98)


# ---- tiny CLIP ------------------------------------------------------------------------------------


def test_tiny_clip_ranks_the_named_prototype_first(model):
    clip = ToyClip(model)
    gen = torch.Generator().manual_seed(12)
    noise = 0.05 * torch.randn((NUM_PROTOTYPES, 3, 64, 64), generator=gen)
    images = (to_images(model.prototypes) + noise).clamp(0, 1)
    image_emb = clip.encode_images(images)
    text_emb = clip.encode_text(list(model.prototype_names))
    assert image_emb.shape == text_emb.shape == (NUM_PROTOTYPES, clip.embed_dim)
    similarity = image_emb @ text_emb.T
    assert torch.equal(similarity.argmax(dim=1), torch.arange(NUM_PROTOTYPES))
    assert torch.equal(similarity.argmax(dim=0), torch.arange(NUM_PROTOTYPES))
    torch.testing.assert_close(similarity.diagonal(), torch.ones(NUM_PROTOTYPES))
    # One shared attribute: cosine 1/2; none: 0.
    names = model.prototype_names
    assert float(similarity[names.index("red circle"), names.index("red ring")]) == pytest.approx(0.5)
    assert float(similarity[names.index("red circle"), names.index("blue square")]) == pytest.approx(0.0)
    # Tags: a single string gives one vector; words without attribute meaning give none.
    tag = clip.encode_text("a photo of a (RED:1.3) circle")
    assert tag.shape == (clip.embed_dim,)
    assert int((image_emb @ tag).argmax()) == names.index("red circle")
    assert float(clip.encode_text("a cat").abs().sum()) == 0.0


def test_config_validation_and_round_trip():
    assert ToyConfig().sigma_max == 160.0 and ToyConfig(image_size=16).sigma_max == 40.0
    config = ToyConfig(image_size=32, temperature=0.5)
    assert ToyConfig(**config.to_json()) == config
    for bad in ({"component_std": 0.0}, {"sigma_min": 200.0}, {"temperature": 0.0}, {"image_size": 4}):
        with pytest.raises(ValueError):
            ToyConfig(**bad)


def test_inert_words_leave_the_mixture_as_it_was_and_survive_json():
    config = ToyConfig(inert_words=("Velvet",))
    model, plain = ToyModel(config), ToyModel()
    assert float(model.word_vector("velvet").abs().sum()) == 0.0
    assert float(plain.word_vector("velvet").abs().sum()) > 0.0  # a filler word elsewhere
    with_word = model.mixture_weights("red circle, (velvet:1.8)", "velvet")
    assert torch.equal(with_word, model.mixture_weights("red circle"))
    assert not torch.equal(plain.mixture_weights("red circle, velvet"), plain.mixture_weights("red circle"))
    assert ToyConfig(**json.loads(json.dumps(config.to_json()))) == config


# failure modes: over-emphasis frying and NaN latents -------------------------------------------------


def _toy_batch(prompt: str, negative: str = "", failure_modes: bool = True, seeds=(1, 2, 3, 4)):
    from lib_pinning.generator import GenerationRequest, ToyGenerator, ToySettings

    generator = ToyGenerator(ToySettings(steps=8), ToyConfig(failure_modes=failure_modes))
    return generator.generate(GenerationRequest(prompt, negative, tuple(seeds)))


def test_effective_emphasis_weight_counts_nesting_and_the_negative_prompt():
    from lib_pinning.toy_failures import emphasis_peak

    assert emphasis_peak("red circle") == (1.0, "red")
    assert emphasis_peak("red ((circle:1.5))")[0] == pytest.approx(1.5 * 1.1)
    assert emphasis_peak("(red:1.2) circle", "(blurry:2.6)") == (2.6, "blurry")
    assert emphasis_peak("", "") == (0.0, "")


def test_frying_starts_at_1_5_grows_gradually_and_ends_in_one_colour_field_for_every_seed():
    model = ToyModel()
    fry = [model.failure_modes(f"red (circle:{w})").fry for w in (1.0, 1.5, 1.7, 1.9, 2.1, 2.3, 2.8)]
    assert fry[0] == fry[1] == 0.0 and fry[-2] == fry[-1] == 1.0
    assert all(a < b for a, b in zip(fry[1:-2], fry[2:-1]))  # gradual in between
    clean = _toy_batch("red circle, (blue:1.4) square")
    fried = _toy_batch("red circle, (blue:2.4) square")
    assert clean.nonfinite == fried.nonfinite == (False,) * 4
    assert float((fried.images - fried.images[0]).abs().max()) < 1e-6  # all seeds alike
    assert float((clean.images - clean.images[0]).abs().max()) > 0.3
    assert float(fried.images.std()) > 0.05  # a colour field, not black


def test_nan_region_breaks_a_growing_share_of_the_batch_and_decodes_black():
    seeds = tuple(range(1, 17))
    shares = [sum(_toy_batch(f"red (circle:{w})", seeds=seeds).nonfinite) / 16 for w in (2.9, 3.2, 3.5)]
    assert shares[0] == 0.0 and 0.0 < shares[1] < 1.0 and shares[2] == 1.0
    batch = _toy_batch("red (circle:3.2)", seeds=seeds)
    broken = torch.tensor(batch.nonfinite)
    assert float(batch.images[broken].abs().max()) == 0.0  # NaN decodes to black
    assert torch.isfinite(batch.images).all()
    # Which images break is fixed by their seeds: deterministic, and monotone in the weight.
    again = _toy_batch("red (circle:3.2)", seeds=seeds)
    assert again.nonfinite == batch.nonfinite and torch.equal(again.images, batch.images)
    more = _toy_batch("red (circle:3.4)", seeds=seeds).nonfinite
    assert all(m for b, m in zip(batch.nonfinite, more) if b)


def test_failure_modes_off_gives_the_clean_mixture():
    clean_high = _toy_batch("red circle, (blue:3.4) square", failure_modes=False)
    assert clean_high.nonfinite == (False,) * 4
    from lib_pinning import guard

    assert guard.inspect(clean_high.images, clean_high.nonfinite).share_degenerate == 0.0
    # Below the onset the failure modes change nothing at all.
    assert torch.equal(_toy_batch("red (circle:1.4)").images, _toy_batch("red (circle:1.4)", failure_modes=False).images)
    model = ToyModel(ToyConfig(failure_modes=False))
    assert model.failure_modes("(red:9)").fry == 0.0 and model.failure_modes("(red:9)").nan_share == 0.0


def test_failure_thresholds_are_validated_and_round_trip():
    config = ToyConfig(fry_onset=1.4, fry_full=2.0, nan_onset=2.5, nan_full=3.0)
    assert ToyConfig(**config.to_json()) == config
    with pytest.raises(ValueError):
        ToyConfig(fry_onset=2.0, fry_full=1.8)
