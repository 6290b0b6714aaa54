"""Hyperbatch samplers: equality with k-diffusion, WebUI-shaped arguments, noise, and behaviour on
an analytic model.

The analytic model (benchmarks/mixture.py, shared with benchmarks/bench_split_rho.py) is a
Gaussian mixture with a closed-form exact denoiser. Every row of a latent holds R independent
D-dimensional problems ([n, R, D]), so one sampler call runs R independent hyperbatches side by
side (rows grow together, each problem is its own tree): the statistics below come from R
independent roots in one fast call.
"""

from __future__ import annotations

import ast
import inspect
import itertools
import math
from collections import namedtuple
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from benchmarks.mixture import DIM, SIGMA_MAX, SIGMA_MIN, WEIGHTS, MixtureDenoiser, components, karras
from pinning_samplers.noise import SeededBrownianNoise, SeededNoise
from pinning_samplers.plan import GrowthPlan, plan_growth
from pinning_samplers.rows import take_rows
from pinning_samplers.sampling import (
    DEFAULT_SPLIT_RHO,
    SAMPLERS,
    sample_dpmpp_2m_hyperbatch,
    sample_dpmpp_2m_sde_hyperbatch,
    sample_dpmpp_sde_hyperbatch,
    sample_euler_ancestral_hyperbatch,
)
from pinning_samplers.schedules import get_sigmas_exponential
from tests.kdiffusion_reference import ReferenceUnavailable, load_sampling


@pytest.fixture(scope="module")
def kd():
    try:
        return load_sampling()
    except ReferenceUnavailable as error:
        pytest.skip(str(error))


# -- the samplers and their noise -----------------------------------------------------------------

OURS = {
    "euler_ancestral": sample_euler_ancestral_hyperbatch,
    "dpmpp_2m": sample_dpmpp_2m_hyperbatch,
    "dpmpp_sde": sample_dpmpp_sde_hyperbatch,
    "dpmpp_2m_sde": sample_dpmpp_2m_sde_hyperbatch,
}
BROWNIAN = {"dpmpp_sde", "dpmpp_2m_sde"}


def start(seeds: list[int], shape: tuple[int, ...], sigmas: torch.Tensor, name: str):
    """Initial latents (first draw * sigma_max) and the sampler's per-seed noise source, as the
    WebUI sets them up: ImageRNG for Euler a (and 2M's split refresh), one Brownian tree per
    seed for the SDE samplers."""
    rng = SeededNoise(seeds, shape)
    x = rng.first() * sigmas[0]
    noise = SeededBrownianNoise.from_sigmas(seeds, x, sigmas) if name in BROWNIAN else rng
    return x, noise


def run_sampler(name: str, seeds: list[int], shape: tuple[int, ...], sigmas: torch.Tensor, **kwargs) -> torch.Tensor:
    x, noise = start(seeds, shape, sigmas, name)
    return OURS[name](MixtureDenoiser(), x, sigmas, disable=True, noise_sampler=noise, **kwargs)


# -- equality with k-diffusion when the batch does not grow ---------------------------------------


REFERENCE_CASES = [
    ("euler_ancestral", "sample_euler_ancestral", {}),
    ("euler_ancestral", "sample_euler_ancestral", {"eta": 0.6, "s_noise": 1.1}),
    ("dpmpp_2m", "sample_dpmpp_2m", {}),
    ("dpmpp_sde", "sample_dpmpp_sde", {}),
    ("dpmpp_sde", "sample_dpmpp_sde", {"r": 0.4, "eta": 0.7}),
    ("dpmpp_2m_sde", "sample_dpmpp_2m_sde", {}),
    ("dpmpp_2m_sde", "sample_dpmpp_2m_sde", {"solver_type": "heun", "s_noise": 0.9}),
]


def recorder(log: list) -> Callable[[dict], None]:
    def callback(info: dict) -> None:
        log.append((info["i"], float(info["sigma"]), float(info["sigma_hat"]), info["x"].clone(), info["denoised"].clone()))

    return callback


def assert_same_callbacks(ours: list, theirs: list) -> None:
    assert len(ours) == len(theirs)
    for (i, sigma, sigma_hat, x, d), (j, sigma2, sigma_hat2, x2, d2) in zip(ours, theirs):
        assert (i, sigma, sigma_hat) == (j, sigma2, sigma_hat2)
        torch.testing.assert_close(x, x2, rtol=0, atol=0)
        torch.testing.assert_close(d, d2, rtol=0, atol=0)


@pytest.mark.parametrize("name, reference, kwargs", REFERENCE_CASES)
@pytest.mark.parametrize("batch_size, growth", [(3, "none"), (1, "even"), (1, "front")])
def test_equals_kdiffusion_without_growth(kd, name, reference, kwargs, batch_size, growth):
    sigmas = karras(8) if name != "dpmpp_2m_sde" else get_sigmas_exponential(8, SIGMA_MIN, SIGMA_MAX)
    seeds = [11, 12, 13][:batch_size]
    shape = (2, DIM)
    results, logs = [], []
    for ours in (True, False):
        x, noise = start(seeds, shape, sigmas, name)
        log: list = []
        if ours:
            function, extra = OURS[name], {"noise_sampler": noise, "growth": growth}
        else:  # k-diffusion's DPM++ 2M takes no noise sampler
            function, extra = getattr(kd, reference), {} if name == "dpmpp_2m" else {"noise_sampler": noise}
        results.append(function(MixtureDenoiser(), x, sigmas, callback=recorder(log), disable=True, **extra, **kwargs))
        logs.append(log)
    torch.testing.assert_close(results[0], results[1], rtol=0, atol=0)
    assert_same_callbacks(*logs)


@pytest.mark.parametrize("name, reference", [("euler_ancestral", "sample_euler_ancestral"), ("dpmpp_2m", "sample_dpmpp_2m")])
def test_default_noise_matches_kdiffusion_defaults(kd, name, reference):
    """Without a noise_sampler both draw torch.randn_like of the full batch from the global RNG."""
    sigmas = karras(6)
    outputs = []
    for function in (OURS[name], getattr(kd, reference)):
        torch.manual_seed(5)
        x = torch.randn(3, 2, DIM) * sigmas[0]
        kwargs = {"growth": "none"} if function is OURS[name] else {}
        outputs.append(function(MixtureDenoiser(), x, sigmas, disable=True, **kwargs))
    torch.testing.assert_close(outputs[0], outputs[1], rtol=1e-6, atol=1e-6)


CHOSEN_DEFAULTS = {
    "euler_ancestral": ("front", 1.0),
    "dpmpp_2m": ("front", 1.0),
    "dpmpp_sde": ("front", 1.0),
    "dpmpp_2m_sde": ("front-early", math.sqrt(0.5)),
}
"""(growth, split_rho) per sampler as chosen in docs/benchmarks.md, "Fidelity: chosen defaults (toy)"."""


def test_signatures_extend_the_plain_samplers(kd):
    """Every keyword of the plain sampler is accepted with the same default (the WebUI passes only
    the keywords a signature names), plus growth and split_rho."""
    pairs = {
        "euler_ancestral": kd.sample_euler_ancestral,
        "dpmpp_2m": kd.sample_dpmpp_2m,
        "dpmpp_sde": kd.sample_dpmpp_sde,
        "dpmpp_2m_sde": kd.sample_dpmpp_2m_sde,
    }
    for name, reference in pairs.items():
        ours = inspect.signature(OURS[name]).parameters
        for param in inspect.signature(reference).parameters.values():
            assert param.name in ours, (name, param.name)
            assert ours[param.name].default == param.default, (name, param.name)
        assert ours["growth"].default == SAMPLERS[name].default_growth == CHOSEN_DEFAULTS[name][0], name
        assert ours["split_rho"].default == SAMPLERS[name].default_split_rho == CHOSEN_DEFAULTS[name][1], name


@pytest.mark.filterwarnings("ignore:Should have t:UserWarning")  # the reference's own torchsde clamping
def test_seeded_brownian_noise_equals_the_webui_noise_sampler(kd):
    sigmas = karras(6)
    seeds = [3, 1, 4]
    x = torch.zeros(3, 2, DIM)
    ours = SeededBrownianNoise.from_sigmas(seeds, x, sigmas)
    theirs = kd.BrownianTreeNoiseSampler(x, sigmas[sigmas > 0].min(), sigmas.max(), seed=seeds)
    for sigma, sigma_next in zip(sigmas[:-2], sigmas[1:-1]):
        torch.testing.assert_close(ours(sigma, sigma_next), theirs(sigma, sigma_next), rtol=0, atol=0)


def test_schedules_equal_kdiffusion(kd):
    torch.testing.assert_close(karras(13), kd.get_sigmas_karras(13, SIGMA_MIN, SIGMA_MAX), rtol=0, atol=0)
    torch.testing.assert_close(
        get_sigmas_exponential(13, SIGMA_MIN, SIGMA_MAX),
        kd.get_sigmas_exponential(13, SIGMA_MIN, SIGMA_MAX),
        rtol=0,
        atol=0,
    )


# -- noise sources ----------------------------------------------------------------------------------


def test_seeded_noise_draws_like_the_webui_image_rng():
    rng = SeededNoise([7, 8], (2, 3))
    first, second = rng.first(), rng.next()
    for row, seed in enumerate([7, 8]):
        generator = torch.Generator().manual_seed(seed)
        torch.testing.assert_close(first[row], torch.randn((2, 3), generator=generator), rtol=0, atol=0)
        torch.testing.assert_close(second[row], torch.randn((2, 3), generator=generator), rtol=0, atol=0)
    # next() before first() is first(); the sigmas of the noise-sampler form are ignored
    fresh = SeededNoise([7, 8], (2, 3))
    torch.testing.assert_close(fresh(1.0, 0.5), first, rtol=0, atol=0)


def test_seeded_noise_seed_delta_restarts_after_the_first_draw():
    rng = SeededNoise([7], (4,), seed_delta=100)
    first, second = rng.first(), rng.next()
    torch.testing.assert_close(first[0], torch.randn(4, generator=torch.Generator().manual_seed(7)), rtol=0, atol=0)
    torch.testing.assert_close(second[0], torch.randn(4, generator=torch.Generator().manual_seed(107)), rtol=0, atol=0)


def test_seeded_noise_row_depends_only_on_its_seed():
    a = SeededNoise([1, 2, 3], (5,))
    b = SeededNoise([9, 2], (5,))
    for _ in range(3):
        torch.testing.assert_close(a.next()[1], b.next()[1], rtol=0, atol=0)


def test_seeded_brownian_noise_is_a_pure_function_of_seed_and_sigmas():
    sigmas = karras(5)
    x = torch.zeros(2, 3)
    pairs = list(zip(sigmas[:-2], sigmas[1:-1]))
    forward = SeededBrownianNoise.from_sigmas([5, 6], x, sigmas)
    values = [forward(a, b) for a, b in pairs]
    backward = SeededBrownianNoise.from_sigmas([6, 5], x, sigmas)
    for (a, b), value in reversed(list(zip(pairs, values))):
        torch.testing.assert_close(backward(a, b).flip(0), value, rtol=0, atol=1e-5)
    assert abs(float(torch.stack(values).std()) - 1.0) < 0.5
    with pytest.raises(ValueError):
        SeededBrownianNoise([1], (3,), 2.0, 1.0)


# -- WebUI-shaped conditioning ------------------------------------------------------------------------
# Stand-ins for modules/prompt_parser.py's structures (v1.10.1), built the same way.

ScheduledPromptConditioning = namedtuple("ScheduledPromptConditioning", ["end_at_step", "cond"])


class ComposableScheduledPromptConditioning:
    def __init__(self, schedules, weight=1.0):
        self.schedules = schedules
        self.weight = weight


class MulticondLearnedConditioning:
    def __init__(self, shape, batch):
        self.shape = shape
        self.batch = batch


def _stack(conds: list):
    if isinstance(conds[0], dict):
        return {key: torch.stack([c[key] for c in conds]) for key in conds[0]}
    return torch.stack(conds)


def _scheduled(schedule: list, step: int):
    """The cond in force at `step`: the first entry whose end_at_step is not passed (the WebUI
    falls back to the first entry)."""
    for entry in schedule:
        if step <= entry.end_at_step:
            return entry.cond
    return schedule[0].cond


def reconstruct_multicond_batch(c: MulticondLearnedConditioning, step: int):
    conds_list, tensors = [], []
    for composables in c.batch:
        row = []
        for composable in composables:
            row.append((len(tensors), composable.weight))
            tensors.append(_scheduled(composable.schedules, step))
        conds_list.append(row)
    return conds_list, _stack(tensors)


def reconstruct_cond_batch(c: list, step: int):
    return _stack([_scheduled(schedule, step) for schedule in c])


def _bias(cond, index: int) -> torch.Tensor:
    """A prompt's effect on the mixture: component logit shifts read off its embedding."""
    if isinstance(cond, dict):
        return cond["crossattn"][index].mean(0)[: len(WEIGHTS)] + cond["vector"][index][: len(WEIGHTS)]
    return cond[index].mean(0)[: len(WEIGHTS)]


class CFGStandIn:
    """The WebUI's CFG denoiser contract, checked on every call.

    It takes the batch size from `cond` (as the WebUI does) and asserts that cond, uncond,
    image_cond and every batch-sized extra entry have exactly x's rows, and that those rows are
    the first rows of the caller's full-size objects (rows are stable: active row r is image r).
    Then it combines a conditional and an unconditional mixture denoiser per row, AND-composables
    weighted, as CFGDenoiser.combine_denoised does.
    """

    def __init__(self, full: dict) -> None:
        self.full = full
        self.inner = MixtureDenoiser()
        self.step = 0
        self.calls: list[int] = []

    def __call__(self, x, sigma, cond, uncond, cond_scale, s_min_uncond, image_cond, pooled=None):
        n = x.shape[0]
        self.calls.append(n)
        full = self.full
        assert type(cond) is MulticondLearnedConditioning and cond.shape == (n,) and len(cond.batch) == n
        assert all(cond.batch[k] is full["cond"].batch[k] for k in range(n))
        assert isinstance(uncond, list) and len(uncond) == n
        assert all(uncond[k] is full["uncond"][k] for k in range(n))
        assert image_cond.shape[0] == n and torch.equal(image_cond, full["image_cond"][:n])
        if pooled is not None:
            assert set(pooled) == {"crossattn", "vector"}
            assert pooled["crossattn"].shape[0] == n and pooled["vector"].shape[0] == n
        assert isinstance(cond_scale, float) and isinstance(s_min_uncond, float)

        conds_list, tensor = reconstruct_multicond_batch(cond, self.step)
        uncond_tensor = reconstruct_cond_batch(uncond, self.step)
        assert len(conds_list) == n
        rows = []
        for i in range(n):
            xi, si = x[i : i + 1], sigma[i : i + 1]
            unconditional = self.inner(xi, si, logit_bias=_bias(uncond_tensor, i))
            denoised = unconditional.clone()
            for index, weight in conds_list[i]:
                conditional = self.inner(xi, si, logit_bias=_bias(tensor, index))
                denoised += (conditional - unconditional) * (weight * cond_scale)
            rows.append(denoised)
        self.step += 1
        return torch.cat(rows)


def make_conditioning(batch_size: int, style: str) -> dict:
    """WebUI-shaped extra_args for `batch_size` images with a different prompt per image.

    style "sd1": every cond a Tensor[T, C]; "sdxl": every cond {"crossattn": Tensor[T, C],
    "vector": Tensor[V]}. Odd rows have the multi-schedule `[a:b:2] AND c :0.5` structure (two
    composables, the first with two schedules). Also a top-level SDXL-style dict of batch-sized
    tensors ("pooled"), image_cond Tensor[B, 5, 1, 1], and the two float settings.
    """
    generator = torch.Generator().manual_seed(batch_size)

    def embedding():
        crossattn = torch.randn(4, 6, generator=generator)
        if style == "sd1":
            return crossattn
        return {"crossattn": crossattn, "vector": torch.randn(5, generator=generator)}

    batch = []
    for row in range(batch_size):
        if row % 2:
            batch.append(
                [
                    ComposableScheduledPromptConditioning(
                        [ScheduledPromptConditioning(2, embedding()), ScheduledPromptConditioning(12, embedding())], 1.0
                    ),
                    ComposableScheduledPromptConditioning([ScheduledPromptConditioning(12, embedding())], 0.5),
                ]
            )
        else:
            batch.append([ComposableScheduledPromptConditioning([ScheduledPromptConditioning(12, embedding())], 1.0)])
    return {
        "cond": MulticondLearnedConditioning(shape=(batch_size,), batch=batch),
        "uncond": [[ScheduledPromptConditioning(12, embedding())] for _ in range(batch_size)],
        "image_cond": torch.randn(batch_size, 5, 1, 1, generator=generator),
        "cond_scale": 3.0,
        "s_min_uncond": 0.0,
        "pooled": {
            "crossattn": torch.randn(batch_size, 4, 6, generator=generator),
            "vector": torch.randn(batch_size, 5, generator=generator),
        },
    }


def test_take_rows_on_webui_conditioning_copies_without_mutating():
    args = make_conditioning(5, "sdxl")
    cond = take_rows(args["cond"], 5, 2)
    assert type(cond) is MulticondLearnedConditioning and cond.shape == (2,) and cond.batch == args["cond"].batch[:2]
    assert args["cond"].shape == (5,) and len(args["cond"].batch) == 5
    with pytest.raises(ValueError, match="batch rows"):
        take_rows(MulticondLearnedConditioning(shape=(5,), batch=[[]] * 4), 5, 2)


@pytest.mark.parametrize("style", ["sd1", "sdxl"])
@pytest.mark.parametrize("name", sorted(OURS))
def test_webui_arguments_follow_the_active_rows(name, style):
    batch_size, steps = 5, 12
    sigmas = karras(steps)
    args = make_conditioning(batch_size, style)
    snapshot = (args["cond"].shape, list(args["cond"].batch), list(args["uncond"]), args["image_cond"].clone())
    model = CFGStandIn(args)
    x, noise = start(list(range(batch_size)), (1, DIM), sigmas, name)
    sizes_seen = []
    out = OURS[name](
        model, x, sigmas, extra_args=args, disable=True, noise_sampler=noise,
        callback=lambda info: sizes_seen.append((info["x"].shape[0], info["denoised"].shape[0])),
    )
    plan = plan_growth(batch_size, steps, SAMPLERS[name].default_growth)
    assert out.shape == x.shape and torch.isfinite(out).all()
    assert sizes_seen == [(n, n) for n in plan.sizes]
    assert sum(model.calls) == plan.model_rows(SAMPLERS[name].evals(steps))
    assert sorted(set(model.calls)) == list(plan.levels)
    # the caller's objects are untouched
    assert args["cond"].shape == snapshot[0] and args["cond"].batch == snapshot[1]
    assert args["uncond"] == snapshot[2] and torch.equal(args["image_cond"], snapshot[3])


def test_conditioned_plain_batch_equals_kdiffusion(kd):
    sigmas = karras(8)
    outputs = []
    for function in (sample_dpmpp_2m_hyperbatch, kd.sample_dpmpp_2m):
        args = make_conditioning(3, "sdxl")
        x, _ = start([1, 2, 3], (1, DIM), sigmas, "dpmpp_2m")
        kwargs = {"growth": "none"} if function is sample_dpmpp_2m_hyperbatch else {}
        outputs.append(function(CFGStandIn(args), x, sigmas, extra_args=args, disable=True, **kwargs))
    torch.testing.assert_close(outputs[0], outputs[1], rtol=1e-6, atol=1e-6)


# -- model cost --------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(SAMPLERS))
@pytest.mark.parametrize("growth", ["even", "late", "none"])
def test_model_rows_match_the_plan(name, growth):
    info = SAMPLERS[name]
    steps, batch_size = 10, 6
    sigmas = karras(steps)
    noise = SeededNoise(list(range(batch_size)), (1, DIM))  # any B-row source will do for counting
    x = noise.first() * sigmas[0]
    model = MixtureDenoiser()
    info.function(model, x, sigmas, disable=True, noise_sampler=noise, growth=growth)
    plan = plan_growth(batch_size, steps, growth)
    assert model.rows == plan.model_rows(info.evals(steps))
    assert info.cost_ratio(plan) == pytest.approx(model.rows / (batch_size * sum(info.evals(steps))))


def test_registry_labels_and_options_suit_the_webui():
    labels = [info.label for info in SAMPLERS.values()]
    assert len(set(labels)) == len(labels)
    assert all(label.endswith(" - Hyperbatch") and "Karras" not in label for label in labels)
    for name, info in SAMPLERS.items():
        assert info.name == name
        assert all(isinstance(v, (str, bool, int, float)) for v in info.webui_options.values())
        assert info.evals(3)[-1] == info.final_step_evals
    assert SAMPLERS["dpmpp_2m"].stochastic is False
    assert SAMPLERS["dpmpp_sde"].evals(4) == (2, 2, 2, 1)
    with pytest.raises(TypeError):
        SAMPLERS["dpmpp_2m"].webui_options["scheduler"] = "x"


# -- behaviour on the analytic mixture ------------------------------------------------------------------

ROOTS = 600  # independent hyperbatches per call (see the module docstring)
STAT_BATCH, STAT_STEPS = 4, 20


@pytest.fixture(scope="module")
def mixture_runs() -> dict[str, torch.Tensor]:
    """Each sampler, default growth, B = 4, 20 Karras steps, ROOTS independent roots."""
    sigmas = karras(STAT_STEPS)
    return {name: run_sampler(name, [101, 202, 303, 404], (ROOTS, DIM), sigmas) for name in OURS}


@pytest.mark.parametrize("name", sorted(OURS))
def test_samples_land_on_the_components(mixture_runs, name):
    _, spread = components(mixture_runs[name])
    # exact samples have spread ~ chi^2_8 / 8: mean 1, P(> 6) < 1e-6 per image
    assert float(spread.max()) < 6.0
    assert 0.5 < float(spread.mean()) < 1.3


@pytest.mark.parametrize("name", sorted(OURS))
def test_component_frequencies_match_the_weights(mixture_runs, name):
    """Every image index i is an independent sample over the ROOTS roots, so its count of
    component k is Binomial(ROOTS, w_k) if the sampler is exact. Bound: 4 binomial standard
    deviations (a two-sided 6e-5 tail per check) plus 0.03 for the discretisation bias of 20
    steps (plain DPM++ 2M, the least accurate here, is off by about 0.02 on this mixture)."""
    nearest, _ = components(mixture_runs[name])
    for image in range(STAT_BATCH):
        for k, weight in enumerate(WEIGHTS):
            frequency = float((nearest[image] == k).double().mean())
            bound = 4 * math.sqrt(weight * (1 - weight) / ROOTS) + 0.03
            assert abs(frequency - weight) <= bound, (image, k, frequency)


@pytest.mark.parametrize("name", sorted(OURS))
def test_no_two_images_of_a_batch_are_identical(mixture_runs, name):
    images = mixture_runs[name].reshape(STAT_BATCH, ROOTS, DIM)
    for i, j in itertools.combinations(range(STAT_BATCH), 2):
        distance = (images[i] - images[j]).norm(dim=-1)
        assert float(distance.min()) > 1e-3, (i, j)


@pytest.mark.parametrize(
    "name, kwargs",
    [
        ("dpmpp_2m", {"growth": "late"}),
        ("dpmpp_2m", {"split_rho": 0.1}),
        ("euler_ancestral", {"eta": 0.0}),
        ("dpmpp_2m_sde", {"eta": 0.0}),
        ("dpmpp_sde", {"s_noise": 0.0}),
    ],
)
def test_copies_differ_even_when_the_solver_adds_no_noise(name, kwargs):
    """The original tool's DPM++ 2M hyperbatch returned B copies of one image; here a solver with
    no noise of its own refreshes its copies' noise at every split."""
    images = run_sampler(name, [1, 2, 3, 4], (20, DIM), karras(10), **kwargs).reshape(4, 20, DIM)
    for i, j in itertools.combinations(range(4), 2):
        assert float((images[i] - images[j]).norm(dim=-1).min()) > 1e-4, (i, j)


def test_more_refresh_gives_more_variety():
    sigmas = karras(STAT_STEPS)
    seeds = [1, 2, 3, 4]

    def spread(rho: float) -> float:
        images = run_sampler("dpmpp_2m", seeds, (200, DIM), sigmas, split_rho=rho).reshape(4, 200, DIM)
        return float(torch.stack([(images[i] - images[j]).norm(dim=-1) for i, j in itertools.combinations(range(4), 2)]).mean())

    assert spread(0.2) < spread(math.sqrt(0.5)) < spread(DEFAULT_SPLIT_RHO) == spread(1.0)


# -- reproducibility: the batch is a pure function of the seeds ------------------------------------------


@pytest.mark.parametrize("growth", ["front", "even"])
@pytest.mark.parametrize("name", sorted(OURS))
def test_same_seeds_give_the_same_batch(name, growth):
    sigmas = karras(8)
    first = run_sampler(name, [5, 6, 7], (3, DIM), sigmas, growth=growth)
    second = run_sampler(name, [5, 6, 7], (3, DIM), sigmas, growth=growth)
    assert torch.equal(first, second)


@pytest.mark.parametrize("growth", ["front", "even"])
@pytest.mark.parametrize("name", ["euler_ancestral", "dpmpp_2m", "dpmpp_2m_sde"])
def test_an_image_depends_only_on_the_seeds_of_its_ancestors(name, growth):
    """Image i is a function of the seeds of its ancestor rows (root first, see
    GrowthPlan.ancestors): changing another image's seed leaves it bit for bit unchanged, and
    changing an ancestor's seed changes it."""
    batch_size, steps = 6, 9
    sigmas = karras(steps)
    plan = plan_growth(batch_size, steps, growth)
    seeds = [10, 11, 12, 13, 14, 15]
    base = run_sampler(name, seeds, (2, DIM), sigmas, growth=growth)
    for changed in (1, 2, 4) if name != "dpmpp_2m_sde" else (1, 3):
        other = list(seeds)
        other[changed] = 99
        result = run_sampler(name, other, (2, DIM), sigmas, growth=growth)
        for image in range(batch_size):
            if changed in plan.ancestors(image):
                assert not torch.equal(result[image], base[image]), (changed, image)
            else:
                assert torch.equal(result[image], base[image]), (changed, image)


@pytest.mark.parametrize("growth", ["front", "even"])
@pytest.mark.parametrize("name", sorted(OURS))
def test_image_zero_is_the_plain_samplers_image(name, growth):
    """Row 0 runs from the first step and is never refreshed, so image 0 of a hyperbatch is the
    plain sampler's image for the same seed; the copies' refresh noise does not advance the
    sequential per-seed streams (Euler a), or this would fail under "front"."""
    sigmas = karras(10)
    grown = run_sampler(name, [8, 9, 10, 11], (3, DIM), sigmas, growth=growth)
    plain = run_sampler(name, [8, 9, 10, 11], (3, DIM), sigmas, growth="none")
    torch.testing.assert_close(grown[0], plain[0], rtol=1e-6, atol=1e-6)
    assert not torch.allclose(grown[1:], plain[1:])


@pytest.mark.parametrize("name", ["euler_ancestral", "dpmpp_2m", "dpmpp_2m_sde"])
def test_extending_the_batch_with_a_later_split_keeps_the_first_images(name):
    """Two plans that agree until a final split 4 -> 8: the first four images are the same."""
    sigmas = karras(10)
    four = GrowthPlan(4, 10, (1, 1, 2, 2, 4, 4, 4, 4, 4, 4))
    eight = GrowthPlan(8, 10, (1, 1, 2, 2, 4, 4, 4, 8, 8, 8))
    seeds = [21, 22, 23, 24, 25, 26, 27, 28]
    small = run_sampler(name, seeds[:4], (2, DIM), sigmas, growth=four)
    large = run_sampler(name, seeds, (2, DIM), sigmas, growth=eight)
    torch.testing.assert_close(large[:4], small, rtol=1e-6, atol=1e-6)


def test_a_plain_batch_is_permutation_equivariant():
    """With growth "none" image i depends on seed i alone, so permuting seeds permutes images."""
    sigmas = karras(8)
    seeds = [31, 32, 33, 34]
    order = [2, 0, 3, 1]
    for name in ("euler_ancestral", "dpmpp_2m_sde"):  # one per kind of noise source
        base = run_sampler(name, seeds, (1, DIM), sigmas, growth="none")
        permuted = run_sampler(name, [seeds[k] for k in order], (1, DIM), sigmas, growth="none")
        torch.testing.assert_close(permuted, base[order], rtol=1e-6, atol=1e-6)


def test_the_package_imports_neither_kdiffusion_nor_the_webui_nor_lib_pinning():
    """The WebUI glue imports samplers/, so samplers/ must not import back."""
    package = Path(sample_dpmpp_2m_hyperbatch.__code__.co_filename).parent
    for path in package.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                roots = {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                roots = {(node.module or "").split(".")[0]}
            else:
                continue
            assert not roots & {"k_diffusion", "lib_pinning", "modules", "scripts"}, (path.name, roots)


def test_zero_steps_return_the_input():
    x = torch.randn(3, 2, DIM)
    out = sample_dpmpp_2m_hyperbatch(MixtureDenoiser(), x, torch.tensor([1.0]), disable=True)
    assert out is x


def test_brownian_rows_equal_the_rows_of_a_full_draw():
    """Hyperbatch queries only the active images' trees; the values must not change."""
    from pinning_samplers.noise import SeededBrownianNoise

    full = SeededBrownianNoise([3, 4, 5, 6], (2, 4, 4), 0.1, 10.0)
    part = SeededBrownianNoise([3, 4, 5, 6], (2, 4, 4), 0.1, 10.0)
    s, s_next = torch.tensor(5.0), torch.tensor(2.5)
    assert torch.equal(part.draw_rows(s, s_next, 1, 3), full(s, s_next)[1:3])
    assert torch.equal(part(s, s_next), full(s, s_next))


class CountingBrownianNoise(SeededBrownianNoise):
    """Per-seed Brownian noise that counts the tree queries made through it."""

    queries = 0

    def draw_rows(self, sigma, sigma_next, start, stop):
        self.queries += stop - start
        return super().draw_rows(sigma, sigma_next, start, stop)


@pytest.mark.parametrize("growth", ["front", "even"])
def test_a_deterministic_hyperbatch_queries_no_brownian_tree(growth):
    """DPM++ 2M's plain solver queries no tree, so its split refresh must not either (a toy tree
    query costs more than the model rows a split saves): the refresh noise comes from
    `split_noise`, a pure function of (seed, step)."""
    sigmas = karras(10)
    seeds = [3, 4, 5, 6]
    x = SeededNoise(seeds, (2, DIM)).first() * sigmas[0]
    noise = CountingBrownianNoise.from_sigmas(seeds, x, sigmas)
    grown = sample_dpmpp_2m_hyperbatch(MixtureDenoiser(), x, sigmas, disable=True, noise_sampler=noise, growth=growth)
    assert noise.queries == 0 and noise.trees_built == 0
    assert len({tuple(row.flatten().tolist()) for row in grown}) == 4


def test_brownian_trees_are_built_at_their_rows_first_query_with_the_same_values():
    """Lazily built trees give an eagerly queried source's values, whatever the query order."""
    s, s_next, s_last = torch.tensor(5.0), torch.tensor(2.5), torch.tensor(1.0)
    full = SeededBrownianNoise([3, 4, 5, 6], (2, 4, 4), 0.1, 10.0)
    reference = (full(s, s_next), full(s_next, s_last))
    lazy = SeededBrownianNoise([3, 4, 5, 6], (2, 4, 4), 0.1, 10.0)
    assert lazy.trees_built == 0
    assert torch.equal(lazy.draw_rows(s_next, s_last, 2, 3), reference[1][2:3]) and lazy.trees_built == 1
    assert torch.equal(lazy(s, s_next), reference[0]) and lazy.trees_built == 4
    assert torch.equal(lazy(s_next, s_last), reference[1])


def test_split_noise_is_a_pure_function_of_seed_and_step():
    shape = (2, DIM)
    sigmas = karras(6)
    wide = SeededNoise([1, 2, 3], shape).split_noise(2, 1, 3)
    narrow = SeededNoise([2, 3], shape).split_noise(2, 0, 2)
    assert torch.equal(wide, narrow)
    x = torch.zeros(3, *shape)
    assert torch.equal(SeededBrownianNoise.from_sigmas([1, 2, 3], x, sigmas).split_noise(2, 1, 3), wide)
    assert not torch.equal(SeededNoise([2, 3], shape).split_noise(3, 0, 2), narrow)
    assert wide.std().item() == pytest.approx(1.0, abs=0.35)


def test_kept_split_noise_rows_are_the_drawn_values_and_stay_unmodified():
    """Refresh rows are kept between batches: the kept values are those of a fresh draw, and a
    caller modifying what it got cannot change the next batch's noise."""
    from pinning_samplers import noise as noise_module
    from pinning_samplers.noise import split_noise_rows, split_seed

    noise_module._SPLIT_ROWS.clear()
    first = split_noise_rows([7, 8], (2, DIM), 4)
    drawn = torch.randn((2, DIM), generator=torch.Generator().manual_seed(split_seed(8, 4)))
    assert torch.equal(first[1], drawn)
    first.add_(1.0)
    again = split_noise_rows([7, 8], (2, DIM), 4)
    assert torch.equal(again[1], drawn) and len(noise_module._SPLIT_ROWS) == 2
    assert not torch.equal(split_noise_rows([7, 8], (2, DIM), 5), again)


def test_step_coefficients_are_computed_once_per_schedule_value():
    """A fresh tensor of the same schedule (what the WebUI and the toy pass at every batch) hits the
    cache; another schedule, dtype or eta does not."""
    from pinning_samplers import coefficients

    coefficients.clear_cache()
    first = coefficients.dpmpp_2m_steps(karras(8))
    assert coefficients.dpmpp_2m_steps(karras(8).clone()) is first
    assert coefficients.dpmpp_2m_steps(karras(9)) is not first
    assert coefficients.dpmpp_2m_steps(karras(8).double()) is not first
    euler = coefficients.euler_ancestral_steps(karras(8), 1.0)
    assert coefficients.euler_ancestral_steps(karras(8), 1.0) is euler
    assert coefficients.euler_ancestral_steps(karras(8), 0.5) is not euler
    assert [s.noisy for s in euler] == [True] * 7 + [False]
    assert [s.first_order for s in first] == [True] + [False] * 6 + [True]


@pytest.mark.parametrize("x_dtype, sigma_dtype", [(torch.float64, torch.float32), (torch.float32, torch.float64), (torch.float16, torch.float16)])
def test_euler_ancestral_promotes_mixed_dtypes_as_kdiffusion_does(kd, x_dtype, sigma_dtype):
    """The in-place step applies only where x, denoised, sigma and the noise share a dtype: with
    latents and sigmas of different dtypes the result has k-diffusion's dtype and values."""
    sigmas = karras(8).to(sigma_dtype)
    results = []
    for function, extra in ((OURS["euler_ancestral"], {"growth": "none"}), (kd.sample_euler_ancestral, {})):
        x, noise = start([11, 12], (2, DIM), sigmas.float(), "euler_ancestral")
        results.append(function(MixtureDenoiser(), x.to(x_dtype), sigmas, disable=True, noise_sampler=noise, **extra))
    assert results[0].dtype == results[1].dtype
    torch.testing.assert_close(results[0], results[1], rtol=0, atol=0)
